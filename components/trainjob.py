"""Kubeflow Trainer (v2) TrainJobs for training stages that ask for more than one process.

A component whose stage runs on ``nodes x procs_per_node > 1`` processes does not train in its own
pod: it submits a ``TrainJob`` (runtime ``torch-distributed``, our image, ``torchrun -m vla_rft.cli
<stage> ...``; artifact URIs on MinIO) through the ``kubeflow`` SDK's ``TrainerClient``, waits for
it, echoes its status and logs, and fails with the job's reason when the job fails. One process
keeps the in-pod path. The manifest builder is pure, so tests validate it against the Trainer API
schema (:func:`validate_trainjob`, unknown fields rejected).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

API_VERSION, KIND, RUNTIME = "trainer.kubeflow.org/v1alpha1", "TrainJob", "torch-distributed"
TRAINING_STAGES = ("train-world-model", "pretrain-policy", "rft")


@dataclass
class TrainJobRequest:
    """One training stage run as a TrainJob: ``vla-rft <stage_args...>`` under torchrun on every node."""

    stage_args: Sequence[str]  #: e.g. ["pretrain-policy", "--dataset", "s3://...", "--out", "s3://..."]
    image: str
    nodes: int = 1
    procs_per_node: int = 1
    resources_per_node: dict[str, Any] = field(default_factory=dict)  #: e.g. {"nvidia.com/gpu": 1}
    env: dict[str, str] = field(default_factory=dict)  #: plain settings only; credentials come from a Secret

    def __post_init__(self) -> None:
        if not self.stage_args or self.stage_args[0] not in TRAINING_STAGES:
            raise ValueError(f"stage_args must start with a training stage ({', '.join(TRAINING_STAGES)}), "
                             f"got {list(self.stage_args)[:1]}")
        for name in ("nodes", "procs_per_node"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        secretish = [k for k in self.env if any(w in k.upper() for w in ("SECRET", "PASSWORD", "TOKEN", "KEY"))]
        if secretish:
            raise ValueError(f"env {secretish} looks like credentials; mount them from a Kubernetes Secret instead")

    @property
    def distributed(self) -> bool:
        return self.nodes * self.procs_per_node > 1

    def command(self) -> list[str]:
        # torchrun reads PET_NNODES / PET_NPROC_PER_NODE / PET_NODE_RANK / PET_MASTER_ADDR set by the runtime
        return ["torchrun", "-m", "vla_rft.cli"]


def build_trainjob(req: TrainJobRequest, name: str) -> dict[str, Any]:
    """The TrainJob object the submission creates (camelCase, as the API server stores it)."""
    trainer: dict[str, Any] = {"image": req.image, "command": req.command(), "args": list(req.stage_args),
                               "numNodes": req.nodes, "numProcPerNode": req.procs_per_node,
                               "env": [{"name": k, "value": v} for k, v in sorted(req.env.items())]}
    if req.resources_per_node:
        trainer["resourcesPerNode"] = {"limits": dict(req.resources_per_node)}
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name},
            "spec": {"runtimeRef": {"name": RUNTIME}, "trainer": trainer}}


def _check_fields(ann: Any, data: Any, where: str) -> None:
    """Reject keys the pydantic models (nested, in lists and maps) do not declare, by alias."""
    import typing

    from pydantic import BaseModel

    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        if not isinstance(data, dict) or "actual_instance" in ann.model_fields:  # oneOf wrappers hold scalars
            return
        fields = {(f.alias or n): f for n, f in ann.model_fields.items()}
        for key, value in data.items():
            if key not in fields:
                raise ValueError(f"{where}.{key} is not a field of {ann.__name__} (known: {sorted(fields)})")
            _check_fields(fields[key].annotation, value, f"{where}.{key}")
    elif origin in (list, typing.List) and isinstance(data, list):  # noqa: UP006
        for i, item in enumerate(data):
            _check_fields(args[0], item, f"{where}[{i}]")
    elif origin in (dict, typing.Dict) and isinstance(data, dict):  # noqa: UP006
        for key, value in data.items():
            _check_fields(args[1], value, f"{where}.{key}")
    else:
        for arg in args:  # Optional / Union
            _check_fields(arg, data, where)


def validate_trainjob(manifest: dict[str, Any]) -> None:
    """Validate against the ``kubeflow-trainer-api`` models, unknown fields rejected; raises ValueError."""
    from kubeflow_trainer_api.models import TrainerV1alpha1TrainJob

    _check_fields(TrainerV1alpha1TrainJob, manifest, "TrainJob")
    TrainerV1alpha1TrainJob.from_dict(manifest)  # the generated client's parser: it knows Quantity strings


def submit_and_wait(req: TrainJobRequest, *, backend=None, log: Callable[[str], None] = print,
                    timeout_s: int = 24 * 3600) -> str:
    """Submit ``req`` through ``TrainerClient`` (Kubernetes backend by default), wait, surface status and logs.

    Returns the job name; raises RuntimeError naming the job's reason when it does not complete.
    """
    from kubeflow.trainer import CustomTrainerContainer, KubernetesBackendConfig, TrainerClient
    from kubeflow.trainer.options import TrainerArgs, TrainerCommand

    client = TrainerClient(backend or KubernetesBackendConfig())
    env = {**req.env, "PET_NPROC_PER_NODE": str(req.procs_per_node)}
    name = client.train(runtime=RUNTIME,
                        trainer=CustomTrainerContainer(image=req.image, num_nodes=req.nodes,
                                                       resources_per_node=req.resources_per_node or None, env=env),
                        options=[TrainerCommand(req.command()), TrainerArgs(list(req.stage_args))])
    log(f"trainjob {name}: submitted ({req.nodes} node(s) x {req.procs_per_node} process(es), {req.stage_args[0]})")
    job = client.wait_for_job_status(name, status={"Complete", "Failed"}, timeout=timeout_s,
                                     callbacks=[lambda j: log(f"trainjob {name}: {j.status}")])
    try:
        for line in client.get_job_logs(name):
            log(line.rstrip("\n"))
    except Exception as exc:  # logs are a convenience; the status decides
        log(f"trainjob {name}: logs unavailable ({exc})")
    if job.status != "Complete":
        raise RuntimeError(f"trainjob {name} ended {job.status}: {getattr(job, 'message', '') or 'see its logs above'}")
    return name

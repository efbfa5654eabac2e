"""Kubeflow Trainer (v2) TrainJobs for training stages that ask for more than one process.

A component whose stage runs on ``nodes x procs_per_node > 1`` processes does not train in its own
pod: it submits a ``TrainJob`` (runtime ``torch-distributed``, our image, ``torchrun -m vla_rft.cli
<stage> ...``; artifact URIs on MinIO) through the ``kubeflow`` SDK's ``TrainerClient``, waits for
it, echoes its status and logs, and fails with the job's reason when the job fails. One process
keeps the in-pod path. The manifest builder is pure, so tests validate it against the Trainer API
schema (:func:`validate_trainjob`, unknown fields rejected).

The SDK's local process backend (``LocalProcessBackendConfig``) takes the same request: it runs
only Python functions (``CustomTrainer``) under ``torchrun`` from a fresh, empty venv, so
:func:`local_process_trainer` hands it a function that calls ``vla_rft.cli`` with the TrainJob's
argv, plus a wheel built on the fly that links that venv to this environment (a ``.pth``) and puts
``torchrun`` in its ``bin/``: nothing is downloaded, no index is asked.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

API_VERSION, KIND, RUNTIME = "trainer.kubeflow.org/v1alpha1", "TrainJob", "torch-distributed"
TRAINING_STAGES = ("train-world-model", "pretrain-policy", "rft")
#: the Secret the pipeline's pods read the MinIO keys from; the trainer pods read the same one
S3_SECRET_NAME = "mlpipeline-minio-artifact"
S3_SECRET_ENV = {"accesskey": "AWS_ACCESS_KEY_ID", "secretkey": "AWS_SECRET_ACCESS_KEY"}
#: trainer pods run as this ServiceAccount (manifests/rbac.yaml): no API token mounted, they only train
TRAINER_SERVICE_ACCOUNT = "vla-rft-trainer"
#: the runtime's trainer container and replicated job (torch-distributed ClusterTrainingRuntime)
NODE = "node"
PATCH_MANAGER = "trainer.kubeflow.org/kubeflow-sdk"


@dataclass
class TrainJobRequest:
    """One training stage run as a TrainJob: ``vla-rft <stage_args...>`` under torchrun on every node."""

    stage_args: Sequence[str]  #: e.g. ["pretrain-policy", "--dataset", "s3://...", "--out", "s3://..."]
    image: str
    nodes: int = 1
    procs_per_node: int = 1
    resources_per_node: dict[str, Any] = field(default_factory=dict)  #: e.g. {"nvidia.com/gpu": 1}
    env: dict[str, str] = field(default_factory=dict)  #: plain settings only; credentials come from a Secret
    #: env var -> (Secret name, key): credentials, referenced from a Kubernetes Secret, never copied
    secret_env: dict[str, tuple[str, str]] = field(default_factory=dict)
    service_account: str | None = None  #: the trainer pods' ServiceAccount (None: the runtime's)

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


def _secret_env(req: TrainJobRequest) -> list[dict[str, Any]]:
    return [{"name": var, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
            for var, (secret, key) in sorted(req.secret_env.items())]


def _pod_spec_patch(req: TrainJobRequest) -> dict[str, Any]:
    """The trainer pods' patch: their ServiceAccount and the Secret-backed env (camelCase)."""
    spec: dict[str, Any] = {}
    if req.service_account:
        spec["serviceAccountName"] = req.service_account
    if req.secret_env:
        spec["containers"] = [{"name": NODE, "env": _secret_env(req)}]
    return spec


def build_trainjob(req: TrainJobRequest, name: str) -> dict[str, Any]:
    """The TrainJob object the submission creates (camelCase, as the API server stores it)."""
    trainer: dict[str, Any] = {"image": req.image, "command": req.command(), "args": list(req.stage_args),
                               "numNodes": req.nodes, "numProcPerNode": req.procs_per_node,
                               "env": [{"name": k, "value": v} for k, v in sorted(req.env.items())]}
    if req.resources_per_node:
        trainer["resourcesPerNode"] = {"limits": dict(req.resources_per_node)}
    spec: dict[str, Any] = {"runtimeRef": {"name": RUNTIME}, "trainer": trainer}
    pod = _pod_spec_patch(req)
    if pod:
        spec["runtimePatches"] = [{"manager": PATCH_MANAGER, "trainingRuntimeSpec": {"template": {"spec": {
            "replicatedJobs": [{"name": NODE, "template": {"spec": {"template": {"spec": pod}}}}]}}}}]
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name}, "spec": spec}


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

    With ``LocalProcessBackendConfig`` the same request runs as :func:`local_process_trainer` on this
    machine. Returns the job name; raises RuntimeError naming the job's reason when it does not complete.
    """
    import tempfile

    from kubeflow.trainer import (
        CustomTrainerContainer, KubernetesBackendConfig, LocalProcessBackendConfig, TrainerClient,
    )
    from kubeflow.trainer.options import TrainerArgs, TrainerCommand

    client = TrainerClient(backend or KubernetesBackendConfig())
    with tempfile.TemporaryDirectory(prefix="vla-rft-job-env-") as wheel_dir:
        if isinstance(backend, LocalProcessBackendConfig):
            trainer, options = local_process_trainer(req, wheel_dir), []
        else:
            env = {**req.env, "PET_NPROC_PER_NODE": str(req.procs_per_node)}
            options = [TrainerCommand(req.command()), TrainerArgs(list(req.stage_args))]
            if req.secret_env or req.service_account:
                options.append(_runtime_patch(req))
            trainer = CustomTrainerContainer(image=req.image, num_nodes=req.nodes,
                                             resources_per_node=req.resources_per_node or None, env=env)
        name = client.train(runtime=RUNTIME, trainer=trainer, options=options)
        log(f"trainjob {name}: submitted ({req.nodes} node(s) x {req.procs_per_node} process(es), "
            f"{req.stage_args[0]})")
        seen: list[str] = []

        def on_status(job) -> None:  # polled every 2 s: say each status once
            if not seen or seen[-1] != job.status:
                seen.append(job.status)
                log(f"trainjob {name}: {job.status}")

        job = client.wait_for_job_status(name, status={"Complete", "Failed"}, timeout=timeout_s,
                                         callbacks=[on_status])
        try:
            for line in client.get_job_logs(name):
                log(line.rstrip("\n"))
        except Exception as exc:  # logs are a convenience; the status decides
            log(f"trainjob {name}: logs unavailable ({exc})")
    if job.status != "Complete":
        raise RuntimeError(f"trainjob {name} ended {job.status}: {getattr(job, 'message', '') or 'see its logs above'}")
    return name


def _run_cli(job: dict) -> None:
    """What every rank of a local-process job runs: ``vla_rft.cli`` with the TrainJob's argv.

    The SDK ships this function's source to the job (``inspect.getsource``): it must stand alone.
    """
    import sys

    from vla_rft.cli import main

    sys.exit(main(job["argv"]))


#: the local venv's stand-in distribution (a .pth and torchrun) and the runtime requirement it replaces
JOB_ENV_DIST = "vla-rft-job-env"
#: the local runtime always asks pip for ``torch``; a requirement of that name whose marker no
#: interpreter matches replaces it (the SDK lets a trainer's package override the runtime's by name)
NO_TORCH_DOWNLOAD = "torch; python_version < '0'"


def build_job_env_wheel(wheel_dir: str) -> str:
    """A wheel that joins a fresh venv to this environment: a ``.pth`` (``site.addsitedir`` of this
    interpreter's site-packages, so editable installs resolve too) and a ``torchrun`` console script.

    Pure metadata, no build step: pip installs it from its path without an index. Returns its path.
    """
    import base64
    import hashlib
    import site
    import zipfile
    from pathlib import Path

    from vla_rft import __version__

    name = JOB_ENV_DIST.replace("-", "_")
    info = f"{name}-{__version__}.dist-info"
    sites = [p for p in site.getsitepackages() if Path(p).is_dir()]
    files = {
        f"{name}.pth": "".join(f"import site; site.addsitedir({p!r})\n" for p in sites),
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {JOB_ENV_DIST}\nVersion: {__version__}\n"
                            "Summary: joins a local TrainJob's venv to the vla-rft environment that submitted it\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: vla-rft\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{info}/entry_points.txt": "[console_scripts]\ntorchrun = torch.distributed.run:main\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    files[f"{info}/RECORD"] = "\n".join([*record, f"{info}/RECORD,,"]) + "\n"
    wheel = Path(wheel_dir) / f"{name}-{__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as z:
        for path, text in files.items():
            z.writestr(path, text)
    return str(wheel)


def local_process_trainer(req: TrainJobRequest, wheel_dir: str):
    """``req`` as the ``CustomTrainer`` the SDK's local process backend runs: 1 node x ``procs_per_node``
    ranks of ``vla_rft.cli <req.stage_args>`` under the job venv's torchrun (``--standalone``).

    The job inherits this process's environment (credentials included, as any child process does;
    nothing is written down), with ``req.env`` on top. Raises ValueError for what it cannot run.
    """
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from kubeflow.trainer import CustomTrainer

    if req.nodes != 1:
        raise ValueError(f"the local process backend runs one node; this TrainJob asks for nodes={req.nodes} "
                         "(run it on a cluster, or set nodes=1)")
    # the backend builds the job venv from the first `python` on PATH; this environment's .pth needs the same minor
    python = shutil.which("python") or shutil.which("python3")
    found = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], capture_output=True,
                           text=True).stdout.strip() if python else ""
    here = "%d.%d" % sys.version_info[:2]
    if found != here:
        raise ValueError(f"the local process backend builds its venv with `python` on PATH ({python or 'none'}, "
                         f"Python {found or '?'}), not this Python {here} ({sys.executable}): put "
                         f"{Path(sys.executable).parent} first on PATH")
    wheel = Path(build_job_env_wheel(wheel_dir))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}  # the .pth carries paths
    env.update(req.env)
    env.update({"PET_NPROC_PER_NODE": str(req.procs_per_node), "PET_STANDALONE": "1",  # torchrun's flags by env
                "PIP_NO_INDEX": "1"})  # the SDK puts --index-url on pip's line; the wheel is a file
    return CustomTrainer(func=_run_cli, func_args={"argv": list(req.stage_args)}, num_nodes=1, env=env,
                         packages_to_install=[NO_TORCH_DOWNLOAD, f"{JOB_ENV_DIST} @ {wheel.as_uri()}"])


def _runtime_patch(req: TrainJobRequest):
    """:func:`_pod_spec_patch` as the SDK's ``RuntimePatch`` option (the same ``spec.runtimePatches`` entry)."""
    from kubeflow.trainer.options.kubernetes import (
        ContainerPatch, JobSetSpecPatch, JobSetTemplatePatch, JobSpecPatch, JobTemplatePatch, PodSpecPatch,
        PodTemplatePatch, ReplicatedJobPatch, RuntimePatch, TrainingRuntimeSpecPatch,
    )

    containers = [ContainerPatch(name=NODE, env=_secret_env(req))] if req.secret_env else None
    pod = PodSpecPatch(service_account_name=req.service_account, containers=containers)
    job = ReplicatedJobPatch(name=NODE, template=JobTemplatePatch(spec=JobSpecPatch(
        template=PodTemplatePatch(spec=pod))))
    return RuntimePatch(training_runtime_spec=TrainingRuntimeSpecPatch(
        template=JobSetTemplatePatch(spec=JobSetSpecPatch(replicated_jobs=[job]))))


def s3_uri(uri: str) -> str:
    """A KFP artifact URI as our storage's ``s3://bucket/key`` (the launcher writes ``minio://`` on MinIO)."""
    for scheme in ("minio://", "s3://"):
        if uri.startswith(scheme):
            return "s3://" + uri[len(scheme):].rstrip("/")
    raise ValueError(f"a TrainJob's pods reach artifacts on S3 only; {uri!r} is not an s3:// or minio:// URI "
                     "(set the pipeline root to MinIO, or run with nodes=1, procs_per_node=1)")


def stage_argv(stage: str, config_json: str, inputs: dict[str, str], out: str) -> list[str]:
    """The ``vla_rft.cli`` argv every rank of a TrainJob runs: inputs and output as S3 URIs."""
    args = [stage, "--config-json", config_json]
    for flag, uri in inputs.items():
        args += [flag, s3_uri(uri)]
    return args + ["--out", out, "--overwrite"]


def run_stage(stage: str, config_json: str, inputs: dict[str, str], output_path: str, output_uri: str, *,
              kind: str, nodes: int, procs_per_node: int, image: str, gpus: int = 0, backend=None,
              log: Callable[[str], None] = print) -> str:
    """Train ``stage`` as a TrainJob and put the verified artifact at the component's output ``output_path``.

    ``inputs`` maps CLI flags to KFP artifact URIs (``{"--dataset": dataset.uri}``). The pods write
    to ``<output uri>-trainjob`` on S3 (our atomic format); the artifact is read back, verified and
    copied to ``output_path`` with a manifest for local files, so the KFP launcher uploads it as the
    task's output like an in-pod run. Returns the TrainJob's name.
    """
    import json
    import os
    import shutil
    import tempfile
    from pathlib import Path

    from vla_rft import storage

    staging = s3_uri(output_uri) + "-trainjob"
    args = stage_argv(stage, config_json, inputs, staging)
    env = {k: os.environ[k] for k in ("VLA_RFT_S3_ENDPOINT", "VLA_RFT_S3_REGION") if os.environ.get(k)}
    req = TrainJobRequest(args, image, nodes, procs_per_node, {"nvidia.com/gpu": gpus} if gpus else {}, env,
                          secret_env={var: (S3_SECRET_NAME, key) for key, var in S3_SECRET_ENV.items()},
                          service_account=TRAINER_SERVICE_ACCOUNT)
    name = submit_and_wait(req, backend=backend, log=log)
    with tempfile.TemporaryDirectory(prefix="vla-rft-trainjob-") as tmp:
        src, manifest = storage.read_artifact(staging, expected_kind=kind, cache_dir=Path(tmp))
        shutil.copytree(src, output_path, dirs_exist_ok=True)
    # the launcher uploads these files under flat keys: the manifest must not point at the staging prefix
    meta = Path(output_path) / storage.MANIFEST_NAME
    local = {k: v for k, v in json.loads(meta.read_text()).items() if k != "data_prefix"}
    meta.write_text(json.dumps(local, indent=2, sort_keys=True))
    storage.read_artifact(output_path, expected_kind=kind)  # verifies every file against the manifest
    log(f"trainjob {name}: {stage} artifact verified ({len(manifest['files'])} files) -> {output_uri}")
    return name

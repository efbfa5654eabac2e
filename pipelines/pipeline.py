"""The vla-rft KFP pipeline: configure -> prepare-data -> (train-world-model || pretrain-policy) -> rft -> evaluate -> promote.

Evaluation fans out: ``evaluation-suites`` lists the suites, a ``dsl.ParallelFor`` runs one
``evaluate-suite`` task per suite, and ``evaluate`` merges the parts into the one evaluation
artifact (equal to evaluating every suite in one task: the simulator and seeds are deterministic).

Parameters come from ``params.yaml``: the knobs people change (profile, tasks, episode and step
counts, group size, device, GPUs, registry) are typed top-level parameters of the run form; the
whole file (as JSON) is the ``params_json`` parameter's default, so a compiled package is
self-contained and everything else stays reachable (``overrides``: ``section.key=value`` lines).
MinIO credentials reach the pods from a Kubernetes Secret (``use_secret_as_env``), never as parameters.
"""


import json
from typing import Any, NamedTuple

from kfp import dsl, kubernetes

from vla_rft.components.outputs import KNOBS
from vla_rft.components.stage_components import DEFAULT_IMAGE, build_components
from vla_rft.components.trainjob import S3_SECRET_ENV, S3_SECRET_NAME

PIPELINE_NAME = "vla-rft"

#: what each knob is, for the run form (the default and the profiles' values are appended)
_KNOB_HELP = {
    "tasks": "Meta-World tasks, comma-separated",
    "episodes_per_task": "expert episodes recorded per task",
    "world_model_steps": "world-model training steps",
    "bc_steps": "behaviour-cloning steps of the base policy",
    "rft_steps": "GRPO steps",
    "group_size": "GRPO group size G (samples per start state)",
    "eval_episodes_per_task": "real-simulator evaluation episodes per task and suite (perturbation suites only "
                              "where the profile sets evaluate.nominal_episodes_per_task)",
    "device": "torch device of the training stages: cpu or cuda",
    "registry": "model registry the promote gate publishes to (local path or s3://bucket/prefix)",
    "data_source": "dataset to train on: generate, a dataset URI (s3://... or a path) or dvc:REV of dvc_repo",
    "base_policy": "base policy: scratch (behaviour cloning) or champion (the registry's champion; none yet: BC)",
    "dvc_repo": "git repository (URL or path) of the DVC-tracked datasets and the rollouts history",
    "accumulate_rollouts": "closed loop: append this run's rollouts to the rollouts history as a new DVC version",
}


def load_params(path=None) -> str:
    """params.yaml (default: the working directory's, else the package's) as one line of JSON, checked."""
    import yaml

    from vla_rft.config import config_from_dict
    from vla_rft.defaults import params_path

    raw = yaml.safe_load(params_path(path).read_text())
    config_from_dict(raw)
    return json.dumps(raw, sort_keys=True)


def knob_defaults(raw: dict[str, Any]) -> dict[str, tuple[Any, str]]:
    """Each knob's default and description for the run form.

    A knob that some profile sets defaults to "not set" (0 or ""): the profile's value applies
    unless the user types one. A knob no profile touches shows params.yaml's value itself.
    """
    profiles = raw.get("profiles", {}) or {}
    out = {}
    for knob, dotted in KNOBS.items():
        section, key = dotted.split(".")
        base = raw.get(section, {}).get(key)
        by_profile = {name: p[section][key] for name, p in profiles.items() if key in (p.get(section) or {})}
        text = lambda v: ", ".join(map(str, v)) if isinstance(v, list) else str(v)  # noqa: E731
        if by_profile:
            empty = "" if isinstance(base, (str, list)) else 0
            values = ", ".join(f"{name}: {text(v)}" for name, v in by_profile.items())
            default = empty
            help_ = f"{_KNOB_HELP[knob]}; {empty!r} = the profile's value ({values}; otherwise {text(base)})"
        else:
            default = text(base) if isinstance(base, list) else base
            help_ = f"{_KNOB_HELP[knob]} (params.yaml: {text(base)})"
        out[knob] = (default, help_)
    return out


def build_pipeline(params_json: str, image: str = DEFAULT_IMAGE, s3_endpoint: str = "http://minio-service:9000",
                   cluster: bool = True):
    """The pipeline function with ``params_json`` as its default; ``cluster=False`` leaves out Kubernetes-only settings."""
    comps = build_components(image)
    raw = json.loads(params_json)
    default_profile = str(raw.get("profile", "quick"))
    knobs = knob_defaults(raw)
    d = {k: v[0] for k, v in knobs.items()}

    def _resources(task, cpu: str, memory: str, gpus=None, retries: int = 0):
        task.set_cpu_request(cpu).set_memory_request(memory).set_memory_limit(memory)
        if gpus is not None:
            # GPU count is a pipeline parameter: 0 keeps the task on CPU nodes
            task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(gpus)
        if retries:
            task.set_retry(num_retries=retries, backoff_duration="60s", backoff_factor=2.0)
        if cluster:
            task.set_env_variable("VLA_RFT_S3_ENDPOINT", s3_endpoint)
            kubernetes.use_secret_as_env(task, S3_SECRET_NAME, S3_SECRET_ENV, optional=True)
        return task

    def vla_rft_pipeline(
        profile: str = default_profile, tasks: str = d["tasks"], episodes_per_task: int = d["episodes_per_task"],
        world_model_steps: int = d["world_model_steps"], bc_steps: int = d["bc_steps"],
        rft_steps: int = d["rft_steps"], group_size: int = d["group_size"],
        eval_episodes_per_task: int = d["eval_episodes_per_task"], device: str = d["device"], gpus: int = 0,
        registry: str = d["registry"], data_source: str = d["data_source"], base_policy: str = d["base_policy"],
        dvc_repo: str = d["dvc_repo"], accumulate_rollouts: bool = d["accumulate_rollouts"],
        closed_loop: bool = False, nodes: int = 1, procs_per_node: int = 1, params_json: str = params_json,
        overrides: list = [],  # noqa: B006 - KFP literal
    ) -> NamedTuple("Outputs", [("promoted", bool), ("reason", str), ("version", str), ("candidate_score", float)]):
        cfg = comps["configure"](
            params_json=params_json, profile=profile, overrides=overrides, tasks=tasks,
            episodes_per_task=episodes_per_task, world_model_steps=world_model_steps, bc_steps=bc_steps,
            rft_steps=rft_steps, group_size=group_size, eval_episodes_per_task=eval_episodes_per_task,
            device=device, registry=registry, data_source=data_source, base_policy=base_policy, dvc_repo=dvc_repo,
            accumulate_rollouts=accumulate_rollouts)
        _resources(cfg.set_display_name("configure"), "100m", "1Gi")
        config_json = cfg.outputs["Output"]
        data = comps["prepare-data"](config_json=config_json).set_display_name("prepare-data")
        _resources(data, "2", "8Gi")
        # nodes x procs_per_node > 1: each training task submits a TrainJob in the image and waits for it
        scale = dict(nodes=nodes, procs_per_node=procs_per_node, gpus=gpus, image=image)
        wm = comps["train-world-model"](config_json=config_json, dataset=data.outputs["dataset"], **scale)
        _resources(wm.set_display_name("train-world-model"), "2", "8Gi", gpus if cluster else None, retries=2)
        bc = comps["pretrain-policy"](config_json=config_json, dataset=data.outputs["dataset"], **scale)
        _resources(bc.set_display_name("pretrain-policy"), "2", "8Gi", gpus if cluster else None, retries=2)
        tuned = comps["rft"](config_json=config_json, dataset=data.outputs["dataset"],
                             world_model=wm.outputs["world_model"], base_policy=bc.outputs["policy"], **scale)
        _resources(tuned.set_display_name("rft"), "2", "8Gi", gpus if cluster else None, retries=2)
        with dsl.If(closed_loop == True, name="closed-loop"):  # noqa: E712 - a KFP condition, not Python
            roll = comps["collect-rollouts"](config_json=config_json, base_policy=bc.outputs["policy"])
            _resources(roll.set_display_name("collect-rollouts"), "2", "8Gi")
            grounded = comps["ground-world-model"](config_json=config_json, dataset=data.outputs["dataset"],
                                                   rollouts=roll.outputs["rollouts"],
                                                   world_model=wm.outputs["world_model"])
            _resources(grounded.set_display_name("ground-world-model"), "2", "8Gi", gpus if cluster else None,
                       retries=2)
            judge = comps["train-success-model"](config_json=config_json, dataset=data.outputs["dataset"],
                                                 rollouts=roll.outputs["rollouts"],
                                                 world_model=grounded.outputs["grounded"])
            _resources(judge.set_display_name("train-success-model"), "2", "8Gi", gpus if cluster else None,
                       retries=2)
            episodic = comps["rft-episode"](config_json=config_json, dataset=data.outputs["dataset"],
                                            rollouts=roll.outputs["rollouts"], world_model=grounded.outputs["grounded"],
                                            base_policy=bc.outputs["policy"],
                                            success_model=judge.outputs["success_model"])
            _resources(episodic.set_display_name("rft-episode"), "2", "8Gi", gpus if cluster else None, retries=2)
        # evaluation fans out: one evaluate-suite task per suite, merged into the one evaluation artifact
        suites = comps["evaluation-suites"](config_json=config_json)
        _resources(suites.set_display_name("evaluation-suites"), "100m", "1Gi")
        with dsl.ParallelFor(suites.output, name="suites") as branch:
            part = comps["evaluate-suite"](branch=branch, base_policy=bc.outputs["policy"],
                                           rft_policy=tuned.outputs["policy"])
            _resources(part.set_display_name("evaluate-suite"), "2", "8Gi")
        ev = comps["evaluate"](config_json=config_json, parts=dsl.Collected(part.outputs["part"]),
                               world_model=wm.outputs["world_model"])
        _resources(ev.set_display_name("evaluate"), "1", "4Gi")
        gate = comps["promote"](config_json=config_json, policy=tuned.outputs["policy"],
                                evaluation=ev.outputs["evaluation"])
        _resources(gate.set_display_name("promote"), "500m", "2Gi")
        return NamedTuple("Outputs", [("promoted", bool), ("reason", str), ("version", str),
                                      ("candidate_score", float)])(
            gate.outputs["promoted"], gate.outputs["reason"], gate.outputs["version"], gate.outputs["candidate_score"])

    # the run form shows these lines next to each parameter (KFP reads the Google-style Args section)
    args = {"profile": f"profile of params.yaml: {', '.join(raw.get('profiles', {}) or ['none'])}",
            **{k: v[1] for k, v in knobs.items()},
            "gpus": "GPUs per training task on the cluster (0: CPU nodes); per node of a TrainJob",
            "nodes": "nodes per training stage: nodes x procs_per_node > 1 runs it as a Kubeflow Trainer TrainJob "
                     "(torch-distributed, cluster only)",
            "procs_per_node": "torchrun processes per node of a training TrainJob (one GPU each with device cuda)",
            "closed_loop": "also run closed-loop RFT: collect-rollouts, ground-world-model, train-success-model, "
                           "rft-episode (its policy and honesty.json are artifacts; evaluate and promote stay on rft)",
            "params_json": "the whole params.yaml as JSON: everything the knobs do not cover",
            "overrides": "section.key=value lines applied last, e.g. [\"sim.num_workers=1\"]"}
    vla_rft_pipeline.__doc__ = (__doc__.splitlines()[0] + "\n\nArgs:\n"
                                + "".join(f"    {name}: {text}\n" for name, text in args.items()))
    return dsl.pipeline(name=PIPELINE_NAME, description=__doc__.splitlines()[0])(vla_rft_pipeline)

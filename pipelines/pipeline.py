"""The vla-rft KFP pipeline: prepare-data -> (train-world-model || pretrain-policy) -> rft -> evaluate -> promote.

Parameters come from ``params.yaml``: the whole file (as JSON) is the ``params_json`` parameter's default, so a
compiled package is self-contained and the Kubeflow UI shows every hyperparameter. MinIO
credentials reach the pods from a Kubernetes Secret (``use_secret_as_env``), never as parameters.
"""


import json
from pathlib import Path

import yaml
from kfp import dsl, kubernetes

from vla_rft.components.stage_components import DEFAULT_IMAGE, build_components

PIPELINE_NAME = "vla-rft"
S3_SECRET_NAME = "mlpipeline-minio-artifact"
S3_SECRET_ENV = {"accesskey": "AWS_ACCESS_KEY_ID", "secretkey": "AWS_SECRET_ACCESS_KEY"}


def load_params(path="params.yaml") -> str:
    """params.yaml as one line of JSON (ints stay ints), checked to validate."""
    from vla_rft.config import config_from_dict

    raw = yaml.safe_load(Path(path).read_text())
    config_from_dict(raw)
    return json.dumps(raw, sort_keys=True)


def build_pipeline(params_json: str, image: str = DEFAULT_IMAGE, s3_endpoint: str = "http://minio-service:9000",
                   cluster: bool = True):
    """The pipeline function with ``params_json`` as its default; ``cluster=False`` leaves out Kubernetes-only settings."""
    comps = build_components(image)
    raw = json.loads(params_json)
    default_profile = str(raw.get("profile", "quick"))
    default_registry = str(raw.get("promote", {}).get("registry", ""))

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

    @dsl.pipeline(name=PIPELINE_NAME, description=__doc__.splitlines()[0])
    def vla_rft_pipeline(params_json: str = params_json, profile: str = default_profile,
                         overrides: list = [], device: str = "cpu", gpus: int = 0,  # noqa: B006 - KFP literal
                         registry: str = default_registry):
        common = dict(params_json=params_json, profile=profile, overrides=overrides)
        data = comps["prepare-data"](device=device, **common).set_display_name("prepare-data")
        _resources(data, "2", "8Gi")
        wm = comps["train-world-model"](device=device, dataset=data.outputs["dataset"], **common)
        _resources(wm.set_display_name("train-world-model"), "2", "8Gi", gpus if cluster else None, retries=2)
        bc = comps["pretrain-policy"](device=device, dataset=data.outputs["dataset"], **common)
        _resources(bc.set_display_name("pretrain-policy"), "2", "8Gi", gpus if cluster else None, retries=2)
        tuned = comps["rft"](device=device, dataset=data.outputs["dataset"], world_model=wm.outputs["world_model"],
                             base_policy=bc.outputs["policy"], **common)
        _resources(tuned.set_display_name("rft"), "2", "8Gi", gpus if cluster else None, retries=2)
        ev = comps["evaluate"](device=device, world_model=wm.outputs["world_model"], base_policy=bc.outputs["policy"],
                               rft_policy=tuned.outputs["policy"], **common)
        _resources(ev.set_display_name("evaluate"), "2", "8Gi")
        gate = comps["promote"](policy=tuned.outputs["policy"], evaluation=ev.outputs["evaluation"],
                                registry=registry, **common)
        _resources(gate.set_display_name("promote"), "500m", "2Gi")

    return vla_rft_pipeline

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
    """The pipeline function with ``params`` as its default; ``cluster=False`` leaves out Kubernetes-only settings."""
    comps = build_components(image)
    default_profile = str(json.loads(params_json).get("profile", "quick"))

    def _on_cluster(task, cpu: str, memory: str):
        task.set_cpu_request(cpu).set_memory_request(memory)
        if cluster:
            task.set_env_variable("VLA_RFT_S3_ENDPOINT", s3_endpoint)
            kubernetes.use_secret_as_env(task, S3_SECRET_NAME, S3_SECRET_ENV, optional=True)
        return task

    @dsl.pipeline(name=PIPELINE_NAME, description=__doc__.splitlines()[0])
    def vla_rft_pipeline(params_json: str = params_json, profile: str = default_profile,
                         overrides: list = []):  # noqa: B006 - KFP parameters need literal defaults
        data = comps["prepare-data"](params_json=params_json, profile=profile, overrides=overrides)
        data.set_display_name("prepare-data")
        _on_cluster(data, "2", "4Gi")

    return vla_rft_pipeline

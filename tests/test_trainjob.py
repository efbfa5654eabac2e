"""TrainJob submission for multi-process training stages: the object validates against the Trainer API
schema (unknown fields rejected), bad requests are refused by name, and RBAC grants what it needs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
pytest.importorskip("kubeflow_trainer_api")

from components.trainjob import TrainJobRequest, build_trainjob, validate_trainjob  # noqa: E402

ARGS = ["pretrain-policy", "--dataset", "s3://vla-rft-data/d", "--out", "s3://vla-rft-models/p", "--profile", "large"]


def test_trainjob_validates_against_the_trainer_schema():
    req = TrainJobRequest(ARGS, image="ghcr.io/example/vla-rft:cuda", nodes=2, procs_per_node=4,
                          resources_per_node={"nvidia.com/gpu": "4"}, env={"S3_ENDPOINT": "http://minio:9000"})
    manifest = build_trainjob(req, "vla-rft-bc-1")
    validate_trainjob(manifest)
    trainer = manifest["spec"]["trainer"]
    assert manifest["spec"]["runtimeRef"]["name"] == "torch-distributed"
    assert trainer["command"] == ["torchrun", "-m", "vla_rft.cli"] and trainer["args"] == ARGS
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (2, 4)
    assert req.distributed and not TrainJobRequest(ARGS, image="x").distributed


def test_unknown_field_is_rejected():
    manifest = build_trainjob(TrainJobRequest(ARGS, image="x", procs_per_node=2), "j")
    manifest["spec"]["trainer"]["numProcsPerNode"] = 2  # a typo the API server would drop silently
    with pytest.raises(ValueError, match=r"TrainJob.spec.trainer.numProcsPerNode is not a field"):
        validate_trainjob(manifest)


@pytest.mark.parametrize("kwargs,match", [
    (dict(stage_args=["evaluate"]), "must start with a training stage"),
    (dict(stage_args=ARGS, procs_per_node=0), "procs_per_node must be a positive integer"),
    (dict(stage_args=ARGS, env={"AWS_SECRET_ACCESS_KEY": "x"}), "looks like credentials"),
])
def test_bad_requests_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainJobRequest(image="x", **kwargs)


def test_rbac_grants_trainjobs_and_nothing_more():
    docs = list(yaml.safe_load_all(open("manifests/rbac.yaml")))
    rules = next(d for d in docs if d["kind"] == "Role")["rules"]
    trainer = [r for r in rules if "trainer.kubeflow.org" in r["apiGroups"]]
    assert trainer == [{"apiGroups": ["trainer.kubeflow.org"], "resources": ["trainjobs"],
                        "verbs": ["create", "get", "list", "watch", "delete"]}]
    logs = [r for r in rules if "pods/log" in r["resources"]]
    assert logs and "get" in logs[0]["verbs"]
    assert all("*" not in r["verbs"] and "*" not in r["resources"] for r in rules)


def test_wrong_type_is_rejected():
    manifest = build_trainjob(TrainJobRequest(ARGS, image="x", procs_per_node=2), "j")
    manifest["spec"]["trainer"]["numNodes"] = "two"
    with pytest.raises(Exception, match="numNodes"):
        validate_trainjob(manifest)

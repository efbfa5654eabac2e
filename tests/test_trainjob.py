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
from s3server import s3_env, s3_server  # noqa: E402, F401 - fixtures

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


SECRET_REQ = dict(image="ghcr.io/example/vla-rft:cuda", nodes=2, procs_per_node=2,
                  env={"VLA_RFT_S3_ENDPOINT": "http://minio-service:9000"},
                  secret_env={"AWS_ACCESS_KEY_ID": ("mlpipeline-minio-artifact", "accesskey"),
                              "AWS_SECRET_ACCESS_KEY": ("mlpipeline-minio-artifact", "secretkey")},
                  service_account="vla-rft-trainer")


def test_credentials_reach_the_trainer_pods_from_the_secret_and_the_sdk_sends_the_same_patch():
    """The keys are Secret references in the pods' env (no value anywhere), the pods run as the token-less
    ServiceAccount, and the SDK's RuntimePatch option (what submit_and_wait sends) is exactly that patch."""
    from components import trainjob
    from kubeflow.trainer.options.kubernetes import _patch_to_dict

    req = TrainJobRequest(ARGS, **SECRET_REQ)
    manifest = build_trainjob(req, "vla-rft-bc-2")
    validate_trainjob(manifest)
    (patch,) = manifest["spec"]["runtimePatches"]
    (job,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    pod = job["template"]["spec"]["template"]["spec"]
    assert job["name"] == "node" and pod["serviceAccountName"] == "vla-rft-trainer"
    (container,) = pod["containers"]
    assert {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]} == {
        "AWS_ACCESS_KEY_ID": {"name": "mlpipeline-minio-artifact", "key": "accesskey"},
        "AWS_SECRET_ACCESS_KEY": {"name": "mlpipeline-minio-artifact", "key": "secretkey"}}
    assert all("value" not in e for e in container["env"])
    assert manifest["spec"]["trainer"]["env"] == [{"name": "VLA_RFT_S3_ENDPOINT", "value": "http://minio-service:9000"}]
    assert {"manager": patch["manager"], **_patch_to_dict(trainjob._runtime_patch(req))} == patch
    docs = {d["metadata"]["name"]: d for d in yaml.safe_load_all(open("manifests/rbac.yaml"))
            if d["kind"] == "ServiceAccount"}
    assert docs["vla-rft-trainer"]["automountServiceAccountToken"] is False
    bindings = [d for d in yaml.safe_load_all(open("manifests/rbac.yaml")) if d["kind"] == "RoleBinding"]
    assert all(s["name"] != "vla-rft-trainer" for b in bindings for s in b["subjects"])


def test_artifact_uris_for_the_trainer_pods():
    from components.trainjob import s3_uri

    assert s3_uri("minio://mlpipeline/v2/artifacts/run/pretrain-policy/policy") == \
        "s3://mlpipeline/v2/artifacts/run/pretrain-policy/policy"
    assert s3_uri("s3://b/k/") == "s3://b/k"
    with pytest.raises(ValueError, match="reach artifacts on S3 only"):
        s3_uri("/tmp/kfp/run/policy")


def test_the_sdk_local_process_backend_refuses_a_container_trainer():
    """Why the local run hands the SDK a function, not the cluster's image + command: LocalProcessBackend
    runs CustomTrainer only, and refuses CustomTrainerContainer with TrainerCommand by name."""
    from kubeflow.trainer import CustomTrainerContainer, LocalProcessBackendConfig, TrainerClient
    from kubeflow.trainer.options import TrainerArgs, TrainerCommand

    req = TrainJobRequest(ARGS, image="ghcr.io/example/vla-rft:0.1.0", procs_per_node=2)
    client = TrainerClient(LocalProcessBackendConfig())
    with pytest.raises(ValueError, match="TrainerCommand option is not compatible with LocalProcessBackend"):
        client.train(runtime="torch-distributed", trainer=CustomTrainerContainer(image=req.image),
                     options=[TrainerCommand(req.command()), TrainerArgs(list(req.stage_args))])


def test_the_local_process_backend_refuses_more_than_one_node(tmp_path):
    from components.trainjob import local_process_trainer

    with pytest.raises(ValueError, match="runs one node; this TrainJob asks for nodes=2"):
        local_process_trainer(TrainJobRequest(ARGS, image="x", nodes=2), str(tmp_path))
    assert not list(tmp_path.iterdir())  # refused before any wheel is built


@pytest.mark.slow
def test_the_same_submission_runs_through_the_sdk_local_process_backend(tiny_dataset, s3_env, tmp_path, monkeypatch):
    """run_stage, as the pretrain-policy component calls it, on TrainerClient(LocalProcessBackendConfig()):
    the SDK builds an empty venv, pip installs our job-env wheel (no index), and its torchrun runs
    1 node x 2 ranks of `vla_rft.cli pretrain-policy --config-json ...` on the shrunk quick profile;
    the artifact comes back from S3 verified and loads."""
    import json
    import shutil

    from components import outputs, trainjob
    from kubeflow.trainer import LocalProcessBackendConfig
    from vla_rft import storage
    from vla_rft.policy.modeling import VLAPolicy

    monkeypatch.setenv("VLA_RFT_CACHE", str(tmp_path / "cache"))  # the job inherits it: its checkpoints land here
    meta = storage.read_manifest(str(tiny_dataset[0]))
    files = shutil.copytree(tiny_dataset[0], tmp_path / "dataset", ignore=shutil.ignore_patterns(storage.MANIFEST_NAME))
    dataset = f"s3://{s3_env.bucket}/local-trainjob/dataset"
    storage.write_artifact(files, dataset, kind=meta["kind"], config=meta["config"],
                           schema_version=meta["schema_version"], overwrite=True)
    params = json.dumps(yaml.safe_load(open("params.yaml")))
    config_json = json.dumps(outputs.resolve_config(params, "quick", [
        "sim.tasks=[push, drawer-open]", "sim.num_workers=0", "sim.max_episode_steps=120", "common.num_threads=1",
        *(f"policy.{k}={v}" for k, v in dict(
            cnn_channels="[8, 8, 16, 16]", hidden_size=32, num_layers=1, num_heads=2, mlp_ratio=2, batch_size=8,
            warmup_steps=2, eval_interval=0, eval_chunks=8, checkpoint_interval=2, log_interval=1, steps=4).items())]))
    out, lines = tmp_path / "policy", []
    name = trainjob.run_stage("pretrain-policy", config_json, {"--dataset": dataset}, str(out),
                              f"minio://{s3_env.bucket}/local-trainjob/policy", kind="policy", nodes=1,
                              procs_per_node=2, image="ghcr.io/example/vla-rft:unused-locally",
                              backend=LocalProcessBackendConfig(), log=lines.append)
    log = "\n".join(lines)
    assert f"trainjob {name}: Complete" in log and "pretrain-policy: scratch: 4 steps, final" in log, log[-3000:]
    assert list((tmp_path / "cache").rglob("*")), "the job did not run with this process's environment"
    root, manifest = storage.read_artifact(str(out), expected_kind="policy")
    assert manifest["config"]["dataset"] == dataset and manifest["config"]["policy"]["steps"] == 4
    summary = json.loads((root / "bc_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 4  # two ranks trained it
    assert storage.artifact_exists(f"s3://{s3_env.bucket}/local-trainjob/policy-trainjob")  # what the ranks wrote
    policy = VLAPolicy.from_pretrained(root)
    assert policy.num_parameters() == summary["num_parameters"]


def test_pipeline_run_local_refuses_a_trainjob(tmp_path):
    import subprocess

    result = subprocess.run([sys.executable, "-m", "vla_rft.cli", "pipeline", "run", "--local", "--pipeline-root",
                             str(tmp_path / "kfp"), "--param", "nodes=2", "--param", "procs_per_node=2"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "nodes x procs_per_node = 4" in result.stderr and "kfp.local cannot run" in result.stderr
    assert not (tmp_path / "kfp").exists()


def test_the_training_tasks_pass_nodes_and_procs_to_their_components():
    from vla_rft.pipelines import client

    spec = list(yaml.safe_load_all(client.COMPILED_PATH.read_text()))[0]
    root = spec["root"]
    assert root["inputDefinitions"]["parameters"]["nodes"]["defaultValue"] == 1
    assert root["inputDefinitions"]["parameters"]["procs_per_node"]["defaultValue"] == 1
    for task in ("train-world-model", "pretrain-policy", "rft"):
        params = root["dag"]["tasks"][task]["inputs"]["parameters"]
        assert params["nodes"]["componentInputParameter"] == "nodes"
        assert params["procs_per_node"]["componentInputParameter"] == "procs_per_node"
        assert params["image"]["runtimeValue"]["constant"].startswith("ghcr.io/")

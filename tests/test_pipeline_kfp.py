"""KFP: the compiled package is current and well-formed; submit/schedule over real loopback HTTP."""

import json
import subprocess
import sys

import pytest
import yaml

from kfp_server import RecordingKFP
from vla_rft.pipelines import client

FAKE_KEY = "AKIAFAKEKEY0123456789"
FAKE_SECRET = "fake-secret-value-never-leaks-0123456789"


def test_shipped_package_is_current(tmp_path):
    fresh = client.compile_pipeline(tmp_path / "p.yaml")
    assert fresh.read_text() == client.COMPILED_PATH.read_text(), (
        "pipelines/vla_rft_pipeline.yaml is stale: run `vla-rft pipeline compile`")


def _spec():
    docs = list(yaml.safe_load_all(client.COMPILED_PATH.read_text()))
    return docs[0], (docs[1] if len(docs) > 1 else {})


def test_secrets_come_from_a_kubernetes_secret_not_parameters():
    spec, platform = _spec()
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    assert not any("key" in name.lower() or "secret" in name.lower() for name in inputs)
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert executors, "no Kubernetes settings in the compiled package"
    for name, cfg in executors.items():
        envs = {e["envVar"] for s in cfg["secretAsEnv"] for e in s["keyToEnv"]}
        assert envs == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}, name


def test_params_yaml_is_the_default_parameter():
    spec, _ = _spec()
    default = spec["root"]["inputDefinitions"]["parameters"]["params_json"]["defaultValue"]
    assert json.loads(default) == yaml.safe_load(open("params.yaml"))


def test_submit_sends_the_pipeline_spec_and_parameters(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)
    with RecordingKFP() as server:
        result = client.submit(server.url, experiment="nightly", profile="standard", run_name="r1",
                               package=client.COMPILED_PATH, overrides=["sim.num_workers=1"])
    assert result["run_id"] == "run-1"
    (run,) = server.posts("/apis/v2beta1/runs")
    body = run["body"]
    assert body["display_name"] == "r1"
    assert body["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "vla-rft"
    assert "secretAsEnv" in json.dumps(body["pipeline_spec"]["platform_spec"])
    params = body["runtime_config"]["parameters"]
    assert params["profile"] == "standard" and params["overrides"] == ["sim.num_workers=1"]
    assert server.posts("/apis/v2beta1/experiments")[0]["body"]["display_name"] == "nightly"
    assert all(FAKE_SECRET not in r["raw"] and FAKE_SECRET not in str(r["headers"]) for r in server.requests)


def test_schedule_sends_cron_and_concurrency():
    with RecordingKFP() as server:
        result = client.schedule(server.url, "0 0 3 * * *", experiment="retrain", max_concurrency=1,
                                 package=client.COMPILED_PATH)
    assert result["recurring_run_id"] == "rr-1"
    (rr,) = server.posts("/apis/v2beta1/recurringruns")
    body = rr["body"]
    assert body["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * *"
    assert int(body["max_concurrency"]) == 1
    assert body["no_catchup"] is True
    assert body["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "vla-rft"
    assert body["experiment_id"] == "exp-1"
    assert server.posts("/apis/v2beta1/experiments")[0]["body"]["display_name"] == "retrain"


@pytest.mark.parametrize("cron, message", [
    ("0 3 * * *", "needs 6 fields"),
    ("0 0 25 * * *", "hours value 25 is outside"),
    ("0 0 3 * * mon@", "malformed"),
])
def test_invalid_cron_is_refused_before_any_request(cron, message):
    with RecordingKFP() as server:
        with pytest.raises(client.PipelineError, match=message):
            client.schedule(server.url, cron, package=client.COMPILED_PATH)
    assert server.requests == []


def test_cli_schedule_invalid_cron_exits_nonzero():
    result = subprocess.run([sys.executable, "-m", "vla_rft.cli", "pipeline", "schedule", "--host",
                             "http://127.0.0.1:9", "--cron", "every day"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "invalid cron expression 'every day'" in result.stderr

"""KFP: the compiled package is current and parses as the API server reads it; its typed parameters reach
the stages; the loaded package runs under kfp.local; submit/schedule over real loopback HTTP (a recording
KFP, a host that never answers, an HTML 404 server), each error one line."""

import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from kfp_server import HangingServer, HTML404Server, RecordingKFP
from vla_rft.components.outputs import resolve_config
from vla_rft.config import ConfigError
from vla_rft.pipelines import client

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("configure", "prepare-data", "train-world-model", "pretrain-policy", "rft", "evaluation-suites", "evaluate",
          "promote")

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


# -- the compiled package, as the API server reads it --------------------------------------------------

def test_compiled_package_parses_strictly_into_pipeline_spec_and_platform_spec():
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    spec, platform = _spec()
    parsed = json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec())  # unknown fields raise ParseError
    assert parsed.pipeline_info.name == "vla-rft"
    assert set(parsed.root.dag.tasks) == set(STAGES) | {"condition-1", "for-loop-2"}
    closed_loop = parsed.components["comp-condition-1"].dag.tasks  # run only with closed_loop=True
    assert set(closed_loop) == {"collect-rollouts", "ground-world-model", "train-success-model", "rft-episode"}
    assert parsed.root.dag.tasks["condition-1"].trigger_policy.condition.endswith("== true")
    assert set(parsed.root.output_definitions.parameters) == {"promoted", "reason", "version", "candidate_score"}

    kube = json_format.ParseDict(platform, pipeline_spec_pb2.PlatformSpec())
    assert "kubernetes" in kube.platforms
    # the check can fail: a field the server does not know is refused
    bad = copy.deepcopy(spec)
    bad["root"]["inputDefinitions"]["parameters"]["profile"]["defaultvalue"] = "quick"
    with pytest.raises(json_format.ParseError, match="defaultvalue"):
        json_format.ParseDict(bad, pipeline_spec_pb2.PipelineSpec())


def test_evaluation_fans_out_over_the_suites_into_one_merge():
    """evaluation-suites -> ParallelFor (one evaluate-suite per item) -> evaluate collects every part -> promote."""
    spec, platform = _spec()
    tasks = spec["root"]["dag"]["tasks"]
    loop = tasks["for-loop-2"]
    items = loop["parameterIterator"]["items"]["inputParameter"]
    assert items == "pipelinechannel--evaluation-suites-Output" and "evaluation-suites" in loop["dependentTasks"]
    inner = spec["components"][loop["componentRef"]["name"]]["dag"]["tasks"]
    assert set(inner) == {"evaluate-suite"}
    branch = inner["evaluate-suite"]["inputs"]
    assert branch["parameters"]["branch"]["componentInputParameter"] == loop["parameterIterator"]["itemInput"]
    assert set(branch["parameters"]) == {"branch"}  # kfp.local gives every body parameter the item
    merge = tasks["evaluate"]["inputs"]["artifacts"]["parts"]["taskOutputArtifact"]
    assert merge == {"producerTask": "for-loop-2", "outputArtifactKey": "pipelinechannel--evaluate-suite-part"}
    assert spec["components"]["comp-evaluate"]["inputDefinitions"]["artifacts"]["parts"]["isArtifactList"] is True
    assert tasks["promote"]["inputs"]["artifacts"]["evaluation"]["taskOutputArtifact"]["producerTask"] == "evaluate"
    assert set(spec["components"]["comp-evaluate"]["outputDefinitions"]["artifacts"]) == {
        "evaluation", "metrics", "report", "summary"}
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert "exec-evaluate-suite" in executors  # the branches read the policies from MinIO with the Secret's keys


def test_run_form_has_typed_knobs_with_defaults_from_params_yaml():
    spec, _ = _spec()
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    want = {  # name: (type, default); 0 = the profile's value, for knobs a profile sets
        "profile": ("STRING", raw["profile"]), "tasks": ("STRING", "" if any("tasks" in (p.get("sim") or {}) for p in raw["profiles"].values())
                  else ", ".join(raw["sim"]["tasks"])),
        "episodes_per_task": ("NUMBER_INTEGER", 0), "world_model_steps": ("NUMBER_INTEGER", 0),
        "bc_steps": ("NUMBER_INTEGER", 0), "rft_steps": ("NUMBER_INTEGER", 0), "group_size": ("NUMBER_INTEGER", 0),
        "eval_episodes_per_task": ("NUMBER_INTEGER", 0), "device": ("STRING", "" if any("device" in (p.get("common") or {}) for p in raw["profiles"].values())
                                                          else raw["common"]["device"]),
        "gpus": ("NUMBER_INTEGER", 0), "registry": ("STRING", raw["promote"]["registry"]),
        "params_json": ("STRING", None), "overrides": ("LIST", []), "closed_loop": ("BOOLEAN", False),
        "nodes": ("NUMBER_INTEGER", 1), "procs_per_node": ("NUMBER_INTEGER", 1),
        "data_source": ("STRING", raw["data"]["source"]), "base_policy": ("STRING", raw["policy"]["init"]),
        "dvc_repo": ("STRING", raw["data"]["dvc_repo"]), "accumulate_rollouts": ("BOOLEAN", raw["data"]["accumulate_rollouts"]),
    }
    assert set(inputs) == set(want)
    for name, (kind, default) in want.items():
        assert inputs[name]["parameterType"] == kind, name
        if default is not None:
            assert inputs[name]["defaultValue"] == default, name
        assert inputs[name].get("description"), f"{name} has no description in the run form"
    # the form says what "0" means: the profile's own value
    quick, standard = raw["profiles"]["quick"], raw["profiles"]["standard"]
    assert f"quick: {quick['prepare_data']['episodes_per_task']}" in inputs["episodes_per_task"]["description"]
    assert f"standard: {standard['prepare_data']['episodes_per_task']}" in inputs["episodes_per_task"]["description"]
    assert f"quick: {quick['rft']['steps']}" in inputs["rft_steps"]["description"]


def test_knobs_override_the_profile_and_overrides_override_knobs():
    params_json = client.load_params(ROOT / "params.yaml")
    raw = json.loads(params_json)
    unset = resolve_config(params_json, "quick", [], rft_steps=0, tasks="", group_size=0)
    assert unset["rft"]["steps"] == raw["profiles"]["quick"]["rft"]["steps"]  # 0: the profile's value
    assert unset["sim"]["tasks"] == raw["profiles"]["quick"]["sim"].get("tasks", raw["sim"]["tasks"])
    typed = resolve_config(params_json, "quick", [], rft_steps=7, tasks="push, drawer-open", group_size=3)
    assert typed["rft"]["steps"] == 7 and typed["rft"]["group_size"] == 3
    assert typed["sim"]["tasks"] == ["push", "drawer-open"]
    assert resolve_config(params_json, "quick", ["rft.steps=9"], rft_steps=7)["rft"]["steps"] == 9
    with pytest.raises(ConfigError, match="unknown task 'nope'"):
        resolve_config(params_json, "quick", [], tasks="push, nope")


def test_param_values_are_typed_and_checked():
    assert client.parse_params(["rft_steps=2", "tasks=push, reach", "gpus=1"]) == {
        "rft_steps": 2, "tasks": "push, reach", "gpus": 1}
    with pytest.raises(client.PipelineError, match="unknown pipeline parameter 'rft.steps'.*--set"):
        client.parse_params(["rft.steps=2"])
    with pytest.raises(client.PipelineError, match="rft_steps must be an integer, got 'two'"):
        client.parse_params(["rft_steps=two"])
    assert client.parse_params(["closed_loop=true"]) == {"closed_loop": True}
    assert client.parse_params(["closed_loop=False"]) == {"closed_loop": False}
    with pytest.raises(client.PipelineError, match="closed_loop must be true or false, got 'maybe'"):
        client.parse_params(["closed_loop=maybe"])


def test_fidelity_table_puts_the_baselines_side_by_side():
    from vla_rft.components.outputs import fidelity_table

    fid = {name: {region: {"mean": {"l1": value, "psnr": 20.0 + value}, "per_step": {"l1": [value]}}
                  for region in ("whole", "moving")}
           for name, value in (("model", 0.1), ("copy_last", 0.3))} | {"targets": {"x": 1.0}}
    table = fidelity_table(fid)
    assert table.splitlines()[0] == "| val-episode frames | model | copy last |"
    assert "| moving l1 | 0.1 | 0.3 |" in table and "| whole psnr | 20.1 | 20.3 |" in table
    assert "per_step" not in table and "targets" not in table


# -- the client: timeouts, one-line errors, local validation ------------------------------------------

def _cli(*args, cwd=ROOT, timeout=120):
    env = {**os.environ, "MUJOCO_GL": "osmesa"}
    return subprocess.run([sys.executable, "-m", "vla_rft.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _one_error_line(result, cmd: str, cls: str) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith(f"vla-rft pipeline {cmd}: error ({cls}): "), lines[0]
    return lines[0]


@pytest.mark.parametrize("cmd", ["submit", "schedule"])
def test_a_host_that_never_answers_times_out_with_one_line(cmd):
    with HangingServer() as server:
        start = time.monotonic()
        extra = ["--cron", "0 0 3 * * *"] if cmd == "schedule" else []
        result = _cli("pipeline", cmd, "--host", server.url, "--package", str(client.COMPILED_PATH),
                      "--timeout", "1.5", *extra, timeout=60)
        seconds = time.monotonic() - start
    line = _one_error_line(result, cmd, "KFPTimeoutError")
    assert server.url in line and "1.5 s" in line
    assert seconds < 20, f"took {seconds:.1f} s with --timeout 1.5"


def test_a_request_that_hangs_after_the_health_check_times_out():
    with RecordingKFP(hang=("/apis/v2beta1/runs",)) as server:
        start = time.monotonic()
        with pytest.raises(client.KFPTimeoutError, match="did not answer within 1 s"):
            client.submit(server.url, package=client.COMPILED_PATH, timeout=1)
        assert time.monotonic() - start < 10
        assert len(server.posts("/apis/v2beta1/runs")) == 1  # sent once: no retry of a POST


def test_an_html_404_server_gives_one_clear_line():
    with HTML404Server() as server:
        result = _cli("pipeline", "submit", "--host", server.url, "--package", str(client.COMPILED_PATH),
                      "--timeout", "5", timeout=60)
    line = _one_error_line(result, "submit", "KFPAPIError")
    assert "HTTP 404" in line and "HTML page" in line and "KFP API endpoint" in line


@pytest.mark.parametrize("kwargs, message", [
    ({"overrides": ["sim.nope=1"]}, "unknown key 'sim.nope'"),
    ({"profile": "huge"}, "unknown profile 'huge'"),
    ({"params": {"tasks": "push, nope"}}, "unknown task 'nope'"),
])
def test_submit_and_schedule_validate_before_sending_anything(kwargs, message):
    with RecordingKFP() as server:
        with pytest.raises(ConfigError, match=message):
            client.submit(server.url, package=client.COMPILED_PATH, **kwargs)
        with pytest.raises(ConfigError, match=message):
            client.schedule(server.url, "0 0 3 * * *", package=client.COMPILED_PATH, **kwargs)
    assert server.requests == []


def test_submit_sends_typed_parameters():
    with RecordingKFP() as server:
        client.submit(server.url, package=client.COMPILED_PATH, params={"rft_steps": 50, "tasks": "push"})
    params = server.posts("/apis/v2beta1/runs")[0]["body"]["runtime_config"]["parameters"]
    assert params["rft_steps"] == 50 and params["tasks"] == "push"


def test_local_run_with_a_bad_key_stops_before_any_task(tmp_path):
    result = _cli("pipeline", "run", "--local", "--pipeline-root", str(tmp_path / "kfp"), "--set", "sim.nope=1")
    line = _one_error_line(result, "run", "ConfigError")
    assert "unknown key 'sim.nope'" in line
    assert not (tmp_path / "kfp").exists(), "a refused run left a run folder"


def test_a_failing_stage_is_named_with_its_own_error(tmp_path):
    """The expert cannot succeed in one env step: prepare-data fails; one line names it and its exception."""
    result = _cli("pipeline", "run", "--local", "--pipeline-root", str(tmp_path / "kfp"),
                  "--set", "sim.tasks=[reach]", "--set", "prepare_data.episodes_per_task=1",
                  "--set", "sim.max_episode_steps=1", "--set", "sim.num_workers=0")
    line = _one_error_line(result, "run", "StageFailedError")
    assert "stage prepare-data failed: vla_rft.errors.StageError: the scripted expert succeeded in none" in line
    (log,) = (tmp_path / "kfp").glob("*/pipeline.log")
    assert f"full log: {log}" in line
    assert "Traceback" in log.read_text() and "Traceback" not in result.stdout


# -- the compiled package, loaded back and run under kfp.local, quietly -----------------------------------

@pytest.mark.slow
def test_loaded_package_runs_under_kfp_local_with_one_line_per_stage(tmp_path):
    """`pipeline run --local --package <compiled yaml>`: the package a cluster gets, loaded with
    kfp.components.load_component_from_file, on the quick profile shrunk like tests/test_e2e.py, with
    typed --param knobs; one line per stage on stdout, the executor output in the run's log file."""
    knobs = {"tasks": "push, drawer-open", "episodes_per_task": "2", "world_model_steps": "10", "bc_steps": "20",
             "rft_steps": "2", "eval_episodes_per_task": "1", "registry": str(tmp_path / "registry")}
    summary = tmp_path / "run.json"
    result = _cli("pipeline", "run", "--local", "--package", str(client.COMPILED_PATH), "--profile", "quick",
                  "--pipeline-root", str(tmp_path / "kfp"), "--summary-json", str(summary),
                  *[a for k, v in knobs.items() for a in ("--param", f"{k}={v}")],
                  "--set", "rft.verify_states=1", "--set", "evaluate.suites=[nominal, object-5cm]", timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert len(lines) <= 20, result.stdout
    for stage in STAGES:
        assert sum(ln.split()[:2] == [stage, "success"] for ln in lines) == 1, (stage, result.stdout)
    out = json.loads(summary.read_text())
    log = Path(out["log"])
    assert f"full log: {log}" in result.stdout and log.parent == tmp_path / "kfp" / out["run_id"]
    text = log.read_text()
    assert "KFP Executor" in text and "executor_output.json" in text and '"rft_steps": 2' in text
    assert len(text.splitlines()) > 10 * len(lines)
    # the typed knobs reached the stages
    run = Path(out["run_dir"])
    rft = json.loads((run / "rft" / "policy" / "meta.json").read_text())
    assert rft["config"]["rft"]["steps"] == 2
    assert len(json.loads((run / "rft" / "policy" / "curves.json").read_text())) == 2
    metrics = json.loads((run / "evaluate" / "evaluation" / "metrics.json").read_text())
    assert metrics["tasks"] == ["push", "drawer-open"]
    assert out["promotion"]["promoted"] is True and out["promotion"]["reason"] == "no champion yet"
    assert (tmp_path / "registry" / "versions" / out["promotion"]["version"]).is_dir()
    # what the UI shows: readable Markdown (tables, embedded plots), no JSON dumps; a self-contained report
    for md in (run / "prepare-data" / "summary", run / "train-world-model" / "summary", run / "rft" / "summary",
               run / "promote" / "decision"):
        page = md.read_text()
        assert "|---|---|" in page and "```json" not in page, md
    assert "](data:image/png;base64," in (run / "rft" / "summary").read_text()
    assert "| moving l1 |" in (run / "train-world-model" / "summary").read_text()
    report = (run / "evaluate" / "report").read_text()
    assert "src='gifs/" not in report and "data:image/gif;base64," in report

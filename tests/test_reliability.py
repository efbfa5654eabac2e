"""Reliability: kill -9 and resume, bad input through the CLI, and secrets that never leak."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from s3server import ACCESS_KEY, SECRET_KEY, free_port, raw_client, s3_env, s3_server  # noqa: F401 - fixtures

ROOT = Path(__file__).resolve().parents[1]
TINY_BC = ["policy.cnn_channels=[8, 8, 16, 16]", "policy.keypoints=0", "policy.hidden_size=32", "policy.num_layers=1",
           "policy.num_heads=2", "policy.mlp_ratio=2", "policy.batch_size=8", "policy.steps=40",
           "policy.warmup_steps=4", "policy.eval_interval=0", "policy.checkpoint_interval=5", "policy.log_interval=5",
           "common.num_threads=1"]


def _cli(*args, env=None, **kw):
    full_env = {**os.environ, "MUJOCO_GL": "osmesa", **(env or {})}
    return subprocess.run([sys.executable, "-m", "vla_rft.cli", *args], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, **kw)


def _sets(items):
    return [x for item in items for x in ("--set", item)]


TINY_WM = ["world_model.channels=[8, 16, 32]", "world_model.patch_size=2", "world_model.hidden_size=32",
           "world_model.num_layers=1", "world_model.num_heads=2", "world_model.frame_channels=8",
           "world_model.cond_size=16", "world_model.batch_size=8", "world_model.steps=40",
           "world_model.train_frames=2", "world_model.warmup_steps=4", "world_model.checkpoint_interval=5",
           "world_model.log_interval=5", "world_model.eval_chunks=8", "world_model.eval_batch_size=8",
           "world_model.gif_chunks=1", "common.num_threads=1"]
TINY_RFT = ["rft.steps=16", "rft.batch_starts=2", "rft.group_size=3", "rft.checkpoint_interval=2",
            "rft.log_interval=1", "common.num_threads=1"]


@pytest.fixture(scope="module")
def cli_models(tiny_dataset, tmp_path_factory):
    """A tiny world model and BC policy, each trained straight through through the CLI."""
    root = tmp_path_factory.mktemp("cli-models")
    data = str(tiny_dataset[0])
    for stage, out, sets in (("train-world-model", "wm", TINY_WM), ("pretrain-policy", "bc", TINY_BC)):
        result = _cli(stage, "--profile", "quick", "--dataset", data, "--out", str(root / out), *_sets(sets))
        assert result.returncode == 0, result.stderr
    return {"dataset": data, "wm": root / "wm", "bc": root / "bc"}


def _stage_command(stage: str, models: dict, out: Path) -> list[str]:
    base = ["--profile", "quick", "--dataset", models["dataset"], "--out", str(out)]
    if stage == "train-world-model":
        return [stage, *base, *_sets(TINY_WM)]
    if stage == "pretrain-policy":
        return [stage, *base, *_sets(TINY_BC)]
    return [stage, *base, "--world-model", str(models["wm"]), "--policy", str(models["bc"]), "--no-verify",
            *_sets(TINY_RFT)]


@pytest.mark.parametrize("stage, loss_key", [("train-world-model", "loss"), ("pretrain-policy", "loss"),
                                             ("rft", "reward_mean")])
def test_kill_9_mid_training_then_rerun_resumes_to_the_same_result(stage, loss_key, cli_models, tmp_path):
    """kill -9 after the first checkpoint; the same command again resumes and ends bit-identical."""
    if stage == "rft":
        straight_dir = tmp_path / "straight"
        straight = _cli(*_stage_command(stage, cli_models, straight_dir))
        assert straight.returncode == 0, straight.stderr
    else:  # the fixture trained these straight through with the same command
        straight_dir = cli_models["wm" if stage == "train-world-model" else "bc"]

    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "vla_rft.cli", *_stage_command(stage, cli_models, out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "MUJOCO_GL": "osmesa"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt_dir = Path(str(out) + ".ckpt")
    written = lambda: list(ckpt_dir.glob("*checkpoint.safetensors"))  # noqa: E731 - each stage names its own
    deadline = time.time() + 120
    while not written() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the stage finished before it could be killed"
    assert written(), "no checkpoint was written before the kill"
    assert not (out / "meta.json").exists(), "a killed stage left an artifact that reads as complete"

    again = _cli(*_stage_command(stage, cli_models, out))
    assert again.returncode == 0, again.stderr
    assert "(resumed)" in again.stdout
    a = json.loads((straight_dir / "curves.json").read_text())
    b = json.loads((out / "curves.json").read_text())
    assert a[-1]["step"] == b[-1]["step"]
    assert [r["step"] for r in b] == [r["step"] for r in a], "the resumed run lost or repeated steps"
    assert b[-1][loss_key] == pytest.approx(a[-1][loss_key], rel=1e-5, abs=1e-7)
    from safetensors.torch import load_file

    wa, wb = load_file(str(straight_dir / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name


@pytest.mark.parametrize("args, message", [
    (["--set", "sim.image_sizee=64"], "unknown key 'sim.image_sizee'"),
    (["--set", "sim.image_size=big"], "sim.image_size must be an integer"),
    (["--set", "sim.tasks=[push, fly]"], "unknown task 'fly'"),
])
def test_bad_params_exit_nonzero_with_a_named_error(args, message, tmp_path):
    result = _cli("prepare-data", "--profile", "quick", "--out", str(tmp_path / "ds"), *args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "ds").exists()


def test_corrupt_and_empty_datasets_are_refused_by_training(tiny_dataset, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_dataset[0], bad)
    data_file = bad / "data" / "chunk-000" / "file-000.parquet"
    data_file.write_bytes(b"not parquet")
    result = _cli("pretrain-policy", "--profile", "quick", "--dataset", str(bad), "--out", str(tmp_path / "p"))
    assert result.returncode == 2 and "ArtifactIntegrityError" in result.stderr  # the manifest catches it first
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _cli("pretrain-policy", "--profile", "quick", "--dataset", str(empty), "--out", str(tmp_path / "p"))
    assert result.returncode == 2 and "missing or incomplete" in result.stderr
    assert not (tmp_path / "p").exists()


def test_s3_faults_get_named_errors(tiny_dataset, s3_env, tmp_path):  # noqa: F811
    base = {"VLA_RFT_S3_ENDPOINT": s3_env.endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    args = ["pretrain-policy", "--profile", "quick", "--dataset"]
    missing = _cli(*args, "s3://no-such-bucket/ds", "--out", str(tmp_path / "p"), env=base)
    assert missing.returncode == 2 and "bucket 'no-such-bucket' does not exist" in missing.stderr
    dead = _cli(*args, f"s3://{s3_env.bucket}/ds", "--out", str(tmp_path / "p"),
                env={**base, "VLA_RFT_S3_ENDPOINT": f"http://127.0.0.1:{free_port()}"}, timeout=60)
    assert dead.returncode == 2 and "unreachable" in dead.stderr
    unset = _cli(*args, f"s3://{s3_env.bucket}/ds", "--out", str(tmp_path / "p"),
                 env={**base, "AWS_SECRET_ACCESS_KEY": ""})
    assert unset.returncode == 2 and "AWS_SECRET_ACCESS_KEY" in unset.stderr
    for result in (missing, dead, unset):
        assert SECRET_KEY not in result.stderr + result.stdout


def test_a_known_secret_appears_nowhere(tiny_dataset, s3_env, tmp_path):  # noqa: F811
    """Compile the pipeline and run a quick stage to S3 with a known secret; grep every output for it."""
    env = {"VLA_RFT_S3_ENDPOINT": s3_env.endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    compiled = _cli("pipeline", "compile", "--out", str(tmp_path / "pipeline.yaml"), env=env)
    assert compiled.returncode == 0, compiled.stderr
    out_uri = f"s3://{s3_env.bucket}/secret-check/dataset"
    run = _cli("-v", "prepare-data", "--profile", "quick", "--out", out_uri, "--set", "sim.tasks=[push]",
               "--set", "prepare_data.episodes_per_task=2", "--set", "sim.num_workers=1",
               "--summary-json", str(tmp_path / "summary.json"), env=env)
    assert run.returncode == 0, run.stderr
    texts = {"stdout": run.stdout, "stderr": run.stderr, "compiled": (tmp_path / "pipeline.yaml").read_text(),
             "summary": (tmp_path / "summary.json").read_text(), "params": (ROOT / "params.yaml").read_text()}
    texts.update({str(p): p.read_text() for p in (ROOT / "manifests").glob("*.yaml")})
    client = raw_client(s3_env.endpoint)
    for obj in client.list_objects(s3_env.bucket, prefix="secret-check/", recursive=True):
        texts[obj.object_name] = client.get_object(s3_env.bucket, obj.object_name).read().decode("latin-1")
    assert any(name.endswith("meta.json") for name in texts)
    for name, text in texts.items():
        assert SECRET_KEY not in text and ACCESS_KEY not in text, f"the secret leaked into {name}"


def test_restart_in_a_shared_checkpoint_dir_deletes_only_that_stages_files(tmp_path):
    """`--restart` or new settings with a user-given --checkpoint-dir: the user's files and other stages'
    checkpoints in that directory survive; only the stage's own checkpoint is discarded."""
    from vla_rft.checkpointing import prepare_checkpoint_dir

    shared = tmp_path / "ckpts"
    shared.mkdir()
    (shared / "notes.txt").write_text("mine")
    for stage in ("policy", "world_model"):
        ckpt, resume = prepare_checkpoint_dir(str(tmp_path / stage), stage, {"lr": 1}, shared, restart=False)
        assert ckpt == shared and not resume
        (ckpt / f"{stage}_checkpoint.safetensors").write_bytes(b"step 5")
    assert prepare_checkpoint_dir(str(tmp_path / "policy"), "policy", {"lr": 1}, shared, restart=False)[1]

    _, resume = prepare_checkpoint_dir(str(tmp_path / "policy"), "policy", {"lr": 1}, shared, restart=True)
    assert not resume and not (shared / "policy_checkpoint.safetensors").exists()
    assert (shared / "notes.txt").read_text() == "mine"
    assert (shared / "world_model_checkpoint.safetensors").read_bytes() == b"step 5"
    assert prepare_checkpoint_dir(str(tmp_path / "wm"), "world_model", {"lr": 1}, shared, restart=False)[1]

    _, resume = prepare_checkpoint_dir(str(tmp_path / "wm"), "world_model", {"lr": 2}, shared, restart=False)
    assert not resume and not (shared / "world_model_checkpoint.safetensors").exists()  # other settings
    assert (shared / "notes.txt").read_text() == "mine"


def _permuted_policy(src: Path, dst: Path, instructions=None) -> str:
    """A copy of a policy artifact with its instruction table in reverse order (the same function of text),
    or with ``instructions`` replaced."""
    from safetensors.torch import load_file, save_file

    from vla_rft import storage

    work = dst.with_name(dst.name + "-src")
    work.mkdir()
    meta = json.loads((src / "config.json").read_text())
    state = load_file(str(src / "model.safetensors"))
    if instructions is None:
        meta["instructions"] = meta["instructions"][::-1]
        state["instruction_embeddings"] = state["instruction_embeddings"].flip(0).contiguous()
    else:
        meta["instructions"] = instructions
    (work / "config.json").write_text(json.dumps(meta))
    save_file(state, str(work / "model.safetensors"), metadata={"format": "pt", "model_type": "vla_rft_policy"})
    storage.write_artifact(work, str(dst), kind="policy", config={})
    return str(dst)


def test_rft_maps_tasks_by_instruction_when_policy_and_dataset_order_differ(cli_models, tmp_path):
    """The same policy with its task table reversed trains exactly like the original: every start
    gets its own instruction; a policy that does not know the dataset's tasks is refused before any step."""
    from vla_rft import stages
    from vla_rft.config import load_config
    from vla_rft.errors import CompatibilityError

    cfg = load_config(ROOT / "params.yaml", "quick", [*TINY_RFT, "rft.steps=2"])
    args = (cli_models["dataset"], str(cli_models["wm"]))
    reversed_policy = _permuted_policy(cli_models["bc"], tmp_path / "reversed")
    a = stages.rft(cfg, *args, str(cli_models["bc"]), str(tmp_path / "a"), verify=False, progress=False)
    b = stages.rft(cfg, *args, reversed_policy, str(tmp_path / "b"), verify=False, progress=False)
    curves = [json.loads((tmp_path / n / "curves.json").read_text()) for n in ("a", "b")]
    assert [r["reward_mean"] for r in curves[0]] == [r["reward_mean"] for r in curves[1]]
    assert [r["loss"] for r in curves[0]] == [r["loss"] for r in curves[1]]

    stranger = _permuted_policy(cli_models["bc"], tmp_path / "stranger", ["fly to the moon", "sing a song"])
    with pytest.raises(CompatibilityError, match="not trained on"):
        stages.rft(cfg, *args, stranger, str(tmp_path / "c"), verify=False, progress=False)
    assert not (tmp_path / "c").exists()


def test_a_champion_from_other_episodes_is_re_evaluated_on_the_challengers(cli_models, tmp_path):
    """Champion scored on 1 episode per task, challenger on 2: the gate re-runs the champion on the
    challenger's episodes and decides on that evidence (the same weights score the same)."""
    from vla_rft import stages
    from vla_rft.config import load_config

    registry = str(tmp_path / "registry")
    small = ["sim.tasks=[push, drawer-open]", "sim.num_workers=0", "evaluate.num_workers=0",
             "evaluate.suites=[nominal]", "evaluate.max_episode_steps=16", "evaluate.plots=false",
             "evaluate.gifs_per_task=0", "common.num_threads=1"]
    policy = str(cli_models["bc"])
    first = load_config(ROOT / "params.yaml", "quick", [*small, "evaluate.episodes_per_task=1"])
    second = load_config(ROOT / "params.yaml", "quick", [*small, "evaluate.episodes_per_task=2"])
    for cfg, name in ((first, "e1"), (second, "e2")):
        stages.evaluate(cfg, {"rft": policy}, str(tmp_path / name), expert=False, progress=False)
    assert stages.promote(first, policy, str(tmp_path / "e1"), registry=registry)["promoted"]
    decision = stages.promote(second, policy, str(tmp_path / "e2"), registry=registry)
    assert "not comparable" not in decision["reason"]
    assert "champion_reevaluated" in decision and not decision["promoted"]  # the same weights do not beat themselves
    assert decision["champion_reevaluated"]["score"] == decision["candidate_score"]
    champion = json.loads((tmp_path / "registry" / "champion.json").read_text())
    assert champion["fingerprint"]["episodes_per_task"] == 2  # scored on the episodes now in use

"""End to end on a shrunken quick profile: the whole KFP DAG with kfp.local, and `dvc repro` twice."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from vla_rft.config import load_config

ROOT = Path(__file__).resolve().parents[1]
SMALL = [
    "sim.tasks=[push, drawer-open]", "prepare_data.episodes_per_task=2", "world_model.steps=10",
    "policy.steps=20", "rft.steps=2", "rft.verify_states=1", "evaluate.episodes_per_task=1",
    "evaluate.suites=[nominal, object-5cm]",
]


def _small_params(path: Path) -> Path:
    """params.yaml with the quick profile shrunk by SMALL (the same keys users override)."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for item in SMALL:
        dotted, value = item.split("=", 1)
        section, key = dotted.split(".")
        raw["profiles"]["quick"].setdefault(section, {})[key] = yaml.safe_load(value)
    raw["promote"]["registry"] = str(path.parent / "registry")
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    load_config(path, "quick")  # still valid
    return path


@pytest.mark.slow
def test_pipeline_runs_locally_with_kfp(tmp_path, monkeypatch):
    from vla_rft.pipelines import client

    params = _small_params(tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    result = client.run_local(tmp_path / "kfp", params_path=params, profile="quick")
    run = Path(result["run_dir"])
    for task in ("prepare-data", "train-world-model", "pretrain-policy", "rft", "evaluate", "promote"):
        assert (run / task).is_dir(), f"task {task} left no outputs"
    metrics = json.loads((run / "evaluate" / "evaluation" / "metrics.json").read_text())
    assert set(metrics["policies"]) == {"base", "rft", "expert"}
    assert metrics["tasks"] == ["push", "drawer-open"]
    assert metrics["policies"]["expert"]["overall"]["nominal"] == 1.0
    assert (run / "evaluate" / "evaluation" / "report.html").exists()
    assert set(result["success"]) == {"base", "rft", "expert"}
    decision = json.loads(result["promotion"])
    assert decision["promoted"] and decision["reason"] == "no champion yet"  # a fresh registry
    assert json.loads((tmp_path / "registry" / "champion.json").read_text())["version"] == decision["version"]


@pytest.mark.slow
def test_dvc_repro_runs_then_is_a_no_op(tmp_path):
    repo = tmp_path / "repo"
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for rel in files:
        if (ROOT / rel).is_file():
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, repo / rel)
    _small_params(repo / "params.yaml")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "MUJOCO_GL": "osmesa",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "snapshot"]):
        subprocess.run(cmd, cwd=repo, env=env, check=True)
    dvc = str(Path(sys.executable).with_name("dvc"))
    first = subprocess.run([dvc, "repro"], cwd=repo, env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    for stage in ("prepare_data", "train_world_model", "pretrain_policy", "rft", "evaluate", "promote"):
        assert f"Running stage '{stage}'" in first.stdout
    assert (repo / "reports" / "evaluation" / "report.html").exists()
    assert json.loads((repo / "metrics" / "evaluate.json").read_text())["overall"]["expert"]["nominal"] == 1.0

    start = time.time()
    second = subprocess.run([dvc, "repro"], cwd=repo, env=env, capture_output=True, text=True)
    seconds = time.time() - start
    assert second.returncode == 0, second.stderr
    assert "Running stage" not in second.stdout and "up to date" in second.stdout
    assert seconds <= 10, f"a no-op dvc repro took {seconds:.1f} s"

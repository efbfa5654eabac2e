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

from vla_rft import storage
from vla_rft.config import load_config

ROOT = Path(__file__).resolve().parents[1]
SMALL = [
    "sim.tasks=[push, drawer-open]", "prepare_data.episodes_per_task=2", "world_model.steps=10",
    "policy.steps=20", "rft.steps=2", "rft.verify_states=1", "evaluate.episodes_per_task=1",
    "evaluate.suites=[nominal, object-5cm]", "collect_rollouts.episodes_per_task=1", "success_model.steps=5",
    "rft.horizon=1", "rft.honesty_episodes_per_task=1",
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
def test_two_concurrent_local_pipeline_runs_keep_to_their_own_prefixes(tmp_path):
    """Two `vla-rft pipeline run --local` at once, same pipeline root and registry: neither touches the other."""
    params = _small_params(tmp_path / "params.yaml")
    root = tmp_path / "kfp"
    env = {**os.environ, "MUJOCO_GL": "osmesa"}
    procs = []
    for i in range(2):
        cmd = [sys.executable, "-m", "vla_rft.cli", "pipeline", "run", "--local", "--params", str(params),
               "--profile", "quick", "--pipeline-root", str(root), "--summary-json", str(tmp_path / f"run{i}.json")]
        procs.append(subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    outputs = [p.communicate(timeout=900) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, out[-2000:] + err[-3000:]
        assert "report: " in out
    results = [json.loads((tmp_path / f"run{i}.json").read_text()) for i in range(2)]
    assert results[0]["run_id"] != results[1]["run_id"]
    for result in results:
        run = Path(result["run_dir"])
        assert run.parent == root / result["run_id"], "a run wrote outside its run-scoped prefix"
        for task in ("prepare-data", "train-world-model", "pretrain-policy", "rft", "evaluate", "promote"):
            assert (run / task).is_dir(), f"task {task} left no outputs"
        evaluation = run / "evaluate" / "evaluation"
        assert result["report"] == str(evaluation / "report.html") and Path(result["report"]).exists()
        metrics = json.loads((evaluation / "metrics.json").read_text())
        assert set(metrics["policies"]) == {"base", "rft", "expert"}
        assert metrics["tasks"] == ["push", "drawer-open"]
        assert metrics["policies"]["expert"]["overall"]["nominal"] == 1.0
        assert set(result["success"]) == {"base", "rft", "expert"}
        # every artifact of the run still verifies against its own manifest (nothing overwritten)
        for manifest in run.rglob("meta.json"):
            storage.read_artifact(str(manifest.parent))
    # the shared registry: both decisions recorded, promotions serialised, the champion is the best candidate
    decisions = [r["promotion"] for r in results]  # the promote task's typed outputs
    assert len(list((tmp_path / "registry" / "decisions").glob("*.json"))) == 2
    assert sum(d["promoted"] and d["reason"] == "no champion yet" for d in decisions) == 1
    champion = json.loads((tmp_path / "registry" / "champion.json").read_text())
    assert champion["score"] == max(d["candidate_score"] for d in decisions)
    promoted = [d["version"] for d in decisions if d["promoted"]]
    assert champion["version"] in promoted
    for version in promoted:
        storage.read_artifact(str(tmp_path / "registry" / "versions" / version), expected_kind="policy")


CLOSED_LOOP = ("collect_rollouts", "ground_world_model", "train_success_model", "rft_episode")


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
    for stage in ("prepare_data", "train_world_model", "pretrain_policy", "rft", "evaluate", "promote",
                  *CLOSED_LOOP):
        assert f"Running stage '{stage}'" in first.stdout
    assert (repo / "reports" / "evaluation" / "report.html").exists()
    assert json.loads((repo / "metrics" / "evaluate.json").read_text())["overall"]["expert"]["nominal"] == 1.0

    start = time.time()
    second = subprocess.run([dvc, "repro"], cwd=repo, env=env, capture_output=True, text=True)
    seconds = time.time() - start
    assert second.returncode == 0, second.stderr
    assert "Running stage" not in second.stdout and "up to date" in second.stdout
    assert seconds <= 10, f"a no-op dvc repro took {seconds:.1f} s"

    # a profile value, a shared module and a stage's own module each invalidate exactly their stages
    def changed_by(rel: str, edit) -> set[str]:
        path = repo / rel
        original = path.read_text()
        path.write_text(edit(original))
        try:
            status = subprocess.run([dvc, "status", "--json"], cwd=repo, env=env, capture_output=True, text=True)
            assert status.returncode == 0, status.stderr
            return set(json.loads(status.stdout or "{}"))
        finally:
            path.write_text(original)

    def group_size(text: str) -> str:
        raw = yaml.safe_load(text)
        raw["profiles"]["quick"]["rft"]["group_size"] = 3
        return yaml.safe_dump(raw, sort_keys=False)

    everything = {"prepare_data", "train_world_model", "pretrain_policy", "rft", "evaluate", "promote", *CLOSED_LOOP}
    # the judge replays rft.horizon chunks, so it depends on the rft section too
    assert changed_by("params.yaml", group_size) == {"rft", "rft_episode", "train_success_model"}
    assert changed_by("src/vla_rft/storage.py", lambda t: t + "\n# edited\n") == everything
    assert changed_by("src/vla_rft/world_model/modeling.py", lambda t: t + "\n# edited\n") == {
        "train_world_model", "rft", "evaluate", *CLOSED_LOOP}
    assert changed_by("src/vla_rft/training.py", lambda t: t + "\n# edited\n") == {
        "train_world_model", "pretrain_policy", "rft", *CLOSED_LOOP}

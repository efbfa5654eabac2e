"""Fanned-out evaluation: `evaluate --suites` per branch + `merge-evaluations` equals one `evaluate` on all suites.

Real policies (tiny, trained here), the real simulator, the real CLI; batches of 3 episodes, so batches
of the one-task evaluation would span two suites if the runner let them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vla_rft import stages, storage

ROOT = Path(__file__).resolve().parents[1]
TINY_BC = ["policy.cnn_channels=[8, 8, 16, 16]", "policy.keypoints=0", "policy.hidden_size=32", "policy.num_layers=1",
           "policy.num_heads=2", "policy.mlp_ratio=2", "policy.batch_size=8", "policy.warmup_steps=2",
           "policy.eval_interval=0", "policy.log_interval=5", "common.num_threads=1"]
EVAL = ["sim.tasks=[push, drawer-open]", "evaluate.episodes_per_task=2", "evaluate.max_episode_steps=40",
        "evaluate.suites=[nominal, object-5cm, goal-5cm]", "evaluate.batch_size=3", "evaluate.num_workers=1",
        "evaluate.gifs_per_task=1", "evaluate.gif_suites=[all]"]


def _cli(*args):
    env = {**os.environ, "MUJOCO_GL": "osmesa"}
    return subprocess.run([sys.executable, "-m", "vla_rft.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


def _sets(items):
    return [x for item in items for x in ("--set", item)]


@pytest.fixture(scope="module")
def policies(tiny_dataset, tmp_path_factory):
    """Two tiny BC policies (10 and 30 steps) on the session's real dataset."""
    from vla_rft.config import load_config

    root = tmp_path_factory.mktemp("fanout")
    out = {}
    for name, steps in (("base", 10), ("rft", 30)):
        cfg = load_config("params.yaml", profile="quick", overrides=[*TINY_BC, f"policy.steps={steps}",
                                                                      "sim.tasks=[push, drawer-open]"])
        stages.pretrain_policy(cfg, str(tiny_dataset[0]), str(root / name), progress=False)
        out[name] = str(root / name)
    return root, out


def _without_seconds(tree):
    if isinstance(tree, dict):
        return {k: _without_seconds(v) for k, v in tree.items() if k != "seconds"}
    if isinstance(tree, list):
        return [_without_seconds(v) for v in tree]
    return tree


def _files(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _common(pol):
    return ["--profile", "quick", *_sets(EVAL), "--policy", f"base={pol['base']}", "--policy", f"rft={pol['rft']}"]


@pytest.fixture(scope="module")
def parts(policies):
    """Two branches of a fanned-out evaluation, the first holding two suites not neighbours in report order."""
    root, pol = policies
    for name, suites in (("a", "nominal,goal-5cm"), ("b", "object-5cm")):
        part = _cli("evaluate", *_common(pol), "--suites", suites, "--out", str(root / name))
        assert part.returncode == 0, part.stderr[-3000:]
        assert storage.read_manifest(str(root / name))["kind"] == "evaluation_part"
    return root


def test_merged_suites_equal_one_evaluation_of_all_suites(policies, parts):
    root, pol = policies
    whole = _cli("evaluate", *_common(pol), "--out", str(root / "whole"))
    assert whole.returncode == 0, whole.stderr[-3000:]
    merged = _cli("merge-evaluations", "--profile", "quick", *_sets(EVAL), "--part", str(root / "a"),
                  "--part", str(root / "b"), "--out", str(root / "merged"))
    assert merged.returncode == 0, merged.stderr[-3000:]

    one, two = (json.loads((root / d / "metrics.json").read_text()) for d in ("whole", "merged"))
    assert _without_seconds(two) == _without_seconds(one)
    assert [s["name"] for s in two["suites"]] == ["nominal", "object-5cm", "goal-5cm"]
    assert one["policies"]["expert"]["episodes"] == 4 + 4 + 2  # goal-5cm applies to push only
    # the rest of the artifact too: summary, per-episode CSV, report page, GIFs, plot, the manifest promote reads
    a, b = _files(root / "whole"), _files(root / "merged")
    assert set(a) == set(b) and any(n.startswith("gifs/") for n in a)
    for name in a:
        if name not in ("metrics.json", "meta.json", "kfp_metrics.json"):
            assert a[name] == b[name], name
    assert json.loads(b["kfp_metrics.json"]) == json.loads(a["kfp_metrics.json"])
    ma, mb = storage.read_manifest(str(root / "whole")), storage.read_manifest(str(root / "merged"))
    assert ma["kind"] == mb["kind"] == "evaluation" and ma["config"] == mb["config"]
    assert mb["config"]["evaluated"]["rft"]["content_sha256"]  # the hash promote checks


def test_merge_refuses_parts_that_do_not_cover_the_suites(policies, parts, tmp_path):
    """A part missing, or a part of another evaluation: one named line, nothing published."""
    root, pol = parts, policies[1]
    base = ["merge-evaluations", "--profile", "quick", *_sets(EVAL), "--out", str(tmp_path / "m")]
    result = _cli(*base, "--part", str(root / "a"))
    assert result.returncode == 2
    assert "missing ['object-5cm']" in result.stderr.strip().splitlines()[-1]
    result = _cli(*base, "--set", "evaluate.episodes_per_task=3", "--part", str(root / "a"), "--part", str(root / "b"))
    assert result.returncode == 2 and "evaluate.episodes_per_task=2" in result.stderr
    result = _cli(*base, "--part", str(root / "a"), "--part", str(root / "a"), "--part", str(root / "b"))
    assert result.returncode == 2 and "evaluated in two parts" in result.stderr
    assert not (tmp_path / "m").exists()
    result = _cli("evaluate", "--profile", "quick", *_sets(EVAL), "--policy", f"base={pol['base']}",
                  "--suites", "robot-5cm", "--out", str(tmp_path / "p"))
    assert result.returncode == 2 and "'robot-5cm' is not among this config's evaluate.suites" in result.stderr

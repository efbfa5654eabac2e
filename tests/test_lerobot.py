"""LeRobot v3.0 interop against the real lerobot 0.4.4: it reads our export, our import reads what it writes.

lerobot runs in a fresh offline process (tests/lerobot_tool.py): HF_HUB_OFFLINE must be set before
huggingface_hub is first imported, and its caches go to the test's temporary directory.
"""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from vla_rft import stages, storage
from vla_rft.config import config_from_dict
from vla_rft.data import DatasetValidationError, load_dataset

try:  # tests/ is a plain directory (no __init__.py) on sys.path under pytest's default import mode
    from s3server import s3_env, s3_server  # noqa: F401  (fixtures)
except ImportError:  # tests/ became a package
    from tests.s3server import s3_env, s3_server  # type: ignore[no-redef]  # noqa: F401

TOOL = Path(__file__).with_name("lerobot_tool.py")
TASKS = "sim.tasks=[push, drawer-open]"  # the tasks of conftest's tiny_dataset


def _cfg(*overrides: str):
    raw = yaml.safe_load(open("params.yaml"))
    return config_from_dict(raw, profile="quick", overrides=[TASKS, *overrides])


def _lerobot(tmp_path: Path, *args: str) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "TQDM_DISABLE": "1"}
    proc = subprocess.run([sys.executable, str(TOOL), *args], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]


@pytest.fixture(scope="module")
def exported(tiny_dataset, tmp_path_factory):
    root, _ = tiny_dataset
    out = tmp_path_factory.mktemp("lerobot") / "export"
    summary = stages.export_lerobot(_cfg(), str(root), str(out))
    return out, summary


def test_lerobot_reads_our_export(tiny_dataset, exported, tmp_path):
    root, _ = tiny_dataset
    out, summary = exported
    ours = load_dataset(root)
    assert summary["camera"] == "observation.images.corner" and summary["frames"] == len(ours.states)
    info = json.loads((out / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["features"]["observation.images.corner"]["dtype"] == "image"

    _lerobot(tmp_path, "read", str(out), str(tmp_path / "read.npz"), "8")
    got = np.load(tmp_path / "read.npz")
    meta = json.loads((tmp_path / "read.npz.json").read_text())
    assert meta["fps"] == 80 and meta["num_frames"] == len(ours.states) and meta["num_episodes"] == len(ours.episodes)
    # LeRobotDataset hands images as float CHW in [0, 1]; back to uint8 they are our pixels, bit for bit
    assert 0.0 <= got["image_range"][0] and got["image_range"][1] <= 1.0
    assert np.array_equal(got["images"], ours.images)
    assert np.array_equal(got["states"], ours.states) and np.array_equal(got["actions"], ours.actions)
    assert np.array_equal(got["successes"], ours.successes)
    assert np.array_equal(got["episode_index"], ours.episode_index)
    assert np.array_equal(got["frame_index"], ours.frame_index) and np.array_equal(got["index"], np.arange(len(ours.states)))
    np.testing.assert_allclose(got["timestamps"], ours.frame_index / 80, atol=1e-6)
    assert meta["tasks"] == [ours.instructions[t] for t in ours.task_index]
    for e, theirs in zip(ours.episodes, meta["episodes"], strict=True):
        assert (theirs["dataset_from_index"], theirs["dataset_to_index"], theirs["length"]) == \
            (e["dataset_from_index"], e["dataset_to_index"], e["length"])
        assert theirs["tasks"] == [ours.instructions[e["task_index"]]]
        # an 8-action chunk from lerobot's delta_timestamps stops at the episode's end: padded, never the next one
        lo, hi = e["dataset_from_index"], e["dataset_to_index"]
        last = hi - 3
        assert np.array_equal(got["action_chunks"][last][:3], ours.actions[last:hi])
        assert got["action_is_pad"][last].tolist() == [False] * 3 + [True] * 5
        assert np.array_equal(got["action_chunks"][lo], ours.actions[lo:lo + 8])
    # our stats.json agrees with lerobot's own statistics code run on what it loaded
    for key in ("observation.state", "action"):
        mine, theirs = meta["stats"][key], meta["own_stats"][key]
        for stat in ("min", "max", "mean", "std"):
            np.testing.assert_allclose(mine[stat], theirs[stat], rtol=1e-5, atol=1e-6, err_msg=f"{key} {stat}")
        span = np.asarray(mine["max"]) - np.asarray(mine["min"])  # lerobot bins values for quantiles: ~1 % of the range
        np.testing.assert_allclose(mine["q50"], theirs["q50"], atol=float(span.max()) / 100, err_msg=f"{key} q50")
    cam = meta["stats"]["observation.images.corner"]
    assert np.asarray(cam["mean"]).shape == (3, 1, 1)
    np.testing.assert_allclose(np.asarray(cam["mean"]).ravel(), ours.images.reshape(-1, 3).mean(0) / 255, atol=1e-6)


def test_round_trip_gives_our_dataset_back(tiny_dataset, exported, tmp_path):
    root, _ = tiny_dataset
    out, _ = exported
    summary = stages.import_lerobot(_cfg(), str(out), str(tmp_path / "back"))
    assert summary["notes"]["split"] == "from the episodes' split column" and not summary["notes"]["filled_in"]
    a, b = load_dataset(root), load_dataset(tmp_path / "back")
    assert a.env_states is not None  # objects and goal (observation.environment_state) travel too
    for name in ("images", "states", "env_states", "actions", "expert_actions", "rewards", "successes", "task_index",
                 "episode_index", "frame_index"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and np.array_equal(x, y), name
    assert a.episodes == b.episodes and a.tasks == b.tasks and a.instructions == b.instructions
    assert a.info == b.info
    # the frames' Parquet file itself comes back byte for byte
    assert filecmp.cmp(root / "data/chunk-000/file-000.parquet", tmp_path / "back/data/chunk-000/file-000.parquet",
                       shallow=False)


def test_export_to_s3_and_import_from_it(tiny_dataset, s3_env, tmp_path):
    """On a real S3 endpoint (a real S3 server on loopback): a manifested LeRobot dataset, imported back intact."""
    root, _ = tiny_dataset
    prefix = f"s3://{s3_env.bucket}/lerobot-{tmp_path.name}"
    stages.export_lerobot(_cfg(), str(root), f"{prefix}/export")
    assert storage.read_manifest(f"{prefix}/export")["kind"] == "lerobot_dataset"
    with pytest.raises(storage.ArtifactExistsError):
        stages.export_lerobot(_cfg(), str(root), f"{prefix}/export")
    stages.import_lerobot(_cfg(), f"{prefix}/export", f"{prefix}/dataset")
    back, _ = storage.read_artifact(f"{prefix}/dataset", expected_kind="dataset", cache_dir=tmp_path / "cache")
    assert np.array_equal(load_dataset(back).images, load_dataset(root).images)
    with pytest.raises(storage.ArtifactNotFoundError, match="that export-lerobot wrote there"):
        stages.import_lerobot(_cfg(), f"{prefix}/nothing-here", f"{prefix}/other")


def _broken(exported_dir: Path, tmp_path: Path, edit) -> Path:
    dst = tmp_path / "broken"
    shutil.copytree(exported_dir, dst)
    info_path = dst / "meta" / "info.json"
    info = json.loads(info_path.read_text())
    edit(info, dst)
    info_path.write_text(json.dumps(info))
    return dst


def _second_camera(info, _):
    info["features"]["observation.images.wrist"] = dict(info["features"]["observation.images.corner"])


@pytest.mark.parametrize("edit, camera, message", [
    (lambda i, _: i.update(codebase_version="v2.1"), None, "codebase_version 'v2.1'.*convert_dataset_v21_to_v30"),
    (lambda i, _: i["features"]["action"].update(shape=[7]), None, r"'action' has shape \(7,\).*\(4,\)"),
    (lambda i, _: i["features"]["observation.state"].update(shape=[9]), None, r"'observation.state' has shape \(9,\)"),
    (lambda i, _: i.update(fps=30), None, "fps 30, the simulator runs at 80"),
    (lambda i, _: i["features"]["observation.images.corner"].update(dtype="video"), None, "dtype 'video'"),
    (_second_camera, None, r"2 cameras .*observation.images.wrist.*--camera"),
    (lambda i, _: None, "wrist", r"camera 'wrist' is not in the dataset.*observation.images.corner"),
    (lambda i, _: i["features"].pop("observation.state"), None, "feature 'observation.state' is missing"),
    (lambda i, d: (d / "meta" / "tasks.parquet").unlink(), None, "no meta/tasks.parquet"),
])
def test_import_names_what_is_incompatible(exported, tmp_path, edit, camera, message):
    src = _broken(exported[0], tmp_path, edit)
    with pytest.raises(DatasetValidationError, match=message):
        stages.import_lerobot(_cfg(), str(src), str(tmp_path / "out"), camera=camera)
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_import_cli_reports_a_named_error(exported, tmp_path):
    src = _broken(exported[0], tmp_path, lambda i, _: i.update(fps=30))
    proc = subprocess.run([sys.executable, "-m", "vla_rft.cli", "import-lerobot", "--from", str(src), "--out",
                           str(tmp_path / "out"), "--set", TASKS], capture_output=True, text=True)
    assert proc.returncode == 2 and "error (DatasetValidationError)" in proc.stderr and "fps 30" in proc.stderr


@pytest.mark.slow
def test_dataset_written_by_lerobot_imports_and_runs_the_quick_pipeline(tiny_dataset, tmp_path):
    """A LeRobot user's dataset (lerobot's own writer, 128x128 frames, none of our extras), imported, then
    the whole quick pipeline under kfp.local trains and evaluates on it (``data_source`` = the import)."""
    root, _ = tiny_dataset
    ours = load_dataset(root)
    theirs = tmp_path / "theirs"
    _lerobot(tmp_path, "write", str(root), str(theirs), "128", "128")
    small = ["world_model.steps=10", "world_model.eval_chunks=16", "world_model.gif_chunks=1", "policy.steps=20",
             "policy.eval_chunks=32", "rft.steps=2", "rft.verify_states=0", "evaluate.episodes_per_task=1",
             "evaluate.suites=[nominal]"]  # rft.verify_states=0: imported episodes have no seeds to replay
    cfg = _cfg(*small)
    s = stages.import_lerobot(cfg, str(theirs), str(tmp_path / "dataset"))
    notes = s["notes"]
    assert notes["camera"] == "observation.images.front" and notes["resized_from"] == [128, 128]
    assert notes["split"].startswith("by episode per task") and s["splits"] == {"train": 2, "val": 2}
    assert len(notes["filled_in"]) == 3 and s["tasks"] == ["push", "drawer-open"]
    data = load_dataset(tmp_path / "dataset", expected_action_dim=4, expected_image_size=64)
    assert np.array_equal(data.states, ours.states) and np.array_equal(data.actions, ours.actions)
    # up 2x (bilinear) and down again (antialiased bilinear): ours up to blur (measured 4.2 of 255), in order
    err = np.abs(data.images.astype(int) - ours.images.astype(int)).mean()
    assert err < 6.0 and err < np.abs(data.images[10:].astype(int) - ours.images[:-10].astype(int)).mean()
    assert data.info["source"]["format"] == "lerobot/v3.0"

    cmd = [sys.executable, "-m", "vla_rft.cli", "pipeline", "run", "--local", "--profile", "quick",
           "--pipeline-root", str(tmp_path / "kfp"), "--summary-json", str(tmp_path / "run.json"),
           "--param", f"data_source={tmp_path / 'dataset'}", "--param", f"registry={tmp_path / 'registry'}"]
    for item in [TASKS, *small]:
        cmd += ["--set", item]
    proc = subprocess.run(cmd, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "MUJOCO_GL": "osmesa"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    run = json.loads((tmp_path / "run.json").read_text())
    run_dir = Path(run["run_dir"])
    # the run trained on the imported artifact: its dataset is a verified copy of it, and no episode was recorded
    used, manifest = storage.read_artifact(str(run_dir / "prepare-data" / "dataset"), expected_kind="dataset")
    from vla_rft.registry import content_hash

    assert manifest["config"]["source"]["uri"] == str(tmp_path / "dataset")
    assert manifest["config"]["source"]["content_sha256"] == content_hash(storage.read_manifest(str(tmp_path / "dataset")))
    assert load_dataset(used).info["source"]["format"] == "lerobot/v3.0"
    assert np.array_equal(load_dataset(used).actions, data.actions)
    metrics = json.loads((run_dir / "evaluate" / "evaluation" / "metrics.json").read_text())
    assert set(metrics["policies"]) == {"base", "rft", "expert"} and metrics["tasks"] == ["push", "drawer-open"]
    assert metrics["policies"]["expert"]["overall"]["nominal"] == 1.0
    assert all(0.0 <= metrics["policies"][n]["overall"]["nominal"] <= 1.0 for n in ("base", "rft"))
    assert len(list((tmp_path / "registry" / "decisions").glob("*.json"))) == 1
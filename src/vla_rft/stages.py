"""One function per pipeline stage: (inputs, outputs, config) -> writes outputs, returns a summary.

The CLI, the KFP components and ``dvc.yaml`` only call these. Outputs go through
:mod:`vla_rft.storage`, so a URI may be a local path or ``s3://bucket/prefix``; every output is
built in a private temporary directory and published atomically with its manifest.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from vla_rft import storage
from vla_rft.config import Config
from vla_rft.tasks import ACTION_NAMES, FPS, STATE_NAMES, TASKS


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm
    import sys

    return tqdm(total=total, desc=desc, unit="ep", disable=not enabled or not sys.stderr.isatty(), leave=False)


def prepare_data(cfg: Config, out_uri: str, *, overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Record scripted-expert episodes in Meta-World and publish them as a Parquet dataset.

    Episode i of a task uses seed ``prepare_data.seed_offset + i``; a share ``noisy_fraction`` of
    episodes carries DART-style action noise. Only successful episodes are kept unless
    ``keep_failed``; the expert success rate is reported either way.
    """
    from vla_rft.data.parquet import EpisodeData, write_dataset
    from vla_rft.sim.perturbations import EpisodeSpec
    from vla_rft.sim.vector import BatchedSimulator

    start = time.time()
    pcfg, scfg = cfg.prepare_data, cfg.sim
    if not overwrite and storage.artifact_exists(out_uri):
        raise storage.ArtifactExistsError(f"dataset {out_uri} already exists; pass --overwrite to replace it")
    rng = np.random.default_rng([cfg.common.seed, 1])
    specs, noise = [], []
    for task in scfg.tasks:
        for i in range(pcfg.episodes_per_task):
            specs.append(EpisodeSpec(task, pcfg.seed_offset + i))
            noisy = rng.random() < pcfg.noisy_fraction
            noise.append(pcfg.action_noise if noisy else 0.0)

    workers = min(scfg.num_workers, len(specs))
    with _progress(len(specs), "prepare-data", progress) as bar, BatchedSimulator.from_config(scfg, workers) as sim:
        records = sim.record_episodes(specs, noise, pcfg.post_success_steps, progress=bar)

    per_task: dict[str, dict[str, Any]] = {}
    kept: list[tuple[int, Any]] = []
    for rec in records:
        stats = per_task.setdefault(rec.spec.task, {"episodes": 0, "successes": 0, "steps_to_success": []})
        stats["episodes"] += 1
        if rec.success:
            stats["successes"] += 1
            stats["steps_to_success"].append(rec.first_success_step)
        if rec.success or pcfg.keep_failed:
            kept.append((scfg.tasks.index(rec.spec.task), rec))
    if not kept:
        raise RuntimeError("the expert succeeded in no episode: nothing to write (check the task suite)")

    # split by episode, per task, so every task appears in both splits
    splits: list[str] = []
    split_rng = np.random.default_rng([cfg.common.seed, 2])
    by_task: dict[int, list[int]] = {}
    for j, (t, _) in enumerate(kept):
        by_task.setdefault(t, []).append(j)
    val = set()
    for idx in by_task.values():
        n_val = math.ceil(pcfg.val_fraction * len(idx)) if len(idx) > 1 else 0
        val.update(split_rng.permutation(idx)[:n_val].tolist())
    splits = ["val" if j in val else "train" for j in range(len(kept))]

    episodes = [
        EpisodeData(t, r.spec.seed, r.spec.perturbation.name, r.frames, r.states, r.actions, r.expert_actions,
                    r.rewards, r.successes, r.noisy, r.success, r.first_success_step)
        for t, r in kept
    ]
    expert = {
        task: {
            "episodes": s["episodes"],
            "success_rate": s["successes"] / s["episodes"],
            "mean_steps_to_success": float(np.mean(s["steps_to_success"])) if s["steps_to_success"] else None,
        }
        for task, s in per_task.items()
    }
    with tempfile.TemporaryDirectory(prefix="vla-rft-dataset-") as tmp:
        info = write_dataset(
            tmp, episodes, splits, [(t, TASKS[t].instruction) for t in scfg.tasks],
            info_extra={
                "fps": FPS, "robot_type": "sawyer", "simulator": "metaworld-v3",
                "camera": scfg.camera, "chunk_len": cfg.common.chunk_len,
                "goal_marker_scale": scfg.goal_marker_scale, "max_episode_steps": scfg.max_episode_steps,
                "state_names": list(STATE_NAMES), "action_names": list(ACTION_NAMES),
                "expert": expert,
            },
            frames_per_file=pcfg.frames_per_file,
        )
        size = _dir_size(Path(tmp))
        storage.write_artifact(
            Path(tmp), out_uri, kind="dataset",
            config={"profile": cfg.profile, "common": cfg.section("common"), "sim": cfg.section("sim"),
                    "prepare_data": cfg.section("prepare_data")},
            overwrite=overwrite,
        )
    attempted = sum(s["episodes"] for s in per_task.values())
    return {
        "uri": out_uri,
        "episodes": info["total_episodes"],
        "episodes_attempted": attempted,
        "frames": info["total_frames"],
        "splits": info["splits"],
        "expert_success": sum(s["successes"] for s in per_task.values()) / attempted,
        "expert_per_task": expert,
        "size_bytes": size,
        "seconds": time.time() - start,
    }

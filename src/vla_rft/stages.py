"""One function per pipeline stage: (inputs, outputs, config) -> writes outputs, returns a summary.

The CLI, the KFP components and ``dvc.yaml`` only call these. Outputs go through
:mod:`vla_rft.storage`, so a URI may be a local path or ``s3://bucket/prefix``; every output is
built in a private temporary directory and published atomically with its manifest.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
import uuid
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


def _evaluation_fingerprint(metrics: dict[str, Any], policy: str) -> dict[str, Any]:
    """What must match for two evaluations to be comparable: the same tasks, suites and episodes."""
    entry = metrics["policies"][policy]
    return {
        "tasks": list(metrics["tasks"]),
        "suites": [s["name"] for s in metrics["suites"]],
        "episodes_per_task": entry.get("episodes_per_task"),
        "max_episode_steps": entry.get("max_episode_steps"),
    }


def promote(cfg: Config, candidate_uri: str, evaluation_uri: str, *, registry: str | None = None,
            force: bool = False) -> dict[str, Any]:
    """Champion/challenger: make the candidate policy the registry's champion only if it beats it.

    The candidate is copied, verified, to ``<registry>/versions/<id>/`` first; only then does
    one atomic write of ``<registry>/champion.json`` switch the champion. A partial or failed copy
    never becomes the champion, and a worse model never replaces a better one. Every decision is
    recorded under ``<registry>/decisions/``.
    """
    pcfg = cfg.promote
    registry = registry or pcfg.registry
    eval_dir, _ = storage.read_artifact(evaluation_uri, expected_kind="evaluation")
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    if pcfg.policy not in metrics.get("policies", {}):
        raise ValueError(f"the evaluation has no policy {pcfg.policy!r}; it has {sorted(metrics.get('policies', {}))}")
    score = metrics["policies"][pcfg.policy]["overall"][pcfg.metric]
    if score is None:
        raise ValueError(f"the evaluation has no '{pcfg.metric}' success rate for {pcfg.policy!r}")
    fingerprint = _evaluation_fingerprint(metrics, pcfg.policy)
    champion = storage.read_json(storage.join_uri(registry, "champion.json"))
    now = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    decision: dict[str, Any] = {"time": now, "candidate": candidate_uri, "metric": pcfg.metric,
                                "candidate_score": score, "champion": champion, "promoted": False}
    promote_it = True
    if force:
        decision["reason"] = "forced"
    elif champion is None:
        decision["reason"] = "no champion yet"
    elif champion.get("fingerprint") != fingerprint:
        promote_it = False
        decision["reason"] = ("the champion was evaluated on other tasks/suites/episodes; not comparable "
                              "(re-evaluate it, or promote with force)")
    elif score <= champion["score"] + pcfg.min_improvement:
        promote_it = False
        decision["reason"] = (f"candidate {pcfg.metric} success {score:.3f} does not beat the champion's "
                              f"{champion['score']:.3f} by more than {pcfg.min_improvement:.3f}")
    else:
        decision["reason"] = f"beats the champion ({score:.3f} > {champion['score']:.3f})"

    if promote_it:
        with tempfile.TemporaryDirectory(prefix="vla-rft-promote-") as tmp:
            model_dir, manifest = storage.read_artifact(candidate_uri, expected_kind="policy",
                                                        cache_dir=Path(tmp) / "cache")
            staged = Path(tmp) / "staged"
            shutil.copytree(model_dir, staged, ignore=shutil.ignore_patterns(storage.MANIFEST_NAME))
            (staged / "evaluation.json").write_text(json.dumps(metrics["policies"][pcfg.policy], indent=2))
            digest = manifest["files"][sorted(manifest["files"])[0]]["sha256"][:8]
            version = f"{now}-{digest}"
            version_uri = storage.join_uri(registry, "versions", version)
            storage.write_artifact(staged, version_uri, kind="policy", config=manifest.get("config", {}))
        storage.write_json(storage.join_uri(registry, "champion.json"), {
            "version": version, "uri": version_uri, "score": score, "metric": pcfg.metric,
            "fingerprint": fingerprint, "promoted_at": now, "source": candidate_uri,
            "previous": champion and champion.get("version"),
        })
        decision.update(promoted=True, version=version, uri=version_uri)
    outcome = "promoted" if decision["promoted"] else "kept"
    storage.write_json(storage.join_uri(registry, "decisions", f"{now}-{outcome}-{uuid.uuid4().hex[:8]}.json"), decision)
    return decision

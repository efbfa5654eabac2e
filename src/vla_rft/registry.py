"""The model registry: champion/challenger on one evaluation, with every decision recorded.

Layout under a registry URI (a local path or ``s3://bucket/prefix``)::

    versions/<time>-<hash>/     every promoted policy, a verified copy (never overwritten)
    champion.json               the current champion: version, URI, score, evaluation fingerprint
    decisions/<time>-...json    every decision, promoted or kept, with its reason
    .promote.lock               (local registries) held from reading the champion to switching it

A candidate is copied to ``versions/`` and verified first; only then does one atomic write of
``champion.json`` switch the champion, so a partial copy never becomes the champion and a worse
model never replaces a better one.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
import hashlib
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vla_rft import storage
from vla_rft.config import PromoteConfig

CHAMPION = "champion.json"


def content_hash(manifest: dict[str, Any]) -> str:
    """sha256 of an artifact's file list (names, sizes, hashes): equal for every verified copy of it."""
    return hashlib.sha256(json.dumps(manifest["files"], sort_keys=True).encode()).hexdigest()


def evaluation_fingerprint(metrics: dict[str, Any], policy: str) -> dict[str, Any]:
    """What must match for two evaluations to be comparable: the same tasks, suites and episodes."""
    entry = metrics["policies"][policy]
    return {
        "tasks": list(metrics["tasks"]),
        "suites": [s["name"] for s in metrics["suites"]],
        "episodes_per_task": entry.get("episodes_per_task"),
        "max_episode_steps": entry.get("max_episode_steps"),
        "seed_base": entry.get("seed_base"),
    }


def read_champion(registry: str) -> dict[str, Any] | None:
    """The registry's ``champion.json``, or None before the first promotion."""
    return storage.read_json(storage.join_uri(registry, CHAMPION))


@contextlib.contextmanager
def registry_lock(registry: str):
    """An exclusive lock on a local registry (``flock`` on ``<registry>/.promote.lock``).

    S3 has no lock primitive that MinIO and every S3 server share; concurrent runs promoting into one
    S3 registry are serialised by the scheduler instead (``pipeline schedule --max-concurrency 1``).
    """
    if storage.is_s3_uri(registry):
        yield
        return
    import fcntl

    Path(registry).mkdir(parents=True, exist_ok=True)
    with open(Path(registry) / ".promote.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def decide_and_promote(pcfg: PromoteConfig, registry: str, candidate_uri: str, metrics: dict, score: float,
                       fingerprint: dict, force: bool,
                       reevaluate: Callable[[str], tuple[float, dict]] | None = None) -> dict[str, Any]:
    """Compare the candidate with the champion, switch the champion if it wins, record the decision.

    When the champion's score comes from other episodes (another profile, suite or task list),
    ``reevaluate(champion_uri) -> (score, fingerprint)`` scores it on the candidate's episodes first,
    so the gate decides on evidence; without it such a champion is kept as "not comparable".
    Call under :func:`registry_lock` so that reading the champion and switching it are one step.
    """
    champion = read_champion(registry)
    now = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    decision: dict[str, Any] = {"time": now, "candidate": candidate_uri, "metric": pcfg.metric,
                                "candidate_score": score, "champion": champion, "promoted": False}
    if not force and champion is not None and champion.get("fingerprint") != fingerprint and reevaluate:
        champ_score, champ_fingerprint = reevaluate(champion["uri"])
        if champ_fingerprint == fingerprint and champ_score is not None:
            champion = {**champion, "score": champ_score, "fingerprint": fingerprint, "reevaluated_at": now}
            decision["champion_reevaluated"] = {"score": champ_score, "fingerprint": fingerprint}
    promote_it = True
    if force:
        decision["reason"] = "forced"
    elif champion is None:
        decision["reason"] = "no champion yet"
    elif champion.get("fingerprint") != fingerprint:
        promote_it = False
        decision["reason"] = ("the champion was evaluated on other tasks/suites/episodes; not comparable "
                              "(its evaluation settings are unknown to re-evaluate it; promote with force)")
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
        storage.write_json(storage.join_uri(registry, CHAMPION), {
            "version": version, "uri": version_uri, "score": score, "metric": pcfg.metric,
            "fingerprint": fingerprint, "promoted_at": now, "source": candidate_uri,
            "previous": champion and champion.get("version"),
        })
        decision.update(promoted=True, version=version, uri=version_uri)
    elif "champion_reevaluated" in decision:  # the champion stays, scored on the episodes now in use
        storage.write_json(storage.join_uri(registry, CHAMPION), champion)
    if "champion_reevaluated" in decision:
        decision["reason"] += "; the champion was re-evaluated on these episodes"
    outcome = "promoted" if decision["promoted"] else "kept"
    storage.write_json(storage.join_uri(registry, "decisions", f"{now}-{outcome}-{uuid.uuid4().hex[:8]}.json"), decision)
    return decision

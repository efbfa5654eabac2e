"""One function per pipeline stage: (inputs, outputs, config) -> writes outputs, returns a summary.

The CLI, the KFP components and ``dvc.yaml`` only call these. Outputs go through
:mod:`vla_rft.storage`, so a URI may be a local path or ``s3://bucket/prefix``; every output is
built in a private temporary directory and published atomically with its manifest.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from vla_rft import registry as registry_mod
from vla_rft import storage
from vla_rft import distributed
from vla_rft.checkpointing import prepare_checkpoint_dir
from vla_rft.config import Config
from vla_rft.tasks import ACTION_NAMES, FPS, STATE_NAMES, TASKS, instruction_order


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _check_renderer() -> None:
    """Refuse an offscreen-rendering setting MuJoCo cannot use, before a simulator process starts."""
    import os

    from vla_rft.errors import StageError

    value = os.environ.get("MUJOCO_GL", "osmesa")
    if value not in ("osmesa", "egl", "glfw"):
        raise StageError(f"MUJOCO_GL={value!r} is not a MuJoCo rendering backend; use osmesa (CPU), egl or glfw")


def _progress(total: int, desc: str, enabled: bool):
    import sys

    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="ep", disable=not enabled or not sys.stderr.isatty(), leave=False)


def prepare_data(cfg: Config, out_uri: str, *, overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Record scripted-expert episodes in Meta-World and publish them as a Parquet dataset.

    Episode i of a task uses seed ``prepare_data.seed_offset + i``; a share ``noisy_fraction`` of
    episodes carries DART-style action noise. Only successful episodes are kept unless
    ``keep_failed``; the expert success rate is reported either way.
    """
    from vla_rft.data.parquet import EpisodeData, write_dataset
    from vla_rft.data.splits import split_by_episode
    from vla_rft.sim.perturbations import EpisodeSpec
    from vla_rft.sim.vector import BatchedSimulator

    if cfg.data.source != "generate":
        return _dataset_from_source(cfg, out_uri, overwrite=overwrite)
    start = time.time()
    pcfg, scfg = cfg.prepare_data, cfg.sim
    storage.check_destination(out_uri, overwrite=overwrite)  # before recording a single episode
    _check_renderer()
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
        from vla_rft.errors import StageError

        raise StageError(f"the scripted expert succeeded in none of {len(records)} episodes within "
                         f"sim.max_episode_steps={scfg.max_episode_steps}: nothing to write (raise "
                         "sim.max_episode_steps, lower prepare_data.action_noise, or set prepare_data.keep_failed)")

    splits = split_by_episode([t for t, _ in kept], pcfg.val_fraction, np.random.default_rng([cfg.common.seed, 2]))

    episodes = [
        EpisodeData(t, r.spec.seed, r.spec.perturbation.name, r.frames, r.states, r.actions, r.expert_actions,
                    r.rewards, r.successes, r.noisy, r.success, r.first_success_step, env_states=r.env_states)
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
                    "prepare_data": cfg.section("prepare_data"), "source": {"kind": "generate"}},
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


def _dataset_from_source(cfg: Config, out_uri: str, *, overwrite: bool = False) -> dict[str, Any]:
    """The dataset ``data.source`` names (an artifact URI, or ``dvc:REV`` of ``data.dvc_repo``), checked
    against this configuration and published at ``out_uri`` with the same files; the manifest's
    ``source`` records where it came from: the DVC revision, its commit and hash, the content hash."""
    import contextlib
    import shutil

    from vla_rft import versions
    from vla_rft.errors import CompatibilityError

    start = time.time()
    source = cfg.data.source
    storage.check_destination(out_uri, overwrite=overwrite)
    with tempfile.TemporaryDirectory(prefix="vla-rft-dataset-") as tmp:
        if source.startswith("dvc:"):
            fetched = versions.fetch(cfg.data.dvc_repo, source[4:].strip(), cfg.data.dvc_path)
        else:
            fetched = contextlib.nullcontext((None, {"uri": source}))
        with fetched as (directory, origin):
            data_dir, manifest = storage.read_artifact(str(directory or source), expected_kind="dataset",
                                                       cache_dir=Path(tmp) / "cache")
            data = _load_dataset_artifact(cfg, str(data_dir), Path(tmp) / "cache2")
            missing = [t for t in cfg.sim.tasks if t not in data.tasks]
            if missing:
                raise CompatibilityError(f"data.source {source}: the dataset has tasks {data.tasks}, not {missing} "
                                         "of sim.tasks; set sim.tasks to the dataset's tasks")
            staged = Path(tmp) / "out"
            shutil.copytree(data_dir, staged, ignore=shutil.ignore_patterns(storage.MANIFEST_NAME))
        origin = {"kind": "dvc" if directory else "artifact", **origin,
                  "content_sha256": registry_mod.content_hash(manifest)}
        size = _dir_size(staged)
        storage.write_artifact(staged, out_uri, kind="dataset",
                               config={**manifest.get("config", {}), "source": origin}, overwrite=overwrite)
    expert = data.info.get("expert") or {}
    rates = [s["success_rate"] for s in expert.values()]
    print(f"prepare-data: data.source {source}" + (f" -> commit {origin['commit'][:12]}" if "commit" in origin else "")
          + ", content sha256 "
          f"{origin['content_sha256'][:12]}", file=sys.stderr, flush=True)
    return {"uri": out_uri, "episodes": len(data.episodes), "episodes_attempted": len(data.episodes),
            "frames": len(data.images), "splits": data.info.get("splits") or {
                split: len(data.episodes_in(split)) for split in ("train", "val")},
            "expert_success": float(np.mean(rates)) if rates else float("nan"), "expert_per_task": expert,
            "size_bytes": size, "source": origin, "seconds": time.time() - start}


def dataset_version(dataset_uri: str) -> dict[str, Any]:
    """Which dataset a model trained on: its URI, content hash and recorded origin (DVC revision + commit)."""
    manifest = storage.read_manifest(dataset_uri)
    return {"uri": dataset_uri, "content_sha256": registry_mod.content_hash(manifest),
            "source": (manifest.get("config") or {}).get("source") or {"kind": "unrecorded"}}


def _load_dataset_artifact(cfg: Config, dataset_uri: str, cache: Path):
    from vla_rft.data import load_dataset
    from vla_rft.tasks import ACTION_DIM

    data_dir, _ = storage.read_artifact(dataset_uri, expected_kind="dataset", cache_dir=cache)
    return load_dataset(data_dir, expected_action_dim=ACTION_DIM, expected_image_size=cfg.sim.image_size)


def _checkpoints(out_uri: str, section: str, settings: dict, checkpoint_dir: str | Path | None, restart: bool,
                 device: str) -> tuple[Path, bool]:
    """``prepare_checkpoint_dir`` on rank 0 only (it may clear the directory); every rank gets its answer,
    so all ranks of a data-parallel run resume from the same checkpoint."""
    ctx = distributed.init(device)
    answer = prepare_checkpoint_dir(out_uri, section, settings, checkpoint_dir, restart) if ctx.is_main else None
    ckpt, resume = ctx.broadcast(answer)
    return Path(ckpt), resume


def _publish(ctx: distributed.Context, out: Path, out_uri: str, **kwargs) -> None:
    """Rank 0 writes the artifact; the other ranks wait until it is there, then return."""
    if ctx.is_main:
        storage.write_artifact(out, out_uri, **kwargs)
    ctx.barrier()


def _refuse_existing(out_uri: str, what: str, overwrite: bool) -> None:
    """Refuse an output location that cannot take the artifact before any work (see storage.check_destination)."""
    try:
        storage.check_destination(out_uri, overwrite=overwrite)
    except storage.ArtifactExistsError:
        raise storage.ArtifactExistsError(f"{what} {out_uri} already exists; pass --overwrite to replace it") from None


def train_world_model(cfg: Config, dataset_uri: str | list[str], out_uri: str, *, overwrite: bool = False,
                      checkpoint_dir: str | Path | None = None, restart: bool = False,
                      progress: bool = True, init_from: str | None = None) -> dict[str, Any]:
    """Train the action-conditioned video model, score it on val episodes, publish model + report.

    ``dataset_uri`` may list several datasets (expert data + policy rollouts: trained on together);
    ``init_from`` names a world model to fine-tune instead of starting from scratch, for
    ``world_model.ground_steps`` steps (0: ``world_model.steps``) with the same schedule shape.
    """
    import dataclasses

    from vla_rft.data import concat_datasets
    from vla_rft.world_model.evaluate import evaluate_world_model
    from vla_rft.world_model.modeling import WorldModel
    from vla_rft.world_model.train import train_world_model as train
    from vla_rft.world_model.train import with_environment_state

    uris = [dataset_uri] if isinstance(dataset_uri, str) else list(dataset_uri)
    if not uris:
        raise ValueError("train-world-model needs at least one --dataset")
    _refuse_existing(out_uri, "world model", overwrite)
    if init_from and cfg.world_model.ground_steps:
        cfg = dataclasses.replace(cfg, world_model=dataclasses.replace(cfg.world_model,
                                                                       steps=cfg.world_model.ground_steps))
    start = time.time()
    with tempfile.TemporaryDirectory(prefix="vla-rft-wm-") as tmp:
        cache = Path(tmp) / "cache"
        data = concat_datasets([_load_dataset_artifact(cfg, u, cache) for u in uris])
        init_dir = None
        if init_from:
            init_dir, _ = storage.read_artifact(init_from, expected_kind="world_model", cache_dir=cache)
        settings = {"common": cfg.section("common"), "world_model": cfg.section("world_model"),
                    "dataset": [storage.read_manifest(u)["files"] for u in uris] if len(uris) > 1
                    else storage.read_manifest(uris[0])["files"]}
        if init_from:
            settings["init_from"] = storage.read_manifest(init_from)["files"]
        ckpt, resume = _checkpoints(out_uri, "world_model", settings, checkpoint_dir, restart, cfg.common.device)
        out = Path(tmp) / "out"
        summary = train(cfg.world_model, cfg.common, data, out, ckpt, resume=resume, progress=progress,
                        init_from=init_dir)
        ctx = distributed.init(cfg.common.device)
        fidelity = None
        if ctx.is_main:
            model = WorldModel.from_pretrained(out, device=cfg.common.device)
            fidelity = evaluate_world_model(model, with_environment_state(data) if model.env_state_dim else data,
                                            out / "eval", cfg.world_model, seed=cfg.common.seed, progress=progress)
        _publish(ctx, out, out_uri, kind="world_model",
                 config={"profile": cfg.profile, "common": settings["common"],
                         "world_model": settings["world_model"],
                         "dataset": uris[0] if len(uris) == 1 else uris,
                         "dataset_version": [dataset_version(u) for u in uris],
                         **({"init_from": init_from} if init_from else {})}, overwrite=overwrite)
    return {"uri": out_uri, "resumed": resume, "train": summary, "fidelity": fidelity, "seconds": time.time() - start}


def pretrain_policy(cfg: Config, dataset_uri: str | list[str], out_uri: str, *, overwrite: bool = False,
                    checkpoint_dir: str | Path | None = None, restart: bool = False,
                    progress: bool = True) -> dict[str, Any]:
    """Behaviour-clone the VLA policy on the dataset's chunks and publish it.

    ``dataset_uri`` may list several datasets (trained on together); with ``policy.episodes:
    successful`` only successful episodes count: expert data + policy rollouts then give the
    filtered-BC baseline (the real-simulator data closed-loop RFT sees, without a world model).
    ``policy.init: champion``: the registry's current champion is the base policy (copied, no BC);
    with no champion yet, BC from scratch as with ``scratch``, and the summary and log say so.
    """
    from vla_rft.data import concat_datasets
    from vla_rft.data.parquet import successful_episodes
    from vla_rft.policy.train import train_policy_bc

    uris = [dataset_uri] if isinstance(dataset_uri, str) else list(dataset_uri)
    if not uris:
        raise ValueError("pretrain-policy needs at least one --dataset")
    _refuse_existing(out_uri, "policy", overwrite)
    start = time.time()
    if cfg.policy.init == "champion":
        champion = registry_mod.read_champion(cfg.promote.registry)
        if champion is not None:
            return _champion_as_base(cfg, champion, out_uri, overwrite, start)
        print(f"pretrain-policy: policy.init=champion but the registry {cfg.promote.registry} has no champion yet: "
              "training the base policy from scratch", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="vla-rft-bc-") as tmp:
        cache = Path(tmp) / "cache"
        data = concat_datasets([_load_dataset_artifact(cfg, u, cache) for u in uris])
        if cfg.policy.episodes == "successful":
            data = successful_episodes(data)
        settings = {"common": cfg.section("common"), "policy": cfg.section("policy"),
                    "dataset": [storage.read_manifest(u)["files"] for u in uris] if len(uris) > 1
                    else storage.read_manifest(uris[0])["files"]}
        ckpt, resume = _checkpoints(out_uri, "policy", settings, checkpoint_dir, restart, cfg.common.device)
        out = Path(tmp) / "out"
        summary = train_policy_bc(cfg.policy, cfg.common, data, out, ckpt, resume=resume, progress=progress)
        _publish(distributed.init(cfg.common.device), out, out_uri, kind="policy",
                 config={"profile": cfg.profile, "common": settings["common"], "policy": settings["policy"],
                         "dataset": uris[0] if len(uris) == 1 else uris, "trained_by": "bc",
                         "dataset_version": dataset_version(uris[0]) if len(uris) == 1
                         else [dataset_version(u) for u in uris]},
                 overwrite=overwrite)
    init = "scratch" if cfg.policy.init == "scratch" else "scratch (no champion yet)"
    return {"uri": out_uri, "resumed": resume, "train": summary, "init": init, "seconds": time.time() - start}


def _champion_as_base(cfg: Config, champion: dict, out_uri: str, overwrite: bool, start: float) -> dict[str, Any]:
    """Publish the registry's champion (verified) as this run's base policy, its lineage in the manifest."""
    import shutil

    with tempfile.TemporaryDirectory(prefix="vla-rft-champion-") as tmp:
        model_dir, manifest = storage.read_artifact(champion["uri"], expected_kind="policy",
                                                    cache_dir=Path(tmp) / "cache")
        staged = Path(tmp) / "out"
        shutil.copytree(model_dir, staged, ignore=shutil.ignore_patterns(storage.MANIFEST_NAME))
        lineage = {"registry": cfg.promote.registry, "version": champion["version"], "uri": champion["uri"],
                   "score": champion.get("score"), "content_sha256": registry_mod.content_hash(manifest)}
        storage.write_artifact(staged, out_uri, kind="policy", config={
            **manifest.get("config", {}), "trained_by": "champion", "champion": lineage}, overwrite=overwrite)
    print(f"pretrain-policy: policy.init=champion: the base policy is champion {champion['version']} of "
          f"{cfg.promote.registry} (no behaviour cloning)", file=sys.stderr, flush=True)
    return {"uri": out_uri, "resumed": False, "train": {"steps": 0}, "init": f"champion {champion['version']}",
            "champion": lineage, "seconds": time.time() - start}


def rft(cfg: Config, dataset_uri: str, world_model_uri: str, policy_uri: str, out_uri: str, *,
        overwrite: bool = False, checkpoint_dir: str | Path | None = None, restart: bool = False,
        verify: bool = True, progress: bool = True, success_model_uri: str | None = None,
        rollouts_uri: str | None = None, veto_world_model_uri: str | None = None) -> dict[str, Any]:
    """GRPO with verified rewards in the world model; publishes the fine-tuned policy and its curves.

    ``rft.mode: episode`` runs :func:`rft_episode` instead (it needs ``success_model_uri``).
    """
    if cfg.rft.mode == "episode":
        return rft_episode(cfg, dataset_uri, world_model_uri, policy_uri, success_model_uri, out_uri,
                           rollouts_uri=rollouts_uri, overwrite=overwrite, checkpoint_dir=checkpoint_dir,
                           restart=restart, verify=verify, progress=progress, veto_world_model_uri=veto_world_model_uri)
    if veto_world_model_uri:
        raise ValueError("a veto world model is an episode-mode input (rft.mode: episode); chunk mode has no "
                         "success reward to veto")
    from vla_rft.policy.modeling import VLAPolicy
    from vla_rft.rft.grpo import check_compatible, train_grpo
    from vla_rft.rft.verify import reward_fidelity
    from vla_rft.world_model.modeling import WorldModel

    _refuse_existing(out_uri, "policy", overwrite)
    start = time.time()
    with tempfile.TemporaryDirectory(prefix="vla-rft-rft-") as tmp:
        cache = Path(tmp) / "cache"
        data = _load_dataset_artifact(cfg, dataset_uri, cache)
        wm_dir, _ = storage.read_artifact(world_model_uri, expected_kind="world_model", cache_dir=cache)
        policy_dir, policy_manifest = storage.read_artifact(policy_uri, expected_kind="policy", cache_dir=cache)
        world_model = WorldModel.from_pretrained(wm_dir, device=cfg.common.device)
        if world_model.env_state_dim:
            from vla_rft.errors import ConfigError

            raise ConfigError(f"rft.mode=chunk compares imagined frames and takes a world model of frames and proprio "
                              f"state; {world_model_uri} also predicts the environment state "
                              "(world_model.environment_state): use it with rft.mode=episode")
        policy = VLAPolicy.from_pretrained(policy_dir, device=cfg.common.device)
        check_compatible(policy, world_model, data)  # shapes and tasks, before any imagined step
        settings = {"common": cfg.section("common"), "rft": cfg.section("rft"),
                    "inputs": [storage.read_manifest(u)["files"] for u in (dataset_uri, world_model_uri, policy_uri)]}
        ckpt, resume = _checkpoints(out_uri, "rft", settings, checkpoint_dir, restart, cfg.common.device)
        out = Path(tmp) / "out"
        fidelity = None
        ctx = distributed.init(cfg.common.device)
        if verify and cfg.rft.verify_states and ctx.is_main:
            fidelity = reward_fidelity(policy, world_model, data, cfg.rft, n_states=cfg.rft.verify_states,
                                       seed=cfg.common.seed)
        summary = train_grpo(cfg.rft, cfg.common, data, world_model, policy, out, ckpt, resume=resume,
                             progress=progress)
        if fidelity is not None:
            (out / "reward_fidelity.json").write_text(json.dumps(fidelity, indent=2))
        _publish(ctx, out, out_uri, kind="policy",
                               config={"profile": cfg.profile, "common": settings["common"], "rft": settings["rft"],
                                       "policy": policy_manifest["config"].get("policy"), "base_policy": policy_uri,
                                       "world_model": world_model_uri, "dataset": dataset_uri, "trained_by": "rft",
                                       "dataset_version": dataset_version(dataset_uri),
                                       "base_policy_lineage": policy_manifest["config"].get("champion")},
                               overwrite=overwrite)
    return {"uri": out_uri, "resumed": resume, "train": summary, "reward_fidelity": fidelity,
            "seconds": time.time() - start}


def evaluate(cfg: Config, policies: dict[str, str], out_uri: str, *, world_model_uri: str | None = None,
             overwrite: bool = False, expert: bool = True, progress: bool = True,
             suites: list[str] | None = None) -> dict[str, Any]:
    """Run the policies (name -> URI) and the scripted expert in the real simulator; publish the report.

    ``suites``: run only these of ``evaluate.suites`` and publish an ``evaluation_part`` (the raw
    outcomes, no report) for :func:`merge_evaluations`, one branch of a fanned-out evaluation.
    """
    from vla_rft.errors import ConfigError
    from vla_rft.evaluation.configuration import check_policy_name
    from vla_rft.evaluation.runner import run_evaluation, save_results

    if not policies:
        raise ConfigError("evaluate needs at least one --policy NAME=URI")
    for name in policies:
        check_policy_name(name)
    chosen = _chosen_suites(cfg, suites)
    _refuse_existing(out_uri, "evaluation", overwrite)
    _check_renderer()
    if world_model_uri:
        storage.read_manifest(world_model_uri)  # a missing world model is refused before the episodes run
    import torch

    # the simulator workers use the cores; a policy forward is small, and more torch threads
    # only spin against the workers (measured: 2 threads made a shared box ~20x slower)
    torch.set_num_threads(1)
    start = time.time()
    with tempfile.TemporaryDirectory(prefix="vla-rft-eval-") as tmp:
        cache = Path(tmp) / "cache"
        acts, evaluated = _load_policies(cfg, policies, cache)
        results = run_evaluation(acts, cfg.sim.tasks, cfg.evaluate, cfg.sim, expert=expert,
                                 chunk_len=cfg.common.chunk_len, progress=progress, suites=chosen)
        if chosen is not None:
            out = Path(tmp) / "out"
            save_results(results, out)
            storage.write_artifact(out, out_uri, kind="evaluation_part",
                                   config={**_evaluation_record(cfg, policies, evaluated),
                                           "suites": [s.name for s in chosen]}, overwrite=overwrite)
            return {"uri": out_uri, "suites": [s.name for s in chosen], "seconds": time.time() - start,
                    "results": results}
        metrics = _publish_evaluation(cfg, results, policies, evaluated, out_uri, world_model_uri, Path(tmp),
                                      overwrite)
    return {"uri": out_uri, "metrics": metrics, "seconds": time.time() - start}


def merge_evaluations(cfg: Config, part_uris: list[str], out_uri: str, *, world_model_uri: str | None = None,
                      overwrite: bool = False) -> dict[str, Any]:
    """Join the ``evaluation_part`` artifacts of a fanned-out evaluation into the evaluation artifact.

    The result is what :func:`evaluate` writes for all of ``evaluate.suites`` at once (same
    metrics.json, report and manifest, the evaluated policies' hashes included): every part must
    have evaluated the same policy artifacts with this config's simulator and evaluate settings,
    and together the parts must cover each suite exactly once.
    """
    from vla_rft.errors import CompatibilityError, ConfigError
    from vla_rft.evaluation.runner import load_results, merge_results

    if not part_uris:
        raise ConfigError("merge-evaluations needs at least one --part (an `evaluate --suites` output)")
    _refuse_existing(out_uri, "evaluation", overwrite)
    if world_model_uri:
        storage.read_manifest(world_model_uri)
    start = time.time()
    expected = {"sim": cfg.section("sim"), "chunk_len": cfg.common.chunk_len,
                "evaluate": {k: v for k, v in cfg.section("evaluate").items() if k != "suites"}}
    with tempfile.TemporaryDirectory(prefix="vla-rft-merge-") as tmp:
        parts, first = [], None
        for i, uri in enumerate(part_uris):
            part_dir, manifest = storage.read_artifact(uri, expected_kind="evaluation_part",
                                                       cache_dir=Path(tmp) / f"part{i}")
            rec = manifest.get("config", {})
            got = {"sim": rec.get("sim"), "chunk_len": rec.get("chunk_len"),
                   "evaluate": {k: v for k, v in (rec.get("evaluate") or {}).items() if k != "suites"}}
            for section in ("sim", "evaluate"):
                for key in sorted(set(expected[section]) | set(got[section] or {})):
                    mine, theirs = expected[section].get(key), (got[section] or {}).get(key)
                    if mine != theirs:
                        raise CompatibilityError(f"evaluation part {uri} ran with {section}.{key}={theirs!r}, "
                                                 f"this config has {mine!r}: merge parts of one evaluation only")
            if got["chunk_len"] != expected["chunk_len"]:
                raise CompatibilityError(f"evaluation part {uri} ran with common.chunk_len={got['chunk_len']}, "
                                         f"this config has {expected['chunk_len']}")
            if first is None:
                first = rec
            elif rec.get("evaluated") != first.get("evaluated"):
                raise CompatibilityError(f"evaluation part {uri} evaluated other policy artifacts than "
                                         f"{part_uris[0]}: {rec.get('evaluated')} vs {first.get('evaluated')}")
            parts.append(load_results(part_dir))
        try:
            results = merge_results(parts, cfg.evaluate.suite_list())
        except ValueError as err:
            raise CompatibilityError(f"merge-evaluations: {err}") from None
        metrics = _publish_evaluation(cfg, results, first["policies"], first["evaluated"], out_uri, world_model_uri,
                                      Path(tmp), overwrite)
    return {"uri": out_uri, "metrics": metrics, "seconds": time.time() - start}


def _chosen_suites(cfg: Config, suites: list[str] | None):
    """``suites`` as Suite objects in report order, each one of ``evaluate.suites``; None stays None."""
    from vla_rft.errors import ConfigError

    if suites is None:
        return None
    table = {s.name: s for s in cfg.evaluate.suite_list()}
    unknown = [s for s in suites if s not in table]
    if not suites or unknown:
        raise ConfigError(f"--suites {','.join(suites)}: {'empty' if not suites else f'{unknown[0]!r} is not'} "
                          f"among this config's evaluate.suites ({', '.join(table)})")
    if len(set(suites)) != len(suites):
        raise ConfigError(f"--suites lists a suite twice: {suites}")
    return [s for name, s in table.items() if name in suites]


def _load_policies(cfg: Config, policies: dict[str, str], cache: Path):
    """Each policy's ``act`` function, and what was evaluated: name -> {uri, content_sha256, lineage}."""
    from vla_rft.policy.modeling import VLAPolicy

    acts, evaluated = {}, {}
    for name, uri in policies.items():
        policy_dir, manifest = storage.read_artifact(uri, expected_kind="policy", cache_dir=cache)
        lineage = manifest.get("config") or {}
        evaluated[name] = {"uri": uri, "content_sha256": registry_mod.content_hash(manifest),
                           "trained_by": lineage.get("trained_by"), "dataset_version": lineage.get("dataset_version"),
                           "champion": lineage.get("champion")}
        policy = VLAPolicy.from_pretrained(policy_dir, device=cfg.common.device)
        acts[name] = _policy_act(policy, cfg.sim.tasks, name, uri)
    return acts, evaluated


def _evaluation_record(cfg: Config, policies: dict[str, str], evaluated: dict) -> dict[str, Any]:
    """The manifest config of an evaluation: the settings that define its episodes and what it evaluated."""
    return {"profile": cfg.profile, "evaluate": cfg.section("evaluate"), "sim": cfg.section("sim"),
            "chunk_len": cfg.common.chunk_len, "policies": policies, "evaluated": evaluated}


def _publish_evaluation(cfg: Config, results, policies: dict[str, str], evaluated: dict, out_uri: str,
                        world_model_uri: str | None, tmp: Path, overwrite: bool) -> dict[str, Any]:
    """metrics.json, the report and the manifest of an evaluation, published at ``out_uri``; the metrics."""
    from vla_rft.evaluation.metrics import compute_metrics, kfp_metrics
    from vla_rft.evaluation.report import ReportSection, write_report
    from vla_rft.world_model.evaluate import fidelity_report_fragment

    names = list(policies)
    comparisons = [(n, names[0]) for n in names[1:]]
    metrics = compute_metrics(results, comparisons=comparisons, confidence=cfg.evaluate.confidence)
    out = tmp / "out"
    sections = []
    if world_model_uri:
        wm_dir, _ = storage.read_artifact(world_model_uri, expected_kind="world_model", cache_dir=tmp / "cache")
        fragment = fidelity_report_fragment(wm_dir, "wm")
        if fragment is not None:
            sections.append(ReportSection("World-model fidelity (val episodes)", *fragment))
    sections.append(ReportSection("Training data and lineage", _lineage_html(evaluated), {}))
    write_report(out, metrics, results, sections=sections, plots=cfg.evaluate.plots)
    (out / "kfp_metrics.json").write_text(json.dumps({n: kfp_metrics(metrics, n) for n in metrics["policies"]},
                                                     indent=2))
    storage.write_artifact(out, out_uri, kind="evaluation", config=_evaluation_record(cfg, policies, evaluated),
                           overwrite=overwrite)
    return metrics


def _lineage_html(evaluated: dict[str, dict]) -> str:
    """One row per evaluated policy: how it was made, and the dataset version (DVC revision, commit, content hash)."""
    import html

    rows = []
    for name, entry in evaluated.items():
        version = entry.get("dataset_version")
        if isinstance(version, list):  # a world model's list; a policy records one
            version = version[0] if version else None
        source = (version or {}).get("source") or {}
        champion = entry.get("champion") or {}
        cells = [name, entry.get("trained_by") or "n/a",
                 f"champion {champion['version']}" if champion else "",
                 source.get("kind", "n/a"), source.get("rev") or source.get("uri") or "",
                 (source.get("commit") or "")[:12], ((version or {}).get("content_sha256") or "")[:16]]
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{h}</th>" for h in ("policy", "trained by", "base", "data source", "revision / URI",
                                                 "commit", "dataset content sha256"))
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _policy_act(policy, tasks: list[str], name: str, uri: str):
    """``act(frames, states, task_index)`` of a loaded policy over ``tasks``, mapped by instruction text."""
    # our task index -> the policy's
    order = np.asarray(instruction_order(policy.instructions, tasks, f"policy {name!r} ({uri})"))
    return lambda frames, states, task_index: policy.act(frames, states, order[task_index])


def _reevaluate_on(cfg: Config, eval_config: dict, policy_name: str):
    """A function scoring a policy URI on the episodes an evaluation ran (its recorded sim/evaluate settings)."""
    from vla_rft.config import config_from_dict

    if "sim" not in eval_config or "evaluate" not in eval_config:
        return None  # an evaluation that did not record its settings cannot be repeated

    def score(uri: str) -> tuple[float | None, dict]:
        from vla_rft.evaluation.metrics import compute_metrics
        from vla_rft.evaluation.runner import run_evaluation
        from vla_rft.policy.modeling import VLAPolicy

        ecfg = config_from_dict({"common": {**cfg.section("common"), "chunk_len": eval_config.get("chunk_len", 8)},
                                 "sim": eval_config["sim"], "evaluate": eval_config["evaluate"]})
        with tempfile.TemporaryDirectory(prefix="vla-rft-reeval-") as tmp:
            policy_dir, _ = storage.read_artifact(uri, expected_kind="policy", cache_dir=Path(tmp))
            policy = VLAPolicy.from_pretrained(policy_dir, device=cfg.common.device)
            act = _policy_act(policy, ecfg.sim.tasks, policy_name, uri)
            results = run_evaluation({policy_name: act}, ecfg.sim.tasks, ecfg.evaluate, ecfg.sim, expert=False,
                                     chunk_len=ecfg.common.chunk_len, progress=False)
        metrics = compute_metrics(results, comparisons=[], confidence=ecfg.evaluate.confidence)
        return (metrics["policies"][policy_name]["overall"][cfg.promote.metric],
                registry_mod.evaluation_fingerprint(metrics, policy_name))

    return score


def promote(cfg: Config, candidate_uri: str, evaluation_uri: str, *, registry: str | None = None,
            force: bool = False) -> dict[str, Any]:
    """Champion/challenger: make the candidate policy the registry's champion only if it beats it
    on the same evaluation (:mod:`vla_rft.registry`); every decision is recorded there.

    The evaluation must have evaluated this very candidate (its manifest records the content hash
    of each policy it ran). A champion scored on other episodes is re-evaluated on the
    evaluation's episodes first (the real simulator, one policy), so the gate decides on evidence.
    """
    from vla_rft.errors import CompatibilityError

    pcfg = cfg.promote
    registry = registry or pcfg.registry
    eval_dir, eval_manifest = storage.read_artifact(evaluation_uri, expected_kind="evaluation")
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    if pcfg.policy not in metrics.get("policies", {}):
        raise CompatibilityError(f"the evaluation {evaluation_uri} has no policy {pcfg.policy!r} (promote.policy); "
                                 f"it has {sorted(metrics.get('policies', {}))}")
    recorded = (eval_manifest.get("config", {}).get("evaluated") or {}).get(pcfg.policy)
    candidate_hash = registry_mod.content_hash(storage.read_manifest(candidate_uri))
    if not recorded:
        raise CompatibilityError(f"the evaluation {evaluation_uri} does not record which artifact it evaluated as "
                                 f"{pcfg.policy!r}; re-run evaluate on the candidate {candidate_uri}")
    if recorded.get("content_sha256") != candidate_hash:
        raise CompatibilityError(f"the evaluation {evaluation_uri} evaluated {recorded.get('uri')!r} as "
                                 f"{pcfg.policy!r}, not the candidate {candidate_uri} (their contents differ); "
                                 "evaluate the candidate, then promote it")
    score = metrics["policies"][pcfg.policy]["overall"][pcfg.metric]
    if score is None:
        raise CompatibilityError(f"the evaluation has no '{pcfg.metric}' success rate for {pcfg.policy!r} "
                                 "(promote.metric)")
    fingerprint = registry_mod.evaluation_fingerprint(metrics, pcfg.policy)
    reevaluate = _reevaluate_on(cfg, eval_manifest.get("config", {}), pcfg.policy)
    with registry_mod.registry_lock(registry):  # read, decide and switch as one step when runs promote concurrently
        return registry_mod.decide_and_promote(pcfg, registry, candidate_uri, metrics, score, fingerprint, force,
                                               reevaluate=reevaluate)



# -- LeRobot interop -------------------------------------------------------------------------------
def export_lerobot(cfg: Config, dataset_uri: str, out_uri: str, *, overwrite: bool = False) -> dict[str, Any]:
    """Write a dataset artifact as a LeRobot v3.0 dataset (readable by ``LeRobotDataset``).

    A local ``out_uri`` becomes a plain LeRobot directory, built in a temporary sibling and renamed
    into place, so a killed export never leaves a directory that looks complete. An ``s3://`` one is
    an artifact of kind ``lerobot_dataset`` (manifest written last), which import-lerobot reads back.
    """
    import shutil

    from vla_rft.data import load_dataset
    from vla_rft.data.lerobot import export_lerobot as export

    start = time.time()
    to_s3 = storage.is_s3_uri(out_uri)
    out = None if to_s3 else Path(out_uri)
    if to_s3:
        _refuse_existing(out_uri, "LeRobot dataset", overwrite)
    elif out.exists() and any(out.iterdir()) and not overwrite:
        raise storage.ArtifactExistsError(f"{out} already exists and is not empty; pass --overwrite to replace it")
    with tempfile.TemporaryDirectory(prefix="vla-rft-lerobot-") as tmp:
        data_dir, _ = storage.read_artifact(dataset_uri, expected_kind="dataset", cache_dir=Path(tmp) / "cache")
        data = load_dataset(data_dir)
        if to_s3:
            staged = Path(tmp) / "lerobot"
            info = export(data, staged)
            size = _dir_size(staged)
            storage.write_artifact(staged, out_uri, kind="lerobot_dataset",
                                   config={"dataset": dataset_uri, "format": "lerobot/v3.0"}, overwrite=overwrite)
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            staged = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
            try:
                info = export(data, staged)
                if out.exists():
                    shutil.rmtree(out)
                staged.rename(out)
            finally:
                shutil.rmtree(staged, ignore_errors=True)
            size = _dir_size(out)
    return {"out": out_uri, "episodes": info["total_episodes"], "frames": info["total_frames"],
            "tasks": info["total_tasks"], "camera": next(k for k in info["features"] if k.startswith("observation.images.")),
            "size_bytes": size, "seconds": time.time() - start}


def import_lerobot(cfg: Config, source: str, out_uri: str, *, camera: str | None = None,
                   overwrite: bool = False) -> dict[str, Any]:
    """Turn a LeRobot v3.0 dataset into our dataset artifact (same schema as prepare-data's).

    ``source`` is a local directory, or an ``s3://`` LeRobot dataset written by export-lerobot (its
    manifest is verified on download). Checked against this configuration: camera key, state and
    action dimensions, fps; frames of another size are resized to ``sim.image_size`` (the method is
    recorded in info.json). Episodes without a ``split`` column are split into train/val per task as
    prepare-data does.
    """
    from vla_rft.data.lerobot import read_lerobot
    from vla_rft.data.parquet import write_dataset
    from vla_rft.tasks import ACTION_DIM, STATE_DIM

    start = time.time()
    _refuse_existing(out_uri, "dataset", overwrite)
    with tempfile.TemporaryDirectory(prefix="vla-rft-dataset-") as tmp:
        root = source
        if storage.is_s3_uri(source):
            try:
                root, _ = storage.read_artifact(source, expected_kind="lerobot_dataset", cache_dir=Path(tmp) / "src")
            except storage.ArtifactNotFoundError as err:
                raise storage.ArtifactNotFoundError(
                    f"{err}; from S3 import-lerobot reads datasets that export-lerobot wrote there (with a manifest); "
                    "download any other LeRobot dataset and import the directory") from None
        imported = read_lerobot(root, image_size=cfg.sim.image_size, state_dim=STATE_DIM, action_dim=ACTION_DIM,
                                fps=FPS, camera=camera, val_fraction=cfg.prepare_data.val_fraction,
                                seed=cfg.common.seed)
        out = Path(tmp) / "out"
        info = write_dataset(out, imported.episodes, imported.splits, imported.tasks,
                             info_extra=imported.info_extra, frames_per_file=cfg.prepare_data.frames_per_file)
        size = _dir_size(out)
        storage.write_artifact(out, out_uri, kind="dataset",
                               config={"profile": cfg.profile, "common": cfg.section("common"),
                                       "sim": {"image_size": cfg.sim.image_size},
                                       "prepare_data": {"val_fraction": cfg.prepare_data.val_fraction},
                                       "source": {"lerobot": str(source), "camera": camera}},
                               overwrite=overwrite)
    return {"uri": out_uri, "episodes": info["total_episodes"], "frames": info["total_frames"],
            "splits": info["splits"], "tasks": [t for t, _ in imported.tasks], "notes": imported.notes,
            "size_bytes": size, "seconds": time.time() - start}


# -- closed-loop RFT: policy rollouts, the success model, GRPO over imagined episodes ---------------
def collect_rollouts(cfg: Config, policy_uri: str, out_uri: str, *, overwrite: bool = False,
                     progress: bool = True) -> dict[str, Any]:
    """The base policy (mean + Gaussian exploration noise) in the real simulator on training seeds,
    every episode recorded (failures kept) as a dataset with ``source: policy``.

    ``data.accumulate_rollouts``: the episodes are appended to the versioned rollouts dataset
    (``data.rollouts_path`` in ``data.dvc_repo``), committed as its next version (git tag
    ``rollouts-v<N>``, data pushed to the DVC remote), and that whole version is the output; cycle N
    records on the seeds after cycle N-1's, so no episode repeats.
    """
    import contextlib

    import torch

    from vla_rft import versions
    from vla_rft.data.parquet import EpisodeData, episodes_of, write_dataset
    from vla_rft.data.splits import split_by_episode
    from vla_rft.errors import CompatibilityError, ConfigError
    from vla_rft.policy.modeling import VLAPolicy
    from vla_rft.sim.perturbations import EpisodeSpec
    from vla_rft.sim.rollouts import record_policy_episodes
    from vla_rft.sim.vector import BatchedSimulator

    rc, scfg = cfg.collect_rollouts, cfg.sim
    _refuse_existing(out_uri, "dataset", overwrite)
    torch.set_num_threads(1)  # the simulator workers use the cores
    start = time.time()
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="vla-rft-rollouts-"))
        history = (stack.enter_context(versions.appendable(cfg.data.dvc_repo, cfg.data.rollouts_path, "rollouts"))
                   if cfg.data.accumulate_rollouts else None)
        previous, earlier = None, []
        if history is not None and history.previous is not None:
            previous = _load_dataset_artifact(cfg, str(history.previous), Path(tmp) / "previous")
            if previous.tasks != list(scfg.tasks):
                raise CompatibilityError(f"the rollouts history {history.version['repo']}:{cfg.data.rollouts_path} "
                                         f"holds tasks {previous.tasks}, this run sim.tasks {list(scfg.tasks)}; "
                                         "use another data.rollouts_path for another task list")
            earlier = history.versions()
        offset = rc.seed_offset + len(earlier) * rc.episodes_per_task  # cycle N continues after cycle N-1's seeds
        seeds = (offset, offset + rc.episodes_per_task)
        if seeds[1] > cfg.evaluate.seed_base:
            raise ConfigError(f"collect_rollouts seeds {seeds[0]}..{seeds[1] - 1} reach the evaluation seeds "
                              f"(>= evaluate.seed_base={cfg.evaluate.seed_base}); lower collect_rollouts.seed_offset")
        expert = (cfg.prepare_data.seed_offset, cfg.prepare_data.seed_offset + cfg.prepare_data.episodes_per_task)
        honesty = (cfg.rft.honesty_seed_offset, cfg.rft.honesty_seed_offset + cfg.rft.honesty_episodes_per_task)
        for name, (lo, hi) in (("the expert data's", expert), ("the RFT honesty check's", honesty)):
            if lo < seeds[1] and seeds[0] < hi:
                raise ConfigError(f"collect_rollouts seeds {seeds[0]}..{seeds[1] - 1} overlap {name} seeds "
                                  f"{lo}..{hi - 1}; move collect_rollouts.seed_offset")
        policy_dir, policy_manifest = storage.read_artifact(policy_uri, expected_kind="policy",
                                                            cache_dir=Path(tmp) / "cache")
        policy = VLAPolicy.from_pretrained(policy_dir, device=cfg.common.device)
        order = np.asarray(instruction_order(policy.instructions, scfg.tasks))
        noise_rng = np.random.default_rng([cfg.common.seed, 3])

        def act(frames, states, task_index):
            mean = policy.act(frames, states, order[task_index])
            return mean + rc.action_noise * noise_rng.standard_normal(mean.shape).astype(np.float32)

        specs = [EpisodeSpec(t, offset + i) for i in range(rc.episodes_per_task) for t in scfg.tasks]
        workers = min(scfg.num_workers, len(specs))
        with _progress(len(specs), "collect-rollouts", progress) as bar, \
                BatchedSimulator.from_config(scfg, workers) as sim:
            records = record_policy_episodes(sim, specs, act, scfg.tasks, max_steps=scfg.max_episode_steps,
                                             post_success_steps=rc.post_success_steps, batch_size=rc.batch_size,
                                             noisy=rc.action_noise > 0, progress=bar)
        task_ids = [scfg.tasks.index(r.spec.task) for r in records]
        splits = split_by_episode(task_ids, rc.val_fraction, np.random.default_rng([cfg.common.seed, 4]))
        episodes = [EpisodeData(t, r.spec.seed, r.spec.perturbation.name, r.frames, r.states, r.actions,
                                r.expert_actions, r.rewards, r.successes, r.noisy, r.success, r.first_success_step,
                                source="policy", env_states=r.env_states) for t, r in zip(task_ids, records)]
        if previous is not None:
            old_episodes, old_splits = episodes_of(previous)
            if previous.env_states is None:
                print("collect-rollouts: the rollouts appended to have no observation.environment_state "
                      "(recorded before it existed); the new dataset is written without it")
            episodes, splits = old_episodes + episodes, old_splits + list(splits)
        per_task = {t: float(np.mean([r.success for r in records if r.spec.task == t])) for t in scfg.tasks}
        out = Path(tmp) / "out"
        info = write_dataset(out, episodes, splits, [(t, TASKS[t].instruction) for t in scfg.tasks], info_extra={
            "fps": FPS, "robot_type": "sawyer", "simulator": "metaworld-v3", "camera": scfg.camera,
            "chunk_len": cfg.common.chunk_len, "goal_marker_scale": scfg.goal_marker_scale,
            "max_episode_steps": scfg.max_episode_steps, "state_names": list(STATE_NAMES),
            "action_names": list(ACTION_NAMES), "source": "policy", "policy": policy_uri,
            "policy_success": per_task, "seeds": list(seeds)})
        config = {"profile": cfg.profile, "common": cfg.section("common"), "sim": cfg.section("sim"),
                  "collect_rollouts": cfg.section("collect_rollouts"), "policy": policy_uri,
                  "policy_lineage": policy_manifest["config"].get("champion")}
        version = None
        if history is not None:
            staged = Path(tmp) / "version"  # the DVC version is an artifact directory: readable by dvc:REV
            storage.write_artifact(out, str(staged), kind="dataset", config={
                **config, "source": {"kind": "rollouts", "appended_to": history.version if previous else None}})
            version = history.commit(staged, f"rollouts: +{len(records)} episodes (seeds {seeds[0]}..{seeds[1] - 1}) "
                                             f"from {policy_uri}")
            version["content_sha256"] = registry_mod.content_hash(storage.read_manifest(str(staged)))
            version["previous"] = history.version if previous else None
            config["source"] = {"kind": "dvc", **version}
            print(f"collect-rollouts: rollouts version {version['tag']} ({info['total_episodes']} episodes, commit "
                  f"{version['commit'][:12]}) pushed to {version['repo']}", file=sys.stderr, flush=True)
        storage.write_artifact(out, out_uri, kind="dataset", config=config, overwrite=overwrite)
    return {"uri": out_uri, "episodes": info["total_episodes"], "episodes_new": len(records),
            "frames": info["total_frames"], "splits": info["splits"],
            "success_rate": float(np.mean([r.success for r in records])), "success_per_task": per_task,
            "seeds": list(seeds), "version": version, "seconds": time.time() - start}


def ground_world_model(cfg: Config, dataset_uri: str, rollouts_uri: str, init_from: str, out_uri: str, *,
                       overwrite: bool = False, checkpoint_dir: str | Path | None = None, restart: bool = False,
                       progress: bool = True) -> dict[str, Any]:
    """The expert-trained world model fine-tuned on expert data + the policy's rollouts (it sees failure),
    for ``world_model.ground_steps`` steps."""
    return train_world_model(cfg, [dataset_uri, rollouts_uri], out_uri, overwrite=overwrite,
                             checkpoint_dir=checkpoint_dir, restart=restart, progress=progress, init_from=init_from)


def train_success_model(cfg: Config, dataset_uris: list[str], out_uri: str, *, world_model_uri: str | None = None,
                        overwrite: bool = False, checkpoint_dir: str | Path | None = None, restart: bool = False,
                        progress: bool = True) -> dict[str, Any]:
    """Train the success judge on real frames of the datasets (expert + rollouts), calibrate it on
    their val episodes, publish it (kind ``success_model``). With ``success_model.imagined_steps``
    it is then fine-tuned on the world model's replays of the same episodes (``rft.horizon`` chunks)
    and calibrated on the val episodes' imagined frames."""
    from vla_rft.data import concat_datasets
    from vla_rft.success.train import train_success_model as train
    from vla_rft.world_model.modeling import WorldModel

    if not dataset_uris:
        raise ValueError("train-success-model needs at least one --dataset")
    cfg.success_model.check_trainable()  # before the --world-model check, whose advice would not apply
    if cfg.success_model.imagined_steps and not world_model_uri:
        raise ValueError(f"success_model.imagined_steps is {cfg.success_model.imagined_steps}: pass --world-model "
                         "(the grounded world model RFT imagines with), or set success_model.imagined_steps=0")
    if world_model_uri and not cfg.success_model.imagined_steps:
        print(f"train-success-model: success_model.imagined_steps is 0, the world model {world_model_uri} is not used")
        world_model_uri = None
    _refuse_existing(out_uri, "success model", overwrite)
    start = time.time()
    with tempfile.TemporaryDirectory(prefix="vla-rft-success-") as tmp:
        cache = Path(tmp) / "cache"
        data = concat_datasets([_load_dataset_artifact(cfg, u, cache) for u in dataset_uris])
        inputs = list(dataset_uris) + ([world_model_uri] if world_model_uri else [])
        settings = {"common": cfg.section("common"), "success_model": cfg.section("success_model"),
                    "datasets": [storage.read_manifest(u)["files"] for u in inputs]}
        world_model = None
        if world_model_uri:
            wm_dir, _ = storage.read_artifact(world_model_uri, expected_kind="world_model", cache_dir=cache)
            world_model = WorldModel.from_pretrained(wm_dir, device=cfg.common.device).eval()
            settings["horizon"] = cfg.rft.horizon
        ckpt, resume = prepare_checkpoint_dir(out_uri, "success_model", settings, checkpoint_dir, restart)
        out = Path(tmp) / "out"
        summary = train(cfg.success_model, cfg.common, data, out, ckpt, resume=resume, progress=progress,
                        world_model=world_model, horizon=cfg.rft.horizon)
        storage.write_artifact(out, out_uri, kind="success_model", config={
            "profile": cfg.profile, "common": settings["common"], "success_model": settings["success_model"],
            "datasets": list(dataset_uris), "world_model": world_model_uri,
            "horizon": settings.get("horizon")}, overwrite=overwrite)
    return {"uri": out_uri, "resumed": resume, "train": summary, "seconds": time.time() - start}


def _check_simulator_seeds(cfg: Config, data) -> None:
    """``rft.environment: simulator`` resets new layouts: none may be a recorded episode's (expert data or
    rollouts, any source) or the honesty check's, so what RFT learns there is never measured there."""
    from vla_rft.errors import ConfigError

    lo, hi = cfg.rft.simulator_seeds()
    used = sorted({int(e["seed"]) for e in data.episodes if lo <= int(e["seed"]) < hi})
    if used:
        raise ConfigError(f"rft.simulator_seed_offset: seeds {lo}..{hi - 1} include {len(used)} of the data's episode "
                          f"seeds (first {used[0]}); move rft.simulator_seed_offset")
    h_lo, h_hi = cfg.rft.honesty_seed_offset, cfg.rft.honesty_seed_offset + cfg.rft.honesty_episodes_per_task
    if lo < h_hi and h_lo < hi:
        raise ConfigError(f"rft.simulator_seed_offset: seeds {lo}..{hi - 1} overlap the honesty check's seeds "
                          f"{h_lo}..{h_hi - 1}; move rft.simulator_seed_offset")


def rft_episode(cfg: Config, dataset_uri: str, world_model_uri: str, policy_uri: str, success_model_uri: str | None,
                out_uri: str, *, rollouts_uri: str | None = None, overwrite: bool = False,
                checkpoint_dir: str | Path | None = None, restart: bool = False, verify: bool = True,
                progress: bool = True, veto_world_model_uri: str | None = None) -> dict[str, Any]:
    """GRPO over closed-loop imagined episodes judged by the success model; writes ``honesty.json``
    (imagined vs real success of the base policy on held-out training-range seeds). With
    ``veto_world_model_uri`` (another world model, e.g. the expert-only one) the reward is pessimistic:
    an imagined success counts only where that model's replay of the same actions is judged successful too."""
    if distributed.context().distributed:
        from vla_rft.errors import ConfigError

        raise ConfigError("rft.mode=episode trains in one process; run it without torchrun (chunk mode is data-parallel)")
    import contextlib
    import copy

    from vla_rft.data import concat_datasets
    from vla_rft.policy.modeling import VLAPolicy
    from vla_rft.rft.episode import train_episode_grpo
    from vla_rft.rft.honesty import exploitation_warnings, honesty_check_from_config, success_threshold
    from vla_rft.success.modeling import SuccessModel
    from vla_rft.world_model.modeling import WorldModel

    if not success_model_uri:
        raise ValueError("rft.mode is 'episode': pass --success-model (the train-success-model stage's output)")
    _refuse_existing(out_uri, "policy", overwrite)
    start = time.time()
    inputs = [u for u in (dataset_uri, rollouts_uri, world_model_uri, policy_uri, success_model_uri,
                          veto_world_model_uri) if u]
    with tempfile.TemporaryDirectory(prefix="vla-rft-rft-episode-") as tmp:
        cache = Path(tmp) / "cache"
        data = concat_datasets([_load_dataset_artifact(cfg, u, cache) for u in (dataset_uri, rollouts_uri) if u])
        if cfg.rft.environment == "simulator":
            _check_simulator_seeds(cfg, data)
        wm_dir, _ = storage.read_artifact(world_model_uri, expected_kind="world_model", cache_dir=cache)
        policy_dir, policy_manifest = storage.read_artifact(policy_uri, expected_kind="policy", cache_dir=cache)
        judge_dir, _ = storage.read_artifact(success_model_uri, expected_kind="success_model", cache_dir=cache)
        world_model = WorldModel.from_pretrained(wm_dir, device=cfg.common.device)
        veto_world_model = None
        if veto_world_model_uri:
            veto_dir, _ = storage.read_artifact(veto_world_model_uri, expected_kind="world_model", cache_dir=cache)
            veto_world_model = WorldModel.from_pretrained(veto_dir, device=cfg.common.device)
        policy = VLAPolicy.from_pretrained(policy_dir, device=cfg.common.device)
        judge = SuccessModel.from_pretrained(judge_dir, device=cfg.common.device)
        threshold = success_threshold(cfg, judge)
        settings = {"common": cfg.section("common"), "rft": cfg.section("rft"),
                    "inputs": [storage.read_manifest(u)["files"] for u in inputs]}
        ckpt, resume = prepare_checkpoint_dir(out_uri, "rft_episode", settings, checkpoint_dir, restart)
        out = Path(tmp) / "out"
        def check(checked_policy) -> dict:
            return honesty_check_from_config(cfg, checked_policy, world_model, judge, threshold, data.tasks,
                                             veto_world_model=veto_world_model)

        honesty = check(copy.deepcopy(policy).eval()) if verify and cfg.rft.honesty_episodes_per_task else None
        with contextlib.ExitStack() as stack:
            simulator = None
            if cfg.rft.environment == "simulator":
                from vla_rft.sim.vector import BatchedSimulator

                simulator = stack.enter_context(BatchedSimulator.from_config(cfg.sim))
            summary = train_episode_grpo(cfg.rft, cfg.common, data, world_model, policy, judge, threshold, out, ckpt,
                                         resume=resume, progress=progress, veto_world_model=veto_world_model,
                                         simulator=simulator)
        if honesty is not None:  # the same check for the fine-tuned policy: has it learnt the blind spots?
            after = check(policy.eval())
            honesty["after_training"] = after
            honesty["warnings"] += exploitation_warnings(honesty, after)
            (out / "honesty.json").write_text(json.dumps(honesty, indent=2))
            keys = ("correlation_across_tasks", "mean_abs_difference", "hallucination_rate", "false_success_share",
                    "imagined_auc")
            summary["honesty"] = {**{k: honesty[k] for k in keys + ("warnings",)},
                                  "after_training": {k: honesty["after_training"][k] for k in
                                                     keys + ("imagined_success", "real_success")}}
            (out / "summary.json").write_text(json.dumps(summary, indent=2))
        storage.write_artifact(out, out_uri, kind="policy", config={
            "profile": cfg.profile, "common": settings["common"], "rft": settings["rft"],
            "policy": policy_manifest["config"].get("policy"), "base_policy": policy_uri,
            "world_model": world_model_uri, "dataset": dataset_uri, "rollouts": rollouts_uri,
            "success_model": success_model_uri, "veto_world_model": veto_world_model_uri, "trained_by": "rft"},
            overwrite=overwrite)
    return {"uri": out_uri, "resumed": resume, "train": summary, "honesty": honesty, "seconds": time.time() - start}

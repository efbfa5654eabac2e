"""GRPO over closed-loop imagined episodes, judged by the learned success model (``rft.mode: episode``).

After WMPO and WoVR. One step, top to bottom:

1. **sample starts** - B real start frames + states from the training split: a share
   ``keyframe_share`` at a random frame inside a recorded episode, the rest at an episode's reset
   frame; drawn from ``rng(seed, step)`` so a resumed run sees the same starts;
2. **imagine** - each start repeated G times; the current policy samples a chunk (exploration std
   range), the world model predicts its frames, the policy acts on the predicted frame, for
   ``horizon`` chunks (:func:`vla_rft.world_model.imagine.imagine_episodes`);
3. **judge** - the success model scores each chunk's last frame (or, ``success_model.input: state``, the
   world model's predicted proprio + environment state); the episode succeeds at the
   first chunk with p >= threshold, and later chunks are masked out;
4. **advantages** - episode reward (1/0, + ``progress_coef`` * max p) normalised within each group;
   with ``filter_groups`` groups whose outcomes are all equal are dropped (counted); every chunk
   of an episode shares its advantage;
5. **loss** - clipped ratio per chunk (log-probs recomputed with grad), averaged over unmasked
   chunks of kept groups; entropy bonus, KL to the frozen base and the BC regulariser optional as in
   chunk mode.

``rft.environment: simulator`` runs steps 1-3 in the real simulator instead (:func:`simulator_episodes`):
new training-range reset layouts each step, the simulator's success flag the reward, steps 4-5 unchanged.
It is the baseline that separates what the world model costs from what GRPO itself can do; every one of
its episodes is real-simulator data, counted in the summary.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from vla_rft.checkpointing import load_checkpoint, save_checkpoint
from vla_rft.config import CommonConfig
from vla_rft.data import LoadedDataset
from vla_rft.data.torch_dataset import ChunkDataset
from vla_rft.errors import ConfigError
from vla_rft.rft.configuration import RFTConfig
from vla_rft.rft.grpo import check_compatible, dataset_to_policy_tasks, policy_objective, rft_optimizer
from vla_rft.rft.groups import exploration_range, repeat_group
from vla_rft.training import write_curves
from vla_rft.sim.perturbations import EpisodeSpec
from vla_rft.world_model.imagine import ActFn, ImaginedEpisodes, imagine_episodes

CHECKPOINT_NAME = "rft_episode_checkpoint.safetensors"  # stage-specific, as checkpointing.checkpoint_files names it
CURVE_FIELDS = ("step", "success_rate", "reward_mean", "groups_kept", "groups_dropped", "episode_chunks", "vetoed",
                "loss", "pg_loss", "bc_loss", "kl", "clip_frac", "approx_kl", "entropy", "action_std", "grad_norm",
                "seconds_per_step", "seconds")
_SALT = 9_400  # the episode-mode start stream, apart from chunk mode's


def start_task_indices(data: LoadedDataset, start_tasks: list[str], skip_solved_at: float) -> list[int] | None:
    """Dataset task indices imagined episodes may start from (None: every task): the tasks named in
    ``start_tasks`` (all when empty), less those whose policy rollouts in ``data`` (every split) succeed
    in at least ``skip_solved_at`` of their episodes (0: none skipped; a task without rollouts is kept).
    A name the dataset lacks, or a rule that leaves no task, is a ConfigError naming them."""
    if not start_tasks and not skip_solved_at:
        return None
    unknown = [t for t in start_tasks if t not in data.tasks]
    if unknown:
        raise ConfigError(f"rft.start_tasks: {', '.join(unknown)} not in the dataset's tasks "
                          f"({', '.join(data.tasks)})")
    chosen = [data.tasks.index(t) for t in start_tasks] if start_tasks else list(range(len(data.tasks)))
    if skip_solved_at:
        rates = policy_success_rates(data)
        if not rates:
            raise ConfigError("rft.skip_solved_at is set but the data hold no policy rollouts "
                              "(pass the collect-rollouts output as the rollouts)")
        chosen = [t for t in chosen if rates.get(t, 0.0) < skip_solved_at]
    if not chosen:
        raise ConfigError(f"rft.start_tasks / rft.skip_solved_at ({start_tasks}, {skip_solved_at}) leave no task "
                          f"to start imagined episodes from")
    return chosen


def policy_success_rates(data: LoadedDataset) -> dict[int, float]:
    """Per dataset task index, the share of its policy-rollout episodes (``source`` policy) that succeed."""
    outcomes: dict[int, list[bool]] = {}
    for ep in data.episodes:
        if ep.get("source") == "policy":
            outcomes.setdefault(int(ep["task_index"]), []).append(bool(ep["success"]))
    return {t: float(np.mean(o)) for t, o in outcomes.items()}


def start_rows(data: LoadedDataset, split: str, n: int, keyframe_share: float, rng: np.random.Generator,
               tasks: list[int] | None = None) -> np.ndarray:
    """Dataset rows of ``n`` start frames: reset frames of random episodes (of ``tasks``' dataset task
    indices only, if given), or (share ``keyframe_share``) a random frame inside one (not in its last
    chunk's worth of frames)."""
    eps = data.episodes_in(split)
    if tasks is not None:
        eps = [e for e in eps if int(e["task_index"]) in tasks]
    if not eps:
        raise ValueError(f"split {split!r} has no episodes{' of the start tasks' if tasks is not None else ''} "
                         f"to start imagined episodes from")
    picks = rng.integers(0, len(eps), size=n)
    key = rng.random(n) < keyframe_share
    offs = rng.random(n)
    rows = []
    for e, k, o in zip(picks, key, offs):
        ep = eps[int(e)]
        span = max(1, ep["length"] - 8)
        rows.append(ep["dataset_from_index"] + (int(o * span) if k else 0))
    return np.asarray(rows, np.int64)


def simulator_starts(cfg: RFTConfig, data: LoadedDataset, step: int, rng: np.random.Generator,
                     tasks: list[int] | None = None) -> list[EpisodeSpec]:
    """``rft.environment: simulator``: the B reset layouts of GRPO step ``step`` (0-based), seeds
    ``simulator_seed_offset + step * B + i`` (a resumed run resets the same ones), each of a task drawn
    from ``tasks`` (dataset task indices; None: every task), distinct tasks while there are enough."""
    pool = list(range(len(data.tasks))) if tasks is None else list(tasks)
    picks = rng.choice(pool, size=cfg.batch_starts, replace=cfg.batch_starts > len(pool))
    first = cfg.simulator_seed_offset + step * cfg.batch_starts
    return [EpisodeSpec(data.tasks[int(t)], first + i) for i, t in enumerate(picks)]


@torch.no_grad()
def simulator_episodes(sim, act: ActFn, specs: list[EpisodeSpec], task_index: torch.Tensor, horizon: int,
                       chunk_len: int) -> tuple[ImaginedEpisodes, torch.Tensor]:
    """``act`` (as :func:`~vla_rft.world_model.imagine.imagine_episodes` calls it) for ``horizon`` chunks in the
    real simulator ``sim`` (a BatchedSimulator) from each spec's reset layout, in the shape of imagined
    episodes, and per chunk (N, H) 1.0 where the simulator's success flag first held in that chunk, else 0.0.
    An env stops stepping after its first success (it would be masked); ``act`` still sees its last frame."""
    # A worker keeps an env per (task, slot in its share of the batch) for its whole life, ~150 MB each with its
    # renderer, and takes a contiguous share: a group's copies in a row put G slots of each task on one worker
    # (10 tasks x 8 = 80 envs: killed for memory at 9.2 GB on a 23 GB machine). Send the episodes to the simulator
    # spread out (every spec's first copy, then every second one, ...), which halves that; ``act`` and the
    # results keep the caller's order.
    n = len(specs)
    copies: dict[str, int] = {}
    nth = []  # how many earlier specs share this one's task
    for sp in specs:
        nth.append(copies.get(sp.task, 0))
        copies[sp.task] = nth[-1] + 1
    order = np.argsort(np.asarray(nth, np.int64), kind="stable")
    back = np.argsort(order)
    old = sim.max_episode_steps
    sim.max_episode_steps = horizon * chunk_len
    try:
        obs = sim.reset([specs[i] for i in order])
        frames, states = obs.frames[back], obs.states[back].astype(np.float32)
        done = np.zeros(n, bool)
        probs = torch.zeros(n, horizon)
        ctx_i, ctx_s, acts, lasts, ends = [], [], [], [], []
        for h in range(horizon):
            images = torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2)))
            chunk = torch.as_tensor(act(images, torch.from_numpy(states), task_index, h)).float().cpu()
            if chunk.shape[:2] != (n, chunk_len) or chunk.dim() != 3:
                raise ValueError(f"act returned actions of shape {tuple(chunk.shape)}; expected ({n}, {chunk_len}, A)")
            step = sim.step_chunk(chunk.clamp(-1, 1).numpy()[order], render="last", active=(~done)[order])
            step = type(step)(**{f.name: getattr(step, f.name)[back] for f in dataclasses.fields(step)})
            ctx_i.append(images)
            ctx_s.append(torch.from_numpy(states))
            acts.append(chunk)
            frames, states = step.frames[:, -1], step.states.astype(np.float32)
            hit = step.success & ~done
            probs[:, h] = torch.from_numpy(hit.astype(np.float32))
            done |= hit
            lasts.append(torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2))))
            ends.append(torch.from_numpy(np.concatenate([states, step.step_env_states[:, -1]], 1)))
    finally:
        sim.max_episode_steps = old
    return ImaginedEpisodes(torch.stack(ctx_i, 1), torch.stack(ctx_s, 1), torch.stack(acts, 1),
                            torch.stack(lasts, 1), torch.stack(ends, 1)), probs


def episode_outcomes(probs: torch.Tensor, threshold: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(success (N,) bool, mask (N, H) float)`` from per-chunk success probabilities (N, H):
    success at the first chunk with p >= threshold (a float, or (N, 1): one per episode); the mask
    keeps chunks up to and including it."""
    hit = probs >= threshold
    success = hit.any(1)
    first = torch.where(success, hit.float().argmax(1), torch.full_like(success, probs.shape[1] - 1, dtype=torch.long))
    mask = (torch.arange(probs.shape[1])[None] <= first[:, None]).float()
    return success, mask


def per_episode_threshold(threshold: float | dict[str, float], success_model,
                          judge_tasks: torch.Tensor) -> float | torch.Tensor:
    """The threshold for episodes of the judge's task index ``judge_tasks`` (N,): a float as it is,
    a per-task mapping (``rft.success_threshold_source: per_task``) as an (N, 1) tensor, each
    episode its own task's, which :func:`episode_outcomes` broadcasts over the chunks."""
    if not isinstance(threshold, dict):
        return threshold
    missing = [t for t in success_model.tasks if t not in threshold]
    if missing:
        raise ValueError(f"per-task success thresholds miss task(s) {missing}")
    values = torch.tensor([float(threshold[t]) for t in success_model.tasks])
    return values[judge_tasks.long().cpu()].reshape(-1, 1)


def episode_advantages(rewards: torch.Tensor, eps: float, filter_groups: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(advantages (B, G), kept (B,) bool)``: ``(r - mean_group) / (std_group + eps)``; with
    ``filter_groups`` a group whose rewards are all equal is not kept (its advantages are 0 anyway)."""
    mean = rewards.mean(1, keepdim=True)
    std = rewards.std(1, keepdim=True) if rewards.shape[1] > 1 else torch.zeros_like(mean)
    adv = (rewards - mean) / (std + eps).clamp_min(1e-12)  # an all-equal group: 0, not 0/0
    kept = (rewards.max(1).values > rewards.min(1).values) if filter_groups else torch.ones(len(rewards), dtype=torch.bool)
    return adv * kept[:, None].float(), kept


def masked_clipped_loss(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor,
                        eps_low: float, eps_high: float) -> tuple[torch.Tensor, float]:
    """Per-chunk clipped surrogate, every chunk weighted by its episode's advantage, mean over ``mask``."""
    ratio = torch.exp(logp - old_logp)
    surrogate = torch.min(ratio * adv, ratio.clamp(1 - eps_low, 1 + eps_high) * adv)
    denom = mask.sum().clamp_min(1.0)
    with torch.no_grad():
        clipped = ((ratio < 1 - eps_low) | (ratio > 1 + eps_high)).float()
        clip_frac = float((clipped * mask).sum() / denom)
    return -(surrogate * mask).sum() / denom, clip_frac


def pessimistic_probabilities(probs: torch.Tensor, veto_probs: torch.Tensor) -> torch.Tensor:
    """Per chunk, the lower of two success probabilities (N, H): the judge on one world model's closed-loop
    frames and on a second world model's open-loop replay of the same actions from the same starts. An
    imagined success only one model renders is that model's artefact, not the actions' doing (the min
    over an ensemble, as pessimistic model-based RL takes it)."""
    if probs.shape != veto_probs.shape:
        raise ValueError(f"success probabilities of shapes {tuple(probs.shape)} and {tuple(veto_probs.shape)} "
                         "cannot be paired chunk by chunk")
    return torch.minimum(probs, veto_probs)


def judge_probabilities(success_model, episodes, judge_tasks: torch.Tensor) -> torch.Tensor:
    """The judge's success probability (N, H) at the end of every imagined chunk: on its last frame
    (``success_model.input: frame``) or on the world model's predicted state (``state``)."""
    n, horizon = episodes.last_frames.shape[:2]
    inputs = success_model.inputs(episodes.last_frames, episodes.states).flatten(0, 1)
    return success_model.probability(inputs, judge_tasks).reshape(n, horizon)


def veto_probabilities(veto_world_model, success_model, episodes, start_images: torch.Tensor,
                       start_states: torch.Tensor, task_index: torch.Tensor, judge_tasks: torch.Tensor,
                       start_env_states: torch.Tensor | None = None) -> torch.Tensor:
    """The judge's per-chunk success probabilities (N, H) on ``veto_world_model``'s open-loop replay of the
    imagined ``episodes``' actions from the same starts (``start_states``: proprio, ``start_env_states``:
    the environment state for a model that predicts it; ``judge_tasks``: the judge's task index per chunk,
    (N * H,)); :func:`pessimistic_probabilities` pairs them with the first model's."""
    horizon = episodes.actions.shape[1]
    actions = episodes.actions
    replay = imagine_episodes(veto_world_model, lambda _i, _s, _t, h: actions[:, h], start_images,
                              veto_world_model.model_states(start_states, start_env_states), task_index, horizon)
    return judge_probabilities(success_model, replay, judge_tasks)


def train_episode_grpo(cfg: RFTConfig, common: CommonConfig, data: LoadedDataset, world_model, policy,
                       success_model, threshold: float | dict[str, float], out_dir: Path, checkpoint_dir: Path, resume: bool = False,
                       progress: bool = True, veto_world_model=None, simulator=None) -> dict:
    """Fine-tune ``policy`` in place with GRPO over imagined episodes; writes model and curves to ``out_dir``.

    With ``veto_world_model``, every episode's actions are replayed open loop in that world model too and
    the reward takes, chunk by chunk, the lower success probability (:func:`pessimistic_probabilities`).
    With ``rft.environment: simulator`` the episodes run in ``simulator`` (a BatchedSimulator) from new reset
    layouts each step (:func:`simulator_starts`) and the reward is its success flag; the world model and
    success model are then not used (``success_model`` may be None)."""
    if (cfg.environment == "simulator") != (simulator is not None):
        raise ValueError(f"rft.environment is {cfg.environment!r}: pass a simulator exactly when it is 'simulator'")
    if simulator is not None and veto_world_model is not None:
        raise ConfigError("a veto world model confirms imagined successes; rft.environment=simulator has real ones")
    check_compatible(policy, world_model, data)
    if veto_world_model is not None:
        check_compatible(policy, veto_world_model, data)
    if success_model is None and simulator is None:
        raise ValueError("imagined episodes are judged by a success model: pass one")
    # dataset task index -> the judge's
    task_map = None if success_model is None else torch.as_tensor(success_model.task_order(data.tasks))
    to_policy_task = dataset_to_policy_tasks(policy, data)  # dataset task index -> the policy's, by instruction
    std_range = exploration_range(cfg)
    start_tasks = start_task_indices(data, cfg.start_tasks, cfg.skip_solved_at)
    out_dir, checkpoint_dir = Path(out_dir), Path(checkpoint_dir)
    device = torch.device(common.device)
    torch.set_num_threads(common.num_threads)
    torch.manual_seed(common.seed)
    np.random.seed(common.seed)
    policy.to(device).train()
    for model in (m for m in (world_model, success_model, veto_world_model) if m is not None):
        model.to(device).eval()
        for p in model.parameters():
            p.requires_grad_(False)
    reference, trainable, optimizer = rft_optimizer(policy, cfg)
    bc_ds = ChunkDataset(data, "train", chunk_len=policy.chunk_len) if cfg.bc_coef > 0 else None
    images_all = torch.from_numpy(np.ascontiguousarray(data.images.transpose(0, 3, 1, 2)))
    b, g, horizon = cfg.batch_starts, cfg.group_size, cfg.horizon
    rows: list[dict] = []
    start_step, elapsed = 0, 0.0
    ckpt_path = checkpoint_dir / CHECKPOINT_NAME
    if resume and ckpt_path.exists():
        meta = load_checkpoint(ckpt_path, policy, optimizer)
        start_step, elapsed, rows = meta["step"], meta["seconds"], meta["rows"]

    bar = tqdm(total=cfg.steps, initial=start_step, desc="rft-episode", leave=False,
               disable=not progress or not sys.stderr.isatty())
    for step in range(start_step, cfg.steps):
        t0 = time.time()
        # 1. sample starts
        rng = np.random.default_rng((common.seed, _SALT, step))
        if simulator is not None:
            specs = simulator_starts(cfg, data, step, rng, start_tasks)
            tasks = repeat_group(torch.tensor([data.tasks.index(sp.task) for sp in specs]), g)
        else:
            starts = start_rows(data, "train", b, cfg.keyframe_share, rng, start_tasks)
            images = repeat_group(images_all[starts], g)
            states = repeat_group(torch.from_numpy(data.states[starts]), g)
            env_states = None if data.env_states is None else repeat_group(torch.from_numpy(data.env_states[starts]), g)
            tasks = repeat_group(torch.from_numpy(data.task_index[starts]), g)
        gen = torch.Generator(device="cpu").manual_seed(int(rng.integers(2**62)))

        # 2. imagine closed-loop episodes with the sampling policy
        old_logps: list[torch.Tensor] = []

        def act(img, st, ti, _h):
            dist = policy(img, st, ti, std_range=std_range)
            chunk = dist.mean + dist.std * torch.randn(dist.mean.shape, generator=gen).to(device)
            old_logps.append(dist.log_prob(chunk).cpu())
            return chunk.cpu()

        with torch.no_grad():
            n, vetoed = b * g, 0
            if simulator is not None:  # 2-3. real episodes, the simulator's success flag per chunk
                episodes, probs = simulator_episodes(simulator, act, [sp for sp in specs for _ in range(g)],
                                                     to_policy_task[tasks], horizon, policy.chunk_len)
                thresholds = 0.5
            else:
                episodes = imagine_episodes(world_model, act, images, world_model.model_states(states, env_states),
                                            to_policy_task[tasks], horizon)
                # 3. judge every chunk's last frame
                judge_tasks = task_map[tasks].repeat_interleave(horizon)
                probs = judge_probabilities(success_model, episodes, judge_tasks).cpu()
                thresholds = per_episode_threshold(threshold, success_model, task_map[tasks])
            old_logp = torch.stack(old_logps, 1)  # (N, H)
            if veto_world_model is not None:
                alone, _ = episode_outcomes(probs, thresholds)
                veto = veto_probabilities(veto_world_model, success_model, episodes, images, states,
                                          to_policy_task[tasks], judge_tasks, env_states)
                probs = pessimistic_probabilities(probs, veto.cpu())
            success, mask = episode_outcomes(probs, thresholds)
            if veto_world_model is not None:
                vetoed = int((alone & ~success).sum())
            rewards = success.float() + cfg.progress_coef * (probs * mask).max(1).values

            # 4. advantages, shared by every chunk of an episode
            adv, kept = episode_advantages(rewards.reshape(b, g), cfg.advantage_eps, cfg.filter_groups)
            if cfg.shuffle_advantages:
                perm = torch.argsort(torch.rand(b, g, generator=gen), dim=1)
                adv = torch.gather(adv, 1, perm)
            adv = adv.reshape(n, 1).expand(n, horizon)
            mask = mask * kept.repeat_interleave(g)[:, None].float()

        # 5. loss over the unmasked chunks of kept groups
        stats = {key: 0.0 for key in ("clip_frac", "approx_kl", "pg_loss", "bc_loss", "kl", "loss", "entropy",
                                      "grad_norm")}
        action_std = float("nan")
        live = mask.reshape(-1) > 0
        if live.any():
            ctx_i = episodes.context_images.flatten(0, 1)[live]
            ctx_s = episodes.context_states.flatten(0, 1)[live]
            ctx_t = to_policy_task[tasks].repeat_interleave(horizon)[live]
            chunks = episodes.actions.flatten(0, 1)[live].to(device)
            old = old_logp.reshape(-1)[live].to(device)
            a = adv.reshape(-1)[live].to(device)
            ones = torch.ones_like(a)
            for _ in range(cfg.ppo_epochs):
                dist, logp, loss, pg_loss, clip_frac, entropy, kl = policy_objective(
                    policy, reference, (ctx_i, ctx_s, ctx_t), chunks, std_range, cfg,
                    lambda lp: masked_clipped_loss(lp, old, a, ones, cfg.clip_eps_low, cfg.clip_eps_high))
                bc = torch.zeros((), device=device)
                if bc_ds is not None:
                    batch = bc_ds.batch(rng.integers(0, len(bc_ds), size=b))
                    bc_mean = policy(batch["image"], batch["state"], to_policy_task[batch["task_index"]]).mean
                    bc = (bc_mean - batch["expert_actions"].to(device)).pow(2).mean()
                    loss = loss + cfg.bc_coef * bc
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(
                    [p for p in policy.parameters() if p.requires_grad],
                    cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
                optimizer.step()
                with torch.no_grad():
                    stats["clip_frac"] += clip_frac / cfg.ppo_epochs
                    stats["approx_kl"] += float((old - logp).mean()) / cfg.ppo_epochs
                    for key, value in (("pg_loss", pg_loss), ("bc_loss", bc), ("kl", kl), ("loss", loss),
                                       ("entropy", entropy), ("grad_norm", grad_norm)):
                        stats[key] += float(value) / cfg.ppo_epochs
            action_std = float(dist.std.detach().mean())
        elapsed += time.time() - t0
        rows.append({
            "step": step + 1, "success_rate": float(success.float().mean()), "reward_mean": float(rewards.mean()),
            "groups_kept": int(kept.sum()), "groups_dropped": int((~kept).sum()), "episode_chunks": int(live.sum()),
            "vetoed": vetoed,
            **stats, "action_std": action_std, "seconds_per_step": time.time() - t0, "seconds": elapsed,
        })
        bar.update(1)
        done = step + 1
        if cfg.checkpoint_interval and (done % cfg.checkpoint_interval == 0 or done == cfg.steps):
            save_checkpoint(ckpt_path, policy, optimizer, {"step": done, "seconds": elapsed, "rows": rows})
    bar.close()

    policy.eval()
    for name, p in policy.named_parameters():
        p.requires_grad_(name not in policy._frozen_by_design)
    policy.save_pretrained(out_dir)
    write_curves(out_dir, rows, CURVE_FIELDS)
    tenth = max(1, len(rows) // 10)
    summary = {
        "mode": "episode", "steps": cfg.steps, "seconds": elapsed, "seconds_per_step": elapsed / max(1, len(rows)),
        "horizon": horizon, "threshold": threshold,
        "start_tasks": list(data.tasks) if start_tasks is None else [data.tasks[t] for t in start_tasks],
        "imagined_success_first": float(np.mean([r["success_rate"] for r in rows[:tenth]])) if rows else None,
        "imagined_success_last": float(np.mean([r["success_rate"] for r in rows[-tenth:]])) if rows else None,
        "groups_dropped": int(sum(r["groups_dropped"] for r in rows)), "groups_total": b * len(rows),
        "trainable_parameters": len(trainable), "shuffle_advantages": cfg.shuffle_advantages,
        "veto_world_model": veto_world_model is not None, "environment": cfg.environment,
        #: episodes run in the real simulator during training (environment "simulator"), and their layouts
        "simulator_episodes": b * g * len(rows) if simulator is not None else 0,
        "simulator_seeds": list(cfg.simulator_seeds()) if simulator is not None else None,
        #: imagined successes the veto world model's replay did not reproduce (counted as failures)
        "vetoed_successes": int(sum(r.get("vetoed", 0) for r in rows)),
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary

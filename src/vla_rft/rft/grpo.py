"""GRPO with verified rewards in the learned world model (VLA-RFT, arXiv 2510.00406).

One step, top to bottom:

1. **sample starts** - B start states (frame, proprio, instruction, the expert's executed and
   clean chunks) from the training split, drawn from ``rng(seed, step)`` so a resumed run sees the
   same starts as an uninterrupted one;
2. **generate** - G chunks per start from the current policy (unbounded Gaussian samples; their
   log-probs are the "old" log-probs). The env and the world model see them clipped to [-1, 1];
3. **imagine** - all B*G policy chunks and the B expert chunks roll out in the world model in one
   batched call;
4. **reward** - ``-(w_l1 * L1 + w_perc * (1 - SSIM))`` between each policy rollout and the
   expert's rollout from the same start, averaged over the K frames;
5. **advantages** - ``(r - mean_group) / (std_group + eps)`` within each group of G;
6. **loss** - clipped-ratio policy gradient, minus an entropy bonus, plus optional KL (k1/k2/k3) to the
   frozen base (no reference model when ``kl_beta == 0``) and a small BC regulariser (MSE of the
   mean to the expert's clean chunk); ``ppo_epochs`` passes, grad-norm clipping, separate
   learning rates for the std head.

Logged per step (CSV/JSON): reward mean/std, within-group reward std, clip fraction, approx KL,
entropy, mean action std, grad norm, seconds per step.

Under torchrun the B starts split over the ranks (each group of G stays whole on one rank, so
rewards and advantages need no communication); each rank keeps its slice of the global draws,
gradients are averaged before clipping, and rank 0 alone writes checkpoints and the model.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from vla_rft import distributed
from vla_rft.checkpointing import load_checkpoint, save_checkpoint
from vla_rft.config import CommonConfig
from vla_rft.data import LoadedDataset
from vla_rft.data.torch_dataset import ChunkDataset
from vla_rft.errors import CompatibilityError
from vla_rft.policy.modeling import VLAPolicy
from vla_rft.rft.configuration import RFTConfig
from vla_rft.rft.groups import exploration_range, imagine_groups
from vla_rft.rft.rewards import group_advantages, verified_reward
from vla_rft.tasks import TASKS, instruction_index
from vla_rft.training import write_curves
from vla_rft.world_model.modeling import WorldModel

CHECKPOINT_NAME = "rft_checkpoint.safetensors"  # stage-specific: stages may share a checkpoint directory
CURVE_FIELDS = ("step", "reward_mean", "reward_std", "group_reward_std", "loss", "pg_loss", "bc_loss", "kl",
                "clip_frac", "approx_kl", "entropy", "action_std", "grad_norm", "seconds_per_step", "seconds")
_SALT = 9_300  # separates the RFT start-state stream from other stages' streams of the same seed


def dataset_to_policy_tasks(policy: VLAPolicy, data: LoadedDataset) -> torch.Tensor:
    """The policy's task index of each dataset task index, matched by instruction text.

    The two may list the same tasks in another order (a policy trained on a dataset recorded with
    ``sim.tasks`` in another order); a dataset task the policy was not trained on is refused.
    """
    def find(task: str, text: str) -> int | None:  # the dataset's wording, else the task's (any wording)
        if text in policy.instructions:
            return policy.instructions.index(text)
        return instruction_index(policy.instructions, task) if task in TASKS else None

    order = [find(t, i) for t, i in zip(data.tasks, data.instructions)]
    missing = [t for t, i in zip(data.tasks, order) if i is None]
    if missing:
        raise CompatibilityError(f"the dataset has task(s) {missing} whose instructions the policy was not "
                                 f"trained on (the policy knows {policy.instructions}); use a policy trained "
                                 "on this task suite")
    return torch.as_tensor(order, dtype=torch.long)


def check_compatible(policy: VLAPolicy, world_model: WorldModel, data: LoadedDataset) -> None:
    """Raise a named error when the three artifacts were not made for each other."""
    dataset_to_policy_tasks(policy, data)
    checks = [
        ("image size", policy.image_size, world_model.image_size, data.image_size),
        ("chunk length", policy.chunk_len, world_model.chunk_len, data.info.get("chunk_len", policy.chunk_len)),
        ("action dimension", policy.action_dim, world_model.action_dim, data.action_dim),
    ]
    for what, p, w, d in checks:
        if not p == w == d:
            raise CompatibilityError(f"{what} mismatch: policy {p}, world model {w}, dataset {d}; "
                                     "train the world model and the policy on the same dataset")


def clipped_policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, eps_low: float,
                        eps_high: float) -> tuple[torch.Tensor, float]:
    """PPO/GRPO surrogate ``-mean(min(r * A, clip(r, 1 - eps_low, 1 + eps_high) * A))`` and the clip fraction."""
    ratio = torch.exp(logp - old_logp)
    clipped = ratio.clamp(1 - eps_low, 1 + eps_high)
    loss = -torch.min(ratio * adv, clipped * adv).mean()
    with torch.no_grad():
        clip_frac = float(((ratio < 1 - eps_low) | (ratio > 1 + eps_high)).float().mean())
    return loss, clip_frac


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str) -> torch.Tensor:
    """Mean estimate of KL(pi || ref) from samples of pi (Schulman's k1, k2, k3; TRL uses k3).

    With ``log_r = ref_logp - logp``: k1 = -log_r (unbiased, high variance, can be negative),
    k2 = log_r^2 / 2 (biased, low variance), k3 = exp(log_r) - log_r - 1 (unbiased, >= 0).
    """
    log_r = ref_logp - logp
    if estimator == "k1":
        return (-log_r).mean()
    if estimator == "k2":
        return (0.5 * log_r.pow(2)).mean()
    if estimator == "k3":
        return (torch.exp(log_r) - log_r - 1).mean()
    raise ValueError(f"unknown KL estimator {estimator!r}; allowed: k1, k2, k3")


def rft_optimizer(policy: VLAPolicy, cfg: RFTConfig) -> tuple[VLAPolicy | None, list[str], torch.optim.AdamW]:
    """What both RFT modes train with: a frozen copy of the base when ``kl_beta > 0`` (else None), the
    names of the trainable parameters (``cfg.trainable``), and AdamW with the std head at ``lr_std``."""
    reference = None
    if cfg.kl_beta > 0:  # only then is a frozen copy of the base policy kept
        reference = copy.deepcopy(policy).eval()
        for p in reference.parameters():
            p.requires_grad_(False)
    trainable = _set_trainable(policy, cfg.trainable)
    std_params = policy.std_parameters()
    std_ids = {id(p) for p in std_params}
    mean_params = [p for p in policy.parameters() if p.requires_grad and id(p) not in std_ids]
    optimizer = torch.optim.AdamW([
        {"params": mean_params, "lr": cfg.lr},
        {"params": std_params, "lr": cfg.lr_std},
    ], weight_decay=cfg.weight_decay)
    return reference, trainable, optimizer


def policy_objective(policy, reference, inputs: tuple, chunks: torch.Tensor, std_range, cfg: RFTConfig,
                     surrogate) -> tuple:
    """One pass of the clipped objective both RFT modes minimise, before the BC regulariser.

    ``inputs`` = (images, states, tasks) of the sampled ``chunks``; ``surrogate(logp)`` returns the
    clipped policy-gradient loss and clip fraction (per sample in chunk mode, masked per chunk in
    episode mode). Adds the entropy bonus (per action dimension) and, with a ``reference``
    policy, ``kl_beta`` times the KL estimate. Returns (dist, logp, loss, pg_loss, clip_frac, entropy, kl).
    """
    dist = policy(*inputs, std_range=std_range)
    logp = dist.log_prob(chunks)
    pg_loss, clip_frac = surrogate(logp)
    entropy = dist.entropy().mean()
    loss = pg_loss - cfg.entropy_coef * entropy / (chunks.shape[1] * chunks.shape[2])
    kl = torch.zeros((), device=logp.device)
    if reference is not None:
        with torch.no_grad():
            ref_logp = reference(*inputs, std_range=std_range).log_prob(chunks)
        kl = kl_estimate(logp, ref_logp, cfg.kl_estimator)
        loss = loss + cfg.kl_beta * kl
    return dist, logp, loss, pg_loss, clip_frac, entropy, kl


def _set_trainable(policy: VLAPolicy, which: str) -> list[str]:
    """Freeze what RFT does not train; returns the names of trainable parameters."""
    heads = ("mean_head", "std_head")
    trunk = heads + ("trunk", "action_queries")
    if not hasattr(policy, "_frozen_by_design"):  # what the policy itself keeps frozen stays frozen
        policy._frozen_by_design = {n for n, p in policy.named_parameters() if not p.requires_grad}
    for name, p in policy.named_parameters():
        if name in policy._frozen_by_design:
            continue
        if which == "all":
            p.requires_grad_(True)
        elif which == "trunk_and_heads":
            p.requires_grad_(name.startswith(trunk))
        elif which == "heads":
            p.requires_grad_(name.startswith(heads))
        else:
            raise ValueError(f"unknown rft.trainable {which!r}")
    return [n for n, p in policy.named_parameters() if p.requires_grad]


def train_grpo(cfg: RFTConfig, common: CommonConfig, data: LoadedDataset, world_model: WorldModel,
               policy: VLAPolicy, out_dir: Path, checkpoint_dir: Path, resume: bool = False,
               progress: bool = True) -> dict:
    """Fine-tune ``policy`` in place with GRPO in ``world_model``; writes the model and curves to ``out_dir``."""
    check_compatible(policy, world_model, data)
    to_policy_task = dataset_to_policy_tasks(policy, data)
    ctx = distributed.init(common.device)
    part = ctx.shard(cfg.batch_starts, "rft.batch_starts")
    std_range = exploration_range(cfg)  # passed to every forward: the saved policy keeps its own range
    out_dir, checkpoint_dir = Path(out_dir), Path(checkpoint_dir)
    device = torch.device(common.device)
    torch.set_num_threads(common.num_threads)
    torch.manual_seed(common.seed)
    np.random.seed(common.seed)
    policy.to(device).train()
    world_model.to(device).eval()
    for p in world_model.parameters():
        p.requires_grad_(False)
    reference, trainable, optimizer = rft_optimizer(policy, cfg)

    ds = ChunkDataset(data, "train", chunk_len=policy.chunk_len)
    b, g, k = cfg.batch_starts, cfg.group_size, policy.chunk_len
    rows: list[dict] = []
    start_step, elapsed = 0, 0.0
    ckpt_path = checkpoint_dir / CHECKPOINT_NAME
    if resume and ckpt_path.exists():
        meta = load_checkpoint(ckpt_path, policy, optimizer)
        start_step, elapsed, rows = meta["step"], meta["seconds"], meta["rows"]

    bar = tqdm(total=cfg.steps, initial=start_step, desc="rft", disable=not progress or not sys.stderr.isatty(),
               leave=False)
    for step in range(start_step, cfg.steps):
        t0 = time.time()
        # 1. sample starts
        rng = np.random.default_rng((common.seed, _SALT, step))
        starts = rng.integers(0, len(ds), size=b)
        batch = ds.batch(starts[part] if ctx.distributed else starts)
        batch["task_index"] = to_policy_task[batch["task_index"]]  # the policy's instruction of each start
        images, states, tasks = (batch[key].to(device) for key in ("image", "state", "task_index"))

        # 2. generate and 3. imagine (the world model sees executed, i.e. clipped, actions)
        gen = torch.Generator(device="cpu").manual_seed(int(rng.integers(2**62)))
        noise = None
        if ctx.distributed:  # this rank's groups' share of the global batch's draws
            noise = torch.randn((b * g, k, policy.action_dim), generator=gen)[part.start * g:part.stop * g]
        groups = imagine_groups(policy, world_model, batch, g, gen, std_range, device, noise)
        images_g, states_g, tasks_g, chunks, old_logp = (groups.images, groups.states, groups.tasks, groups.chunks,
                                                         groups.old_logp)
        if cfg.reward_target == "expert_imagined":
            target = groups.expert_frames
        else:
            target = batch["future_images"].to(device).float() / 255.0

        # 4. reward and 5. advantages
        rewards = verified_reward(groups.policy_frames, target, cfg)  # (B, G)
        adv = group_advantages(rewards, cfg.advantage_eps)
        if cfg.shuffle_advantages:
            perm = torch.argsort(torch.rand(b, g, generator=gen), dim=1)
            perm = (perm[part] if ctx.distributed else perm).to(device)
            adv = torch.gather(adv, 1, perm)
        adv = adv.reshape(-1)

        # 6. loss, ppo_epochs passes over the same samples
        stats = {"clip_frac": 0.0, "approx_kl": 0.0, "pg_loss": 0.0, "bc_loss": 0.0, "kl": 0.0, "loss": 0.0,
                 "entropy": 0.0, "grad_norm": 0.0}
        for _ in range(cfg.ppo_epochs):
            dist, logp, loss, pg_loss, clip_frac, entropy, kl = policy_objective(
                policy, reference, (images_g, states_g, tasks_g), chunks, std_range, cfg,
                lambda lp: clipped_policy_loss(lp, old_logp, adv, cfg.clip_eps_low, cfg.clip_eps_high))
            bc = torch.zeros((), device=device)
            if cfg.bc_coef > 0:
                bc_mean = policy(images, states, tasks).mean
                bc = (bc_mean - batch["expert_actions"].to(device)).pow(2).mean()
                loss = loss + cfg.bc_coef * bc
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            ctx.average_gradients(policy.parameters())
            grad_norm = torch.nn.utils.clip_grad_norm_(
                [p for p in policy.parameters() if p.requires_grad], cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
            optimizer.step()
            with torch.no_grad():
                stats["clip_frac"] += clip_frac
                stats["approx_kl"] += float((old_logp - logp).mean())
                for key, value in (("pg_loss", pg_loss), ("bc_loss", bc), ("kl", kl), ("loss", loss),
                                   ("entropy", entropy), ("grad_norm", grad_norm)):
                    stats[key] += float(value)
        stats = {key: value / cfg.ppo_epochs for key, value in stats.items()}
        action_std = float(dist.std.detach().mean())
        if ctx.distributed:  # global values: rewards gathered, means of equal shares averaged
            rewards = ctx.gather(rewards)
            names = [key for key in stats if key != "grad_norm"]  # the norm of averaged gradients is global already
            *values, action_std = ctx.mean([stats[key] for key in names] + [action_std])
            stats.update(zip(names, values))
        elapsed += time.time() - t0
        row = {
            "step": step + 1, "reward_mean": float(rewards.mean()), "reward_std": float(rewards.std()),
            "group_reward_std": float(rewards.std(dim=1).mean()), **stats,
            "action_std": action_std, "seconds_per_step": time.time() - t0, "seconds": elapsed,
        }
        rows.append(row)
        bar.update(1)
        bar.set_postfix(reward=f"{row['reward_mean']:.4f}", kl=f"{row['approx_kl']:.2e}")
        done = step + 1
        if ctx.is_main and cfg.checkpoint_interval and (done % cfg.checkpoint_interval == 0 or done == cfg.steps):
            save_checkpoint(ckpt_path, policy, optimizer, {"step": done, "seconds": elapsed, "rows": rows})
    bar.close()

    policy.eval()
    for name, p in policy.named_parameters():  # hand the policy back as it came: all trainable
        p.requires_grad_(name not in policy._frozen_by_design)
    if ctx.is_main:
        policy.save_pretrained(out_dir)
        write_curves(out_dir, rows, CURVE_FIELDS)
    first, last = rows[: max(1, len(rows) // 10)], rows[-max(1, len(rows) // 10):]
    summary = {
        "steps": cfg.steps, "seconds": elapsed, "seconds_per_step": elapsed / max(1, len(rows)),
        "reward_first": float(np.mean([r["reward_mean"] for r in first])) if rows else None,
        "reward_last": float(np.mean([r["reward_mean"] for r in last])) if rows else None,
        "group_reward_std": float(np.mean([r["group_reward_std"] for r in rows])) if rows else None,
        "trainable_parameters": len(trainable), "shuffle_advantages": cfg.shuffle_advantages,
    }
    if ctx.distributed:
        summary["world_size"] = ctx.world_size
    if ctx.is_main:
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary

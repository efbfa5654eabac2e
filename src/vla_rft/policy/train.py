"""Behaviour-cloning pretraining of the VLA policy on expert action chunks (the ``pretrain-policy`` stage).

Targets are the dataset's ``expert_action`` column (clean labels; half the episodes were *executed*
with DART noise, so their states cover recoveries, but the labels stay the expert's).

The loss (``policy.bc_loss``):

* ``mse_nll`` (default): MSE between the predicted mean and the expert chunk, plus the Gaussian
  NLL of the expert chunk under (detached mean, std) to fit the std head. With the std clamped
  to [0.08, 0.2], a plain NLL weights the mean's error by 1/std^2 and lets the std absorb it:
  early on the std sits at its upper clamp, the NLL's gradient on the mean is a rescaled MSE
  that fights the std term, and the mean underfits. Decoupling them keeps the mean a plain
  regression and the std an honest fit of the remaining error (what GRPO then explores with).
  The std head reads detached trunk features, so the NLL term never moves the mean's weights.
* ``l1_nll``: the same with L1 on the mean (ACT's choice; less pulled by saturated +-1 labels).
* ``nll``: the plain Gaussian NLL, for comparison.

Image augmentation (``policy.augmentation``) is off by default: with this fixed camera, DrQ-style
random shifts decouple image positions from the absolute hand position in the state, and cost
closed-loop success (see configuration.py).

Batches and augmentation shifts are drawn from ``numpy.random.default_rng((seed, salt, step))``,
so a run resumed from a checkpoint sees exactly the batches of an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from vla_rft import distributed
from vla_rft.checkpointing import load_checkpoint, save_checkpoint
from vla_rft.config import CommonConfig
from vla_rft.data import LoadedDataset
from vla_rft.data.torch_dataset import ChunkDataset
from vla_rft.policy.configuration import PolicyConfig
from vla_rft.policy.modeling import VLAPolicy
from vla_rft.training import decay_param_groups, scheduled_lr, write_curves

CHECKPOINT_NAME = "policy_checkpoint.safetensors"  # stage-specific: stages may share a checkpoint directory
_SALT_BATCH = 7_100  # separates the BC batch stream from other stages' streams of the same seed
_SALT_EVAL = 7_101


def behaviour_cloning_loss(model: VLAPolicy, images: Tensor, states: Tensor, instruction: Any,
                           expert_chunk: Tensor, loss: str = "mse_nll", std_weight: float = 1.0
                           ) -> tuple[Tensor, dict[str, float]]:
    """BC loss of ``model`` on expert chunks (B, K, A); also usable as GRPO's BC regulariser.

    Returns ``(loss, stats)`` with stats ``mse`` (of the mean), ``nll`` (per action dimension,
    mean detached for the ``*_nll`` losses) and ``std`` (mean std).
    """
    dist = model(images, states, instruction)
    target = expert_chunk.to(dist.mean.device, torch.float32)
    dims = target.shape[1] * target.shape[2]
    mse = (dist.mean - target).pow(2).mean()
    if loss == "nll":
        nll = -dist.log_prob(target).mean() / dims
        total = nll
    elif loss in ("mse_nll", "l1_nll"):
        nll = -type(dist)(dist.mean.detach(), dist.std).log_prob(target).mean() / dims
        fit = mse if loss == "mse_nll" else (dist.mean - target).abs().mean()
        total = fit + std_weight * nll
    else:
        raise ValueError(f"unknown BC loss {loss!r}; allowed values: mse_nll, l1_nll, nll")
    return total, {"mse": float(mse.detach()), "nll": float(nll.detach()), "std": float(dist.std.detach().mean())}


def random_shift(images: Tensor, pad: int, rng: np.random.Generator, part: tuple[slice, int] | None = None) -> Tensor:
    """DrQ-style random shift of uint8 (B, 3, H, W) images by up to ``pad`` px (edge-replicated).

    ``part=(slice, global_batch)``: the images are that slice of a global batch; the shifts are
    drawn for the global batch and sliced, so a rank shifts its images as one process would.
    """
    if pad <= 0:
        return images
    b, _, h, w = images.shape
    rows_of, draw = (slice(None), b) if part is None else part
    dy = torch.from_numpy(rng.integers(-pad, pad + 1, size=(draw, 1))[rows_of])
    dx = torch.from_numpy(rng.integers(-pad, pad + 1, size=(draw, 1))[rows_of])
    rows = (torch.arange(h)[None] + dy).clamp_(0, h - 1)  # (B, H)
    cols = (torch.arange(w)[None] + dx).clamp_(0, w - 1)  # (B, W)
    out = images[torch.arange(b)[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # (B, H, W, 3)
    return out.permute(0, 3, 1, 2).contiguous()


def learning_rate(cfg: PolicyConfig, step: int) -> float:
    """Linear warmup, then cosine decay to ``lr * min_lr_ratio`` (or constant)."""
    return scheduled_lr(cfg.lr, step, warmup_steps=cfg.warmup_steps, total_steps=cfg.steps,
                        schedule=cfg.lr_schedule, min_lr_ratio=cfg.min_lr_ratio)


def build_optimizer(model: VLAPolicy, cfg: PolicyConfig) -> torch.optim.AdamW:
    """AdamW over the policy's trainable parameters (never the frozen text encoder, which is not a submodule);
    the action queries are not decayed."""
    return torch.optim.AdamW(decay_param_groups(model, cfg.weight_decay, no_decay_names=("action_queries",)),
                             lr=cfg.lr, betas=(0.9, 0.999))


@torch.no_grad()
def _evaluate(model: VLAPolicy, ds: ChunkDataset, indices: np.ndarray, cfg: PolicyConfig) -> dict[str, float]:
    """Validation loss (same formula as training, no augmentation) over a fixed set of chunks."""
    was_training = model.training
    model.eval()
    totals = {"loss": 0.0, "mse": 0.0, "nll": 0.0}
    for lo in range(0, len(indices), 256):
        batch = ds.batch(indices[lo:lo + 256])
        loss, stats = behaviour_cloning_loss(model, batch["image"], batch["state"], batch["task_index"],
                                             batch["expert_actions"], cfg.bc_loss, cfg.std_loss_weight)
        n = len(batch["image"])
        totals["loss"] += float(loss) * n
        totals["mse"] += stats["mse"] * n
        totals["nll"] += stats["nll"] * n
    model.train(was_training)
    return {k: v / len(indices) for k, v in totals.items()}


CURVE_FIELDS = ("step", "loss", "mse", "nll", "val_loss", "val_mse", "val_nll", "lr", "std_mean", "seconds")


def train_policy_bc(cfg: PolicyConfig, common: CommonConfig, data: LoadedDataset, out_dir: Path,
                    checkpoint_dir: Path, resume: bool = False, progress: bool = True) -> dict:
    """Behaviour-clone the VLA policy on ``data``; write the model, curves and a summary into ``out_dir``.

    Checkpoints (model, optimizer, RNG states, step, curves) go to ``checkpoint_dir`` every
    ``cfg.checkpoint_interval`` steps, atomically; ``resume=True`` continues from the latest one
    and ends with the same weights and losses as an uninterrupted run. Returns the summary dict.
    Under torchrun each rank trains on its slice of every global batch (``cfg.batch_size``); rank 0
    alone evaluates on val and writes checkpoints, the model, curves and the summary file.
    """
    out_dir, checkpoint_dir = Path(out_dir), Path(checkpoint_dir)
    torch.set_num_threads(common.num_threads)
    torch.manual_seed(common.seed)
    np.random.seed(common.seed)
    device = torch.device(common.device)
    ctx = distributed.init(common.device)
    part = ctx.shard(cfg.batch_size, "policy.batch_size")

    train_ds = ChunkDataset(data, "train", common.chunk_len)
    try:
        val_ds: ChunkDataset | None = ChunkDataset(data, "val", common.chunk_len)
    except ValueError:  # a tiny dataset may have no validation episode long enough
        val_ds = None
    val_idx = None
    if val_ds is not None:
        rng = np.random.default_rng((common.seed, _SALT_EVAL))
        val_idx = np.sort(rng.permutation(len(val_ds))[:cfg.eval_chunks])

    model = VLAPolicy(cfg, image_size=data.image_size, chunk_len=common.chunk_len, action_dim=data.action_dim,
                      state_dim=data.state_dim, instructions=data.instructions)
    train_rows = np.concatenate([np.arange(e["dataset_from_index"], e["dataset_to_index"])
                                 for e in data.episodes_in("train")])
    model.set_state_normalization(data.states[train_rows].mean(0), data.states[train_rows].std(0))
    model.to(device).train()
    optimizer = build_optimizer(model, cfg)

    start_step, elapsed_before, rows, last_loss = 0, 0.0, [], float("nan")
    acc = {"loss": 0.0, "mse": 0.0, "nll": 0.0, "std": 0.0, "n": 0}
    ckpt_path = checkpoint_dir / CHECKPOINT_NAME
    if resume and ckpt_path.exists():
        meta = load_checkpoint(ckpt_path, model, optimizer)
        start_step, elapsed_before, rows, acc = meta["step"], meta["seconds"], meta["rows"], meta["acc"]
        last_loss = meta["last_loss"]

    t0 = time.perf_counter()
    val: dict[str, float] | None = None
    bar = tqdm(total=cfg.steps, initial=start_step, desc="policy BC", unit="step",
               disable=not (progress and sys.stderr.isatty()))
    for step in range(start_step, cfg.steps):
        lr = learning_rate(cfg, step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        rng = np.random.default_rng((common.seed, _SALT_BATCH, step))
        indices = rng.integers(0, len(train_ds), cfg.batch_size)
        batch = train_ds.batch(indices[part] if ctx.distributed else indices)
        images = batch["image"]
        if cfg.augmentation == "shift":
            images = random_shift(images, cfg.shift_pad, rng, (part, cfg.batch_size) if ctx.distributed else None)
        loss, stats = behaviour_cloning_loss(model, images, batch["state"], batch["task_index"],
                                             batch["expert_actions"], cfg.bc_loss, cfg.std_loss_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        ctx.average_gradients(model.parameters())
        if cfg.grad_clip > 0:  # the sigma net is clipped on its own: its NLL gradients never crowd out the mean's
            torch.nn.utils.clip_grad_norm_(model.mean_parameters(), cfg.grad_clip)
            torch.nn.utils.clip_grad_norm_(model.std_parameters(), cfg.grad_clip)
        optimizer.step()
        last_loss = float(loss.detach())
        if ctx.distributed:  # the global batch's values: means of the ranks' equal shares
            last_loss, stats["mse"], stats["nll"], stats["std"] = ctx.mean(
                [last_loss, stats["mse"], stats["nll"], stats["std"]])
        if not math.isfinite(last_loss):
            raise FloatingPointError(f"policy BC loss became {last_loss} at step {step}; lower policy.lr")
        acc = {"loss": acc["loss"] + last_loss, "mse": acc["mse"] + stats["mse"], "nll": acc["nll"] + stats["nll"],
               "std": acc["std"] + stats["std"], "n": acc["n"] + 1}
        done = step + 1
        is_last = done == cfg.steps
        do_eval = ctx.is_main and val_ds is not None and (is_last or (cfg.eval_interval and done % cfg.eval_interval == 0))
        if do_eval or is_last or done % cfg.log_interval == 0:
            val = _evaluate(model, val_ds, val_idx, cfg) if do_eval else None
            n = max(acc["n"], 1)
            rows.append({
                "step": done, "loss": acc["loss"] / n, "mse": acc["mse"] / n, "nll": acc["nll"] / n,
                "val_loss": val and val["loss"], "val_mse": val and val["mse"], "val_nll": val and val["nll"],
                "lr": lr, "std_mean": acc["std"] / n,
                "seconds": round(elapsed_before + time.perf_counter() - t0, 3),
            })
            acc = {"loss": 0.0, "mse": 0.0, "nll": 0.0, "std": 0.0, "n": 0}
            bar.set_postfix(loss=f"{rows[-1]['loss']:.4f}", **({"val_mse": f"{val['mse']:.4f}"} if val else {}))
        if ctx.is_main and cfg.checkpoint_interval and done % cfg.checkpoint_interval == 0 and not is_last:
            write_curves(out_dir, rows, CURVE_FIELDS)  # curves so far, to watch a long run
            save_checkpoint(ckpt_path, model, optimizer, {
                "step": done, "seconds": elapsed_before + time.perf_counter() - t0, "rows": rows, "acc": acc,
                "last_loss": last_loss})
        bar.update(1)
    bar.close()

    seconds = elapsed_before + time.perf_counter() - t0
    model.eval()
    if ctx.is_main:
        model.save_pretrained(out_dir)
        write_curves(out_dir, rows, CURVE_FIELDS)
    last_val = next((r for r in reversed(rows) if r["val_loss"] is not None), None)
    summary = {
        "steps": cfg.steps,
        "resumed_from_step": start_step,
        "final_train_loss": last_loss,  # the loss of the very last step (exact; equal across resumes)
        "final_train_loss_avg": rows[-1]["loss"] if rows else None,  # averaged over the last log interval
        "final_train_mse": rows[-1]["mse"] if rows else None,
        "final_val_loss": last_val and last_val["val_loss"],
        "final_val_mse": last_val and last_val["val_mse"],
        "final_std_mean": rows[-1]["std_mean"] if rows else None,
        "seconds": round(seconds, 2),
        "num_parameters": model.num_parameters(),
        "train_chunks": len(train_ds),
        "val_chunks": 0 if val_ds is None else len(val_idx),
        "device": str(device),
    }
    if not ctx.is_main:
        return summary
    if ctx.distributed:
        summary["world_size"] = ctx.world_size
    (out_dir / "bc_summary.json").write_text(json.dumps(summary, indent=2))
    if cfg.checkpoint_interval:  # the finished state, so a later resume=True is a no-op
        save_checkpoint(ckpt_path, model, optimizer, {"step": cfg.steps, "seconds": seconds, "rows": rows, "acc": acc,
                "last_loss": last_loss})
    return summary

"""Train the world model on the offline dataset: AdamW, seeded data order, exact resume.

The batch at step ``s`` and the future frames it decodes are a function of ``(seed, s)`` only, and
a checkpoint holds the model, the optimiser, the scheduler, every RNG and the curve so far, so a
run resumed from a checkpoint ends with the same weights as an uninterrupted one.

    from vla_rft.world_model.train import train_world_model
    summary = train_world_model(cfg.world_model, cfg.common, load_dataset(path), out_dir, ckpt_dir)
"""

from __future__ import annotations

import math
import random
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vla_rft import distributed
from vla_rft.checkpointing import load_checkpoint, save_checkpoint
from vla_rft.config import CommonConfig
from vla_rft.data import LoadedDataset
from vla_rft.data.schema import DatasetValidationError
from vla_rft.data.torch_dataset import ChunkDataset
from vla_rft.training import decay_param_groups, scheduled_lr, write_curves
from vla_rft.world_model.configuration import WorldModelConfig
from vla_rft.world_model.modeling import WorldModel, WorldModelOutput

CHECKPOINT_NAME = "world_model_checkpoint.safetensors"
_DATA_STREAM, _FRAME_STREAM = 101, 102  # seed-sequence tags: data order, decoded frames


def moving_mask(target: torch.Tensor, context: torch.Tensor, threshold: float) -> torch.Tensor:
    """Pixels whose ground truth differs from the context frame by more than ``threshold``.

    ``target`` (..., 3, H, W) and ``context`` broadcastable to it, floats in [0, 1]; returns a float
    mask (..., 1, H, W): 1 where the max over channels of the absolute difference exceeds it.
    """
    return ((target - context).abs().amax(dim=-3, keepdim=True) > threshold).float()


def batch_indices(seed: int, step: int, batch_size: int, num_items: int) -> np.ndarray:
    """Items of the batch at ``step``: consecutive slices of per-epoch permutations seeded by (seed, epoch)."""
    positions = np.arange(step * batch_size, (step + 1) * batch_size, dtype=np.int64)
    epochs, offsets = positions // num_items, positions % num_items
    out = np.empty(batch_size, dtype=np.int64)
    for epoch in np.unique(epochs):
        perm = np.random.default_rng([seed, _DATA_STREAM, int(epoch)]).permutation(num_items)
        sel = epochs == epoch
        out[sel] = perm[offsets[sel]]
    return out


def frame_selection(seed: int, step: int, batch_size: int, chunk_len: int, count: int, chunk: int = 0) -> torch.Tensor:
    """Which future frames each chunk of the batch at ``step`` decodes: (B, count), sorted, distinct.
    ``chunk``: the chunk's place in an unrolled sequence (0: the first, the only one without unrolling)."""
    if count <= 0 or count >= chunk_len:
        return torch.arange(chunk_len).expand(batch_size, chunk_len).clone()
    rng = np.random.default_rng([seed, _FRAME_STREAM, step] + ([chunk] if chunk else []))
    picks = np.sort(np.argsort(rng.random((batch_size, chunk_len)), axis=1)[:, :count], axis=1)
    return torch.from_numpy(picks)


def training_batch(ds: ChunkDataset, indices: np.ndarray) -> dict[str, torch.Tensor]:
    """``ChunkDataset.batch`` plus ``future_states`` (B, K, S): the proprio state after each action."""
    batch = ds.batch(indices)
    rows = ds.starts[np.asarray(indices)][:, None] + np.arange(1, ds.chunk_len + 1)
    batch["future_states"] = torch.from_numpy(ds.data.states[rows])
    return batch


def world_model_loss(out: WorldModelOutput, batch: dict[str, torch.Tensor], cfg: WorldModelConfig,
                     model: WorldModel, ctx: distributed.Context | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Moving-pixel-weighted L1 + MSE on the decoded frames, plus the state losses.

    The pixel loss is normalised by the weight summed over the whole batch; with ``ctx`` spanning
    several ranks that sum is all-reduced (and divided by the world size, since gradients are
    averaged), so the ranks' mean loss is the one-process loss of the global batch.
    """
    device = out.frames.device
    b, n = out.frame_index.shape
    idx = out.frame_index.to(batch["future_images"].device)
    target = batch["future_images"][torch.arange(b)[:, None], idx].to(device).float() / 255.0
    context = batch["image"].to(device).float()[:, None] / 255.0
    weight = 1.0 + cfg.moving_weight * moving_mask(target, context, cfg.moving_threshold)
    err = out.frames - target
    per_pixel = err.abs() + cfg.mse_weight * err.square()
    if ctx is not None and ctx.distributed:
        pixel = (weight * per_pixel).sum() / (ctx.sum(weight.sum()) * 3 / ctx.world_size)
    else:
        pixel = (weight * per_pixel).sum() / (weight.sum() * 3)
    state_norm = (batch["state"].to(device) - model.state_mean) / model.state_std
    future_norm = (batch["future_states"].to(device) - model.state_mean) / model.state_std
    state = (out.states_norm - future_norm).square().mean() + (out.state_estimate_norm - state_norm).square().mean()
    loss = pixel + cfg.state_loss_weight * state
    return loss, {"pixel": float(pixel.detach()), "state": float(state.detach())}


def unrolled_loss(model: WorldModel, batch: dict[str, torch.Tensor], frames: list[torch.Tensor], cfg: WorldModelConfig,
                  ctx: distributed.Context | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """:func:`world_model_loss` over ``len(frames)`` chained chunks, averaged over the chunks (one chunk:
    exactly :func:`world_model_loss` of the batch).

    ``batch`` holds sequences of ``len(frames) * K`` steps (:func:`training_batch` of a
    :class:`ChunkDataset` with that chunk length); ``frames[j]`` (B, F) are chunk j's decoded frames.
    Chunk 0 starts from the recorded frame and state; chunk j > 0 from chunk j-1's predicted last frame
    (rounded to 8 bits with a straight-through gradient, as :meth:`WorldModel.rollout` feeds it back)
    and predicted state, so the gradient runs through the chain. Every chunk is scored against the
    recorded future, and its moving-pixel mask and state-estimate target are the recorded frame and
    state at its start. A chunk that feeds the next decodes its last frame (its last pick becomes K-1).
    """
    k, u = model.chunk_len, len(frames)
    image, state = batch["image"], batch["state"]
    total, parts = torch.zeros((), device=model.device), {"pixel": 0.0, "state": 0.0}
    for j in range(u):
        steps = slice(j * k, (j + 1) * k)
        truth = {"image": batch["image"] if j == 0 else batch["future_images"][:, j * k - 1],
                 "state": batch["state"] if j == 0 else batch["future_states"][:, j * k - 1],
                 "future_images": batch["future_images"][:, steps], "future_states": batch["future_states"][:, steps]}
        pick = frames[j]
        if j < u - 1:
            pick = pick.clone()
            pick[:, -1] = k - 1
        out = model(image, batch["actions"][:, steps], state, pick)
        loss, chunk_parts = world_model_loss(out, truth, cfg, model, ctx)
        total = total + loss / u
        parts = {name: parts[name] + chunk_parts[name] / u for name in parts}
        if j < u - 1:
            last = out.frames[:, -1].clamp(0, 1)
            image = last + (torch.round(last * 255) / 255 - last).detach()
            state = out.states[:, -1]
    return total, parts


CURVE_FIELDS = ("step", "loss", "pixel_loss", "state_loss", "lr", "seconds")


def with_environment_state(data: LoadedDataset) -> LoadedDataset:
    """``data`` with each state row followed by its environment state (what a world model with
    ``world_model.environment_state`` trains on); a named error for data that does not record it."""
    if data.env_states is None:
        raise DatasetValidationError(
            f"{data.root}: world_model.environment_state needs the column 'observation.environment_state', which "
            "this dataset does not record (recorded by prepare-data / collect-rollouts since it exists: record anew)")
    return replace(data, states=np.concatenate([data.states, data.env_states], 1))


def build_model(cfg: WorldModelConfig, common: CommonConfig, data: LoadedDataset) -> WorldModel:
    """A fresh world model sized for ``data`` (:func:`with_environment_state` applied when
    ``cfg.environment_state``), with state statistics of its train split."""
    env_dim = data.env_states.shape[1] if cfg.environment_state else 0
    model = WorldModel(cfg, data.image_size, common.chunk_len, data.action_dim, data.state_dim, env_dim)
    rows = np.concatenate([np.arange(e["dataset_from_index"], e["dataset_to_index"]) for e in data.episodes_in("train")])
    model.set_state_normalization(data.states[rows].mean(0), data.states[rows].std(0))
    return model


def train_world_model(cfg: WorldModelConfig, common: CommonConfig, data: LoadedDataset, out_dir: Path,
                      checkpoint_dir: Path, resume: bool = False, progress: bool = True,
                      init_from: Path | None = None) -> dict[str, Any]:
    """Train on the train split; write the model (``save_pretrained``) and curves into ``out_dir``.

    ``init_from``: a saved world model to fine-tune (its weights and state statistics; its
    architecture must be ``cfg``'s), e.g. grounding an expert-trained model on policy rollouts.

    Checkpoints go to ``checkpoint_dir`` every ``cfg.checkpoint_interval`` steps and at the end;
    with ``resume=True`` training continues from the checkpoint there (if any). Returns a summary.
    Under torchrun each rank trains on its slice of every global batch (``cfg.batch_size`` is the
    global batch); only rank 0 writes checkpoints, the model and the curves.
    """
    from tqdm.auto import tqdm

    out_dir, checkpoint_dir = Path(out_dir), Path(checkpoint_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(common.num_threads)
    ctx = distributed.init(common.device)
    part = ctx.shard(cfg.batch_size, "world_model.batch_size")
    device = torch.device(common.device)
    torch.manual_seed(common.seed)
    np.random.seed(common.seed % 2**32)
    random.seed(common.seed)

    if cfg.environment_state:
        data = with_environment_state(data)
    unroll = cfg.unroll_chunks
    try:  # an item is a sequence of `unroll` chunks inside one episode (one chunk: today's items, same order)
        ds = ChunkDataset(data, "train", common.chunk_len * unroll)
    except ValueError:
        if unroll == 1:
            raise
        raise DatasetValidationError(
            f"{data.root}: world_model.unroll_chunks={unroll} needs train episodes longer than {unroll} chunks of "
            f"{common.chunk_len} steps ({unroll * common.chunk_len + 1} frames); this dataset has none") from None
    model = build_model(cfg, common, data).to(device)
    if init_from is not None:
        init = WorldModel.from_pretrained(init_from)
        if init.config.architecture() != cfg.architecture() or init.model_config() != model.model_config():
            raise ValueError(f"--init-from {init_from}: its architecture {init.model_config()} differs from this "
                             f"configuration's {model.model_config()}")
        model.load_state_dict(init.state_dict())
    optimizer = torch.optim.AdamW(decay_param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.99))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: scheduled_lr(
        1.0, step, warmup_steps=cfg.warmup_steps, total_steps=cfg.steps, schedule=cfg.lr_schedule,
        min_lr_ratio=cfg.min_lr_ratio))
    ckpt_path = checkpoint_dir / CHECKPOINT_NAME
    step, rows, elapsed, last_loss = 0, [], 0.0, float("nan")
    acc = {"loss": 0.0, "pixel": 0.0, "state": 0.0, "n": 0}
    if resume and ckpt_path.exists():
        meta = load_checkpoint(ckpt_path, model, optimizer, scheduler)
        if (meta["architecture"] != cfg.architecture() or meta["seed"] != common.seed
                or meta.get("unroll_chunks", 1) != unroll):  # written before the field: one chunk
            raise ValueError(f"checkpoint {ckpt_path} was written with another architecture, seed or "
                             "world_model.unroll_chunks; delete it or train without resume")
        step, rows, elapsed, acc, last_loss = (meta[k] for k in ("step", "curves", "seconds", "accumulator", "last_loss"))

    def checkpoint() -> None:
        if not ctx.is_main:
            return
        save_checkpoint(ckpt_path, model, optimizer, scheduler=scheduler, extra={
            "step": step, "curves": rows, "seconds": elapsed + time.time() - t0, "accumulator": acc,
            "last_loss": last_loss, "architecture": cfg.architecture(), "seed": common.seed, "unroll_chunks": unroll,
        })

    model.train()
    t0 = time.time()
    start_step = step
    bar = tqdm(total=cfg.steps, initial=step, desc="world-model", unit="step", leave=False,
               disable=not progress or not sys.stderr.isatty())
    while step < cfg.steps:
        indices = batch_indices(common.seed, step, cfg.batch_size, len(ds))
        frames = [frame_selection(common.seed, step, cfg.batch_size, common.chunk_len, cfg.train_frames, j)
                  for j in range(unroll)]
        if ctx.distributed:  # this rank's slice of the global batch and of its per-sample frame picks
            indices, frames = indices[part], [f[part] for f in frames]
        batch = training_batch(ds, indices)
        loss, parts = unrolled_loss(model, batch, frames, cfg, ctx)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        ctx.average_gradients(model.parameters())
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        step += 1
        last_loss = float(loss.detach())
        if ctx.distributed:  # the global batch's loss: the mean of the ranks' equal shares
            last_loss, parts["pixel"], parts["state"] = ctx.mean([last_loss, parts["pixel"], parts["state"]])
        if not math.isfinite(last_loss):
            raise FloatingPointError(f"world-model loss is {last_loss} at step {step}; lower world_model.lr")
        acc = {"loss": acc["loss"] + last_loss, "pixel": acc["pixel"] + parts["pixel"],
               "state": acc["state"] + parts["state"], "n": acc["n"] + 1}
        if step % cfg.log_interval == 0 or step == cfg.steps:
            n = acc["n"]
            rows.append({"step": step, "loss": acc["loss"] / n, "pixel_loss": acc["pixel"] / n,
                         "state_loss": acc["state"] / n, "lr": optimizer.param_groups[0]["lr"],
                         "seconds": round(elapsed + time.time() - t0, 3)})
            acc = {"loss": 0.0, "pixel": 0.0, "state": 0.0, "n": 0}
            bar.set_postfix(loss=f"{rows[-1]['loss']:.4f}")
        if cfg.checkpoint_interval and step % cfg.checkpoint_interval == 0 and step < cfg.steps:
            checkpoint()
        bar.update(1)
    bar.close()
    checkpoint()
    seconds = elapsed + time.time() - t0
    model.eval()
    if ctx.is_main:
        model.save_pretrained(out_dir)
        write_curves(out_dir, rows, CURVE_FIELDS)
    return {
        "steps": cfg.steps, "resumed_from_step": start_step if resume else None, "final_loss": last_loss,
        "final_logged_loss": rows[-1]["loss"] if rows else None, "train_seconds": round(seconds, 2),
        "train_chunks": len(ds), "unroll_chunks": unroll, "parameters": sum(p.numel() for p in model.parameters()),
        "device": str(device), **({"world_size": ctx.world_size} if ctx.distributed else {}),
    }

"""World-model fidelity on validation chunks, against two honest baselines, plus GIFs to look at.

For every horizon step 1..K: L1, MSE, PSNR and SSIM over the whole frame and over the *moving*
pixels (where the ground truth differs from the context frame by more than
``moving_threshold``: the arm, the object, the drawer; the static scene is free for any model
that copies the context). Baselines on the very same chunks: ``copy_last`` (repeat the context
frame) and ``shuffled_actions`` (the same model fed another chunk's actions: if it scores like
the model, the model ignores its actions).

``metrics.json``: ``{model|copy_last|shuffled_actions: {whole|moving: {per_step: {l1, mse, psnr,
ssim: [K floats]}, mean: {l1, mse, psnr, ssim}}}, moving_fraction: [K], targets: {...}, ...}``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vla_rft.data import LoadedDataset
from vla_rft.data.torch_dataset import ChunkDataset
from vla_rft.world_model.configuration import WorldModelConfig
from vla_rft.world_model.modeling import WorldModel

METHODS: tuple[str, ...] = ("model", "copy_last", "shuffled_actions")
REGIONS: tuple[str, ...] = ("whole", "moving")
METRICS: tuple[str, ...] = ("l1", "mse", "psnr", "ssim")
_EVAL_STREAM, _SHUFFLE_STREAM, _GIF_STREAM = 201, 202, 203
_MAX_PSNR = 60.0  # dB; a frame identical to its target would otherwise count as +inf


def derangement(n: int, seed: int) -> np.ndarray:
    """A seeded permutation of ``range(n)`` with no fixed point (n >= 2): chunk i gets chunk perm[i]'s actions."""
    if n < 2:
        raise ValueError(f"the shuffled-actions baseline needs at least 2 chunks, got {n}")
    order = np.random.default_rng([seed, _SHUFFLE_STREAM]).permutation(n)
    perm = np.empty(n, dtype=np.int64)
    perm[order] = np.roll(order, -1)  # a single cycle through a random order
    return perm


def _gaussian_band(n: int, win_size: int, sigma: float, device: torch.device) -> torch.Tensor:
    """(n - win + 1, n) matrix whose rows are the shifted 1-D Gaussian window ("valid" filtering)."""
    coords = torch.arange(win_size, dtype=torch.float32) - win_size // 2
    g = torch.exp(-(coords ** 2) / (2 * sigma ** 2))
    band = torch.zeros(n - win_size + 1, n)
    for i in range(n - win_size + 1):
        band[i, i:i + win_size] = g / g.sum()
    return band.to(device)


def ssim_map(x: torch.Tensor, y: torch.Tensor, win_size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-pixel SSIM (N, C, H-win+1, W-win+1) of images in [0, 1], exactly as ``pytorch_msssim.ssim``
    computes it before averaging (same window and constants), with the separable Gaussian as two
    band-matrix products: 4x faster on CPU than its grouped convolutions."""
    gh = _gaussian_band(x.shape[-2], win_size, sigma, x.device)
    gw = _gaussian_band(x.shape[-1], win_size, sigma, x.device)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return gh @ t @ gw.T

    c1, c2 = 0.01 ** 2, 0.03 ** 2
    mu_x, mu_y = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mu_x ** 2, blur(y * y) - mu_y ** 2, blur(x * y) - mu_x * mu_y
    return ((2 * mu_x * mu_y + c1) / (mu_x ** 2 + mu_y ** 2 + c1)) * ((2 * sxy + c2) / (sxx + syy + c2))


class _Accumulator:
    """Sums per horizon step; whole-frame metrics are per-frame means, moving metrics pool pixels."""

    def __init__(self, k: int):
        self.k = k
        self.frames = np.zeros(k)
        self.whole = {m: np.zeros(k) for m in METRICS}
        self.mov_pixels = np.zeros(k)  # moving pixels (x3 channels for l1/mse)
        self.mov_ssim_pixels = np.zeros(k)
        self.mov = {"l1": np.zeros(k), "mse": np.zeros(k), "ssim": np.zeros(k)}

    def add(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> None:
        """``pred``, ``target`` (B, K, 3, H, W) in [0, 1]; ``mask`` (B, K, 1, H, W)."""
        from pytorch_msssim import ssim

        b, k = pred.shape[:2]
        err = pred - target
        abs_err, sq_err = err.abs(), err.square()
        mse_frame = sq_err.flatten(2).mean(-1)  # (B, K)
        flat_p, flat_t = pred.flatten(0, 1), target.flatten(0, 1)
        ssim_frame = ssim(flat_p, flat_t, data_range=1.0, size_average=False).view(b, k)
        self.frames += b
        self.whole["l1"] += abs_err.flatten(2).mean(-1).sum(0).numpy()
        self.whole["mse"] += mse_frame.sum(0).numpy()
        self.whole["psnr"] += (-10 * torch.log10(mse_frame.clamp_min(10 ** (-_MAX_PSNR / 10)))).sum(0).numpy()
        self.whole["ssim"] += ssim_frame.sum(0).numpy()
        self.mov_pixels += mask.sum((0, 2, 3, 4)).numpy()
        self.mov["l1"] += (abs_err * mask).sum((0, 2, 3, 4)).numpy() / 3
        self.mov["mse"] += (sq_err * mask).sum((0, 2, 3, 4)).numpy() / 3
        smap = ssim_map(flat_p, flat_t).mean(1, keepdim=True)  # (BK, 1, h, w), averaged over channels
        crop = (mask.shape[-1] - smap.shape[-1]) // 2
        m = mask.flatten(0, 1)[..., crop:crop + smap.shape[-2], crop:crop + smap.shape[-1]]
        self.mov_ssim_pixels += m.reshape(b, k, -1).sum((0, 2)).numpy()
        self.mov["ssim"] += (smap * m).reshape(b, k, -1).sum((0, 2)).numpy()

    def result(self) -> dict[str, Any]:
        whole = {m: (self.whole[m] / self.frames).tolist() for m in METRICS}
        pix = np.maximum(self.mov_pixels, 1)
        mse = self.mov["mse"] / pix
        moving = {
            "l1": (self.mov["l1"] / pix).tolist(), "mse": mse.tolist(),
            "psnr": (-10 * np.log10(np.maximum(mse, 10 ** (-_MAX_PSNR / 10)))).tolist(),
            "ssim": (self.mov["ssim"] / np.maximum(self.mov_ssim_pixels, 1)).tolist(),
        }
        return {region: {"per_step": vals, "mean": {m: float(np.mean(v)) for m, v in vals.items()}}
                for region, vals in (("whole", whole), ("moving", moving))}


def eval_chunk_indices(ds: ChunkDataset, max_chunks: int, seed: int) -> np.ndarray:
    """A seeded, sorted subset of the split's chunks (all of them when ``max_chunks`` is 0 or larger)."""
    n = len(ds)
    if max_chunks <= 0 or max_chunks >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng([seed, _EVAL_STREAM]).choice(n, max_chunks, replace=False))


@torch.no_grad()
def predict_chunks(model: WorldModel, batch: dict[str, torch.Tensor], shuffled_actions: torch.Tensor) -> dict[str, torch.Tensor]:
    """Ground truth and the three predictions for one batch of chunks, all (B, K, 3, H, W) in [0, 1].

    Every method sees the same context frames and states; only ``shuffled_actions`` differs.
    """
    context = batch["image"].float() / 255.0
    k = batch["actions"].shape[1]
    return {
        "context": context,
        "target": batch["future_images"].float() / 255.0,
        "model": model.rollout(batch["image"], batch["actions"], batch["state"]).cpu(),
        "copy_last": context[:, None].expand(-1, k, -1, -1, -1),
        "shuffled_actions": model.rollout(batch["image"], shuffled_actions, batch["state"]).cpu(),
    }


def _save_gifs(model: WorldModel, ds: ChunkDataset, data: LoadedDataset, cfg: WorldModelConfig, seed: int,
               gif_dir: Path) -> list[str]:
    """Per task: ``<task>.gif`` (top row ground truth, bottom row prediction, chunks side by side)
    and ``<task>.png`` (one row pair per chunk: context then steps 1..K)."""
    import imageio.v2 as imageio

    gif_dir.mkdir(parents=True, exist_ok=True)
    written = []
    task_of = data.task_index[ds.starts]
    rng = np.random.default_rng([seed, _GIF_STREAM])
    s, pad = cfg.gif_scale, 2
    for t, name in enumerate(data.tasks):
        cand = np.flatnonzero(task_of == t)
        if len(cand) == 0 or cfg.gif_chunks == 0:
            continue
        idx = np.sort(rng.choice(cand, min(cfg.gif_chunks, len(cand)), replace=False))
        batch = ds.batch(idx)
        pred = model.rollout(batch["image"], batch["actions"], batch["state"]).cpu()
        gt = batch["future_images"].float() / 255.0
        ctx = batch["image"].float()[:, None] / 255.0
        seq_gt = torch.cat([ctx, gt], 1)  # (n, K+1, 3, H, W)
        seq_pred = torch.cat([ctx, pred], 1)

        def to_np(x: torch.Tensor) -> np.ndarray:  # (..., 3, H, W) -> (..., H*s, W*s, 3) uint8
            img = (x.clamp(0, 1) * 255).round().to(torch.uint8).movedim(-3, -1).numpy()
            return img.repeat(s, axis=-3).repeat(s, axis=-2)

        g, p = to_np(seq_gt), to_np(seq_pred)  # (n, K+1, h, w, 3)
        n, frames, h, w, _ = g.shape
        gif = np.full((frames, 2 * h + pad, n * (w + pad) - pad, 3), 255, np.uint8)
        png = np.full((n * (2 * h + pad) + (n - 1) * 3 * pad, frames * (w + pad) - pad, 3), 255, np.uint8)
        for i in range(n):
            x0 = i * (w + pad)
            gif[:, :h, x0:x0 + w] = g[i]
            gif[:, h + pad:, x0:x0 + w] = p[i]
            y0 = i * (2 * h + 4 * pad)
            for f in range(frames):
                png[y0:y0 + h, f * (w + pad):f * (w + pad) + w] = g[i, f]
                png[y0 + h + pad:y0 + 2 * h + pad, f * (w + pad):f * (w + pad) + w] = p[i, f]
        imageio.mimsave(gif_dir / f"{name}.gif", list(gif), duration=250, loop=0)
        imageio.imwrite(gif_dir / f"{name}.png", png)
        written.append(name)
    return written


@torch.no_grad()
def evaluate_world_model(model: WorldModel, data: LoadedDataset, out_dir: Path, cfg: WorldModelConfig,
                         seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Score ``model`` on the val split against both baselines; write ``metrics.json`` and ``gifs/``."""
    import sys

    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    k = model.chunk_len
    ds = ChunkDataset(data, "val", k)
    chunks = eval_chunk_indices(ds, cfg.eval_chunks, seed)
    all_actions = ds.batch(chunks)["actions"]
    shuffled = all_actions[torch.from_numpy(derangement(len(chunks), seed))]
    acc = {m: _Accumulator(k) for m in METHODS}
    moving_pixels, total_pixels = np.zeros(k), 0
    bs = cfg.eval_batch_size
    for start in tqdm(range(0, len(chunks), bs), desc="world-model eval", leave=False,
                      disable=not progress or not sys.stderr.isatty()):
        batch = ds.batch(chunks[start:start + bs])
        preds = predict_chunks(model, batch, shuffled[start:start + bs])
        mask = ((preds["target"] - preds["context"][:, None]).abs().amax(2, keepdim=True) > cfg.moving_threshold).float()
        moving_pixels += mask.sum((0, 2, 3, 4)).numpy()
        total_pixels += mask.shape[0] * mask.shape[-1] * mask.shape[-2]
        for m in METHODS:
            acc[m].add(preds[m], preds["target"], mask)

    metrics: dict[str, Any] = {m: acc[m].result() for m in METHODS}
    model_m, copy_m, shuf_m = (metrics[m] for m in METHODS)
    psnr_gap = np.subtract(model_m["whole"]["per_step"]["psnr"], copy_m["whole"]["per_step"]["psnr"])
    metrics.update({
        "split": "val", "num_chunks": int(len(chunks)), "chunk_len": k, "moving_threshold": cfg.moving_threshold,
        "chunk_starts": ds.starts[chunks].tolist(),
        "moving_fraction": (moving_pixels / max(total_pixels, 1)).tolist(),
        "targets": {
            "moving_l1_model_over_copy_last_last_step":
                model_m["moving"]["per_step"]["l1"][-1] / max(copy_m["moving"]["per_step"]["l1"][-1], 1e-12),
            "moving_l1_shuffled_over_model_last_step":
                shuf_m["moving"]["per_step"]["l1"][-1] / max(model_m["moving"]["per_step"]["l1"][-1], 1e-12),
            "whole_psnr_gain_mean_db": float(psnr_gap.mean()),
            "whole_psnr_gain_min_step_2_plus_db": float(psnr_gap[1:].min()) if k > 1 else float(psnr_gap[0]),
        },
    })
    metrics["gifs"] = _save_gifs(model, ds, data, cfg, seed, out_dir / "gifs")
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics


def fidelity_report_fragment(model_dir: Path, prefix: str) -> tuple[str, dict[str, Path]] | None:
    """HTML for a report section on a saved world model's fidelity, and the files it links to.

    The GIFs written by :func:`evaluate_world_model` (ground truth above, imagined below) are linked
    as ``<prefix>/<name>.gif``; None when the model directory holds no fidelity evaluation.
    """
    import html

    fid_path = Path(model_dir) / "eval" / "metrics.json"
    if not fid_path.exists():
        return None
    gifs = sorted((Path(model_dir) / "eval" / "gifs").glob("*.gif"))
    fragment = "".join(f"<figure><img src='{prefix}/{g.name}'><figcaption>{html.escape(g.stem)}: ground truth "
                       "(top) vs imagined</figcaption></figure>" for g in gifs)
    fragment += "<pre>" + html.escape(fid_path.read_text()[:20000]) + "</pre>"
    return fragment, {f"{prefix}/{g.name}": g for g in gifs}

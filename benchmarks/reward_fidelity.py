"""Reward-design ablation: which frame distance lets the world model rank chunks like the simulator?

For N start states of one split, G chunks are sampled from the base policy and rolled out both in
the world model and in the real Meta-World simulator (state restored by replaying the recorded
actions). Each candidate distance is then scored by the mean within-group Spearman correlation
between its world-model reward (policy rollout vs the expert chunk's rollout, both imagined) and
its real reward (real frames vs the expert's recorded frames). Because the real reward moves with
the distance, each variant is also scored against one fixed ground truth (the default
L1 + (1 - SSIM), uniform over the K frames), so a variant cannot win by redefining "real".

Tune on the train split, report on val:

    python benchmarks/reward_fidelity.py --dataset DS --world-model WM --policy BC \
        --split train --states 64 --out benchmarks/results/reward_fidelity_train.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr

from vla_rft import storage
from vla_rft.config import load_config
from vla_rft.data import load_dataset
from vla_rft.data.torch_dataset import ChunkDataset
from vla_rft.policy.modeling import VLAPolicy
from vla_rft.rft.rewards import frame_distance
from vla_rft.rft.verify import _to_float, real_chunk_frames
from vla_rft.world_model.modeling import WorldModel


def collect(data, policy, world_model, split: str, n_states: int, group: int, seed: int,
            std_min: float = 0.0) -> dict:
    """Imagined and real frames for ``n_states`` starts x ``group`` sampled chunks."""
    k = policy.chunk_len
    ds = ChunkDataset(data, split, chunk_len=k)
    rng = np.random.default_rng((seed, 4242))
    idx = rng.choice(len(ds), size=min(n_states, len(ds)), replace=False)
    batch = ds.batch(idx)
    n = len(idx)
    rep = lambda x: x.repeat_interleave(group, dim=0)  # noqa: E731
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        dist = policy(rep(batch["image"]), rep(batch["state"]), rep(batch["task_index"]))
        chunks = (dist.mean + dist.std.clamp_min(std_min) * torch.randn(dist.mean.shape, generator=gen)).clamp(-1, 1)
        frames = world_model.rollout(torch.cat([rep(batch["image"]), batch["image"]]),
                                     torch.cat([chunks, batch["actions"]]),
                                     torch.cat([rep(batch["state"]), batch["state"]]))
    real = []
    for i in range(n):
        r, err = real_chunk_frames(data, int(ds.starts[idx[i]]), chunks.reshape(n, group, k, -1)[i].numpy(), data.info)
        if err > 0:
            raise RuntimeError(f"state restore was not exact (max pixel error {err})")
        real.append(_to_float(r))
    return {
        "wm_policy": frames[: n * group].reshape(n, group, k, *frames.shape[2:]),
        "wm_expert": frames[n * group:],
        "real_policy": torch.stack(real),
        "recorded": batch["future_images"].float() / 255.0,
        "task_index": batch["task_index"],
    }


def per_frame(pred, target, l1: float, perc: float, pool: int) -> torch.Tensor:
    """(N, K, 3, H, W) x2 -> (N, K) distances, optionally after average-pooling by ``pool``."""
    n, k = pred.shape[:2]
    if pool > 1:
        pred = F.avg_pool2d(pred.reshape(n * k, *pred.shape[2:]), pool).reshape(n, k, 3, *(s // pool for s in pred.shape[-2:]))
        target = F.avg_pool2d(target.reshape(n * k, *target.shape[2:]), pool).reshape(n, k, 3, *(s // pool for s in target.shape[-2:]))
    cols = [frame_distance(pred[:, j:j + 1], target[:, j:j + 1], l1, perc, "ssim") for j in range(k)]
    return torch.stack(cols, dim=1)


VARIANTS = {  # name: (l1 weight, (1 - SSIM) weight, pooling, frame weighting)
    "l1+ssim": (1.0, 1.0, 1, "uniform"),
    "l1": (1.0, 0.0, 1, "uniform"),
    "ssim": (0.0, 1.0, 1, "uniform"),
    "l1+ssim pool2": (1.0, 1.0, 2, "uniform"),
    "l1+ssim pool4": (1.0, 1.0, 4, "uniform"),
    "l1+ssim late": (1.0, 1.0, 1, "linear"),
    "l1+ssim last": (1.0, 1.0, 1, "last"),
    "l1+ssim pool2 late": (1.0, 1.0, 2, "linear"),
    "l1 pool4 late": (1.0, 0.0, 4, "linear"),
    "l1 pool2": (1.0, 0.0, 2, "uniform"),
    "l1+0.25ssim": (1.0, 0.25, 1, "uniform"),
    "l1+0.25ssim pool2": (1.0, 0.25, 2, "uniform"),
}


def weights(kind: str, k: int) -> torch.Tensor:
    w = {"uniform": torch.ones(k), "linear": torch.arange(1, k + 1).float(),
         "last": torch.eye(k)[-1]}[kind]
    return w / w.sum()


def rewards(frames: dict, l1: float, perc: float, pool: int, weighting: str) -> tuple[torch.Tensor, torch.Tensor]:
    n, g, k = frames["wm_policy"].shape[:3]
    w = weights(weighting, k)
    flat = lambda x: x.reshape(n * g, *x.shape[2:])  # noqa: E731
    expand = lambda x: x[:, None].expand(n, g, *x.shape[1:])  # noqa: E731
    wm = -(per_frame(flat(frames["wm_policy"]), flat(expand(frames["wm_expert"])), l1, perc, pool) @ w)
    real = -(per_frame(flat(frames["real_policy"]), flat(expand(frames["recorded"])), l1, perc, pool) @ w)
    return wm.reshape(n, g), real.reshape(n, g)


def spearman_per_group(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    return np.asarray([spearmanr(x, y).statistic for x, y in zip(a.numpy(), b.numpy()) if np.ptp(x) > 0 and np.ptp(y) > 0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--world-model", required=True)
    ap.add_argument("--policy", required=True)
    ap.add_argument("--split", default="train", choices=["train", "val"])
    ap.add_argument("--states", type=int, default=64)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--profile", default="standard")
    ap.add_argument("--std-min", type=float, default=0.0, help="floor on the sampling std (exploration)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(2)
    cfg = load_config("params.yaml", profile=args.profile)
    t0 = time.time()
    ds_dir, _ = storage.read_artifact(args.dataset, expected_kind="dataset", cache_dir=Path("/tmp/vla-rft-cache"))
    data = load_dataset(ds_dir)
    wm = WorldModel.from_pretrained(storage.read_artifact(args.world_model, expected_kind="world_model",
                                                          cache_dir=Path("/tmp/vla-rft-cache"))[0]).eval()
    policy = VLAPolicy.from_pretrained(storage.read_artifact(args.policy, expected_kind="policy",
                                                             cache_dir=Path("/tmp/vla-rft-cache"))[0]).eval()
    cache = Path(args.out).with_suffix(".frames.pt")
    if cache.exists():  # re-score new variants without re-running the simulator
        frames = torch.load(cache, weights_only=True)
    else:
        frames = collect(data, policy, wm, args.split, args.states, args.group, args.seed, args.std_min)
        torch.save(frames, cache)
    fixed_wm, fixed_real = rewards(frames, *VARIANTS["l1+ssim"])
    del fixed_wm
    tasks = [data.tasks[int(t)] for t in frames["task_index"]]
    results = {}
    for name, spec in VARIANTS.items():
        wm_r, real_r = rewards(frames, *spec)
        own = spearman_per_group(wm_r, real_r)
        fixed = spearman_per_group(wm_r, fixed_real)
        by_task = {}
        for t in sorted(set(tasks)):
            sel = [i for i, x in enumerate(tasks) if x == t]
            by_task[t] = float(np.mean(spearman_per_group(wm_r[sel], real_r[sel])))
        results[name] = {"spearman": float(own.mean()), "spearman_se": float(own.std(ddof=1) / np.sqrt(len(own))),
                         "spearman_vs_default_real": float(fixed.mean()), "by_task": by_task,
                         "within_group_std_wm": float(wm_r.std(dim=1).mean())}
        print(f"{name:22s} spearman {own.mean():.3f} +- {results[name]['spearman_se']:.3f}   "
              f"vs default real {fixed.mean():.3f}   " + " ".join(f"{t}:{v:.2f}" for t, v in by_task.items()))
    out = {"split": args.split, "std_min": args.std_min, "states": len(tasks), "group": args.group, "seed": args.seed,
           "seconds": time.time() - t0, "variants": results, "cfg_reward": {
               "l1": cfg.rft.reward_l1_weight, "perceptual": cfg.rft.reward_perceptual_weight}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out} ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()

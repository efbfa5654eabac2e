"""Estimate the GPU memory a profile's training needs: parameters + AdamW state (16 bytes a parameter)
plus the tensors autograd saves for backward, counted on the CPU at a small batch and scaled linearly.

    python scripts/activation_memory.py --profile large
"""

from __future__ import annotations

import argparse

import torch

from vla_rft.config import load_config
from vla_rft.policy.modeling import VLAPolicy
from vla_rft.world_model.modeling import WorldModel


def saved_bytes(fn) -> int:
    seen: dict[int, int] = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="large")
    ap.add_argument("--probe-batch", type=int, default=2)
    args = ap.parse_args()
    cfg = load_config("params.yaml", profile=args.profile)
    size, k, a, s, b = cfg.sim.image_size, cfg.common.chunk_len, 4, 39, args.probe_batch
    img = torch.randint(0, 255, (b, 3, size, size), dtype=torch.uint8)
    wm = WorldModel(cfg.world_model, size, k, a, s).train()
    frames = torch.arange(k)[: cfg.world_model.train_frames].expand(b, -1).clone()
    wm_act = saved_bytes(lambda: wm(img, torch.rand(b, k, a), torch.rand(b, s), frames).frames.sum())
    pol = VLAPolicy(cfg.policy, image_size=size, chunk_len=k, action_dim=a, state_dim=s,
                    instructions=["push the puck to the goal"]).train()
    pol_act = saved_bytes(lambda: pol(img, torch.rand(b, s), torch.zeros(b, dtype=torch.long)).mean.sum())
    gib = 2**30
    for name, model, act, batch in (("world_model", wm, wm_act, cfg.world_model.batch_size),
                                     ("policy", pol, pol_act, cfg.policy.batch_size)):
        n = sum(p.numel() for p in model.parameters() if p.requires_grad)
        print(f"{name}: {n / 1e6:.1f} M parameters, weights+grads+AdamW {16 * n / gib:.2f} GiB, "
              f"activations {act / b * batch / gib:.2f} GiB at batch {batch} "
              f"(total ~{(16 * n + act / b * batch) / gib:.1f} GiB per rank)")


if __name__ == "__main__":
    main()

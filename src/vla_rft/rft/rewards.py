"""The verified reward: how close the frames a chunk produces are to the expert's, frame by frame.

VLA-RFT rolls out, from the same start state, (a) the policy's sampled chunk and (b) the expert's
recorded chunk in the world model, and rewards the policy by ``-(w_l1 * L1 + w_perc *
perceptual)`` between the two imagined frame sequences, averaged over the K frames. Comparing two
*imagined* sequences cancels most of the world model's own error (both share its blur); the
option ``reward_target: real_frames`` compares against the recorded frames instead.
LPIPS(VGG) weights cannot be downloaded here, so the perceptual term is 1 - SSIM unless
``rft.lpips_weights`` names a local LPIPS(VGG) file (see ``vla_rft.rft.lpips``); the default
weight of the perceptual term is 0 (L1 ranked chunks best, docs/decisions.md).
"""

from __future__ import annotations

import torch
from pytorch_msssim import ssim


def frame_distance(pred: torch.Tensor, target: torch.Tensor, l1_weight: float = 1.0,
                   perceptual_weight: float = 1.0, perceptual: str = "ssim", lpips_weights: str = "") -> torch.Tensor:
    """Distance per sequence: ``pred`` (N, K, 3, H, W) vs ``target`` (N, K, 3, H, W) in [0, 1] -> (N,).

    The mean over the K frames of ``l1_weight * L1 + perceptual_weight * (1 - SSIM)``.
    """
    if pred.shape != target.shape or pred.dim() != 5:
        raise ValueError(f"frame sequences must both be (N, K, 3, H, W), got {tuple(pred.shape)} and {tuple(target.shape)}")
    n, k = pred.shape[:2]
    pred = pred.float()
    target = target.float().to(pred.device)
    dist = l1_weight * (pred - target).abs().mean(dim=(2, 3, 4))  # (N, K)
    if perceptual == "ssim" and perceptual_weight:
        flat_p, flat_t = pred.reshape(n * k, *pred.shape[2:]), target.reshape(n * k, *target.shape[2:])
        win = 11 if min(pred.shape[-2:]) >= 11 else (min(pred.shape[-2:]) // 2) * 2 - 1
        s = ssim(flat_p, flat_t, data_range=1.0, size_average=False, win_size=win).reshape(n, k)
        dist = dist + perceptual_weight * (1.0 - s)
    elif perceptual == "lpips" and perceptual_weight:
        from vla_rft.rft.lpips import load_lpips

        if not lpips_weights:
            raise ValueError("perceptual 'lpips' needs a local weights file (rft.lpips_weights)")
        model = load_lpips(str(lpips_weights)).to(pred.device)
        flat_p, flat_t = pred.reshape(n * k, *pred.shape[2:]), target.reshape(n * k, *target.shape[2:])
        with torch.no_grad():
            dist = dist + perceptual_weight * model(flat_p, flat_t).reshape(n, k)
    elif perceptual not in ("ssim", "lpips", "none"):
        raise ValueError(f"unknown perceptual term {perceptual!r}; allowed: ssim, lpips, none")
    return dist.mean(dim=1)


def verified_reward(policy_frames: torch.Tensor, target_frames: torch.Tensor, cfg) -> torch.Tensor:
    """Rewards (B, G) for G imagined sequences per start (B, G, K, 3, H, W) against (B, K, 3, H, W)."""
    b, g = policy_frames.shape[:2]
    target = target_frames[:, None].expand(b, g, *target_frames.shape[1:])
    dist = frame_distance(policy_frames.reshape(b * g, *policy_frames.shape[2:]),
                          target.reshape(b * g, *target.shape[2:]),
                          cfg.reward_l1_weight, cfg.reward_perceptual_weight, cfg.perceptual, cfg.lpips_weights)
    return -dist.reshape(b, g)


def group_advantages(rewards: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """GRPO advantages: ``(r - mean_group) / (std_group + eps)`` over the last dimension (B, G)."""
    mean = rewards.mean(dim=-1, keepdim=True)
    std = rewards.std(dim=-1, keepdim=True)
    return (rewards - mean) / (std + eps)

"""What GRPO and the reward check share: B start states repeated G times, a group of sampled chunks
per start, and all of them (plus the expert's chunk from each start) imagined in one batched call."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vla_rft.rft.configuration import RFTConfig


def exploration_range(cfg: RFTConfig) -> tuple[float, float] | None:
    """RFT's sampling std range, or None to sample with the policy's own (both bounds 0)."""
    return (cfg.explore_std_min, cfg.explore_std_max) if cfg.explore_std_max > 0 else None


def repeat_group(x: torch.Tensor, group_size: int) -> torch.Tensor:
    """(B, ...) -> (B*G, ...), each start's G copies contiguous."""
    return x.repeat_interleave(group_size, dim=0)


@dataclass
class ImaginedGroups:
    """One step's groups: inputs repeated per sample, the samples, and what the world model imagined."""

    images: torch.Tensor  #: (B*G, 3, H, W) uint8
    states: torch.Tensor  #: (B*G, S)
    tasks: torch.Tensor  #: (B*G,)
    chunks: torch.Tensor  #: (B*G, K, A) unclipped Gaussian samples; the world model saw them clipped to [-1, 1]
    old_logp: torch.Tensor  #: (B*G,) their log-densities under the sampling policy
    policy_frames: torch.Tensor  #: (B, G, K, 3, H, W) in [0, 1]
    expert_frames: torch.Tensor  #: (B, K, 3, H, W): the expert's recorded chunk imagined from the same start


@torch.no_grad()
def imagine_groups(policy, world_model, batch: dict, group_size: int, generator: torch.Generator,
                   std_range: tuple[float, float] | None, device: torch.device,
                   noise: torch.Tensor | None = None) -> ImaginedGroups:
    """Sample ``group_size`` chunks per start from ``policy`` and imagine them and the expert chunk.

    ``noise`` (B*G, K, A): the standard-normal draws to use instead of drawing from ``generator``
    (a data-parallel rank passes its slice of the global batch's draws).
    """
    b, g = batch["image"].shape[0], group_size
    images, states, tasks = (batch[k].to(device) for k in ("image", "state", "task_index"))
    images_g, states_g, tasks_g = (repeat_group(x, g) for x in (images, states, tasks))
    dist = policy(images_g, states_g, tasks_g, std_range=std_range)
    if noise is None:
        noise = torch.randn(dist.mean.shape, generator=generator)
    noise = noise.to(device)
    chunks = dist.mean + dist.std * noise
    old_logp = dist.log_prob(chunks)
    actions = torch.cat([chunks.clamp(-1, 1), batch["actions"].to(device)], dim=0)
    frames = world_model.rollout(torch.cat([images_g, images]), actions, torch.cat([states_g, states]))
    k = chunks.shape[1]
    return ImaginedGroups(images_g, states_g, tasks_g, chunks, old_logp,
                          frames[: b * g].reshape(b, g, k, *frames.shape[2:]), frames[b * g:])

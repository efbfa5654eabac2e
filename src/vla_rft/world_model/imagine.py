"""Closed-loop imagination: any policy acts on the frames the world model predicts, chunk after chunk.

The world model knows no policy: ``act`` is a callable ``act(images, states, task_index, chunk)
-> actions`` on torch tensors (images (N, 3, H, W) uint8, states (N, S), task_index (N,), the
chunk number) returning an action chunk (N, K, A). The world model sees it clipped to [-1, 1]
(what the real env executes), predicts K frames and the proprio state after each action; the last
frame (rounded to 8 bits, like a rendered frame) and the last predicted state are what ``act``
sees next (its proprio entries only, for a world model that also predicts the environment
state). Only that last frame is decoded (each frame is decoded from the context on its own, so
it is the frame :meth:`WorldModel.rollout` would give; the decoder dominates the cost). After WMPO
(23-48 chunks of 8 from real initial frames) and WoVR (32 chunks, also from keyframes inside
demonstrations); start frames here are any real frames + states.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from vla_rft.world_model.modeling import CPU_MICRO_BATCH, WorldModel

ActFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]


@dataclass
class ImaginedEpisodes:
    """H chunks imagined for each of N starts."""

    context_images: torch.Tensor  #: (N, H, 3, h, w) uint8: what ``act`` saw at each chunk (0 = the real start)
    context_states: torch.Tensor  #: (N, H, S): the (proprio) state ``act`` saw (0 = the real start state)
    actions: torch.Tensor  #: (N, H, K, A) what ``act`` returned (unclipped)
    last_frames: torch.Tensor  #: (N, H, 3, h, w) uint8: the predicted frame at the end of each chunk
    states: torch.Tensor  #: (N, H, S_wm): the world model's predicted state at the end of each chunk (env state too)


@torch.no_grad()
def imagine_episodes(world_model: WorldModel, act: ActFn, start_images: torch.Tensor, start_states: torch.Tensor,
                     task_index: torch.Tensor, horizon: int, micro_batch: int | None = None) -> ImaginedEpisodes:
    """Roll ``act`` out in ``world_model`` for ``horizon`` chunks from real start frames (N, 3, h, w) uint8
    and the world model's start states (N, S_wm): :meth:`WorldModel.model_states`."""
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1 chunk, got {horizon}")
    if start_images.dtype != torch.uint8 or start_images.dim() != 4:
        raise ValueError(f"start_images must be (N, 3, H, W) uint8, got {tuple(start_images.shape)} {start_images.dtype}")
    images, states = start_images.cpu(), start_states.float().cpu()
    if states.shape[-1] != world_model.state_dim:
        raise ValueError(f"start states have {states.shape[-1]} entries, the world model takes {world_model.state_dim} "
                         "(WorldModel.model_states)")
    seen = world_model.proprio_dim
    ctx_i, ctx_s, acts, lasts, ends = [], [], [], [], []
    for h in range(horizon):
        chunk = torch.as_tensor(act(images, states[:, :seen], task_index, h)).float()
        k = world_model.chunk_len
        if chunk.shape != (len(images), k, world_model.action_dim):
            raise ValueError(f"act returned actions of shape {tuple(chunk.shape)}; expected "
                             f"({len(images)}, {k}, {world_model.action_dim})")
        last, last_state = last_frame(world_model, images, chunk.clamp(-1, 1), states, micro_batch)
        ctx_i.append(images)
        ctx_s.append(states[:, :seen])
        acts.append(chunk.cpu())
        images = torch.round(last * 255).to(torch.uint8)
        states = last_state
        lasts.append(images)
        ends.append(states)
    return ImaginedEpisodes(torch.stack(ctx_i, 1), torch.stack(ctx_s, 1), torch.stack(acts, 1),
                            torch.stack(lasts, 1), torch.stack(ends, 1))


@torch.no_grad()
def last_frame(world_model: WorldModel, images: torch.Tensor, actions: torch.Tensor, states: torch.Tensor,
               micro_batch: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The frame (N, 3, h, w) float in [0, 1] and state (N, S) after one chunk (N, K, A), decoding only
    the last of the K frames; in micro-batches as :meth:`WorldModel.rollout` runs them."""
    n, k = len(images), world_model.chunk_len
    step = micro_batch or (CPU_MICRO_BATCH if world_model.device.type == "cpu" else n)
    frames, out_states = [], []
    for lo in range(0, n, step):
        part = images[lo:lo + step]
        out = world_model(part, actions[lo:lo + step], states[lo:lo + step],
                          frame_index=torch.full((len(part), 1), k - 1, dtype=torch.long))
        frames.append(out.frames[:, -1].clamp(0, 1).cpu())
        out_states.append(out.states[:, -1].float().cpu())
    return torch.cat(frames), torch.cat(out_states)

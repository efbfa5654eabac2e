"""The VLA policy of VLA-RFT (Li et al., "VLA-RFT: Vision-Language-Action Reinforcement Fine-tuning
with Verified Rewards in World Simulators", arXiv 2510.00406), at CPU scale.

The paper's policy is VLA-Adapter (Qwen2.5-0.5B) with a flow-matching action head and a "sigma
net" whose std is clamped to [0.08, 0.2], so GRPO gets exact log-probs of sampled action chunks.
Ours keeps that structure with small parts::

    image (uint8, 64x64) -> strided CNN -> a 4x4 grid of image tokens (+ 1 spatial-softmax keypoint token)
    instruction -> frozen all-MiniLM-L6-v2 (384-d, cached) -> linear -> 1 token
    proprio state (normalised) -> linear -> 1 token
    K learned action-query tokens
    [instr, state, image x16, queries x K] -> transformers.BertModel (bidirectional, inputs_embeds)
    query outputs -> mean head: K x A action means
                  -> std head (the sigma net, on detached features): std in [std_min, std_max]

The policy is a diagonal Gaussian over the flattened K x A chunk (a Gaussian head instead of
flow matching: a README-listed difference). **Action bounds**: chunks are sampled unbounded; the
environment clips each action to [-1, 1]; log-probs are of the *unclipped* sample, which is what
GRPO's ratio needs (clipping is part of the environment, not of the policy).

Usage::

    policy = VLAPolicy.from_pretrained("artifacts/policy")
    chunk = policy.act(frames_uint8_bhw3, states_b4, task_index_b)          # (B, K, A) numpy
    chunk, logp = policy.sample(images_b3hw, states, task_index, generator=g)
    assert torch.allclose(policy.log_prob(images_b3hw, states, task_index, chunk), logp)
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch
from torch import Tensor, nn
from transformers import BertConfig, BertModel

from vla_rft.policy.configuration import ARCHITECTURE_FIELDS, PolicyConfig
from vla_rft.policy.text import EMBEDDING_DIM

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
MODEL_TYPE = "vla_rft_policy"
FORMAT_VERSION = 2  # 2: config.json holds the architecture only

#: what ``instruction`` may be: task indices (B,) int, embeddings (B, 384) float, or B strings
Instruction = Union[Tensor, Sequence[str]]


@dataclass
class ChunkGaussian:
    """A diagonal Gaussian over a flattened (K, A) action chunk."""

    mean: Tensor  #: (B, K, A)
    std: Tensor  #: (B, K, A), already clamped to [std_min, std_max]

    def log_prob(self, chunk: Tensor) -> Tensor:
        """(B,) log density of the unclipped ``chunk`` (B, K, A), summed over all K x A dims."""
        z = (chunk - self.mean) / self.std
        per_dim = -0.5 * z.pow(2) - self.std.log() - 0.5 * math.log(2 * math.pi)
        return per_dim.flatten(1).sum(-1)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """(B, K, A) detached sample; ``generator`` (on the model's device) makes it reproducible."""
        noise = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return (self.mean + self.std * noise).detach()

    def entropy(self) -> Tensor:
        """(B,) differential entropy of the chunk distribution."""
        return (0.5 * math.log(2 * math.pi * math.e) + self.std.log()).flatten(1).sum(-1)


def spatial_softmax(logits: torch.Tensor) -> torch.Tensor:
    """(B, N, h, w) maps -> (B, 2N): each map's softmax-weighted mean row, then column, in [-1, 1]."""
    b, n, h, w = logits.shape
    attn = logits.flatten(2).softmax(-1).view(b, n, h, w)
    ys = torch.linspace(-1, 1, h, device=logits.device)
    xs = torch.linspace(-1, 1, w, device=logits.device)
    return torch.cat([(attn.sum(3) * ys).sum(-1), (attn.sum(2) * xs).sum(-1)], dim=1)


class ConvImageEncoder(nn.Module):
    """Stride-2 conv blocks (conv 3x3 -> GroupNorm -> GELU), then 1x1 to ``hidden``: one token per cell.

    With ``keypoints > 0`` a spatial-softmax head on the 1/4-resolution map adds one token of
    ``keypoints`` expected (x, y) image coordinates: sub-cell positions of small things (goal
    markers, handles) that a coarse grid of tokens blurs.
    """

    def __init__(self, channels: Sequence[int], hidden: int, keypoints: int = 0):
        super().__init__()
        blocks: list[nn.Module] = []
        prev = 3
        for c in channels:
            blocks.append(nn.Sequential(nn.Conv2d(prev, c, 3, stride=2, padding=1), nn.GroupNorm(min(8, c), c), nn.GELU()))
            prev = c
        self.blocks = nn.ModuleList(blocks)
        self.proj = nn.Conv2d(prev, hidden, 1)
        self.keypoint_block = min(1, len(channels) - 1)  # output of the 2nd block: 1/4 resolution
        self.keypoints = keypoints
        if keypoints:
            self.keypoint_logits = nn.Conv2d(channels[self.keypoint_block], keypoints, 1)
            self.keypoint_proj = nn.Linear(2 * keypoints, hidden)

    def forward(self, images: Tensor) -> Tensor:
        x = images.float() / 127.5 - 1.0  # uint8 in, [-1, 1] inside
        tokens = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if self.keypoints and i == self.keypoint_block:
                tokens.append(self.keypoint_proj(spatial_softmax(self.keypoint_logits(x)))[:, None])
        tokens.insert(0, self.proj(x).flatten(2).transpose(1, 2))  # (B, cells, hidden)
        return torch.cat(tokens, dim=1)


class VLAPolicy(nn.Module):
    """Image + instruction + proprio -> transformer trunk -> Gaussian over an action chunk."""

    def __init__(self, config: PolicyConfig, *, image_size: int, chunk_len: int, action_dim: int,
                 state_dim: int, instructions: Sequence[str], instruction_embeddings: Tensor | None = None):
        super().__init__()
        downsample = 2 ** len(config.cnn_channels)
        if image_size % downsample:
            raise ValueError(f"image_size {image_size} is not divisible by 2**len(policy.cnn_channels) = {downsample}")
        if not instructions:
            raise ValueError("a policy needs at least one instruction (one per task index)")
        self.config = config
        self.image_size, self.chunk_len = image_size, chunk_len
        self.action_dim, self.state_dim = action_dim, state_dim
        self.instructions = list(instructions)
        d = config.hidden_size
        self.num_image_tokens = (image_size // downsample) ** 2 + (1 if config.keypoints else 0)
        num_tokens = 2 + self.num_image_tokens + chunk_len

        if instruction_embeddings is None:
            from vla_rft.policy.text import embed_instructions

            instruction_embeddings = embed_instructions(self.instructions)
        if tuple(instruction_embeddings.shape) != (len(self.instructions), EMBEDDING_DIM):
            raise ValueError(f"instruction_embeddings must be ({len(self.instructions)}, {EMBEDDING_DIM}), "
                             f"got {tuple(instruction_embeddings.shape)}")
        # frozen-encoder outputs and dataset statistics travel with the weights (safetensors)
        self.register_buffer("instruction_embeddings", instruction_embeddings.detach().float().clone())
        self.register_buffer("state_mean", torch.zeros(state_dim))
        self.register_buffer("state_std", torch.ones(state_dim))

        self.image_encoder = ConvImageEncoder(config.cnn_channels, d, config.keypoints)
        self.instruction_proj = nn.Linear(EMBEDDING_DIM, d)
        self.state_proj = nn.Linear(state_dim, d)
        self.action_queries = nn.Parameter(torch.randn(chunk_len, d) * 0.02)
        trunk_config = BertConfig(
            vocab_size=1, hidden_size=d, num_hidden_layers=config.num_layers,
            num_attention_heads=config.num_heads, intermediate_size=config.mlp_ratio * d,
            hidden_act="gelu", hidden_dropout_prob=config.dropout, attention_probs_dropout_prob=config.dropout,
            max_position_embeddings=num_tokens, type_vocab_size=1,
        )
        self.trunk = BertModel(trunk_config, add_pooling_layer=False)
        self.trunk.embeddings.word_embeddings.requires_grad_(False)  # tokens come in as inputs_embeds
        self.mean_head = nn.Linear(d, action_dim)
        self.std_head = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, action_dim))  # the sigma net
        nn.init.normal_(self.mean_head.weight, std=0.01)
        nn.init.zeros_(self.mean_head.bias)

    # -- conditioning ---------------------------------------------------------------------------
    def set_state_normalization(self, mean: Tensor | np.ndarray, std: Tensor | np.ndarray) -> None:
        """Store the proprio statistics (from the training split) the model normalises with."""
        self.state_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.state_std.copy_(torch.as_tensor(std, dtype=torch.float32).clamp_min(1e-3))

    def instruction_index(self, instruction: str) -> int:
        """Task index of ``instruction``, adding it (encoded once by the frozen encoder) if new."""
        if instruction in self.instructions:
            return self.instructions.index(instruction)
        from vla_rft.policy.text import embed_instructions

        emb = embed_instructions([instruction]).to(self.instruction_embeddings.device)
        self.instruction_embeddings = torch.cat([self.instruction_embeddings, emb])
        self.instructions.append(instruction)
        return len(self.instructions) - 1

    def _instruction_embedding(self, instruction: Instruction, batch: int) -> Tensor:
        if isinstance(instruction, np.ndarray):
            instruction = torch.from_numpy(instruction)
        if isinstance(instruction, Tensor) and instruction.is_floating_point():
            if tuple(instruction.shape) != (batch, EMBEDDING_DIM):
                raise ValueError(f"instruction embeddings must be ({batch}, {EMBEDDING_DIM}), got {tuple(instruction.shape)}")
            return instruction.to(self.instruction_embeddings.device, torch.float32)
        if isinstance(instruction, Tensor):
            index = instruction.to(self.instruction_embeddings.device).long().reshape(-1)
            if index.numel() != batch:
                raise ValueError(f"task_index has {index.numel()} entries for a batch of {batch}")
            n = len(self.instructions)
            if index.numel() and (index.min() < 0 or index.max() >= n):
                raise ValueError(f"task_index out of range: this policy knows {n} instructions {self.instructions}")
            return self.instruction_embeddings[index]
        texts = list(instruction)
        if len(texts) != batch:
            raise ValueError(f"{len(texts)} instructions for a batch of {batch}")
        return self.instruction_embeddings[[self.instruction_index(t) for t in texts]]

    # -- the distribution -----------------------------------------------------------------------
    def forward(self, images: Tensor, states: Tensor, instruction: Instruction,
                std_range: tuple[float, float] | None = None) -> ChunkGaussian:
        """The action-chunk distribution for uint8 ``images`` (B, 3, H, W) and ``states`` (B, S).

        ``instruction``: task indices (B,) (into the stored instructions), 384-d embeddings
        (B, 384), or B instruction strings. ``std_range`` maps the sigma net's output into
        ``[lo, hi]`` instead of the policy's own ``[std_min, std_max]`` (RFT explores wider); the
        model is not changed by it.
        """
        b = images.shape[0]
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[2:] != (self.image_size, self.image_size):
            raise ValueError(f"images must be (B, 3, {self.image_size}, {self.image_size}) uint8, got {tuple(images.shape)}")
        if tuple(states.shape) != (b, self.state_dim):
            raise ValueError(f"states must be ({b}, {self.state_dim}), got {tuple(states.shape)}")
        device = self.state_mean.device
        images, states = images.to(device), states.to(device, torch.float32)
        text = self.instruction_proj(self._instruction_embedding(instruction, b))
        state = self.state_proj((states - self.state_mean) / self.state_std)
        tokens = torch.cat([
            text[:, None], state[:, None], self.image_encoder(images),
            self.action_queries.expand(b, -1, -1),
        ], dim=1)
        hidden = self.trunk(inputs_embeds=tokens).last_hidden_state[:, -self.chunk_len:]  # (B, K, d)
        mean = self.mean_head(hidden)
        lo, hi = std_range or (self.config.std_min, self.config.std_max)
        std = lo + (hi - lo) * torch.sigmoid(self.std_head(hidden.detach()))
        return ChunkGaussian(mean, std)

    def sample(self, images: Tensor, states: Tensor, instruction: Instruction,
               generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``(chunk (B, K, A), log_prob (B,))``: an unbounded sample and its exact log-density."""
        dist = self(images, states, instruction)
        chunk = dist.sample(generator)
        return chunk, dist.log_prob(chunk)

    def log_prob(self, images: Tensor, states: Tensor, instruction: Instruction, chunk: Tensor) -> Tensor:
        """(B,) log-density of given unclipped chunks (one forward pass; equals ``sample``'s value)."""
        return self(images, states, instruction).log_prob(chunk.to(self.state_mean.device))

    def entropy(self, images: Tensor, states: Tensor, instruction: Instruction) -> Tensor:
        """(B,) entropy of the chunk Gaussian."""
        return self(images, states, instruction).entropy()

    def predict_action_chunk(self, images: Tensor, states: Tensor, instruction: Instruction,
                             deterministic: bool = True, generator: torch.Generator | None = None) -> Tensor:
        """(B, K, A): the mean chunk, or a sample when ``deterministic`` is False (not clipped)."""
        dist = self(images, states, instruction)
        return dist.mean if deterministic else dist.sample(generator)

    @torch.no_grad()
    def act(self, frames: np.ndarray, states: np.ndarray, task_index: np.ndarray,
            deterministic: bool = True, generator: torch.Generator | None = None) -> np.ndarray:
        """Numpy adapter for the simulator: frames (B, H, W, 3) uint8 -> (B, K, A) float32 chunk."""
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be (B, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
        was_training = self.training
        self.eval()
        images = torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2)))
        chunk = self.predict_action_chunk(images, torch.as_tensor(np.asarray(states, np.float32)),
                                          torch.as_tensor(np.asarray(task_index)), deterministic, generator)
        self.train(was_training)
        return chunk.float().cpu().numpy()

    # -- parameter groups (GRPO trains the sigma net at its own learning rate) -------------------
    def std_parameters(self) -> list[nn.Parameter]:
        """Parameters of the std head (the sigma net)."""
        return [p for p in self.std_head.parameters() if p.requires_grad]

    def mean_parameters(self) -> list[nn.Parameter]:
        """Every other trainable parameter (encoders, trunk, mean head)."""
        std_ids = {id(p) for p in self.std_head.parameters()}
        return [p for p in self.parameters() if p.requires_grad and id(p) not in std_ids]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    # -- persistence ----------------------------------------------------------------------------
    def config_dict(self) -> dict:
        return {
            "model_type": MODEL_TYPE, "format_version": FORMAT_VERSION,
            "image_size": self.image_size, "chunk_len": self.chunk_len,
            "action_dim": self.action_dim, "state_dim": self.state_dim,
            "instructions": list(self.instructions),
            "architecture": self.config.architecture(),
        }

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``model.safetensors`` and ``config.json`` into ``directory`` (each atomically)."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        tmp = directory / f".{WEIGHTS_NAME}.tmp"
        save_file(state, str(tmp), metadata={"format": "pt", "model_type": MODEL_TYPE})
        os.replace(tmp, directory / WEIGHTS_NAME)
        tmp = directory / f".{CONFIG_NAME}.tmp"
        tmp.write_text(json.dumps(self.config_dict(), indent=2))
        os.replace(tmp, directory / CONFIG_NAME)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu") -> "VLAPolicy":
        """Load a policy written by :meth:`save_pretrained` (safetensors only; no text encoder needed)."""
        from safetensors.torch import load_file

        directory = Path(directory)
        cfg_path, weights = directory / CONFIG_NAME, directory / WEIGHTS_NAME
        for path in (cfg_path, weights):
            if not path.exists():
                raise FileNotFoundError(f"{directory} is not a saved policy: {path.name} is missing")
        meta = json.loads(cfg_path.read_text())
        if meta.get("model_type") != MODEL_TYPE:
            raise ValueError(f"{cfg_path}: model_type {meta.get('model_type')!r}, expected {MODEL_TYPE!r}")
        try:
            state = load_file(str(weights))
        except Exception as err:  # safetensors raises its own error type for a truncated or corrupt file
            raise ValueError(f"{weights} is not a readable safetensors file ({' '.join(str(err).split())})") from None
        # "policy" held the whole PolicyConfig (training settings too) before format 2
        arch = {k: v for k, v in meta.get("architecture", meta.get("policy", {})).items() if k in ARCHITECTURE_FIELDS}
        model = cls(PolicyConfig(**arch), image_size=meta["image_size"], chunk_len=meta["chunk_len"],
                    action_dim=meta["action_dim"], state_dim=meta["state_dim"], instructions=meta["instructions"],
                    instruction_embeddings=state["instruction_embeddings"])
        model.load_state_dict(state, strict=True)
        return model.to(device).eval()

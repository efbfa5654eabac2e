"""Hyperparameters of the world model and of its training and evaluation (``world_model:`` in params.yaml).

Imports only :mod:`vla_rft.errors`, so loading a config never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from vla_rft.errors import ConfigError

LR_SCHEDULES: tuple[str, ...] = ("cosine", "constant")

#: fields that define the network (written to the model's config.json); the rest is training/eval
ARCHITECTURE_FIELDS: tuple[str, ...] = (
    "channels", "patch_size", "hidden_size", "num_layers", "num_heads", "mlp_ratio", "dropout",
    "frame_channels", "cond_size", "max_flow", "use_state", "environment_state",
)


@dataclass
class WorldModelConfig:
    """Action-conditioned video model: 1 context frame (+ proprio) and K actions -> the next K frames.

    A conv U-Net encoder reads the context frame; its coarsest feature map becomes a grid of tokens
    that a bidirectional ``transformers.BertModel`` mixes with one token per action (and one for
    the state); a per-frame conv decoder with skip connections from the context frame predicts,
    for each future frame, a flow field that warps the context frame plus an RGB residual. At
    initialisation the flow and the residual are zero, so the model starts as copy-last-frame and
    only has to learn what moves.
    """

    # -- architecture -----------------------------------------------------------------------------
    #: conv channels at each encoder/decoder resolution, full resolution first; every further entry
    #: halves the resolution (64x64 input, 4 entries -> 64, 32, 16, 8 px feature maps). The decoder
    #: runs once per predicted frame, so these widths set the rollout speed
    channels: tuple[int, ...] = (8, 16, 32, 64)
    #: tokens are patch_size x patch_size patches of the coarsest feature map (8x8 map, patch 1 ->
    #: an 8x8 token grid); the skip connections keep full detail whatever the token grid
    patch_size: int = 1
    #: width of every token and of the transformer
    hidden_size: int = 128
    #: transformer layers (a bidirectional ``transformers.BertModel`` fed ``inputs_embeds``)
    num_layers: int = 3
    #: attention heads; must divide hidden_size
    num_heads: int = 4
    #: feed-forward width of the transformer as a multiple of hidden_size
    mlp_ratio: int = 4
    #: dropout inside the transformer (0 keeps training bit-for-bit reproducible and cheap)
    dropout: float = 0.0
    #: channels per token and per future frame that the transformer hands to the frame decoder
    frame_channels: int = 32
    #: width of the per-frame conditioning vector (state, action, cumulative action, step) that
    #: modulates every decoder block (FiLM)
    cond_size: int = 64
    #: largest flow displacement the decoder can express, in pixels (tanh-bounded)
    max_flow: float = 8.0
    #: feed the proprio state (hand xyz, gripper) as a token and into the frame conditioning
    use_state: bool = True
    #: also predict the scene's state (objects and goal, the dataset's ``observation.environment_state``)
    #: after every action, as extra state entries: given at the start like the proprio state, chained
    #: chunk to chunk, never shown to the policy; a success judge can then read an imagined episode's
    #: outcome off where its objects are (``success_model.input: state``). Needs datasets recording it
    environment_state: bool = False

    # -- training ---------------------------------------------------------------------------------
    #: AdamW peak learning rate
    lr: float = 2e-3
    #: AdamW weight decay (not applied to biases, norms and embeddings)
    weight_decay: float = 1e-4
    #: linear warmup steps
    warmup_steps: int = 100
    #: schedule after warmup: "cosine" (decays to lr * min_lr_ratio) or "constant"
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    #: final learning rate of the cosine schedule as a fraction of lr
    min_lr_ratio: float = 0.05
    #: gradient clipping by global norm (0 disables)
    grad_clip: float = 1.0
    #: chunks per optimisation step
    batch_size: int = 32
    #: optimisation steps
    steps: int = 2000
    #: steps of a fine-tune from a trained model (``--init-from``; ground-world-model: expert data +
    #: the policy's rollouts), same schedule shape; 0 = ``steps``
    ground_steps: int = 500
    #: future frames decoded (and scored) per chunk in a training step, drawn at random from the
    #: K; fewer is cheaper per step (the decoder dominates the cost). 0 = all K
    train_frames: int = 4
    #: a pixel "moves" when the ground truth differs from the context frame by more than this
    #: (max over RGB channels, intensities in [0, 1]); used by the loss weighting and the metrics
    moving_threshold: float = 0.05
    #: extra pixel-loss weight on moving pixels: weight = 1 + moving_weight on them, 1 elsewhere
    moving_weight: float = 10.0
    #: weight of the MSE term added to the (weighted) L1 pixel loss
    mse_weight: float = 1.0
    #: weight of the future-state regression loss (the state head lets rollouts chain chunks)
    state_loss_weight: float = 1.0
    #: consecutive chunks per training sequence: chunk 1 from the real frame and state, each later one
    #: from the model's own predicted last frame (8-bit rounded, straight-through) and predicted state,
    #: as a rollout chains them, with the gradient through the chain; every chunk scored against the
    #: recorded future. 1 = one chunk from the real frame (teacher forcing). Costs ~unroll_chunks x a
    #: step (batch_size counts sequences); needs episodes longer than unroll_chunks * chunk_len
    unroll_chunks: int = 1
    #: steps between atomic checkpoints (0: only at the end)
    checkpoint_interval: int = 500
    #: steps between rows of the training curve (loss averaged over the interval)
    log_interval: int = 50

    # -- evaluation -------------------------------------------------------------------------------
    #: validation chunks scored by the fidelity report (a seeded subset of the val split; 0 = all)
    eval_chunks: int = 1024
    #: chunks per evaluation batch (rollouts split it further into CPU-cache-sized micro-batches)
    eval_batch_size: int = 64
    #: validation chunks per task shown side by side in each GIF
    gif_chunks: int = 4
    #: nearest-neighbour upscaling of GIF frames so gripper, puck and goal are visible
    gif_scale: int = 3

    def __post_init__(self) -> None:
        def fail(name: str, why: str) -> None:
            raise ConfigError(f"world_model.{name} {why}, got {getattr(self, name)!r}")

        self.channels = tuple(self.channels)
        if not self.channels or any(int(c) < 1 for c in self.channels):
            fail("channels", "must list at least one positive channel count")
        if self.patch_size < 1:
            fail("patch_size", "must be >= 1")
        for name in ("hidden_size", "num_layers", "num_heads", "mlp_ratio", "frame_channels", "cond_size",
                     "batch_size", "steps", "log_interval", "eval_batch_size", "gif_scale", "unroll_chunks"):
            if getattr(self, name) < 1:
                fail(name, "must be >= 1")
        if self.hidden_size % self.num_heads:
            fail("hidden_size", f"must be divisible by num_heads={self.num_heads}")
        if not 0.0 <= self.dropout < 1.0:
            fail("dropout", "must be in [0, 1)")
        if self.max_flow <= 0:
            fail("max_flow", "must be > 0 (pixels)")
        if self.lr <= 0:
            fail("lr", "must be > 0")
        if self.weight_decay < 0:
            fail("weight_decay", "must be >= 0")
        if self.lr_schedule not in LR_SCHEDULES:
            fail("lr_schedule", f"must be one of {', '.join(LR_SCHEDULES)}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            fail("min_lr_ratio", "must be in [0, 1]")
        for name in ("warmup_steps", "ground_steps", "train_frames", "checkpoint_interval", "eval_chunks", "gif_chunks",
                     "grad_clip", "moving_weight", "mse_weight", "state_loss_weight"):
            if getattr(self, name) < 0:
                fail(name, "must be >= 0")
        if not 0.0 < self.moving_threshold < 1.0:
            fail("moving_threshold", "must be in (0, 1) (an intensity difference)")

    def architecture(self) -> dict:
        """The fields that define the network, as written to the model's config.json."""
        return {name: (list(v) if isinstance(v := getattr(self, name), tuple) else v) for name in ARCHITECTURE_FIELDS}

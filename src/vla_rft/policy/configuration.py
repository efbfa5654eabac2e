"""Hyperparameters of the VLA policy and of its behaviour-cloning pretraining (``policy:`` in params.yaml).

Imports only :mod:`vla_rft.errors`, so loading a config never imports torch or transformers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from vla_rft.errors import ConfigError

BC_LOSSES: tuple[str, ...] = ("mse_nll", "l1_nll", "nll")
AUGMENTATIONS: tuple[str, ...] = ("none", "shift")
LR_SCHEDULES: tuple[str, ...] = ("cosine", "constant")
EPISODE_FILTERS: tuple[str, ...] = ("all", "successful")

#: fields that define the network (written to the model's config.json); the rest is training
ARCHITECTURE_FIELDS: tuple[str, ...] = (
    "cnn_channels", "keypoints", "hidden_size", "num_layers", "num_heads", "mlp_ratio", "dropout",
    "std_min", "std_max",
)


@dataclass
class PolicyConfig:
    """The VLA policy (image encoder + frozen sentence encoder + proprio -> transformer -> Gaussian chunk head)."""

    # -- architecture -----------------------------------------------------------------------------
    #: output channels of each stride-2 conv block (64x64 input, 4 blocks -> a 4x4 grid = 16 tokens)
    cnn_channels: tuple[int, ...] = (32, 64, 128, 128)
    #: spatial-softmax keypoints read from the 1/4-resolution conv map, given to the trunk as one
    #: extra token of their (x, y) coordinates (0 disables)
    keypoints: int = 32
    #: width of every token and of the transformer trunk
    hidden_size: int = 128
    #: transformer trunk layers (a bidirectional ``transformers.BertModel`` fed ``inputs_embeds``)
    num_layers: int = 3
    #: attention heads in the trunk; must divide hidden_size
    num_heads: int = 4
    #: feed-forward width of the trunk as a multiple of hidden_size
    mlp_ratio: int = 4
    #: dropout inside the trunk; keep 0 so the log-probs GRPO relies on are exact in train mode too
    dropout: float = 0.0
    #: lower clamp of the action std (VLA-RFT's sigma net: [0.08, 0.2])
    std_min: float = 0.08
    #: upper clamp of the action std
    std_max: float = 0.2

    # -- where the base policy comes from ---------------------------------------------------------
    #: "scratch": behaviour cloning from random weights (below); "champion": the model registry's
    #: current champion (``promote.registry``) is the base policy, no BC, so a scheduled cycle
    #: fine-tunes the best policy so far (with no champion yet it trains from scratch and says so)
    init: Literal["scratch", "champion"] = "scratch"

    # -- behaviour cloning ------------------------------------------------------------------------
    #: "mse_nll": MSE on the mean + Gaussian NLL for the std with the mean detached (default);
    #: "l1_nll": the same with L1 on the mean; "nll": plain Gaussian NLL on mean and std together
    bc_loss: Literal["mse_nll", "l1_nll", "nll"] = "mse_nll"
    #: weight of the std-fitting NLL term in "mse_nll" / "l1_nll"
    std_loss_weight: float = 0.01
    #: image augmentation during BC: "shift" = pad by ``shift_pad`` px (edge) and random-crop back.
    #: Off by default: the camera is fixed, and a shift breaks the link between where a thing is
    #: in the image and the absolute hand position in the state (measured: +4 px shifts cut the
    #: closed-loop success of a 1000-step model from 80% to 52% and doubled its val MSE)
    augmentation: Literal["none", "shift"] = "none"
    #: pixels of padding for the random shift
    shift_pad: int = 4
    #: AdamW peak learning rate
    lr: float = 1e-3
    #: AdamW weight decay (not applied to biases, norms and embeddings)
    weight_decay: float = 1e-4
    #: linear warmup steps before the schedule
    warmup_steps: int = 100
    #: learning-rate schedule after warmup: "cosine" (decays to lr * min_lr_ratio) or "constant"
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    #: final learning rate of the cosine schedule as a fraction of lr
    min_lr_ratio: float = 0.05
    #: gradient clipping by global norm (0 disables)
    grad_clip: float = 1.0
    #: chunks per optimisation step
    batch_size: int = 64
    #: optimisation steps
    steps: int = 2000
    #: steps between validation-loss evaluations (0: only at the end)
    eval_interval: int = 250
    #: validation chunks used for the validation loss (a fixed, seeded subset of the val split)
    eval_chunks: int = 1024
    #: steps between atomic checkpoints (0: only at the end)
    checkpoint_interval: int = 500
    #: steps between curve rows (train loss averaged over the interval)
    log_interval: int = 25
    #: which recorded episodes BC learns from: "all", or "successful" (episodes whose ``success`` flag
    #: is set: with expert data + policy rollouts, the filtered-BC baseline of closed-loop RFT)
    episodes: Literal["all", "successful"] = "all"

    def architecture(self) -> dict:
        """The fields that define the network, as written to the model's config.json."""
        return {name: (list(v) if isinstance(v := getattr(self, name), tuple) else v) for name in ARCHITECTURE_FIELDS}

    def __post_init__(self) -> None:
        def fail(name: str, why: str) -> None:
            raise ConfigError(f"policy.{name} {why}, got {getattr(self, name)!r}")

        for name, allowed in (("init", ("scratch", "champion")), ("bc_loss", BC_LOSSES),
                              ("augmentation", AUGMENTATIONS), ("lr_schedule", LR_SCHEDULES),
                              ("episodes", EPISODE_FILTERS)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"policy.{name}: unknown value {getattr(self, name)!r}; "
                                  f"allowed values: {', '.join(allowed)}")
        self.cnn_channels = tuple(self.cnn_channels)
        if not self.cnn_channels or any(int(c) < 1 for c in self.cnn_channels):
            fail("cnn_channels", "must be a non-empty list of positive channel counts")
        for name in ("hidden_size", "num_layers", "num_heads", "mlp_ratio", "batch_size", "steps"):
            if getattr(self, name) < 1:
                fail(name, "must be >= 1")
        if self.hidden_size % self.num_heads:
            fail("hidden_size", f"must be divisible by policy.num_heads ({self.num_heads})")
        if not 0.0 <= self.dropout < 1.0:
            fail("dropout", "must be in [0, 1)")
        if not 0.0 < self.std_min < self.std_max:
            fail("std_min", f"must satisfy 0 < std_min < std_max ({self.std_max})")
        if self.std_loss_weight < 0:
            fail("std_loss_weight", "must be >= 0")
        if self.shift_pad < 0:
            fail("shift_pad", "must be >= 0")
        if self.lr <= 0:
            fail("lr", "must be > 0")
        if self.weight_decay < 0:
            fail("weight_decay", "must be >= 0")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            fail("min_lr_ratio", "must be in [0, 1]")
        if self.grad_clip < 0:
            fail("grad_clip", "must be >= 0 (0 disables clipping)")
        for name in ("keypoints", "warmup_steps", "eval_interval", "checkpoint_interval"):
            if getattr(self, name) < 0:
                fail(name, "must be >= 0")
        if self.eval_chunks < 1:
            fail("eval_chunks", "must be >= 1")
        if self.log_interval < 1:
            fail("log_interval", "must be >= 1")

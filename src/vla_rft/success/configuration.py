"""Hyperparameters of the success model and its training (``success_model:`` in params.yaml).

Imports only :mod:`vla_rft.errors`, so loading a config never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from vla_rft.errors import ConfigError

ARCHITECTURE_FIELDS: tuple[str, ...] = ("input", "channels", "hidden_size", "task_embedding", "keypoints",
                                         "relative_state")
#: what a saved model whose config.json predates a field was built with
ARCHITECTURE_LEGACY: dict[str, object] = {"keypoints": 0, "input": "frame", "relative_state": False}
INPUTS: tuple[str, ...] = ("frame", "state")
THRESHOLD_RULES: tuple[str, ...] = ("precision", "balanced_accuracy")


@dataclass
class SuccessModelConfig:
    """A classifier p(success | frame or state, task), trained on real frames/states labelled by the simulator."""

    #: what the judge reads: "frame" = one RGB frame (a conv net); "state" = the proprio state and
    #: the environment state (objects, goal: ``observation.environment_state``) through an MLP, for
    #: a world model that predicts them (``world_model.environment_state``). A task is solved by
    #: where its object is, to a few cm: a 64 px frame shows that to a pixel or two, a state exactly
    input: Literal["frame", "state"] = "frame"
    #: with ``input: state``, also feed the differences hand - object, object - goal and hand - goal (xyz
    #: each): tasks succeed by a distance between two of them. Off: no help at 1500 steps (docs/decisions.md)
    relative_state: bool = False

    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 64])  #: conv widths, one stride-2 layer each
    hidden_size: int = 64  #: width of the head after pooling
    task_embedding: int = 16  #: learned per-task embedding, concatenated before the head
    #: spatial-softmax keypoints (expected x, y of each of this many learned feature maps) read from
    #: the 1/4-resolution conv map and concatenated before the head; 0: average pooling alone,
    #: which keeps what is in the frame but not where (reach and pick-place succeed by where)
    keypoints: int = 0
    lr: float = 0.001
    weight_decay: float = 0.0001
    batch_size: int = 64  #: half positive, half negative frames (successes are ~10 % of frames)
    steps: int = 1500
    grad_clip: float = 1.0
    #: how the decision threshold is chosen on held-out (val) frames: "precision" = the lowest
    #: threshold whose val precision reaches ``target_precision`` (a false success is a rewarded
    #: hallucination); "balanced_accuracy" = the threshold maximising (TPR + TNR) / 2
    threshold_rule: Literal["precision", "balanced_accuracy"] = "precision"
    target_precision: float = 0.95
    #: then this many fine-tune steps on imagined frames labelled by the real outcome
    #: (``success/imagined.py``: recorded episodes replayed in the world model, needs
    #: ``--world-model``); the threshold is then calibrated on val episodes' imagined frames. 0: off
    imagined_steps: int = 1000
    imagined_share: float = 0.5  #: share of each fine-tune batch from imagined frames (the rest real)
    imagined_keyframes: int = 1  #: replays per episode started inside it, besides its reset frame
    checkpoint_interval: int = 500
    log_interval: int = 50

    def __post_init__(self) -> None:
        if self.input not in INPUTS:
            raise ConfigError(f"success_model.input: unknown value {self.input!r}; allowed: {', '.join(INPUTS)}")
        if self.input == "state" and self.keypoints:
            raise ConfigError("success_model.keypoints are read from a frame: set 0 with success_model.input=state")
        if not self.channels or any(c < 1 for c in self.channels):
            raise ConfigError(f"success_model.channels must be a non-empty list of positive widths, got {self.channels}")
        for name in ("hidden_size", "task_embedding", "batch_size", "steps", "log_interval"):
            if getattr(self, name) < 1:
                raise ConfigError(f"success_model.{name} must be >= 1, got {getattr(self, name)}")
        if self.keypoints < 0:
            raise ConfigError(f"success_model.keypoints must be >= 0, got {self.keypoints}")
        if self.keypoints and len(self.channels) < 2:
            raise ConfigError("success_model.keypoints reads the second conv layer's map: channels needs >= 2 widths")
        if self.batch_size < 2:
            raise ConfigError(f"success_model.batch_size must be >= 2 (half positives, half negatives), got {self.batch_size}")
        if not 0 < self.lr < 1:
            raise ConfigError(f"success_model.lr must be in (0, 1), got {self.lr}")
        if not 0 < self.imagined_share <= 1:
            raise ConfigError(f"success_model.imagined_share must be in (0, 1], got {self.imagined_share}")
        for name in ("weight_decay", "grad_clip", "checkpoint_interval", "imagined_steps", "imagined_keyframes"):
            if getattr(self, name) < 0:
                raise ConfigError(f"success_model.{name} must be >= 0, got {getattr(self, name)}")
        if self.threshold_rule not in THRESHOLD_RULES:
            raise ConfigError(f"success_model.threshold_rule: unknown value {self.threshold_rule!r}; "
                              f"allowed: {', '.join(THRESHOLD_RULES)}")
        if not 0 < self.target_precision <= 1:
            raise ConfigError(f"success_model.target_precision must be in (0, 1], got {self.target_precision}")

    def check_trainable(self) -> None:
        """Settings valid one by one but not together for training (a loaded model's config skips this:
        its training fields are defaults)."""
        if self.input == "state" and self.imagined_steps:
            raise ConfigError("success_model.input=state trains on real states only: set success_model.imagined_steps=0 "
                              "(the imagined fine-tune replays frames)")

    def architecture(self) -> dict:
        """The fields that define the network, as written to the model's config.json."""
        return {name: (list(v) if isinstance(v := getattr(self, name), tuple) else v) for name in ARCHITECTURE_FIELDS}

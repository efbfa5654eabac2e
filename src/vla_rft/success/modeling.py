"""The success model: p(task solved | frame, task), the judge of imagined episodes.

After WMPO (a learned success classifier on imagined frames; success at the first window with
p >= 0.96) and WoVR (a frame reward model, threshold 0.9): a few stride-2 conv layers over one
RGB frame, global average pooling (plus, with ``keypoints``, the expected image coordinates of learned
feature maps at 1/4 resolution: where the hand, object and goal marker are), a learned task
embedding, a small MLP -> one logit. The
decision threshold is calibrated on held-out real episodes (``success/train.py``) and stored
next to the weights in ``calibration.json``; ``config.json`` holds the architecture only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from vla_rft.policy.modeling import spatial_softmax
from vla_rft.success.configuration import ARCHITECTURE_FIELDS, ARCHITECTURE_LEGACY, SuccessModelConfig
from vla_rft.tasks import ENV_STATE_DIM, STATE_DIM

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CALIBRATION_NAME = "calibration.json"
MODEL_TYPE = "vla_rft_success_model"


def relative_positions(states: torch.Tensor) -> torch.Tensor:
    """Hand - object, object - goal, hand - goal (B, 9), in decimetres, from proprio + environment states
    (B, STATE_DIM + ENV_STATE_DIM) laid out as ``tasks.STATE_NAMES`` + ``tasks.ENV_STATE_NAMES``."""
    hand = states[:, 0:3]
    obj = states[:, STATE_DIM:STATE_DIM + 3]
    goal = states[:, STATE_DIM + ENV_STATE_DIM - 3:STATE_DIM + ENV_STATE_DIM]
    return torch.cat([hand - obj, obj - goal, hand - goal], -1) * 10.0


class SuccessModel(nn.Module):
    """Frames (B, 3, H, W) uint8 (``input: frame``) or states (B, state_dim) (``input: state``: proprio
    then environment state, as a world model with ``environment_state`` predicts them) + task indices
    (B,) -> success logits (B,)."""

    def __init__(self, config: SuccessModelConfig, *, image_size: int, tasks: Sequence[str], state_dim: int = 0):
        super().__init__()
        if not tasks:
            raise ValueError("a success model needs at least one task")
        if (config.input == "state") != (state_dim > 0):
            raise ValueError(f"success_model.input={config.input!r} needs state_dim > 0 exactly for 'state', got {state_dim}")
        if config.input == "state" and config.relative_state and state_dim != STATE_DIM + ENV_STATE_DIM:
            raise ValueError(f"success_model.relative_state reads hand, object and goal from states of "
                             f"{STATE_DIM + ENV_STATE_DIM} entries, got {state_dim}")
        self.config, self.image_size, self.tasks, self.state_dim = config, image_size, list(tasks), state_dim
        layers, c_in = [], 3
        if config.input == "state":  # an MLP over the normalised state; the widths are channels'
            self.register_buffer("state_mean", torch.zeros(state_dim))
            self.register_buffer("state_std", torch.ones(state_dim))
            c_in = state_dim + (9 if config.relative_state else 0)
            for c in config.channels:
                layers += [nn.Linear(c_in, c), nn.LayerNorm(c), nn.SiLU()]
                c_in = c
        else:
            for c in config.channels:
                layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.GroupNorm(min(8, c), c), nn.SiLU()]
                c_in = c
        self.encoder = nn.Sequential(*layers)
        self.keypoint_logits = nn.Conv2d(config.channels[1], config.keypoints, 1) if config.keypoints else None
        self.task_embeddings = nn.Embedding(len(self.tasks), config.task_embedding)
        width = c_in + 2 * config.keypoints + config.task_embedding
        self.head = nn.Sequential(nn.Linear(width, config.hidden_size), nn.SiLU(),
                                  nn.Linear(config.hidden_size, 1))
        self.threshold = 0.5  #: decision threshold on p; set by calibration, saved in calibration.json
        #: a threshold per task name, calibrated on that task's val frames (calibration.json
        #: ``thresholds_per_task``); empty for a model calibrated before they existed
        self.task_thresholds: dict[str, float] = {}

    def set_state_normalization(self, mean, std) -> None:
        """The train states' statistics (saved with the weights); constant entries keep std 1."""
        std = torch.as_tensor(std, dtype=torch.float32)
        self.state_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.state_std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))

    def inputs(self, frames: torch.Tensor, states: torch.Tensor | None) -> torch.Tensor:
        """What this judge reads of an episode's frames (N, ..., 3, H, W) and world-model states (N, ..., S)."""
        if self.config.input == "frame":
            return frames
        if states is None or states.shape[-1] != self.state_dim:
            raise ValueError(f"this success model reads states of {self.state_dim} entries (proprio + environment "
                             f"state), got {None if states is None else states.shape[-1]}: judge a world model "
                             "trained with world_model.environment_state on data of the same tasks")
        return states

    def forward(self, images: torch.Tensor, task_index: torch.Tensor) -> torch.Tensor:
        device = self.task_embeddings.weight.device
        if self.config.input == "state":
            if images.dim() != 2 or images.shape[1] != self.state_dim:
                raise ValueError(f"states must be (B, {self.state_dim}), got {tuple(images.shape)}")
            states = images.to(device).float()
            x = (states - self.state_mean) / self.state_std
            if self.config.relative_state:
                x = torch.cat([x, relative_positions(states)], -1)
            x = self.encoder(x)
            task = self.task_embeddings(task_index.to(device).long().reshape(-1))
            return self.head(torch.cat([x, task], -1)).squeeze(-1)
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        x = images.to(device)
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        x = x * 2 - 1
        parts = []
        for i, layer in enumerate(self.encoder):
            x = layer(x)
            if self.keypoint_logits is not None and i == 5:  # conv, norm, act per block: the 2nd block's output
                parts.append(spatial_softmax(self.keypoint_logits(x)))
        parts.insert(0, x.mean(dim=(2, 3)))
        parts.append(self.task_embeddings(task_index.to(device).long().reshape(-1)))
        return self.head(torch.cat(parts, -1)).squeeze(-1)

    @torch.no_grad()
    def probability(self, images: torch.Tensor, task_index: torch.Tensor, batch: int = 256) -> torch.Tensor:
        """p(success) for any number of frames, in batches, without grad."""
        was = self.training
        self.eval()
        out = torch.cat([torch.sigmoid(self(images[i:i + batch], task_index[i:i + batch]))
                         for i in range(0, len(images), batch)]) if len(images) else torch.zeros(0)
        self.train(was)
        return out

    def task_order(self, tasks: Sequence[str]) -> list[int]:
        """This model's task index for each of ``tasks`` (a named error for a task it never saw)."""
        missing = [t for t in tasks if t not in self.tasks]
        if missing:
            raise ValueError(f"the success model was not trained on task(s) {missing}; it knows {self.tasks}")
        return [self.tasks.index(t) for t in tasks]

    # -- persistence ------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path, calibration: dict | None = None) -> Path:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(directory / WEIGHTS_NAME), metadata={"format": "pt", "model_type": MODEL_TYPE})
        meta = {"model_type": MODEL_TYPE, "image_size": self.image_size, "tasks": self.tasks,
                "state_dim": self.state_dim, "architecture": self.config.architecture()}
        (directory / CONFIG_NAME).write_text(json.dumps(meta, indent=2))
        tmp = directory / f".{CALIBRATION_NAME}.tmp"
        tmp.write_text(json.dumps({"threshold": self.threshold, **(calibration or {})}, indent=2))
        os.replace(tmp, directory / CALIBRATION_NAME)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu") -> "SuccessModel":
        from safetensors.torch import load_file

        directory = Path(directory)
        for name in (CONFIG_NAME, WEIGHTS_NAME, CALIBRATION_NAME):
            if not (directory / name).exists():
                raise FileNotFoundError(f"{directory} is not a saved success model: {name} is missing")
        meta = json.loads((directory / CONFIG_NAME).read_text())
        if meta.get("model_type") != MODEL_TYPE:
            raise ValueError(f"{directory / CONFIG_NAME}: model_type {meta.get('model_type')!r}, expected {MODEL_TYPE!r}")
        arch = {**ARCHITECTURE_LEGACY, **{k: v for k, v in meta["architecture"].items() if k in ARCHITECTURE_FIELDS}}
        model = cls(SuccessModelConfig(**arch), image_size=meta["image_size"], tasks=meta["tasks"],
                    state_dim=int(meta.get("state_dim", 0)))
        model.load_state_dict(load_file(str(directory / WEIGHTS_NAME)))
        calibration = json.loads((directory / CALIBRATION_NAME).read_text())
        model.threshold = float(calibration["threshold"])
        model.task_thresholds = {k: float(v) for k, v in calibration.get("thresholds_per_task", {}).items()}
        return model.to(device).eval()

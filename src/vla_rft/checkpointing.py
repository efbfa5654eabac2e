"""Training checkpoints that resume exactly: one safetensors file, written atomically.

Tensors (model weights, optimizer state, torch/CUDA/numpy RNG states) go into the safetensors
body, everything JSON-able (step, curves, optimizer hyperparameters) into its metadata. Never
pickle: a checkpoint is data, not code. The file is written under a temporary name and renamed,
so a process killed mid-write leaves the previous checkpoint intact.

Also the checkpoint-directory policy the training stages share: where checkpoints live for an
output URI, and whether a re-run resumes (same settings fingerprint) or starts fresh.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


def save_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, extra: dict,
                    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None) -> None:
    """Write model, optimizer (and scheduler), RNG states and ``extra`` (JSON-able) to ``path`` atomically."""
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    for pid, state in opt["state"].items():
        for key, value in state.items():
            tensors[f"optim.{pid}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    np_state = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(np_state[1].astype(np.int64))
    py_version, py_state, py_gauss = random.getstate()
    meta = {**extra, "param_groups": opt["param_groups"], "numpy_rng": [np_state[0], *map(float, np_state[2:])],
            "python_rng": [py_version, list(py_state), py_gauss]}
    if scheduler is not None:
        meta["scheduler"] = scheduler.state_dict()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    save_file(tensors, str(tmp), metadata={"state": json.dumps(meta)})
    os.replace(tmp, path)


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None) -> dict:
    """Restore what :func:`save_checkpoint` wrote; returns ``extra``."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["state"])
    tensors = load_file(str(path))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True)
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta.pop("param_groups")})
    torch.set_rng_state(tensors["rng.torch"])
    cuda_states = [tensors[f"rng.cuda.{i}"] for i in range(torch.cuda.device_count()) if f"rng.cuda.{i}" in tensors]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states)
    name, *rest = meta.pop("numpy_rng")
    np.random.set_state((name, tensors["rng.numpy"].numpy().astype(np.uint32), int(rest[0]), int(rest[1]), rest[2]))
    py_version, py_state, py_gauss = meta.pop("python_rng")
    random.setstate((py_version, tuple(py_state), py_gauss))
    sched = meta.pop("scheduler", None)
    if scheduler is not None and sched is not None:
        scheduler.load_state_dict(sched)
    return meta


# -- where a training stage keeps its checkpoints, and whether it resumes --------------------------
def settings_fingerprint(obj: Any) -> str:
    """A short stable hash of JSON-able settings (config sections, input manifests)."""
    import hashlib

    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def checkpoint_dir_for(out_uri: str, stage: str, explicit: str | Path | None = None) -> Path:
    """Where a training stage keeps its checkpoints: persistent, so re-running the command resumes.

    Local outputs keep them next to the output (``<out>.ckpt/``); S3 outputs under
    ``$VLA_RFT_CACHE`` (default ``~/.cache/vla-rft``), keyed by the output URI.
    """
    if explicit:
        return Path(explicit)
    if out_uri.startswith("s3://"):
        root = Path(os.environ.get("VLA_RFT_CACHE", Path.home() / ".cache" / "vla-rft"))
        return root / "checkpoints" / stage / settings_fingerprint(out_uri)
    out = Path(out_uri)
    return out.with_name(out.name + ".ckpt")


def checkpoint_files(ckpt_dir: Path, stage: str) -> list[Path]:
    """The files a stage writes into its checkpoint directory (its checkpoint, temp files, its marker)."""
    ckpt_dir = Path(ckpt_dir)
    name = f"{stage}_checkpoint.safetensors"
    return [ckpt_dir / name, *ckpt_dir.glob(f".{name}.tmp-*"), ckpt_dir / f"{stage}.fingerprint"]


def prepare_checkpoint_dir(out_uri: str, stage: str, settings: dict, explicit: str | Path | None,
                           restart: bool) -> tuple[Path, bool]:
    """The stage's checkpoint directory and whether to resume from it (a checkpoint of the same settings).

    Only this stage's own files (``<stage>_checkpoint.safetensors`` and ``<stage>.fingerprint``) are
    ever deleted (on ``restart`` or a settings change): a ``--checkpoint-dir`` may hold the user's
    files or another stage's checkpoints.
    """
    ckpt_dir = checkpoint_dir_for(out_uri, stage, explicit)
    if ckpt_dir.exists() and not ckpt_dir.is_dir():
        from vla_rft.errors import ConfigError

        raise ConfigError(f"checkpoint directory {ckpt_dir} is a file, not a directory")
    fingerprint = settings_fingerprint(settings)
    checkpoint, *_, marker = checkpoint_files(ckpt_dir, stage)
    stale = marker.exists() and marker.read_text().strip() != fingerprint  # another configuration's
    if restart or stale or not marker.exists():
        for path in checkpoint_files(ckpt_dir, stage):
            path.unlink(missing_ok=True)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    resumable = marker.exists() and checkpoint.exists()
    tmp = marker.with_name(f".{marker.name}.tmp-{os.getpid()}")
    tmp.write_text(fingerprint)
    os.replace(tmp, marker)
    return ckpt_dir, resumable

"""Training idioms every training loop shares, one copy each (nanoGPT's single ``get_lr``):
the warmup + cosine learning rate, AdamW's decay / no-decay parameter groups, the curve writer."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from torch import nn


def scheduled_lr(base_lr: float, step: int, *, warmup_steps: int, total_steps: int, schedule: str,
                 min_lr_ratio: float) -> float:
    """Linear warmup over ``warmup_steps``, then cosine decay to ``base_lr * min_lr_ratio`` at
    ``total_steps`` (or constant after the warmup when ``schedule == "constant"``)."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return base_lr
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return base_lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def decay_param_groups(model: nn.Module, weight_decay: float, no_decay_names: Iterable[str] = ()) -> list[dict]:
    """AdamW groups over the trainable parameters: weight decay on matrices and conv kernels only;
    biases, norms, embeddings and the named parameters (e.g. learned query tokens) are not decayed."""
    skip = set(no_decay_names)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exempt = p.ndim < 2 or "embeddings" in name or "norm" in name.lower() or name in skip
        (no_decay if exempt else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def write_curves(out_dir: Path, rows: Sequence[dict[str, Any]], fields: Sequence[str]) -> None:
    """``curves.csv`` (the named columns; missing values empty) and ``curves.json`` (every row as logged)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "curves.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(fields))
        writer.writeheader()
        writer.writerows([{k: ("" if r.get(k) is None else r[k]) for k in fields} for r in rows])
    (out_dir / "curves.json").write_text(json.dumps(list(rows), indent=1))

"""Train/val split by episode, per task, so every task appears in validation."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def split_by_episode(episode_tasks: Sequence[int], val_fraction: float, rng: np.random.Generator) -> list[str]:
    """"train" or "val" for each episode (given by its task index).

    Per task, ``ceil(val_fraction * n)`` episodes go to val, drawn by ``rng``; a task with a single
    episode keeps it for training.
    """
    by_task: dict[int, list[int]] = {}
    for j, task in enumerate(episode_tasks):
        by_task.setdefault(int(task), []).append(j)
    val: set[int] = set()
    for idx in by_task.values():
        n_val = math.ceil(val_fraction * len(idx)) if len(idx) > 1 else 0
        val.update(rng.permutation(idx)[:n_val].tolist())
    return ["val" if j in val else "train" for j in range(len(episode_tasks))]

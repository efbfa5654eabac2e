"""A torch Dataset of action chunks: (start frame, state, instruction id, K actions, K future frames)."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from vla_rft.data.parquet import LoadedDataset


class ChunkDataset(Dataset):
    """Every start ``t`` of a split whose K actions and K future frames lie inside one episode.

    Items are dicts of tensors: ``image`` (3, H, W) uint8 (frame t), ``state`` (S,), ``task_index``
    (), ``actions`` (K, A) as executed, ``expert_actions`` (K, A) clean labels, ``future_images``
    (K, 3, H, W) uint8 (frames t+1..t+K), ``episode_index`` and ``frame_index``.
    Images stay uint8 so a whole split fits in memory; models normalise them.
    """

    def __init__(self, data: LoadedDataset, split: str, chunk_len: int = 8):
        if chunk_len < 1:
            raise ValueError(f"chunk_len must be >= 1, got {chunk_len}")
        self.data = data
        self.chunk_len = chunk_len
        starts = []
        for ep in data.episodes_in(split):
            lo, hi = ep["dataset_from_index"], ep["dataset_to_index"]
            # row t holds frame t and action t; frames t+1..t+K must exist inside the episode
            starts.extend(range(lo, hi - chunk_len))
        if not starts:
            raise ValueError(f"split {split!r} has no episode longer than chunk_len={chunk_len}")
        self.starts = np.asarray(starts, dtype=np.int64)
        # channel-first views built once; indexing copies only the rows needed
        self._images = torch.from_numpy(np.ascontiguousarray(data.images.transpose(0, 3, 1, 2)))
        self._states = torch.from_numpy(data.states)
        self._actions = torch.from_numpy(data.actions)
        self._expert = torch.from_numpy(data.expert_actions)
        self._task = torch.from_numpy(data.task_index)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        t = int(self.starts[i])
        k = self.chunk_len
        return {
            "image": self._images[t],
            "state": self._states[t],
            "task_index": self._task[t],
            "actions": self._actions[t:t + k],
            "expert_actions": self._expert[t:t + k],
            "future_images": self._images[t + 1:t + 1 + k],
            "episode_index": torch.tensor(int(self.data.episode_index[t])),
            "frame_index": torch.tensor(int(self.data.frame_index[t])),
        }

    def batch(self, indices) -> dict[str, torch.Tensor]:
        """Gather a batch directly (faster than a DataLoader for in-memory data)."""
        t = torch.from_numpy(self.starts[np.asarray(indices)])
        k = self.chunk_len
        offs = torch.arange(k)
        return {
            "image": self._images[t],
            "state": self._states[t],
            "task_index": self._task[t],
            "actions": self._actions[t[:, None] + offs],
            "expert_actions": self._expert[t[:, None] + offs],
            "future_images": self._images[t[:, None] + 1 + offs],
        }

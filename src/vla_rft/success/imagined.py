"""Imagined frames labelled by the real outcome: what the success model must judge during RFT.

A judge trained on real frames reads the world model's frames poorly: at standard scale its AUC
was 0.983 on real val frames and 0.52 on imagined episodes against their real outcome
(docs/decisions.md). This module makes training data of the kind RFT feeds it: every recorded
episode (expert or policy rollout, failures included) is replayed in the world model, closed
loop on frames (each chunk starts from the frame the world model predicted for the previous
one, as in :func:`vla_rft.world_model.imagine.imagine_episodes`) and open loop on actions (the
recorded ones). The frame predicted after chunk ``h`` gets the simulator's success flag of the
last action of that chunk, the real outcome of the same actions from the same start.

Starts: each episode's reset frame, and ``keyframes_per_episode`` frames drawn inside it (the
starts RFT's ``keyframe_share`` uses); at most ``horizon`` chunks from each start, never past the
recorded episode's end.

    frames = replay_frames(world_model, data, "train", horizon=12, keyframes_per_episode=1, seed=0)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vla_rft.data import LoadedDataset
from vla_rft.world_model.imagine import imagine_episodes


@dataclass
class ImaginedFrames:
    """M imagined frames with the real success flag of the actions that led to them."""

    frames: torch.Tensor  #: (M, 3, h, w) uint8
    task_index: np.ndarray  #: (M,) the dataset's task index
    labels: np.ndarray  #: (M,) bool: the simulator's success flag after the same actions
    episode: np.ndarray  #: (M,) the recorded episode's index in ``data.episodes``
    start: np.ndarray  #: (M,) 0 for the imagined episode started at the reset frame, k for its k-th keyframe start
    chunk: np.ndarray  #: (M,) chunks imagined before this frame, minus one (0 = after the first)

    def __len__(self) -> int:
        return len(self.labels)


def replay_starts(data: LoadedDataset, split: str, chunk_len: int, keyframes_per_episode: int,
                  seed: int) -> list[tuple[int, int, int]]:
    """``(episode index, start row, start number)`` of every replay: each episode of ``split`` with at
    least one whole chunk, from its reset frame and from ``keyframes_per_episode`` rows drawn
    uniformly after the reset and before its last whole chunk (none in a one-chunk episode; from ``rng(seed, episode)``, so a split's starts do not
    depend on the others)."""
    if keyframes_per_episode < 0:
        raise ValueError(f"keyframes_per_episode must be >= 0, got {keyframes_per_episode}")
    index_of = {id(e): i for i, e in enumerate(data.episodes)}
    out = []
    for ep in data.episodes_in(split):
        e, lo, length = index_of[id(ep)], int(ep["dataset_from_index"]), int(ep["length"])
        if length < chunk_len:
            continue
        out.append((e, lo, 0))
        rng = np.random.default_rng([seed, 411, e])
        span = length - chunk_len  # a keyframe start leaves at least one whole chunk
        for k in range(keyframes_per_episode if span >= 1 else 0):
            out.append((e, lo + int(rng.integers(1, span + 1)), k + 1))
    return out


def replay_frames(world_model, data: LoadedDataset, split: str, *, horizon: int, keyframes_per_episode: int,
                  seed: int, batch: int = 64) -> ImaginedFrames:
    """Replay every start of :func:`replay_starts` in ``world_model`` for up to ``horizon`` chunks."""
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1 chunk, got {horizon}")
    k = world_model.chunk_len
    starts = replay_starts(data, split, k, keyframes_per_episode, seed)
    if not starts:
        empty = np.zeros(0, np.int64)
        return ImaginedFrames(torch.zeros((0, 3, data.image_size, data.image_size), dtype=torch.uint8), empty,
                              np.zeros(0, bool), empty, empty, empty)
    parts: dict[str, list] = {n: [] for n in ("frames", "task_index", "labels", "episode", "start", "chunk")}
    images_all = torch.from_numpy(np.ascontiguousarray(data.images.transpose(0, 3, 1, 2)))
    for lo in range(0, len(starts), batch):
        group = starts[lo:lo + batch]
        ends = np.array([data.episodes[e]["dataset_to_index"] for e, _, _ in group])
        rows = np.array([r for _, r, _ in group])
        chunks = np.minimum((ends - rows) // k, horizon)  # whole recorded chunks from each start
        h = int(chunks.max())
        # the recorded actions of each chunk; past an episode's end the last action repeats (never kept)
        idx = np.minimum(rows[:, None] + np.arange(h * k)[None], ends[:, None] - 1)
        actions = torch.from_numpy(data.actions[idx]).reshape(len(group), h, k, -1)
        start_states = world_model.model_states(data.states[rows], None if data.env_states is None else data.env_states[rows])
        episodes = imagine_episodes(world_model, lambda _i, _s, _t, c: actions[:, c], images_all[rows],
                                    start_states, torch.from_numpy(data.task_index[rows]), h)
        for j, (e, r, s) in enumerate(group):
            n = int(chunks[j])
            parts["frames"].append(episodes.last_frames[j, :n])
            parts["task_index"].append(np.full(n, data.task_index[r]))
            parts["labels"].append(data.successes[r + (np.arange(n) + 1) * k - 1].astype(bool))
            parts["episode"].append(np.full(n, e))
            parts["start"].append(np.full(n, s))
            parts["chunk"].append(np.arange(n))
    return ImaginedFrames(torch.cat(parts["frames"]), np.concatenate(parts["task_index"]),
                          np.concatenate(parts["labels"]), np.concatenate(parts["episode"]),
                          np.concatenate(parts["start"]), np.concatenate(parts["chunk"]))

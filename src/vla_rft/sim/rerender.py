"""Recorded episodes seen through another camera or at another resolution: replay, re-render.

An episode is fully determined by its ``EpisodeSpec(task, seed, perturbation)`` and the actions it
executed (the ``action`` column holds what was executed, exploration noise included), and the
simulator is deterministic. Replaying those actions from the same reset therefore retraces the
recorded trajectory; rendering each step with another ``camera`` or ``image_size`` gives the same
episode seen differently, with the same states, actions and success flags. That isolates what a
view can show from what a policy did: the same trajectories, judged through several views
(``benchmarks/judge_views.py``). The replayed success flags are compared with the recorded ones,
step by step; a mismatch means the replay left the recorded trajectory and is counted, never hidden.

    view = rerender(data, image_size=128, camera="topview", tasks=["reach"])
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from vla_rft.data import LoadedDataset
from vla_rft.sim.env import get_env
from vla_rft.sim.perturbations import EpisodeSpec


@dataclass
class Rerendered:
    data: LoadedDataset  #: the chosen episodes, renumbered, with the new frames (everything else recorded)
    mismatched_steps: int  #: steps whose replayed success flag differs from the recorded one
    mismatched_episodes: int  #: episodes with at least one such step


def select_tasks(data: LoadedDataset, tasks: Sequence[str] | None = None) -> LoadedDataset:
    """The episodes of ``tasks`` (default: all), renumbered, their frames copied out; the task list and
    task indices stay the dataset's, so models trained on the result know the same tasks."""
    unknown = [t for t in (tasks or []) if t not in data.tasks]
    if unknown:
        raise ValueError(f"task(s) {unknown} are not in the dataset; it holds {data.tasks}")
    wanted = set(tasks) if tasks else set(data.tasks)
    chosen = [ep for ep in data.episodes if data.tasks[int(ep["task_index"])] in wanted]
    if not chosen:
        raise ValueError(f"the dataset has no episode of {sorted(wanted)}")
    rows, episodes, offset = [], [], 0
    for new_index, ep in enumerate(chosen):
        lo, hi = int(ep["dataset_from_index"]), int(ep["dataset_to_index"])
        rows.append(np.arange(lo, hi))
        episodes.append({**ep, "episode_index": new_index, "dataset_from_index": offset, "dataset_to_index": offset + hi - lo})
        offset += hi - lo
    episode_index = np.repeat(np.arange(len(episodes)), [len(r) for r in rows])
    rows = np.concatenate(rows)
    return replace(data, episodes=episodes, images=data.images[rows], states=data.states[rows],
                   actions=data.actions[rows], expert_actions=data.expert_actions[rows], rewards=data.rewards[rows],
                   successes=data.successes[rows], task_index=data.task_index[rows], episode_index=episode_index,
                   frame_index=data.frame_index[rows],
                   env_states=None if data.env_states is None else data.env_states[rows],
                   info={**data.info, "total_episodes": len(episodes), "total_frames": offset})


def rerender(data: LoadedDataset, *, image_size: int, camera: str, goal_marker_scale: float = 3.0,
             tasks: Sequence[str] | None = None) -> Rerendered:
    """Every episode of ``tasks`` (default: all; :func:`select_tasks`) replayed from its nominal reset
    with its executed actions and rendered at ``image_size`` px by ``camera``."""
    data = select_tasks(data, tasks)
    perturbed = sorted({str(ep["perturbation"]) for ep in data.episodes} - {"nominal"})
    if perturbed:
        raise ValueError(f"re-rendering replays nominal layouts only; the dataset holds {perturbed}")
    frames, mismatched_steps, mismatched_episodes = [], 0, 0
    for ep in data.episodes:
        lo, hi = int(ep["dataset_from_index"]), int(ep["dataset_to_index"])
        task = data.tasks[int(ep["task_index"])]
        env = get_env(task, image_size, camera, goal_marker_scale)
        env.reset(EpisodeSpec(task, int(ep["seed"])))
        replayed = np.zeros(hi - lo, bool)
        for t in range(hi - lo):  # frame t shows the scene before action t
            frames.append(env.render())
            replayed[t] = env.step(data.actions[lo + t]).success
        wrong = int((replayed != data.successes[lo:hi].astype(bool)).sum())
        mismatched_steps += wrong
        mismatched_episodes += wrong > 0
    view = replace(data, images=np.stack(frames),
                   info={**data.info, "rerendered": {"image_size": image_size, "camera": camera}})
    return Rerendered(view, mismatched_steps, mismatched_episodes)

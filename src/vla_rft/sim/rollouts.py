"""A policy's own episodes in the real simulator, recorded like the expert's (failures included).

The policy is any callable ``act(frames, states, task_index) -> actions``: frames ``(B, H, W, 3)
uint8``, states ``(B, S)``, ``task_index`` ``(B,)`` into ``tasks``, actions ``(B, K, A)``; the
simulator knows nothing else about it. Execution is chunked and batched over
:class:`~vla_rft.sim.vector.BatchedSimulator`; with ``record=True`` every step's frame, state,
action and success flag is kept (an :class:`~vla_rft.sim.experts.EpisodeRecord` per episode),
otherwise only the outcome.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from vla_rft.sim.experts import EpisodeRecord
from vla_rft.sim.perturbations import EpisodeSpec
from vla_rft.tasks import ENV_STATE_DIM

PolicyFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def record_policy_episodes(sim, specs: Sequence[EpisodeSpec], act: PolicyFn, tasks: Sequence[str], *,
                           max_steps: int, post_success_steps: int = 0, batch_size: int = 12,
                           record: bool = True, noisy: bool = False, progress=None) -> list[EpisodeRecord]:
    """Run ``act`` from each spec's layout until ``post_success_steps`` after its first success or
    ``max_steps``; returns one record per spec, in order. ``expert_actions`` holds the executed
    actions (a policy episode has no other label). With ``record=False`` frames/states/actions
    are empty (0 rows) and only ``success`` / ``first_success_step`` are meaningful."""
    out: list[EpisodeRecord] = []
    old = sim.max_episode_steps
    sim.max_episode_steps = max_steps
    try:
        for lo in range(0, len(specs), batch_size):
            batch = list(specs[lo:lo + batch_size])
            out += _run_batch(sim, batch, act, tasks, max_steps, post_success_steps, record, noisy)
            if progress is not None:
                progress.update(len(batch))
    finally:
        sim.max_episode_steps = old
    return out


def _run_batch(sim, batch, act, tasks, max_steps, post, record, noisy) -> list[EpisodeRecord]:
    n = len(batch)
    obs = sim.reset(batch)
    frames, states = obs.frames, obs.states.astype(np.float32)
    task_index = np.array([list(tasks).index(s.task) for s in batch], np.int64)
    rec_f = [[frames[i]] for i in range(n)]
    rec_s = [[states[i]] for i in range(n)]
    rec_e = [[obs.env_states[i].astype(np.float32)] for i in range(n)]
    rec_a: list[list[np.ndarray]] = [[] for _ in range(n)]
    rec_ok: list[list[bool]] = [[] for _ in range(n)]
    rec_r: list[list[float]] = [[] for _ in range(n)]
    steps = np.zeros(n, np.int64)
    first = np.full(n, -1, np.int64)
    done = np.zeros(n, bool)
    while not done.all():
        live = np.flatnonzero(~done)
        chunk = np.clip(np.asarray(act(frames[live], states[live], task_index[live]), np.float32), -1.0, 1.0)
        if chunk.ndim != 3 or chunk.shape[0] != len(live) or not np.all(np.isfinite(chunk)):
            raise ValueError(f"the policy returned actions of shape {chunk.shape} (or non-finite values); "
                             f"expected finite (B={len(live)}, K, A)")
        actions = np.zeros((n, *chunk.shape[1:]), np.float32)
        actions[live] = chunk
        step = sim.step_chunk(actions, render="all" if record else "last", active=~done)
        frames, states = step.frames[:, -1], step.states.astype(np.float32)
        for b in live:
            for j in range(int(step.steps[b])):
                if record:
                    rec_a[b].append(actions[b, j])
                    rec_ok[b].append(bool(step.step_success[b, j]))
                    rec_r[b].append(float(step.rewards[b, j]))
                    rec_f[b].append(step.frames[b, j])  # the frame after action j
                    rec_s[b].append(step.step_states[b, j].astype(np.float32))
                    rec_e[b].append(step.step_env_states[b, j].astype(np.float32))
                if step.step_success[b, j] and first[b] < 0:
                    first[b] = steps[b] + j + 1
            steps[b] += step.steps[b]
            past = first[b] >= 0 and steps[b] - first[b] >= post
            if past or steps[b] >= max_steps or step.steps[b] == 0:
                done[b] = True
    records = []
    for b, spec in enumerate(batch):
        t = len(rec_a[b])  # row t: the frame and state *before* action t, as the expert's records
        acts = np.stack(rec_a[b]).astype(np.float32) if t else np.zeros((0, 4), np.float32)
        records.append(EpisodeRecord(
            spec=spec, frames=np.stack(rec_f[b][:t]) if t else np.zeros((0, 1, 1, 3), np.uint8),
            states=np.stack(rec_s[b][:t]).astype(np.float32) if t else np.zeros((0, 4), np.float32),
            actions=acts, expert_actions=acts.copy(), rewards=np.asarray(rec_r[b], np.float32),
            successes=np.asarray(rec_ok[b], bool), noisy=noisy, success=bool(first[b] >= 0),
            first_success_step=int(first[b]),
            env_states=np.stack(rec_e[b][:t]).astype(np.float32) if t else np.zeros((0, ENV_STATE_DIM), np.float32)))
    return records

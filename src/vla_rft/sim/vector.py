"""A batch of Meta-World envs spread over worker processes, behind the simulator interface.

``BatchedSimulator`` exposes the same small interface as the world model's rollout:
``reset(starts) -> Observation`` and ``step_chunk(actions) -> ChunkStep``, so evaluation and RFT
code do not care which one they drive. It also records expert episodes in parallel for data
collection. Workers are started with ``spawn`` (forking a process that holds GL contexts or
torch threads is unsafe); ``num_workers=0`` runs everything in the calling process.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import traceback
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from vla_rft.sim.env import MetaWorldEnv, environment_state, proprio
from vla_rft.sim.experts import EpisodeRecord, record_expert_episode
from vla_rft.sim.perturbations import EpisodeSpec


@dataclass
class Observation:
    """What a policy sees at the start of a chunk, batched."""

    frames: np.ndarray  #: (B, H, W, 3) uint8
    states: np.ndarray  #: (B, STATE_DIM) float32
    env_states: np.ndarray  #: (B, ENV_STATE_DIM) float32: objects and goal (privileged; for world models)


@dataclass
class ChunkStep:
    """The result of executing one action chunk per env."""

    frames: np.ndarray  #: (B, K, H, W, 3) uint8 if all frames were rendered, else (B, 1, H, W, 3): the last
    states: np.ndarray  #: (B, STATE_DIM) after the chunk
    rewards: np.ndarray  #: (B, K) env rewards
    success: np.ndarray  #: (B,) bool, success reached at any step of the chunk
    steps: np.ndarray  #: (B,) env steps executed (fewer than K when an env was already done or inactive)
    first_success: np.ndarray  #: (B,) 1-based step of the chunk at which success first held, 0 if none
    step_states: np.ndarray  #: (B, K, STATE_DIM) the state after each action (a finished env repeats its last)
    step_success: np.ndarray  #: (B, K) bool, the simulator's success flag after each action
    step_env_states: np.ndarray  #: (B, K, ENV_STATE_DIM) objects and goal after each action (privileged)


class _EnvHost:
    """Owns the envs of one process. Every env is kept for the life of the process."""

    def __init__(self, image_size: int, camera: str, goal_marker_scale: float):
        self.render_args = (image_size, camera, goal_marker_scale)
        self.pool: dict[tuple[str, int], MetaWorldEnv] = {}
        self.active: list[MetaWorldEnv] = []
        self.steps: list[int] = []
        self.last_state: list[np.ndarray] = []
        self.last_env_state: list[np.ndarray] = []
        self.last_frame: list[np.ndarray | None] = []
        self.max_steps = 500

    def _env(self, task: str, slot: int) -> MetaWorldEnv:
        key = (task, slot)
        if key not in self.pool:
            self.pool[key] = MetaWorldEnv(task, *self.render_args)
        return self.pool[key]

    def record(self, spec: EpisodeSpec, max_steps: int, noise: float, post: int, render_every: int = 1) -> EpisodeRecord:
        return record_expert_episode(self._env(spec.task, 0), spec, max_steps, noise, post, render_every)

    def reset(self, specs: Sequence[EpisodeSpec], max_steps: int) -> tuple[np.ndarray, np.ndarray]:
        counts: dict[str, int] = {}
        self.active, frames, states, env_states = [], [], [], []
        for spec in specs:
            slot = counts.get(spec.task, 0)
            counts[spec.task] = slot + 1
            env = self._env(spec.task, slot)
            obs = env.reset(spec)
            self.active.append(env)
            frames.append(env.render())
            states.append(proprio(obs))
            env_states.append(environment_state(obs))
        self.steps = [0] * len(specs)
        self.last_state = list(states)
        self.last_env_state = list(env_states)
        self.last_frame = list(frames)
        self.max_steps = max_steps
        return np.stack(frames), np.stack(states), np.stack(env_states)

    def step_chunk(self, actions: np.ndarray, render_all: bool, active: np.ndarray | None = None):
        n, k = actions.shape[:2]
        active = np.ones(n, bool) if active is None else np.asarray(active, bool)
        frames = []
        states = np.stack(self.last_state[:n]).astype(np.float32)
        rewards = np.zeros((n, k), np.float32)
        success = np.zeros(n, bool)
        first_success = np.zeros(n, np.int64)
        executed = np.zeros(n, np.int64)
        step_success = np.zeros((n, k), bool)
        step_states = np.repeat(states[:, None], k, axis=1)
        step_env = np.repeat(np.stack(self.last_env_state[:n]).astype(np.float32)[:, None], k, axis=1)
        for i, env in enumerate(self.active):
            env_frames = []
            for j in range(k if active[i] else 0):
                if self.steps[i] >= self.max_steps:
                    break
                result = env.step(actions[i, j])
                self.steps[i] += 1
                executed[i] += 1
                rewards[i, j] = result.reward
                if result.success and not success[i]:
                    first_success[i] = j + 1
                success[i] |= result.success
                step_success[i, j] = result.success
                states[i] = self.last_state[i] = result.state
                step_states[i, j:] = result.state
                step_env[i, j:] = self.last_env_state[i] = result.env_state
                if render_all:
                    env_frames.append(env.render())
            # an env that did not move keeps its last frame: no need to render it again
            last = env.render() if executed[i] or self.last_frame[i] is None else self.last_frame[i]
            self.last_frame[i] = last
            if render_all:
                env_frames += [last] * (k - len(env_frames))  # pad a finished env with its last frame
                frames.append(np.stack(env_frames))
            else:
                frames.append(last[None])
        return (np.stack(frames), states, rewards, success, executed, first_success, step_states, step_success,
                step_env)


def _worker_main(conn, render_args) -> None:
    os.environ.setdefault("MUJOCO_GL", "osmesa")
    host = _EnvHost(*render_args)
    while True:
        cmd, args = conn.recv()
        if cmd == "close":
            conn.close()
            return
        try:
            conn.send(("ok", getattr(host, cmd)(*args)))
        except Exception as err:  # the parent re-raises with the worker's traceback
            conn.send(("error", f"{type(err).__name__}: {err}\n{traceback.format_exc()}"))


class SimulatorWorkerError(RuntimeError):
    """A simulator worker process raised; the message carries its traceback."""


class BatchedSimulator:
    """Real Meta-World envs over ``num_workers`` processes (0: in this process)."""

    def __init__(self, image_size: int = 64, camera: str = "corner", goal_marker_scale: float = 3.0,
                 num_workers: int = 2, max_episode_steps: int = 150):
        self.render_args = (image_size, camera, goal_marker_scale)
        self.max_episode_steps = max_episode_steps
        self.num_workers = num_workers
        self._local = _EnvHost(*self.render_args) if num_workers == 0 else None
        self._conns: list[Any] = []
        self._procs: list[Any] = []
        self._split: list[slice] = []
        if num_workers > 0:
            ctx = mp.get_context("spawn")
            for _ in range(num_workers):
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=_worker_main, args=(child, self.render_args), daemon=True)
                proc.start()
                child.close()
                self._conns.append(parent)
                self._procs.append(proc)

    @classmethod
    def from_config(cls, sim_cfg, num_workers: int | None = None) -> "BatchedSimulator":
        return cls(sim_cfg.image_size, sim_cfg.camera, sim_cfg.goal_marker_scale,
                   sim_cfg.num_workers if num_workers is None else num_workers, sim_cfg.max_episode_steps)

    # -- plumbing -------------------------------------------------------------------------------
    def _call(self, calls: list[tuple[int, str, tuple]]) -> list[Any]:
        """Send ``(worker, command, args)`` calls, then gather replies in order."""
        if self._local is not None:
            return [getattr(self._local, cmd)(*args) for _, cmd, args in calls]
        for w, cmd, args in calls:
            self._conns[w].send((cmd, args))
        out = []
        for w, _, _ in calls:
            try:
                status, value = self._conns[w].recv()
            except EOFError as err:
                raise SimulatorWorkerError(f"simulator worker {w} died (exit code {self._procs[w].exitcode})") from err
            if status == "error":
                raise SimulatorWorkerError(f"simulator worker {w} failed: {value}")
            out.append(value)
        return out

    # -- expert data ----------------------------------------------------------------------------
    def record_episodes(self, specs: Sequence[EpisodeSpec], noise: Sequence[float], post_success_steps: int,
                        progress=None, render_every: int = 1) -> list[EpisodeRecord]:
        """Record expert episodes, keeping every worker busy; results in the order of ``specs``."""
        results: list[EpisodeRecord | None] = [None] * len(specs)
        args = [(s, self.max_episode_steps, float(n), post_success_steps, render_every) for s, n in zip(specs, noise)]
        if self._local is not None:
            for i, a in enumerate(args):
                results[i] = self._local.record(*a)
                if progress:
                    progress.update(1)
            return results  # type: ignore[return-value]
        pending: dict[int, int] = {}
        queue = list(range(len(specs)))
        for w in range(self.num_workers):
            if queue:
                i = queue.pop(0)
                self._conns[w].send(("record", args[i]))
                pending[w] = i
        from multiprocessing.connection import wait

        while pending:
            for conn in wait([self._conns[w] for w in pending]):
                w = self._conns.index(conn)
                status, value = conn.recv()
                if status == "error":
                    raise SimulatorWorkerError(f"simulator worker {w} failed: {value}")
                results[pending.pop(w)] = value
                if progress:
                    progress.update(1)
                if queue:
                    i = queue.pop(0)
                    conn.send(("record", args[i]))
                    pending[w] = i
        return results  # type: ignore[return-value]

    # -- the simulator interface ----------------------------------------------------------------
    def reset(self, starts: Sequence[EpisodeSpec]) -> Observation:
        """Reset one env per episode spec (split evenly over the workers)."""
        n = len(starts)
        workers = max(1, self.num_workers)
        bounds = np.linspace(0, n, workers + 1).round().astype(int)
        self._split = [slice(bounds[w], bounds[w + 1]) for w in range(workers)]
        calls = [(w, "reset", (list(starts[s]), self.max_episode_steps)) for w, s in enumerate(self._split) if s.stop > s.start]
        replies = self._call(calls)
        return Observation(*(np.concatenate([r[i] for r in replies]) for i in range(3)))

    def step_chunk(self, actions: np.ndarray, render: str = "last", active: np.ndarray | None = None) -> ChunkStep:
        """Execute a (B, K, A) chunk in every env; ``render`` is 'last' (one frame) or 'all' (K frames).

        Envs where ``active`` (B,) is False do not step (finished episodes cost nothing) and
        return their last frame and state.
        """
        if render not in ("last", "all"):
            raise ValueError(f"render must be 'last' or 'all', got {render!r}")
        actions = np.asarray(actions, dtype=np.float32)
        if actions.ndim != 3 or actions.shape[0] != self._split[-1].stop:
            raise ValueError(f"actions must be (B={self._split[-1].stop}, K, A), got {actions.shape}")
        active = np.ones(len(actions), bool) if active is None else np.asarray(active, bool)
        calls = [(w, "step_chunk", (actions[s], render == "all", active[s]))
                 for w, s in enumerate(self._split) if s.stop > s.start]
        replies = self._call(calls)
        return ChunkStep(*(np.concatenate([r[i] for r in replies]) for i in range(9)))

    def close(self) -> None:
        for conn in self._conns:
            try:
                conn.send(("close", ()))
            except (BrokenPipeError, OSError):
                pass
        for proc in self._procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
        self._conns, self._procs = [], []

    def __enter__(self) -> "BatchedSimulator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

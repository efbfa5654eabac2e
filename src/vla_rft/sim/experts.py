"""Scripted experts (``metaworld.policies``) and the recording of one expert episode."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vla_rft.sim.env import MetaWorldEnv, environment_state, proprio
from vla_rft.sim.perturbations import EpisodeSpec, _rng
from vla_rft.tasks import TASKS


def make_expert(task: str):
    import metaworld.policies as policies

    return getattr(policies, TASKS[task].expert)()


@dataclass
class EpisodeRecord:
    """One recorded episode; row t holds the frame *before* action t."""

    spec: EpisodeSpec
    frames: np.ndarray  #: (T, H, W, 3) uint8 (every ``render_every``-th frame only, if that was > 1)
    states: np.ndarray  #: (T, STATE_DIM) float32
    actions: np.ndarray  #: (T, A) float32, what was executed (noise included)
    expert_actions: np.ndarray  #: (T, A) float32, the expert's clean action (BC label)
    rewards: np.ndarray  #: (T,) float32
    successes: np.ndarray  #: (T,) bool, success after action t
    noisy: bool
    success: bool  #: the expert succeeded within the step limit
    first_success_step: int  #: steps taken to first success (-1 if never)
    #: (T, ENV_STATE_DIM) float32: objects and goal before action t (``observation.environment_state``)
    env_states: np.ndarray | None = None

    @property
    def length(self) -> int:
        return len(self.actions)


def record_expert_episode(
    env: MetaWorldEnv,
    spec: EpisodeSpec,
    max_steps: int,
    action_noise: float = 0.0,
    post_success_steps: int = 8,
    render_every: int = 1,
) -> EpisodeRecord:
    """Run the scripted expert from ``spec``'s layout, rendering every step.

    With ``action_noise > 0`` Gaussian noise is added to the executed action (DART-style) so the
    data covers small recoveries; the clean expert action is kept as the label. The episode ends
    ``post_success_steps`` after the first success, or at ``max_steps``. ``render_every > 1``
    renders (and keeps) only every n-th frame: rendering is most of the cost when only success
    matters, e.g. when the expert is the reference in an evaluation.
    """
    expert = make_expert(spec.task)
    noise_rng = _rng("action-noise", spec.task, spec.seed)
    obs = env.reset(spec)
    frames, states, env_states, actions, labels, rewards, successes = [], [], [], [], [], [], []
    first_success = -1
    for t in range(max_steps):
        if t % render_every == 0:
            frames.append(env.render())
        states.append(proprio(obs))
        env_states.append(environment_state(obs))
        label = np.clip(expert.get_action(obs), -1.0, 1.0).astype(np.float32)
        executed = label
        if action_noise > 0:
            executed = np.clip(label + noise_rng.normal(0.0, action_noise, size=label.shape), -1.0, 1.0)
            executed = executed.astype(np.float32)
        result = env.step(executed)
        obs = result.obs
        actions.append(executed)
        labels.append(label)
        rewards.append(result.reward)
        successes.append(result.success)
        if result.success and first_success < 0:
            first_success = t + 1
        if first_success >= 0 and t + 1 - first_success >= post_success_steps:
            break
    return EpisodeRecord(
        spec=spec,
        frames=np.stack(frames),
        states=np.stack(states).astype(np.float32),
        actions=np.stack(actions).astype(np.float32),
        expert_actions=np.stack(labels).astype(np.float32),
        rewards=np.asarray(rewards, dtype=np.float32),
        successes=np.asarray(successes, dtype=bool),
        noisy=action_noise > 0,
        success=first_success >= 0,
        first_success_step=first_success,
        env_states=np.stack(env_states).astype(np.float32),
    )

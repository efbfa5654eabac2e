"""One Meta-World v3 environment rendered offscreen on the CPU, reset from an ``EpisodeSpec``.

Rendering is made fast (~7 ms a 64x64 frame) by turning off multisampling, shadows and
reflections, and frames are flipped upright (the corner cameras render upside down). Every env
created in a process is kept alive for the life of the process: when an env's GL context is
garbage-collected while another is current, the other env silently renders black frames.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np

from vla_rft.sim.perturbations import EpisodeSpec, Layout, episode_layout
from vla_rft.tasks import ENV_STATE_DIM, STATE_DIM, TASKS

os.environ.setdefault("MUJOCO_GL", "osmesa")
# Meta-World's scripted experts warn on every step that their gains "may be too high" (the env
# clips actions anyway), and gymnasium warns about the unwrapped env's spaces: noise, not news.
warnings.filterwarnings("ignore", message=r"Constant\(s\) may be too high")
warnings.filterwarnings("ignore", module=r"gymnasium\..*")

_HIGHLIGHT_RGBA = (1.0, 0.85, 0.0, 1.0)  # yellow: stands out on the wood table and the red arm
_MAX_SHIFT_M = 0.1  # evaluate.magnitudes_cm allows up to 10 cm
_BLANK_MEAN = 5.0  # a real frame of the scene has mean intensity ~100; black frames are ~0


class RenderError(RuntimeError):
    """The renderer returned a blank frame (lost GL context) or could not start."""


@dataclass
class StepResult:
    obs: np.ndarray  #: Meta-World's full 39-d observation (privileged: for experts only)
    state: np.ndarray  #: (STATE_DIM,) proprioception the policy sees
    reward: float
    success: bool
    env_state: np.ndarray  #: (ENV_STATE_DIM,) objects and goal (privileged: :func:`environment_state`)


class MetaWorldEnv:
    """A Meta-World task with a fixed camera; ``reset(spec)`` places the scene deterministically."""

    def __init__(self, task: str, image_size: int = 64, camera: str = "corner", goal_marker_scale: float = 3.0):
        import mujoco
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS

        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}")
        self.task = TASKS[task]
        self.image_size = image_size
        env = ALL_V3_ENVIRONMENTS[self.task.env_name](
            render_mode="rgb_array", camera_name=camera, width=image_size, height=image_size
        )
        # Experts read the goal from the full observation; the policy never sees it.
        env._partially_observable = False
        try:  # cached observation bounds were computed for the partially observable case
            del env.sawyer_observation_space
        except AttributeError:
            pass
        # Meta-World clips every observation to its goal *sampling* range, so a goal shifted past
        # it (a perturbation suite) reaches the expert clipped and the expert aims at the wrong
        # place (reach goal-5cm: 92 %). Widen that range by the largest shift a suite may apply.
        if env.goal_space is not None:
            from gymnasium.spaces import Box

            pad = np.array([_MAX_SHIFT_M, _MAX_SHIFT_M, 0.0])
            env.goal_space = Box(env.goal_space.low - pad, env.goal_space.high + pad, dtype=np.float64)
        env._set_task_called = True
        env._freeze_rand_vec = True
        env.model.vis.quality.offsamples = 0
        if goal_marker_scale != 1.0:
            goal_id = mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_SITE, "goal")
            if goal_id >= 0:
                env.model.site_size[goal_id] *= goal_marker_scale
        if self.task.highlight_geom is not None:
            geom_id = mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_GEOM, self.task.highlight_geom)
            if geom_id < 0:
                raise ValueError(f"{task}: no geom named {self.task.highlight_geom!r} to highlight")
            env.model.geom_matid[geom_id] = -1  # a material's texture would override the colour
            env.model.geom_rgba[geom_id] = _HIGHLIGHT_RGBA
        self._env = env
        self._viewer = None
        self._mujoco = mujoco
        self.layout: Layout | None = None
        self.spec: EpisodeSpec | None = None

    @property
    def raw(self):
        """The underlying Meta-World env (for tests and experts)."""
        return self._env

    def reset(self, spec: EpisodeSpec) -> np.ndarray:
        """Reset to the layout of ``spec``; returns the full observation."""
        if spec.task != self.task.name:
            raise ValueError(f"this env runs {self.task.name!r}, got an episode of {spec.task!r}")
        layout = episode_layout(spec)
        self._env._last_rand_vec = layout.rand_vec.copy()
        self._env.hand_init_pos = layout.hand_init_pos.copy()
        self._env.reset()
        # reset_model moves bodies (drawer, door, button box) after the last mj_forward, so the
        # positions it reports and the first rendered frame would be stale: recompute both.
        env = self._env
        self._mujoco.mj_forward(env.model, env.data)
        current = env._get_curr_obs_combined_no_goal()
        env._prev_obs = current
        obs = np.hstack((current, current, env._get_pos_goal())).astype(np.float64)
        self.layout, self.spec = layout, spec
        return obs

    def step(self, action: np.ndarray) -> StepResult:
        action = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        if not np.all(np.isfinite(action)):
            raise ValueError(f"action contains NaN or inf: {action}")
        if self._env.curr_path_length >= self._env.max_path_length:
            raise RuntimeError("episode exceeded Meta-World's max_path_length; reset first")
        obs, reward, _, _, info = self._env.step(action)
        return StepResult(obs, proprio(obs), float(reward), bool(info["success"]), environment_state(obs))

    def render(self) -> np.ndarray:
        """The current camera frame, (H, W, 3) uint8, upright."""
        if self._viewer is None:
            self._viewer = self._env.mujoco_renderer._get_viewer("rgb_array")
            flags = self._viewer.scn.flags
            flags[self._mujoco.mjtRndFlag.mjRND_SHADOW] = 0
            flags[self._mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        # gymnasium makes a viewer's GL context current only when one env has several viewers;
        # with several envs in a process, rendering in another env's context gives wrong frames.
        self._viewer.make_context_current()
        frame = self._env.render()
        frame = np.ascontiguousarray(frame[::-1])
        if frame.mean() < _BLANK_MEAN:
            raise RenderError(
                f"{self.task.name}: rendered a blank frame (lost GL context?); set MUJOCO_GL=osmesa "
                "or egl and keep every env alive for the life of the process"
            )
        return frame

    def object_position(self) -> np.ndarray:
        """Position of the task's object (privileged; for tests and perturbation checks)."""
        return np.array(self._env._get_pos_objects()[:3], dtype=np.float64)  # copy: MuJoCo updates views in place

    def goal_position(self) -> np.ndarray:
        return np.array(self._env._target_pos, dtype=np.float64)


def proprio(obs: np.ndarray) -> np.ndarray:
    """Hand xyz and gripper opening: the first 4 entries of Meta-World's observation."""
    return np.asarray(obs[:STATE_DIM], dtype=np.float32)


def environment_state(obs: np.ndarray) -> np.ndarray:
    """Objects' poses and the goal position (``tasks.ENV_STATE_NAMES``) from Meta-World's 39-d observation."""
    obs = np.asarray(obs)
    if obs.shape != (39,):
        raise ValueError(f"expected Meta-World's 39-d observation, got shape {obs.shape}")
    out = np.concatenate([obs[STATE_DIM:18], obs[36:39]]).astype(np.float32)
    assert len(out) == ENV_STATE_DIM
    return out


_ENVS: dict[tuple, MetaWorldEnv] = {}


def get_env(task: str, image_size: int = 64, camera: str = "corner", goal_marker_scale: float = 3.0) -> MetaWorldEnv:
    """A process-wide env per (task, rendering settings), created once and never freed."""
    key = (task, image_size, camera, goal_marker_scale)
    if key not in _ENVS:
        _ENVS[key] = MetaWorldEnv(task, image_size, camera, goal_marker_scale)
    return _ENVS[key]

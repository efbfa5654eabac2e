"""Perturbations as data, and the episode layout they determine.

An episode is fully determined by ``EpisodeSpec(task, seed, perturbation)``: the nominal layout
(object, goal, hand) is drawn from a generator seeded by (task, seed) inside Meta-World's own
sampling ranges, then the perturbation shifts the named parts by exactly ``magnitude_cm`` in the
table plane (xy), in a direction drawn from the same seed. Shifted positions are *not* clipped
to Meta-World's ranges: leaving the training distribution is the point of the suites.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from vla_rft.tasks import TASKS, TaskSpec

#: what a perturbation may shift, in report order; ``none`` is the nominal suite
PERTURBATION_KINDS: tuple[str, ...] = ("none", "object", "goal", "robot", "combined")


def suite_name(kind: str, magnitude_cm: float) -> str:
    """The one naming rule for suites: ``nominal``, else ``<kind>-<magnitude>cm`` (``object-2.5cm``)."""
    return "nominal" if kind == "none" else f"{kind}-{magnitude_cm:g}cm"

#: Meta-World's sampling ranges for each task's rand_vec (copied from each env's ``__init__``),
#: and its nominal hand start. Reading them from an env instance would need the simulator here.
_RAND_RANGES: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "reach": ((-0.1, 0.6, 0.02, -0.1, 0.8, 0.05), (0.1, 0.7, 0.02, 0.1, 0.9, 0.3)),
    "push": ((-0.1, 0.6, 0.02, -0.1, 0.8, 0.01), (0.1, 0.7, 0.02, 0.1, 0.9, 0.02)),
    "drawer-open": ((-0.1, 0.9, 0.0), (0.1, 0.9, 0.0)),
    "drawer-close": ((-0.1, 0.9, 0.0), (0.1, 0.9, 0.0)),
    "button-press-topdown": ((-0.1, 0.8, 0.115), (0.1, 0.9, 0.115)),
    "door-open": ((0.02, 0.85, 0.15), (0.1, 0.95, 0.15)),
    "pick-place": ((-0.1, 0.6, 0.02, -0.1, 0.8, 0.05), (0.1, 0.7, 0.02, 0.1, 0.9, 0.3)),
    "peg-insert-side": ((0.0, 0.5, 0.02, -0.35, 0.4, -0.001), (0.2, 0.65, 0.02, -0.25, 0.55, 0.001)),
    "window-open": ((-0.1, 0.7, 0.16), (0.1, 0.9, 0.16)),
    "window-close": ((0.0, 0.75, 0.2), (0.0, 0.9, 0.2)),
}
_HAND_INIT: dict[str, tuple[float, float, float]] = {
    "reach": (0.0, 0.6, 0.2),
    "push": (0.0, 0.6, 0.2),
    "drawer-open": (0.0, 0.6, 0.2),
    "drawer-close": (0.0, 0.6, 0.2),
    "button-press-topdown": (0.0, 0.4, 0.2),
    "door-open": (0.0, 0.6, 0.2),
    "pick-place": (0.0, 0.6, 0.2),
    "peg-insert-side": (0.0, 0.6, 0.2),
    "window-open": (0.0, 0.4, 0.2),
    "window-close": (0.0, 0.4, 0.2),
}
_MIN_XY_MARGIN = 0.01  # keep 1 cm clear of the object-goal redraw radius


@dataclass(frozen=True)
class Perturbation:
    """A shift of part of the initial scene. ``kind='none'`` is the nominal suite."""

    kind: str = "none"
    magnitude_cm: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in PERTURBATION_KINDS:
            raise ValueError(
                f"unknown perturbation kind {self.kind!r}; allowed: {', '.join(PERTURBATION_KINDS)}"
            )
        if self.magnitude_cm < 0:
            raise ValueError(f"perturbation magnitude must be >= 0 cm, got {self.magnitude_cm}")
        if self.kind == "none" and self.magnitude_cm != 0:
            raise ValueError("perturbation kind 'none' takes no magnitude")

    @property
    def name(self) -> str:
        return suite_name(self.kind, self.magnitude_cm)

    def moves(self, part: str) -> bool:
        """Whether this perturbation shifts ``part`` ('object', 'goal' or 'robot')."""
        return self.kind == part or self.kind == "combined"


NOMINAL = Perturbation()


def applies(task: TaskSpec | str, perturbation: Perturbation) -> bool:
    """Whether the perturbation changes anything in this task (a goal shift needs a free goal)."""
    spec = TASKS[task] if isinstance(task, str) else task
    if perturbation.kind == "none":
        return True
    if perturbation.kind == "object":
        return spec.object_slice is not None
    if perturbation.kind == "goal":
        return spec.goal_slice is not None
    return True  # robot and combined always move the hand


@dataclass(frozen=True)
class EpisodeSpec:
    """Everything that determines one episode."""

    task: str
    seed: int
    perturbation: Perturbation = field(default=NOMINAL)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; known tasks: {', '.join(TASKS)}")


@dataclass(frozen=True)
class Layout:
    """The concrete initial scene of an episode (what Meta-World is reset to)."""

    rand_vec: np.ndarray  #: Meta-World's layout vector, frozen for the reset
    hand_init_pos: np.ndarray  #: (3,) initial hand (mocap) position
    object_shift: np.ndarray  #: (3,) shift applied to the object, metres
    goal_shift: np.ndarray  #: (3,) shift applied to the goal, metres
    hand_shift: np.ndarray  #: (3,) shift applied to the hand start, metres


def _rng(*keys: int | str) -> np.random.Generator:
    words = [zlib.crc32(k.encode()) if isinstance(k, str) else int(k) & 0xFFFFFFFF for k in keys]
    return np.random.default_rng(words)


def _xy_shift(rng: np.random.Generator, metres: float, axes: str = "xy") -> np.ndarray:
    angle = rng.uniform(0.0, 2.0 * np.pi)
    if axes == "x":
        return np.array([np.sign(np.cos(angle)) * metres, 0.0, 0.0])
    return np.array([np.cos(angle) * metres, np.sin(angle) * metres, 0.0])


def episode_layout(spec: EpisodeSpec) -> Layout:
    """The initial scene for ``spec``; the same spec always gives the same layout."""
    task = TASKS[spec.task]
    low, high = (np.asarray(b, dtype=np.float64) for b in _RAND_RANGES[spec.task])
    rng = _rng("layout", spec.task, spec.seed)
    min_xy = task.min_object_goal_xy + _MIN_XY_MARGIN
    for _ in range(1000):
        rand_vec = rng.uniform(low, high)
        if task.min_object_goal_xy == 0 or np.linalg.norm(rand_vec[0:2] - rand_vec[3:5]) >= min_xy:
            break
    else:  # pragma: no cover - the ranges make this practically impossible
        raise RuntimeError(f"could not draw a valid nominal layout for {spec}")
    hand = np.asarray(_HAND_INIT[spec.task], dtype=np.float64)

    pert = spec.perturbation
    metres = pert.magnitude_cm / 100.0
    zero = np.zeros(3)
    shift_rng = _rng("shift", spec.task, spec.seed, pert.kind, int(round(pert.magnitude_cm * 1000)))
    # Redraw directions (not magnitudes) until the shifted layout keeps Meta-World's
    # object-goal separation and a reachable goal, so every perturbed episode moves exactly by
    # the claimed amount.
    for _ in range(256):
        obj_shift = (_xy_shift(shift_rng, metres, task.object_shift_axes)
                     if pert.moves("object") and task.object_slice else zero)
        goal_shift = _xy_shift(shift_rng, metres) if pert.moves("goal") and task.goal_slice else zero
        hand_shift = _xy_shift(shift_rng, metres) if pert.moves("robot") else zero
        vec = rand_vec.copy()
        if task.object_slice:
            vec[slice(*task.object_slice)] += obj_shift
        if task.goal_slice:
            vec[slice(*task.goal_slice)] += goal_shift
        separated = task.min_object_goal_xy == 0 or np.linalg.norm(vec[0:2] - vec[3:5]) >= min_xy
        reachable = (task.goal_min_y is None or not goal_shift.any()
                     or vec[task.goal_slice[0] + 1] >= task.goal_min_y)
        if separated and reachable:
            return Layout(vec, hand + hand_shift, obj_shift, goal_shift, hand_shift)
    raise ValueError(
        f"perturbation {pert.name} on {spec.task} seed {spec.seed} cannot keep object and goal "
        f"{task.min_object_goal_xy} m apart with the goal reachable; use a smaller magnitude"
    )

"""The task suite as data: names, instructions and where each task keeps its layout.

Pure data, no imports from the package, so ``config`` can validate task names without importing
the simulator. ``rand_vec`` is Meta-World's per-episode layout vector (``_last_rand_vec``); its
layout differs by task (see each task's ``reset_model`` in ``metaworld/envs``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from vla_rft.errors import CompatibilityError


@dataclass(frozen=True)
class TaskSpec:
    """One task of the suite."""

    name: str  #: our name, e.g. "push"
    env_name: str  #: Meta-World v3 environment name
    expert: str  #: class name in ``metaworld.policies``
    instruction: str  #: the natural-language instruction the policy reads
    object_slice: tuple[int, int] | None  #: rand_vec indices of the movable object's xyz, if any
    goal_slice: tuple[int, int] | None  #: rand_vec indices of a free goal's xyz (None: goal fixed to the object)
    #: push and reach redraw their layout until object and goal are this far apart in xy
    #: (with a frozen layout that is closer, Meta-World's reset never returns)
    min_object_goal_xy: float = 0.0
    moves_object: bool = True  #: the task moves an object or an articulated part
    #: axes an object shift may use: the drawers' cases cannot move in y (Meta-World fixes y; pushed
    #: back, the case collides and the drawer pops open during reset), so they shift along x only
    object_shift_axes: str = "xy"
    #: a geom drawn in a bright colour (no material) so a pixel policy can see it at 64x64: colour
    #: only, the physics is unchanged (pick-place's dark-red puck is a 2 px speck on the wood)
    highlight_geom: str | None = None
    #: a goal shift is redrawn until the goal's y stays at or above this: Meta-World's hand cannot
    #: go below y = 0.40, so peg-insert-side's box shifted closer is out of the robot's reach
    goal_min_y: float | None = None
    #: earlier wordings of ``instruction``: a policy or dataset recorded with one still matches this task
    former_instructions: tuple[str, ...] = ()


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        # reach's goal is Meta-World's red site (rgba 0.8 0 0); push's is green
        TaskSpec("reach", "reach-v3", "SawyerReachV3Policy", "reach the red goal with the gripper",
                 object_slice=None, goal_slice=(3, 6), min_object_goal_xy=0.15, moves_object=False,
                 former_instructions=("reach the green goal with the gripper",)),
        TaskSpec("push", "push-v3", "SawyerPushV3Policy", "push the puck to the green goal",
                 object_slice=(0, 3), goal_slice=(3, 6), min_object_goal_xy=0.15),
        TaskSpec("drawer-open", "drawer-open-v3", "SawyerDrawerOpenV3Policy", "open the drawer",
                 object_slice=(0, 3), goal_slice=None, object_shift_axes="x"),
        TaskSpec("drawer-close", "drawer-close-v3", "SawyerDrawerCloseV3Policy", "close the drawer",
                 object_slice=(0, 3), goal_slice=None, object_shift_axes="x"),
        TaskSpec("button-press-topdown", "button-press-topdown-v3", "SawyerButtonPressTopdownV3Policy",
                 "press the button down from the top", object_slice=(0, 3), goal_slice=None),
        TaskSpec("door-open", "door-open-v3", "SawyerDoorOpenV3Policy", "open the door",
                 object_slice=(0, 3), goal_slice=None),
        # pick-place: puck xyz then goal xyz (the goal floats 5-30 cm above the table); redrawn
        # like push until 0.15 m apart in xy
        TaskSpec("pick-place", "pick-place-v3", "SawyerPickPlaceV3Policy",
                 "pick up the yellow puck and place it at the blue goal",
                 object_slice=(0, 3), goal_slice=(3, 6), min_object_goal_xy=0.15,
                 highlight_geom="objGeom"),
        # peg-insert-side: peg xyz then the box's xyz; the goal is the box's hole (box + fixed
        # offset), so a goal shift moves the box. Redrawn until peg and box are 0.1 m apart in xy.
        TaskSpec("peg-insert-side", "peg-insert-side-v3", "SawyerPegInsertionSideV3Policy",
                 "insert the peg into the hole in the box from the side",
                 object_slice=(0, 3), goal_slice=(3, 6), min_object_goal_xy=0.1, goal_min_y=0.41),
        # window-open / window-close: the window body position only; the goal is a fixed offset
        TaskSpec("window-open", "window-open-v3", "SawyerWindowOpenV3Policy", "slide the window open",
                 object_slice=(0, 3), goal_slice=None),
        TaskSpec("window-close", "window-close-v3", "SawyerWindowCloseV3Policy", "slide the window closed",
                 object_slice=(0, 3), goal_slice=None),
    )
}

def instruction_index(known: Sequence[str], task: str) -> int | None:
    """Index in ``known`` (a policy's or a dataset's instructions) of ``task``'s instruction or of a former
    wording of it (``TaskSpec.former_instructions``); None when neither is there."""
    spec = TASKS[task]
    for text in (spec.instruction, *spec.former_instructions):
        if text in known:
            return list(known).index(text)
    return None


def instruction_order(known: Sequence[str], tasks: Sequence[str], who: str = "the policy") -> list[int]:
    """:func:`instruction_index` of each of ``tasks`` in ``known`` (``who``'s instructions); a task it
    lacks is refused by name."""
    order = [instruction_index(known, t) for t in tasks]
    missing = [t for t, i in zip(tasks, order) if i is None]
    if missing:
        raise CompatibilityError(f"{who} was not trained on task(s) {missing}; it knows {list(known)}")
    return order


#: Proprioception the policy sees: hand position (xyz) and gripper opening. Never object or goal
#: positions (Meta-World's 39-d observation carries them: that would make the benchmark state-based).
STATE_NAMES: tuple[str, ...] = ("hand_x", "hand_y", "hand_z", "gripper_open")
ACTION_NAMES: tuple[str, ...] = ("dx", "dy", "dz", "grip")
STATE_DIM = len(STATE_NAMES)
#: The scene's state the policy never sees (LeRobot's ``observation.environment_state``): up to two
#: objects' position and quaternion and the goal position, Meta-World's observation entries 4-17 and
#: 36-38. Recorded so a world model can predict it and a judge read success off it (a task is
#: solved by where its object is, which a 64 px frame shows to a few pixels only).
ENV_STATE_NAMES: tuple[str, ...] = (
    *(f"object{o}_{k}" for o in (1, 2) for k in ("x", "y", "z", "qw", "qx", "qy", "qz")), "goal_x", "goal_y", "goal_z")
ENV_STATE_DIM = len(ENV_STATE_NAMES)
ACTION_DIM = len(ACTION_NAMES)
#: Meta-World: frame_skip 5 x timestep 2.5 ms = 12.5 ms per env step
FPS = 80

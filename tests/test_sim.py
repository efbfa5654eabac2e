"""The real simulator: determinism, perturbations that move what they claim, experts that succeed."""

import numpy as np
import pytest

from vla_rft.sim.env import MetaWorldEnv, get_env
from vla_rft.sim.experts import record_expert_episode
from vla_rft.sim.perturbations import EpisodeSpec, Perturbation, applies, episode_layout
from vla_rft.sim.vector import BatchedSimulator
from vla_rft.tasks import TASKS


def _first_frames(spec, steps=5):
    env = get_env(spec.task)
    env.reset(spec)
    frames = [env.render()]
    for _ in range(steps):
        env.step(np.array([0.5, -0.3, 0.2, 1.0]))
        frames.append(env.render())
    return np.stack(frames)


def test_same_spec_gives_identical_frames():
    spec = EpisodeSpec("push", 7, Perturbation("combined", 2.5))
    a = _first_frames(spec)
    _first_frames(EpisodeSpec("push", 8))  # another episode in between must not leak state
    b = _first_frames(spec)
    assert a.shape == (6, 64, 64, 3) and a.dtype == np.uint8
    assert a.mean() > 50, "frames are blank"
    np.testing.assert_array_equal(a, b)


def test_different_seeds_give_different_scenes():
    a = _first_frames(EpisodeSpec("push", 1), steps=0)
    b = _first_frames(EpisodeSpec("push", 2), steps=0)
    assert np.abs(a.astype(int) - b.astype(int)).sum() > 0


@pytest.mark.parametrize("task", ["push", "drawer-open", "drawer-close", "button-press-topdown", "door-open",
                                  "pick-place", "peg-insert-side", "window-open", "window-close"])
@pytest.mark.parametrize("cm", [2.5, 5.0])
def test_object_shift_moves_object_by_claimed_amount(task, cm):
    env = get_env(task)
    env.reset(EpisodeSpec(task, 3))
    nominal = env.object_position()
    env.reset(EpisodeSpec(task, 3, Perturbation("object", cm)))
    moved = env.object_position()
    assert np.linalg.norm((moved - nominal)[:2]) == pytest.approx(cm / 100, abs=2e-3)
    assert abs(moved[2] - nominal[2]) < 2e-3


@pytest.mark.parametrize("task", ["push", "reach", "pick-place", "peg-insert-side"])
def test_goal_shift_moves_goal_only(task):
    env = get_env(task)
    env.reset(EpisodeSpec(task, 4))
    goal0, obj0 = env.goal_position(), env.object_position()
    env.reset(EpisodeSpec(task, 4, Perturbation("goal", 5)))
    assert np.linalg.norm((env.goal_position() - goal0)[:2]) == pytest.approx(0.05, abs=1e-3)
    np.testing.assert_allclose(env.object_position(), obj0, atol=1e-3)


def test_robot_shift_moves_the_hand_start():
    env = get_env("drawer-close")
    hand0 = env.reset(EpisodeSpec("drawer-close", 5))[:3]
    hand1 = env.reset(EpisodeSpec("drawer-close", 5, Perturbation("robot", 5)))[:3]
    assert np.linalg.norm((hand1 - hand0)[:2]) == pytest.approx(0.05, abs=3e-3)


def test_goal_shift_does_not_apply_where_goal_is_fixed_to_object():
    assert not applies("drawer-open", Perturbation("goal", 5))
    assert applies("push", Perturbation("goal", 5))
    assert not applies("reach", Perturbation("object", 5))
    layout = episode_layout(EpisodeSpec("door-open", 1, Perturbation("goal", 5)))
    assert np.all(layout.goal_shift == 0)


@pytest.mark.parametrize("task", ["push", "pick-place", "peg-insert-side"])
def test_layouts_keep_meta_worlds_object_goal_separation(task):
    """Meta-World's reset loops forever on a frozen layout closer than this (push, pick-place: 0.15 m)."""
    for seed in range(50):
        layout = episode_layout(EpisodeSpec(task, seed, Perturbation("combined", 5)))
        assert np.linalg.norm(layout.rand_vec[0:2] - layout.rand_vec[3:5]) >= TASKS[task].min_object_goal_xy


@pytest.mark.parametrize("task", ["pick-place", "peg-insert-side", "window-open", "window-close"])
def test_mt10_task_resets_exactly_and_its_object_and_goal_are_visible(task):
    """Same spec, same frame; a 5 cm shift of the object (or a free goal) visibly changes the frame."""
    env = get_env(task)
    nominal = _first_frames(EpisodeSpec(task, 2), steps=0)[0].astype(int)
    assert nominal.mean() > 50, "frame is blank"
    np.testing.assert_array_equal(_first_frames(EpisodeSpec(task, 2), steps=0)[0], nominal)
    hand = env.reset(EpisodeSpec(task, 2))[:3]
    for kind in ("object", "goal"):
        if not applies(task, Perturbation(kind, 5)):
            continue
        shifted = _first_frames(EpisodeSpec(task, 2, Perturbation(kind, 5)), steps=0)[0].astype(int)
        changed = (np.abs(shifted - nominal).sum(-1) > 30).sum()
        assert changed >= 6, f"{task}: a 5 cm {kind} shift changes only {changed} px at 64x64"
        np.testing.assert_allclose(env.reset(EpisodeSpec(task, 2, Perturbation(kind, 5)))[:3], hand, atol=1e-3)


def test_a_goal_shifted_past_meta_worlds_range_reaches_the_expert_unclipped():
    """Meta-World clips observations to its goal sampling range; the expert must see the real goal."""
    env = get_env("reach")
    env.reset(EpisodeSpec("reach", 1_000_026, Perturbation("goal", 5)))
    goal = env.goal_position()
    assert goal[0] > 0.1, "this episode's goal should lie past Meta-World's range (x <= 0.1)"
    obs = env.step(np.zeros(4)).obs
    np.testing.assert_allclose(obs[36:39], goal, atol=1e-9)


def test_pick_place_puck_is_drawn_yellow():
    """The dark-red puck is a 2 px speck on the wood at 64x64; drawn yellow it stands out."""
    frame = _first_frames(EpisodeSpec("pick-place", 3), steps=0)[0].astype(int)
    yellow = (frame[..., 0] > 180) & (frame[..., 1] > 150) & (frame[..., 2] < 80)
    assert yellow.sum() >= 3, "the puck is not visible as yellow pixels"
    layout = episode_layout(EpisodeSpec("pick-place", 3))
    np.testing.assert_allclose(get_env("pick-place").object_position()[:2], layout.rand_vec[:2], atol=1e-3)


@pytest.mark.parametrize("task", list(TASKS))
def test_expert_succeeds(task):
    env = get_env(task)
    rec = record_expert_episode(env, EpisodeSpec(task, 11), max_steps=150)  # the evaluation's step limit
    assert rec.success, f"{task} expert failed"
    assert rec.frames.shape[1:] == (64, 64, 3)
    assert rec.length == rec.first_success_step + 8


def test_batched_simulator_across_processes_matches_in_process():
    specs = [EpisodeSpec("push", 20), EpisodeSpec("drawer-open", 21, Perturbation("robot", 2.5)),
             EpisodeSpec("push", 22)]
    actions = np.tile(np.array([0.3, 0.2, -0.1, 0.0], np.float32), (3, 8, 1))
    results = []
    for workers in (0, 2):
        with BatchedSimulator(num_workers=workers) as sim:
            obs = sim.reset(specs)
            step = sim.step_chunk(actions, render="all")
            results.append((obs, step))
    (o0, s0), (o1, s1) = results
    np.testing.assert_array_equal(o0.frames, o1.frames)
    np.testing.assert_array_equal(s0.frames, s1.frames)
    assert s0.frames.shape == (3, 8, 64, 64, 3)
    np.testing.assert_allclose(s0.states, s1.states)


def test_inactive_envs_do_not_step_and_success_step_is_exact():
    specs = [EpisodeSpec("drawer-close", 30), EpisodeSpec("drawer-close", 31)]
    with BatchedSimulator(num_workers=0) as sim:
        obs = sim.reset(specs)
        still = sim.step_chunk(np.ones((2, 8, 4), np.float32), active=np.array([True, False]))
        assert list(still.steps) == [8, 0]
        np.testing.assert_array_equal(still.frames[1, 0], obs.frames[1])
        np.testing.assert_allclose(still.states[1], obs.states[1])
    # the expert's recorded actions replayed in chunks report success at the exact step
    from vla_rft.sim.env import get_env
    rec = record_expert_episode(get_env("drawer-close"), specs[0], max_steps=150)
    with BatchedSimulator(num_workers=0) as sim:
        sim.reset([specs[0]])
        t = 0
        while True:
            chunk = rec.actions[t:t + 8]
            step = sim.step_chunk(chunk[None])
            if step.success[0]:
                assert t + int(step.first_success[0]) == rec.first_success_step
                break
            t += 8


def test_standard_suite_is_meta_world_mt10_and_quick_a_subset():
    from vla_rft.config import load_config

    mt10 = {"reach-v3", "push-v3", "pick-place-v3", "door-open-v3", "drawer-open-v3", "drawer-close-v3",
            "button-press-topdown-v3", "peg-insert-side-v3", "window-open-v3", "window-close-v3"}
    standard, quick = load_config(profile="standard").sim.tasks, load_config(profile="quick").sim.tasks
    assert {TASKS[t].env_name for t in standard} == mt10 and len(standard) == 10
    assert set(quick) < set(standard)


def test_peg_box_shifts_stay_within_the_robots_reach():
    """Meta-World's hand cannot go below y = 0.40: a shifted box (the goal) stays at y >= 0.41."""
    for seed in range(100):
        for kind in ("goal", "combined"):
            layout = episode_layout(EpisodeSpec("peg-insert-side", seed, Perturbation(kind, 5)))
            assert layout.rand_vec[4] >= 0.41
            assert np.linalg.norm(layout.goal_shift[:2]) == pytest.approx(0.05)


def test_rerendering_retraces_the_recorded_episodes_exactly_and_only_the_view_changes(tiny_dataset):
    from dataclasses import replace

    from vla_rft.data import load_dataset
    from vla_rft.sim.rerender import rerender

    data = load_dataset(tiny_dataset[0])
    same = rerender(data, image_size=data.image_size, camera="corner")
    assert same.mismatched_steps == 0 and same.mismatched_episodes == 0
    np.testing.assert_array_equal(same.data.images, data.images)  # the simulator is deterministic
    np.testing.assert_array_equal(same.data.successes, data.successes)

    push = rerender(data, image_size=32, camera="topview", tasks=["push"])
    rows = np.concatenate([np.arange(e["dataset_from_index"], e["dataset_to_index"])
                           for e in data.episodes if data.tasks[e["task_index"]] == "push"])
    assert push.data.images.shape == (len(rows), 32, 32, 3) and push.data.image_size == 32
    assert push.mismatched_steps == 0 and push.data.tasks == data.tasks  # task indices keep their meaning
    np.testing.assert_array_equal(push.data.successes, data.successes[rows])
    np.testing.assert_array_equal(push.data.actions, data.actions[rows])
    assert [e["dataset_from_index"] for e in push.data.episodes][0] == 0
    assert push.data.episode_index.max() == len(push.data.episodes) - 1
    assert push.data.images.mean() > 50  # a real view, not blank frames

    # the replay is driven by the recorded actions, and leaving the recorded trajectory is counted
    idle = replace(data, actions=np.zeros_like(data.actions))
    off = rerender(idle, image_size=data.image_size, camera="corner")
    assert off.mismatched_episodes == len(data.episodes) and off.mismatched_steps > 0  # every episode succeeded
    assert not np.array_equal(off.data.images, data.images)

    with pytest.raises(ValueError, match="not in the dataset"):
        rerender(data, image_size=64, camera="corner", tasks=["reach"])
    shifted = replace(data, episodes=[{**e, "perturbation": "object-2.5cm"} for e in data.episodes])
    with pytest.raises(ValueError, match="nominal layouts only"):
        rerender(shifted, image_size=64, camera="corner")


def test_instructions_name_the_goal_colours_the_simulator_draws():
    import mujoco

    from vla_rft.tasks import instruction_index

    colours = {"red": 0, "green": 1, "blue": 2}
    for task in ("reach", "push", "pick-place"):
        model = get_env(task).raw.model
        rgba = model.site_rgba[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, "goal")]
        named = [c for c in colours if f"the {c} goal" in TASKS[task].instruction]
        assert named == [["red", "green", "blue"][int(np.argmax(rgba[:3]))]], (task, rgba)
    # a policy or dataset recorded with a former wording is still matched to its task
    old = TASKS["reach"].former_instructions[0]
    assert instruction_index(["push the puck to the green goal", old], "reach") == 1
    assert instruction_index([TASKS["reach"].instruction], "reach") == 0
    assert instruction_index(["push the puck to the green goal"], "reach") is None

"""Evaluation in the real simulator: seeded episodes, perturbation suites, n/a cells, metrics, report."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from vla_rft.config import ConfigError, SimConfig
from vla_rft.evaluation.configuration import EvaluateConfig, suite_table
from vla_rft.evaluation.metrics import compare, compute_metrics, kfp_metrics, wilson_interval
from vla_rft.evaluation.report import ReportSection, format_rate, write_report
from vla_rft.evaluation.runner import (
    EpisodeResult, EvalResults, evaluate_expert, evaluate_policy, plan_episodes, run_evaluation,
)
from vla_rft.sim.perturbations import episode_layout
from vla_rft.sim.vector import BatchedSimulator

pytestmark = pytest.mark.filterwarnings("ignore:Constant.*may be too high")

TASKS = ["push", "drawer-open"]
K = 8


def zeros(frames, states, task_index):
    return np.zeros((len(frames), K, 4), np.float32)


def reach_for_a_point(frames, states, task_index):
    """A closed-loop policy (hand toward a task-dependent point, gripper pulsing): it moves the scene."""
    target = np.where(task_index[:, None] == 0, [0.05, 0.7, 0.1], [-0.05, 0.75, 0.15]).astype(np.float32)
    step = np.clip(10 * (target - states[:, :3]), -1, 1)
    grip = np.sign(np.sin(states[:, 0:1] * 200))
    return np.repeat(np.concatenate([step, grip], 1)[:, None], K, axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def sim():
    # one in-process simulator for the whole module: freeing envs' GL contexts blanks other envs
    s = BatchedSimulator(num_workers=0, max_episode_steps=150)
    yield s
    s.close()


def _cfg(**kw):
    base = dict(episodes_per_task=2, num_workers=0, batch_size=4, gifs_per_task=10, gif_suites=["all"])
    return EvaluateConfig(**{**base, **kw})


SHORT = dict(suites=["nominal", "object-5cm", "goal-5cm", "robot-5cm"], max_episode_steps=16)


@pytest.fixture(scope="module")
def short_run(sim):
    cfg = _cfg(**SHORT)
    return cfg, evaluate_policy(reach_for_a_point, TASKS, None, cfg, sim, name="p", progress=False)


@pytest.fixture(scope="module")
def nominal_runs(sim):
    """Zeros and the expert on the same nominal and goal-shifted episodes, full length."""
    cfg = _cfg(suites=["nominal", "goal-5cm"], gifs_per_task=1, gif_suites=["nominal"])
    z = evaluate_policy(zeros, TASKS, None, cfg, sim, name="zeros", progress=False)
    e = evaluate_expert(TASKS, None, cfg, sim, chunk_len=K, progress=False)
    return cfg, z, e


# -- configuration and planning -----------------------------------------------------------------

def test_config_validates_and_lists_suites_in_report_order():
    assert [s.name for s in EvaluateConfig().suite_list()] == [
        "nominal", "object-2.5cm", "object-5cm", "goal-2.5cm", "goal-5cm",
        "robot-2.5cm", "robot-5cm", "combined-2.5cm", "combined-5cm"]
    assert [s.name for s in EvaluateConfig(suites=["robot-5cm", "nominal"]).suite_list()] == ["nominal", "robot-5cm"]
    assert "object-3cm" in suite_table([3.0])
    with pytest.raises(ConfigError, match="unknown suite 'object-4cm'.*object-2.5cm"):
        EvaluateConfig(suites=["object-4cm"])
    with pytest.raises(ConfigError, match="episodes_per_task"):
        EvaluateConfig(episodes_per_task=0)
    with pytest.raises(ConfigError, match="magnitudes_cm"):
        EvaluateConfig(magnitudes_cm=[-1.0])


def test_plan_uses_fixed_seeds_and_skips_cells_the_suite_does_not_apply_to():
    cfg = EvaluateConfig(episodes_per_task=3, suites=["nominal", "goal-5cm", "object-5cm"])
    plan, na = plan_episodes(["reach", "drawer-open"], cfg.suite_list(), cfg)
    assert sorted(na) == [("goal-5cm", "drawer-open"), ("object-5cm", "reach")]
    cells = {(p.suite.name, p.spec.task) for p in plan}
    assert ("goal-5cm", "drawer-open") not in cells and ("object-5cm", "reach") not in cells
    assert [p.spec.seed for p in plan if p.suite.name == "nominal" and p.spec.task == "reach"] == [
        1_000_000, 1_000_001, 1_000_002]
    # the same episode index gives the same nominal layout in every suite; only the shift differs
    for p in plan:
        layout = episode_layout(p.spec)
        nominal = episode_layout(type(p.spec)(p.spec.task, p.spec.seed))
        unshifted = layout.rand_vec.copy()
        unshifted[:3] -= layout.object_shift if p.spec.task == "drawer-open" else 0
        if p.spec.task == "reach":
            unshifted[3:6] -= layout.goal_shift
        np.testing.assert_allclose(unshifted, nominal.rand_vec)


# -- the runner in the real simulator ---------------------------------------------------------

def test_evaluation_is_deterministic_with_0_and_2_workers(sim, short_run):
    cfg, first = short_run
    again = evaluate_policy(reach_for_a_point, TASKS, None, cfg, sim, name="p", progress=False)
    # two worker processes, built from the sim config as the stage does it
    (parallel,) = run_evaluation({"p": reach_for_a_point}, TASKS, dataclasses.replace(cfg, num_workers=2),
                                 SimConfig(tasks=TASKS), expert=False, progress=False)
    assert len(first.episodes) == 2 * 2 * 3 + 2  # goal-5cm runs on push only
    for other in (again, parallel):
        assert [e.__dict__ for e in other.episodes] == [e.__dict__ for e in first.episodes]
        assert len(other.videos) == len(first.videos) == len(first.episodes)
        for a, b in zip(first.videos, other.videos):
            assert (a.suite, a.task, a.episode) == (b.suite, b.task, b.episode)
            np.testing.assert_array_equal(a.frames, b.frames)
    # the policy moved the scene: frames change over an episode
    assert all(np.abs(v.frames[-1].astype(int) - v.frames[0]).sum() > 0 for v in first.videos)


def test_perturbation_suites_change_exactly_what_they_claim(short_run):
    _, res = short_run
    first = {(v.suite, v.task, v.episode): v.frames[0] for v in res.videos}
    init = {(e.suite, e.task, e.episode): np.array(e.initial_state) for e in res.episodes}
    for task in TASKS:
        for i in range(2):
            nominal = (task, i)
            # robot: the hand starts exactly 5 cm away in the table plane, same height
            shift = init[("robot-5cm", *nominal)] - init[("nominal", *nominal)]
            assert np.linalg.norm(shift[:2]) == pytest.approx(0.05, abs=3e-3)
            assert abs(shift[2]) < 2e-3
            # object: the hand (unperturbed) starts where it does nominally; the scene differs
            np.testing.assert_allclose(init[("object-5cm", *nominal)], init[("nominal", *nominal)], atol=1e-6)
            for suite in ("object-5cm", "robot-5cm"):
                assert np.abs(first[(suite, *nominal)].astype(int) - first[("nominal", *nominal)]).sum() > 0
    # goal: push only; hand and puck unchanged, the goal marker moved
    for i in range(2):
        np.testing.assert_allclose(init[("goal-5cm", "push", i)], init[("nominal", "push", i)], atol=1e-6)
        assert np.abs(first[("goal-5cm", "push", i)].astype(int) - first[("nominal", "push", i)]).sum() > 0
    assert res.cell("goal-5cm", "drawer-open") == []
    assert ("goal-5cm", "drawer-open") in res.not_applicable


def test_zero_policy_fails_where_the_expert_succeeds_on_the_same_episodes(nominal_runs):
    cfg, z, e = nominal_runs
    assert [(r.suite, r.task, r.seed) for r in z.episodes] == [(r.suite, r.task, r.seed) for r in e.episodes]
    m = compute_metrics([z, e], comparisons=[("zeros", "expert")])
    assert m["policies"]["zeros"]["cells"]["nominal"]["drawer-open"]["success_rate"] == 0.0
    assert m["policies"]["expert"]["cells"]["nominal"]["drawer-open"]["success_rate"] == 1.0
    assert all(r.success for r in e.episodes), "the scripted expert should solve every nominal/goal episode"
    assert all(r.steps == cfg.max_episode_steps for r in z.episodes)
    assert m["policies"]["expert"]["cells"]["goal-5cm"]["drawer-open"] == {"applicable": False}
    assert m["policies"]["expert"]["suites"]["goal-5cm"]["tasks"] == 1


def test_replaying_the_experts_actions_in_chunks_reproduces_its_successes(sim):
    cfg = _cfg(episodes_per_task=1, suites=["nominal"], batch_size=1, gifs_per_task=0)
    plan, _ = plan_episodes(TASKS, cfg.suite_list(), cfg)
    records = sim.record_episodes([p.spec for p in plan], [0.0] * len(plan), 0)
    by_first_frame = {r.frames[0].tobytes(): r.actions for r in records}
    cursor = {}

    def replay(frames, states, task_index):  # open loop: knows its episode by the reset frame
        key = frames[0].tobytes()
        if key in by_first_frame:
            cursor.update(actions=by_first_frame[key], t=0)
        acts = cursor["actions"][cursor["t"]:cursor["t"] + K]
        cursor["t"] += K
        return np.pad(acts, ((0, K - len(acts)), (0, 0)))[None]

    res = evaluate_policy(replay, TASKS, None, cfg, sim, name="replay", progress=False)
    for ep, rec in zip(res.episodes, records):
        assert rec.success and ep.success
        assert ep.steps_to_success == rec.first_success_step


def test_a_policy_with_the_wrong_action_shape_is_named(sim):
    bad = lambda f, s, t: np.zeros((len(f), K, 7), np.float32)  # noqa: E731
    with pytest.raises(ValueError, match=r"expected \(B=2, K, 4\)"):
        evaluate_policy(bad, TASKS, None, _cfg(episodes_per_task=1, suites=["nominal"]), sim, progress=False)



def test_nominal_suite_can_run_more_episodes_than_the_perturbation_suites():
    cfg = EvaluateConfig(episodes_per_task=2, nominal_episodes_per_task=5, suites=["nominal", "robot-5cm"])
    plan, _ = plan_episodes(["reach", "push"], cfg.suite_list(), cfg)
    seeds = {(s, t): [p.spec.seed for p in plan if (p.suite.name, p.spec.task) == (s, t)]
             for s in ("nominal", "robot-5cm") for t in ("reach", "push")}
    assert seeds[("nominal", "reach")] == [1_000_000 + i for i in range(5)]
    assert seeds[("robot-5cm", "push")] == [1_000_000, 1_000_001]  # the nominal suite's first layouts
    assert len(plan) == 2 * 5 + 2 * 2
    assert EvaluateConfig(episodes_per_task=7).nominal_episodes == 7  # 0: as many as every other suite
    with pytest.raises(ConfigError, match="nominal_episodes_per_task"):
        EvaluateConfig(nominal_episodes_per_task=-1)
    # an evaluation records the design; results of another nominal count are not comparable
    a = EvalResults("a", ["reach"], cfg.suite_list(), [], [], episodes_per_task=2, nominal_episodes_per_task=5)
    assert EvalResults.from_dict(json.loads(json.dumps(a.to_dict()))) == a
    old = a.to_dict()
    del old["nominal_episodes_per_task"]  # written before the key existed: the same count everywhere
    assert EvalResults.from_dict(old).nominal_episodes_per_task == 2
    with pytest.raises(ValueError, match="other episodes"):
        compute_metrics([a, EvalResults("b", ["reach"], cfg.suite_list(), [], [], episodes_per_task=2)])

# -- metrics ----------------------------------------------------------------------------------

def test_wilson_interval_matches_hand_computed_values():
    lo, hi = wilson_interval(7, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.3968, 0.8922)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)


def _fake(policy, rates, cfg):
    """Results with a given success rate per task on the nominal and robot-5cm suites (no simulator)."""
    suites = cfg.suite_list()
    eps = [EpisodeResult(s.name, t, i, cfg.seed_base + i, i < round(rate * cfg.episodes_per_task), 10, 5 if
                         i < round(rate * cfg.episodes_per_task) else None, [0.0] * 4)
           for s in suites for t, rate in zip(["reach", "push"], rates) for i in range(cfg.episodes_per_task)]
    return EvalResults(policy, ["reach", "push"], suites, eps, [], [], episodes_per_task=cfg.episodes_per_task,
                       max_episode_steps=150, seed_base=cfg.seed_base, chunk_len=K)


def test_gain_and_share_of_gap_closed():
    cfg = EvaluateConfig(episodes_per_task=10, suites=["nominal", "robot-5cm"])
    m = compute_metrics([_fake("base", [0.4, 0.6], cfg), _fake("rft", [0.6, 0.8], cfg),
                         _fake("expert", [0.8, 1.0], cfg)], comparisons=[("rft", "base")])
    c = m["comparisons"][0]
    assert c["gain"]["nominal"] == pytest.approx(0.2)
    assert c["gap_closed"]["nominal"] == pytest.approx(0.5)
    assert c["cells_gain"]["robot-5cm"]["push"] == pytest.approx(0.2)
    assert m["policies"]["rft"]["suites"]["nominal"]["success_rate"] == pytest.approx(0.7)
    assert m["policies"]["rft"]["suites"]["nominal"]["n"] == 20
    flat = kfp_metrics(m, "rft")
    assert flat["success/nominal/push"] == pytest.approx(0.8)
    assert flat["gain_vs_base/overall/all"] == pytest.approx(0.2)
    assert all(isinstance(v, float) for v in flat.values())
    assert compare(m, "base", "rft")["gap_closed"]["nominal"] == pytest.approx(-1.0)
    rft = _fake("rft", [0.6, 0.8], cfg)
    assert EvalResults.from_dict(json.loads(json.dumps(rft.to_dict()))) == rft
    with pytest.raises(ValueError, match="other episodes"):
        compute_metrics([rft, _fake("b", [1, 1], EvaluateConfig(episodes_per_task=10, seed_base=7))])
    with pytest.raises(ValueError, match="other episodes"):
        compute_metrics([_fake("a", [1, 1], cfg), _fake("b", [1, 1], EvaluateConfig(episodes_per_task=5))])


# -- report -----------------------------------------------------------------------------------

def test_report_files_and_numbers(nominal_runs, tmp_path):
    _, z, e = nominal_runs
    m = compute_metrics([z, e], comparisons=[("zeros", "expert")])
    section = ReportSection("World-model fidelity", "<p>see <img src='wm/curve.png'></p>", {"wm/curve.png": b"png"})
    written = write_report(tmp_path, m, [z, e], sections=[section])
    for name in ("metrics.json", "summary.md", "report.html", "episodes.csv", "plots/success_by_suite.png",
                 "wm/curve.png"):
        assert (tmp_path / name).is_file(), name
    md = (tmp_path / "summary.md").read_text()
    assert "| nominal | 0.0% [0.0, 49.0] (n=4) | 100.0% [51.0, 100.0] (n=4) |" in md
    assert "| goal-5cm | 100.0% [34.2, 100.0] (n=2) | n/a |" in md  # expert, by task: push, drawer-open
    assert format_rate(m["policies"]["expert"]["cells"]["goal-5cm"]["drawer-open"]) == "n/a"
    assert json.loads((tmp_path / "metrics.json").read_text())["policies"]["expert"]["overall"]["all"] == 1.0
    page = (tmp_path / "report.html").read_text()
    gifs = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.glob("gifs/*/*.gif"))
    # one success and one failure per task at most: the expert only succeeds, zeros only fail
    assert gifs == ["gifs/expert/nominal_drawer-open_ep0_success.gif", "gifs/expert/nominal_push_ep0_success.gif",
                    "gifs/zeros/nominal_drawer-open_ep0_failure.gif", "gifs/zeros/nominal_push_ep0_failure.gif"]
    assert all(f"src='{g}'" in page for g in gifs)
    assert "World-model fidelity" in page and "wm/curve.png" in page
    assert set(written) >= {"metrics", "summary", "html"}
    with pytest.raises(ValueError, match="relative path"):
        write_report(tmp_path / "x", m, sections=[("bad", "", {"../escape.txt": b""})], plots=False)

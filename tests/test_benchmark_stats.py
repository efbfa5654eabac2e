"""The headline benchmark's statistics, checked by hand on tiny tables (no simulator)."""

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import headline  # noqa: E402


def _episodes(table: dict[str, list[int]], suite: str = "nominal") -> list[dict]:
    """Episode rows as evaluation artifacts hold them: one success flag per policy and episode."""
    return [{"policy": p, "suite": suite, "task": "reach" if e % 2 == 0 else "push", "episode": e // 2,
             "success": bool(x)} for p, flags in table.items() for e, x in enumerate(flags)]


def test_crossed_interval_adds_the_seed_variance_when_seeds_disagree():
    # d[s, e] = rft_s - base: [[1, 1, 1, 0], [0, 0, 1, 0]]; by hand: MS_E = 1/3, MS_S = 1/2,
    # MS_SE = 1/6, Var = (1/3 + 1/2 - 1/6) / 8 = 1/12, Satterthwaite dof = (2/3)^2 / (1/27 + 1/4 + 1/108) = 1.5
    eps = _episodes({"base": [0, 0, 0, 0], "s0": [1, 1, 1, 0], "s1": [0, 0, 1, 0]})
    c = headline.crossed_interval(eps, ["s0", "s1"], "base", "nominal")
    assert c["gain"] == pytest.approx(0.5)
    assert (c["ms_episodes"], c["ms_seeds"], c["ms_residual"]) == pytest.approx((1 / 3, 1 / 2, 1 / 6))
    assert c["dof"] == pytest.approx(1.5)
    assert c["half_width"] == pytest.approx(12.706 * math.sqrt(1 / 12))  # t at 1 dof (rounded down)
    assert c["ci"][0] == pytest.approx(0.5 - c["half_width"])


def test_crossed_interval_is_the_episode_interval_when_the_seeds_add_nothing():
    # d = [[1, 0, 1], [0, 0, 1]]: MS_S = MS_SE = 1/6, so the seed part is 0 and Var = MS_E / (S N) = 1/12
    eps = _episodes({"base": [0, 0, 0], "s0": [1, 0, 1], "s1": [0, 0, 1]})
    c = headline.crossed_interval(eps, ["s0", "s1"], "base", "nominal")
    assert c["dof"] == pytest.approx(2)
    assert c["half_width"] == pytest.approx(4.303 * math.sqrt(1 / 12))
    one = headline.crossed_interval(eps, ["s0"], "base", "nominal")
    assert one["seeds"] == 1 and one["gain"] == pytest.approx(2 / 3)
    # one seed: the paired episode variance only, sum((d - 2/3)^2) / (N - 1) / N = (2/3) / 2 / 3
    assert one["half_width"] == pytest.approx(4.303 * math.sqrt(1 / 9))


def test_crossed_interval_refuses_unpaired_evaluations():
    eps = _episodes({"base": [0, 0, 0, 0], "s0": [1, 1, 1, 0]})
    eps = [r for r in eps if not (r["policy"] == "s0" and r["episode"] == 1)]
    with pytest.raises(ValueError, match="same episodes"):
        headline.crossed_interval(eps, ["s0"], "base", "nominal")
    with pytest.raises(ValueError, match="no episodes"):
        headline.crossed_interval(eps, ["s0"], "base", "robot-5cm")


def test_the_evaluation_design_is_stated_as_run():
    assert headline.episodes_text({"episodes_per_task": 20}) == "20 episodes per task and suite"
    assert headline.episodes_text({"episodes_per_task": 10, "nominal_episodes_per_task": 50}) == (
        "50 episodes per task on the nominal suite and 10 per task on each perturbation suite")


def _evaluation(tmp_path, name: str, rates: dict[str, list[float]], cfg) -> str:
    """A real evaluation artifact (metrics.json + episodes.csv under a manifest) without the simulator."""
    from vla_rft import storage
    from vla_rft.evaluation.metrics import compute_metrics
    from vla_rft.evaluation.report import write_episodes_csv
    from vla_rft.evaluation.runner import EpisodeResult, EvalResults

    results = []
    for policy, (p_reach, p_push) in rates.items():
        eps = [EpisodeResult(s.name, t, i, cfg.seed_base + i, ok, 10, 5 if ok else None, [0.0])
               for s in cfg.suite_list() for t, p in (("reach", p_reach), ("push", p_push))
               for i in range(cfg.episodes_for(s)) for ok in [i < round(p * cfg.nominal_episodes)]]
        results.append(EvalResults(policy, ["reach", "push"], cfg.suite_list(), eps, [], [],
                                   episodes_per_task=cfg.episodes_per_task, seed_base=cfg.seed_base,
                                   nominal_episodes_per_task=cfg.nominal_episodes))
    src = tmp_path / f"{name}-files"
    src.mkdir()
    (src / "metrics.json").write_text(json.dumps(compute_metrics(results)))
    write_episodes_csv(src / "episodes.csv", results)
    uri = str(tmp_path / name)
    storage.write_artifact(src, uri, kind="evaluation", config={})
    return uri


def test_a_reused_evaluation_is_combined_with_renamed_policies(tmp_path):
    from vla_rft.evaluation.configuration import EvaluateConfig

    cfg = EvaluateConfig(episodes_per_task=2, nominal_episodes_per_task=4, suites=["nominal", "robot-5cm"])
    pipeline = _evaluation(tmp_path, "pipeline", {"base": [0.5, 0.25], "rft": [0.75, 0.25]}, cfg)
    seed1 = _evaluation(tmp_path, "eval-rft-s1", {"rft-s1": [0.5, 0.5]}, cfg)
    metrics, episodes = headline.combined_evaluation([f"{pipeline}#rft=rft-s0", seed1])
    assert sorted(metrics["policies"]) == ["base", "rft-s0", "rft-s1"]
    assert {r["policy"] for r in episodes} == {"base", "rft-s0", "rft-s1"}
    c = headline.crossed_interval(episodes, ["rft-s0", "rft-s1"], "base", "nominal")
    assert c["episodes"] == 8 and c["gain"] == pytest.approx((0.125 + 0.125) / 2)
    with pytest.raises(SystemExit, match="holds no policy 'rtf'"):
        headline.combined_evaluation([f"{pipeline}#rtf=rft-s0"])
    with pytest.raises(SystemExit, match="is in"):
        headline.combined_evaluation([pipeline, _evaluation(tmp_path, "again", {"rft": [1, 1]}, cfg)])
    other = _evaluation(tmp_path, "other", {"rft-s2": [1, 1]},
                        EvaluateConfig(episodes_per_task=2, suites=["nominal", "robot-5cm"]))
    with pytest.raises(SystemExit, match="other suites or episodes"):
        headline.combined_evaluation([pipeline, other])


def test_the_peer_row_must_share_the_base_policy_and_the_episodes(tmp_path):
    meta = {"artifacts": {"base": str(tmp_path / "bc")}, "episodes_per_task": 10, "nominal_episodes_per_task": 50}
    row = {"base_policy": str(tmp_path / "bc"), "episodes_per_task": 10, "nominal_episodes_per_task": 50,
           "success": {"act": {"overall": {"nominal": 0.4, "perturbed": 0.3}}, "base": {}},
           "act_train": {"steps": 5}, "base_train": {"steps": 9}, "evaluation_seconds": 1.0}
    path = tmp_path / "peer.json"
    path.write_text(json.dumps(row))
    assert headline.peer_row(str(path), meta)["success"]["overall"]["nominal"] == 0.4
    path.write_text(json.dumps({**row, "base_policy": str(tmp_path / "other")}))
    with pytest.raises(SystemExit, match="base policy"):
        headline.peer_row(str(path), meta)
    path.write_text(json.dumps({**row, "nominal_episodes_per_task": 0}))  # 10 everywhere: other episodes
    with pytest.raises(SystemExit, match="other episodes"):
        headline.peer_row(str(path), meta)


def test_ablation_bootstrap_resamples_within_tasks_and_pairs_by_layout():
    import closed_loop_ablations as abl

    # reach gains +1 on every layout, push 0: within-task resampling cannot move the mean (0.5)
    tasks = ["reach"] * 4 + ["push"] * 4
    after, before = [1, 1, 1, 1, 0, 1, 0, 1], [0, 0, 0, 0, 0, 1, 0, 1]
    assert abl.paired_bootstrap(after, before, tasks) == pytest.approx((0.5, 0.5, 0.5))
    # pooled over one stratum the same differences vary: a real interval around the same mean
    mean, lo, hi = abl.paired_bootstrap(after, before, ["all"] * 8)
    assert mean == pytest.approx(0.5) and lo < 0.5 < hi
    with pytest.raises(ValueError, match="equal, non-zero lengths"):
        abl.paired_bootstrap([1, 0], [1], ["reach", "reach"])

    # an arm's check lists the same layouts in another order: outcomes are matched by (task, seed)
    def check(order, real):
        return {"episode_outcomes": {"task": [t for t, _ in order], "seed": [s for _, s in order], "real": real}}

    layouts = [("reach", 1), ("push", 1), ("reach", 2), ("push", 2)]
    base = check(layouts, [0, 0, 1, 0])
    arm = check(layouts[::-1], [1, 0, 1, 1])  # push 2: 1, reach 2: 0, push 1: 1, reach 1: 1
    a = abl.analyse(base, {"reference": {"after": arm}})
    assert a["rows"]["reference"]["real_success"] == pytest.approx(0.75)
    assert a["rows"]["reference"]["vs_base"][0] == pytest.approx((1 + 1 - 1 + 1) / 4)  # reach 1, push 1, reach 2, push 2
    with pytest.raises(ValueError, match="different layouts"):
        abl.analyse(base, {"reference": {"after": check([("reach", 9)] + layouts[1:], [1, 0, 1, 1])}})


def test_ablation_arms_are_named_settings_and_an_unknown_one_is_refused():
    import closed_loop_ablations as abl
    from vla_rft.config import load_config

    assert [a.name for a in abl.parse_arms("shuffled, horizon6")] == ["shuffled", "horizon6"]
    with pytest.raises(ValueError, match="unknown arm.*horizon7.*known: reference"):
        abl.parse_arms("reference,horizon7")
    # every arm's overrides are valid config values (in episode mode, as the script runs them) that differ
    # from the defaults
    params = str(Path(__file__).resolve().parents[1] / "params.yaml")
    episode = ["rft.mode=episode"]
    ref = load_config(params, "standard", episode)
    for arm in abl.parse_arms(""):
        cfg = load_config(params, "standard", [*episode, *arm.overrides])
        changed = (cfg.section("rft"), cfg.common) != (ref.section("rft"), ref.common)
        assert changed == bool(arm.overrides), arm.name
    # a replicate is its arm with another RFT seed and nothing else
    for name in abl.REPLICATED:
        for seed in abl.REPLICATE_SEEDS:
            rep = abl.ARMS[f"{name}_s{seed}"]
            assert abl.arm_seed(rep.name) == (name, seed) and abl.arm_seed(name) == (name, 0)
            cfg, own = load_config(params, "standard", [*episode, *rep.overrides]), load_config(
                params, "standard", [*episode, *abl.ARMS[name].overrides])
            assert cfg.common.seed == seed and cfg.section("rft") == own.section("rft")
            assert (rep.world_model, rep.veto) == (abl.ARMS[name].world_model, abl.ARMS[name].veto)
    assert abl.arm_seed("explore_low_lr1e-5") == ("explore_low_lr1e-5", 0)


def test_ablation_report_shows_each_arm_against_base_and_reference():
    import closed_loop_ablations as abl

    def check(real, imagined_share):
        per_task = {t: {"real_success": (real[i] + real[i + 2]) / 2, "imagined_success": imagined_share}
                    for i, t in enumerate(["reach", "push"])}
        return {"episode_outcomes": {"task": ["reach", "push"] * 2, "seed": [1, 1, 2, 2], "real": real},
                "imagined_success": imagined_share, "real_success": sum(real) / 4, "hallucination_rate": 0.0,
                "correlation_across_tasks": None, "imagined_auc": 0.9, "seeds": [1, 3], "horizon_chunks": 12,
                "threshold": 0.99, "per_task": per_task}

    train = {"imagined_success_first": 0.25, "imagined_success_last": 0.5, "groups_dropped": 3, "groups_total": 8,
             "seconds_per_step": 3.456}
    arms = {"reference": {"what": "the defaults", "after": check([1, 1, 0, 0], 0.5), "train": train},
            "horizon6": {"what": "6 chunks", "after": check([1, 1, 1, 1], 0.25),
                         "train": {**train, "simulator_episodes": 128},
                         "own_instrument_base": check([0, 1, 0, 1], 0.75)}}
    base = check([0, 1, 0, 1], 0.5)
    text = abl.render({"command": "c", "date": "d", "platform": "p", "steps": 2, "profile": "standard",
                       "base": base, "arms": arms, "analysis": abl.analyse(base, arms)})
    rows = {}  # the first table's row of each arm
    for line in text.splitlines():
        if line.startswith("| "):
            rows.setdefault(line.split(" | ")[0].strip("| "), line)
    assert "| 50.0 | +0.0 [" in rows["reference"] and "| n/a |" in rows["reference"]  # 2 of 4, as the base
    # vs base: reach +1 on both layouts, push 0 on both, so within-task resampling keeps +50 exactly
    assert "| 100.0 | +50.0 [+50.0, +50.0] | +50.0 [" in rows["horizon6"]
    # real-simulator episodes used in training: none for a world-model arm (a file from before the column too)
    assert "25.0 -> 50.0 | 3/8 | 0 | 3.46 |" in rows["reference"] and "| 3/8 | 128 | 3.46 |" in rows["horizon6"]
    assert "own training setting" in text and text.count("\n| horizon6 |") == 2
    # per task, real / imagined: the base, then each arm in the table's order
    assert "| task | base | reference | horizon6 |" in text
    assert "| reach | 0.0 / 0.5 | 0.5 / 0.5 | 1.0 / 0.2 |" in text and "| push | 1.0 / 0.5 | 0.5 / 0.5 | 1.0 / 0.2 |" in text


def test_ablation_table_holds_every_arm_measured_at_the_same_steps(tmp_path):
    import closed_loop_ablations as abl

    # a run with --arms shuffled must not drop the arms an earlier run measured
    for name, steps in (("shuffled", 60), ("reference", 60), ("kl0.1", 30)):
        (tmp_path / f"{name}.json").write_text(json.dumps({"arm": name, "steps": steps}))
    (tmp_path / "base_honesty_grounded_th0.9940_h12.json").write_text("{}")
    assert list(abl.cached_arms(tmp_path, 60)) == ["reference", "shuffled"]  # ARMS order, 60-step runs only
    assert list(abl.cached_arms(tmp_path, 30)) == ["kl0.1"]
    # the command recorded for the table names all of its arms, not just those this run trained
    assert abl.table_command(["--work", "w", "--arms", "shuffled", "--steps", "60"], ["reference", "shuffled"]) == \
        "benchmarks/closed_loop_ablations.py --work w --steps 60 --arms reference,shuffled"
    assert abl.table_command(["--arms=shuffled"], ["shuffled"]) == "benchmarks/closed_loop_ablations.py --arms shuffled"


def test_crossed_interval_table_is_crossed_interval_of_the_built_table():
    eps = _episodes({"base": [0, 1, 0, 1, 1, 0], "s0": [1, 1, 0, 1, 1, 1], "s1": [0, 1, 1, 1, 0, 0]})
    c = headline.crossed_interval(eps, ["s0", "s1"], "base", "nominal")
    # the same differences, in crossed_interval's (task, episode) order: push 0..2, then reach 0..2
    order = [1, 3, 5, 0, 2, 4]
    flags = {"base": [0, 1, 0, 1, 1, 0], "s0": [1, 1, 0, 1, 1, 1], "s1": [0, 1, 1, 1, 0, 0]}
    d = [[flags[p][i] - flags["base"][i] for i in order] for p in ("s0", "s1")]
    assert headline.crossed_interval_table(d) == c
    for bad in ([], [1, 0, 1]):
        with pytest.raises(ValueError, match="seeds x episodes table"):
            headline.crossed_interval_table(bad)


def test_ablation_arms_with_several_seeds_are_pooled_and_paired_seed_by_seed():
    import closed_loop_ablations as abl

    def check(real):
        return {"after": {"episode_outcomes": {"task": ["reach", "push"] * 2, "seed": [1, 1, 2, 2], "real": real}},
                "what": "w"}

    base = check([0, 1, 0, 1])["after"]
    arms = {"reference": check([1, 1, 0, 0]), "reference_s1": check([1, 1, 1, 0]),
            "explore_low": check([1, 1, 1, 1]), "explore_low_s1": check([1, 1, 1, 1]),
            "horizon6": check([0, 0, 0, 0]), "kl0.1": check([1, 0, 0, 0]), "kl0.1_s2": check([1, 1, 0, 0])}
    pooled = abl.pooled_over_seeds(base, arms)
    assert set(pooled) == {"reference", "explore_low", "kl0.1"}  # horizon6 ran once
    ref = pooled["reference"]
    assert ref["seeds"] == [0, 1] and ref["real_success_per_seed"] == [0.5, 0.75]
    assert ref["real_success"] == pytest.approx(0.625)
    assert ref["vs_base"]["gain"] == pytest.approx((0 + 0.25) / 2) and ref["vs_base"]["seeds"] == 2
    assert "vs_reference" not in ref
    # explore_low - reference, seed 0 with seed 0 and 1 with 1: (0, 0, 1, 1) and (0, 0, 0, 1)
    low = pooled["explore_low"]
    assert low["vs_reference"]["gain"] == pytest.approx(0.375) and low["vs_reference_seeds"] == [0, 1]
    assert low["vs_base"]["gain"] == pytest.approx(0.5)
    lo, hi = low["vs_reference"]["ci"]
    assert lo < 0.375 < hi
    # kl0.1 ran with seeds 0 and 2, the reference with 0 and 1: one common seed is no pairing over seeds
    assert pooled["kl0.1"]["seeds"] == [0, 2] and "vs_reference" not in pooled["kl0.1"]
    text = abl.render({"command": "c", "date": "d", "platform": "p", "steps": 2, "profile": "standard",
                       "base": {**base, "imagined_success": 0.5, "real_success": 0.5, "hallucination_rate": 0.0,
                                "correlation_across_tasks": None, "seeds": [1, 3], "horizon_chunks": 12,
                                "threshold": 0.99, "per_task": {}},
                       "arms": {}, "analysis": {"layouts": 4, "rows": {}, "pooled": pooled}})
    assert "| explore_low | 0, 1 | 100.0 (100.0, 100.0) | +50.0 [" in text
    assert "| reference | 0, 1 | 62.5 (50.0, 75.0) | +12.5 [" in text and text.rstrip().endswith("|")


def test_judge_views_table_pools_seeds_and_says_where_the_precision_was_never_reached():
    import judge_views

    assert judge_views.parse_view("corner+topview@64") == (["corner", "topview"], 64)
    for bad in ("corner", "corner@", "@64", "corner+@64", "corner@x"):
        with pytest.raises(SystemExit, match="camera@size"):
            judge_views.parse_view(bad)

    def run(seed, auc, recall, reached):
        return {"seed": seed, "tasks": ["reach"], "auc": auc, "auc_per_task": {"reach": auc},
                "recall_per_task": {"reach": recall}, "precision_reached": {"reach": reached},
                "target_precision": 0.95, "train_s": 10.0 * (seed + 1)}

    result = {"command": "c", "date": "d", "platform": "p", "views": [
        {"view": "corner@64", "frames": 7, "mismatched_steps": 0, "render_s": None,
         "seeds": [run(0, 0.7, 0.0, False), run(1, 0.8, 0.1, True), run(2, 0.9, 0.3, True)]}]}
    row = [line for line in judge_views.render(result).splitlines() if line.startswith("| corner@64")][0]
    # mean AUC 0.8 (0.70-0.90); two of three seeds reach precision 0.95, mean recall 0.20 among them
    assert "0.800 (0.70-0.90); 2/3 at recall 0.20" in row
    assert row.endswith("| n/a | 20 |")  # frames from the cache: no render time; mean train time

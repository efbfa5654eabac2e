"""Ablations of episode-mode RFT on development seeds: which setting moves real success, and which way?

The closed-loop headline (``benchmarks/closed_loop.py``) is measured on evaluation seeds. Choosing
settings there would tune on the test set, so this script varies one ``rft`` setting at a time
from the ``standard`` defaults and measures every fine-tuned policy on the *development* layouts of
the honesty check (training-range seeds ``rft.honesty_seed_offset`` onwards, held out from the
expert data and the rollouts; ``rft.honesty_episodes_per_task`` per task, ``rft.horizon`` chunks):

    .venv/bin/python benchmarks/closed_loop_ablations.py --work runs/ablations \\
        --dataset runs/cl/dataset --rollouts runs/cl/rollouts --policy runs/cl/policy_bc \\
        --world-model runs/cl/world_model_grounded --expert-world-model runs/cl/world_model \\
        --success-model runs/cl/success_model [--steps 60] [--arms reference,kl0.1,...]

Every arm trains from the same base policy for ``--steps`` GRPO steps (the stage's own code,
``stages.rft_episode``), then runs the same instrument: real episodes from the development
layouts, and closed-loop imagination from the same layouts in the grounded world model judged at
the judge's calibrated threshold. The real outcome of each layout is paired with the base policy's
and the reference arm's, and the gains get a bootstrap interval resampling layouts within each task.
Arms that change the instrument itself (the world model, the threshold, the horizon) also get the
base policy's honesty under their own training setting: how honest the reward was that they learnt.

Each arm's policy is an artifact under ``--work`` and its numbers a JSON file beside it: an
interrupted run resumes (a half-trained arm from its checkpoint) and more arms can be added later.
Writes ``--out`` (markdown) and its ``.json`` after every arm.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from headline import _log, _pct, _share, _signed, crossed_interval_table, write_result  # noqa: E402

from vla_rft import stages, storage  # noqa: E402
from vla_rft.config import load_config  # noqa: E402


@dataclass(frozen=True)
class Arm:
    name: str
    what: str
    overrides: tuple[str, ...] = ()
    world_model: str = "grounded"  # or "expert": the world model trained on expert episodes only
    veto: str | None = None  # a second world model ("expert"/"grounded") whose replay must confirm a success


#: one change each from the defaults, most informative first (a partial run still answers something)
ARMS = {a.name: a for a in (
    Arm("reference", "the defaults"),
    Arm("kl0.1", "KL to the base policy, beta 0.1 (0)", ("rft.kl_beta=0.1",)),
    Arm("horizon6", "6-chunk imagined episodes (12)", ("rft.horizon=6",)),
    Arm("no_keyframes", "starts at reset frames only (keyframe share 0.5)", ("rft.keyframe_share=0",)),
    Arm("group4", "16 starts x group 4 (8 x 8)", ("rft.batch_starts=16", "rft.group_size=4")),
    Arm("no_filter", "groups with equal outcomes kept (dropped)", ("rft.filter_groups=false",)),
    Arm("threshold0.9", "fixed success threshold 0.9 (calibrated)",
        ("rft.success_threshold_source=fixed", "rft.success_threshold=0.9")),
    Arm("per_task_threshold", "a threshold per task, calibrated on its val replays (one global)",
        ("rft.success_threshold_source=per_task",)),
    Arm("dense0.5", "dense progress term 0.5 (off)", ("rft.progress_coef=0.5",)),
    Arm("expert_wm", "world model of expert episodes only (grounded on the rollouts)", (), "expert"),
    # the shuffled control loses more than the reference: the update's own drift, not the reward, costs most;
    # these arms move less per step or stay nearer the expert data
    Arm("explore_low", "exploration std 0.1-0.2 (0.3-0.5)", ("rft.explore_std_min=0.1", "rft.explore_std_max=0.2")),
    Arm("bc0.1", "BC regulariser on expert chunks 0.1 (0.01)", ("rft.bc_coef=0.1",)),
    Arm("lr1e-5", "learning rate 1e-5 (3e-5)", ("rft.lr=0.00001",)),
    Arm("explore_low_lr1e-5", "exploration std 0.1-0.2 and learning rate 1e-5 (the two best, together)",
        ("rft.explore_std_min=0.1", "rft.explore_std_max=0.2", "rft.lr=0.00001")),
    Arm("shuffled", "advantages shuffled within each group (the control)", ("rft.shuffle_advantages=true",)),
    # the tasks with room to improve are never imagined successful, so their groups are all-fail and dropped;
    # a dense term ranks their episodes by the judge's peak probability (frame AUC there 0.82-0.92)
    Arm("explore_low_dense1", "exploration std 0.1-0.2 and dense progress term 1.0 (off)",
        ("rft.explore_std_min=0.1", "rft.explore_std_max=0.2", "rft.progress_coef=1.0")),
    # the exploits are one world model's artefacts: a success counts only if the expert-only world model's
    # replay of the same actions is judged successful too (the min over two models)
    Arm("veto_expert_wm", "success confirmed by the expert-only world model's replay (grounded alone)", (),
        veto="expert"),
    Arm("explore_low_veto", "exploration std 0.1-0.2 and success confirmed by the expert-only world model",
        ("rft.explore_std_min=0.1", "rft.explore_std_max=0.2"), veto="expert"),
    # the drift hypothesis once more: the trunk (shared by every task) frozen, only the action heads move
    Arm("explore_low_heads", "exploration std 0.1-0.2 and only the action heads trained (trunk and heads)",
        ("rft.explore_std_min=0.1", "rft.explore_std_max=0.2", "rft.trainable=heads")),
    # the loss is on the hard tasks, the exploits on the solved ones (drawer-open): start imagined episodes
    # only from the tasks the base's rollouts do not already solve in 90 % of episodes
    Arm("unsolved", "no starts from tasks the rollouts solve in >= 90 % of episodes (all tasks)",
        ("rft.skip_solved_at=0.9",)),
    Arm("explore_low_heads_unsolved", "exploration std 0.1-0.2, only the action heads trained, no starts from "
        "tasks the rollouts solve in >= 90 %",
        ("rft.explore_std_min=0.1", "rft.explore_std_max=0.2", "rft.trainable=heads", "rft.skip_solved_at=0.9")),
    # is the world model the bottleneck, or GRPO itself? The same update on real episodes, the simulator's
    # success flag the reward (new training-range layouts each step; every episode is real-simulator data)
    Arm("simulator", "GRPO in the real simulator instead of the world model and judge: its success flag the "
        "reward, every episode from a reset layout (no keyframe starts)", ("rft.environment=simulator", "rft.keyframe_share=0")),
    Arm("simulator_explore_low_heads", "GRPO in the real simulator with exploration std 0.1-0.2 and only the action "
        "heads trained", ("rft.environment=simulator", "rft.keyframe_share=0", "rft.explore_std_min=0.1",
                          "rft.explore_std_max=0.2", "rft.trainable=heads")),
)}

#: at one RFT seed per arm, differences of ~5 points between arms are noise: these arms also run with
#: other seeds (``<arm>_s<seed>``: other starts, exploration noise and minibatches; the same base,
#: world model, judge and development layouts), and the report pools each arm over its seeds
REPLICATED, REPLICATE_SEEDS = ("reference", "explore_low", "explore_low_veto", "explore_low_heads"), (1, 2)
for _name in REPLICATED:
    for _seed in REPLICATE_SEEDS:
        _arm = ARMS[_name]
        ARMS[f"{_name}_s{_seed}"] = Arm(f"{_name}_s{_seed}", f"{_arm.what}; RFT seed {_seed} (0)",
                                       (*_arm.overrides, f"common.seed={_seed}"), _arm.world_model, _arm.veto)

#: what an arm's file keeps of a honesty check
HONESTY_KEYS = ("imagined_success", "real_success", "correlation_across_tasks", "mean_abs_difference",
                "hallucination_rate", "false_success_share", "imagined_auc", "threshold", "horizon_chunks",
                "episodes", "seeds", "per_task", "episode_outcomes")


def parse_arms(text: str | None) -> list[Arm]:
    """``--arms`` (comma-separated names; all when empty) in the given order; an unknown name is an error."""
    if not text:
        return list(ARMS.values())
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in ARMS]
    if unknown:
        raise ValueError(f"unknown arm(s) {', '.join(unknown)}; known: {', '.join(ARMS)}")
    return [ARMS[n] for n in names]


def cached_arms(work: Path, steps: int) -> dict[str, dict]:
    """Every arm whose numbers are in ``work`` for ``steps`` GRPO steps, in :data:`ARMS` order."""
    out = {}
    for name in ARMS:
        path = work / f"{name}.json"
        if path.exists():
            r = json.loads(path.read_text())
            if r["steps"] == steps:
                out[name] = r
    return out


def table_command(argv: list[str], arms: list[str]) -> str:
    """The command that reproduces a table of ``arms``: ``argv`` with ``--arms`` naming them all (a run
    may have trained only some of them and reused the others from ``--work``)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--arms":
            skip = True
        elif not a.startswith("--arms="):
            out.append(a)
    return " ".join(["benchmarks/closed_loop_ablations.py", *out, "--arms", ",".join(arms)])


def paired_bootstrap(a, b, strata, n_boot: int = 4000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``a - b`` (paired 0/1 outcomes of the same layouts) and its 95 % percentile interval,
    resampling layouts with replacement within each stratum (task), so every task keeps its weight."""
    a, b, strata = np.asarray(a, float), np.asarray(b, float), np.asarray(strata)
    if not (len(a) == len(b) == len(strata)) or not len(a):
        raise ValueError(f"paired outcomes need equal, non-zero lengths (got {len(a)}, {len(b)}, {len(strata)})")
    d = a - b
    groups = [np.flatnonzero(strata == s) for s in dict.fromkeys(strata.tolist())]
    rng = np.random.default_rng(seed)
    stats = np.empty(n_boot)
    for i in range(n_boot):
        stats[i] = np.concatenate([d[rng.choice(g, len(g))] for g in groups]).mean()
    return float(d.mean()), float(np.percentile(stats, 2.5)), float(np.percentile(stats, 97.5))


def _aligned(h: dict, ref: dict) -> np.ndarray:
    """``h``'s real outcomes in ``ref``'s layout order (both from the same layouts)."""
    ep, rp = h["episode_outcomes"], ref["episode_outcomes"]
    by_layout = {(t, s): r for t, s, r in zip(ep["task"], ep["seed"], ep["real"])}
    keys = list(zip(rp["task"], rp["seed"]))
    if set(keys) != set(by_layout):
        raise ValueError("honesty checks from different layouts cannot be paired")
    return np.array([by_layout[k] for k in keys])


def analyse(base: dict, arms: dict[str, dict]) -> dict:
    """Per arm: real success after RFT, its gain over the base and over the reference arm (paired)."""
    tasks = base["episode_outcomes"]["task"]
    real0 = np.array(base["episode_outcomes"]["real"])
    ref = arms.get("reference")
    rows = {}
    for name, r in arms.items():
        real = _aligned(r["after"], base)
        row = {"real_success": float(real.mean()), "vs_base": paired_bootstrap(real, real0, tasks)}
        if ref is not None and name != "reference":
            row["vs_reference"] = paired_bootstrap(real, _aligned(ref["after"], base), tasks)
        rows[name] = row
    return {"base_real_success": float(real0.mean()), "layouts": len(real0), "rows": rows,
            "pooled": pooled_over_seeds(base, arms)}


def arm_seed(name: str) -> tuple[str, int]:
    """``explore_low_s2`` -> (``explore_low``, 2); a name without a seed suffix is seed 0."""
    m = re.fullmatch(r"(.+)_s(\d+)", name)
    return (m.group(1), int(m.group(2))) if m else (name, 0)


def pooled_over_seeds(base: dict, arms: dict[str, dict]) -> dict[str, dict]:
    """Every arm measured at more than one RFT seed: its mean real success over the seeds, its gain over
    the base and (paired seed by seed, where the reference ran with the same seeds) over the reference,
    each with the interval over seeds and layouts of :func:`headline.crossed_interval_table`."""
    real0 = np.array(base["episode_outcomes"]["real"], float)
    runs: dict[str, dict[int, np.ndarray]] = {}
    for name, r in arms.items():
        group, seed = arm_seed(name)
        runs.setdefault(group, {})[seed] = _aligned(r["after"], base).astype(float)
    out = {}
    for group, by_seed in runs.items():
        if len(by_seed) < 2:
            continue
        seeds = sorted(by_seed)
        row = {"seeds": seeds, "real_success": float(np.mean([by_seed[s].mean() for s in seeds])),
               "real_success_per_seed": [float(by_seed[s].mean()) for s in seeds],
               "vs_base": crossed_interval_table(np.stack([by_seed[s] - real0 for s in seeds]))}
        ref = runs.get("reference", {})
        common_seeds = [s for s in seeds if s in ref]
        if group != "reference" and len(common_seeds) >= 2:
            row["vs_reference"] = crossed_interval_table(np.stack([by_seed[s] - ref[s] for s in common_seeds]))
            row["vs_reference_seeds"] = common_seeds
        out[group] = row
    return out


def _crossed(c) -> str:
    return "n/a" if c is None else f"{_signed(c['gain'])} [{_signed(c['ci'][0])}, {_signed(c['ci'][1])}]"


def _corr(x) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def _interval(t) -> str:
    return "n/a" if t is None else f"{_signed(t[0])} [{_signed(t[1])}, {_signed(t[2])}]"


def render(result: dict) -> str:
    base, a = result["base"], result["analysis"]
    lines = [
        "# Episode-mode RFT ablations on development seeds", "",
        f"Generated by `{result['command']}` on {result['date']} ({result['platform']}).", "",
        f"Every arm: {result['steps']} GRPO steps from the same base policy, one `rft` setting changed from the "
        f"`{result['profile']}` defaults; then {a['layouts']} real episodes from the development layouts (seeds "
        f"{base['seeds'][0]}..{base['seeds'][1] - 1} of the training range, {base['horizon_chunks']} chunks) and "
        "closed-loop imagination from the same layouts (grounded world model, calibrated threshold "
        f"{base['threshold']:.3f}). Gains are paired over layouts, 95 % bootstrap intervals within tasks, in points.",
        "",
        f"Base policy: real {_share(base['real_success'])}, imagined {_share(base['imagined_success'])}, correlation "
        f"across tasks {_corr(base['correlation_across_tasks'])}, hallucination {_share(base['hallucination_rate'])} of real failures.", "",
        "| arm | change | real success | vs base | vs reference | imagined (instrument) | hallucination | "
        "success in training (imagined; real for the simulator arms), first -> last tenth | groups dropped | "
        "real episodes in RFT | s/step |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in result["arms"].items():
        row, after, tr = a["rows"][name], r["after"], r["train"]
        lines.append(
            f"| {name} | {r['what']} | {_pct(row['real_success'])} | {_interval(row['vs_base'])} | "
            f"{_interval(row.get('vs_reference'))} | {_pct(after['imagined_success'])} | "
            f"{_share(after['hallucination_rate'])} | {_pct(tr['imagined_success_first'])} -> "
            f"{_pct(tr['imagined_success_last'])} | {tr['groups_dropped']}/{tr['groups_total']} | "
            f"{tr.get('simulator_episodes') or 0} | {tr['seconds_per_step']:.2f} |")
    if a.get("pooled"):
        lines += ["", "Arms run with more than one RFT seed, pooled (mean over seeds; 95 % intervals over seeds and "
                  "layouts, crossed random effects, `crossed_interval_table` in benchmarks/headline.py; vs reference "
                  "paired seed by seed):", "",
                  "| arm | seeds | real success, mean (per seed) | vs base | vs reference |", "|---|---|---|---|---|"]
        for name, p in a["pooled"].items():
            per_seed = ", ".join(_pct(x) for x in p["real_success_per_seed"])
            lines.append(f"| {name} | {', '.join(map(str, p['seeds']))} | {_pct(p['real_success'])} ({per_seed}) | "
                         f"{_crossed(p['vs_base'])} | {_crossed(p.get('vs_reference'))} |")
    tasks = list(base["per_task"])
    lines += ["", "Real / imagined success per task on the development layouts (the base, then every arm after RFT):", "",
              "| task | base | " + " | ".join(result["arms"]) + " |", "|---" * (len(result["arms"]) + 2) + "|"]
    for t in tasks:
        cells = [base["per_task"][t]] + [r["after"]["per_task"][t] for r in result["arms"].values()]
        lines.append(f"| {t} | " + " | ".join(f"{c['real_success']:.1f} / {c['imagined_success']:.1f}" for c in cells) + " |")
    own = {n: r["own_instrument_base"] for n, r in result["arms"].items() if r.get("own_instrument_base")}
    if own:
        lines += ["", "The base policy's honesty under the arms' own training setting (what their reward saw):", "",
                  "| arm | imagined | real | correlation | hallucination | judge AUC on imagined frames |",
                  "|---|---|---|---|---|---|"]
        for name, h in own.items():
            corr, auc = h["correlation_across_tasks"], h["imagined_auc"]
            lines.append(f"| {name} | {_share(h['imagined_success'])} | {_share(h['real_success'])} | {_corr(corr)} | "
                         f"{_share(h['hallucination_rate'])} | {'n/a' if auc is None else format(auc, '.3f')} |")
    return "\n".join(lines) + "\n"


def _threshold_key(th: float | dict[str, float]) -> str:
    """A file-name part for a threshold: ``0.9940``, or ``per_task-<hash>`` for one per task."""
    if isinstance(th, dict):
        return "per_task-" + hashlib.sha256(json.dumps(th, sort_keys=True).encode()).hexdigest()[:8]
    return f"{th:.4f}"


def _slim(h: dict) -> dict:
    return {k: h[k] for k in HONESTY_KEYS if k in h}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="runs/ablations", help="where the arms' policies and numbers go (reused)")
    ap.add_argument("--profile", default="standard")
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--set", action="append", default=[], dest="overrides", metavar="SECTION.KEY=VALUE",
                    help="applies to every arm")
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--rollouts", required=True)
    ap.add_argument("--policy", required=True, help="the base (BC) policy")
    ap.add_argument("--world-model", required=True, help="grounded on the rollouts")
    ap.add_argument("--expert-world-model", required=True, help="trained on expert episodes only")
    ap.add_argument("--success-model", required=True)
    ap.add_argument("--steps", type=int, default=60, help="GRPO steps per arm")
    ap.add_argument("--arms", default="", help=f"comma-separated, in this order (default all: {','.join(ARMS)})")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/closed_loop_ablations_mt10_seed0.md"))
    args = ap.parse_args()
    if args.steps < 1:
        ap.error("--steps must be at least 1")
    try:
        arms = parse_arms(args.arms)
    except ValueError as e:
        ap.error(str(e))

    from vla_rft.policy.modeling import VLAPolicy
    from vla_rft.rft.honesty import honesty_check_from_config, success_threshold
    from vla_rft.success.modeling import SuccessModel
    from vla_rft.world_model.modeling import WorldModel

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    common = [*args.overrides, "rft.mode=episode", f"rft.steps={args.steps}"]
    ref_cfg = load_config(args.params, args.profile, common)
    wm_uris = {"grounded": args.world_model, "expert": args.expert_world_model}
    device = ref_cfg.common.device
    world_models = {k: WorldModel.from_pretrained(storage.read_artifact(u, expected_kind="world_model")[0],
                                                  device=device) for k, u in wm_uris.items()}
    judge = SuccessModel.from_pretrained(storage.read_artifact(args.success_model, expected_kind="success_model")[0],
                                         device=device)
    tasks = list(ref_cfg.sim.tasks)

    def threshold(cfg) -> float:
        return success_threshold(cfg, judge)

    def load_policy(uri: str):
        return VLAPolicy.from_pretrained(storage.read_artifact(uri, expected_kind="policy")[0], device=device).eval()

    def base_honesty(cfg, wm: str, veto: str | None = None) -> dict:
        """The base policy's check under ``cfg``'s horizon and threshold in world model ``wm``, its successes
        confirmed by world model ``veto`` if given (cached)."""
        key = (f"base_honesty_{wm}{f'_veto-{veto}' if veto else ''}_th{_threshold_key(threshold(cfg))}"
               f"_h{cfg.rft.horizon}.json")
        path = work / key
        if not path.exists():
            _log(f"base policy honesty: {key}")
            h = honesty_check_from_config(cfg, load_policy(args.policy), world_models[wm], judge, threshold(cfg), tasks,
                                          veto_world_model=world_models[veto] if veto else None)
            path.write_text(json.dumps(_slim(h), indent=2))
        return json.loads(path.read_text())

    base = base_honesty(ref_cfg, "grounded")
    instrument = (threshold(ref_cfg), ref_cfg.rft.horizon, "grounded", None)
    for arm in arms:
        path = work / f"{arm.name}.json"
        uri = str(work / arm.name / "policy")
        steps_done = (json.loads(path.read_text())["steps"] if path.exists() else
                      storage.read_manifest(uri)["config"]["rft"]["steps"] if storage.artifact_exists(uri) else None)
        if steps_done not in (None, args.steps):
            raise SystemExit(f"{arm.name}: {work} holds a {steps_done}-step run, not {args.steps}; "
                             f"pass --steps {steps_done} or another --work")
        if not path.exists():
            cfg = load_config(args.params, args.profile, [*common, *arm.overrides])
            if storage.artifact_exists(uri):
                _log(f"{arm.name}: reusing {uri}")
                train = json.loads((Path(storage.read_artifact(uri, expected_kind="policy")[0]) / "summary.json")
                                   .read_text())
            else:
                _log(f"{arm.name}: {args.steps} steps, {arm.what} -> {uri}")
                train = stages.rft_episode(cfg, args.dataset, wm_uris[arm.world_model], args.policy,
                                           args.success_model, uri, rollouts_uri=args.rollouts, verify=False,
                                           progress=False,
                                           veto_world_model_uri=wm_uris[arm.veto] if arm.veto else None)["train"]
            _log(f"{arm.name}: trained, {train['seconds_per_step']:.2f} s/step; checking on the development layouts")
            after = honesty_check_from_config(ref_cfg, load_policy(uri), world_models["grounded"], judge,
                                              threshold(ref_cfg), tasks)
            own = (None if (threshold(cfg), cfg.rft.horizon, arm.world_model, arm.veto) == instrument
                   else base_honesty(cfg, arm.world_model, arm.veto))
            path.write_text(json.dumps({
                "arm": arm.name, "what": arm.what, "overrides": list(arm.overrides), "world_model": arm.world_model,
                "veto": arm.veto,
                "policy": uri, "steps": args.steps, "train": {k: train.get(k) for k in (
                    "seconds", "seconds_per_step", "threshold", "horizon", "imagined_success_first",
                    "imagined_success_last", "groups_dropped", "groups_total", "vetoed_successes",
                    "simulator_episodes")},
                "after": _slim(after), "own_instrument_base": own}, indent=2))
            _log(f"{arm.name}: real {after['real_success']:.0%} (base {base['real_success']:.0%}), "
                 f"imagined {after['imagined_success']:.0%}, hallucination {_share(after['hallucination_rate'])}")
        # the table holds every arm measured in --work at these steps, not only this run's --arms
        results = cached_arms(work, args.steps)
        result = {"command": table_command(sys.argv[1:], list(results)), "date": time.strftime("%Y-%m-%d"), "platform": platform.platform(),
                  "profile": args.profile, "steps": args.steps, "inputs": {
                      "dataset": args.dataset, "rollouts": args.rollouts, "policy": args.policy,
                      "world_model": args.world_model, "expert_world_model": args.expert_world_model,
                      "success_model": args.success_model},
                  "base": base, "arms": results, "analysis": analyse(base, results)}
        write_result(Path(args.out), result, render)


if __name__ == "__main__":
    main()

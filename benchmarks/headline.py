"""The headline benchmark: does RFT in the world model improve real-simulator success?

One command, on the ``standard`` profile:

    .venv/bin/python benchmarks/headline.py --work runs/benchmark

1. trains (or reuses, when ``--dataset/--world-model/--policy`` are given or already in ``--work``)
   the dataset, the world model and the BC base policy;
2. runs RFT once per seed (``--seeds``, default 0 1 2) and once as the control with advantages
   shuffled within each group (what the reward itself contributes);
3. evaluates base, every RFT seed and the control on the same real-simulator episodes (nominal and
   every perturbation suite; one artifact per policy, the base's with the scripted expert);
4. writes ``benchmarks/results.md`` and ``benchmarks/results.json``: success per suite with 95 %
   intervals, the gain (mean over seeds, t-interval over seeds, and a paired bootstrap over
   episodes), the share of the base-to-expert gap closed, mean steps to success, RFT steps and
   wall time, the reward check against the simulator, and the control.

Every stage writes an artifact under ``--work`` and is skipped when it is already there, so an
interrupted benchmark resumes where it stopped (the training stages also resume mid-run).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from vla_rft import stages, storage  # noqa: E402
from vla_rft.config import load_config  # noqa: E402

T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
         10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042, 60: 2.000, 120: 1.980}


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _stage(name: str, uri: str, fn) -> dict | None:
    """Run ``fn`` unless the artifact at ``uri`` already exists; returns its summary (or None)."""
    if storage.artifact_exists(uri):
        _log(f"{name}: reusing {uri}")
        summary = Path(f"{uri}.summary.json")
        return json.loads(summary.read_text()) if summary.exists() else None
    _log(f"{name}: running -> {uri}")
    result = fn()
    Path(f"{uri}.summary.json").write_text(json.dumps(result, indent=2, default=str))
    _log(f"{name}: done in {result.get('seconds', float('nan')):.0f} s")
    return result


def _rft_summary_from_artifact(uri: str) -> dict:
    """The training summary (and reward check) an RFT artifact carries, for runs reused without a stage summary."""
    model_dir, _ = storage.read_artifact(uri, expected_kind="policy")
    fidelity = model_dir / "reward_fidelity.json"
    return {"train": json.loads((model_dir / "summary.json").read_text()),
            "reward_fidelity": json.loads(fidelity.read_text()) if fidelity.exists() else None}


def _paired_bootstrap(episodes: list[dict], policy: str, base: str, suites: list[str], n_boot: int = 2000,
                      seed: int = 0) -> tuple[float, float]:
    """95 % interval of the mean success difference (policy - base) over the given suites, by resampling
    episodes (each episode is the same task, seed and perturbation for both policies)."""
    key = lambda r: (r["suite"], r["task"], r["episode"])  # noqa: E731
    a = {key(r): int(r["success"]) for r in episodes if r["policy"] == policy and r["suite"] in suites}
    b = {key(r): int(r["success"]) for r in episodes if r["policy"] == base and r["suite"] in suites}
    keys = sorted(a)
    # weight episodes so every suite counts equally (the suite mean is what the table reports)
    per_suite = {s: [k for k in keys if k[0] == s] for s in suites}
    per_suite = {s: ks for s, ks in per_suite.items() if ks}
    rng = np.random.default_rng(seed)
    diffs = {s: np.array([a[k] - b[k] for k in ks], dtype=float) for s, ks in per_suite.items()}
    stats = []
    for _ in range(n_boot):
        stats.append(np.mean([d[rng.integers(0, len(d), len(d))].mean() for d in diffs.values()]))
    return float(np.percentile(stats, 2.5)), float(np.percentile(stats, 97.5))


def crossed_interval(episodes: list[dict], policies: list[str], base: str, suite: str) -> dict:
    """95 % interval of the gain on ``suite`` (mean over seeds of policy - base, paired on the same
    episodes) that counts both noise sources: which seeds RFT ran with, and which episodes were drawn.

    The paired differences d[s, e] (seed s, episode e) form a seeds x episodes table with one
    observation per cell: a two-way crossed random-effects design. With mean squares MS_S (seeds),
    MS_E (episodes) and MS_SE (residual), Var(mean) = sigma2_S / S + sigma2_E / N + sigma2_SE / (S N)
    is estimated by (MS_E + max(0, MS_S - MS_SE)) / (S N), with Satterthwaite's degrees of freedom.
    Episodes are not split by task (each task has the same n), which can only overstate MS_E.
    One seed: the episode part alone (no seed variance can be estimated), flagged by ``seeds: 1``.
    """
    key = lambda r: (r["task"], r["episode"])  # noqa: E731
    b = {key(r): int(r["success"]) for r in episodes if r["policy"] == base and r["suite"] == suite}
    keys = sorted(b)
    if not keys:
        raise ValueError(f"no episodes of {base!r} on suite {suite!r}")
    rows = []
    for name in policies:
        a = {key(r): int(r["success"]) for r in episodes if r["policy"] == name and r["suite"] == suite}
        if sorted(a) != keys:
            raise ValueError(f"{name!r} and {base!r} were not evaluated on the same episodes of {suite!r}")
        rows.append([a[k] - b[k] for k in keys])
    return crossed_interval_table(np.asarray(rows, dtype=float))


def crossed_interval_table(d: np.ndarray) -> dict:
    """:func:`crossed_interval` of a paired-difference table ``d`` (seeds x episodes) already built."""
    d = np.asarray(d, dtype=float)
    if d.ndim != 2 or not d.size:
        raise ValueError(f"a seeds x episodes table of differences is needed, got shape {d.shape}")
    S, N = d.shape
    grand = float(d.mean())
    seed_means, ep_means = d.mean(axis=1), d.mean(axis=0)
    ms_e = S * float(((ep_means - grand) ** 2).sum()) / (N - 1) if N > 1 else 0.0
    if S > 1:
        ms_s = N * float(((seed_means - grand) ** 2).sum()) / (S - 1)
        resid = d - seed_means[:, None] - ep_means[None, :] + grand
        ms_se = float((resid ** 2).sum()) / ((S - 1) * (N - 1)) if N > 1 else 0.0
    else:
        ms_s = ms_se = 0.0
    seed_part = max(0.0, ms_s - ms_se)
    var = (ms_e + seed_part) / (S * N)
    # Satterthwaite: var = (MS_E + MS_S - MS_SE) / (S N) where the seed part is positive, else MS_E / (S N)
    terms = [(ms_e, N - 1)] + ([(ms_s, S - 1), (ms_se, (S - 1) * (N - 1))] if seed_part > 0 else [])
    denom = sum(ms ** 2 / df for ms, df in terms if df > 0)
    dof = (sum(ms if i < 2 else -ms for i, (ms, _) in enumerate(terms)) ** 2 / denom) if denom > 0 else math.inf
    # the next smaller tabulated dof (conservative)
    t = 1.96 if dof > 120 else T_975[max(k for k in T_975 if k <= max(1, int(dof)))]
    half = t * math.sqrt(var)
    return {"gain": grand, "ci": (grand - half, grand + half), "half_width": half, "dof": dof, "seeds": S,
            "episodes": N, "ms_seeds": ms_s, "ms_episodes": ms_e, "ms_residual": ms_se}


def _mean_ci(values: list[float]) -> tuple[float, float, float]:
    m = float(np.mean(values))
    if len(values) < 2:
        return m, float("nan"), float("nan")
    half = T_975[len(values) - 1] * float(np.std(values, ddof=1)) / math.sqrt(len(values))
    return m, m - half, m + half


def analyse(metrics: dict, episodes: list[dict], rft_names: list[str], control: str | None,
            rft_summaries: dict[str, dict]) -> dict:
    pol = metrics["policies"]
    suites = [s["name"] for s in metrics["suites"]]
    perturbed = [s for s in suites if s != "nominal"]
    rows = []
    for suite in suites + ["perturbed (mean)"]:
        if suite == "perturbed (mean)":
            rate = lambda p: pol[p]["overall"]["perturbed"]  # noqa: E731
            steps = lambda p: _nanmean([pol[p]["suites"][s]["mean_steps_to_success"] for s in perturbed])  # noqa: E731
            ci = lambda p: (None, None)  # noqa: E731
            boot_suites = perturbed
        else:
            rate = lambda p, s=suite: pol[p]["suites"][s]["success_rate"]  # noqa: E731
            steps = lambda p, s=suite: pol[p]["suites"][s]["mean_steps_to_success"]  # noqa: E731
            ci = lambda p, s=suite: (pol[p]["suites"][s]["ci_low"], pol[p]["suites"][s]["ci_high"])  # noqa: E731
            boot_suites = [suite]
        if rate("base") is None:
            continue
        seed_rates = [rate(n) for n in rft_names]
        gains = [r - rate("base") for r in seed_rates]
        gain, g_lo, g_hi = _mean_ci(gains)
        boots = [_paired_bootstrap(episodes, n, "base", boot_suites, seed=i) for i, n in enumerate(rft_names)]
        expert = rate("expert")
        gap = expert - rate("base") if expert is not None else None
        row = {
            "suite": suite, "base": rate("base"), "base_ci": ci("base"), "expert": expert,
            "rft_mean": float(np.mean(seed_rates)), "rft_seeds": seed_rates,
            "rft_seed_ci": [ci(n) for n in rft_names],
            "gain": gain, "gain_ci_seeds": (g_lo, g_hi), "gain_seeds": gains,
            "gain_ci_bootstrap_seeds": boots,
            "gain_crossed": (crossed_interval(episodes, rft_names, "base", suite)
                             if suite != "perturbed (mean)" else None),
            "gap_closed": gain / gap if gap and gap > 0 else None,
            "steps_base": steps("base"), "steps_rft": _nanmean([steps(n) for n in rft_names]),
        }
        if control:
            row["control"] = rate(control)
            row["control_gain"] = rate(control) - rate("base")
        rows.append(row)
    nominal = next(r for r in rows if r["suite"] == "nominal")
    pert = next((r for r in rows if r["suite"] == "perturbed (mean)"), None)
    target = {
        "nominal_gain_points": 100 * nominal["gain"],
        "nominal_interval_excludes_zero": bool(nominal["gain_ci_seeds"][0] > 0),
        "perturbed_gain_points": 100 * pert["gain"] if pert else None,
        "met": bool(nominal["gain"] >= 0.05 and nominal["gain_ci_seeds"][0] > 0 and pert and pert["gain"] >= 0.05),
    }
    by_task = []
    for task in metrics["tasks"]:
        cell = lambda p, t=task: pol[p]["cells"]["nominal"][t]  # noqa: E731
        if not cell("base")["applicable"]:
            continue
        by_task.append({"task": task, "base": cell("base")["success_rate"],
                        "rft_seeds": [cell(n)["success_rate"] for n in rft_names],
                        "control": cell(control)["success_rate"] if control else None,
                        "expert": cell("expert")["success_rate"]})
    return {"rows": rows, "nominal_by_task": by_task, "target": target, "rft": rft_summaries}


def _nanmean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _pct(x, digits: int = 1) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.{digits}f}"


def _signed(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{round(100 * x, 1) + 0.0:+.1f}"


def _share(x) -> str:
    return "n/a" if x is None else f"{round(100 * x) + 0:.0f} %"


def _num(x) -> str:
    return "n/a" if x is None else f"{x:.1f}"


def nominal_n(entry: dict) -> int:
    """Episodes per task on the nominal suite (older results: ``episodes_per_task`` everywhere)."""
    return entry.get("nominal_episodes_per_task") or entry["episodes_per_task"]


def design(entry: dict) -> tuple:
    return entry["seed_base"], entry["episodes_per_task"], nominal_n(entry)


def episodes_text(meta: dict) -> str:
    n, nom = meta["episodes_per_task"], nominal_n(meta)
    if nom == n:
        return f"{n} episodes per task and suite"
    return f"{nom} episodes per task on the nominal suite and {n} per task on each perturbation suite"


def peer_row(path: str, meta: dict) -> dict:
    """The peer baseline's numbers, refused unless it evaluated this base policy on these episodes."""
    row = json.loads(Path(path).read_text())
    if Path(row["base_policy"]).resolve() != Path(meta["artifacts"]["base"]).resolve():
        raise SystemExit(f"{path}: its base policy {row['base_policy']} is not this benchmark's {meta['artifacts']['base']}")
    if (row["episodes_per_task"], nominal_n(row)) != (meta["episodes_per_task"], nominal_n(meta)):
        raise SystemExit(f"{path}: evaluated with other episodes per task than this benchmark")
    return {"file": path, "success": row["success"]["act"], "base": row["success"]["base"], "train": row["act_train"],
            "base_train": row["base_train"], "evaluation_seconds": row["evaluation_seconds"]}


def _peer_lines(result: dict) -> list[str]:
    peer = result.get("peer")
    if not peer:
        return []
    a = result["analysis"]
    nominal = next(r for r in a["rows"] if r["suite"] == "nominal")
    pert = next((r for r in a["rows"] if r["suite"] == "perturbed (mean)"), None)
    tr, bt = peer["train"], peer["base_train"]
    return [
        "## Beside a peer: LeRobot's ACT on the same data, CPU time and episodes", "",
        f"From `{peer['file']}` (`benchmarks/peer_act.py`: lerobot 0.4.4's ACT, ResNet-18 from scratch, trained "
        f"for the base policy's BC wall time at the same thread count; evaluated on the same episodes).", "",
        "| policy | parameters | training | nominal | perturbed mean |", "|---|---|---|---|---|",
        f"| base (our BC) | {bt['num_parameters']:,} | {bt['steps']} steps, {bt['seconds']:.0f} s | "
        f"{_pct(nominal['base'])} | {_pct(pert['base'] if pert else None)} |",
        f"| RFT (mean of seeds) | same | + RFT runs below | {_pct(nominal['rft_mean'])} | "
        f"{_pct(pert['rft_mean'] if pert else None)} |",
        f"| ACT (LeRobot) | {tr['num_parameters']:,} | {tr['steps']} steps, {tr['wall_seconds']:.0f} s | "
        f"{_pct(peer['success']['overall']['nominal'])} | {_pct(peer['success']['overall']['perturbed'])} |", ""]


def _crossed_lines(a: dict) -> list[str]:
    nominal = next((r for r in a["rows"] if r["suite"] == "nominal"), None)
    c = nominal.get("gain_crossed") if nominal else None
    if not c:
        return []
    seeds = "" if c["seeds"] > 1 else " (one seed: episode noise only)"
    return [f"**Nominal gain, 95 % interval over seeds and episodes** (paired seeds x episodes table, crossed "
            f"random effects, Satterthwaite dof {c['dof']:.0f}; `crossed_interval` in benchmarks/headline.py): "
            f"{_signed(c['gain'])} [{_signed(c['ci'][0])}, {_signed(c['ci'][1])}], **half-width "
            f"{100 * c['half_width']:.1f} points**{seeds} over {c['seeds']} seeds x {c['episodes']} episodes.", ""]


def render(result: dict) -> str:
    a, meta = result["analysis"], result["meta"]
    lines = [
        "# Headline benchmark: RFT in the world model vs the BC base policy",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['machine']}; finished {meta['finished']}; total {meta['seconds'] / 60:.1f} min.  ",
        f"Evaluation: real Meta-World, {episodes_text(meta)}, the same episodes "
        f"for every policy (seed base {meta['seed_base']}); RFT seeds {meta['seeds']}.",
        *([f"Note: {meta['note']}"] if meta.get("note") else []),
        "",
        "Success rates in %. Base and expert: Wilson 95 % interval. RFT: mean over seeds. Gain in points: "
        "mean over seeds with a 95 % t-interval over seeds; the control is one RFT run with advantages "
        "shuffled within each group.",
        "",
        "| suite | base | RFT (mean of seeds) | RFT per seed | gain | gain 95 % CI (seeds) | gap closed | expert "
        "| control | steps to success base → RFT |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in a["rows"]:
        base_ci = (f" [{_pct(r['base_ci'][0])}, {_pct(r['base_ci'][1])}]" if r["base_ci"][0] is not None else "")
        lines.append(
            f"| {r['suite']} | {_pct(r['base'])}{base_ci} | {_pct(r['rft_mean'])} | "
            f"{' / '.join(_pct(x) for x in r['rft_seeds'])} | {_signed(r['gain'])} | "
            f"[{_signed(r['gain_ci_seeds'][0])}, {_signed(r['gain_ci_seeds'][1])}] | "
            f"{_share(r['gap_closed'])} | {_pct(r['expert'])} | {_pct(r.get('control'))} | "
            f"{_num(r['steps_base'])} → {_num(r['steps_rft'])} |")
    t = a["target"]
    lines += [
        "",
        f"**Target** (+5 points nominal with the interval over seeds excluding zero, +5 points on the mean of "
        f"the perturbed suites): **{'met' if t['met'] else 'not met'}** — nominal {t['nominal_gain_points']:+.1f} "
        f"points (interval excludes zero: {'yes' if t['nominal_interval_excludes_zero'] else 'no'}), perturbed "
        f"{'n/a' if t['perturbed_gain_points'] is None else format(t['perturbed_gain_points'], '+.1f')} points.",
        "",
        "Paired bootstrap over episodes, per seed (95 %, points): " + "; ".join(
            f"{r['suite']}: " + ", ".join(f"[{_signed(lo)}, {_signed(hi)}]" for lo, hi in r["gain_ci_bootstrap_seeds"])
            for r in a["rows"] if r["suite"] in ("nominal", "perturbed (mean)")),
        "",
        *_crossed_lines(a),
        *_peer_lines(result),
        "## Nominal, per task (%)",
        "",
        "| task | base | RFT per seed | RFT mean | control | expert |",
        "|---|---|---|---|---|---|",
        *[f"| {t['task']} | {_pct(t['base'], 0)} | {' / '.join(_pct(x, 0) for x in t['rft_seeds'])} | "
          f"{_pct(float(np.mean(t['rft_seeds'])), 0)} | {_pct(t['control'], 0)} | {_pct(t['expert'], 0)} |"
          for t in a.get("nominal_by_task", [])],
        "",
        "## RFT runs",
        "",
        "| run | steps | wall time (s) | s/step | reward first → last 10 % | within-group reward std |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in a["rft"].items():
        tr = s["train"]
        lines.append(f"| {name} | {tr['steps']} | {tr['seconds']:.0f} | {tr['seconds_per_step']:.2f} | "
                     f"{tr['reward_first']:.5f} → {tr['reward_last']:.5f} | {tr['group_reward_std']:.2e} |")
    fid = next((s["reward_fidelity"] for s in a["rft"].values() if s.get("reward_fidelity")), None)
    if fid:
        lines += ["", "## Is the reward verified?", "",
                  f"On {fid['states']} held-out ({fid['split']}) start states x {fid['group_size']} sampled chunks, "
                  f"the mean within-group Spearman correlation between the world-model reward and the same "
                  f"distance measured in the real simulator is **{fid['spearman_expert_imagined']:.3f}** "
                  f"(target >= 0.7); against the recorded frames as the reward target it is "
                  f"{fid['spearman_real_frames_target']:.3f}. State restore error: "
                  f"{fid['restore_max_pixel_error']:.0f} px."]
    return "\n".join(lines) + "\n"


def _split_ref(ref: str) -> tuple[str, dict[str, str]]:
    """``URI`` or ``URI#old=new,...``: an evaluation artifact and the policies to rename in it."""
    uri, _, spec = ref.partition("#")
    renames = {}
    for item in filter(None, spec.split(",")):
        old, sep, new = item.partition("=")
        if not sep or not old or not new:
            raise SystemExit(f"evaluation {ref!r}: renames are OLD=NEW, comma-separated, got {item!r}")
        renames[old] = new
    return uri, renames


def _read_evaluation(ref: str) -> tuple[dict, list[dict]]:
    uri, renames = _split_ref(ref)
    eval_dir, _ = storage.read_artifact(uri, expected_kind="evaluation")
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    missing = sorted(set(renames) - set(metrics["policies"]))
    if missing:
        raise SystemExit(f"{uri} holds no policy {missing[0]!r} to rename; it holds {sorted(metrics['policies'])}")
    metrics["policies"] = {renames.get(k, k): v for k, v in metrics["policies"].items()}
    with open(eval_dir / "episodes.csv") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        r["policy"] = renames.get(r["policy"], r["policy"])
    return metrics, rows


def combined_evaluation(evaluations: list[str]) -> tuple[dict, list[dict]]:
    """One metrics dict and episode list from evaluation artifacts of the same suites and episodes
    (the policies of each, side by side; ``URI#old=new`` renames a policy); refuses artifacts whose
    suites or episode seeds differ, and a policy that two of them hold."""
    metrics, episodes = None, []
    for uri in evaluations:
        m, rows = _read_evaluation(uri)
        if metrics is None:
            metrics = m
        else:
            first = next(iter(metrics["policies"].values()))
            this = next(iter(m["policies"].values()))
            if ([s["name"] for s in m["suites"]] != [s["name"] for s in metrics["suites"]]
                    or design(this) != design(first)):
                raise SystemExit(f"{uri} evaluated other suites or episodes than {evaluations[0]}; remove it to re-run")
            twice = sorted(set(m["policies"]) & set(metrics["policies"]))
            if twice:
                raise SystemExit(f"policy {twice[0]!r} is in {uri} and in an earlier evaluation; keep one")
            metrics["policies"].update(m["policies"])
        episodes += rows
    return metrics, episodes


def evaluate_each(cfg, policies: dict[str, str], work: Path, reused: list[str] = ()) -> list[str]:
    """Evaluate every policy into its own artifact ``work/eval-<name>`` (skipped when present; the first
    with the scripted expert): adding a seed or a method later re-runs only the new policies. The
    episodes are seeded by (suite, task, episode index), so the evaluations are paired. Policies that
    a ``reused`` evaluation (``URI#old=new``, e.g. the pipeline's) already holds are not run again."""
    uris = list(reused)
    covered = set(combined_evaluation(uris)[0]["policies"]) if uris else set()
    todo = [name for name in policies if name not in covered]
    for i, name in enumerate(todo):
        ev = str(work / f"eval-{name}")
        _stage(f"evaluate {name}", ev, lambda n=name, u=policies[name], e=ev, x=(i == 0 and "expert" not in covered):
               stages.evaluate(cfg, {n: u}, e, expert=x, progress=False))
        uris.append(ev)
    return uris


def _analyse_stored(evaluations: str | list[str], summaries: dict) -> dict:
    return _analyse_combined(*combined_evaluation([evaluations] if isinstance(evaluations, str) else evaluations),
                             summaries)


def _analyse_combined(metrics: dict, episodes: list[dict], summaries: dict) -> dict:
    rft_names = [n for n in metrics["policies"] if n.startswith("rft-")]
    control = next((n for n in metrics["policies"] if n.startswith("control-")), None)
    return analyse(metrics, episodes, rft_names, control, summaries)


def write_result(out: Path, result: dict, render) -> None:
    """``out`` (markdown from ``render``) and its ``.json``; prints the table."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str))
    out.write_text(render(result))
    _log(f"wrote {out} and {out.with_suffix('.json')}")
    print(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="runs/benchmark", help="where the artifacts go (reused when present)")
    ap.add_argument("--profile", default="standard")
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--set", action="append", default=[], dest="overrides", metavar="SECTION.KEY=VALUE")
    ap.add_argument("--dataset", help="reuse this dataset instead of recording one")
    ap.add_argument("--world-model", help="reuse this world model (trained on --dataset)")
    ap.add_argument("--policy", help="reuse this BC base policy (trained on --dataset)")
    ap.add_argument("--reuse", action="append", default=[], metavar="RUN=URI",
                    help="take a finished RFT run from elsewhere, e.g. rft-s0=<the pipeline's rft policy> "
                         "(it must have the same config and seed)")
    ap.add_argument("--reuse-evaluation", action="append", default=[], metavar="URI[#OLD=NEW,...]",
                    help="an evaluation that already holds some policies on the same episodes, e.g. the "
                         "pipeline's: '<run>/evaluate/evaluation#rft=rft-s0' (base, expert and rft-s0 then "
                         "are not evaluated again)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--no-control", action="store_true", help="skip the shuffled-advantage control run")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results.md"))
    ap.add_argument("--peer-act", default=None, metavar="PEER_ACT_JSON",
                    help="benchmarks/peer_act.py's result for the same base policy and episodes: its row is shown "
                         "beside base and RFT (also with --render-only)")
    ap.add_argument("--render-only", action="store_true",
                    help="rewrite --out from its JSON (after a change to the table's format); runs nothing")
    args = ap.parse_args()
    if args.render_only:
        out = Path(args.out)
        result = json.loads(out.with_suffix(".json").read_text())
        arts = result["meta"]["artifacts"]
        result["analysis"] = _analyse_stored(arts.get("evaluations") or arts["evaluation"], result["analysis"]["rft"])
        if args.peer_act:
            result["peer"] = peer_row(args.peer_act, result["meta"])
        out.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str))
        out.write_text(render(result))
        print(out.read_text())
        return
    start = time.time()
    work = Path(args.work)  # as given (relative paths stay relative in results.json)
    work.mkdir(parents=True, exist_ok=True)
    cfg = load_config(args.params, args.profile, args.overrides)

    dataset = args.dataset or str(work / "dataset")
    _stage("prepare-data", dataset, lambda: stages.prepare_data(cfg, dataset, progress=False))
    wm = args.world_model or str(work / "world_model")
    _stage("train-world-model", wm, lambda: stages.train_world_model(cfg, dataset, wm, progress=False))
    base = args.policy or str(work / "policy_bc")
    _stage("pretrain-policy", base, lambda: stages.pretrain_policy(cfg, dataset, base, progress=False))

    runs = {f"rft-s{s}": ([f"common.seed={s}"], i == 0) for i, s in enumerate(args.seeds)}
    if not args.no_control:
        runs[f"control-s{args.seeds[0]}"] = ([f"common.seed={args.seeds[0]}", "rft.shuffle_advantages=true"], False)
    reuse = dict(item.split("=", 1) for item in args.reuse)
    unknown = sorted(set(reuse) - set(runs))
    if unknown:
        raise SystemExit(f"--reuse names runs this benchmark does not make: {unknown}; runs: {sorted(runs)}")
    uris = {name: reuse.get(name) or str(work / name) for name in runs}
    summaries = {}
    for name, (extra, verify) in runs.items():
        run_cfg = load_config(args.params, args.profile, [*args.overrides, *extra])
        uri = uris[name]
        summaries[name] = _stage(name, uri, lambda c=run_cfg, u=uri, v=verify: stages.rft(
            c, dataset, wm, base, u, verify=v, progress=False)) or _rft_summary_from_artifact(uri)

    policies = {"base": base, **uris}
    evaluations = evaluate_each(cfg, policies, work, args.reuse_evaluation)
    metrics, episodes = combined_evaluation(evaluations)
    analysis = _analyse_combined(metrics, episodes, summaries)
    base_entry = metrics["policies"]["base"]
    result = {
        "meta": {
            "command": "python benchmarks/headline.py " + " ".join(sys.argv[1:]),
            "machine": f"{platform.machine()}, {__import__('os').cpu_count()} CPU cores, "
                       f"device {cfg.common.device}",
            "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "seconds": time.time() - start, "profile": args.profile, "seeds": args.seeds,
            "episodes_per_task": base_entry["episodes_per_task"], "seed_base": base_entry["seed_base"],
            "nominal_episodes_per_task": nominal_n(base_entry),
            "artifacts": {"dataset": dataset, "world_model": wm, "base": base, "evaluations": evaluations},
        },
        "analysis": analysis,
    }
    if args.peer_act:
        result["peer"] = peer_row(args.peer_act, result["meta"])
    write_result(Path(args.out), result, render)


if __name__ == "__main__":
    main()

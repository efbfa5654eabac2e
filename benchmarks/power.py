"""Evaluation power: how wide is the headline's interval on the nominal gain, for a given design?

    .venv/bin/python benchmarks/power.py                      # inputs: benchmarks/results.json (the MT10 headline)
    .venv/bin/python benchmarks/power.py --base-eval runs/std/evaluation \
        --episodes-per-second 4.1 --rft-minutes 5.5

The headline benchmark compares the base policy with RFT run over S seeds, all evaluated on the
same n seeded episodes per task (paired). Its nominal gain is
``gain = mean over tasks t of (mean over seeds s of q_ts - p_t)``. Variance model (per task t,
base rate p_t, RFT rate q_t):

    Var(gain) = (1/T^2) * sum_t [ sigma2_seed_t / S + v_t / n ]
    v_t          = phi * (p_t (1 - p_t) + q_t (1 - q_t))   episode noise of one paired difference
    sigma2_seed_t = kappa * q_t (1 - q_t)                   between-seed variance of RFT's true rate

``phi`` (how much pairing on the same episodes removes) is calibrated on the measured headline:
the paired-bootstrap intervals per seed give the paired episode variance, divided by what
independent samples would have. ``kappa``: each task's variance of q over seeds, less its binomial
part q (1 - q) / n, summed over tasks, over the summed q (1 - q). Averaging S seeds' episode
noise is bounded by one seed's (the seeds share the episodes), so ``v_t / n`` is conservative.
The half-width is ``t_{0.975, dof} * sqrt(Var)`` with Welch-Satterthwaite's dof: only the seed
component is estimated from S - 1 degrees of freedom. Unlike the headline's t-interval over
seeds (which holds the base policy's episodes fixed), it counts the base's episode noise too.

Scenarios: ``measured`` (the headline's tasks as measured), ``mt10`` (those tasks plus the other
MT10 tasks; a task without a measured rate is given the measured tasks' mean variance
components, or its base rate from ``--base-eval`` with q = p), ``worst`` (every MT10 task at 50 %).
Writes ``benchmarks/results/power_mt10.json`` and ``.md`` and prints the recommended design: the
cheapest (n, S) with half-width <= ``--target`` points whose one-policy evaluation on all suites
fits ``--eval-budget-min`` at ``--episodes-per-second``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from vla_rft.evaluation.configuration import suite_table  # noqa: E402
from vla_rft.sim.perturbations import Perturbation, applies  # noqa: E402
from vla_rft.tasks import TASKS  # noqa: E402

T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
         10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042, 60: 2.000, 120: 1.980}
MT10 = ["reach", "push", "drawer-open", "drawer-close", "button-press-topdown", "door-open", "pick-place",
        "peg-insert-side", "window-open", "window-close"]


def t975(dof: int) -> float:
    if dof in T_975:
        return T_975[dof]
    return T_975[max(k for k in T_975 if k <= dof)]  # the next smaller tabulated dof: conservative


def calibrate(results: dict) -> dict:
    """phi, kappa and per-task components from the headline's results.json."""
    meta, analysis = results["meta"], results["analysis"]
    n = meta.get("nominal_episodes_per_task") or meta["episodes_per_task"]  # the gain is nominal
    by_task = analysis["nominal_by_task"]
    nominal = next(r for r in analysis["rows"] if r["suite"] == "nominal")
    tasks = {}
    for row in by_task:
        p, qs = row["base"], row["rft_seeds"]
        q = sum(qs) / len(qs)
        var_q = sum((x - q) ** 2 for x in qs) / (len(qs) - 1)
        binom = sum(x * (1 - x) for x in qs) / len(qs) / n
        tasks[row["task"]] = {"p": p, "q": q, "q_seeds": qs, "var_q_over_seeds": var_q,
                              "sigma2_seed": max(0.0, var_q - binom),
                              "indep": p * (1 - p) + sum(x * (1 - x) for x in qs) / len(qs)}
    n_total = n * len(by_task)
    se2 = [((hi - lo) / (2 * 1.96)) ** 2 for lo, hi in nominal["gain_ci_bootstrap_seeds"]]
    v_paired = sum(se2) / len(se2) * n_total  # per-episode variance of the paired difference
    v_indep = sum(t["indep"] for t in tasks.values()) / len(tasks)
    phi = v_paired / v_indep
    q_var = sum(t["q"] * (1 - t["q"]) for t in tasks.values())
    kappa = sum(t["sigma2_seed"] for t in tasks.values()) / q_var
    return {"episodes_per_task": n, "seeds": len(nominal["rft_seeds"]), "phi": phi, "kappa": kappa,
            "v_paired": v_paired, "v_indep": v_indep, "tasks": tasks,
            "measured_half_width_seeds": (nominal["gain_ci_seeds"][1] - nominal["gain_ci_seeds"][0]) / 2}


def components(p: float, q: float, phi: float, kappa: float) -> tuple[float, float]:
    """(sigma2_seed_t, v_t) for a task with base rate p and RFT rate q."""
    return kappa * q * (1 - q), phi * (p * (1 - p) + q * (1 - q))


def half_width(comps: list[tuple[float, float]], n: int, seeds: int) -> float:
    """95 % half-width (points) of the nominal gain with n episodes per task and S seeds.

    Only the seed component is estimated from S - 1 degrees of freedom (the episode component
    from T * n episodes): Welch-Satterthwaite's effective dof, (S - 1) * (Var / Var_seed)^2.
    """
    T = len(comps)
    var_seed = sum(s2 / seeds for s2, _ in comps) / T ** 2
    var = var_seed + sum(v / n for _, v in comps) / T ** 2
    dof = (seeds - 1) * (var / var_seed) ** 2 if var_seed > 0 else math.inf
    t = 1.96 if dof > 1000 else t975(int(dof))
    return 100 * t * math.sqrt(var)


def scenarios(cal: dict, base_rates: dict[str, float]) -> dict[str, list[tuple[float, float]]]:
    phi, kappa = cal["phi"], cal["kappa"]
    measured = [components(t["p"], t["q"], phi, kappa) for t in cal["tasks"].values()]
    mean_s2 = sum(c[0] for c in measured) / len(measured)
    mean_v = sum(c[1] for c in measured) / len(measured)
    mt10 = []
    for task in MT10:
        if task in base_rates:
            mt10.append(components(base_rates[task], base_rates[task], phi, kappa))
        elif task in cal["tasks"]:
            t = cal["tasks"][task]
            mt10.append(components(t["p"], t["q"], phi, kappa))
        else:
            mt10.append((mean_s2, mean_v))
    worst = [components(0.5, 0.5, phi, kappa)] * len(MT10)
    return {"measured": measured, "mt10": mt10, "worst": worst}


def episodes_per_policy(n: int, tasks: list[str], perturbed: int | None = None) -> int:
    """Episodes one policy runs on every suite: n per task on the nominal suite, ``perturbed`` (default n)
    per task on each perturbation suite; cells a suite does not apply to are skipped."""
    perturbed = n if perturbed is None else perturbed
    return sum((n if s.kind == "none" else perturbed) * applies(t, Perturbation(s.kind, s.magnitude_cm))
               for s in suite_table().values() for t in tasks)


def _rel(path: str) -> str:
    p = Path(path).resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "results.json"))
    ap.add_argument("--base-eval", help="an MT10 evaluation directory (its metrics.json): base rates per task")
    ap.add_argument("--base-name", default="base", help="the base policy's name in that evaluation")
    ap.add_argument("--episodes-per-second", type=float, default=None,
                    help="measured evaluation throughput of one policy (2 workers)")
    ap.add_argument("--rft-minutes", type=float, default=5.5, help="one RFT seed, whole stage")
    ap.add_argument("--perturbed-episodes", type=int, default=None,
                    help="episodes per task on each perturbation suite (evaluate.episodes_per_task; default: n, "
                         "as many as nominal); only the nominal n enters the half-width")
    ap.add_argument("--target", type=float, default=4.0, help="half-width target, points")
    ap.add_argument("--eval-budget-min", type=float, default=10.0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "power_mt10.json"))
    args = ap.parse_args(argv)

    cal = calibrate(json.loads(Path(args.results).read_text()))
    base_rates: dict[str, float] = {}
    if args.base_eval:
        metrics = json.loads((Path(args.base_eval) / "metrics.json").read_text())
        for task, cell in metrics["policies"][args.base_name]["cells"]["nominal"].items():
            if cell["applicable"]:
                base_rates[task] = cell["success_rate"]
    sc = scenarios(cal, base_rates)
    ns = [10, 20, 25, 30, 40, 50, 60, 80, 100]
    ss = [2, 3, 4, 5, 6, 8, 10]
    grid = {name: {f"{n}x{s}": half_width(c, n, s) for n in ns for s in ss} for name, c in sc.items()}
    check = half_width(sc["measured"], cal["episodes_per_task"], cal["seeds"])

    eps_per_policy = {n: episodes_per_policy(n, MT10, args.perturbed_episodes) for n in ns}
    candidates = []
    for n in ns:
        for s in ss:
            hw = grid["mt10"][f"{n}x{s}"]
            eval_min = eps_per_policy[n] / args.episodes_per_second / 60 if args.episodes_per_second else None
            fits = hw <= args.target and (eval_min is None or eval_min <= args.eval_budget_min)
            # cost: S RFT runs plus S + 1 evaluations (base and every seed)
            cost = s * args.rft_minutes + (s + 1) * (eval_min or eps_per_policy[n] / 600)
            candidates.append({"episodes_per_task": n, "seeds": s, "half_width": hw, "eval_minutes": eval_min,
                               "fits": fits, "cost_minutes": cost})
    fitting = sorted((c for c in candidates if c["fits"]), key=lambda c: c["cost_minutes"])
    pick = fitting[0] if fitting else None
    out = {"command": "python benchmarks/power.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "calibration": cal, "base_rates": base_rates, "model_check_half_width_measured_design": check,
           "grid": grid, "episodes_per_policy": eps_per_policy, "candidates": candidates, "pick": pick,
           "target": args.target, "episodes_per_second": args.episodes_per_second}
    path = Path(args.out)
    path.write_text(json.dumps(out, indent=1))

    lines = ["# Evaluation power for the headline (nominal gain, base vs RFT over S seeds, paired)", "",
             f"`{out['command']}`", "",
             f"Calibrated on `{_rel(args.results)}` ({len(cal['tasks'])} tasks, n={cal['episodes_per_task']}, "
             f"S={cal['seeds']}): phi = {cal['phi']:.2f} (paired episode variance {cal['v_paired']:.3f} vs "
             f"{cal['v_indep']:.3f} independent), kappa = {cal['kappa']:.3f}. The model's half-width for the "
             f"measured design: {check:.1f} points; the headline's t-interval over seeds: "
             f"{100 * cal['measured_half_width_seeds']:.1f} points.", ""]
    if base_rates:
        lines += ["Base rates from the MT10 base-policy evaluation: " +
                  ", ".join(f"{t} {100 * r:.0f} %" for t, r in base_rates.items()), ""]
    for name in ("measured", "mt10", "worst"):
        lines += [f"## {name}: 95 % half-width of the nominal gain, points (rows n episodes/task, columns S seeds)",
                  "", "| n \\ S | " + " | ".join(map(str, ss)) + " |", "|---|" + "---|" * len(ss)]
        for n in ns:
            lines.append(f"| {n} | " + " | ".join(f"{grid[name][f'{n}x{s}']:.1f}" for s in ss) + " |")
        lines.append("")
    pert = "as many" if args.perturbed_episodes is None else args.perturbed_episodes
    lines += [f"Episodes per policy on all suites (MT10; n nominal, {pert} per task on each perturbation suite): " +
              ", ".join(f"n={n}: {e}" for n, e in eps_per_policy.items()), ""]
    if pick:
        em = f", {pick['eval_minutes']:.1f} min per policy evaluation" if pick["eval_minutes"] else ""
        lines.append(f"**Pick (cheapest with half-width <= {args.target:g} points in the mt10 scenario{em}):** "
                     f"n = {pick['episodes_per_task']} nominal episodes per task, S = {pick['seeds']} seeds: "
                     f"{pick['half_width']:.1f} points, ~{pick['cost_minutes']:.0f} min of RFT + evaluation.")
    else:
        lines.append(f"No design in the grid reaches {args.target:g} points within the evaluation budget.")
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

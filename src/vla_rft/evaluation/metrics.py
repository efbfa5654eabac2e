"""Success rates with Wilson score intervals, suite means, comparisons; the ``metrics.json`` schema.

``metrics.json`` (``schema_version`` 1)::

    {
      "schema_version": 1,
      "confidence": 0.95,                     # level of every [ci_low, ci_high]
      "tasks": ["reach", "push", ...],
      "suites": [{"name": "nominal", "kind": "none", "magnitude_cm": 0.0}, ...],
      "policies": {
        "<policy>": {                         # e.g. "base", "rft", "expert"
          "episodes": 880, "seconds": 212.4,
          "episodes_per_task": 20, "nominal_episodes_per_task": 20,   # the second: nominal suite only
          "max_episode_steps": 150, "seed_base": 1000000,
          "chunk_len": 8,                     # null for the expert (it acts per step)
          "cells": {"<suite>": {"<task>": CELL}},
          "suites": {"<suite>": SUITE},
          "overall": {"nominal": rate, "perturbed": rate,      # perturbed: mean over perturbed suites
                      "all": rate}                             # mean over all evaluated suites
        }
      },
      "comparisons": [                        # one per (policy, base) pair asked for
        {"policy": "rft", "base": "base", "reference": "expert",
         "gain": {"<suite>": points, "overall/perturbed": ..., "overall/all": ...},
         "gap_closed": {"<suite>": share or null, ...},       # null where the reference is not ahead
         "cells_gain": {"<suite>": {"<task>": points}}}
      ]
    }

    CELL  = {"applicable": true, "n": 20, "successes": 14, "success_rate": 0.7,
             "ci_low": 0.481, "ci_high": 0.855, "mean_steps_to_success": 63.2 or null}
          | {"applicable": false}             # the suite does not apply to the task: "n/a"
    SUITE = {"success_rate": mean over applicable tasks, "tasks": applicable task count,
             "n": episodes, "successes": ..., "ci_low": ..., "ci_high": ...,   # pooled Wilson
             "mean_steps_to_success": mean over successful episodes or null}
            # success_rate, ci_low and ci_high are null (n 0) where no evaluated task applies

Rates are fractions in [0, 1]; gains are fractions too (0.05 = 5 points). Every task has the same
number of episodes, so the suite mean over tasks equals the pooled rate its interval is for.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any, Sequence

from vla_rft.evaluation.runner import EXPERT, EvalResults

SCHEMA_VERSION = 1


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; (0, 1) when n == 0."""
    if n == 0:
        return 0.0, 1.0
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n={n}], got {successes}")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if successes == 0 else max(0.0, centre - half)  # exact at the ends, free of rounding
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi


def _mean(values: Sequence[float]) -> float | None:
    return float(sum(values) / len(values)) if values else None


def _cell(episodes, confidence: float) -> dict[str, Any]:
    n = len(episodes)
    k = sum(e.success for e in episodes)
    lo, hi = wilson_interval(k, n, confidence)
    return {"applicable": True, "n": n, "successes": k, "success_rate": k / n if n else 0.0,
            "ci_low": lo, "ci_high": hi,
            "mean_steps_to_success": _mean([e.steps_to_success for e in episodes if e.success])}


def policy_metrics(results: EvalResults, confidence: float = 0.95) -> dict[str, Any]:
    """The ``policies.<name>`` entry of metrics.json for one evaluation."""
    na = set(map(tuple, results.not_applicable))
    cells: dict[str, dict[str, Any]] = {}
    suites: dict[str, dict[str, Any]] = {}
    for suite in results.suites:
        row: dict[str, Any] = {}
        pooled = []
        for task in results.tasks:
            if (suite.name, task) in na:
                row[task] = {"applicable": False}
                continue
            eps = results.cell(suite.name, task)
            row[task] = _cell(eps, confidence)
            pooled += eps
        cells[suite.name] = row
        live = [c for c in row.values() if c["applicable"]]
        if not live:  # the suite applies to none of the evaluated tasks
            suites[suite.name] = {"success_rate": None, "tasks": 0, "n": 0, "successes": 0,
                                  "ci_low": None, "ci_high": None, "mean_steps_to_success": None}
            continue
        summary = _cell(pooled, confidence)
        del summary["applicable"]
        summary["success_rate"] = _mean([c["success_rate"] for c in live])
        summary["tasks"] = len(live)
        suites[suite.name] = summary
    rates = {s.name: suites[s.name]["success_rate"] for s in results.suites
             if suites[s.name]["success_rate"] is not None}
    perturbed = [rate for s in results.suites if s.perturbed and (rate := rates.get(s.name)) is not None]
    return {
        "episodes": len(results.episodes), "seconds": results.seconds,
        "episodes_per_task": results.episodes_per_task,
        "nominal_episodes_per_task": results.nominal_episodes_per_task, "max_episode_steps": results.max_episode_steps,
        "seed_base": results.seed_base, "chunk_len": results.chunk_len,
        "cells": cells, "suites": suites,
        "overall": {"nominal": rates.get("nominal"), "perturbed": _mean(perturbed), "all": _mean(list(rates.values()))},
    }


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def compare(metrics: dict[str, Any], policy: str, base: str, reference: str | None = EXPERT,
            min_gap: float = 1e-9) -> dict[str, Any]:
    """Gain of ``policy`` over ``base`` per suite (and per cell), and the share of the
    base-to-``reference`` gap it closes: (policy - base) / (reference - base), None where the
    reference is not ahead of the base (nothing to close)."""
    pols = metrics["policies"]
    for name in (policy, base) + ((reference,) if reference else ()):
        if name not in pols:
            raise KeyError(f"no results for policy {name!r}; have: {', '.join(pols)}")
    p, b = pols[policy], pols[base]
    r = pols[reference] if reference else None
    gain: dict[str, float | None] = {}
    gap: dict[str, float | None] = {}
    keys = [(s, ("suites", s)) for s in p["suites"]] + [(f"overall/{k}", ("overall", k)) for k in ("nominal", "perturbed", "all")]

    def rate(m, path):
        v = m[path[0]].get(path[1])
        return v["success_rate"] if isinstance(v, dict) else v

    for key, path in keys:
        if path[0] == "suites" and path[1] not in b["suites"]:
            continue
        g = _diff(rate(p, path), rate(b, path))
        gain[key] = g
        if r is not None:
            span = _diff(rate(r, path), rate(b, path))
            gap[key] = g / span if g is not None and span is not None and span > min_gap else None
    cells_gain = {
        s: {t: c["success_rate"] - b["cells"][s][t]["success_rate"]
            for t, c in row.items() if c["applicable"] and b["cells"].get(s, {}).get(t, {}).get("applicable")}
        for s, row in p["cells"].items()
    }
    return {"policy": policy, "base": base, "reference": reference, "gain": gain, "gap_closed": gap,
            "cells_gain": cells_gain}


def compute_metrics(results: Sequence[EvalResults], comparisons: Sequence[tuple[str, str]] = (),
                    reference: str | None = EXPERT, confidence: float = 0.95) -> dict[str, Any]:
    """metrics.json for several policies evaluated on the same episodes (see the module docstring).

    ``comparisons`` lists (policy, base) pairs, e.g. ``[("rft", "base")]``; ``reference`` is the
    policy whose gap is measured (skipped when it was not evaluated).
    """
    if not results:
        raise ValueError("no evaluation results to summarise")
    first = results[0]
    names = [r.policy for r in results]
    if len(set(names)) != len(names):
        raise ValueError(f"two evaluations share a policy name: {names}")
    for r in results[1:]:
        if (r.design(), [s.name for s in r.suites]) != (first.design(), [s.name for s in first.suites]):
            raise ValueError(f"{r.policy!r} was evaluated on other episodes than {first.policy!r} (tasks, suites, "
                             "episodes per task, seed_base or max_episode_steps differ): not comparable")
    metrics: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "confidence": confidence, "tasks": list(first.tasks),
        "suites": [{"name": s.name, "kind": s.kind, "magnitude_cm": s.magnitude_cm} for s in first.suites],
        "policies": {r.policy: policy_metrics(r, confidence) for r in results},
    }
    ref = reference if reference in metrics["policies"] else None
    metrics["comparisons"] = [compare(metrics, p, b, ref) for p, b in comparisons]
    return metrics


def kfp_metrics(metrics: dict[str, Any], policy: str) -> dict[str, float]:
    """Flat ``name -> float`` for a KFP ``Metrics`` artifact (``metrics.log_metric(k, v)``).

    Names: ``success/<suite>/<task>``, ``success/<suite>/mean``, ``ci_low/<suite>/mean``,
    ``ci_high/<suite>/mean``, ``steps_to_success/<suite>/mean``, ``success/overall/<nominal|perturbed|all>``
    and, for each comparison of this policy with a base, ``gain_vs_<base>/<key>`` and
    ``gap_closed_vs_<base>/<key>`` (key: a suite or ``overall/...``). n/a cells and
    undefined values are left out (KFP metrics must be numbers).
    """
    m = metrics["policies"][policy]
    out: dict[str, float] = {}

    def put(name: str, value: Any) -> None:
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            out[name] = float(value)

    for suite, row in m["cells"].items():
        for task, cell in row.items():
            if cell["applicable"]:
                put(f"success/{suite}/{task}", cell["success_rate"])
        s = m["suites"][suite]
        put(f"success/{suite}/mean", s["success_rate"])
        put(f"ci_low/{suite}/mean", s["ci_low"])
        put(f"ci_high/{suite}/mean", s["ci_high"])
        put(f"steps_to_success/{suite}/mean", s["mean_steps_to_success"])
    for key, value in m["overall"].items():
        put(f"success/overall/{key}", value)
    for comp in metrics.get("comparisons", []):
        if comp["policy"] == policy:
            for key, value in comp["gain"].items():
                put(f"gain_vs_{comp['base']}/{key}", value)
            for key, value in comp["gap_closed"].items():
                put(f"gap_closed_vs_{comp['base']}/{key}", value)
    return out

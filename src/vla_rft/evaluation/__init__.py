"""Evaluation of policies in the real simulator: perturbation suites, metrics, the report.

Submodules: ``configuration`` (EvaluateConfig, suites as data), ``runner`` (evaluate_policy,
evaluate_expert), ``metrics`` (Wilson intervals, metrics.json, KFP metrics), ``report``
(summary.md, report.html with GIFs and plots). Names are imported lazily, so
``vla_rft.config`` may import ``vla_rft.evaluation.configuration`` without pulling in the
simulator.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "EvaluateConfig": "configuration", "Suite": "configuration", "suite_table": "configuration",
    "EXPERT": "runner", "EvalResults": "runner", "EpisodeResult": "runner", "EpisodeVideo": "runner",
    "evaluate_policy": "runner", "evaluate_expert": "runner", "plan_episodes": "runner",
    "make_simulator": "runner", "run_evaluation": "runner",
    "wilson_interval": "metrics", "compute_metrics": "metrics", "compare": "metrics", "kfp_metrics": "metrics",
    "ReportSection": "report", "write_report": "report", "summary_markdown": "report", "write_gif": "report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"vla_rft.evaluation.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'vla_rft.evaluation' has no attribute {name!r}")

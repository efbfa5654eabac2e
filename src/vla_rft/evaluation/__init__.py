"""Evaluation of policies in the real simulator.

``configuration`` (EvaluateConfig, suites as data), ``runner`` (evaluate_policy, evaluate_expert,
run_evaluation), ``metrics`` (Wilson intervals, metrics.json, KFP metrics), ``report`` (summary.md,
report.html with GIFs and plots). Import from the submodules.
"""

"""Scripted-expert success on every task and suite: is the expert a valid reference there?

    .venv/bin/python benchmarks/expert_success.py            # standard profile's tasks, 50 seeds
    .venv/bin/python benchmarks/expert_success.py --episodes 10 --tasks reach push

Runs the evaluation runner's own expert path (``evaluate_expert``: the same seeded episodes a
policy faces, the same step limit ``evaluate.max_episode_steps``) on every suite, one task at a
time, and writes ``benchmarks/results/expert_mt10.json`` and ``.md``: one row per task, one
column per suite. The expert only needs the simulator's state, so each episode renders only its
reset frame. A cell below ``--threshold`` (95 %) is reported as n/a with its rate and the seeds
that failed: the expert is then no reference there, and the evaluation's tables should not
compare a policy with it in that cell. A suite that does not apply to a task (a goal shift where
the goal is fixed to the object) is n/a with that reason.

Resumable: each finished task is stored in ``<out>.partial.json``; a re-run with the same
settings skips those tasks (``--restart`` discards them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from vla_rft.config import load_config  # noqa: E402
from vla_rft.evaluation.metrics import wilson_interval  # noqa: E402
from vla_rft.evaluation.runner import evaluate_expert, make_simulator  # noqa: E402

#: render only the reset frame: the expert acts from the simulator's state
_NO_RENDER = 1_000_000


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def measure_task(task: str, cfg, sim) -> dict:
    """Expert success of one task on every suite of ``cfg.evaluate``."""
    res = evaluate_expert([task], None, cfg.evaluate, sim, chunk_len=_NO_RENDER, progress=True)
    cells = {}
    for suite in res.suites:
        eps = res.cell(suite.name, task)
        if not eps:
            cells[suite.name] = {"applies": False}
            continue
        steps = [e.steps_to_success for e in eps if e.success]
        cells[suite.name] = {
            "applies": True, "n": len(eps), "successes": sum(e.success for e in eps),
            "failed_seeds": [e.seed for e in eps if not e.success],
            "mean_steps_to_success": sum(steps) / len(steps) if steps else None,
            "max_steps_to_success": max(steps) if steps else None,
        }
    return {"task": task, "cells": cells, "seconds": res.seconds}


def _fmt(cell: dict, threshold: float, confidence: float) -> str:
    if not cell["applies"]:
        return "n/a (does not apply)"
    k, n = cell["successes"], cell["n"]
    rate = 100 * k / n
    if k / n < threshold:
        return f"n/a: expert {rate:.0f} % < {100 * threshold:.0f} %"
    lo, _ = wilson_interval(k, n, confidence)
    return f"{rate:.0f} % (>= {100 * lo:.0f})"


def write_markdown(result: dict, path: Path) -> None:
    suites, thr, conf = result["suites"], result["threshold"], result["confidence"]
    lines = [
        "# Scripted-expert success per task and suite",
        "",
        f"`{result['command']}`",
        "",
        f"{result['episodes_per_task']} episodes per task and suite (seeds from {result['seed_base']}), "
        f"step limit {result['max_episode_steps']}; cell = success rate (lower end of the "
        f"{100 * conf:.0f} % Wilson interval). A cell below {100 * thr:.0f} % reads n/a: the expert "
        "is no reference there. Mean steps to success on the nominal suite in the last column.",
        "",
        "| task | " + " | ".join(suites) + " | steps (nominal) |",
        "|---|" + "---|" * (len(suites) + 1),
    ]
    below = []
    for task, row in result["tasks"].items():
        cells = [_fmt(row["cells"][s], thr, conf) for s in suites]
        nom = row["cells"]["nominal"]
        lines.append(f"| {task} | " + " | ".join(cells) + f" | {nom['mean_steps_to_success']:.0f} (max "
                     f"{nom['max_steps_to_success']}) |")
        for s in suites:
            c = row["cells"][s]
            if c["applies"] and c["successes"] / c["n"] < thr:
                below.append(f"- {task} / {s}: {c['successes']}/{c['n']}, failed seeds {c['failed_seeds']}")
            elif c["applies"] and c["failed_seeds"]:
                below.append(f"- {task} / {s}: {c['successes']}/{c['n']} (failed seeds {c['failed_seeds']})")
    lines += ["", "n/a (does not apply): the task's goal is a fixed offset from its object, so a goal shift "
              "does not apply; reach has no object, so object shifts do not apply to it.", ""]
    if below:
        lines += ["Every failed episode:", "", *below, ""]
    lines += [f"Wall time {result['seconds']:.0f} s on {result['machine']}.", ""]
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--profile", default="standard")
    ap.add_argument("--tasks", nargs="*", help="default: the profile's sim.tasks")
    ap.add_argument("--episodes", type=int, default=50, help="episodes per task and suite")
    ap.add_argument("--threshold", type=float, default=0.95)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "expert_mt10.json"))
    ap.add_argument("--restart", action="store_true")
    args = ap.parse_args(argv)

    cfg = load_config(args.params, args.profile, [f"evaluate.episodes_per_task={args.episodes}",
                                                   "evaluate.suites=[all]", "evaluate.gifs_per_task=0"])
    tasks = list(args.tasks or cfg.sim.tasks)
    out = Path(args.out)
    partial = out.with_suffix(".partial.json")
    settings = {"episodes_per_task": args.episodes, "seed_base": cfg.evaluate.seed_base,
                "max_episode_steps": cfg.evaluate.max_episode_steps,
                "magnitudes_cm": cfg.evaluate.magnitudes_cm, "image_size": cfg.sim.image_size,
                "camera": cfg.sim.camera}
    done: dict = {}
    if partial.exists() and not args.restart:
        saved = json.loads(partial.read_text())
        if saved["settings"] == settings:
            done = saved["tasks"]
            _log(f"resuming: {', '.join(done)} already measured")
        else:
            _log("settings changed since the partial results: starting over")
    start = time.time()
    with make_simulator(cfg.sim, cfg.evaluate) as sim:
        for task in tasks:
            if task in done:
                continue
            row = measure_task(task, cfg, sim)
            done[task] = row
            tmp = partial.with_suffix(".tmp")
            tmp.write_text(json.dumps({"settings": settings, "tasks": done}, indent=1))
            os.replace(tmp, partial)
            nom = row["cells"]["nominal"]
            _log(f"{task}: nominal {nom['successes']}/{nom['n']} ({row['seconds']:.0f} s)")
    suites = list(next(iter(done.values()))["cells"])
    result = {
        "command": "python benchmarks/expert_success.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        **settings, "threshold": args.threshold, "confidence": cfg.evaluate.confidence, "suites": suites,
        "tasks": {t: done[t] for t in tasks},
        "seconds": sum(done[t]["seconds"] for t in tasks), "this_run_seconds": time.time() - start,
        "machine": f"{os.cpu_count()} CPU cores ({platform.machine()}), "
                   f"{cfg.evaluate.num_workers} simulator workers",
    }
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, out)
    write_markdown(result, out.with_suffix(".md"))
    partial.unlink(missing_ok=True)
    _log(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

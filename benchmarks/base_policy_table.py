"""The per-task base-policy table on MT10: every suite, Wilson intervals, the expert beside it.

    .venv/bin/python benchmarks/base_policy_table.py --evaluation runs/std/evaluation

Reads an evaluation artifact's ``metrics.json`` (``vla-rft evaluate --policy base=BC``, the scripted
expert evaluated on the same episodes) and ``benchmarks/results/expert_mt10.json`` (the expert on
50 seeds), and writes ``benchmarks/results/base_policy_mt10.md``: one row per task, one column per
suite, ``base % [interval] / expert %``. A cell where the 50-seed expert is below 95 % carries
a dagger: the expert is no reference there, so the gap to it means less.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--evaluation", required=True, help="evaluation artifact directory")
    ap.add_argument("--policy", default="base")
    ap.add_argument("--expert-table", default=str(ROOT / "benchmarks" / "results" / "expert_mt10.json"))
    ap.add_argument("--note", default="", help="a line about how the numbers were measured (times, load)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "base_policy_mt10.md"))
    args = ap.parse_args(argv)

    metrics = json.loads((Path(args.evaluation) / "metrics.json").read_text())
    pol, exp = metrics["policies"][args.policy], metrics["policies"]["expert"]
    ref = json.loads(Path(args.expert_table).read_text())
    thr = ref["threshold"]
    suites = list(pol["cells"])
    tasks = list(pol["cells"]["nominal"])
    lines = [f"# Base policy on MT10: success per task and suite ({args.policy}, expert on the same episodes)", "",
             f"`python benchmarks/base_policy_table.py {' '.join(argv if argv is not None else sys.argv[1:])}`", "",
             "Cell: policy success % [95 % Wilson interval] / scripted expert % on the same episodes. "
             f"† marks a cell where the expert is below {100 * thr:.0f} % on 50 seeds "
             "(`results/expert_mt10.md`): no reliable reference there. n/a: the suite does not apply.", ""]
    if args.note:
        lines += [args.note, ""]
    lines += ["| task | " + " | ".join(suites) + " |", "|---|" + "---|" * len(suites)]
    for task in tasks:
        row = []
        for s in suites:
            c, e = pol["cells"][s][task], exp["cells"][s][task]
            if not c["applicable"]:
                row.append("n/a")
                continue
            r = ref["tasks"][task]["cells"][s]
            dagger = " †" if r["applies"] and r["successes"] / r["n"] < thr else ""
            row.append(f"{100 * c['success_rate']:.0f} [{100 * c['ci_low']:.0f}, {100 * c['ci_high']:.0f}] / "
                       f"{100 * e['success_rate']:.0f}{dagger}")
        lines.append(f"| {task} | " + " | ".join(row) + " |")
    pooled = []
    for s in suites:
        p, e = pol["suites"][s], exp["suites"][s]
        if p["success_rate"] is None:
            pooled.append("n/a")
        else:
            pooled.append(f"**{100 * p['success_rate']:.1f}** [{100 * p['ci_low']:.1f}, {100 * p['ci_high']:.1f}] "
                          f"/ {100 * e['success_rate']:.1f} (n={p['n']})")
    lines.append("| all tasks | " + " | ".join(pooled) + " |")
    nominal = {t: pol["cells"]["nominal"][t]["success_rate"] for t in tasks}
    middle = [t for t, r in nominal.items() if 0.2 <= r <= 0.8]
    lines += ["", f"Tasks between 20 % and 80 % nominal: **{len(middle)} of {len(tasks)}** "
              f"({', '.join(f'{t} {100 * nominal[t]:.0f} %' for t in middle) or 'none'}); at 100 %: "
              f"{', '.join(t for t, r in nominal.items() if r == 1.0) or 'none'}; below 20 %: "
              f"{', '.join(f'{t} {100 * r:.0f} %' for t, r in nominal.items() if r < 0.2) or 'none'}.", ""]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The evaluation report: ``metrics.json``, ``summary.md``, ``episodes.csv`` and ``report.html``.

The HTML report is self-contained apart from files next to it: GIFs in ``gifs/`` and plots in
``plots/``, referenced by relative paths, so the directory can be copied, served or uploaded as
one KFP ``HTML`` artifact. Later stages add their own sections (a world-model fidelity table,
real-vs-imagined GIFs, RFT training curves) as :class:`ReportSection` ``(title, html, files)``.
"""

from __future__ import annotations

import csv
import html
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Mapping, Sequence

import numpy as np

from vla_rft.evaluation.runner import EXPERT, EvalResults, EpisodeVideo
from vla_rft.tasks import TASKS

GIF_DIR = "gifs"
PLOT_DIR = "plots"


@dataclass
class ReportSection:
    """An extra section of the HTML report, written by another stage.

    ``html`` is a fragment placed under an ``<h2>`` with ``title``; ``files`` maps a relative path
    inside the report directory (how the fragment refers to it, e.g. ``"wm/real_vs_imagined.gif"``)
    to a source file or to the file's bytes.
    """

    title: str
    html: str
    files: Mapping[str, str | Path | bytes] = field(default_factory=dict)


# -- formatting ---------------------------------------------------------------------------------

def format_rate(entry: Mapping[str, Any] | None) -> str:
    """``72.5% [61.9, 81.1] (n=40)`` for a cell or suite entry of metrics.json; ``n/a`` where it does not apply."""
    if not entry or entry.get("applicable") is False or entry.get("success_rate") is None:
        return "n/a"
    return (f"{100 * entry['success_rate']:.1f}% [{100 * entry['ci_low']:.1f}, {100 * entry['ci_high']:.1f}]"
            f" (n={entry['n']})")


def _steps(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _points(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:+.1f}"


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.0f}%"


def _policy_order(metrics: Mapping[str, Any]) -> list[str]:
    """Policies as evaluated, the expert (the reference) last."""
    names = list(metrics["policies"])
    return [n for n in names if n != EXPERT] + [n for n in names if n == EXPERT]


def _tables(metrics: Mapping[str, Any]) -> list[tuple[str, str, list[str], list[list[str]]]]:
    """(anchor, title, header, rows) of every table, shared by the Markdown and HTML writers."""
    pols = _policy_order(metrics)
    suites = [s["name"] for s in metrics["suites"]]
    tasks = metrics["tasks"]
    P = metrics["policies"]
    tables = [(
        "suites", "Success by suite (mean over the tasks the suite applies to)",
        ["suite", *pols],
        [[s, *(format_rate(P[p]["suites"][s]) for p in pols)] for s in suites]
        + [[f"overall: {k}", *(_pct(P[p]["overall"][k]) for p in pols)]
           for k in ("nominal", "perturbed", "all")],
    )]
    tables.append((
        "steps", "Mean env steps to success (successful episodes only)",
        ["suite", *pols],
        [[s, *(_steps(P[p]["suites"][s]["mean_steps_to_success"]) for p in pols)] for s in suites],
    ))
    for c in metrics.get("comparisons", []):
        ref = c["reference"]
        rows = [[k, _points(g), *([_share(c["gap_closed"].get(k))] if ref else [])] for k, g in c["gain"].items()]
        header = ["suite", "gain (points)", *([f"share of the gap to {ref} closed"] if ref else [])]
        tables.append((f"cmp-{c['policy']}-{c['base']}", f"{c['policy']} vs {c['base']}", header, rows))
    for p in pols:
        tables.append((
            f"tasks-{p}", f"{p}: success by task",
            ["suite", *tasks],
            [[s, *(format_rate(P[p]["cells"][s][t]) for t in tasks)] for s in suites],
        ))
    return tables


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def summary_markdown(metrics: Mapping[str, Any], title: str = "Evaluation in the real simulator") -> str:
    """The Markdown summary: suites x policies, comparisons, then one suites x tasks table per policy."""
    conf = round(100 * metrics["confidence"])
    lines = [
        f"# {title}", "",
        f"Cells: success rate, {conf}% Wilson score interval, episodes. Every policy faced the same "
        "seeded episodes; `n/a`: the perturbation does not apply to the task (goal shifts need a free "
        "goal: reach, push; object shifts need an object: not reach), no episode was run. Steps to "
        "success count env steps up to the first successful one, for policies and the expert alike.", "",
    ]
    for _, name, header, rows in _tables(metrics):
        lines += [f"## {name}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        lines.append("")
    return "\n".join(lines)


# -- files --------------------------------------------------------------------------------------

def write_gif(path: str | Path, frames: np.ndarray, fps: float) -> Path:
    """Write (T, H, W, 3) uint8 frames as a looping GIF; the last frame is held for a second."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(np.asarray(f, dtype=np.uint8)) for f in frames]
    duration = max(20, int(round(1000 / fps)))
    durations = [duration] * (len(images) - 1) + [1000]
    images[0].save(path, save_all=True, append_images=images[1:], duration=durations, loop=0, optimize=False)
    return path


def write_episodes_csv(path: str | Path, results: Sequence[EvalResults]) -> Path:
    """One row per (policy, episode): the raw outcomes behind every number."""
    path = Path(path)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["policy", "suite", "task", "episode", "seed", "success", "steps", "steps_to_success"])
        for r in results:
            for e in r.episodes:
                w.writerow([r.policy, e.suite, e.task, e.episode, e.seed, int(e.success), e.steps,
                            "" if e.steps_to_success is None else e.steps_to_success])
    return path


def plot_suites(metrics: Mapping[str, Any], path: str | Path) -> Path:
    """Grouped bars: success per suite and policy, with the Wilson intervals as error bars."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    pols = _policy_order(metrics)
    suites = [s["name"] for s in metrics["suites"]]
    fig = Figure(figsize=(max(6.0, 0.9 * len(suites) + 2), 3.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    width = 0.8 / len(pols)
    x = np.arange(len(suites))
    for j, p in enumerate(pols):
        entries = [metrics["policies"][p]["suites"][s] for s in suites]
        rate = np.array([np.nan if e["success_rate"] is None else 100 * e["success_rate"] for e in entries])
        lo = np.array([0 if e["ci_low"] is None else 100 * e["ci_low"] for e in entries])
        hi = np.array([0 if e["ci_high"] is None else 100 * e["ci_high"] for e in entries])
        err = np.nan_to_num(np.stack([rate - lo, hi - rate]).clip(min=0))
        ax.bar(x + (j - (len(pols) - 1) / 2) * width, np.nan_to_num(rate), width, yerr=err, capsize=2, label=p)
    ax.set_xticks(x, suites, rotation=30, ha="right")
    ax.set_ylabel("success (%)")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=8, ncols=len(pols))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def _safe_relpath(rel: str) -> PurePosixPath:
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise ValueError(f"report file {rel!r} must be a relative path inside the report directory")
    return p


def _gif_name(policy: str, v: EpisodeVideo) -> str:
    outcome = "success" if v.success else "failure"
    return f"{GIF_DIR}/{policy}/{v.suite}_{v.task}_ep{v.episode}_{outcome}.gif"


# -- HTML ---------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;white-space:nowrap}
th{background:#f3f3f3} td.na{color:#999}
.gifs{display:flex;flex-wrap:wrap;gap:.8em;margin-bottom:1em}
figure{margin:0;text-align:center;font-size:.8em}
figure img{width:128px;height:128px;image-rendering:pixelated;border:2px solid #ccc}
figure.ok img{border-color:#2a2} figure.fail img{border-color:#c33}
.note{color:#555;font-size:.9em}
"""


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td{' class=na' if c == 'n/a' else ''}>{html.escape(c)}</td>" for c in row) + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def write_report(out_dir: str | Path, metrics: Mapping[str, Any], results: Sequence[EvalResults] = (), *,
                 sections: Sequence[ReportSection | tuple] = (), title: str = "VLA-RFT evaluation",
                 plots: bool = True) -> dict[str, Path]:
    """Write metrics.json, summary.md, episodes.csv, report.html (+ gifs/, plots/) into ``out_dir``.

    ``results`` supply the GIFs and the per-episode CSV (metrics alone give the tables);
    ``sections`` are extra ``(title, html_fragment, files)`` sections from other stages.
    Returns the written paths by name.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    written["metrics"] = out / "metrics.json"
    written["metrics"].write_text(json.dumps(metrics, indent=2, sort_keys=False) + "\n")
    written["summary"] = out / "summary.md"
    written["summary"].write_text(summary_markdown(metrics))
    if results:
        written["episodes"] = write_episodes_csv(out / "episodes.csv", results)

    parts = [f"<h1>{html.escape(title)}</h1>",
             "<p class=note>Policies act in the real simulator (Meta-World on MuJoCo) on the same seeded "
             "episodes; success rates with "
             f"{round(100 * metrics['confidence'])}% Wilson score intervals and episode counts. "
             "<code>n/a</code>: the perturbation does not apply to the task. Suite rows average over the "
             "tasks the suite applies to.</p>"]
    if plots:
        written["plot_suites"] = plot_suites(metrics, out / PLOT_DIR / "success_by_suite.png")
        parts.append(f"<img src='{PLOT_DIR}/success_by_suite.png' alt='success by suite'>")
    for anchor, name, header, rows in _tables(metrics):
        parts += [f"<h2 id='{html.escape(anchor)}'>{html.escape(name)}</h2>", _html_table(header, rows)]

    videos = [(r.policy, v) for r in results for v in r.videos]
    if videos:
        parts.append("<h2 id='episodes'>Episodes</h2><p class=note>One frame per action chunk, played in "
                     "real time; green border: success, red: failure.</p>")
        order = {p: i for i, p in enumerate(_policy_order(metrics))}
        for task in metrics["tasks"]:
            mine = sorted((pv for pv in videos if pv[1].task == task),
                          key=lambda pv: (order.get(pv[0], 99), pv[1].suite, not pv[1].success, pv[1].episode))
            if not mine:
                continue
            parts.append(f"<h3>{html.escape(task)}: “{html.escape(TASKS[task].instruction)}”</h3><div class=gifs>")
            for policy, v in mine:
                rel = _gif_name(policy, v)
                write_gif(out / rel, v.frames, v.fps)
                outcome = "success" if v.success else "failure"
                parts.append(
                    f"<figure class={'ok' if v.success else 'fail'}><img src='{html.escape(rel)}' "
                    f"alt='{html.escape(rel)}'><figcaption>{html.escape(policy)}<br>{html.escape(v.suite)} "
                    f"ep {v.episode}: {outcome}</figcaption></figure>")
            parts.append("</div>")

    for sec in sections:
        sec = sec if isinstance(sec, ReportSection) else ReportSection(*sec)
        for rel, src in dict(sec.files).items():
            dest = out / _safe_relpath(rel)
            dest.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(src, bytes):
                dest.write_bytes(src)
            else:
                shutil.copyfile(src, dest)
        parts += [f"<h2>{html.escape(sec.title)}</h2>", sec.html]

    doc = ("<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
           f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>\n"
           + "\n".join(parts) + "\n</body></html>\n")
    written["html"] = out / "report.html"
    written["html"].write_text(doc)
    return written

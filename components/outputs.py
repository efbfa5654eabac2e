"""What the KFP components share: building the stage config, and shaping results for the Kubeflow UI.

The UI shows a ``Metrics`` artifact as a table of scalars, a ``Markdown`` artifact as rendered text
and an ``HTML`` artifact in a frame; none of them can reach a file next to the artifact, so plots
travel inside the page as ``data:`` URIs. Everything here runs inside a component's pod (the
function bodies import this module from the installed package), so it imports only the library.
"""

from __future__ import annotations

import base64
import io
import json
import math
from typing import Any

#: typed pipeline knobs -> the params.yaml key each one sets; 0 / "" mean "the profile's value"
KNOBS: dict[str, str] = {
    "tasks": "sim.tasks",
    "episodes_per_task": "prepare_data.episodes_per_task",
    "world_model_steps": "world_model.steps",
    "bc_steps": "policy.steps",
    "rft_steps": "rft.steps",
    "group_size": "rft.group_size",
    "eval_episodes_per_task": "evaluate.episodes_per_task",
    "device": "common.device",
    "registry": "promote.registry",
    "data_source": "data.source",
    "base_policy": "policy.init",
    "dvc_repo": "data.dvc_repo",
    "accumulate_rollouts": "data.accumulate_rollouts",
}

#: knobs that are true/false: always applied (their default is params.yaml's own value)
BOOL_KNOBS = ("accumulate_rollouts",)


def knob_overrides(knobs: dict[str, Any]) -> list[str]:
    """``section.key=value`` overrides for the knobs a user set (0, "" and None leave the profile's value)."""
    unknown = sorted(set(knobs) - set(KNOBS))
    if unknown:
        raise ValueError(f"unknown pipeline knob {unknown[0]!r}; known knobs: {', '.join(KNOBS)}")
    out = []
    for name, value in knobs.items():
        if name in BOOL_KNOBS and isinstance(value, bool):
            out.append(f"{KNOBS[name]}={str(value).lower()}")
            continue
        if value in (None, "", 0) or isinstance(value, bool):
            continue
        if name == "tasks":
            tasks = [t.strip() for t in str(value).replace(",", " ").split()]
            value = "[" + ", ".join(tasks) + "]"
        out.append(f"{KNOBS[name]}={value}")
    return out


def resolve_config(params_json: str, profile: str, overrides: list, **knobs: Any) -> dict[str, Any]:
    """The run's whole configuration (profile, knobs and ``overrides`` applied, validated) as a mapping.

    Overrides win over knobs, knobs over the profile. The result has no ``profiles`` section and
    names its profile, so :func:`stage_config` rebuilds exactly this config in every stage.
    """
    from vla_rft.config import config_from_dict

    cfg = config_from_dict(json.loads(params_json), profile=profile or None,
                           overrides=[*knob_overrides(knobs), *[str(o) for o in overrides]])
    return cfg.to_dict()


def stage_config(config_json: str):
    """The validated :class:`~vla_rft.config.Config` a stage runs with, from the ``configure`` task's output."""
    from vla_rft.config import config_from_dict

    return config_from_dict(json.loads(config_json))


def flat_metrics(tree: Any, prefix: str = "") -> dict[str, float]:
    """Numbers of a nested summary as ``a/b/c -> float`` (for KFP Metrics); lists become ``/i``."""
    out: dict[str, float] = {}
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for key, value in items:
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, bool):
            out[name] = float(value)
        elif isinstance(value, (int, float)) and math.isfinite(value):
            out[name] = float(value)
        elif isinstance(value, (dict, list)):
            out.update(flat_metrics(value, name))
    return out


def kfp_success_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Every evaluated policy's success numbers, shaped for a KFP Metrics artifact."""
    from vla_rft.evaluation.metrics import kfp_metrics

    out: dict[str, float] = {}
    for policy in metrics["policies"]:
        out.update({f"{policy}/{k}": v for k, v in kfp_metrics(metrics, policy).items()})
    return out


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_cell(v) for v in value)
    if value is None:
        return "n/a"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: list[tuple[str, Any]], header: tuple[str, str] = ("", "value")) -> str:
    """A two-column Markdown table a person reads (numbers rounded, lists joined, no JSON)."""
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| {name} | {_cell(value)} |" for name, value in rows]
    return "\n".join(lines) + "\n"


def png_data_uri(series: dict[str, list[float]], title: str, xlabel: str = "step", ylabel: str = "") -> str:
    """A small line plot of ``series`` (name -> values) as a ``data:image/png;base64,...`` URI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3), dpi=80)
    try:
        for name, values in series.items():
            ax.plot(range(1, len(values) + 1), values, label=name)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        if ylabel:
            ax.set_ylabel(ylabel)
        if len(series) > 1:
            ax.legend()
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
    finally:
        plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def markdown_plot(series: dict[str, list[float]], title: str, **kwargs: Any) -> str:
    """A Markdown image of :func:`png_data_uri` (empty when there is nothing to plot)."""
    series = {k: [float(x) for x in v] for k, v in series.items() if v}
    if not series:
        return ""
    return f"![{title}]({png_data_uri(series, title, **kwargs)})\n"


def curves_markdown(model_dir: str, keys: list[str], title: str) -> str:
    """Plots of a training run's ``curves.json`` (written next to the model) as Markdown images."""
    from pathlib import Path

    path = Path(model_dir) / "curves.json"
    if not path.exists():
        return ""
    rows = json.loads(path.read_text())
    series = {k: [r[k] for r in rows if isinstance(r.get(k), (int, float))] for k in keys}
    return markdown_plot(series, title)


def inline_images(html_text: str, base_dir: str) -> str:
    """Replace every relative ``<img src='...'>`` with a ``data:`` URI, so the page stands alone.

    The Kubeflow UI serves an HTML artifact as one file: images next to it would not load.
    """
    import mimetypes
    import re
    from pathlib import Path

    base = Path(base_dir).resolve()

    def embed(match: re.Match) -> str:
        quote, src = match.group(1), match.group(2)
        if src.startswith(("data:", "http:", "https:")):
            return match.group(0)
        path = (base / src).resolve()
        if not path.is_relative_to(base) or not path.is_file():
            return match.group(0)
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        data = base64.b64encode(path.read_bytes()).decode()
        return f"src={quote}data:{mime};base64,{data}{quote}"

    return re.sub(r"src=(['\"])([^'\"]+)\1", embed, html_text)


def fidelity_table(fidelity: dict[str, Any]) -> str:
    """The world model against its baselines, one row per region and metric, one column per predictor."""
    predictors = [k for k, v in fidelity.items() if isinstance(v, dict) and isinstance(v.get("whole"), dict)]
    if not predictors:
        return ""
    regions = [r for r in ("whole", "moving") if all(r in fidelity[p] for p in predictors)]
    metrics = list(fidelity[predictors[0]][regions[0]].get("mean", {})) if regions else []
    lines = ["| val-episode frames | " + " | ".join(p.replace("_", " ") for p in predictors) + " |",
             "|---|" + "---|" * len(predictors)]
    for region in regions:
        for metric in metrics:
            cells = [_cell(fidelity[p][region].get("mean", {}).get(metric)) for p in predictors]
            lines.append(f"| {region} {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def trained_summary(model_dir: str) -> dict[str, Any]:
    """What a training stage returns, read back from its artifact (a TrainJob trained it, not this pod)."""
    from pathlib import Path

    def read(*names: str) -> Any:
        for name in names:
            path = Path(model_dir) / name
            if path.is_file():
                return json.loads(path.read_text())
        return None

    return {"train": read("bc_summary.json", "summary.json") or {}, "fidelity": read("eval/metrics.json") or {},
            "reward_fidelity": read("reward_fidelity.json"), "seconds": float("nan")}

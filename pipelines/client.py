"""Compile the pipeline, run it locally with ``kfp.local``, submit it or schedule it on a cluster.

Only the CLI's ``pipeline`` commands import this module; the library's stages never import kfp.
"""

import json
import re
import tempfile
import time
import uuid
from pathlib import Path

from vla_rft.components.stage_components import DEFAULT_IMAGE
from vla_rft.pipelines.pipeline import PIPELINE_NAME, build_pipeline, load_params

#: the package the repo ships for upload in the Kubeflow UI (a test fails when it is stale)
COMPILED_PATH = Path(__file__).with_name("vla_rft_pipeline.yaml")

_CRON_FIELD = re.compile(r"^(\*|\?|[0-9A-Za-z]+(-[0-9A-Za-z]+)?)(/[0-9]+)?(,(\*|[0-9A-Za-z]+(-[0-9A-Za-z]+)?)(/[0-9]+)?)*$")
_CRON_RANGES = [(0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]
_CRON_NAMES = ("seconds", "minutes", "hours", "day of month", "month", "day of week")


class PipelineError(ValueError):
    """A pipeline command got an invalid argument (bad cron expression, missing file, ...)."""


def validate_cron(expr: str) -> str:
    """Check a KFP cron expression: six fields, seconds first (e.g. ``0 0 3 * * *`` = 03:00 daily)."""
    fields = expr.split()
    if len(fields) != 6:
        raise PipelineError(
            f"invalid cron expression {expr!r}: KFP needs 6 fields (seconds minutes hours day-of-month "
            f"month day-of-week), got {len(fields)}; e.g. '0 0 3 * * *' runs daily at 03:00"
        )
    for field, (lo, hi), name in zip(fields, _CRON_RANGES, _CRON_NAMES):
        if not _CRON_FIELD.match(field):
            raise PipelineError(f"invalid cron expression {expr!r}: field {name} ({field!r}) is malformed")
        for number in re.findall(r"(?<![/0-9])[0-9]+", field):
            if not lo <= int(number) <= hi:
                raise PipelineError(f"invalid cron expression {expr!r}: {name} value {number} is outside [{lo}, {hi}]")
    return expr


def compile_pipeline(out: str | Path = COMPILED_PATH, params_path: str | Path = "params.yaml",
                     image: str = DEFAULT_IMAGE, s3_endpoint: str = "http://minio-service:9000") -> Path:
    """Write the pipeline package YAML (for ``submit``, ``schedule`` or upload in the Kubeflow UI)."""
    from kfp import compiler

    out = Path(out)
    pipeline = build_pipeline(load_params(params_path), image=image, s3_endpoint=s3_endpoint)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(pipeline, str(out))
    return out


def run_local(pipeline_root: str | Path, params_path: str | Path = "params.yaml", profile: str | None = None,
              overrides: list[str] | None = None) -> dict:
    """Run the whole DAG in this machine's Python with kfp.local's SubprocessRunner."""
    from kfp import local

    params_json = load_params(params_path)
    root = Path(pipeline_root).resolve()
    # every run writes under its own prefix, so runs started at the same time never share a directory
    run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    run_root = root / run_id
    run_root.mkdir(parents=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(run_root), raise_on_error=True)
    pipeline = build_pipeline(params_json, cluster=False)
    kwargs = {"overrides": list(overrides or [])}
    if profile:
        kwargs["profile"] = profile
    start = time.time()
    pipeline(**kwargs)
    runs = [p for p in run_root.iterdir() if p.is_dir()]
    if len(runs) != 1:
        raise PipelineError(f"expected one kfp.local run directory under {run_root}, found {len(runs)}")
    run_dir = runs[0]
    result = {"pipeline_root": str(root), "run_id": run_id, "run_dir": str(run_dir), "seconds": time.time() - start}
    evaluation = run_dir / "evaluate" / "evaluation"
    if (evaluation / "metrics.json").exists():
        metrics = json.loads((evaluation / "metrics.json").read_text())
        result["report"] = str(evaluation / "report.html")
        result["success"] = {name: entry["overall"] for name, entry in metrics["policies"].items()}
        result["gain"] = [{"policy": c["policy"], "base": c["base"], **{k: v for k, v in c["gain"].items()
                                                                        if k.startswith("overall") or k == "nominal"}}
                          for c in metrics.get("comparisons", [])]
    decision = run_dir / "promote" / "decision"
    if decision.exists():
        result["promotion"] = decision.read_text().split("```json", 1)[-1].split("```")[0].strip()
    return result


def _client(host: str):
    import kfp

    return kfp.Client(host=host)


def _experiment_id(client, name: str) -> str:
    try:
        return client.get_experiment(experiment_name=name).experiment_id
    except ValueError:
        return client.create_experiment(name=name).experiment_id


def _package(package: str | Path | None, tmp: str) -> str:
    if package:
        if not Path(package).exists():
            raise PipelineError(f"pipeline package {package} does not exist; run `vla-rft pipeline compile` first")
        return str(package)
    return str(compile_pipeline(Path(tmp) / "pipeline.yaml"))


def _run_parameters(profile: str | None, overrides: list[str] | None) -> dict:
    """Pipeline parameters a run overrides (params_json keeps the compiled default)."""
    params: dict = {"overrides": list(overrides or [])}
    if profile:
        params["profile"] = profile
    return params


def submit(host: str, experiment: str = PIPELINE_NAME, profile: str | None = None, run_name: str | None = None,
           package: str | Path | None = None, overrides: list[str] | None = None) -> dict:
    """Start one run on a Kubeflow cluster."""
    with tempfile.TemporaryDirectory() as tmp:
        path = _package(package, tmp)
        client = _client(host)
        params = _run_parameters(profile, overrides)
        result = client.create_run_from_pipeline_package(
            path, arguments=params, run_name=run_name or f"{PIPELINE_NAME} {time.strftime('%Y-%m-%d %H:%M:%S')}",
            experiment_name=experiment,
        )
    return {"run_id": result.run_id, "experiment": experiment}


def schedule(host: str, cron: str, experiment: str = PIPELINE_NAME, max_concurrency: int = 1,
             profile: str | None = None, job_name: str | None = None, package: str | Path | None = None,
             overrides: list[str] | None = None) -> dict:
    """Create a recurring run (scheduled retraining); the evaluate stage's promotion gate keeps the best model."""
    validate_cron(cron)
    if max_concurrency < 1:
        raise PipelineError(f"--max-concurrency must be >= 1, got {max_concurrency}")
    with tempfile.TemporaryDirectory() as tmp:
        path = _package(package, tmp)
        client = _client(host)
        params = _run_parameters(profile, overrides)
        rr = client.create_recurring_run(
            experiment_id=_experiment_id(client, experiment), job_name=job_name or f"{PIPELINE_NAME} retraining",
            cron_expression=cron, max_concurrency=max_concurrency, no_catchup=True, params=params,
            pipeline_package_path=path,
        )
    return {"recurring_run_id": rr.recurring_run_id, "cron": cron, "experiment": experiment}

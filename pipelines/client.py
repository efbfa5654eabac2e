"""Compile the pipeline, run it locally with ``kfp.local``, submit it or schedule it on a cluster.

Only the CLI's ``pipeline`` commands import this module; the library's stages never import kfp.
"""

import contextlib
import io
import re
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from vla_rft.components.outputs import KNOBS, resolve_config
from vla_rft.components.stage_components import DEFAULT_IMAGE
from vla_rft.pipelines.pipeline import PIPELINE_NAME, build_pipeline, load_params

#: the package the repo ships for upload in the Kubeflow UI (a test fails when it is stale)
COMPILED_PATH = Path(__file__).with_name("vla_rft_pipeline.yaml")

_CRON_FIELD = re.compile(r"^(\*|\?|[0-9A-Za-z]+(-[0-9A-Za-z]+)?)(/[0-9]+)?(,(\*|[0-9A-Za-z]+(-[0-9A-Za-z]+)?)(/[0-9]+)?)*$")
_CRON_RANGES = [(0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]
_CRON_NAMES = ("seconds", "minutes", "hours", "day of month", "month", "day of week")


#: seconds a KFP API request may take before ``submit``/``schedule`` give up (``--timeout``)
DEFAULT_TIMEOUT_S = 30.0


class PipelineError(ValueError):
    """A pipeline command got an invalid argument (bad cron expression, missing file, ...)."""


class StageFailedError(PipelineError):
    """A stage of a local run failed; the message holds the stage's own error and where its log is."""


class KFPAPIError(PipelineError):
    """The KFP API answered with an error (or is not a KFP API: an HTML page, a 404)."""


class KFPTimeoutError(PipelineError):
    """The KFP API accepted the connection but did not answer within the timeout."""


class KFPUnreachableError(PipelineError):
    """Nothing answers at the KFP API address (refused, unknown host)."""


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


def compile_pipeline(out: str | Path = COMPILED_PATH, params_path: str | Path | None = None,
                     image: str = DEFAULT_IMAGE, s3_endpoint: str = "http://minio-service:9000") -> Path:
    """Write the pipeline package YAML (for ``submit``, ``schedule`` or upload in the Kubeflow UI)."""
    from kfp import compiler

    out = Path(out)
    pipeline = build_pipeline(load_params(params_path), image=image, s3_endpoint=s3_endpoint)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(pipeline, str(out))
    return out


# -- typed pipeline parameters (the run form's knobs) on the command line ----------------------------

#: top-level pipeline parameters ``--param NAME=VALUE`` may set, with their types
PARAM_TYPES: dict[str, type] = {name: (int if name.endswith(("_steps", "_per_task")) or name == "group_size" else str)
                                for name in KNOBS} | {"gpus": int, "closed_loop": bool, "nodes": int,
                                                      "procs_per_node": int, "accumulate_rollouts": bool}
_BOOL_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def parse_params(items: list[str] | None) -> dict:
    """``["rft_steps=2", "tasks=push, reach"]`` -> ``{"rft_steps": 2, "tasks": "push, reach"}``, typed and checked."""
    out: dict = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise PipelineError(f"--param takes NAME=VALUE, got {item!r}")
        if name not in PARAM_TYPES:
            raise PipelineError(f"unknown pipeline parameter {name!r}; --param accepts: {', '.join(PARAM_TYPES)} "
                                "(everything else: --set section.key=value)")
        if PARAM_TYPES[name] is bool:
            word = value.strip().lower()
            if word not in _BOOL_WORDS:
                raise PipelineError(f"pipeline parameter {name} must be true or false, got {value!r}")
            out[name] = _BOOL_WORDS[word]
        elif PARAM_TYPES[name] is int:
            try:
                out[name] = int(value)
            except ValueError:
                raise PipelineError(f"pipeline parameter {name} must be an integer, got {value!r}") from None
            if name in ("nodes", "procs_per_node") and out[name] < 1:
                raise PipelineError(f"pipeline parameter {name} must be >= 1, got {value}")
            if out[name] < 0:
                raise PipelineError(f"pipeline parameter {name} must be >= 0 (0: the profile's value), got {value}")
        else:
            out[name] = value.strip()
    return out


def _check(params_json: str, profile: str | None, overrides: list[str] | None, params: dict) -> None:
    """Resolve the run's configuration here, as the ``configure`` task will: a bad value stops the command."""
    resolve_config(params_json, profile or "", list(overrides or []),
                   **{k: v for k, v in params.items() if k in KNOBS})


# -- local runs -----------------------------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_TASK_START = re.compile(r"Executing task '([^']+)'")
_TASK_END = re.compile(r"Task '([^']+)' finished with status (\w+)")
_EXCEPTION = re.compile(r"^\s*(?:[A-Za-z_][\w]*\.)*([A-Z]\w*(?:Error|Exception|Exit|Interrupt))(?::\s*(.*))?$")


class _StageLog(io.TextIOBase):
    """Where kfp.local's output goes: all of it to the log file, one line per finished stage to ``echo``.

    kfp.local prints the orchestrator's lines and every task's streamed output through
    ``sys.stdout``; this stream stands in for it during a run and keeps each task's lines, so a
    failure can be reported by its stage's own last exception line.
    """

    def __init__(self, log: io.TextIOBase, echo: Callable[[str], None], verbose: bool):
        self.log, self.echo, self.verbose = log, echo, verbose
        self.current: str | None = None
        self.started: dict[str, float] = {}
        self.finished: dict[str, tuple[str, float]] = {}
        self.lines: dict[str, list[str]] = {}
        self._buf = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.log.write(text)
        if self.verbose:
            self.echo(text, end="")
        self._buf += text
        while "\n" in self._buf:
            line, self._buf = self._buf.split("\n", 1)
            self._line(_ANSI.sub("", line))
        return len(text)

    def flush(self) -> None:
        self.log.flush()

    def _line(self, line: str) -> None:
        if m := _TASK_START.search(line):
            self.current = m[1]
            self.started[m[1]] = time.monotonic()
            self.lines[m[1]] = []
        elif m := _TASK_END.search(line):
            name, status = m[1], m[2]
            seconds = time.monotonic() - self.started.get(name, time.monotonic())
            self.finished[name] = (status, seconds)
            self.current = None
            if not self.verbose:
                self.echo(f"  {name:<18} {status.lower():<8} {seconds:7.1f} s")
        elif self.current:
            self.lines[self.current].append(line)

    def failure(self) -> tuple[str, str] | None:
        """(stage, its last exception line) of the first stage that did not succeed, if any."""
        for name, (status, _) in self.finished.items():
            if status != "SUCCESS":
                error = next((ln.strip() for ln in reversed(self.lines.get(name, [])) if _EXCEPTION.match(ln)),
                             f"status {status} (no exception in its log)")
                return name, error
        return None


@contextlib.contextmanager
def _root_log_to(stream: io.TextIOBase) -> Iterator[None]:
    """Send the root logger's records to ``stream`` for a while (kfp.local logs some lines through it)."""
    import logging

    root = logging.getLogger()
    saved = root.handlers[:]
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.handlers[:] = [handler]
    try:
        yield
    finally:
        root.handlers[:] = saved


def run_local(pipeline_root: str | Path, params_path: str | Path | None = None, profile: str | None = None,
              overrides: list[str] | None = None, verbose: bool = False,
              echo: Callable[..., None] | None = None, package: str | Path | None = None,
              params: dict | None = None) -> dict:
    """Run the whole DAG in this machine's Python with kfp.local's SubprocessRunner.

    ``package``: run a compiled package (what a cluster gets), loaded back from its YAML, instead
    of the pipeline built from ``params_path``. ``params``: typed top-level parameters (see
    :func:`parse_params`). The configuration is validated before anything starts. By default
    ``echo`` gets one line per stage (name, status, seconds) and the full output goes to
    ``<run>/pipeline.log``; with ``verbose`` the full output streams to ``echo`` too.
    """
    from kfp import components, local

    if echo is None:
        terminal = sys.stdout
        echo = lambda text="", end="\n": print(text, end=end, file=terminal, flush=True)  # noqa: E731
    params = dict(params or {})
    if package is not None:
        if not Path(package).exists():
            raise PipelineError(f"pipeline package {package} does not exist; run `vla-rft pipeline compile` first")
        params_json = _package_params(str(package))
    else:
        params_json = load_params(params_path)
    _check(params_json, profile, overrides, params)  # a bad key or value stops here, before any task
    world = params.get("nodes", 1) * params.get("procs_per_node", 1)
    if world > 1:
        raise PipelineError(f"nodes x procs_per_node = {world}: training stages would run as Kubeflow Trainer "
                            "TrainJobs, which kfp.local cannot run; run with nodes=1 procs_per_node=1 here, or "
                            "`torchrun --nproc-per-node N -m vla_rft.cli <stage> ...`, or submit to a cluster")
    root = Path(pipeline_root).resolve()
    # every run writes under its own prefix, so runs started at the same time never share a directory
    run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    run_root = root / run_id
    run_root.mkdir(parents=True)
    log_path = run_root / "pipeline.log"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(run_root), raise_on_error=True)
    if package is not None:
        pipeline = components.load_component_from_file(str(package))
    else:
        pipeline = build_pipeline(params_json, cluster=False)
    kwargs = {**params, "overrides": list(overrides or [])}
    if profile:
        kwargs["profile"] = profile
    start = time.time()
    with open(log_path, "w") as log:
        stream = _StageLog(log, echo, verbose)
        try:
            with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream), _root_log_to(stream):
                task = pipeline(**kwargs)
        except RuntimeError as err:
            failed = stream.failure()
            if failed is None:
                raise PipelineError(f"{_ANSI.sub('', str(err))}; full log: {log_path}") from None
            raise StageFailedError(f"stage {failed[0]} failed: {failed[1]} (full log: {log_path})") from None
    runs = [p for p in run_root.iterdir() if p.is_dir()]
    if len(runs) != 1:
        raise PipelineError(f"expected one kfp.local run directory under {run_root}, found {len(runs)}")
    run_dir = runs[0]
    result = {"pipeline_root": str(root), "run_id": run_id, "run_dir": str(run_dir), "log": str(log_path),
              "seconds": time.time() - start,
              "stages": {name: {"status": s, "seconds": round(t, 1)} for name, (s, t) in stream.finished.items()}}
    evaluation = run_dir / "evaluate" / "evaluation"
    if (evaluation / "metrics.json").exists():
        import json

        metrics = json.loads((evaluation / "metrics.json").read_text())
        result["report"] = str(evaluation / "report.html")
        result["success"] = {name: entry["overall"] for name, entry in metrics["policies"].items()}
        result["gain"] = [{"policy": c["policy"], "base": c["base"], **{k: v for k, v in c["gain"].items()
                                                                        if k.startswith("overall") or k == "nominal"}}
                          for c in metrics.get("comparisons", [])]
    outputs = task.outputs
    result["promotion"] = {"promoted": bool(outputs["promoted"]), "reason": str(outputs["reason"]),
                           "version": str(outputs["version"]), "candidate_score": float(outputs["candidate_score"])}
    return result


# -- the cluster: submit and schedule -------------------------------------------------------------

def _probe(host: str, timeout: float) -> None:
    """One GET of the KFP health endpoint, bounded by ``timeout``: a clear error before kfp.Client starts.

    kfp.Client's constructor asks the same endpoint with no timeout and, on an error, retries five
    times 5 s apart, logging a traceback each time; a stuck or wrong host is caught here instead.
    """
    import json
    import socket
    import urllib.error
    import urllib.request

    if not re.match(r"^https?://[^/\s]+", host):
        raise PipelineError(f"--host must be an http(s):// URL of the KFP API, e.g. http://localhost:8080; got {host!r}")
    url = host.rstrip("/") + "/apis/v2beta1/healthz"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # like kfp.Client: no proxy variables
    try:
        with opener.open(url, timeout=timeout) as reply:
            body = reply.read(65536).decode(errors="replace")
    except urllib.error.HTTPError as err:
        body = err.read(65536).decode(errors="replace")
        if body.lstrip()[:15].lower().startswith(("<!doctype", "<html")):
            raise KFPAPIError(f"{host} answered HTTP {err.code} {err.reason} with an HTML page to GET "
                              "/apis/v2beta1/healthz: not the KFP API; is --host the KFP API endpoint "
                              "(e.g. http://localhost:8080)?") from None
        raise KFPAPIError(f"{host} answered HTTP {err.code} {err.reason} to GET /apis/v2beta1/healthz: "
                          f"{' '.join(body.split())[:300] or 'no body'}") from None
    except (TimeoutError, socket.timeout):
        raise KFPTimeoutError(f"{host} accepted the connection but did not answer within {timeout:g} s "
                              "(--timeout)") from None
    except urllib.error.URLError as err:
        if isinstance(err.reason, (TimeoutError, socket.timeout)):
            raise KFPTimeoutError(f"{host} did not answer within {timeout:g} s (--timeout)") from None
        raise KFPUnreachableError(f"{host} is unreachable: {err.reason}") from None
    except (ConnectionError, OSError) as err:
        raise KFPUnreachableError(f"{host} is unreachable: {err}") from None
    try:
        json.loads(body)
    except ValueError:
        raise KFPAPIError(f"{host} answered GET /apis/v2beta1/healthz with something that is not JSON "
                          f"({' '.join(body.split())[:80]!r}): is --host the KFP API endpoint?") from None


@contextlib.contextmanager
def _request_timeouts(timeout: float) -> Iterator[None]:
    """While inside: every request of kfp's generated REST client gives up after ``timeout`` s, without retries.

    kfp.Client offers no timeout of its own; its requests all pass through ``RESTClientObject.request``.
    """
    from kfp_server_api import rest

    send = rest.RESTClientObject.request

    def request(self, *args, _request_timeout=None, **kwargs):
        self.pool_manager.connection_pool_kw["retries"] = False  # a timed-out POST is not sent twice
        return send(self, *args, _request_timeout=_request_timeout or (timeout, timeout), **kwargs)

    rest.RESTClientObject.request = request
    try:
        yield
    finally:
        rest.RESTClientObject.request = send


@contextlib.contextmanager
def _kfp_client(host: str, timeout: float) -> Iterator:
    """A ``kfp.Client`` on ``host`` after a bounded health check; its requests are bounded, errors named."""
    import warnings

    import kfp

    if not timeout > 0:
        raise PipelineError(f"--timeout must be > 0 seconds, got {timeout}")
    _probe(host, timeout)
    with _request_timeouts(timeout), _api_errors(host, timeout), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "This client only works with KFP v2.0.0-beta.2 and later"
        yield kfp.Client(host=host)


@contextlib.contextmanager
def _api_errors(host: str, timeout: float) -> Iterator[None]:
    """Turn what kfp's generated client raises into one named error that says what to check."""
    import urllib3
    from kfp_server_api.exceptions import ApiException

    try:
        yield
    except ApiException as err:
        body = (err.body or "").decode(errors="replace") if isinstance(err.body, bytes) else str(err.body or "")
        if body.lstrip()[:15].lower().startswith(("<!doctype", "<html")):
            what = "an HTML page, not the KFP API: is --host the KFP API endpoint (e.g. http://localhost:8080)?"
        else:
            what = " ".join(body.split())[:300] or "no body"
        raise KFPAPIError(f"{host} answered HTTP {err.status} {err.reason or ''}".rstrip() + f": {what}") from None
    except (urllib3.exceptions.ReadTimeoutError, urllib3.exceptions.ConnectTimeoutError, TimeoutError):
        raise KFPTimeoutError(f"{host} accepted the connection but did not answer within {timeout:g} s "
                              "(--timeout); is it the KFP API endpoint?") from None
    except urllib3.exceptions.MaxRetryError as err:
        if isinstance(err.reason, (urllib3.exceptions.ReadTimeoutError, urllib3.exceptions.ConnectTimeoutError)):
            raise KFPTimeoutError(f"{host} did not answer within {timeout:g} s (--timeout)") from None
        raise KFPUnreachableError(f"{host} is unreachable: {err.reason}") from None
    except (urllib3.exceptions.HTTPError, ConnectionError) as err:
        raise KFPUnreachableError(f"{host} is unreachable: {err}") from None


def _experiment_id(client, name: str) -> str:
    try:
        return client.get_experiment(experiment_name=name).experiment_id
    except ValueError:
        return client.create_experiment(name=name).experiment_id


def _package(package: str | Path | None, tmp: str, params_path: str | Path | None) -> str:
    if package:
        if not Path(package).exists():
            raise PipelineError(f"pipeline package {package} does not exist; run `vla-rft pipeline compile` first")
        return str(package)
    return str(compile_pipeline(Path(tmp) / "pipeline.yaml", params_path))


def _package_params(package: str) -> str:
    """The ``params_json`` default a compiled package carries (what a run of it starts from)."""
    import yaml

    try:
        spec = next(yaml.safe_load_all(Path(package).read_text()))
        return spec["root"]["inputDefinitions"]["parameters"]["params_json"]["defaultValue"]
    except (yaml.YAMLError, StopIteration, KeyError, TypeError) as err:
        raise PipelineError(f"{package} is not a vla-rft pipeline package (no params_json default: {err})") from None


def _run_parameters(package: str, profile: str | None, overrides: list[str] | None, params: dict | None) -> dict:
    """Pipeline parameters a run overrides (params_json keeps the compiled default), checked here first."""
    _check(_package_params(package), profile, overrides, dict(params or {}))
    out: dict = {**(params or {}), "overrides": list(overrides or [])}
    if profile:
        out["profile"] = profile
    return out


def submit(host: str, experiment: str = PIPELINE_NAME, profile: str | None = None, run_name: str | None = None,
           package: str | Path | None = None, overrides: list[str] | None = None,
           timeout: float = DEFAULT_TIMEOUT_S, params_path: str | Path | None = None,
           params: dict | None = None) -> dict:
    """Start one run on a Kubeflow cluster; ``params``: typed top-level parameters (:func:`parse_params`)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = _package(package, tmp, params_path)
        arguments = _run_parameters(path, profile, overrides, params)
        with _kfp_client(host, timeout) as client:
            result = client.create_run_from_pipeline_package(
                path, arguments=arguments, run_name=run_name or f"{PIPELINE_NAME} {time.strftime('%Y-%m-%d %H:%M:%S')}",
                experiment_name=experiment,
            )
    return {"run_id": result.run_id, "experiment": experiment}


def _uncached(package: str | Path, tmp: str) -> str:
    """A copy of the package with caching off in every sub-DAG (the ParallelFor and closed-loop branches):
    ``enable_caching=False`` of the KFP client reaches the root DAG's tasks only."""
    import yaml

    docs = list(yaml.safe_load_all(Path(package).read_text()))
    for component in docs[0].get("components", {}).values():
        for task in (component.get("dag") or {}).get("tasks", {}).values():
            task["cachingOptions"] = {"enableCache": False}
    out = Path(tmp) / "uncached.yaml"
    out.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return str(out)


def schedule(host: str, cron: str, experiment: str = PIPELINE_NAME, max_concurrency: int = 1,
             profile: str | None = None, job_name: str | None = None, package: str | Path | None = None,
             overrides: list[str] | None = None, timeout: float = DEFAULT_TIMEOUT_S,
             params_path: str | Path | None = None, params: dict | None = None) -> dict:
    """Create a recurring run (scheduled retraining); the evaluate stage's promotion gate keeps the best model.

    Caching is off for the recurring run: each cycle exists to see new inputs (the registry's
    champion, a DVC branch that moved, the rollouts history), none of which is a task input KFP's
    cache key sees, so a cached cycle would replay the first one's outputs.
    """
    validate_cron(cron)
    if max_concurrency < 1:
        raise PipelineError(f"--max-concurrency must be >= 1, got {max_concurrency}")
    with tempfile.TemporaryDirectory() as tmp:
        path = _uncached(_package(package, tmp, params_path), tmp)
        arguments = _run_parameters(path, profile, overrides, params)
        with _kfp_client(host, timeout) as client:
            rr = client.create_recurring_run(
                experiment_id=_experiment_id(client, experiment), job_name=job_name or f"{PIPELINE_NAME} retraining",
                cron_expression=cron, max_concurrency=max_concurrency, no_catchup=True, params=arguments,
                pipeline_package_path=path, enable_caching=False,
            )
    return {"recurring_run_id": rr.recurring_run_id, "cron": cron, "experiment": experiment}

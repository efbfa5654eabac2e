"""The ``vla-rft`` command line: one sub-command per stage, each a thin call into ``vla_rft.stages``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from vla_rft.config import load_config
from vla_rft.errors import ConfigError

log = logging.getLogger("vla_rft")


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", default=None,
                   help="params file (default: ./params.yaml, else the defaults shipped with the package)")
    p.add_argument("--profile", default=None, help="profile in params.yaml: quick or standard")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one parameter (repeatable), e.g. --set sim.num_workers=1")
    p.add_argument("--summary-json", default=None, help="also write the stage summary as JSON to this path")
    p.add_argument("--config-json", default=None, metavar="JSON",
                   help="a resolved configuration (the pipeline's configure output) instead of --params/--profile; "
                        "how a TrainJob's pods get the run's config")


def _load(args: argparse.Namespace):
    """The stage's config: ``--config-json`` when given (checked like any params file), else params + profile + --set."""
    if getattr(args, "config_json", None):
        from vla_rft.config import config_from_dict

        try:
            raw = json.loads(args.config_json)
        except json.JSONDecodeError as err:
            raise ConfigError(f"--config-json is not JSON: {err}") from None
        return config_from_dict(raw, overrides=args.overrides)
    return load_config(args.params, args.profile, args.overrides)


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _cmd_prepare_data(args: argparse.Namespace) -> int:
    from vla_rft import stages

    cfg = _load(args)
    summary = stages.prepare_data(cfg, args.out, overwrite=args.overwrite)
    per_task = ", ".join(f"{t} {s['success_rate']:.0%}" for t, s in summary["expert_per_task"].items())
    print(
        f"prepare-data: {summary['episodes']} episodes ({summary['splits']['train']} train / "
        f"{summary['splits']['val']} val), {summary['frames']} frames, expert success "
        f"{summary['expert_success']:.1%} ({per_task}), {_human_bytes(summary['size_bytes'])}, "
        f"{summary['seconds']:.1f} s -> {summary['uri']}"
        + (f" (from {summary['source'].get('rev') or summary['source'].get('uri')}, content sha256 "
           f"{summary['source']['content_sha256'][:12]})" if "source" in summary else "")
    )
    return _write_summary(args, summary)


def _training_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output model: a local path or s3://bucket/prefix")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model at --out")
    p.add_argument("--checkpoint-dir", default=None,
                   help="where checkpoints go (default: <out>.ckpt, or the cache for s3:// outputs)")
    p.add_argument("--restart", action="store_true",
                   help="discard checkpoints of an earlier run; by default a re-run resumes from them")


def _is_main_rank() -> bool:
    from vla_rft import distributed

    return distributed.context().is_main


def _cmd_train_world_model(args: argparse.Namespace) -> int:
    from vla_rft import stages

    cfg = _load(args)
    s = stages.train_world_model(cfg, args.dataset, args.out, overwrite=args.overwrite,
                                 checkpoint_dir=args.checkpoint_dir, restart=args.restart, init_from=args.init_from)
    if not _is_main_rank():  # under torchrun, rank 0 reports; the artifact is already written
        return 0
    fid = s["fidelity"]
    print(f"train-world-model: {s['train'].get('steps')} steps{' (resumed)' if s['resumed'] else ''}, "
          f"val PSNR {fid['model']['whole']['mean']['psnr']:.2f} dB (copy-last {fid['copy_last']['whole']['mean']['psnr']:.2f}), "
          f"{s['seconds']:.1f} s -> {s['uri']}")
    return _write_summary(args, s)


def _cmd_pretrain_policy(args: argparse.Namespace) -> int:
    from vla_rft import stages

    cfg = _load(args)
    s = stages.pretrain_policy(cfg, args.dataset, args.out, overwrite=args.overwrite,
                               checkpoint_dir=args.checkpoint_dir, restart=args.restart)
    if not _is_main_rank():  # under torchrun, rank 0 reports; the artifact is already written
        return 0
    t = s["train"]
    print(f"pretrain-policy: {s['init']}: {t.get('steps')} steps{' (resumed)' if s['resumed'] else ''}, final val loss "
          f"{t.get('final_val_loss')}, {s['seconds']:.1f} s -> {s['uri']}")
    return _write_summary(args, s)


def _cmd_rft(args: argparse.Namespace) -> int:
    from vla_rft import stages

    cfg = _load(args)
    s = stages.rft(cfg, args.dataset, args.world_model, args.policy, args.out, overwrite=args.overwrite,
                   checkpoint_dir=args.checkpoint_dir, restart=args.restart, verify=not args.no_verify,
                   success_model_uri=args.success_model, rollouts_uri=args.rollouts,
                   veto_world_model_uri=args.veto_world_model)
    if not _is_main_rank():
        return 0
    if s["train"].get("mode") == "episode":
        return _report_rft_episode(args, s)
    t, fid = s["train"], s["reward_fidelity"] or {}
    print(f"rft: {t['steps']} GRPO steps{' (resumed)' if s['resumed'] else ''}, {t['seconds_per_step']:.2f} s/step, "
          f"reward {t['reward_first']:.4f} -> {t['reward_last']:.4f}, reward-fidelity Spearman "
          f"{fid.get('spearman_expert_imagined', float('nan')):.2f}, {s['seconds']:.1f} s -> {s['uri']}")
    return _write_summary(args, s)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from vla_rft import stages

    cfg = _load(args)
    from vla_rft.evaluation.configuration import check_policy_name

    policies = {}
    for item in args.policy:
        name, sep, uri = item.partition("=")
        if not sep or not name or not uri:
            raise ConfigError(f"--policy takes NAME=URI, got {item!r}")
        if name in policies:
            raise ConfigError(f"--policy {name!r} is given twice; every evaluated policy needs its own name")
        policies[check_policy_name(name)] = uri
    suites = None if args.suites is None else [x.strip() for x in args.suites.split(",") if x.strip()]
    s = stages.evaluate(cfg, policies, args.out, world_model_uri=args.world_model, overwrite=args.overwrite,
                        suites=suites)
    if suites is not None:
        print(f"evaluate: suites {', '.join(s['suites'])} of {', '.join(policies)} and the expert "
              f"({s['seconds']:.1f} s) -> {s['uri']} (merge the parts with merge-evaluations)")
        return _write_summary(args, {"uri": s["uri"], "seconds": s["seconds"], "suites": s["suites"]})
    return _report_evaluation(args, s)


def _cmd_merge_evaluations(args: argparse.Namespace) -> int:
    from vla_rft import stages

    cfg = _load(args)
    s = stages.merge_evaluations(cfg, args.part, args.out, world_model_uri=args.world_model, overwrite=args.overwrite)
    return _report_evaluation(args, s)


def _report_evaluation(args: argparse.Namespace, s: dict) -> int:
    for name, entry in s["metrics"]["policies"].items():
        overall = entry["overall"]
        print(f"evaluate: {name}: nominal {overall['nominal']:.1%}, perturbed "
              f"{(overall['perturbed'] if overall['perturbed'] is not None else float('nan')):.1%}")
    print(f"evaluate: report {args.out}/report.html ({s['seconds']:.1f} s)")
    return _write_summary(args, {"uri": s["uri"], "seconds": s["seconds"],
                                 "overall": {n: e["overall"] for n, e in s["metrics"]["policies"].items()}})


def _cmd_promote(args: argparse.Namespace) -> int:
    from vla_rft import stages

    cfg = _load(args)
    d = stages.promote(cfg, args.policy, args.evaluation, registry=args.registry, force=args.force)
    print(f"promote: {'promoted ' + d['version'] if d['promoted'] else 'kept the champion'}: {d['reason']}")
    return _write_summary(args, d)


def _cmd_export_lerobot(args: argparse.Namespace) -> int:
    from vla_rft import stages

    cfg = _load(args)
    s = stages.export_lerobot(cfg, args.dataset, args.out, overwrite=args.overwrite)
    print(f"export-lerobot: {s['episodes']} episodes, {s['frames']} frames, {s['tasks']} tasks, camera "
          f"{s['camera']}, {_human_bytes(s['size_bytes'])}, {s['seconds']:.1f} s -> {s['out']} (LeRobot v3.0)")
    return _write_summary(args, s)


def _cmd_import_lerobot(args: argparse.Namespace) -> int:
    from vla_rft import stages

    cfg = _load(args)
    s = stages.import_lerobot(cfg, args.source, args.out, camera=args.camera, overwrite=args.overwrite)
    notes = s["notes"]
    extra = "".join(f"; {k}: {v}" for k, v in notes.items() if k in ("resized_from", "resize_method") or
                    (k == "filled_in" and v))
    print(f"import-lerobot: {s['episodes']} episodes ({s['splits']['train']} train / {s['splits']['val']} val), "
          f"{s['frames']} frames, tasks {', '.join(s['tasks'])}, camera {notes['camera']}, split "
          f"{notes['split']}{extra}, {s['seconds']:.1f} s -> {s['uri']}")
    return _write_summary(args, s)


def _check_summary_path(path: Path) -> None:
    import os

    if path.is_dir():
        raise ConfigError(f"--summary-json {path} is a directory; give a file path")
    parent = next((p for p in path.parents if p.exists()), Path("."))
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"--summary-json {path}: {parent} is not a writable directory")


def _share(x: float | None) -> str:
    return "n/a" if x is None else format(x, ".0%")


def _auc(x: float | None) -> str:
    return "n/a" if x is None else format(x, ".3f")


def _report_rft_episode(args: argparse.Namespace, s: dict) -> int:
    t, h = s["train"], s["honesty"] or {}
    print(f"rft (episode): {t['steps']} GRPO steps{' (resumed)' if s['resumed'] else ''}, "
          f"{t['seconds_per_step']:.2f} s/step, imagined success {t['imagined_success_first']:.2f} -> "
          f"{t['imagined_success_last']:.2f}, groups dropped {t['groups_dropped']}/{t['groups_total']}, "
          f"{s['seconds']:.1f} s -> {s['uri']}")
    if t.get("veto_world_model"):
        print(f"rft (episode): {t['vetoed_successes']} imagined successes not reproduced by the veto world model's "
              "replay, counted as failures")
    if h:
        corr = h["correlation_across_tasks"]
        print(f"rft (episode): honesty: imagined {h['imagined_success']:.0%} vs real {h['real_success']:.0%}, "
              f"mean |diff| per task {h['mean_abs_difference']:.2f}, correlation "
              f"{'n/a' if corr is None else format(corr, '.2f')}, hallucination rate "
              f"{_share(h['hallucination_rate'])} of real failures, "
              f"{_share(h.get('false_success_share'))} of imagined successes really failed, imagined AUC "
              f"{_auc(h.get('imagined_auc'))}")
        a = h.get("after_training")
        if a:
            print(f"rft (episode): honesty after RFT (the fine-tuned policy, same layouts): imagined "
                  f"{a['imagined_success']:.0%} vs real {a['real_success']:.0%}, hallucination rate "
                  f"{_share(a['hallucination_rate'])} of real failures, imagined AUC {_auc(a['imagined_auc'])}")
        for line in h["warnings"]:
            print(f"rft (episode): {line}")
    return _write_summary(args, s)


def _cmd_collect_rollouts(args: argparse.Namespace) -> int:
    from vla_rft import stages

    cfg = _load(args)
    s = stages.collect_rollouts(cfg, args.policy, args.out, overwrite=args.overwrite)
    per_task = ", ".join(f"{t} {v:.0%}" for t, v in s["success_per_task"].items())
    print(f"collect-rollouts: {s['episodes']} episodes (seeds {s['seeds'][0]}..{s['seeds'][1] - 1}), {s['frames']} "
          f"frames, policy success {s['success_rate']:.1%} ({per_task}), {s['seconds']:.1f} s -> {s['uri']}")
    return _write_summary(args, s)


def _cmd_train_success_model(args: argparse.Namespace) -> int:
    from vla_rft import stages

    cfg = _load(args)
    s = stages.train_success_model(cfg, args.dataset, args.out, world_model_uri=args.world_model,
                                   overwrite=args.overwrite, checkpoint_dir=args.checkpoint_dir, restart=args.restart)
    c = s["train"]["calibration"]
    auc = c["auc"]["all"]
    im = c.get("imagined")
    imagined = "" if im is None else (f", imagined val AUC frames {_auc(im['frame_auc'])} / episodes "
                                      f"{_auc(im['episode_auc'])}")
    print(f"train-success-model: {s['train']['steps']} steps{' (resumed)' if s['resumed'] else ''}, val AUC "
          f"{_auc(auc)}{imagined}, threshold {c['threshold']:.3f} on {c['calibrated_on']} ({c['rule']}: precision "
          f"{c.get('precision', float('nan')):.2f}, recall {c.get('recall', float('nan')):.2f}), "
          f"{s['seconds']:.1f} s -> {s['uri']}")
    return _write_summary(args, s)


def _write_summary(args: argparse.Namespace, summary: dict) -> int:
    if args.summary_json:
        Path(args.summary_json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.summary_json).write_text(json.dumps(summary, indent=2, sort_keys=True, default=str))
    return 0


def _cmd_pipeline(args: argparse.Namespace) -> int:
    # only these commands reach pipelines/ (and kfp); the stages never do
    from vla_rft.pipelines import client

    try:
        if args.action == "compile":
            path = client.compile_pipeline(args.out or client.COMPILED_PATH, args.params,
                                           image=args.image or client.DEFAULT_IMAGE)
            print(f"pipeline compile: wrote {path}")
        elif args.action == "run":
            if not args.local:
                raise client.PipelineError("only --local is supported here; use `pipeline submit` for a cluster")
            print(f"pipeline run: kfp.local, profile {args.profile or 'from params'}; one line per stage "
                  f"(-v streams every log)", flush=True)
            result = client.run_local(args.pipeline_root, args.params, args.profile, args.overrides,
                                      verbose=args.verbose, package=args.package,
                                      params=client.parse_params(args.param))
            print(f"pipeline run: finished in {result['seconds']:.1f} s; artifacts under {result['run_dir']}")
            for name, overall in result.get("success", {}).items():
                perturbed = overall.get("perturbed")
                print(f"  success {name:>7}: nominal {overall['nominal']:.1%}, perturbed "
                      f"{'n/a' if perturbed is None else format(perturbed, '.1%')}")
            for gain in result.get("gain", []):
                print(f"  gain {gain['policy']} vs {gain['base']}: nominal {100 * gain['nominal']:+.1f} points")
            promotion = result["promotion"]
            print(f"  promote: {'promoted ' + promotion['version'] if promotion['promoted'] else 'kept the champion'}"
                  f" ({promotion['reason']})")
            print(f"  report: {result.get('report', 'none')}")
            print(f"  full log: {result['log']}")
            return _write_summary(args, result)
        elif args.action == "submit":
            result = client.submit(args.host, args.experiment, args.profile, args.run_name, args.package,
                                   args.overrides, timeout=args.timeout, params_path=args.params,
                                   params=client.parse_params(args.param))
            print(f"pipeline submit: run {result['run_id']} in experiment {result['experiment']!r}")
        elif args.action == "schedule":
            result = client.schedule(args.host, args.cron, args.experiment, args.max_concurrency, args.profile,
                                     args.job_name, args.package, args.overrides, timeout=args.timeout,
                                     params_path=args.params, params=client.parse_params(args.param))
            print(f"pipeline schedule: recurring run {result['recurring_run_id']} ({result['cron']})")
    except Exception as err:  # noqa: BLE001 - every failure of these commands is one line (-v: the traceback)
        log.debug("traceback", exc_info=True)
        print(f"vla-rft pipeline {args.action}: error ({type(err).__name__}): {err}", file=sys.stderr)
        return 2
    return 0


def _cmd_params(args: argparse.Namespace) -> int:
    from vla_rft.defaults import PARAMS_PATH

    sys.stdout.write(PARAMS_PATH.read_text())
    return 0


PARAM_HELP = ("a typed pipeline parameter of the run form (repeatable): profile knobs such as rft_steps=2, "
              "tasks='push, reach', gpus=1; 0 or empty = the profile's value")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vla-rft", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare-data", help="record expert episodes in Meta-World as a Parquet dataset")
    _add_config_args(p)
    p.add_argument("--out", required=True, help="output dataset: a local path or s3://bucket/prefix")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --out")
    p.set_defaults(func=_cmd_prepare_data)

    p = sub.add_parser("train-world-model", help="train the action-conditioned video model (the learned simulator)")
    _add_config_args(p)
    p.add_argument("--dataset", required=True, action="append",
                   help="a dataset (repeatable: expert data + policy rollouts are trained on together)")
    p.add_argument("--init-from", default=None, help="a world model to fine-tune (e.g. ground on rollouts)")
    _training_args(p)
    p.set_defaults(func=_cmd_train_world_model)

    p = sub.add_parser("pretrain-policy", help="behaviour-clone the VLA policy on expert chunks")
    _add_config_args(p)
    p.add_argument("--dataset", required=True, action="append",
                   help="a dataset (repeatable; with --set policy.episodes=successful, expert data + policy "
                        "rollouts give the filtered-BC baseline)")
    _training_args(p)
    p.set_defaults(func=_cmd_pretrain_policy)

    p = sub.add_parser("rft", help="GRPO with verified rewards in the world model")
    _add_config_args(p)
    p.add_argument("--dataset", required=True)
    p.add_argument("--world-model", required=True)
    p.add_argument("--policy", required=True, help="the base (BC) policy")
    p.add_argument("--no-verify", action="store_true", help="skip the reward check against the real simulator")
    p.add_argument("--success-model", default=None, help="rft.mode episode: the success model (the reward)")
    p.add_argument("--rollouts", default=None, help="rft.mode episode: policy rollouts, more start frames")
    p.add_argument("--veto-world-model", default=None,
                   help="rft.mode episode: a second world model (e.g. the expert-only one); an imagined success "
                        "counts only where its replay of the same actions is judged successful too")
    _training_args(p)
    p.set_defaults(func=_cmd_rft)

    p = sub.add_parser("collect-rollouts", help="the base policy in the real simulator on training seeds, failures kept")
    _add_config_args(p)
    p.add_argument("--policy", required=True, help="the base (BC) policy")
    p.add_argument("--out", required=True, help="output dataset (source: policy)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_collect_rollouts)

    p = sub.add_parser("train-success-model", help="train the success judge on real frames, calibrate its threshold")
    _add_config_args(p)
    p.add_argument("--dataset", required=True, action="append", help="a dataset (repeatable: expert + rollouts)")
    p.add_argument("--world-model", default=None,
                   help="with success_model.imagined_steps > 0: the world model whose replays of the recorded "
                        "episodes the judge is fine-tuned and calibrated on (the one RFT imagines with)")
    _training_args(p)
    p.set_defaults(func=_cmd_train_success_model)

    p = sub.add_parser("evaluate", help="run policies and the scripted expert in the real simulator")
    _add_config_args(p)
    p.add_argument("--policy", action="append", required=True, metavar="NAME=URI",
                   help="a policy to evaluate (repeatable); the first is the base of comparisons")
    p.add_argument("--world-model", default=None, help="adds its fidelity and imagined GIFs to the report")
    p.add_argument("--out", required=True)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--suites", default=None, metavar="NAME[,NAME]",
                   help="run only these of evaluate.suites and write an evaluation part for merge-evaluations "
                        "(one branch of a fanned-out evaluation)")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("merge-evaluations", help="join the parts of a fanned-out evaluation into the evaluation")
    _add_config_args(p)
    p.add_argument("--part", action="append", required=True, metavar="URI",
                   help="an `evaluate --suites` output (repeatable); together they cover evaluate.suites once")
    p.add_argument("--world-model", default=None, help="adds its fidelity and imagined GIFs to the report")
    p.add_argument("--out", required=True)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_merge_evaluations)

    p = sub.add_parser("promote", help="make a policy the registry's champion if it beats the current one")
    _add_config_args(p)
    p.add_argument("--policy", required=True)
    p.add_argument("--evaluation", required=True, help="the evaluate stage's output with this policy in it")
    p.add_argument("--registry", default=None, help="default: promote.registry in params.yaml")
    p.add_argument("--force", action="store_true", help="promote even if not better (recorded as forced)")
    p.set_defaults(func=_cmd_promote)

    p = sub.add_parser("export-lerobot", help="write a dataset as a LeRobot v3.0 dataset directory")
    _add_config_args(p)
    p.add_argument("--dataset", required=True, help="our dataset artifact: a local path or s3://bucket/prefix")
    p.add_argument("--out", required=True,
                   help="the LeRobot dataset directory to create, or s3://bucket/prefix (stored with a manifest)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.set_defaults(func=_cmd_export_lerobot)

    p = sub.add_parser("import-lerobot", help="turn a LeRobot v3.0 dataset directory into our dataset artifact")
    _add_config_args(p)
    p.add_argument("--from", dest="source", required=True, metavar="DIR",
                   help="a LeRobot dataset directory, or an s3:// one written by export-lerobot")
    p.add_argument("--out", required=True, help="output dataset: a local path or s3://bucket/prefix")
    p.add_argument("--camera", default=None,
                   help="which observation.images.<camera> to use (required when there are several)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --out")
    p.set_defaults(func=_cmd_import_lerobot)

    p = sub.add_parser("pipeline", help="the KFP pipeline: run locally, compile, submit or schedule on a cluster")
    acts = p.add_subparsers(dest="action", required=True)
    a = acts.add_parser("run", help="run the whole DAG locally with kfp.local")
    _add_config_args(a)
    a.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                   help="stream every stage's log (default: one line per stage, the logs to a file)")
    a.add_argument("--local", action="store_true", help="run here with kfp.local (no cluster)")
    a.add_argument("--pipeline-root", default="runs/kfp", help="where local artifacts go (default: runs/kfp)")
    a.add_argument("--package", default=None, help="run this compiled package instead of building the pipeline")
    a.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help=PARAM_HELP)
    a = acts.add_parser("compile", help="write the pipeline package YAML")
    a.add_argument("--params", default=None, help="default: ./params.yaml, else the package's defaults")
    a.add_argument("--out", default=None, help="default: pipelines/vla_rft_pipeline.yaml")
    a.add_argument("--image", default=None, help="the project image every component runs in")
    for name, helptext in (("submit", "start one run on a Kubeflow cluster"),
                           ("schedule", "create a recurring run (scheduled retraining)")):
        a = acts.add_parser(name, help=helptext)
        a.add_argument("--host", required=True, help="KFP API endpoint, e.g. http://localhost:8080")
        a.add_argument("--timeout", type=float, default=30.0,
                       help="seconds each KFP API request may take (default: 30)")
        a.add_argument("--experiment", default="vla-rft")
        a.add_argument("--params", default=None,
                       help="checks --profile/--set against this file when compiling now (default as for run)")
        a.add_argument("--profile", default=None)
        a.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
        a.add_argument("--package", default=None, help="a compiled package (default: compile now)")
        a.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help=PARAM_HELP)
        if name == "submit":
            a.add_argument("--run-name", default=None)
        else:
            a.add_argument("--cron", required=True, help="6-field cron, seconds first: '0 0 3 * * *' = 03:00 daily")
            a.add_argument("--max-concurrency", type=int, default=1)
            a.add_argument("--job-name", default=None)
    p.set_defaults(func=_cmd_pipeline)

    p = sub.add_parser("params", help="print the default params.yaml (vla-rft params > params.yaml)")
    p.set_defaults(func=_cmd_params)
    return parser


def _one_line(err: BaseException) -> str:
    """The error's message on one line, with a hint where the cause is the environment."""
    import errno

    text = " ".join(str(err).split()) or type(err).__name__
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        where = f" writing {err.filename}" if err.filename else ""
        text = (f"no space left on device{where}: free space there or point --out / TMPDIR elsewhere; "
                "nothing incomplete was published")
    elif isinstance(err, MemoryError):
        text = "out of memory: use a smaller profile or fewer sim.num_workers"
    return text


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("OpenGL").setLevel(logging.WARNING)  # PyOpenGL chatters at interpreter shutdown
    from vla_rft import storage
    from vla_rft.data.schema import DatasetValidationError
    from vla_rft.defaults import params_path, uses_packaged_defaults

    if hasattr(args, "params") and args.params is None:
        if uses_packaged_defaults():
            print("vla-rft: no params.yaml in this directory: using the defaults shipped with the package "
                  "(`vla-rft params > params.yaml` writes them out to edit)", file=sys.stderr)
        args.params = str(params_path())
    from vla_rft.errors import CompatibilityError, StageError

    expected = (ConfigError, CompatibilityError, DatasetValidationError, storage.StorageError, StageError,
                ValueError, OSError, MemoryError)
    try:
        if getattr(args, "summary_json", None):  # refused now, not after the stage has done its work
            _check_summary_path(Path(args.summary_json))
        ckpt = getattr(args, "checkpoint_dir", None)
        if ckpt and Path(ckpt).exists() and not Path(ckpt).is_dir():
            raise ConfigError(f"--checkpoint-dir {ckpt} is a file, not a directory")
        return args.func(args)
    except Exception as err:  # noqa: BLE001 - every stage failure ends in one named line, not a stack trace
        # (-v logs the traceback)
        log.debug("traceback", exc_info=True)
        name = type(err).__name__
        hint = "" if isinstance(err, expected) else " (unexpected; run with -v for the traceback)"
        print(f"vla-rft {args.command}: error ({name}): {_one_line(err)}{hint}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

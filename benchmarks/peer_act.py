"""Peer baseline: LeRobot's ACT policy on our data, in our real-simulator evaluation.

ACT (Zhao et al., "Learning Fine-Grained Bimanual Manipulation with Low-Cost Hardware", 2023) as
lerobot 0.4.4 ships it: its ``ACTConfig``/``ACTPolicy``, its pre/post-processors (normalisation from
the dataset's stats.json) and its training step (``lerobot_train.update_policy`` under ``accelerate``),
trained on our dataset exported to LeRobot v3.0 and read by ``LeRobotDataset``. The ResNet-18 backbone
starts from scratch (``pretrained_backbone_weights=None``: no weights can be downloaded). ACT reads the
image and the proprioception, not the instruction (it has no language input); Meta-World's scenes tell
the tasks apart. It learns the clean ``expert_action`` labels, as our BC does.

    .venv/bin/python benchmarks/peer_act.py --profile quick --dataset runs/quick/dataset \\
        --base-policy runs/quick/policy_bc --work runs/peer_act_quick

1. exports the dataset to ``<work>/lerobot`` (skipped when there);
2. trains ACT for the base policy's BC wall time at the same torch thread count (read from the base
   policy's ``bc_summary.json``; ``--budget-seconds`` overrides) on the train episodes;
3. evaluates ACT and the base policy in one ``run_evaluation`` call, so both face the same seeded
   episodes of every suite in ``evaluate`` (the scripted expert as the reference); with
   ``--base-evaluation EVAL`` (the pipeline's evaluation) only ACT runs and base and expert come
   from EVAL, after checking that it ran these episodes on this base policy;
4. writes ``<work>/peer_act.json``: success per suite for both, ACT's training steps, wall and CPU
   seconds, parameter count, final loss.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before anything imports huggingface_hub
os.environ.setdefault("MUJOCO_GL", "osmesa")

from vla_rft import stages, storage  # noqa: E402
from vla_rft.config import load_config  # noqa: E402
from vla_rft.tasks import TASKS  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--params", default=str(ROOT / "params.yaml"))
    p.add_argument("--profile", default="quick")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--dataset", required=True, help="our dataset artifact (the one the base policy learned from)")
    p.add_argument("--base-policy", required=True, help="our BC policy: its BC time is the budget")
    p.add_argument("--work", required=True, help="export, checkpoint-free training and results go here")
    p.add_argument("--base-evaluation", default=None,
                    help="an evaluation artifact that holds --base-policy (as 'base') and the expert on this "
                         "profile's episodes, e.g. the pipeline's: only ACT is evaluated then (checked: same "
                         "evaluate and sim settings, same base policy content)")
    p.add_argument("--budget-seconds", type=float, default=None, help="default: the base policy's BC seconds")
    p.add_argument("--max-steps", type=int, default=100_000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-4, help="ACT's preset is 1e-5 for fine-tuning; from scratch 1e-4")
    p.add_argument("--dim-model", type=int, default=256)
    p.add_argument("--dim-feedforward", type=int, default=1024)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def train_act(args, cfg, export_dir: Path, budget: float) -> tuple[object, object, object, dict]:
    import torch
    from torch.utils.data import DataLoader

    from vla_rft.data.lerobot import prepare_lerobot_import

    prepare_lerobot_import()
    from accelerate import Accelerator
    from lerobot.configs.types import FeatureType
    from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata
    from lerobot.datasets.utils import dataset_to_policy_features
    from lerobot.policies.act.configuration_act import ACTConfig
    from lerobot.policies.act.modeling_act import ACTPolicy
    from lerobot.policies.act.processor_act import make_act_pre_post_processors
    from lerobot.scripts.lerobot_train import update_policy
    from lerobot.utils.logging_utils import AverageMeter, MetricsTracker

    torch.manual_seed(args.seed)
    torch.set_num_threads(cfg.common.num_threads)  # what the base policy's BC ran with
    k = cfg.common.chunk_len
    meta = LeRobotDatasetMetadata("vla-rft/peer-act", root=export_dir)
    features = dataset_to_policy_features(meta.features)
    outputs = {key: ft for key, ft in features.items() if ft.type is FeatureType.ACTION}
    inputs = {key: ft for key, ft in features.items() if key not in outputs}
    config = ACTConfig(
        input_features=inputs, output_features=outputs, chunk_size=k, n_action_steps=k, device="cpu",
        pretrained_backbone_weights=None, dim_model=args.dim_model, dim_feedforward=args.dim_feedforward,
        optimizer_lr=args.lr, optimizer_lr_backbone=args.lr,
    )
    train_eps = [int(i) for i, s in zip(meta.episodes["episode_index"], meta.episodes["split"]) if s == "train"]
    dataset = LeRobotDataset("vla-rft/peer-act", root=export_dir, episodes=train_eps,
                             delta_timestamps={"expert_action": [i / meta.fps for i in range(k)]})
    stats = {key: dict(value) for key, value in meta.stats.items()}
    stats["action"] = stats["expert_action"]  # the labels ACT learns, normalised by their own statistics
    preprocessor, postprocessor = make_act_pre_post_processors(config, dataset_stats=stats)
    policy = ACTPolicy(config)
    optimizer = config.get_optimizer_preset().build(policy.get_optim_params())
    accelerator = Accelerator(cpu=True)
    policy, optimizer = accelerator.prepare(policy, optimizer)
    tracker = MetricsTracker(args.batch_size, dataset.num_frames, dataset.num_episodes,
                             {"loss": AverageMeter("loss", ":.3f"), "grad_norm": AverageMeter("grdn", ":.3f"),
                              "lr": AverageMeter("lr", ":0.1e"), "update_s": AverageMeter("updt_s", ":.3f")})
    generator = torch.Generator().manual_seed(args.seed)
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True, drop_last=True, generator=generator)

    wall0, cpu0, step, losses = time.perf_counter(), time.process_time(), 0, []
    while step < args.max_steps and time.perf_counter() - wall0 < budget:
        for batch in loader:
            batch["action"], batch["action_is_pad"] = batch.pop("expert_action"), batch.pop("expert_action_is_pad")
            tracker, _ = update_policy(tracker, policy, preprocessor(batch), optimizer, 10.0, accelerator)
            losses.append(tracker.loss.val)
            step += 1
            if step % 50 == 0:
                print(f"peer_act: step {step}, loss {np.mean(losses[-50:]):.4f}, "
                      f"{time.perf_counter() - wall0:.0f}/{budget:.0f} s", flush=True)
            if step >= args.max_steps or time.perf_counter() - wall0 >= budget:
                break
    policy = accelerator.unwrap_model(policy)
    policy.eval()
    summary = {
        "steps": step, "wall_seconds": round(time.perf_counter() - wall0, 2),
        "cpu_seconds": round(time.process_time() - cpu0, 2), "torch_threads": cfg.common.num_threads,
        "final_loss": float(np.mean(losses[-50:])) if losses else None,
        "num_parameters": sum(p.numel() for p in policy.parameters() if p.requires_grad),
        "train_episodes": len(train_eps), "batch_size": args.batch_size, "lr": args.lr, "chunk_size": k,
        "dim_model": args.dim_model, "dim_feedforward": args.dim_feedforward, "backbone": config.vision_backbone,
        "pretrained_backbone_weights": None, "labels": "expert_action",
    }
    return policy, preprocessor, postprocessor, summary


def reused_results(args, cfg, base_manifest: dict, work: Path) -> list:
    """Base and expert outcomes from ``--base-evaluation``, refused unless they are this run's episodes
    and this base policy."""
    import csv

    from vla_rft.evaluation.configuration import Suite
    from vla_rft.evaluation.runner import EpisodeResult, EvalResults
    from vla_rft.registry import content_hash

    eval_dir, manifest = storage.read_artifact(args.base_evaluation, expected_kind="evaluation",
                                               cache_dir=work / "cache")
    rec = manifest["config"]
    for key, mine in (("evaluate", cfg.section("evaluate")), ("sim", cfg.section("sim")),
                      ("chunk_len", cfg.common.chunk_len)):
        if rec.get(key) != mine:
            raise SystemExit(f"--base-evaluation {args.base_evaluation}: its {key} settings differ from this "
                             f"run's ({rec.get(key)!r} vs {mine!r}): not the same episodes")
    base = rec.get("evaluated", {}).get("base")
    if not base or base["content_sha256"] != content_hash(base_manifest):
        raise SystemExit(f"--base-evaluation {args.base_evaluation}: its 'base' is not {args.base_policy}")
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    with open(eval_dir / "episodes.csv") as fh:
        rows = list(csv.DictReader(fh))
    suites = [Suite(**x) for x in metrics["suites"]]
    out = []
    for name in ("base", "expert"):
        m = metrics["policies"][name]
        eps = [EpisodeResult(r["suite"], r["task"], int(r["episode"]), int(r["seed"]), r["success"] == "1",
                             int(r["steps"]), int(r["steps_to_success"]) if r["steps_to_success"] else None, [])
               for r in rows if r["policy"] == name]
        na = [(s, t) for s, cells in m["cells"].items() for t, c in cells.items() if not c["applicable"]]
        out.append(EvalResults(name, list(metrics["tasks"]), suites, eps, na, [], m["episodes_per_task"],
                               m["max_episode_steps"], m["seed_base"], m["chunk_len"], m["seconds"],
                               nominal_episodes_per_task=m.get("nominal_episodes_per_task", 0)))
    return out


def act_actor(policy, preprocessor, postprocessor, camera_key: str):
    """Our evaluation's ``act(frames, states, task_index) -> (B, K, A)`` around ACT (the task is not an input)."""
    import torch

    def act(frames: np.ndarray, states: np.ndarray, task_index: np.ndarray) -> np.ndarray:
        images = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0
        obs = {camera_key: images, "observation.state": torch.as_tensor(np.asarray(states, np.float32))}
        with torch.no_grad():
            chunk = postprocessor(policy.predict_action_chunk(preprocessor(obs)))
        return chunk.float().numpy()

    return act


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = load_config(args.params, args.profile, args.overrides)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    export_dir = work / "lerobot"
    if not (export_dir / "meta" / "info.json").exists():
        print(f"peer_act: exporting {args.dataset} to {export_dir}")
        stages.export_lerobot(cfg, args.dataset, str(export_dir))
    base_dir, base_manifest = storage.read_artifact(args.base_policy, expected_kind="policy", cache_dir=work / "cache")
    reused = reused_results(args, cfg, base_manifest, work) if args.base_evaluation else None
    bc = json.loads((base_dir / "bc_summary.json").read_text())
    budget = args.budget_seconds if args.budget_seconds is not None else float(bc["seconds"])
    print(f"peer_act: training ACT for {budget:.1f} s (base BC: {bc['seconds']} s, {bc['steps']} steps)")
    policy, pre, post, train = train_act(args, cfg, export_dir, budget)
    info = json.loads((export_dir / "meta" / "info.json").read_text())
    camera = next(k for k, ft in info["features"].items() if ft["dtype"] == "image")

    import torch

    from vla_rft.evaluation.metrics import compute_metrics
    from vla_rft.evaluation.runner import run_evaluation
    from vla_rft.policy.modeling import VLAPolicy

    torch.set_num_threads(1)  # as stages.evaluate: the simulator workers own the cores
    base = VLAPolicy.from_pretrained(base_dir, device="cpu")
    order = np.asarray([base.instructions.index(TASKS[t].instruction) for t in cfg.sim.tasks])
    acts = {"base": lambda f, s, ti: base.act(f, s, order[ti]), "act": act_actor(policy, pre, post, camera)}
    if reused:
        acts = {"act": acts["act"]}
    start = time.time()
    results = run_evaluation(acts, cfg.sim.tasks, cfg.evaluate, cfg.sim, chunk_len=cfg.common.chunk_len,
                             progress=sys.stderr.isatty(), expert=not reused)
    metrics = compute_metrics([*results, *(reused or [])], comparisons=[("act", "base")])
    row = {
        "profile": cfg.profile, "dataset": args.dataset, "base_policy": args.base_policy,
        "tasks": list(cfg.sim.tasks), "episodes_per_task": cfg.evaluate.episodes_per_task,
        "suites": [s["name"] for s in metrics["suites"]],
        "success": {name: {"overall": m["overall"], "suites": {s: v["success_rate"] for s, v in m["suites"].items()}}
                    for name, m in metrics["policies"].items()},
        "gain_act_vs_base": metrics["comparisons"][0]["gain"],
        "act_train": train,
        "base_train": {k: bc.get(k) for k in ("steps", "seconds", "num_parameters")},
        "evaluation_seconds": round(time.time() - start, 1),
        "nominal_episodes_per_task": cfg.evaluate.nominal_episodes,
        "base_evaluation": args.base_evaluation,  # base and expert outcomes came from there (None: run here)
    }
    (work / "peer_act.json").write_text(json.dumps(row, indent=2))
    for name in ("act", "base", "expert"):
        o = row["success"][name]["overall"]
        print(f"peer_act: {name:>6}: nominal {o['nominal']:.1%}, perturbed "
              f"{'n/a' if o.get('perturbed') is None else format(o['perturbed'], '.1%')}")
    print(f"peer_act: ACT {train['num_parameters']:,} parameters, {train['steps']} steps in {train['wall_seconds']} s "
          f"(base {bc.get('num_parameters'):,} parameters, {bc['steps']} steps in {bc['seconds']} s) -> "
          f"{work / 'peer_act.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Can a frame show the task's success at all? The success model on the same episodes, seen through other views.

Episode-mode RFT rewards what the judge reads from a frame. On the MT10 chain its val AUC on *real*
frames is 0.83 for reach and 0.82 for pick-place (0.97-1.00 on the tasks the policy already
solves), before any world model is involved: in a 64 px frame from the corner camera, a goal that
floats in the air is at an unknown depth. This script asks whether resolution or viewpoint is the
limit. Every recorded episode of the chosen tasks (expert data and policy rollouts, failures kept)
is replayed in the simulator from its own reset with its own executed actions and rendered through
each view (``vla_rft.sim.rerender``: the same trajectories, states and success flags; replayed flags
are checked step by step against the recorded ones). A judge is trained on each view's real frames
only (``success_model.imagined_steps=0``, every other setting the profile's), and its val AUC and
its recall at the calibrated precision are reported per task:

    .venv/bin/python benchmarks/judge_views.py --dataset runs/cl/dataset --dataset runs/cl/rollouts \\
        --work runs/judge_views --views corner@64,corner@128,topview@64,corner3@64 \\
        --tasks reach,push,pick-place,peg-insert-side --seeds 0,1,2 --out benchmarks/results/judge_views_mt10.md

Resumable: rendered frames and each judge's numbers are files under ``--work``; nothing finished is rerun.
Writes ``--out`` (markdown) and its ``.json`` after every view.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from headline import _log, write_result  # noqa: E402


def parse_view(text: str) -> tuple[list[str], int]:
    """``camera@size`` or ``camera+camera@size`` (frames side by side) -> (cameras, size)."""
    cameras, sep, size = text.partition("@")
    if not sep or not size.isdigit() or not all(cameras.split("+")):
        raise SystemExit(f"a view is camera@size or camera+camera@size, e.g. corner@64; got {text!r}")
    return cameras.split("+"), int(size)


_DATA = None  #: the datasets, loaded once per re-rendering process (:func:`_load`)


def _load(paths: list[str]) -> None:
    import os

    os.environ.setdefault("MUJOCO_GL", "osmesa")
    from vla_rft.data import concat_datasets, load_dataset

    global _DATA
    _DATA = concat_datasets([load_dataset(p) for p in paths])


def _rerender_task(job):
    from vla_rft.sim.rerender import rerender

    task, camera, size, marker = job
    out = rerender(_DATA, image_size=size, camera=camera, goal_marker_scale=marker, tasks=[task])
    return out.data, out.mismatched_steps, out.mismatched_episodes


def render_camera(args, cfg, camera: str, size: int, tasks: list[str], workers: int):
    """The chosen tasks' episodes through one camera: (dataset, frames, mismatched steps, episodes, rendered now).
    Frames and mismatch counts are cached under ``--work`` and reused by later views."""
    import numpy as np

    from vla_rft.data import concat_datasets, load_dataset
    from vla_rft.sim.rerender import select_tasks

    cache = Path(args.work) / "frames" / f"{camera}@{size}-{'-'.join(tasks)}"
    if cache.with_suffix(".json").exists():
        full = concat_datasets([load_dataset(p) for p in args.dataset])
        data = concat_datasets([select_tasks(full, [t]) for t in tasks])  # the order the jobs below give
        counts = json.loads(cache.with_suffix(".json").read_text())
        if counts.get("datasets", list(args.dataset)) != list(args.dataset):
            raise SystemExit(f"{cache}.npy holds frames of {counts['datasets']}, not {args.dataset}: use another --work")
        frames = np.load(cache.with_suffix(".npy"))
        if len(frames) != len(data.images):
            raise SystemExit(f"{cache}.npy holds {len(frames)} frames, the datasets {len(data.images)}: use another --work")
        return data, frames, counts["steps"], counts["episodes"], False
    jobs = [(t, camera, size, cfg.sim.goal_marker_scale) for t in tasks]
    if workers > 1:
        with multiprocessing.get_context("spawn").Pool(workers, initializer=_load, initargs=(args.dataset,)) as pool:
            parts = pool.map(_rerender_task, jobs)
    else:
        _load(args.dataset)
        parts = [_rerender_task(j) for j in jobs]
    data = concat_datasets([p[0] for p in parts])
    steps, episodes = sum(p[1] for p in parts), sum(p[2] for p in parts)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache.with_suffix(".npy"), data.images)
    cache.with_suffix(".json").write_text(json.dumps({"steps": steps, "episodes": episodes,  # last: marks it done
                                                      "datasets": list(args.dataset)}))
    return data, data.images, steps, episodes, True


def view_data(args, cfg, cameras: list[str], size: int, tasks: list[str], workers: int):
    """The chosen tasks' episodes through ``cameras`` (several: frames side by side), and how the replay went."""
    from dataclasses import replace

    import numpy as np

    t0 = time.time()
    frames, mismatched_steps, mismatched_episodes, rendered = [], 0, 0, True
    for camera in cameras:
        data, images, steps, episodes, now = render_camera(args, cfg, camera, size, tasks, workers)
        frames.append(images)
        rendered &= now
        mismatched_steps, mismatched_episodes = mismatched_steps + steps, mismatched_episodes + episodes
    data = replace(data, images=np.concatenate(frames, axis=2))
    render_s = time.time() - t0
    _log(f"{'+'.join(cameras)}@{size}: {len(data.images)} frames of {len(data.episodes)} episodes in {render_s:.0f} s; "
         f"replayed success flags differ on {mismatched_steps} steps")
    return data, {"episodes": len(data.episodes), "frames": int(len(data.images)), "mismatched_steps": mismatched_steps,
                  "mismatched_episodes": mismatched_episodes, "render_s": round(render_s, 1) if rendered else None}


def train_judge(cfg, data, work: Path, seed: int) -> dict:
    """One judge on ``data``'s real frames with ``common.seed`` = ``seed``; its val numbers per task."""
    from dataclasses import replace

    import torch

    from vla_rft.success.train import train_success_model

    torch.set_num_threads(cfg.common.num_threads)
    sub = work if seed == 0 else work / f"s{seed}"
    t0 = time.time()
    summary = train_success_model(cfg.success_model, replace(cfg.common, seed=seed), data, sub / "model", sub / "ckpt",
                                  resume=True, progress=False)
    cal = summary["calibration"]
    names = [data.tasks[i] for i in sorted({int(e["task_index"]) for e in data.episodes})]
    return {
        "seed": seed, "tasks": names, "val_frames": cal["val_frames"], "val_positive_frames": cal["val_positive_frames"],
        "train_s": round(time.time() - t0, 1), "auc": cal["auc"]["all"],
        "auc_per_task": {t: cal["auc_per_task"][t] for t in names},
        "recall_per_task": {t: cal["per_task_calibration"][t]["recall"] for t in names},
        "precision_reached": {t: not cal["per_task_calibration"][t]["fallback"] for t in names},
        "target_precision": cal["target_precision"],
    }


def _spread(values: list[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    mean = sum(values) / len(values)
    return f"{mean:.3f}" if len(values) == 1 else f"{mean:.3f} ({min(values):.2f}-{max(values):.2f})"


def render(result: dict) -> str:
    views = result["views"]
    first = views[0]["seeds"][0] if views else {"target_precision": 0.95}
    lines = ["# Success-model AUC by view: can the frame show success?", "",
             f"Generated by `{result['command']}` on {result['date']} ({result['platform']}).", "",
             "The same recorded episodes (expert data and policy rollouts, failures kept) replayed in the simulator "
             "and rendered through each view (`a+b`: the two cameras' frames side by side); judges trained on each "
             "view's real frames only (no world model), one per seed (`common.seed`: init and batches). Per task: "
             "val frame AUC, mean over seeds (lowest-highest); then the share of seeds whose judge reaches precision "
             f"{first['target_precision']} on that task's val frames at some threshold, and its mean recall there.", ""]
    if not views:
        return "\n".join(lines + ["No view finished yet."]) + "\n"
    tasks = first["tasks"]
    lines += ["| view | seeds | frames | replay mismatches (steps) | " + " | ".join(tasks)
              + " | all tasks | render s | train s per seed |", "|---" * (len(tasks) + 7) + "|"]
    for v in views:
        runs = v["seeds"]
        cells = []
        for t in tasks:
            ok = [r["recall_per_task"][t] for r in runs if r["precision_reached"][t]]
            cells.append(f"{_spread([r['auc_per_task'][t] for r in runs])}; {len(ok)}/{len(runs)}"
                         + (f" at recall {sum(ok) / len(ok):.2f}" if ok else ""))
        lines.append(f"| {v['view']} | {len(runs)} | {v['frames']} | {v['mismatched_steps']} | " + " | ".join(cells)
                     + f" | {_spread([r['auc'] for r in runs])} | {'n/a' if v['render_s'] is None else round(v['render_s'])} | "
                     f"{sum(r['train_s'] for r in runs) / len(runs):.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", action="append", required=True, help="a recorded dataset (repeatable)")
    ap.add_argument("--work", default="runs/judge_views")
    ap.add_argument("--views", default="corner@64,corner@128,topview@64,corner3@64")
    ap.add_argument("--tasks", default="reach,push,pick-place,peg-insert-side")
    ap.add_argument("--profile", default="standard")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    ap.add_argument("--seeds", default="0,1,2", help="one judge per seed (common.seed) on each view's frames")
    ap.add_argument("--workers", type=int, default=2, help="processes re-rendering (one task each at a time)")
    ap.add_argument("--out", default="benchmarks/results/judge_views.md")
    args = ap.parse_args()

    from vla_rft.config import load_config

    cfg = load_config(str(ROOT / "params.yaml"), profile=args.profile,
                      overrides=["success_model.imagined_steps=0", *args.overrides])
    tasks = [t for t in args.tasks.split(",") if t]
    result = {"command": "benchmarks/judge_views.py " + " ".join(sys.argv[1:]),
              "date": time.strftime("%Y-%m-%d"), "platform": platform.platform(), "views": []}
    seeds = [int(x) for x in args.seeds.split(",") if x]
    for text in [v for v in args.views.split(",") if v]:
        cameras, size = parse_view(text)
        name = f"{'+'.join(cameras)}@{size}"
        view_json = Path(args.work) / f"{name}.view.json"
        data = None
        runs = []
        for seed in seeds:
            cache = Path(args.work) / (f"{name}.json" if seed == 0 else f"{name}_s{seed}.json")
            if cache.exists():
                _log(f"{name}, seed {seed}: reusing {cache}")
                run = {"seed": seed, "overrides": [], **json.loads(cache.read_text())}
                if run["overrides"] != args.overrides:
                    raise SystemExit(f"{cache} was trained with --set {run['overrides']}, not {args.overrides}: "
                                     "use another --work")
                runs.append(run)
                continue
            if data is None:
                data, stats = view_data(args, cfg, cameras, size, tasks, args.workers)
                if stats["render_s"] is not None or not view_json.exists():  # a time only when rendered now
                    view_json.write_text(json.dumps(stats, indent=2))
            run = {**train_judge(cfg, data, Path(args.work) / name, seed), "overrides": args.overrides}
            tmp = cache.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(run, indent=2))
            tmp.replace(cache)
            runs.append(run)
        keys = ("episodes", "frames", "render_s", "mismatched_steps", "mismatched_episodes")
        stats = json.loads(view_json.read_text()) if view_json.exists() else {}
        if "render_s" in runs[0] and not stats.get("render_s"):  # a seed-0 result from before seeds kept these
            stats = {k: runs[0][k] for k in keys}
        result["views"].append({"view": name, "cameras": cameras, "image_size": size, **stats, "seeds": runs})
        write_result(Path(args.out), result, render)

if __name__ == "__main__":
    main()

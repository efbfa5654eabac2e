"""Train the success model on real frames (or, ``input: state``, real proprio + environment states)
labelled by the simulator, calibrate its threshold.

Frame ``t`` of an episode shows the scene after action ``t-1``, so its label is that action's
``next.success`` flag (the reset frame is a failure). Batches are half positive, half negative
frames of the train split, drawn from ``(seed, step)`` only; a checkpoint holds the model, the
optimiser, the RNGs and the curve, so a resumed run ends with the same weights. The threshold
is calibrated and the AUC measured on the val split's episodes (never trained on).

    from vla_rft.success.train import train_success_model
    summary = train_success_model(cfg.success_model, cfg.common, data, out_dir, ckpt_dir)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vla_rft.checkpointing import load_checkpoint, save_checkpoint
from vla_rft.config import CommonConfig
from vla_rft.data import LoadedDataset
from vla_rft.success.configuration import SuccessModelConfig
from vla_rft.success.modeling import SuccessModel
from vla_rft.training import decay_param_groups, write_curves

CHECKPOINT_NAME = "success_model_checkpoint.safetensors"
CURVE_FIELDS = ("step", "loss", "accuracy", "seconds")
_STREAM = 401


def frame_labels(data: LoadedDataset, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``split`` and their labels: row t is a success if the action before it succeeded."""
    rows, labels = [], []
    for ep in data.episodes_in(split):
        lo, hi = ep["dataset_from_index"], ep["dataset_to_index"]
        rows.append(np.arange(lo, hi))
        labels.append(np.concatenate([[False], data.successes[lo:hi - 1].astype(bool)]))
    if not rows:
        return np.zeros(0, np.int64), np.zeros(0, bool)
    return np.concatenate(rows), np.concatenate(labels)


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney U with tied ranks averaged); None with one class only."""
    labels = np.asarray(labels, bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), np.float64)
    sorted_scores = np.asarray(scores)[order]
    i = 0
    while i < len(scores):  # average ranks over ties
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def threshold_stats(probs: np.ndarray, labels: np.ndarray, th: float) -> dict[str, float]:
    """Precision, recall and balanced accuracy of ``probs >= th`` (both classes present)."""
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels, bool)
    pred = probs >= th
    tp, fp = int((pred & labels).sum()), int((pred & ~labels).sum())
    tpr, tnr = tp / labels.sum(), int((~pred & ~labels).sum()) / (~labels).sum()
    return {"precision": tp / (tp + fp) if tp + fp else 1.0, "recall": float(tpr),
            "balanced_accuracy": float((tpr + tnr) / 2)}


def calibrate_threshold(probs: np.ndarray, labels: np.ndarray, rule: str, target_precision: float) -> dict[str, Any]:
    """The decision threshold on held-out probabilities, and what it achieves there.

    ``precision``: the lowest candidate threshold whose precision is >= ``target_precision`` (more
    recall at the required precision); when no threshold reaches it, the balanced-accuracy one
    is taken and ``fallback`` says so. ``balanced_accuracy``: argmax of (TPR + TNR) / 2.
    """
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels, bool)
    if rule not in ("precision", "balanced_accuracy"):
        raise ValueError(f"unknown threshold rule {rule!r}; allowed: precision, balanced_accuracy")
    if labels.all() or not labels.any():
        return {"threshold": 0.5, "rule": rule, "fallback": "val frames hold one class only: threshold 0.5"}
    candidates = np.unique(probs)
    table = [(float(th), threshold_stats(probs, labels, th)) for th in candidates]
    best_ba = max(table, key=lambda r: (r[1]["balanced_accuracy"], r[0]))
    out: dict[str, Any] = {"rule": rule, "fallback": None}
    if rule == "precision":
        ok = [r for r in table if r[1]["precision"] >= target_precision and r[1]["recall"] > 0]
        if ok:
            th, s = min(ok, key=lambda r: r[0])
        else:
            th, s = best_ba
            out["fallback"] = f"no threshold reaches precision {target_precision}: balanced-accuracy threshold"
    else:
        th, s = best_ba
    return {**out, "threshold": th, **s, "target_precision": target_precision}


def calibrate_per_task(probs: np.ndarray, labels: np.ndarray, task_index: np.ndarray, tasks: list[str], rule: str,
                       target_precision: float, global_threshold: float) -> dict[str, dict[str, Any]]:
    """A threshold per task, by :func:`calibrate_threshold` on that task's frames alone.

    One global threshold is set by the tasks whose frames the judge scores highest: a task whose
    successful frames never reach it is never rewarded, however well the judge ranks its frames.
    A task whose frames hold one class only, or none of whose thresholds reaches the precision,
    keeps ``global_threshold`` (``fallback`` says why), never a laxer one.
    """
    probs, labels, task_index = np.asarray(probs, np.float64), np.asarray(labels, bool), np.asarray(task_index)
    out = {}
    for t, name in enumerate(tasks):
        p, y = probs[task_index == t], labels[task_index == t]
        c = calibrate_threshold(p, y, rule, target_precision)
        c.update({"frames": int(len(y)), "positive_frames": int(y.sum())})
        if c["fallback"]:
            c.update({"fallback": f"{c['fallback']}; the global threshold is kept", "threshold": float(global_threshold)})
            if y.any() and not y.all():  # what the kept threshold achieves on this task
                c.update(threshold_stats(p, y, global_threshold))
        out[name] = c
    return out


def imagined_summary(imagined, imagined_val, probs: np.ndarray, data: LoadedDataset) -> dict[str, Any]:
    """How well the judge reads the world model's frames of the val episodes' replays: frame AUC
    (all, per source, per task) and episode AUC (the highest probability of a reset-frame replay
    against whether the recorded episode succeeded within the replayed chunks)."""
    sources = np.array([data.episodes[int(e)].get("source", "expert") for e in imagined_val.episode])
    labels = imagined_val.labels
    reset = imagined_val.start == 0
    eps = np.unique(imagined_val.episode[reset])
    ep_max = np.array([probs[reset & (imagined_val.episode == e)].max() for e in eps])
    ep_real = np.array([labels[reset & (imagined_val.episode == e)].any() for e in eps])
    return {
        "train_frames": int(len(imagined)), "train_positive_frames": int(imagined.labels.sum()),
        "val_frames": int(len(labels)), "val_positive_frames": int(labels.sum()),
        "frame_auc": roc_auc(probs, labels),
        **{f"frame_auc_source_{s}": roc_auc(probs[sources == s], labels[sources == s]) for s in sorted(set(sources))},
        "frame_auc_per_task": {name: roc_auc(probs[imagined_val.task_index == t], labels[imagined_val.task_index == t])
                               for t, name in enumerate(data.tasks)},
        "episodes": int(len(eps)), "episode_auc": roc_auc(ep_max, ep_real),
    }


def _balanced_batch(rng: np.random.Generator, pos: np.ndarray, neg: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    half = size // 2
    rows = np.concatenate([rng.choice(pos, half), rng.choice(neg, size - half)])
    return rows, np.concatenate([np.ones(half, np.float32), np.zeros(size - half, np.float32)])


def train_success_model(cfg: SuccessModelConfig, common: CommonConfig, data: LoadedDataset, out_dir: Path,
                        checkpoint_dir: Path, resume: bool = False, progress: bool = True, world_model=None,
                        horizon: int = 12) -> dict[str, Any]:
    """Train on the train split's frames, calibrate on val, save model + calibration + curves to ``out_dir``.

    With ``cfg.imagined_steps`` > 0, ``world_model`` replays the recorded episodes for up to
    ``horizon`` chunks (:mod:`vla_rft.success.imagined`); the last ``imagined_steps`` steps train on
    a mix of those imagined frames and real ones, and the threshold is calibrated on the val
    episodes' imagined frames, the kind RFT asks the judge about.
    """
    from tqdm.auto import tqdm

    from vla_rft.success.imagined import replay_frames

    out_dir, checkpoint_dir = Path(out_dir), Path(checkpoint_dir)
    torch.set_num_threads(common.num_threads)
    torch.manual_seed(common.seed)
    np.random.seed(common.seed % 2**32)
    device = torch.device(common.device)
    cfg.check_trainable()
    rows, labels = frame_labels(data, "train")
    pos, neg = rows[labels], rows[~labels]
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError(f"the train split has {len(pos)} success and {len(neg)} failure frames; the success "
                         "model needs both (record episodes that reach success, and keep post-success steps)")
    imagined = imagined_val = None
    if cfg.imagined_steps:
        if world_model is None:
            raise ValueError(f"success_model.imagined_steps is {cfg.imagined_steps}: pass the world model whose "
                             "frames the judge will score (train-success-model --world-model)")
        imagined = replay_frames(world_model, data, "train", horizon=horizon,
                                 keyframes_per_episode=cfg.imagined_keyframes, seed=common.seed)
        imagined_val = replay_frames(world_model, data, "val", horizon=horizon,
                                     keyframes_per_episode=cfg.imagined_keyframes, seed=common.seed)
        if imagined.labels.all() or not imagined.labels.any() or not len(imagined_val):
            raise ValueError(f"the imagined replays hold {int(imagined.labels.sum())} success and "
                             f"{int((~imagined.labels).sum())} failure frames on train, {len(imagined_val)} frames "
                             "on val; fine-tuning on them needs both classes on train and some val frames")
        im_rows = np.arange(len(imagined))
        im_pos, im_neg = im_rows[imagined.labels], im_rows[~imagined.labels]
        im_task = torch.from_numpy(imagined.task_index)
        n_imagined = max(1, round(cfg.batch_size * cfg.imagined_share))
    total = cfg.steps + cfg.imagined_steps
    if cfg.input == "state":  # row t's state is the scene frame t shows: the same labels
        if data.env_states is None:
            raise ValueError(f"{data.root}: success_model.input=state needs the column 'observation.environment_state', "
                             "which this dataset does not record (record it anew with prepare-data / collect-rollouts)")
        inputs = torch.from_numpy(np.concatenate([data.states, data.env_states], 1).astype(np.float32))
        model = SuccessModel(cfg, image_size=data.image_size, tasks=data.tasks, state_dim=inputs.shape[1]).to(device)
        model.set_state_normalization(inputs[rows].mean(0), inputs[rows].std(0))
    else:
        inputs = torch.from_numpy(np.ascontiguousarray(data.images.transpose(0, 3, 1, 2)))  # what the judge reads, by row
        model = SuccessModel(cfg, image_size=data.image_size, tasks=data.tasks).to(device)
    optimizer = torch.optim.AdamW(decay_param_groups(model, cfg.weight_decay), lr=cfg.lr)
    task_index = torch.from_numpy(data.task_index)
    ckpt_path = checkpoint_dir / CHECKPOINT_NAME
    step, curve, elapsed = 0, [], 0.0
    if resume and ckpt_path.exists():
        meta = load_checkpoint(ckpt_path, model, optimizer)
        step, curve, elapsed = meta["step"], meta["curves"], meta["seconds"]
    model.train()
    t0 = time.time()
    acc = {"loss": 0.0, "accuracy": 0.0, "n": 0}
    bar = tqdm(total=total, initial=step, desc="success-model", leave=False,
               disable=not progress or not sys.stderr.isatty())
    while step < total:
        rng = np.random.default_rng([common.seed, _STREAM, step])
        if step < cfg.steps:
            batch_rows, y = _balanced_batch(rng, pos, neg, cfg.batch_size)
            logits = model(inputs[batch_rows], task_index[batch_rows])
        else:  # the imagined phase: imagined frames, and real ones so the real-frame skill is kept
            im_batch, y_im = _balanced_batch(rng, im_pos, im_neg, n_imagined)
            batch_rows, y_real = _balanced_batch(rng, pos, neg, cfg.batch_size - n_imagined)
            y = np.concatenate([y_im, y_real])
            logits = model(torch.cat([imagined.frames[im_batch], inputs[batch_rows]]),
                           torch.cat([im_task[im_batch], task_index[batch_rows]]))
        target = torch.from_numpy(y).to(device)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        step += 1
        acc = {"loss": acc["loss"] + float(loss.detach()),
               "accuracy": acc["accuracy"] + float(((logits.detach() > 0).float() == target).float().mean()),
               "n": acc["n"] + 1}
        if step % cfg.log_interval == 0 or step == total:
            curve.append({"step": step, "loss": acc["loss"] / acc["n"], "accuracy": acc["accuracy"] / acc["n"],
                          "seconds": round(elapsed + time.time() - t0, 3)})
            acc = {"loss": 0.0, "accuracy": 0.0, "n": 0}
        if cfg.checkpoint_interval and (step % cfg.checkpoint_interval == 0 or step == total):
            save_checkpoint(ckpt_path, model, optimizer, {"step": step, "curves": curve,
                                                          "seconds": elapsed + time.time() - t0})
        bar.update(1)
    bar.close()
    model.eval()

    val_rows, val_labels = frame_labels(data, "val")
    if len(val_rows) == 0:
        raise ValueError("the dataset has no val episodes: the success threshold cannot be calibrated")
    probs = model.probability(inputs[val_rows], task_index[val_rows]).cpu().numpy()
    if imagined_val is None:
        cal_probs, cal_labels, cal_tasks = probs, val_labels, data.task_index[val_rows]
        calibration = {"calibrated_on": "real val frames"}
    else:
        im_probs = model.probability(imagined_val.frames, torch.from_numpy(imagined_val.task_index)).cpu().numpy()
        cal_probs, cal_labels, cal_tasks = im_probs, imagined_val.labels, imagined_val.task_index
        calibration = {"calibrated_on": "imagined val frames",
                       "imagined": imagined_summary(imagined, imagined_val, im_probs, data)}
    calibration = {**calibrate_threshold(cal_probs, cal_labels, cfg.threshold_rule, cfg.target_precision), **calibration}
    per_task = calibrate_per_task(cal_probs, cal_labels, cal_tasks, list(data.tasks), cfg.threshold_rule,
                                  cfg.target_precision, calibration["threshold"])
    calibration.update({"thresholds_per_task": {n: c["threshold"] for n, c in per_task.items()},
                        "per_task_calibration": per_task})
    model.threshold = float(calibration["threshold"])
    model.task_thresholds = dict(calibration["thresholds_per_task"])
    sources = np.array([data.episodes[int(data.episode_index[r])].get("source", "expert") for r in val_rows])
    auc = {"all": roc_auc(probs, val_labels),
           **{f"source_{s}": roc_auc(probs[sources == s], val_labels[sources == s]) for s in sorted(set(sources))}}
    per_task = {}
    for t, name in enumerate(data.tasks):
        sel = data.task_index[val_rows] == t
        per_task[name] = roc_auc(probs[sel], val_labels[sel])
    calibration.update({"val_frames": int(len(val_rows)), "val_positive_frames": int(val_labels.sum()),
                        "auc": auc, "auc_per_task": per_task})
    model.save_pretrained(out_dir, calibration)
    write_curves(out_dir, curve, CURVE_FIELDS)
    return {"steps": total, "train_frames": int(len(rows)), "train_positive_frames": int(len(pos)),
            "seconds": round(elapsed + time.time() - t0, 2), "calibration": calibration}

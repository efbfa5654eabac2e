"""The success model: AUC and threshold calibration by hand, labels, training resume, persistence."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vla_rft.config import CommonConfig, ConfigError
from vla_rft.data import load_dataset
from vla_rft.success.configuration import SuccessModelConfig
from vla_rft.success.modeling import SuccessModel
from vla_rft.success.train import calibrate_per_task, calibrate_threshold, frame_labels, roc_auc, train_success_model

TINY = dict(channels=[8, 8], hidden_size=8, task_embedding=4, batch_size=8, checkpoint_interval=3, log_interval=1)
REAL = dict(TINY, imagined_steps=0)  # real frames only: no world model needed
COMMON = CommonConfig(seed=5, num_threads=2)


def test_auc_by_hand():
    assert roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1], bool)) == pytest.approx(0.75)
    assert roc_auc(np.array([0.5, 0.5]), np.array([0, 1], bool)) == pytest.approx(0.5)  # a tie counts half
    assert roc_auc(np.array([0.2, 0.3]), np.array([1, 1], bool)) is None


def test_precision_rule_picks_the_lowest_threshold_that_reaches_the_target():
    probs = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.8, 0.9])
    labels = np.array([0, 0, 1, 0, 1, 1, 1], bool)
    cal = calibrate_threshold(probs, labels, "precision", 0.95)
    assert cal["threshold"] == pytest.approx(0.7) and cal["precision"] == 1.0 and cal["recall"] == 0.75
    cal = calibrate_threshold(probs, labels, "precision", 0.75)  # 0.3: 4 of 5 predicted are right
    assert cal["threshold"] == pytest.approx(0.3) and cal["precision"] == pytest.approx(0.8)
    ba = calibrate_threshold(probs, labels, "balanced_accuracy", 0.95)
    assert ba["balanced_accuracy"] == pytest.approx(max(
        calibrate_threshold(probs, labels, "balanced_accuracy", 0.95)["balanced_accuracy"], 0.0))
    assert ba["threshold"] in (pytest.approx(0.3), pytest.approx(0.7))
    # unreachable precision falls back to balanced accuracy, and says so
    cal = calibrate_threshold(np.array([0.9, 0.8]), np.array([0, 1], bool), "precision", 0.99)
    assert cal["fallback"] and cal["threshold"] == pytest.approx(0.8)


def test_per_task_thresholds_come_from_each_tasks_frames_and_keep_the_global_one_where_a_task_cannot_be_calibrated():
    # reach's successes score high, push's lower but still ranked above its failures; the global
    # threshold (0.8, set by reach) would never reward push
    probs = np.array([0.75, 0.8, 0.9, 0.95, 0.2, 0.3, 0.4, 0.6, 0.7, 0.1, 0.2])
    labels = np.array([0, 1, 1, 1, 0, 0, 0, 1, 1, 0, 0], bool)
    task = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2])
    glob = calibrate_threshold(probs, labels, "precision", 0.95)
    assert glob["threshold"] == pytest.approx(0.8)
    per = calibrate_per_task(probs, labels, task, ["reach", "push", "door-open"], "precision", 0.95, glob["threshold"])
    assert per["reach"]["threshold"] == pytest.approx(0.8) and per["reach"]["fallback"] is None
    assert per["push"]["threshold"] == pytest.approx(0.6) and per["push"]["recall"] == 1.0
    assert per["push"]["frames"] == 5 and per["push"]["positive_frames"] == 2
    # door-open's val frames hold failures only: nothing to calibrate on, the global threshold stays
    assert per["door-open"]["threshold"] == pytest.approx(0.8) and "global threshold is kept" in per["door-open"]["fallback"]
    # a task where no threshold reaches the precision keeps the global one too, not the laxer balanced one
    hard = calibrate_per_task(np.array([0.9, 0.8, 0.7]), np.array([0, 1, 1], bool), np.zeros(3, int), ["reach"],
                              "precision", 0.95, 0.97)
    assert hard["reach"]["threshold"] == 0.97 and "no threshold reaches precision" in hard["reach"]["fallback"]
    # and its numbers are the kept threshold's (nothing reaches 0.97: recall 0), not the balanced one's
    assert hard["reach"]["recall"] == 0.0 and hard["reach"]["precision"] == 1.0


def test_frame_labels_are_the_success_of_the_action_before(tiny_dataset):
    data = load_dataset(tiny_dataset[0])
    rows, labels = frame_labels(data, "train")
    ep = data.episodes_in("train")[0]
    lo, hi = ep["dataset_from_index"], ep["dataset_to_index"]
    sel = (rows >= lo) & (rows < hi)
    assert not labels[sel][0]  # the reset frame
    assert np.array_equal(labels[sel][1:], data.successes[lo:hi - 1])
    assert labels.any() and not labels.all()


def test_resume_equals_uninterrupted_and_round_trip(tiny_dataset, tmp_path):
    data = load_dataset(tiny_dataset[0])
    full = tmp_path / "full"
    s = train_success_model(SuccessModelConfig(**REAL, steps=6), COMMON, data, full, full / "ckpt", progress=False)
    part = tmp_path / "part"
    train_success_model(SuccessModelConfig(**REAL, steps=3), COMMON, data, part, part / "ckpt", progress=False)
    train_success_model(SuccessModelConfig(**REAL, steps=6), COMMON, data, part, part / "ckpt", resume=True,
                        progress=False)
    a, b = SuccessModel.from_pretrained(full), SuccessModel.from_pretrained(part)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name
    assert a.threshold == pytest.approx(s["calibration"]["threshold"])
    assert 0 <= s["calibration"]["auc"]["all"] <= 1 and s["calibration"]["val_positive_frames"] > 0
    with pytest.raises(ValueError, match="not trained on task"):
        a.task_order(["reach"])


def test_bad_config_is_named():
    with pytest.raises(ConfigError, match="success_model.threshold_rule"):
        SuccessModelConfig(threshold_rule="f1")
    with pytest.raises(ConfigError, match="success_model.target_precision"):
        SuccessModelConfig(target_precision=0)
    with pytest.raises(ConfigError, match="success_model.imagined_share"):
        SuccessModelConfig(imagined_share=0)
    with pytest.raises(ConfigError, match="success_model.imagined_steps"):
        SuccessModelConfig(imagined_steps=-1)
    with pytest.raises(ConfigError, match="success_model.keypoints"):
        SuccessModelConfig(keypoints=-1)
    with pytest.raises(ConfigError, match="success_model.keypoints"):
        SuccessModelConfig(channels=[8], keypoints=4)


def test_spatial_softmax_reads_where_a_peak_is():
    from vla_rft.policy.modeling import spatial_softmax

    maps = torch.zeros(2, 1, 5, 9)
    maps[0, 0, 1, 6] = 50.0  # row 1 of 5, column 6 of 9
    maps[1, 0, 4, 0] = 50.0
    coords = spatial_softmax(maps)  # (B, 2N): rows then columns, in [-1, 1]
    assert coords.shape == (2, 2)
    assert coords[0].tolist() == pytest.approx([-0.5, 0.5], abs=1e-4)
    assert coords[1].tolist() == pytest.approx([1.0, -1.0], abs=1e-4)


def test_keypoints_tell_where_pooling_cannot_and_a_model_saved_without_them_still_loads(tmp_path):
    # the same bright square at two places: the keypoints' coordinates move with it. A model with
    # keypoints round-trips; one whose config.json predates the field loads as what it was (pooling only)
    cfg = SuccessModelConfig(**dict(TINY, keypoints=4))
    torch.manual_seed(0)
    model = SuccessModel(cfg, image_size=32, tasks=["reach"]).eval()
    a, b = torch.zeros(2, 3, 32, 32, dtype=torch.uint8), torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    a[:, :, 4:10, 4:10] = 255
    b[:, :, 20:26, 18:24] = 255
    x = torch.cat([a[:1], b[:1]]).float() / 255 * 2 - 1
    feats = model.encoder[:6](x)  # the map the keypoints read
    from vla_rft.policy.modeling import spatial_softmax

    kp = spatial_softmax(model.keypoint_logits(feats))
    assert (kp[0] - kp[1]).abs().max() > 0.1
    model.save_pretrained(tmp_path / "kp", {"x": 1})
    again = SuccessModel.from_pretrained(tmp_path / "kp")
    assert again.config.keypoints == 4
    assert torch.equal(again(a, torch.zeros(2)), model(a, torch.zeros(2)))
    plain = SuccessModel(SuccessModelConfig(**TINY), image_size=32, tasks=["reach"])
    plain.save_pretrained(tmp_path / "old")
    meta = json.loads((tmp_path / "old" / "config.json").read_text())
    del meta["architecture"]["keypoints"]
    (tmp_path / "old" / "config.json").write_text(json.dumps(meta))
    assert SuccessModel.from_pretrained(tmp_path / "old").config.keypoints == 0


def _world_model(data):
    """A tiny world model whose output depends on its context and actions (head randomised)."""
    from vla_rft.world_model.configuration import WorldModelConfig
    from vla_rft.world_model.modeling import WorldModel

    torch.manual_seed(1)
    wm = WorldModel(WorldModelConfig(channels=(8, 16, 32), patch_size=2, hidden_size=32, num_layers=1, num_heads=2,
                                     frame_channels=8, cond_size=16), data.image_size, 8, data.action_dim,
                    data.state_dim)
    with torch.no_grad():
        for p in list(wm.head.parameters()) + list(wm.state_head.parameters()):
            p.normal_(0, 0.3)
    return wm.eval()


def test_replays_are_closed_loop_on_frames_and_labelled_by_the_recorded_outcome(tiny_dataset):
    from vla_rft.success.imagined import replay_frames, replay_starts
    from vla_rft.world_model.imagine import last_frame

    data = load_dataset(tiny_dataset[0])
    wm = _world_model(data)
    im = replay_frames(wm, data, "train", horizon=3, keyframes_per_episode=1, seed=0, batch=3)
    starts = replay_starts(data, "train", 8, 1, seed=0)
    assert len(starts) == 2 * len(data.episodes_in("train"))  # every tiny episode has more than one chunk
    for e, row, s in starts:
        ep = data.episodes[e]
        sel = (im.episode == e) & (im.start == s)
        n = min(3, (ep["dataset_to_index"] - row) // 8)  # never past the recorded episode's end
        assert sel.sum() == n and np.array_equal(im.chunk[sel], np.arange(n))
        assert ep["dataset_from_index"] <= row < ep["dataset_to_index"] - 7
        assert (s == 0) == (row == ep["dataset_from_index"])
        # the label is the simulator's success flag of the chunk's last recorded action
        assert np.array_equal(im.labels[sel], data.successes[row + 8 * np.arange(1, n + 1) - 1].astype(bool))
    # chunk 1 is predicted from chunk 0's predicted frame (not the recorded one), with the recorded actions
    e, row, s = starts[0]
    sel = np.flatnonzero((im.episode == e) & (im.start == s))
    frame, _ = last_frame(wm, torch.from_numpy(np.ascontiguousarray(data.images[[row]].transpose(0, 3, 1, 2))),
                          torch.from_numpy(data.actions[row:row + 8][None]).clamp(-1, 1),
                          torch.from_numpy(data.states[[row]]))
    assert (torch.round(frame * 255).to(torch.uint8).int() - im.frames[sel[0]].int()).abs().max() <= 1
    recorded = torch.from_numpy(np.ascontiguousarray(data.images[[row + 8]].transpose(0, 3, 1, 2)))
    from_recorded, _ = last_frame(wm, recorded, torch.from_numpy(data.actions[row + 8:row + 16][None]).clamp(-1, 1),
                                  torch.from_numpy(data.states[[row + 8]]))
    assert not torch.equal(torch.round(from_recorded * 255).to(torch.uint8)[0], im.frames[sel[1]])
    # some frames of the tiny episodes come after a success and some before
    assert im.labels.any() and not im.labels.all()


def test_imagined_fine_tune_calibrates_on_imagined_frames_and_resumes_exactly(tiny_dataset, tmp_path):
    data = load_dataset(tiny_dataset[0])
    wm = _world_model(data)
    cfg = SuccessModelConfig(**TINY, steps=2, imagined_steps=4)
    with pytest.raises(ValueError, match="pass the world model"):
        train_success_model(cfg, COMMON, data, tmp_path / "x", tmp_path / "x" / "ckpt", progress=False)
    full = tmp_path / "full"
    s = train_success_model(cfg, COMMON, data, full, full / "ckpt", progress=False, world_model=wm, horizon=16)
    part = tmp_path / "part"
    train_success_model(SuccessModelConfig(**TINY, steps=2, imagined_steps=1), COMMON, data, part, part / "ckpt",
                        progress=False, world_model=wm, horizon=16)  # stops inside the imagined phase (step 3)
    train_success_model(cfg, COMMON, data, part, part / "ckpt", resume=True, progress=False, world_model=wm, horizon=16)
    a, b = SuccessModel.from_pretrained(full), SuccessModel.from_pretrained(part)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name
    cal = s["calibration"]
    assert s["steps"] == 6 and cal["calibrated_on"] == "imagined val frames"
    assert cal["imagined"]["val_frames"] > 0 and 0 <= cal["imagined"]["frame_auc"] <= 1
    # the threshold is the one the precision rule picks on the val replays' probabilities
    from vla_rft.success.imagined import replay_frames

    val = replay_frames(wm, data, "val", horizon=16, keyframes_per_episode=1, seed=COMMON.seed)
    probs = a.probability(val.frames, torch.from_numpy(val.task_index)).numpy()
    assert a.threshold == pytest.approx(calibrate_threshold(probs, val.labels, "precision", 0.95)["threshold"])
    # and one per task, on that task's replays, saved beside it and read back
    per = calibrate_per_task(probs, val.labels, val.task_index, list(data.tasks), "precision", 0.95, a.threshold)
    assert a.task_thresholds == pytest.approx({t: c["threshold"] for t, c in per.items()})
    assert set(a.task_thresholds) == set(data.tasks)
    # without the imagined phase the world model changes nothing: real-frame training and calibration
    real = train_success_model(SuccessModelConfig(**REAL, steps=2), COMMON, data, tmp_path / "r", tmp_path / "r" / "c",
                               progress=False, world_model=wm, horizon=16)
    assert real["calibration"]["calibrated_on"] == "real val frames" and "imagined" not in real["calibration"]

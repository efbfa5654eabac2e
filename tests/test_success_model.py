"""The success model: AUC and threshold calibration by hand, labels, training resume, persistence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vla_rft.config import CommonConfig, ConfigError
from vla_rft.data import load_dataset
from vla_rft.success.configuration import SuccessModelConfig
from vla_rft.success.modeling import SuccessModel
from vla_rft.success.train import calibrate_threshold, frame_labels, roc_auc, train_success_model

TINY = dict(channels=[8, 8], hidden_size=8, task_embedding=4, batch_size=8, checkpoint_interval=3, log_interval=1)
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
    s = train_success_model(SuccessModelConfig(**TINY, steps=6), COMMON, data, full, full / "ckpt", progress=False)
    part = tmp_path / "part"
    train_success_model(SuccessModelConfig(**TINY, steps=3), COMMON, data, part, part / "ckpt", progress=False)
    train_success_model(SuccessModelConfig(**TINY, steps=6), COMMON, data, part, part / "ckpt", resume=True,
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

"""World model: shapes, identity at init, seeded determinism, exact resume, safetensors round trip,
chained rollouts, the simulator adapter, and the fidelity report (on a real recorded dataset)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vla_rft.config import CommonConfig, ConfigError
from vla_rft.data import load_dataset
from vla_rft.data.schema import DatasetValidationError
from vla_rft.data.torch_dataset import ChunkDataset
from vla_rft.world_model.configuration import ARCHITECTURE_FIELDS, WorldModelConfig
from vla_rft.world_model.modeling import ImaginedSimulator, WorldModel
from vla_rft.world_model import evaluate as wm_eval
from vla_rft.world_model import train as wm_train

K = 8


def tiny_config(**overrides) -> WorldModelConfig:
    values = dict(channels=(4, 8, 16), patch_size=2, hidden_size=32, num_layers=1, num_heads=2, frame_channels=8,
                  cond_size=16, batch_size=4, steps=6, train_frames=2, warmup_steps=2, log_interval=2,
                  checkpoint_interval=3, eval_chunks=12, eval_batch_size=8, gif_chunks=2, gif_scale=2)
    values.update(overrides)
    return WorldModelConfig(**values)


@pytest.fixture(scope="module")
def data(tiny_dataset):
    path, _ = tiny_dataset
    return load_dataset(path)


@pytest.fixture(scope="module")
def common():
    return CommonConfig(seed=3, chunk_len=K, device="cpu", num_threads=1)


@pytest.fixture(scope="module")
def trained(data, common, tmp_path_factory):
    out = tmp_path_factory.mktemp("wm")
    summary = wm_train.train_world_model(tiny_config(), common, data, out / "model", out / "ckpt", progress=False)
    return out / "model", summary


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="world_model.num_heads|world_model.hidden_size"):
        WorldModelConfig(hidden_size=30, num_heads=4)
    with pytest.raises(ConfigError, match="world_model.moving_threshold"):
        WorldModelConfig(moving_threshold=0.0)
    with pytest.raises(ConfigError, match="world_model.channels"):
        WorldModelConfig(channels=())
    with pytest.raises(ValueError, match="patch_size"):
        WorldModel(WorldModelConfig(channels=(8, 16, 32), patch_size=3))


def test_shapes_and_identity_at_init(data, common):
    torch.manual_seed(0)
    model = wm_train.build_model(tiny_config(), common, data).eval()
    batch = ChunkDataset(data, "train", K).batch(np.arange(3))
    out = model(batch["image"], batch["actions"], batch["state"], torch.tensor([[0, 5]] * 3))
    assert out.frames.shape == (3, 2, 3, 64, 64)
    assert out.states.shape == (3, K, 4)
    frames = model.rollout(batch["image"], batch["actions"], batch["state"])
    assert frames.shape == (3, K, 3, 64, 64) and frames.dtype == torch.float32
    assert 0.0 <= frames.min() and frames.max() <= 1.0
    # zero-initialised flow and residual: an untrained model is exactly copy-last-frame
    context = batch["image"].float()[:, None] / 255.0
    assert torch.allclose(frames, context.expand_as(frames), atol=1e-4)
    # without a state the model estimates one from the frame
    assert model.rollout(batch["image"], batch["actions"]).shape == frames.shape
    with pytest.raises(ValueError, match="multiple of chunk_len"):
        model.rollout(batch["image"], batch["actions"][:, :5])


def test_training_writes_model_and_curves(trained):
    out, summary = trained
    assert (out / "model.safetensors").exists() and (out / "config.json").exists()
    meta = json.loads((out / "config.json").read_text())
    assert meta["image_size"] == 64 and meta["chunk_len"] == K
    assert set(meta["architecture"]) == set(ARCHITECTURE_FIELDS)  # no training settings in the model config
    rows = json.loads((out / "curves.json").read_text())
    assert [r["step"] for r in rows] == [2, 4, 6]
    assert set(rows[0]) >= {"step", "loss", "lr", "seconds"}
    assert (out / "curves.csv").read_text().splitlines()[0].startswith("step,loss")
    assert np.isfinite(summary["final_loss"])


def test_same_seed_same_weights(data, common, trained, tmp_path):
    out, summary = trained
    again = wm_train.train_world_model(tiny_config(), common, data, tmp_path / "m", tmp_path / "c", progress=False)
    a, b = load_file(str(out / "model.safetensors")), load_file(str(tmp_path / "m" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert again["final_loss"] == summary["final_loss"]


def train_killed_after_step_3(cfg, common, data, out, ckpt, monkeypatch) -> None:
    """Train until the step-3 checkpoint is written, then die as a killed process would."""
    original = wm_train.save_checkpoint

    class Killed(Exception):
        pass

    def save_then_die(path, model, optimizer, extra, scheduler=None):
        original(path, model, optimizer, extra, scheduler=scheduler)
        if extra["step"] == 3:
            raise Killed

    monkeypatch.setattr(wm_train, "save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        wm_train.train_world_model(cfg, common, data, out, ckpt, progress=False)
    monkeypatch.setattr(wm_train, "save_checkpoint", original)


def test_resume_equals_uninterrupted(data, common, trained, tmp_path, monkeypatch):
    out, summary = trained
    train_killed_after_step_3(tiny_config(), common, data, tmp_path / "m", tmp_path / "c", monkeypatch)
    resumed = wm_train.train_world_model(tiny_config(), common, data, tmp_path / "m", tmp_path / "c",
                                         resume=True, progress=False)
    assert resumed["resumed_from_step"] == 3
    assert abs(resumed["final_loss"] - summary["final_loss"]) < 1e-5
    a, b = load_file(str(out / "model.safetensors")), load_file(str(tmp_path / "m" / "model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    curve = json.loads((tmp_path / "m" / "curves.json").read_text())
    assert [r["step"] for r in curve] == [2, 4, 6]


def test_unrolled_loss_feeds_the_models_own_frame_and_state_back(trained, data, common):
    """Chunk 2 of a sequence starts from chunk 1's predicted last frame (8-bit, as a rollout feeds it) and
    predicted state, not the recorded ones, and the gradient runs back through that chain."""
    model = WorldModel.from_pretrained(trained[0])
    cfg = tiny_config(unroll_chunks=2)
    ds = ChunkDataset(data, "train", 2 * K)
    batch = wm_train.training_batch(ds, np.arange(0, len(ds), len(ds) // 4)[:4])
    picks = [wm_train.frame_selection(0, 5, 4, K, 2, j) for j in range(2)]
    assert not torch.equal(picks[0], picks[1])  # each chunk draws its own frames
    state = batch["state"].clone().requires_grad_()
    total, _ = wm_train.unrolled_loss(model, {**batch, "state": state}, picks, cfg)

    first = picks[0].clone()
    first[:, -1] = K - 1  # a chunk that feeds the next decodes its last frame
    head = {k: v[:, :K] if k in ("actions", "future_images", "future_states") else v for k, v in batch.items()}
    out0 = model(batch["image"], batch["actions"][:, :K], state, first)
    loss0, _ = wm_train.world_model_loss(out0, {**head, "state": state}, cfg, model)
    tail = {"image": batch["future_images"][:, K - 1], "state": batch["future_states"][:, K - 1],
            "future_images": batch["future_images"][:, K:], "future_states": batch["future_states"][:, K:]}

    def second_chunk(context, state):
        out = model(context, batch["actions"][:, K:], state, picks[1])
        return wm_train.world_model_loss(out, tail, cfg, model)[0]

    fed_back = second_chunk(torch.round(out0.frames[:, -1].clamp(0, 1) * 255) / 255, out0.states[:, -1])
    teacher = second_chunk(batch["future_images"][:, K - 1], batch["future_states"][:, K - 1])
    assert torch.allclose(total, (loss0 + fed_back) / 2, atol=1e-6)
    assert abs(float(fed_back.detach()) - float(teacher.detach())) > 1e-4
    (g_total,) = torch.autograd.grad(total, state, retain_graph=True)
    (g_first,) = torch.autograd.grad(loss0 / 2, state)
    assert (g_total - g_first).abs().sum() > 0.01 * g_first.abs().sum()  # chunk 2's loss reaches the start state


def test_unrolled_training_resumes_exactly_and_refuses_mixing(data, common, tmp_path, monkeypatch):
    cfg = tiny_config(unroll_chunks=2)
    whole = wm_train.train_world_model(cfg, common, data, tmp_path / "a", tmp_path / "ca", progress=False)
    assert whole["unroll_chunks"] == 2 and np.isfinite(whole["final_loss"])
    train_killed_after_step_3(cfg, common, data, tmp_path / "b", tmp_path / "cb", monkeypatch)
    with pytest.raises(ValueError, match="unroll_chunks"):  # a 2-chunk checkpoint does not resume a 1-chunk run
        wm_train.train_world_model(tiny_config(), common, data, tmp_path / "b", tmp_path / "cb", resume=True,
                                   progress=False)
    resumed = wm_train.train_world_model(cfg, common, data, tmp_path / "b", tmp_path / "cb", resume=True,
                                         progress=False)
    assert resumed["resumed_from_step"] == 3 and abs(resumed["final_loss"] - whole["final_loss"]) < 1e-5
    a, b = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_unroll_longer_than_the_episodes_is_refused_by_name(data, common, tmp_path):
    with pytest.raises(ConfigError, match="world_model.unroll_chunks"):
        tiny_config(unroll_chunks=0)
    longest = max(e["length"] for e in data.episodes_in("train"))
    too_many = longest // K + 1
    with pytest.raises(DatasetValidationError, match=f"world_model.unroll_chunks={too_many}"):
        wm_train.train_world_model(tiny_config(unroll_chunks=too_many), common, data, tmp_path / "m", tmp_path / "c",
                                   progress=False)
    assert not (tmp_path / "m" / "model.safetensors").exists()


def test_data_order_is_a_function_of_seed_and_step():
    a = wm_train.batch_indices(0, 7, 16, 50)
    assert np.array_equal(a, wm_train.batch_indices(0, 7, 16, 50))
    assert not np.array_equal(a, wm_train.batch_indices(1, 7, 16, 50))
    epoch = np.concatenate([wm_train.batch_indices(0, s, 10, 50) for s in range(5)])
    assert sorted(epoch) == list(range(50))  # one epoch visits every chunk once
    sel = wm_train.frame_selection(0, 3, 5, K, 3)
    assert sel.shape == (5, 3) and all(len(set(r.tolist())) == 3 for r in sel)


def test_safetensors_round_trip(trained, data, common, tmp_path):
    torch.manual_seed(1)
    model = wm_train.build_model(tiny_config(), common, data).eval()
    with torch.no_grad():  # leave the identity init so the head's weights matter
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model.save_pretrained(tmp_path)
    loaded = WorldModel.from_pretrained(tmp_path)
    batch = ChunkDataset(data, "val", K).batch(np.arange(2))
    expected = model.rollout(batch["image"], batch["actions"], batch["state"])
    assert torch.equal(expected, loaded.rollout(batch["image"], batch["actions"], batch["state"]))
    assert torch.equal(model.state_std, loaded.state_std)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    with pytest.raises(FileNotFoundError, match="is not a saved world model"):
        WorldModel.from_pretrained(tmp_path / "missing")


def test_rollout_chains_chunks_and_adapter_matches(trained, data):
    model = WorldModel.from_pretrained(Path(trained[0]))
    batch = ChunkDataset(data, "train", 2 * K).batch(np.arange(3))
    frames = model.rollout(batch["image"], batch["actions"], batch["state"])
    assert frames.shape == (3, 2 * K, 3, 64, 64)
    first = model.rollout(batch["image"], batch["actions"][:, :K], batch["state"])
    assert torch.allclose(frames[:, :K], first)

    sim = ImaginedSimulator(model)
    obs = sim.reset(batch["image"].permute(0, 2, 3, 1).numpy(), batch["state"].numpy())
    assert obs.frames.shape == (3, 64, 64, 3)
    steps = [sim.step_chunk(batch["actions"][:, i * K:(i + 1) * K].numpy()) for i in range(2)]
    got = np.concatenate([s.frames for s in steps], 1)
    assert got.shape == (3, 2 * K, 64, 64, 3) and got.dtype == np.uint8
    expected = (frames * 255).round().to(torch.uint8).permute(0, 1, 3, 4, 2).numpy()
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
    assert steps[0].states.shape == (3, 4)
    assert sim.step_chunk(batch["actions"][:, :K].numpy(), render="last").frames.shape == (3, 1, 64, 64, 3)


def test_shuffled_baseline_uses_the_same_chunks(trained, data):
    model = WorldModel.from_pretrained(trained[0])
    perm = wm_eval.derangement(10, seed=0)
    assert sorted(perm) == list(range(10)) and not np.any(perm == np.arange(10))
    batch = ChunkDataset(data, "val", K).batch(np.arange(4))
    shuffled = batch["actions"][torch.from_numpy(wm_eval.derangement(4, 0))]
    preds = wm_eval.predict_chunks(model, batch, shuffled)
    assert torch.equal(preds["target"], batch["future_images"].float() / 255)
    assert torch.equal(preds["copy_last"][:, 3], batch["image"].float() / 255)
    assert torch.equal(preds["shuffled_actions"], model.rollout(batch["image"], shuffled, batch["state"]))
    assert torch.equal(preds["model"], model.rollout(batch["image"], batch["actions"], batch["state"]))


def test_ssim_map_matches_pytorch_msssim():
    from pytorch_msssim import ssim

    torch.manual_seed(0)
    x, y = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    ref = ssim(x, y, data_range=1.0, size_average=False)
    assert torch.allclose(wm_eval.ssim_map(x, y).flatten(1).mean(1), ref, atol=1e-5)


def test_metrics_json_has_documented_keys(trained, data, tmp_path):
    model = WorldModel.from_pretrained(trained[0])
    cfg = tiny_config()
    metrics = wm_eval.evaluate_world_model(model, data, tmp_path, cfg, seed=0, progress=False)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    for method in ("model", "copy_last", "shuffled_actions"):
        for region in ("whole", "moving"):
            block = saved[method][region]
            for metric in ("l1", "mse", "psnr", "ssim"):
                assert len(block["per_step"][metric]) == K
                assert np.isfinite(block["mean"][metric])
    assert saved["num_chunks"] == cfg.eval_chunks and len(saved["chunk_starts"]) == cfg.eval_chunks
    assert len(saved["moving_fraction"]) == K
    assert set(saved["targets"]) == set(metrics["targets"])
    for task in data.tasks:
        assert (tmp_path / "gifs" / f"{task}.gif").exists() and (tmp_path / "gifs" / f"{task}.png").exists()
    # copy-last is exact at the context: its moving-pixel error is what moved
    assert saved["copy_last"]["moving"]["mean"]["l1"] > saved["copy_last"]["whole"]["mean"]["l1"]

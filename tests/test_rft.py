"""RFT: advantages and the clipped loss by hand, the verified reward's ordering, GRPO steps, resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vla_rft.config import CommonConfig, ConfigError
from vla_rft.data import load_dataset
from vla_rft.data.torch_dataset import ChunkDataset
from vla_rft.policy.configuration import PolicyConfig
from vla_rft.policy.modeling import VLAPolicy
from vla_rft.policy.train import train_policy_bc
from vla_rft.rft.configuration import RFTConfig
from vla_rft.rft.grpo import CompatibilityError, check_compatible, clipped_policy_loss, train_grpo
from vla_rft.rft.rewards import group_advantages, verified_reward
from vla_rft.world_model.configuration import WorldModelConfig
from vla_rft.world_model.modeling import WorldModel
from vla_rft.world_model.train import train_world_model

POLICY = dict(cnn_channels=(8, 8, 16, 16), hidden_size=32, num_layers=1, num_heads=2, mlp_ratio=2,
              batch_size=16, steps=30, warmup_steps=5, eval_interval=0, eval_chunks=16,
              checkpoint_interval=0, log_interval=10)
WORLD = dict(channels=(8, 16, 32), patch_size=2, hidden_size=32, num_layers=1, num_heads=2, frame_channels=8,
             cond_size=16, batch_size=8, steps=120, train_frames=4, warmup_steps=10, log_interval=20,
             checkpoint_interval=0, eval_chunks=12, eval_batch_size=8, gif_chunks=2, gif_scale=2)
RFT = dict(steps=4, batch_starts=3, group_size=4, checkpoint_interval=2, log_interval=1, verify_states=2)
COMMON = CommonConfig(seed=3, num_threads=2)


@pytest.fixture(scope="module")
def data(tiny_dataset):
    return load_dataset(tiny_dataset[0])


@pytest.fixture(scope="module")
def world_model(data, tmp_path_factory):
    """A small world model really trained on the recorded episodes (it must react to actions)."""
    out = tmp_path_factory.mktemp("wm")
    train_world_model(WorldModelConfig(**WORLD), COMMON, data, out, out / "ckpt", progress=False)
    return WorldModel.from_pretrained(out)


@pytest.fixture(scope="module")
def base_policy_dir(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("bc")
    train_policy_bc(PolicyConfig(**POLICY), COMMON, data, out, out / "ckpt", progress=False)
    return out


def test_group_advantages_by_hand():
    rewards = torch.tensor([[1.0, 2.0, 3.0, 6.0], [5.0, 5.0, 5.0, 5.0]])
    adv = group_advantages(rewards, eps=1e-4)
    std = np.std([1, 2, 3, 6], ddof=1)  # 2.1602
    expected = (np.array([1, 2, 3, 6]) - 3.0) / (std + 1e-4)
    np.testing.assert_allclose(adv[0].numpy(), expected, rtol=1e-5)
    assert torch.all(adv[1] == 0)  # a group with equal rewards teaches nothing


def test_clipped_loss_by_hand():
    old = torch.zeros(4)
    logp = torch.log(torch.tensor([1.5, 0.5, 1.1, 0.9]))  # ratios 1.5, 0.5, 1.1, 0.9
    adv = torch.tensor([1.0, 1.0, -2.0, -2.0])
    loss, clip_frac = clipped_policy_loss(logp, old, adv, eps_low=0.2, eps_high=0.2)
    # min(r*A, clip(r)*A) per sample: 1.2, 0.5, -2.2, -1.8 (ratios 1.5 and 0.5 are outside [0.8, 1.2])
    terms = [min(1.5 * 1, 1.2 * 1), min(0.5 * 1, 0.8 * 1), min(1.1 * -2, 1.1 * -2), min(0.9 * -2, 0.9 * -2)]
    assert float(loss) == pytest.approx(-np.mean(terms), rel=1e-6)
    assert clip_frac == pytest.approx(0.5)


def test_expert_chunk_has_the_highest_reward_and_random_scores_lower(data, world_model):
    cfg = RFTConfig(**RFT)
    ds = ChunkDataset(data, "val", chunk_len=8)
    batch = ds.batch(np.arange(0, len(ds), max(1, len(ds) // 6))[:6])
    b = len(batch["image"])
    gen = torch.Generator().manual_seed(0)
    random = torch.rand(b, 3, 8, 4, generator=gen) * 2 - 1
    chunks = torch.cat([batch["actions"][:, None], random], dim=1)  # expert first in each group
    g = chunks.shape[1]
    frames = world_model.rollout(batch["image"].repeat_interleave(g, 0), chunks.reshape(b * g, 8, 4),
                                 batch["state"].repeat_interleave(g, 0)).reshape(b, g, 8, 3, 64, 64)
    expert_frames = world_model.rollout(batch["image"], batch["actions"], batch["state"])
    rewards = verified_reward(frames, expert_frames, cfg)
    assert torch.all(rewards.argmax(dim=1) == 0)
    assert torch.all(rewards[:, 1:] < rewards[:, :1])


def test_one_rft_step_changes_only_trainable_parameters(data, world_model, base_policy_dir, tmp_path):
    policy = VLAPolicy.from_pretrained(base_policy_dir)
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    buffers = {n: b.clone() for n, b in policy.named_buffers()}
    cfg = RFTConfig(**{**RFT, "steps": 1, "trainable": "heads"})
    summary = train_grpo(cfg, COMMON, data, world_model, policy, tmp_path / "out", tmp_path / "ckpt", progress=False)
    changed = {n for n, p in policy.named_parameters() if not torch.equal(p, before[n])}
    assert changed, "one GRPO step changed nothing"
    assert all(n.startswith(("mean_head", "std_head")) for n in changed), changed
    assert all(torch.equal(b, buffers[n]) for n, b in policy.named_buffers())  # instruction embeddings frozen
    assert summary["steps"] == 1
    saved = VLAPolicy.from_pretrained(tmp_path / "out")
    for n, p in saved.named_parameters():
        assert torch.equal(p, dict(policy.named_parameters())[n]), n


def test_resume_equals_uninterrupted(data, world_model, base_policy_dir, tmp_path):
    cfg = RFTConfig(**RFT)
    straight = VLAPolicy.from_pretrained(base_policy_dir)
    train_grpo(cfg, COMMON, data, world_model, straight, tmp_path / "a", tmp_path / "a_ckpt", progress=False)

    interrupted = VLAPolicy.from_pretrained(base_policy_dir)
    half = RFTConfig(**{**RFT, "steps": 2})
    train_grpo(half, COMMON, data, world_model, interrupted, tmp_path / "b", tmp_path / "b_ckpt", progress=False)
    resumed = VLAPolicy.from_pretrained(base_policy_dir)  # a fresh process would load the base again
    train_grpo(cfg, COMMON, data, world_model, resumed, tmp_path / "b", tmp_path / "b_ckpt", resume=True,
               progress=False)
    for (n, p), q in zip(straight.named_parameters(), resumed.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=n)
    import json

    a = json.loads((tmp_path / "a" / "curves.json").read_text())
    b = json.loads((tmp_path / "b" / "curves.json").read_text())
    assert [r["reward_mean"] for r in a] == pytest.approx([r["reward_mean"] for r in b], rel=1e-5)


def test_exploration_range_bounds_the_sampling_std_during_rft(data, world_model, base_policy_dir, tmp_path):
    """RFT samples with std in [0.3, 0.5]; the policy it saves keeps the base's own [std_min, std_max]."""
    import json

    ds = ChunkDataset(data, "train", chunk_len=8)
    batch = ds.batch(np.arange(4))
    policy = VLAPolicy.from_pretrained(base_policy_dir)
    own = policy(batch["image"], batch["state"], batch["task_index"]).std
    assert own.min() >= policy.config.std_min - 1e-6 and own.max() <= 0.2 + 1e-6
    wide = policy(batch["image"], batch["state"], batch["task_index"], std_range=(0.3, 0.5))
    assert wide.std.min() >= 0.3 and wide.std.max() <= 0.5
    # the mean the evaluation acts with is untouched by the exploration range
    assert torch.equal(wide.mean, policy(batch["image"], batch["state"], batch["task_index"]).mean)
    cfg = RFTConfig(**{**RFT, "steps": 1, "explore_std_min": 0.3, "explore_std_max": 0.5})
    summary = train_grpo(cfg, COMMON, data, world_model, policy, tmp_path / "out", tmp_path / "ckpt", progress=False)
    row = json.loads((tmp_path / "out" / "curves.json").read_text())[0]
    assert 0.3 <= row["action_std"] <= 0.5 and summary["steps"] == 1
    saved = json.loads((tmp_path / "out" / "config.json").read_text())["architecture"]
    base = json.loads((base_policy_dir / "config.json").read_text())["architecture"]
    assert (saved["std_min"], saved["std_max"]) == (base["std_min"], base["std_max"]) == (0.08, 0.2)
    tuned = VLAPolicy.from_pretrained(tmp_path / "out")
    again = tuned(batch["image"], batch["state"], batch["task_index"]).std
    assert again.min() >= 0.08 - 1e-6 and again.max() <= 0.2 + 1e-6
    with pytest.raises(ConfigError, match="explore_std_min/max"):
        RFTConfig(explore_std_min=0.5, explore_std_max=0.3)


def test_lpips_loads_local_weights_and_orders_distortions(tmp_path):
    from safetensors.torch import save_file

    from vla_rft.rft.lpips import LPIPS, load_lpips
    from vla_rft.rft.rewards import frame_distance

    torch.manual_seed(0)
    state = {k: (v.abs() if k.startswith("lin") else v) for k, v in LPIPS().state_dict().items()}
    # the reference module's layout: lin0..4 listed twice (also as lins.0..4)
    state.update({f"lins.{k[3]}{k[4:]}": v.clone() for k, v in state.items() if k.startswith("lin")})
    path = tmp_path / "lpips_vgg.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    frames = torch.rand(2, 3, 3, 64, 64)
    small = (frames + 0.02 * torch.randn_like(frames)).clamp(0, 1)
    large = (frames + 0.3 * torch.randn_like(frames)).clamp(0, 1)
    dist = lambda a, b: frame_distance(a, b, 0.0, 1.0, "lpips", str(path))  # noqa: E731
    assert torch.allclose(dist(frames, frames), torch.zeros(2), atol=1e-6)
    assert (dist(frames, small) > 0).all() and (dist(frames, large) > dist(frames, small)).all()
    cfg = RFTConfig(perceptual="lpips", lpips_weights=str(path), reward_perceptual_weight=1.0)
    assert cfg.lpips_weights == str(path)
    with pytest.raises(ConfigError, match="no file at"):
        RFTConfig(perceptual="lpips", lpips_weights=str(tmp_path / "missing.safetensors"))
    wrong = tmp_path / "wrong.safetensors"
    save_file({"net.slice1.0.weight": torch.zeros(1)}, str(wrong))
    with pytest.raises(ValueError, match="not an LPIPS\\(VGG\\) state dict"):
        load_lpips(str(wrong))


def test_mismatched_world_model_and_policy_are_refused(data, base_policy_dir):
    policy = VLAPolicy.from_pretrained(base_policy_dir)
    wm = WorldModel(WorldModelConfig(**WORLD), image_size=64, chunk_len=4, action_dim=4, state_dim=4)
    with pytest.raises(CompatibilityError, match="chunk length mismatch: policy 8, world model 4"):
        check_compatible(policy, wm, data)


def test_bad_rft_config_is_named():
    with pytest.raises(ConfigError, match="rft.group_size must be >= 2"):
        RFTConfig(group_size=1)
    with pytest.raises(ConfigError, match="rft.perceptual: unknown value 'vgg'"):
        RFTConfig(perceptual="vgg")
    with pytest.raises(ConfigError, match="lpips_weights"):
        RFTConfig(perceptual="lpips")


def test_kl_estimators_by_hand():
    from vla_rft.rft.grpo import kl_estimate

    logp, ref = torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -1.0])  # log_r = -0.5, 1.0
    log_r = np.array([-0.5, 1.0])
    assert float(kl_estimate(logp, ref, "k1")) == pytest.approx(np.mean(-log_r))
    assert float(kl_estimate(logp, ref, "k2")) == pytest.approx(np.mean(0.5 * log_r ** 2))
    assert float(kl_estimate(logp, ref, "k3")) == pytest.approx(np.mean(np.exp(log_r) - log_r - 1))
    assert float(kl_estimate(logp, logp, "k3")) == 0.0
    with pytest.raises(ConfigError, match="rft.kl_estimator"):
        RFTConfig(kl_estimator="k4")

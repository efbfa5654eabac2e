"""The VLA policy: exact Gaussian log-probs, std clamp, frozen instruction encoder, BC, resume, I/O."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vla_rft.config import CommonConfig, ConfigError
from vla_rft.data import load_dataset
from vla_rft.data.torch_dataset import ChunkDataset
from vla_rft.policy.configuration import PolicyConfig
from vla_rft.policy.modeling import VLAPolicy
from vla_rft.policy.text import EMBEDDING_DIM, get_sentence_encoder
from vla_rft.policy import train as bc

TINY = dict(cnn_channels=(8, 8, 16, 16), keypoints=4, hidden_size=32, num_layers=1, num_heads=2, mlp_ratio=2,
            batch_size=8, steps=6, warmup_steps=2, augmentation="shift", shift_pad=2, eval_interval=0, eval_chunks=16,
            checkpoint_interval=3, log_interval=2)


@pytest.fixture(scope="module")
def data(tiny_dataset):
    return load_dataset(tiny_dataset[0])


@pytest.fixture(scope="module")
def batch(data):
    return ChunkDataset(data, "train", chunk_len=8).batch(np.arange(5))


def make_policy(data, seed: int = 0, **overrides) -> VLAPolicy:
    torch.manual_seed(seed)
    return VLAPolicy(PolicyConfig(**{**TINY, **overrides}), image_size=data.image_size, chunk_len=8,
                     action_dim=data.action_dim, state_dim=data.state_dim, instructions=data.instructions)


def test_config_validation_names_the_field():
    with pytest.raises(ConfigError, match=r"policy\.bc_loss.*allowed values: mse_nll, l1_nll, nll"):
        PolicyConfig(bc_loss="huber")
    with pytest.raises(ConfigError, match=r"policy\.augmentation"):
        PolicyConfig(augmentation="crop")
    with pytest.raises(ConfigError, match=r"policy\.std_min"):
        PolicyConfig(std_min=0.3, std_max=0.2)
    with pytest.raises(ConfigError, match=r"policy\.hidden_size"):
        PolicyConfig(hidden_size=30, num_heads=4)
    assert (PolicyConfig().std_min, PolicyConfig().std_max) == (0.08, 0.2)


def test_instruction_embeddings_are_384d_normalised_and_distinct(data):
    enc = get_sentence_encoder()
    emb = enc.encode(data.instructions + [data.instructions[0]])
    assert emb.shape == (len(data.instructions) + 1, EMBEDDING_DIM)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(len(emb)))
    assert not torch.allclose(emb[0], emb[1], atol=1e-3)  # push vs drawer-open
    torch.testing.assert_close(emb[0], emb[-1])  # cached: the same string gives the same vector
    assert not enc.training and not any(p.requires_grad for p in enc.parameters())


def test_shapes_and_log_prob_agrees_with_sample(data, batch):
    policy = make_policy(data)
    b = len(batch["image"])
    chunk, logp = policy.sample(batch["image"], batch["state"], batch["task_index"],
                                generator=torch.Generator().manual_seed(3))
    assert chunk.shape == (b, 8, 4) and logp.shape == (b,)
    again = policy.log_prob(batch["image"], batch["state"], batch["task_index"], chunk)
    torch.testing.assert_close(again, logp, atol=1e-5, rtol=0)
    assert policy.entropy(batch["image"], batch["state"], batch["task_index"]).shape == (b,)
    # task indices, 384-d embeddings and strings are the same instruction
    by_emb = policy.log_prob(batch["image"], batch["state"], policy.instruction_embeddings[batch["task_index"]], chunk)
    by_text = policy.log_prob(batch["image"], batch["state"],
                              [data.instructions[i] for i in batch["task_index"]], chunk)
    torch.testing.assert_close(by_emb, logp, atol=1e-5, rtol=0)
    torch.testing.assert_close(by_text, logp, atol=1e-5, rtol=0)
    dist = policy(batch["image"], batch["state"], batch["task_index"])
    torch.testing.assert_close(policy.predict_action_chunk(batch["image"], batch["state"], batch["task_index"]),
                               dist.mean)
    ref = torch.distributions.Normal(dist.mean.flatten(1), dist.std.flatten(1))
    torch.testing.assert_close(ref.log_prob(chunk.flatten(1)).sum(-1), logp, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(ref.entropy().sum(-1), dist.entropy(), atol=1e-4, rtol=1e-5)


def test_seeded_init_and_sampling_are_deterministic(data, batch):
    a, b = make_policy(data, seed=5), make_policy(data, seed=5)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    args = (batch["image"], batch["state"], batch["task_index"])
    s1, _ = a.sample(*args, generator=torch.Generator().manual_seed(11))
    s2, _ = b.sample(*args, generator=torch.Generator().manual_seed(11))
    s3, _ = b.sample(*args, generator=torch.Generator().manual_seed(12))
    assert torch.equal(s1, s2) and not torch.equal(s1, s3)


def test_std_is_clamped_even_when_the_head_is_driven_to_extremes(data, batch):
    policy = make_policy(data, std_min=0.08, std_max=0.2)
    last = policy.std_head[-1]
    args = (batch["image"], batch["state"], batch["task_index"])
    with torch.no_grad():
        for bias, expected in ((1e4, 0.2), (-1e4, 0.08)):
            last.bias.fill_(bias)
            std = policy(*args).std
            torch.testing.assert_close(std, torch.full_like(std, expected))
        last.weight.normal_(0, 1e3)
        last.bias.zero_()
        std = policy(*args).std
        assert std.min() >= 0.08 - 1e-7 and std.max() <= 0.2 + 1e-7
    ids = {id(p) for p in policy.std_parameters()}
    assert ids and ids.isdisjoint(id(p) for p in policy.mean_parameters())
    assert len(ids) + len(policy.mean_parameters()) == sum(p.requires_grad for p in policy.parameters())


def test_random_shift_translates_and_keeps_dtype():
    images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    shifted = bc.random_shift(images, 2, np.random.default_rng(0))
    assert shifted.dtype == torch.uint8 and shifted.shape == images.shape
    assert torch.equal(bc.random_shift(images, 0, np.random.default_rng(0)), images)
    # the centre of each image is a translated copy of the original
    for img, out in zip(images, shifted):
        assert any(torch.equal(out[:, 4:12, 4:12], img[:, 4 + dy:12 + dy, 4 + dx:12 + dx])
                   for dy in range(-2, 3) for dx in range(-2, 3))


class _Interrupt(Exception):
    pass


def test_bc_resume_equals_uninterrupted_and_encoder_stays_frozen(data, tmp_path, monkeypatch):
    enc = get_sentence_encoder()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    cfg, common = PolicyConfig(**TINY), CommonConfig(seed=1, num_threads=1)

    full = bc.train_policy_bc(cfg, common, data, tmp_path / "a", tmp_path / "a_ckpt", progress=False)
    assert np.isfinite(full["final_train_loss"]) and full["steps"] == 6

    real_loss, calls = bc.behaviour_cloning_loss, {"n": 0}

    def dies_on_step_five(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise _Interrupt
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(bc, "behaviour_cloning_loss", dies_on_step_five)
    with pytest.raises(_Interrupt):
        bc.train_policy_bc(cfg, common, data, tmp_path / "b", tmp_path / "b_ckpt", progress=False)
    monkeypatch.setattr(bc, "behaviour_cloning_loss", real_loss)
    resumed = bc.train_policy_bc(cfg, common, data, tmp_path / "b", tmp_path / "b_ckpt", resume=True, progress=False)
    assert resumed["resumed_from_step"] == 3
    assert abs(resumed["final_train_loss"] - full["final_train_loss"]) < 1e-5
    a, b = VLAPolicy.from_pretrained(tmp_path / "a"), VLAPolicy.from_pretrained(tmp_path / "b")
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(pa, pb, atol=1e-6, rtol=0, msg=name)

    # outputs of the run
    rows = json.loads((tmp_path / "a" / "curves.json").read_text())
    assert [r["step"] for r in rows] == [2, 4, 6]
    assert (tmp_path / "a" / "curves.csv").read_text().startswith("step,loss,")
    # the frozen encoder: untouched, gradient-free, in eval mode, not in the policy nor its optimizer
    for k, v in enc.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not enc.training and not any(p.requires_grad for p in enc.parameters())
    enc_ids = {id(p) for p in enc.parameters()}
    optim_ids = {id(p) for g in bc.build_optimizer(a, cfg).param_groups for p in g["params"]}
    assert enc_ids.isdisjoint(optim_ids) and enc_ids.isdisjoint(id(p) for p in a.parameters())
    assert a.num_parameters() < 1_000_000


def test_safetensors_round_trip_gives_identical_outputs_without_the_encoder(data, batch, tmp_path, monkeypatch):
    policy = make_policy(data).eval()
    policy.set_state_normalization(np.array([0.1, 0.6, 0.2, 0.5]), np.array([0.1, 0.1, 0.1, 0.2]))
    policy.save_pretrained(tmp_path / "p")
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["config.json", "model.safetensors"]
    meta = json.loads((tmp_path / "p" / "config.json").read_text())
    assert {"image_size", "chunk_len", "action_dim", "state_dim", "instructions", "architecture"} <= set(meta)
    # the architecture only (nanoGPT's split): training settings live in the artifact's manifest
    from vla_rft.policy.configuration import ARCHITECTURE_FIELDS

    assert set(meta["architecture"]) == set(ARCHITECTURE_FIELDS)
    assert not {"lr", "steps", "batch_size"} & set(meta["architecture"])
    assert meta["instructions"] == data.instructions

    import vla_rft.policy.text as text

    def no_encoder(*a, **k):
        raise AssertionError("loading a saved policy must not need the sentence encoder")

    monkeypatch.setattr(text, "embed_instructions", no_encoder)
    loaded = VLAPolicy.from_pretrained(tmp_path / "p")
    args = (batch["image"], batch["state"], batch["task_index"])
    d1, d2 = policy(*args), loaded(*args)
    assert torch.equal(d1.mean, d2.mean) and torch.equal(d1.std, d2.std)


def test_act_numpy_adapter(data):
    policy = make_policy(data)
    out = policy.act(data.images[:3], data.states[:3], data.task_index[:3])
    assert out.shape == (3, 8, 4) and out.dtype == np.float32
    noisy = policy.act(data.images[:3], data.states[:3], data.task_index[:3], deterministic=False,
                       generator=torch.Generator().manual_seed(0))
    assert noisy.shape == (3, 8, 4) and not np.allclose(noisy, out)
    with pytest.raises(ValueError, match="uint8"):
        policy.act(data.images[:3].astype(np.float32), data.states[:3], data.task_index[:3])

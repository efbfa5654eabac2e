"""Episode-mode RFT: closed-loop imagination, masking after success, group filtering, advantages by hand,
resume, honesty numbers, and policy rollouts in the real simulator (source: policy, training seeds only)."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from vla_rft import stages, storage
from vla_rft.config import CommonConfig, ConfigError, load_config
from vla_rft.data import concat_datasets, load_dataset
from vla_rft.policy.configuration import PolicyConfig
from vla_rft.policy.modeling import VLAPolicy
from vla_rft.rft.configuration import RFTConfig
from vla_rft.rft.episode import (episode_advantages, episode_outcomes, masked_clipped_loss, per_episode_threshold,
                                 pessimistic_probabilities, policy_success_rates, simulator_episodes,
                                 simulator_starts, start_rows, start_task_indices, train_episode_grpo)
from vla_rft.sim.perturbations import EpisodeSpec
from vla_rft.sim.vector import BatchedSimulator
from vla_rft.rft.honesty import exploitation_warnings, honesty_from_outcomes, success_threshold
from vla_rft.success.configuration import SuccessModelConfig
from vla_rft.success.modeling import SuccessModel
from vla_rft.world_model.configuration import WorldModelConfig
from vla_rft.world_model.imagine import imagine_episodes
from vla_rft.world_model.modeling import WorldModel

POLICY = dict(cnn_channels=(8, 8, 16, 16), hidden_size=32, num_layers=1, num_heads=2, mlp_ratio=2, keypoints=0)
WORLD = dict(channels=(8, 16, 32), patch_size=2, hidden_size=32, num_layers=1, num_heads=2, frame_channels=8,
             cond_size=16)


@pytest.fixture(scope="module")
def data(tiny_dataset):
    return load_dataset(tiny_dataset[0])


def _policy(data, seed=0):
    torch.manual_seed(seed)
    policy = VLAPolicy(PolicyConfig(**POLICY), image_size=data.image_size, chunk_len=8, action_dim=data.action_dim,
                       state_dim=data.state_dim, instructions=data.instructions,
                       instruction_embeddings=torch.randn(len(data.instructions), 384))
    return policy


def _world_model(data):
    """A world model whose output depends on context and actions (its zero-initialised head randomised)."""
    torch.manual_seed(1)
    wm = WorldModel(WorldModelConfig(**WORLD), data.image_size, 8, data.action_dim, data.state_dim)
    with torch.no_grad():
        for p in wm.head.parameters():
            p.normal_(0, 0.3)
        for p in wm.state_head.parameters():
            p.normal_(0, 0.3)
    return wm.eval()


def test_closed_loop_imagination_feeds_predicted_frames_back(data):
    wm = _world_model(data)
    images = torch.from_numpy(np.ascontiguousarray(data.images[[0, 10]].transpose(0, 3, 1, 2)))
    states, tasks = torch.from_numpy(data.states[[0, 10]]), torch.from_numpy(data.task_index[[0, 10]])

    def act(img, st, ti, h):  # the action depends on the frame it sees
        level = img.float().mean(dim=(1, 2, 3)) / 255.0
        return (level[:, None, None] * 4 - 2).expand(len(img), 8, 4).clone()

    ep = imagine_episodes(wm, act, images, states, tasks, horizon=3)
    assert ep.context_images.shape == (2, 3, 3, 64, 64) and ep.actions.shape == (2, 3, 8, 4)
    assert torch.equal(ep.context_images[:, 0], images)
    assert torch.equal(ep.context_images[:, 1], ep.last_frames[:, 0])  # the prediction is what the policy sees
    assert torch.equal(ep.context_states[:, 2], ep.states[:, 1])
    open_loop = act(images, states, tasks, 0)
    assert not torch.allclose(ep.actions[:, 2], open_loop)  # closed loop acts differently from open loop
    # decoding only each chunk's last frame gives the last frame and state of decoding all K
    for h in range(3):
        frames, rolled = wm.rollout(ep.context_images[:, h], ep.actions[:, h].clamp(-1, 1), ep.context_states[:, h],
                                    return_states=True)
        full_last = torch.round(frames[:, -1] * 255).to(torch.uint8)
        assert (full_last.int() - ep.last_frames[:, h].int()).abs().max() <= 1
        assert torch.allclose(rolled[:, -1], ep.states[:, h], atol=1e-4)
    with pytest.raises(ValueError, match="act returned actions of shape"):
        imagine_episodes(wm, lambda i, s, t, h: torch.zeros(len(i), 3, 4), images, states, tasks, horizon=1)


def test_episode_ends_at_the_first_success_and_later_chunks_are_masked():
    probs = torch.tensor([[0.1, 0.95, 0.2, 0.99], [0.1, 0.2, 0.3, 0.4], [0.91, 0.1, 0.1, 0.1]])
    success, mask = episode_outcomes(probs, 0.9)
    assert success.tolist() == [True, False, True]
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]


def test_per_task_thresholds_judge_each_episode_by_its_own_tasks_threshold():
    judge = SuccessModel(SuccessModelConfig(channels=[4], hidden_size=4, task_embedding=2), image_size=16,
                         tasks=["reach", "push"])
    judge.threshold, judge.task_thresholds = 0.9, {"reach": 0.5, "push": 0.95}
    # the same probabilities: a reach episode succeeds at 0.6, a push one needs 0.95
    probs = torch.tensor([[0.1, 0.6, 0.2], [0.1, 0.6, 0.2], [0.1, 0.6, 0.96]])
    th = per_episode_threshold(judge.task_thresholds, judge, torch.tensor([0, 1, 1]))
    assert th.shape == (3, 1) and th[:, 0].tolist() == pytest.approx([0.5, 0.95, 0.95])
    success, mask = episode_outcomes(probs, th)
    assert success.tolist() == [True, False, True]
    assert mask.tolist() == [[1, 1, 0], [1, 1, 1], [1, 1, 1]]
    assert per_episode_threshold(0.9, judge, torch.tensor([0, 1])) == 0.9  # a single threshold stays a float
    with pytest.raises(ValueError, match=r"miss task\(s\) \['push'\]"):
        per_episode_threshold({"reach": 0.5}, judge, torch.tensor([0]))

    def cfg(**rft):
        return load_config("params.yaml", "quick", [f"rft.{k}={v}" for k, v in rft.items()])

    assert success_threshold(cfg(success_threshold_source="calibrated"), judge) == 0.9
    assert success_threshold(cfg(success_threshold_source="per_task"), judge) == {"reach": 0.5, "push": 0.95}
    assert success_threshold(cfg(success_threshold_source="fixed", success_threshold=0.7), judge) == 0.7
    judge.task_thresholds = {}  # a judge calibrated before per-task thresholds existed
    with pytest.raises(ValueError, match="per_task needs a success model calibrated per task"):
        success_threshold(cfg(success_threshold_source="per_task"), judge)


def test_trajectory_advantages_and_group_filtering_by_hand():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 1.0]])
    adv, kept = episode_advantages(rewards, 0.0, filter_groups=True)
    assert kept.tolist() == [True, False, True]
    std0 = torch.tensor([1.0, 0, 0, 1]).std()
    assert torch.allclose(adv[0], (rewards[0] - 0.5) / std0)
    assert torch.equal(adv[1], torch.zeros(4))
    std2 = torch.tensor([0.0, 0, 0, 1]).std()
    assert torch.allclose(adv[2], (rewards[2] - 0.25) / std2)
    _, kept_all = episode_advantages(rewards, 0.0, filter_groups=False)
    assert kept_all.all()


def test_masked_clipped_loss_by_hand():
    logp = torch.log(torch.tensor([1.5, 1.0, 0.5, 2.0]))  # ratios 1.5, 1, 0.5, 2 (old logp 0)
    adv = torch.tensor([1.0, -1.0, 1.0, 5.0])
    mask = torch.tensor([1.0, 1.0, 1.0, 0.0])  # the last chunk is after success: ignored
    loss, clip_frac = masked_clipped_loss(logp, torch.zeros(4), adv, mask, 0.2, 0.28)
    # min(1.5*1, 1.28*1) = 1.28; min(-1, -1) = -1; min(0.5, 0.8) = 0.5
    assert loss.item() == pytest.approx(-(1.28 - 1 + 0.5) / 3)
    assert clip_frac == pytest.approx(2 / 3)


def test_episode_grpo_updates_and_resume_equals_uninterrupted(data, tmp_path):
    judge = SuccessModel(SuccessModelConfig(channels=[8, 8], hidden_size=8, task_embedding=4), image_size=64,
                         tasks=data.tasks)
    wm = _world_model(data)
    common = CommonConfig(seed=2, num_threads=2)
    cfg = dict(mode="episode", steps=2, batch_starts=2, group_size=3, horizon=2, checkpoint_interval=1,
               filter_groups=False, progress_coef=1.0, ppo_epochs=1, lr=1e-3)
    full_policy = _policy(data)
    base = {k: v.clone() for k, v in full_policy.state_dict().items()}
    s = train_episode_grpo(RFTConfig(**cfg), common, data, wm, full_policy, judge, 0.5, tmp_path / "a",
                           tmp_path / "a.ckpt", progress=False)
    assert any(not torch.equal(base[k], v) for k, v in full_policy.state_dict().items())
    assert s["groups_total"] == 4 and (tmp_path / "a" / "curves.csv").exists()
    part = _policy(data)
    train_episode_grpo(RFTConfig(**{**cfg, "steps": 1}), common, data, wm, part, judge, 0.5, tmp_path / "b",
                       tmp_path / "b.ckpt", progress=False)
    resumed = _policy(data)
    train_episode_grpo(RFTConfig(**cfg), common, data, wm, resumed, judge, 0.5, tmp_path / "b", tmp_path / "b.ckpt",
                       resume=True, progress=False)
    for (name, x), (_, y) in zip(full_policy.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(x, y), name
    # all-equal outcomes with filtering: every group dropped, counted, nothing learned
    none = _policy(data)
    s = train_episode_grpo(RFTConfig(**{**cfg, "steps": 1, "progress_coef": 0.0, "filter_groups": True,
                                        "start_tasks": [data.tasks[1]]}), common,
                           data, wm, none, judge, 0.999999, tmp_path / "c", tmp_path / "c.ckpt", progress=False)
    assert s["groups_dropped"] == 2 and s["start_tasks"] == [data.tasks[1]]
    assert all(torch.equal(base[k], v) for k, v in none.state_dict().items())


def test_a_veto_world_model_counts_only_the_successes_it_reproduces(data, tmp_path):
    p = torch.tensor([[0.2, 0.95, 0.99], [0.97, 0.1, 0.1]])
    v = torch.tensor([[0.9, 0.5, 0.96], [0.2, 0.3, 0.1]])
    low = pessimistic_probabilities(p, v)
    assert torch.equal(low, torch.tensor([[0.2, 0.5, 0.96], [0.2, 0.1, 0.1]]))
    success, mask = episode_outcomes(low, 0.95)  # episode 0 succeeds one chunk later, episode 1 not at all
    assert success.tolist() == [True, False] and mask.tolist() == [[1, 1, 1], [1, 1, 1]]
    with pytest.raises(ValueError, match="cannot be paired chunk by chunk"):
        pessimistic_probabilities(p, v[:, :2])

    torch.manual_seed(0)
    judge = SuccessModel(SuccessModelConfig(channels=[8, 8], hidden_size=8, task_embedding=4), image_size=64,
                         tasks=data.tasks)
    wm, other = _world_model(data), _world_model(data)
    with torch.no_grad():  # a second world model that renders other frames: its zero head keeps the start frame
        for q in other.head.parameters():
            q.zero_()
        # imagined frames of random actions from dataset frames, to centre the judge on
        rows = np.arange(0, len(data.images), max(1, len(data.images) // 32))
        images = torch.from_numpy(np.ascontiguousarray(data.images[rows].transpose(0, 3, 1, 2)))
        acts = torch.randn(len(rows), 3, 8, data.action_dim, generator=torch.Generator().manual_seed(0)) * 0.5
        ep = imagine_episodes(wm, lambda _i, _s, _t, h: acts[:, h], images, torch.from_numpy(data.states[rows]),
                              torch.from_numpy(data.task_index[rows]), 3)
        frames, no_task = ep.last_frames.flatten(0, 1), torch.zeros(len(rows) * 3, dtype=torch.long)
        # a judge whose answer depends on the frames (an untrained one answers ~ the same for all):
        # logits scaled up and centred on these frames
        judge.task_embeddings.weight.zero_()
        judge.head[-1].weight.mul_(1000.0)
        judge.head[-1].bias.sub_(judge(frames, no_task).median())
        # a threshold that half the imagined episodes reach: the median of their peak probability
        threshold = float(judge.probability(frames, no_task).reshape(len(rows), 3).max(1).values.median())
    common = CommonConfig(seed=3, num_threads=2)
    cfg = RFTConfig(mode="episode", steps=1, batch_starts=4, group_size=4, horizon=3, checkpoint_interval=0,
                    ppo_epochs=1, lr=1e-3)

    def run(name, veto):
        policy = _policy(data)
        s = train_episode_grpo(cfg, common, data, wm, policy, judge, threshold, tmp_path / name, tmp_path / f"{name}.ckpt",
                               progress=False, veto_world_model=veto)
        rows = (tmp_path / name / "curves.csv").read_text().splitlines()
        row = dict(zip(rows[0].split(","), rows[1].split(",")))
        return s, row, policy.state_dict()

    alone, row0, w0 = run("alone", None)
    same, _, w1 = run("same", wm)  # replaying in the same world model gives the same frames: nothing vetoed
    assert same["vetoed_successes"] == 0 and all(torch.equal(w0[k], w1[k]) for k in w0)
    vetoed, row2, _ = run("vetoed", other)
    n = cfg.batch_starts * cfg.group_size
    # the same starts and sampled actions at step 1: every vetoed episode is a success lost, none gained
    assert 0 < vetoed["vetoed_successes"] == round(n * (float(row0["success_rate"]) - float(row2["success_rate"])))
    assert int(row2["vetoed"]) == vetoed["vetoed_successes"] and vetoed["veto_world_model"] and not alone["veto_world_model"]
    # chunk mode has no success reward: a veto world model there is refused before anything is read
    chunk = load_config("params.yaml", "quick", ["rft.mode=chunk"])
    with pytest.raises(ValueError, match="episode-mode input"):
        stages.rft(chunk, "missing-data", "missing-wm", "missing-policy", str(tmp_path / "out"),
                   veto_world_model_uri="missing-veto")
    assert not (tmp_path / "out").exists()


def test_simulator_episodes_replay_a_recording_feed_its_frames_back_and_stop_at_its_success(data):
    """The real-simulator environment of episode mode: ``act`` sees the simulator's own frames (a recorded
    expert episode's executed actions, replayed chunk by chunk, reproduce its frames), the reward is 1 in the
    chunk where the success flag first held, and the env is not stepped after it."""
    ep = next(e for e in data.episodes if e["success"] and e["split"] == "train")
    lo, n = ep["dataset_from_index"], ep["length"]
    first = int(np.flatnonzero(data.successes[lo:lo + n])[0])  # the action after which success first held
    k, hit = 8, first // 8
    horizon = hit + 3
    recorded = np.zeros((horizon * k, data.action_dim), np.float32)
    m = min(n, horizon * k)
    recorded[:m] = data.actions[lo:lo + m]
    seen = []

    def act(images, states, task_index, h):
        seen.append(images.clone())
        assert task_index.tolist() == [0]
        return torch.from_numpy(recorded[h * k:(h + 1) * k])[None]

    spec = EpisodeSpec(data.tasks[int(ep["task_index"])], int(ep["seed"]))
    with BatchedSimulator(image_size=data.image_size, num_workers=0) as sim:
        episodes, probs = simulator_episodes(sim, act, [spec], torch.tensor([0]), horizon, k)
        assert sim.max_episode_steps == 150  # restored
    want = torch.zeros(1, horizon)
    want[0, hit] = 1.0
    assert torch.equal(probs, want)
    frames = episodes.context_images[0]
    for h in range(hit + 1):  # the frame before action h * k, as recorded
        assert torch.equal(frames[h].permute(1, 2, 0), torch.from_numpy(data.images[lo + h * k])), h
        assert torch.equal(seen[h][0], frames[h])
    for h in range(hit + 1, horizon):  # fed back from the previous chunk; no step after the success chunk
        assert torch.equal(frames[h], episodes.last_frames[0, h - 1])
        assert torch.equal(frames[h], frames[hit + 1])
    assert torch.equal(episodes.context_states[0, 0], torch.from_numpy(data.states[lo]))
    assert episodes.actions.shape == (1, horizon, k, data.action_dim)
    success, mask = episode_outcomes(probs, 0.5)
    assert success.tolist() == [True] and mask[0].tolist() == [1.0] * (hit + 1) + [0.0] * (horizon - hit - 1)

    # several episodes over two workers: the simulator gets them spread out (A, B | A), the caller its own order
    other = next(e for e in data.episodes if e["task_index"] != ep["task_index"])
    spec_b = EpisodeSpec(data.tasks[int(other["task_index"])], int(other["seed"]))

    def act_many(images, states, task_index, h):
        chunk = torch.zeros(len(task_index), k, data.action_dim)
        chunk[task_index == 0] = torch.from_numpy(recorded[h * k:(h + 1) * k])
        return chunk

    with BatchedSimulator(image_size=data.image_size, num_workers=2) as sim:
        many, many_probs = simulator_episodes(sim, act_many, [spec, spec, spec_b], torch.tensor([0, 0, 1]), horizon, k)
    with BatchedSimulator(image_size=data.image_size, num_workers=0) as sim:
        alone_b, alone_b_probs = simulator_episodes(sim, act_many, [spec_b], torch.tensor([1]), horizon, k)
    for row, (ref, ref_probs) in enumerate([(episodes, probs), (episodes, probs), (alone_b, alone_b_probs)]):
        assert torch.equal(many_probs[row], ref_probs[0]), row
        for name in ("context_images", "context_states", "actions", "last_frames", "states"):
            assert torch.equal(getattr(many, name)[row], getattr(ref, name)[0]), (row, name)


def test_grpo_in_the_simulator_uses_new_layouts_each_step_and_resume_equals_uninterrupted(data, tmp_path):
    cfg = dict(mode="episode", environment="simulator", keyframe_share=0.0, steps=2, batch_starts=2, group_size=2,
               horizon=2, checkpoint_interval=1, filter_groups=False, ppo_epochs=1, lr=1e-3)
    specs = [simulator_starts(RFTConfig(**cfg), data, step, np.random.default_rng(step)) for step in (0, 1)]
    assert [[s.seed for s in sp] for sp in specs] == [[700_000, 700_001], [700_002, 700_003]]
    assert all(len({s.task for s in sp}) == 2 for sp in specs)  # distinct tasks while there are enough
    common, wm, judge = CommonConfig(seed=2, num_threads=2), _world_model(data), None
    with BatchedSimulator(image_size=data.image_size, num_workers=0) as sim:
        full = _policy(data)
        base = {k: v.clone() for k, v in full.state_dict().items()}
        s = train_episode_grpo(RFTConfig(**cfg), common, data, wm, full, judge, 0.5, tmp_path / "a",
                               tmp_path / "a.ckpt", progress=False, simulator=sim)
        assert s["environment"] == "simulator" and s["simulator_episodes"] == 8
        assert s["simulator_seeds"] == [700_000, 700_004]
        assert any(not torch.equal(base[k], v) for k, v in full.state_dict().items())
        train_episode_grpo(RFTConfig(**{**cfg, "steps": 1}), common, data, wm, _policy(data), judge, 0.5,
                           tmp_path / "b", tmp_path / "b.ckpt", progress=False, simulator=sim)
        resumed = _policy(data)
        train_episode_grpo(RFTConfig(**cfg), common, data, wm, resumed, judge, 0.5, tmp_path / "b", tmp_path / "b.ckpt",
                           resume=True, progress=False, simulator=sim)
        for (name, x), (_, y) in zip(full.state_dict().items(), resumed.state_dict().items()):
            assert torch.equal(x, y), name
        with pytest.raises(ValueError, match="pass a simulator exactly"):
            train_episode_grpo(RFTConfig(**{**cfg, "environment": "world_model"}), common, data, wm, _policy(data),
                               judge, 0.5, tmp_path / "c", tmp_path / "c.ckpt", progress=False, simulator=sim)


def test_honesty_numbers_by_hand_and_the_warning():
    tasks = ["push", "reach"]
    task_of = np.array(["push"] * 4 + ["reach"] * 4)
    real = np.array([1, 0, 0, 0, 1, 1, 0, 0], bool)
    imagined = np.array([1, 1, 1, 1, 1, 1, 1, 0], bool)
    h = honesty_from_outcomes(tasks, task_of, imagined, real)
    assert h["per_task"]["push"] == {"episodes": 4, "imagined_success": 1.0, "real_success": 0.25}
    assert h["mean_abs_difference"] == pytest.approx((0.75 + 0.25) / 2)
    assert h["hallucination_rate"] == pytest.approx(4 / 5)  # of 5 real failures, 4 imagined successful
    assert h["hallucinated_episodes"] == pytest.approx(4 / 8) and h["false_success_share"] == pytest.approx(4 / 7)
    assert h["warnings"] and "cannot tell success from failure" in h["warnings"][0]
    honest = honesty_from_outcomes(tasks, task_of, real.copy(), real)
    assert honest["hallucination_rate"] == 0 and not honest["warnings"] and honest["mean_abs_difference"] == 0
    # after RFT: a rise of 10 points or more in hallucination is called exploitation, less is not
    assert exploitation_warnings(honest, h) and "exploits the world model" in exploitation_warnings(honest, h)[0]
    assert not exploitation_warnings(h, honest)
    assert not exploitation_warnings({"hallucination_rate": 0.3}, {"hallucination_rate": 0.39})
    assert exploitation_warnings({"hallucination_rate": None}, {"hallucination_rate": 0.1})


def test_rft_config_names_bad_episode_values():
    with pytest.raises(ConfigError, match="rft.mode"):
        RFTConfig(mode="trajectory")
    with pytest.raises(ConfigError, match="rft.success_threshold_source"):
        RFTConfig(success_threshold_source="guess")
    with pytest.raises(ConfigError, match="rft.honesty_seed_offset"):
        RFTConfig(honesty_seed_offset=1_000_000)
    with pytest.raises(ConfigError, match="rft.skip_solved_at"):
        RFTConfig(mode="episode", skip_solved_at=1.5)
    with pytest.raises(ConfigError, match="twice"):
        RFTConfig(mode="episode", start_tasks=["push", "push"])
    with pytest.raises(ConfigError, match="chunk"):  # chunk mode has no episode starts to choose
        RFTConfig(start_tasks=["push"])
    with pytest.raises(ConfigError, match="rft.environment: unknown value 'mujoco'"):
        RFTConfig(mode="episode", environment="mujoco")
    with pytest.raises(ConfigError, match="rft.mode is 'chunk'"):
        RFTConfig(environment="simulator", keyframe_share=0)
    with pytest.raises(ConfigError, match="rft.keyframe_share=0"):
        RFTConfig(mode="episode", environment="simulator")
    with pytest.raises(ConfigError, match="rft.progress_coef"):
        RFTConfig(mode="episode", environment="simulator", keyframe_share=0, progress_coef=1.0)
    with pytest.raises(ConfigError, match="999999..1003198"):  # 400 steps x 8 starts past the evaluation seeds
        RFTConfig(mode="episode", environment="simulator", keyframe_share=0, simulator_seed_offset=999_999)


SETS = ["sim.tasks=[push, drawer-open]", "sim.num_workers=0", "sim.max_episode_steps=24",
        "collect_rollouts.episodes_per_task=2", "collect_rollouts.post_success_steps=0"]


@pytest.fixture(scope="module")
def rollouts(data, tmp_path_factory):
    """An untrained policy's rollouts recorded by the collect-rollouts stage, and the policy artifact."""
    tmp = tmp_path_factory.mktemp("rollouts")
    policy_dir = tmp / "policy"
    _policy(data).save_pretrained(tmp / "policy_raw")
    storage.write_artifact(tmp / "policy_raw", str(policy_dir), kind="policy", config={})
    s = stages.collect_rollouts(load_config("params.yaml", "quick", SETS), str(policy_dir), str(tmp / "rollouts"),
                                progress=False)
    return tmp / "rollouts", policy_dir, s


def test_collect_rollouts_keeps_failures_as_policy_data_on_training_seeds(data, rollouts, tmp_path):
    _, policy_dir, s = rollouts
    sets = SETS
    out = load_dataset(rollouts[0])
    assert s["episodes"] == 4 and {e["source"] for e in out.episodes} == {"policy"}
    assert not all(e["success"] for e in out.episodes)  # an untrained policy fails; failures are kept
    assert all(500_000 <= e["seed"] < 1_000_000 for e in out.episodes)
    assert all(e["length"] == 24 for e in out.episodes if not e["success"])
    both = concat_datasets([data, out])
    assert [e["source"] for e in both.episodes].count("policy") == 4
    assert both.episodes[-1]["dataset_to_index"] == len(both.images)
    with pytest.raises(ConfigError, match="evaluation seeds"):
        stages.collect_rollouts(load_config("params.yaml", "quick", sets + ["collect_rollouts.seed_offset=999999"]),
                                str(policy_dir), str(tmp_path / "r2"), progress=False)
    with pytest.raises(ConfigError, match="expert data"):
        stages.collect_rollouts(load_config("params.yaml", "quick", sets + ["collect_rollouts.seed_offset=0"]),
                                str(policy_dir), str(tmp_path / "r3"), progress=False)


def test_starts_come_from_the_chosen_tasks_and_not_from_those_the_rollouts_solve(data, rollouts):
    import dataclasses

    both = concat_datasets([data, load_dataset(rollouts[0])])
    push, drawer = both.tasks.index("push"), both.tasks.index("drawer-open")
    assert start_task_indices(both, [], 0.0) is None  # every task
    chosen = start_task_indices(both, ["drawer-open", "push"], 0.0)
    assert chosen == [drawer, push]
    rows = start_rows(both, "train", 200, 0.5, np.random.default_rng(0), chosen)
    assert set(both.task_index[rows].tolist()) == {push, drawer}
    assert set(both.task_index[start_rows(both, "train", 200, 0.5, np.random.default_rng(0))].tolist()) \
        == set(range(len(both.tasks)))
    # the untrained policy's rollouts all fail: nothing is solved, nothing skipped
    assert policy_success_rates(both) == {push: 0.0, drawer: 0.0}
    assert start_task_indices(both, [], 0.5) == list(range(len(both.tasks)))
    # push's rollouts made successful: push is solved and skipped, drawer-open and the tasks without rollouts kept
    eps = [dict(e, success=True) if e["source"] == "policy" and e["task_index"] == push else e for e in both.episodes]
    solved = dataclasses.replace(both, episodes=eps)
    assert policy_success_rates(solved) == {push: 1.0, drawer: 0.0}
    assert start_task_indices(solved, [], 0.9) == [t for t in range(len(both.tasks)) if t != push]
    with pytest.raises(ConfigError, match="leave no task"):
        start_task_indices(solved, ["push"], 0.9)
    with pytest.raises(ConfigError, match="pick-place"):  # not among the quick dataset's tasks
        start_task_indices(both, ["pick-place"], 0.0)
    with pytest.raises(ConfigError, match="no policy rollouts"):
        start_task_indices(data, [], 0.5)


def test_datasets_without_a_source_column_read_as_expert(tiny_dataset, tmp_path):
    import shutil

    root = tmp_path / "old"
    shutil.copytree(tiny_dataset[0], root)
    path = root / "meta" / "episodes" / "chunk-000" / "file-000.parquet"
    table = pq.read_table(path)
    pq.write_table(table.drop(["source"]), path)
    assert {e["source"] for e in load_dataset(root).episodes} == {"expert"}


def test_grounding_success_model_and_episode_rft_stages_write_honesty(tiny_dataset, rollouts, tmp_path):
    """The stages end to end on tiny sizes: ground the world model on rollouts, train the judge, run
    episode-mode RFT; the artifact holds honesty.json from real episodes on held-out training seeds."""
    import json

    dataset, (roll, policy_dir, _) = str(tiny_dataset[0]), rollouts
    sets = SETS + [f"world_model.{k}={v}" for k, v in (("channels", "[8, 16, 32]"), ("patch_size", 2),
                   ("hidden_size", 32), ("num_layers", 1), ("num_heads", 2), ("frame_channels", 8), ("cond_size", 16),
                   ("steps", 2), ("ground_steps", 3), ("batch_size", 4), ("warmup_steps", 1), ("eval_chunks", 8),
                   ("eval_batch_size", 8), ("gif_chunks", 1), ("log_interval", 1), ("checkpoint_interval", 0))]
    sets += ["success_model.steps=4", "success_model.imagined_steps=2", "success_model.channels=[8, 8]",
             "success_model.hidden_size=8",
             "success_model.batch_size=8", "rft.mode=episode", "rft.steps=1", "rft.batch_starts=2", "rft.group_size=2",
             "rft.horizon=15", "rft.honesty_episodes_per_task=1", "rft.checkpoint_interval=1"]
    cfg = load_config("params.yaml", "quick", sets)
    # the tiny policy was built with the tiny dataset's 2 tasks; expert WM first, then grounded on rollouts
    stages.train_world_model(cfg, dataset, str(tmp_path / "wm"), progress=False)
    g = stages.ground_world_model(cfg, dataset, str(roll), str(tmp_path / "wm"), str(tmp_path / "wm_g"), progress=False)
    manifest = storage.read_manifest(str(tmp_path / "wm_g"))
    assert manifest["config"]["init_from"] == str(tmp_path / "wm") and len(manifest["config"]["dataset"]) == 2
    assert g["train"]["steps"] == 3  # world_model.ground_steps, not world_model.steps
    assert g["train"]["train_chunks"] > stages.train_world_model(
        cfg, dataset, str(tmp_path / "wm2"), progress=False)["train"]["train_chunks"]
    with pytest.raises(ValueError, match="pass --world-model"):
        stages.train_success_model(cfg, [dataset, str(roll)], str(tmp_path / "j0"), progress=False)
    sm = stages.train_success_model(cfg, [dataset, str(roll)], str(tmp_path / "judge"),
                                    world_model_uri=str(tmp_path / "wm_g"), progress=False)
    judge_manifest = storage.read_manifest(str(tmp_path / "judge"))
    assert judge_manifest["kind"] == "success_model"
    assert judge_manifest["config"]["world_model"] == str(tmp_path / "wm_g")
    calibration = sm["train"]["calibration"]
    assert "source_policy" in calibration["auc"] and calibration["calibrated_on"] == "imagined val frames"
    assert sm["train"]["steps"] == 4 + 2 and calibration["imagined"]["train_frames"] > 0
    with pytest.raises(ValueError, match="--success-model"):
        stages.rft(cfg, dataset, str(tmp_path / "wm_g"), str(policy_dir), str(tmp_path / "x"), progress=False)
    r = stages.rft(cfg, dataset, str(tmp_path / "wm_g"), str(policy_dir), str(tmp_path / "rft"), progress=False,
                   success_model_uri=str(tmp_path / "judge"), rollouts_uri=str(roll))
    honesty = json.loads((tmp_path / "rft" / "honesty.json").read_text())
    assert honesty["episodes"] == 2 and honesty["seeds"] == [900_000, 900_001]
    assert {"imagined_auc", "false_success_share", "hallucination_rate"} <= set(honesty)
    # per layout, paired: each start's imagined and real outcome, consistent with the rates
    ep = honesty["episode_outcomes"]
    assert sorted(zip(ep["seed"], ep["task"])) == sorted((s, t) for s in (900_000,) for t in ("push", "drawer-open"))
    assert set(ep["imagined"]) <= {0, 1} and set(ep["real"]) <= {0, 1}
    assert sum(ep["real"]) / len(ep["real"]) == pytest.approx(honesty["real_success"])
    assert sum(ep["imagined"]) / len(ep["imagined"]) == pytest.approx(honesty["imagined_success"])
    # the same check for the fine-tuned policy, on the same layouts
    assert honesty["after_training"]["episodes"] == 2 and honesty["after_training"]["seeds"] == honesty["seeds"]
    assert set(honesty["per_task"]) == {"push", "drawer-open"} and r["train"]["mode"] == "episode"
    assert (tmp_path / "rft" / "model.safetensors").exists()
    # a veto world model (the expert-only one): training and both honesty checks judge the pessimistic
    # outcome, so the base policy's imagined successes can only shrink; its real ones are the same episodes
    v = stages.rft(cfg, dataset, str(tmp_path / "wm_g"), str(policy_dir), str(tmp_path / "rft_veto"), progress=False,
                   success_model_uri=str(tmp_path / "judge"), rollouts_uri=str(roll),
                   veto_world_model_uri=str(tmp_path / "wm"))
    vh = json.loads((tmp_path / "rft_veto" / "honesty.json").read_text())
    assert vh["veto_world_model"] and not honesty["veto_world_model"] and v["train"]["veto_world_model"]
    assert vh["episode_outcomes"]["real"] == ep["real"] and vh["episode_outcomes"]["seed"] == ep["seed"]
    assert all(a <= b for a, b in zip(vh["episode_outcomes"]["imagined"], ep["imagined"]))
    assert storage.read_manifest(str(tmp_path / "rft_veto"))["config"]["veto_world_model"] == str(tmp_path / "wm")
    # GRPO in the real simulator (the baseline): new layouts, counted; none may be one the data recorded
    sim_sets = sets + ["rft.environment=simulator", "rft.keyframe_share=0"]
    r = stages.rft(load_config("params.yaml", "quick", sim_sets), dataset, str(tmp_path / "wm_g"), str(policy_dir),
                   str(tmp_path / "rft_sim"), progress=False, success_model_uri=str(tmp_path / "judge"),
                   rollouts_uri=str(roll))
    assert r["train"]["environment"] == "simulator" and r["train"]["simulator_episodes"] == 4
    assert r["train"]["simulator_seeds"] == [700_000, 700_002] and r["honesty"]["seeds"] == [900_000, 900_001]
    for offset, clash in ((0, "data's episode seeds"), (899_999, "honesty check's seeds")):
        with pytest.raises(ConfigError, match=clash):
            stages.rft(load_config("params.yaml", "quick", sim_sets + [f"rft.simulator_seed_offset={offset}"]), dataset,
                       str(tmp_path / "wm_g"), str(policy_dir), str(tmp_path / "rft_sim_bad"), progress=False,
                       success_model_uri=str(tmp_path / "judge"), rollouts_uri=str(roll))
        assert not (tmp_path / "rft_sim_bad").exists()


def test_filtered_bc_learns_from_successful_episodes_only(data, rollouts, tmp_path):
    """pretrain-policy on expert data + rollouts: `policy.episodes: all` samples every rollout chunk,
    `successful` only those of successful episodes (the filtered-BC baseline); none left is refused."""
    from dataclasses import replace

    from vla_rft.data import DatasetValidationError
    from vla_rft.data.parquet import successful_episodes

    roll = rollouts[0]
    bc = [f"policy.{k}={v}" for k, v in (("cnn_channels", "[8, 8, 16, 16]"), ("hidden_size", 32), ("num_layers", 1),
          ("num_heads", 2), ("mlp_ratio", 2), ("keypoints", 0), ("steps", 2), ("batch_size", 4), ("warmup_steps", 1),
          ("eval_interval", 0), ("eval_chunks", 8), ("checkpoint_interval", 0), ("log_interval", 1))]
    starts = lambda eps: sum(max(0, e["length"] - 8) for e in eps if e["split"] == "train")  # noqa: E731
    rolled = load_dataset(roll).episodes
    runs = {}
    for mode in ("all", "successful"):
        cfg = load_config("params.yaml", "quick", SETS + bc + [f"policy.episodes={mode}"])
        runs[mode] = stages.pretrain_policy(cfg, [str(data.root), str(roll)], str(tmp_path / mode), progress=False)
    assert runs["all"]["train"]["train_chunks"] == starts(data.episodes) + starts(rolled)
    assert runs["successful"]["train"]["train_chunks"] == starts(data.episodes) + starts(
        [e for e in rolled if e["success"]])
    assert starts([e for e in rolled if not e["success"]]) > 0  # the filter had something to drop
    manifest = storage.read_manifest(str(tmp_path / "successful"))
    assert manifest["config"]["dataset"] == [str(data.root), str(roll)]
    assert manifest["config"]["policy"]["episodes"] == "successful"
    failed = replace(load_dataset(roll), episodes=[{**e, "success": False} for e in rolled])
    with pytest.raises(DatasetValidationError, match="no successful training episode"):
        successful_episodes(failed)
    with pytest.raises(ConfigError, match="policy.episodes: 'best' is not allowed; allowed values: all, successful"):
        load_config("params.yaml", "quick", ["policy.episodes=best"])

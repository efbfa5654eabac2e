"""The environment state (objects, goal): recorded from the real simulator, stored and read back, predicted
by a world model that never shows it to the policy, and judged by a state success model."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from vla_rft.config import CommonConfig, ConfigError
from vla_rft.data import concat_datasets, load_dataset
from vla_rft.data.parquet import episodes_of, write_dataset
from vla_rft.data.schema import OBS_ENV_STATE, DatasetValidationError
from vla_rft.rft.configuration import RFTConfig
from vla_rft.rft.episode import judge_probabilities, train_episode_grpo
from vla_rft.sim.env import MetaWorldEnv, environment_state
from vla_rft.sim.perturbations import EpisodeSpec
from vla_rft.success.configuration import SuccessModelConfig
from vla_rft.success.modeling import SuccessModel
from vla_rft.success.train import frame_labels, train_success_model
from vla_rft.tasks import ENV_STATE_DIM, STATE_DIM
from vla_rft.world_model.configuration import WorldModelConfig
from vla_rft.world_model.imagine import imagine_episodes
from vla_rft.world_model.modeling import WorldModel
from vla_rft.world_model.train import build_model, with_environment_state

from test_episode_rft import WORLD, _policy

STATE_JUDGE = dict(input="state", channels=[32, 32], hidden_size=16, task_embedding=4, batch_size=32,
                   checkpoint_interval=0, log_interval=10, imagined_steps=0)


@pytest.fixture(scope="module")
def data(tiny_dataset):
    return load_dataset(tiny_dataset[0])


def test_recorded_environment_state_is_where_the_simulator_puts_object_and_goal(data):
    assert data.env_states is not None and data.env_states.shape == (len(data.images), ENV_STATE_DIM)
    assert data.info["features"][OBS_ENV_STATE]["shape"] == [ENV_STATE_DIM]
    env = MetaWorldEnv("push")
    push = data.tasks.index("push")
    for ep in [e for e in data.episodes if e["task_index"] == push]:
        lo, hi = ep["dataset_from_index"], ep["dataset_to_index"]
        obs = env.reset(EpisodeSpec("push", int(ep["seed"])))
        np.testing.assert_allclose(data.env_states[lo], environment_state(obs), atol=1e-6)
        np.testing.assert_allclose(data.env_states[lo, :3], env.object_position(), atol=1e-6)
        np.testing.assert_allclose(data.env_states[lo:hi, 14:], np.repeat(env.goal_position()[None], hi - lo, 0),
                                   atol=1e-6)  # the goal does not move
        # Meta-World's push succeeds when the puck is within 5 cm of the goal: the state shows exactly that
        rows = np.arange(lo, hi)
        labels = np.concatenate([[False], data.successes[lo:hi - 1]])
        dist = np.linalg.norm(data.env_states[rows, :3] - data.env_states[rows, 14:], axis=1)
        assert labels.any() and np.all(dist[labels] <= 0.05) and np.all(dist[~labels] > 0.05)
    with pytest.raises(ValueError, match="39-d observation"):
        environment_state(np.zeros(18))


def test_environment_state_round_trips_and_datasets_without_it_read_as_none(data, tmp_path):
    episodes, splits = episodes_of(data)
    write_dataset(tmp_path / "with", episodes, splits, list(zip(data.tasks, data.instructions)))
    again = load_dataset(tmp_path / "with")
    assert np.array_equal(again.env_states, data.env_states)
    for e in episodes:
        e.env_states = None
    write_dataset(tmp_path / "without", episodes, splits, list(zip(data.tasks, data.instructions)))
    plain = load_dataset(tmp_path / "without")
    assert plain.env_states is None and OBS_ENV_STATE not in json.loads(
        (tmp_path / "without" / "meta" / "info.json").read_text())["features"]
    assert OBS_ENV_STATE not in pq.read_table(tmp_path / "without" / "data" / "chunk-000" / "file-000.parquet").column_names
    # a part without it: the concatenation has none (never a column with holes)
    assert concat_datasets([data, plain]).env_states is None
    assert concat_datasets([data, again]).env_states.shape == (2 * len(data.images), ENV_STATE_DIM)
    with pytest.raises(DatasetValidationError, match="observation.environment_state"):
        with_environment_state(plain)
    # declared in info.json but absent from a data file: named
    info = json.loads((tmp_path / "with" / "meta" / "info.json").read_text())
    path = tmp_path / "with" / "data" / "chunk-000" / "file-000.parquet"
    pq.write_table(pq.read_table(path).drop_columns([OBS_ENV_STATE]), path)
    assert OBS_ENV_STATE in info["features"]
    with pytest.raises(DatasetValidationError, match="missing column 'observation.environment_state'"):
        load_dataset(tmp_path / "with")
    bad, splits = episodes_of(data)
    bad[1].env_states = bad[1].env_states[:, :5]
    with pytest.raises(DatasetValidationError, match="environment states"):
        write_dataset(tmp_path / "bad", bad, splits, list(zip(data.tasks, data.instructions)))


def _env_world_model(data):
    torch.manual_seed(1)
    cfg = WorldModelConfig(**WORLD, environment_state=True)
    wm = build_model(cfg, CommonConfig(), with_environment_state(data))
    with torch.no_grad():
        for p in list(wm.head.parameters()) + list(wm.state_head.parameters()):
            p.normal_(0, 0.3)
    return wm.eval()


def test_a_world_model_predicts_the_environment_state_and_the_policy_sees_only_proprio(data, tmp_path):
    wm = _env_world_model(data)
    assert (wm.state_dim, wm.env_state_dim, wm.proprio_dim) == (STATE_DIM + ENV_STATE_DIM, ENV_STATE_DIM, STATE_DIM)
    rows = [0, 10]
    images = torch.from_numpy(np.ascontiguousarray(data.images[rows].transpose(0, 3, 1, 2)))
    start = wm.model_states(data.states[rows], data.env_states[rows])
    assert torch.equal(start[:, STATE_DIM:], torch.from_numpy(data.env_states[rows]))
    seen = []

    def act(img, st, ti, h):
        seen.append(st.shape[-1])
        return torch.zeros(len(img), 8, 4)

    ep = imagine_episodes(wm, act, images, start, torch.from_numpy(data.task_index[rows]), horizon=2)
    assert seen == [STATE_DIM, STATE_DIM] and ep.context_states.shape[-1] == STATE_DIM
    assert ep.states.shape == (2, 2, STATE_DIM + ENV_STATE_DIM)
    assert torch.equal(ep.context_states[:, 1], ep.states[:, 0, :STATE_DIM])  # the predicted proprio is fed back
    with pytest.raises(ValueError, match="observation.environment_state"):
        wm.model_states(data.states[rows])
    with pytest.raises(ValueError, match="start states have 4 entries"):
        imagine_episodes(wm, act, images, torch.from_numpy(data.states[rows]), torch.zeros(2), horizon=1)
    wm.save_pretrained(tmp_path / "wm")
    loaded = WorldModel.from_pretrained(tmp_path / "wm")
    assert loaded.env_state_dim == ENV_STATE_DIM and loaded.config.environment_state
    # a model saved before the field existed: no environment state
    plain = WorldModel(WorldModelConfig(**WORLD), data.image_size, 8, data.action_dim, data.state_dim)
    plain.save_pretrained(tmp_path / "plain")
    meta = json.loads((tmp_path / "plain" / "config.json").read_text())
    meta.pop("env_state_dim")
    meta["architecture"].pop("environment_state")
    (tmp_path / "plain" / "config.json").write_text(json.dumps(meta))
    old = WorldModel.from_pretrained(tmp_path / "plain")
    assert old.env_state_dim == 0 and torch.equal(old.model_states(data.states[rows]), torch.from_numpy(data.states[rows]))


def test_a_state_judge_reads_states_not_frames_and_learns_the_real_success_rule(data, tmp_path):
    s = train_success_model(SuccessModelConfig(**STATE_JUDGE, steps=400), CommonConfig(seed=0, num_threads=2), data,
                            tmp_path / "judge", tmp_path / "ckpt", progress=False)
    judge = SuccessModel.from_pretrained(tmp_path / "judge")
    assert judge.config.input == "state" and judge.state_dim == STATE_DIM + ENV_STATE_DIM
    # the rule is where the object is: on the train frames themselves the judge separates success
    rows, labels = frame_labels(data, "train")
    x = torch.from_numpy(np.concatenate([data.states, data.env_states], 1)[rows])
    from vla_rft.success.train import roc_auc

    assert roc_auc(judge.probability(x, torch.from_numpy(data.task_index[rows])).numpy(), labels) > 0.95
    assert 0 < s["calibration"]["threshold"] < 1
    # judging imagined episodes: the states decide, frames do not
    wm = _env_world_model(data)
    images = torch.from_numpy(np.ascontiguousarray(data.images[[0, 5]].transpose(0, 3, 1, 2)))
    ep = imagine_episodes(wm, lambda i, s_, t, h: torch.zeros(2, 8, 4), images,
                          wm.model_states(data.states[[0, 5]], data.env_states[[0, 5]]),
                          torch.from_numpy(data.task_index[[0, 5]]), horizon=2)
    tasks = torch.zeros(4, dtype=torch.long)
    p = judge_probabilities(judge, ep, tasks)
    ep.last_frames.zero_()
    assert torch.equal(judge_probabilities(judge, ep, tasks), p)
    ep.states[..., STATE_DIM:STATE_DIM + 3] += 0.3  # every object moved 30 cm
    assert not torch.equal(judge_probabilities(judge, ep, tasks), p)
    ep.states = ep.states[..., :STATE_DIM]
    with pytest.raises(ValueError, match="reads states of 21 entries"):
        judge_probabilities(judge, ep, tasks)
    with pytest.raises(ConfigError, match="imagined_steps=0"):
        train_success_model(SuccessModelConfig(**{**STATE_JUDGE, "imagined_steps": 10}), CommonConfig(), data,
                            tmp_path / "j2", tmp_path / "c2", progress=False)
    with pytest.raises(ConfigError, match="success_model.input: unknown value"):
        SuccessModelConfig(input="video")


def test_episode_grpo_with_a_state_judge_trains_on_the_world_models_predicted_state(data, tmp_path):
    judge = SuccessModel(SuccessModelConfig(**STATE_JUDGE), image_size=64, tasks=data.tasks,
                         state_dim=STATE_DIM + ENV_STATE_DIM)
    x = torch.from_numpy(np.concatenate([data.states, data.env_states], 1))
    judge.set_state_normalization(x.mean(0), x.std(0))
    policy = _policy(data)
    base = {k: v.clone() for k, v in policy.state_dict().items()}
    cfg = RFTConfig(mode="episode", steps=1, batch_starts=2, group_size=3, horizon=2, checkpoint_interval=0,
                    filter_groups=False, progress_coef=1.0, ppo_epochs=1, lr=1e-3)
    s = train_episode_grpo(cfg, CommonConfig(seed=2, num_threads=2), data, _env_world_model(data), policy, judge, 0.5,
                           tmp_path / "a", tmp_path / "a.ckpt", progress=False)
    assert s["groups_total"] == 2
    assert any(not torch.equal(base[k], v) for k, v in policy.state_dict().items())
    plain = concat_datasets([data])
    from dataclasses import replace

    with pytest.raises(ValueError, match="observation.environment_state"):
        train_episode_grpo(cfg, CommonConfig(seed=2, num_threads=2), replace(plain, env_states=None),
                           _env_world_model(data), _policy(data), judge, 0.5, tmp_path / "b", tmp_path / "b.ckpt",
                           progress=False)


def test_relative_state_features_by_hand():
    from vla_rft.success.modeling import relative_positions

    state = torch.zeros(1, STATE_DIM + ENV_STATE_DIM)
    state[0, :3] = torch.tensor([0.1, 0.6, 0.2])  # hand
    state[0, STATE_DIM:STATE_DIM + 3] = torch.tensor([0.0, 0.7, 0.0])  # object 1
    state[0, -3:] = torch.tensor([0.1, 0.8, 0.05])  # goal
    # hand - object, object - goal, hand - goal, in decimetres
    expected = torch.tensor([[1.0, -1.0, 2.0, -1.0, -1.0, -0.5, 0.0, -2.0, 1.5]])
    assert torch.allclose(relative_positions(state), expected, atol=1e-5)
    judge = SuccessModel(SuccessModelConfig(**{**STATE_JUDGE, "relative_state": True}), image_size=64,
                         tasks=["push"], state_dim=STATE_DIM + ENV_STATE_DIM)
    assert judge(state, torch.zeros(1)).shape == (1,)
    with pytest.raises(ValueError, match="relative_state reads hand, object and goal"):
        SuccessModel(SuccessModelConfig(**{**STATE_JUDGE, "relative_state": True}), image_size=64, tasks=["push"],
                     state_dim=10)

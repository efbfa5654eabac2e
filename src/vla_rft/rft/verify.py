"""Is the reward verified? World-model rewards checked against the real simulator.

For held-out start states, the real Meta-World state is restored by replaying the recorded
executed actions from the episode's start (an episode is determined by task and seed, and
physics is deterministic), the same sampled chunks are executed there, and the same distance is
computed between the real frames and the expert's recorded frames. The within-group Spearman
rank correlation between world-model and real rewards says whether the world model can rank
chunks; if it cannot, RFT only learns its blind spots.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import spearmanr

from vla_rft.data import LoadedDataset
from vla_rft.data.torch_dataset import ChunkDataset
from vla_rft.rft.configuration import RFTConfig
from vla_rft.rft.groups import exploration_range, imagine_groups
from vla_rft.rft.rewards import frame_distance, verified_reward
from vla_rft.sim.env import get_env
from vla_rft.sim.perturbations import EpisodeSpec

_SALT = 9_301


def _to_float(frames: np.ndarray) -> torch.Tensor:
    """(..., H, W, 3) uint8 -> (..., 3, H, W) float in [0, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(frames)).float() / 255.0
    return t.movedim(-1, -3)


def real_chunk_frames(data: LoadedDataset, row: int, chunks: np.ndarray, sim_info: dict) -> tuple[np.ndarray, float]:
    """Execute each chunk (G, K, A) in Meta-World from the state of dataset row ``row``.

    Returns the real frames (G, K, H, W, 3) and the largest pixel difference between the restored
    start frame and the recorded one (0 when the restore is exact).
    """
    episode = data.episodes[int(data.episode_index[row])]
    lo = episode["dataset_from_index"]
    task = data.tasks[int(data.task_index[row])]
    if episode["perturbation"] != "nominal":
        raise ValueError(f"episode {episode['episode_index']} was recorded under {episode['perturbation']}; "
                         "only nominal episodes can be restored by replay")
    env = get_env(task, data.image_size, sim_info.get("camera", "corner"), sim_info.get("goal_marker_scale", 3.0))
    spec = EpisodeSpec(task, int(episode["seed"]))
    out, restore_error = [], 0.0
    for chunk in chunks:
        env.reset(spec)
        for action in data.actions[lo:row]:
            env.step(action)
        restore_error = max(restore_error, float(np.abs(env.render().astype(int) - data.images[row].astype(int)).max()))
        frames = []
        for action in chunk:
            env.step(np.clip(action, -1, 1))
            frames.append(env.render())
        out.append(np.stack(frames))
    return np.stack(out), restore_error


def reward_fidelity(policy, world_model, data: LoadedDataset, cfg: RFTConfig, *, n_states: int, seed: int,
                    split: str = "val") -> dict:
    """Mean within-group Spearman correlation of world-model vs real-simulator rewards."""
    k, g = policy.chunk_len, cfg.group_size
    ds = ChunkDataset(data, split, chunk_len=k)
    rng = np.random.default_rng((seed, _SALT))
    idx = rng.choice(len(ds), size=min(n_states, len(ds)), replace=False)
    batch = ds.batch(idx)
    from vla_rft.rft.grpo import dataset_to_policy_tasks

    batch["task_index"] = dataset_to_policy_tasks(policy, data)[batch["task_index"]]  # by instruction text
    n = len(idx)
    device = next(policy.parameters()).device
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    # the chunks RFT will sample (its exploration range), executed clipped as the world model saw them
    groups = imagine_groups(policy, world_model, batch, g, gen, exploration_range(cfg), device)
    chunks = groups.chunks.clamp(-1, 1)
    policy_frames, wm_expert = groups.policy_frames.cpu(), groups.expert_frames.cpu()
    recorded = batch["future_images"].float() / 255.0
    r_wm = verified_reward(policy_frames, wm_expert, cfg)  # what RFT optimises (expert imagined)
    r_wm_real_target = verified_reward(policy_frames, recorded, cfg)  # the "real_frames" variant

    chunks_np = chunks.reshape(n, g, k, -1).cpu().numpy()
    r_real = torch.zeros(n, g)
    restore = 0.0
    starts = ds.starts[idx]
    for i in range(n):
        real, err = real_chunk_frames(data, int(starts[i]), chunks_np[i], data.info)
        restore = max(restore, err)
        dist_real = frame_distance(_to_float(real), recorded[i][None].expand(g, *recorded.shape[1:]),
                                   cfg.reward_l1_weight, cfg.reward_perceptual_weight, cfg.perceptual,
                                   cfg.lpips_weights)
        r_real[i] = -dist_real

    def mean_spearman(a: torch.Tensor, b: torch.Tensor) -> float:
        values = []
        for x, y in zip(a.numpy(), b.numpy()):
            if np.ptp(x) > 0 and np.ptp(y) > 0:
                values.append(spearmanr(x, y).statistic)
        return float(np.mean(values)) if values else float("nan")

    return {
        "states": n, "group_size": g, "split": split,
        "spearman_expert_imagined": mean_spearman(r_wm, r_real),
        "spearman_real_frames_target": mean_spearman(r_wm_real_target, r_real),
        "reward_wm_mean": float(r_wm.mean()), "reward_real_mean": float(r_real.mean()),
        "within_group_std_wm": float(r_wm.std(dim=1).mean()), "within_group_std_real": float(r_real.std(dim=1).mean()),
        "restore_max_pixel_error": restore,
    }

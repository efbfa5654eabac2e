"""Hyperparameters of GRPO with verified rewards in the world model (``rft:`` in params.yaml).

Reference settings of VLA-RFT (4 GPUs, 0.5B policy): 400 steps, 16 starts x group 16, lr 1e-6
(head) and 1e-5 (sigma), clip 0.2, entropy 0.003, no KL, BC regulariser 0.01, reward = MAE +
LPIPS against the world model's rollout of the dataset's actions. Our policy is ~1000x smaller
and trains on a CPU, so learning rates are larger and groups smaller.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from vla_rft.errors import ConfigError

PERCEPTUAL: tuple[str, ...] = ("ssim", "lpips", "none")
REWARD_TARGETS: tuple[str, ...] = ("expert_imagined", "real_frames")
TRAINABLE: tuple[str, ...] = ("all", "trunk_and_heads", "heads")
KL_ESTIMATORS: tuple[str, ...] = ("k1", "k2", "k3")
MODES: tuple[str, ...] = ("chunk", "episode")
THRESHOLD_SOURCES: tuple[str, ...] = ("calibrated", "per_task", "fixed")
ENVIRONMENTS: tuple[str, ...] = ("world_model", "simulator")


@dataclass
class RFTConfig:
    """GRPO on the VLA policy, rolling out sampled action chunks in the learned world model."""

    steps: int = 400  #: GRPO steps (VLA-RFT: 400)
    batch_starts: int = 8  #: B, start states per step, sampled from the training split
    group_size: int = 8  #: G, chunks sampled per start state (the group advantages are computed over)
    ppo_epochs: int = 2  #: gradient passes over each step's samples (the clip only acts from the 2nd)
    lr: float = 3e-5  #: learning rate of the trainable mean-path parameters
    lr_std: float = 1e-4  #: learning rate of the std head (the sigma net)
    weight_decay: float = 0.0
    clip_eps_low: float = 0.2  #: ratio clipped to [1 - clip_eps_low, 1 + clip_eps_high]
    clip_eps_high: float = 0.2
    entropy_coef: float = 0.003  #: entropy bonus (VLA-RFT: 0.003)
    kl_beta: float = 0.0  #: KL to the frozen base policy; 0 = no reference model is loaded
    #: estimator of KL(pi || base) from the sampled chunks: k1, k2 or k3 (TRL's default; unbiased, >= 0)
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    bc_coef: float = 0.01  #: BC regulariser on the expert chunk (mean squared error of the mean)
    advantage_eps: float = 1e-4  #: advantages = (r - mean_group) / (std_group + eps)
    #: control run: shuffle advantages within each group, keeping their distribution but not their
    #: link to the chunks; shows what the reward itself contributes
    shuffle_advantages: bool = False
    trainable: Literal["all", "trunk_and_heads", "heads"] = "trunk_and_heads"
    #: exploration: the policy's std is bounded to [explore_std_min, explore_std_max] during RFT
    #: (0, 0 keeps the policy's own bounds). Evaluation acts with the mean, so this only sets how far
    #: the sampled chunks spread; wider spread lets the world model rank them (docs/decisions.md)
    explore_std_min: float = 0.3
    explore_std_max: float = 0.5
    grad_clip: float = 1.0
    # -- the verified reward ----------------------------------------------------------------------
    reward_l1_weight: float = 1.0
    reward_perceptual_weight: float = 0.0  #: 1 - SSIM ranked chunks worse than L1 alone (docs/decisions.md)
    #: "ssim": 1 - SSIM; "lpips": LPIPS(VGG) from the local file ``lpips_weights`` (no downloads here)
    perceptual: Literal["ssim", "lpips", "none"] = "ssim"
    lpips_weights: str = ""  #: local path of LPIPS(VGG) weights, only for perceptual: lpips
    #: compare against the world model's rollout of the expert chunk (VLA-RFT) or the recorded frames
    reward_target: Literal["expert_imagined", "real_frames"] = "expert_imagined"
    # -- episode mode (closed-loop imagined episodes, success reward; rft/episode.py) ---------------
    #: "chunk": one chunk per start, verified reward vs the expert chunk (the paper's code, rft/grpo.py);
    #: "episode": closed-loop imagined episodes judged by the success model (after WMPO / WoVR)
    mode: Literal["chunk", "episode"] = "chunk"
    #: where episode mode's episodes happen: "world_model" (imagined and judged; the method) or "simulator"
    #: (the real simulator from reset layouts, its success flag the reward: the GRPO-in-the-simulator
    #: baseline, every episode real-simulator data; reset starts only, so keyframe_share must be 0)
    environment: Literal["world_model", "simulator"] = "world_model"
    #: layouts of environment "simulator" (training range): start i of step s uses seed
    #: simulator_seed_offset + s * batch_starts + i, apart from the data's, rollouts' and honesty check's
    simulator_seed_offset: int = 700_000
    horizon: int = 12  #: chunks per imagined episode (WMPO 23-48, WoVR 32; 12 x 8 = 96 steps covers most tasks)
    keyframe_share: float = 0.5  #: share of starts taken at a random frame inside a recorded episode (else its reset frame)
    #: tasks whose recorded episodes start imagined episodes (empty: every task); the honesty check
    #: still covers every task
    start_tasks: list[str] = field(default_factory=list)
    #: no starts from tasks the policy's recorded rollouts (source "policy") succeed in at least this
    #: share of (0 = off): their groups are mostly all-success, and what the update learns there moves
    #: the shared network for the tasks with room to improve (docs/decisions.md)
    skip_solved_at: float = 0.0
    #: the success threshold: "calibrated" (the success model's calibration.json), "per_task" (its threshold
    #: per task, calibrated on that task's val frames) or "fixed" (success_threshold)
    success_threshold_source: Literal["calibrated", "per_task", "fixed"] = "calibrated"
    success_threshold: float = 0.9  #: used with success_threshold_source: fixed (WoVR 0.9, WMPO 0.96)
    filter_groups: bool = True  #: drop groups whose episodes all share one outcome (no signal; counted in the curves)
    progress_coef: float = 0.0  #: optional dense term: + progress_coef * max success probability over the episode
    honesty_episodes_per_task: int = 10  #: real base-policy episodes per task for the honesty check (0 = skip)
    #: seeds of the honesty check's real episodes: training range, held out from data and rollouts (< 1_000_000)
    honesty_seed_offset: int = 900_000
    # -- bookkeeping -------------------------------------------------------------------------------
    checkpoint_interval: int = 50
    log_interval: int = 10
    #: held-out (val) start states on which world-model rewards are checked against the real simulator
    verify_states: int = 64

    def simulator_seeds(self) -> tuple[int, int]:
        """``(first, last + 1)``: the layouts ``environment: simulator`` resets, every step's starts new ones."""
        return self.simulator_seed_offset, self.simulator_seed_offset + self.steps * self.batch_starts

    def __post_init__(self) -> None:
        for name in ("steps", "batch_starts", "ppo_epochs", "log_interval"):
            if getattr(self, name) < 1:
                raise ConfigError(f"rft.{name} must be >= 1, got {getattr(self, name)}")
        if self.group_size < 2:
            raise ConfigError(f"rft.group_size must be >= 2 (advantages are normalised within groups), got {self.group_size}")
        for name in ("lr", "lr_std"):
            if not 0 < getattr(self, name) < 1:
                raise ConfigError(f"rft.{name} must be in (0, 1), got {getattr(self, name)}")
        for name in ("clip_eps_low", "clip_eps_high"):
            if not 0 < getattr(self, name) < 1:
                raise ConfigError(f"rft.{name} must be in (0, 1), got {getattr(self, name)}")
        for name in ("entropy_coef", "kl_beta", "bc_coef", "reward_l1_weight", "reward_perceptual_weight",
                     "grad_clip", "weight_decay", "advantage_eps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"rft.{name} must be >= 0, got {getattr(self, name)}")
        choices = {"perceptual": PERCEPTUAL, "reward_target": REWARD_TARGETS, "trainable": TRAINABLE,
                   "kl_estimator": KL_ESTIMATORS, "mode": MODES, "success_threshold_source": THRESHOLD_SOURCES,
                   "environment": ENVIRONMENTS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"rft.{name}: unknown value {getattr(self, name)!r}; allowed: {', '.join(allowed)}")
        if self.perceptual == "lpips" and not self.lpips_weights:
            raise ConfigError("rft.perceptual is 'lpips' but rft.lpips_weights names no local weights file "
                              "(LPIPS weights cannot be downloaded at run time)")
        if self.perceptual == "lpips" and not Path(self.lpips_weights).is_file():
            raise ConfigError(f"rft.lpips_weights: no file at {self.lpips_weights}")
        if (self.explore_std_min, self.explore_std_max) != (0.0, 0.0) and not (
                0 < self.explore_std_min < self.explore_std_max):
            raise ConfigError(f"rft.explore_std_min/max must satisfy 0 < min < max (or both 0 to keep the policy's "
                              f"bounds), got {self.explore_std_min}, {self.explore_std_max}")
        if self.horizon < 1:
            raise ConfigError(f"rft.horizon must be >= 1 chunk, got {self.horizon}")
        if not 0.0 <= self.keyframe_share <= 1.0:
            raise ConfigError(f"rft.keyframe_share must be in [0, 1], got {self.keyframe_share}")
        if not isinstance(self.start_tasks, list) or not all(isinstance(t, str) and t for t in self.start_tasks):
            raise ConfigError(f"rft.start_tasks must be a list of task names, got {self.start_tasks!r}")
        if len(set(self.start_tasks)) != len(self.start_tasks):
            raise ConfigError(f"rft.start_tasks lists a task twice: {self.start_tasks}")
        if not 0.0 <= self.skip_solved_at <= 1.0:
            raise ConfigError(f"rft.skip_solved_at must be in [0, 1] (0 = off), got {self.skip_solved_at}")
        if self.mode == "chunk" and (self.start_tasks or self.skip_solved_at):
            raise ConfigError("rft.start_tasks and rft.skip_solved_at choose episode mode's starts; "
                              "rft.mode is 'chunk'")
        if not 0.0 < self.success_threshold < 1.0:
            raise ConfigError(f"rft.success_threshold must be in (0, 1), got {self.success_threshold}")
        if self.progress_coef < 0 or self.honesty_episodes_per_task < 0:
            raise ConfigError("rft.progress_coef and rft.honesty_episodes_per_task must be >= 0")
        if not 0 <= self.honesty_seed_offset < 1_000_000:
            raise ConfigError(f"rft.honesty_seed_offset must be in [0, 1000000) (evaluation seeds start at "
                              f"1000000), got {self.honesty_seed_offset}")
        if self.environment == "simulator":
            if self.mode != "episode":
                raise ConfigError("rft.environment=simulator runs episode mode's episodes in the real simulator; "
                                  f"rft.mode is {self.mode!r}")
            if self.keyframe_share:
                raise ConfigError("rft.environment=simulator starts every episode at a reset layout (a frame inside "
                                  f"a recorded episode cannot be restored in the simulator); set rft.keyframe_share=0, "
                                  f"got {self.keyframe_share}")
            if self.progress_coef:
                raise ConfigError("rft.progress_coef weights the judge's success probability; rft.environment="
                                  "simulator rewards the simulator's success flag alone: set it to 0")
            first, last = self.simulator_seeds()
            if first < 0 or last > 1_000_000:
                raise ConfigError(f"rft.simulator_seed_offset: seeds {first}..{last - 1} "
                                  f"(steps x batch_starts of them) must lie in [0, 1000000), below the evaluation seeds")
        if self.checkpoint_interval < 0 or self.verify_states < 0:
            raise ConfigError("rft.checkpoint_interval and rft.verify_states must be >= 0")

"""Typed configuration loaded from ``params.yaml``.

``params.yaml`` holds one section per stage plus ``profiles``; a profile (``quick``,
``standard``) is a partial copy of the sections that is deep-merged over them. Every value is
checked against the dataclasses below: an unknown key, a wrong type or an unknown task name
raises :class:`ConfigError` naming the key and what is allowed.

Sections of the stages that have their own subpackage (world model, policy, RFT, evaluation) are
defined next to their code, LeRobot-style (``<package>/configuration.py``). Those modules import
only :mod:`vla_rft.errors` (and evaluation the perturbation kinds from :mod:`vla_rft.sim.perturbations`),
so loading a config never imports torch or the simulator.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from vla_rft.errors import CompatibilityError, ConfigError
from vla_rft.evaluation.configuration import EvaluateConfig
from vla_rft.policy.configuration import PolicyConfig
from vla_rft.rft.configuration import RFTConfig
from vla_rft.success.configuration import SuccessModelConfig
from vla_rft.tasks import TASKS
from vla_rft.world_model.configuration import WorldModelConfig

__all__ = ["CompatibilityError", "Config", "ConfigError", "config_from_dict", "load_config"]


@dataclass
class CommonConfig:
    """Settings every stage shares."""

    seed: int = 0  #: master seed; each stage derives its own streams from it
    chunk_len: int = 8  #: K, actions per chunk and frames predicted per world-model call
    device: str = "cpu"  #: torch device for training stages ("cpu" or "cuda")
    num_threads: int = 2  #: torch intra-op threads on CPU

    def __post_init__(self) -> None:
        if not 0 <= self.seed < 2**32:  # numpy's and torch's seeding range
            raise ConfigError(f"common.seed must be in [0, 2**32 - 1], got {self.seed}")
        if not 1 <= self.num_threads <= 256:
            raise ConfigError(f"common.num_threads must be in [1, 256], got {self.num_threads}")
        if self.chunk_len < 1:
            raise ConfigError(f"common.chunk_len must be >= 1, got {self.chunk_len}")
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ConfigError(f"common.device must be 'cpu' or 'cuda[:N]', got {self.device!r}")


@dataclass
class SimConfig:
    """The real simulator: Meta-World v3 rendered offscreen."""

    tasks: list[str] = field(default_factory=lambda: list(TASKS))
    image_size: int = 64  #: square RGB frames, pixels per side
    camera: str = "corner"  #: Meta-World camera name
    #: goal marker radius multiplier: 1-2 px markers at 64x64 are invisible to a pixel policy.
    #: Sites do not collide, so the physics is unchanged.
    goal_marker_scale: float = 3.0
    max_episode_steps: int = 150  #: env steps before an episode is cut off
    num_workers: int = 2  #: simulator processes (0 = run in the calling process)

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ConfigError("sim.tasks is empty: name at least one task")
        for task in self.tasks:
            if task not in TASKS:
                raise ConfigError(
                    f"sim.tasks: unknown task {task!r}; known tasks: {', '.join(TASKS)}"
                )
        if len(set(self.tasks)) != len(self.tasks):
            raise ConfigError(f"sim.tasks lists a task twice: {self.tasks}")
        if not 16 <= self.image_size <= 512:
            raise ConfigError(f"sim.image_size must be in [16, 512], got {self.image_size}")
        cameras = ("corner", "corner2", "corner3", "corner4", "topview", "behindGripper")
        if self.camera not in cameras:
            raise ConfigError(f"sim.camera: unknown camera {self.camera!r}; allowed: {', '.join(cameras)}")
        if self.max_episode_steps < 1 or self.max_episode_steps > 500:
            raise ConfigError(f"sim.max_episode_steps must be in [1, 500], got {self.max_episode_steps}")
        if self.num_workers < 0:
            raise ConfigError(f"sim.num_workers must be >= 0, got {self.num_workers}")


@dataclass
class PrepareDataConfig:
    """Expert data collection (the ``prepare-data`` stage)."""

    episodes_per_task: int = 50
    #: DART-style noise: std of Gaussian noise added to the *executed* action in noisy episodes;
    #: the recorded ``action`` is what was executed, ``expert_action`` the clean label.
    action_noise: float = 0.1
    noisy_fraction: float = 0.5  #: share of episodes recorded with action noise
    post_success_steps: int = 8  #: steps recorded after first success (so the last chunk has futures)
    keep_failed: bool = False  #: keep episodes where the expert failed
    val_fraction: float = 0.2  #: share of episodes (per task) held out for validation
    seed_offset: int = 0  #: episode seeds are seed_offset + i; evaluation uses disjoint seeds
    frames_per_file: int = 50_000  #: rows per Parquet data file

    def __post_init__(self) -> None:
        if self.episodes_per_task < 1:
            raise ConfigError(f"prepare_data.episodes_per_task must be >= 1, got {self.episodes_per_task}")
        if not 0.0 <= self.noisy_fraction <= 1.0:
            raise ConfigError(f"prepare_data.noisy_fraction must be in [0, 1], got {self.noisy_fraction}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"prepare_data.val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.action_noise < 0:
            raise ConfigError(f"prepare_data.action_noise must be >= 0, got {self.action_noise}")


@dataclass
class CollectRolloutsConfig:
    """The base policy's own episodes in the real simulator (the ``collect-rollouts`` stage)."""

    episodes_per_task: int = 50
    #: std of Gaussian exploration noise added to the policy's mean action (then clipped to [-1, 1])
    action_noise: float = 0.2
    #: episode i of a task uses seed seed_offset + i: training range, disjoint from the expert data's
    #: seeds (prepare_data.seed_offset + i) and from evaluation seeds (>= evaluate.seed_base)
    seed_offset: int = 500_000
    post_success_steps: int = 8  #: steps recorded after the first success (success frames for the judge)
    val_fraction: float = 0.2  #: share of episodes (per task) held out (success-model calibration, WM eval)
    batch_size: int = 12  #: envs stepped together

    def __post_init__(self) -> None:
        if self.episodes_per_task < 1 or self.batch_size < 1:
            raise ConfigError("collect_rollouts.episodes_per_task and collect_rollouts.batch_size must be >= 1")
        if self.action_noise < 0:
            raise ConfigError(f"collect_rollouts.action_noise must be >= 0, got {self.action_noise}")
        if self.seed_offset < 0 or self.post_success_steps < 0:
            raise ConfigError("collect_rollouts.seed_offset and collect_rollouts.post_success_steps must be >= 0")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"collect_rollouts.val_fraction must be in [0, 1), got {self.val_fraction}")


@dataclass
class DataConfig:
    """Which dataset a run trains on, and where dataset versions live (DVC in a git repository)."""

    #: ``generate`` (scripted experts record it: prepare_data), a dataset artifact URI (``s3://...``
    #: or a local path), or ``dvc:REV``: ``dvc_path`` at git revision REV (tag, branch, commit) of ``dvc_repo``
    source: str = "generate"
    #: git repository (path or URL, cloned for every read and write) whose DVC-tracked datasets
    #: ``dvc:REV`` reads and rollout versions are committed to; its ``.dvc/config`` names the remote
    dvc_repo: str = "."
    dvc_path: str = "data/dataset"  #: the dataset ``dvc:REV`` reads, inside ``dvc_repo``
    #: the versioned rollouts dataset inside ``dvc_repo`` (every cycle's rollouts, appended)
    rollouts_path: str = "data/rollouts_history"
    #: true: collect-rollouts appends its episodes to ``rollouts_path``, commits a new version
    #: (git tag ``rollouts-v<N>``), pushes data to the DVC remote and the commit to git's origin
    accumulate_rollouts: bool = False

    def __post_init__(self) -> None:
        if not self.source.strip():
            raise ConfigError("data.source is empty; use generate, a dataset URI (s3://... or a path) or dvc:REV")
        if self.source.startswith("dvc:") and not self.source[4:].strip():
            raise ConfigError("data.source 'dvc:' names no revision; write dvc:REV (a tag, branch or commit of "
                              "data.dvc_repo)")
        for key in ("dvc_path", "rollouts_path"):
            value = getattr(self, key)
            if not value or value.startswith("/") or ".." in Path(value).parts:
                raise ConfigError(f"data.{key} must be a relative path inside data.dvc_repo, got {value!r}")
        if self.dvc_path == self.rollouts_path:
            raise ConfigError(f"data.dvc_path and data.rollouts_path are both {self.dvc_path!r}; "
                              "the rollouts need their own path")
        userinfo = re.match(r"^([a-z][a-z0-9+.-]*)://([^/@]*)@", self.dvc_repo, re.IGNORECASE)
        if userinfo and (":" in userinfo.group(2) or userinfo.group(1).lower().startswith("http")):
            # the value reaches params, manifests, the compiled pipeline and logs: no secret may ride in it
            raise ConfigError("data.dvc_repo carries credentials in its URL (user:token@host); give git its "
                              "credentials through a credential helper or an SSH key (a Kubernetes Secret on a cluster)")


@dataclass
class PromoteConfig:
    """The model registry's champion/challenger gate (the ``promote`` stage)."""

    #: registry root: a local path or s3://<models-bucket>/<name>; versions live under it and
    #: ``champion.json`` points at the current champion
    registry: str = "runs/registry"
    policy: str = "rft"  #: which evaluated policy is the challenger
    metric: str = "all"  #: overall success to compare: nominal, perturbed or all (mean over suites)
    min_improvement: float = 0.0  #: the challenger must beat the champion by more than this (0.01 = 1 point)

    def __post_init__(self) -> None:
        if self.metric not in ("nominal", "perturbed", "all"):
            raise ConfigError(f"promote.metric: unknown metric {self.metric!r}; allowed: nominal, perturbed, all")
        if not 0 <= self.min_improvement < 1:
            raise ConfigError(f"promote.min_improvement must be in [0, 1), got {self.min_improvement}")


@dataclass
class Config:
    """The whole configuration, one attribute per params.yaml section."""

    profile: str = "quick"
    common: CommonConfig = field(default_factory=CommonConfig)
    sim: SimConfig = field(default_factory=SimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    prepare_data: PrepareDataConfig = field(default_factory=PrepareDataConfig)
    world_model: WorldModelConfig = field(default_factory=WorldModelConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    rft: RFTConfig = field(default_factory=RFTConfig)
    collect_rollouts: CollectRolloutsConfig = field(default_factory=CollectRolloutsConfig)
    success_model: SuccessModelConfig = field(default_factory=SuccessModelConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    promote: PromoteConfig = field(default_factory=PromoteConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def section(self, name: str) -> dict[str, Any]:
        return dataclasses.asdict(getattr(self, name))


SECTIONS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Config) if f.name != "profile")


_NUMBER_LIKE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _yaml_float_hint(text: str) -> str:
    """``1e-3`` -> ``1.0e-3``: the spelling YAML 1.1 (PyYAML) reads as a float."""
    mantissa, _, exponent = text.strip().lower().partition("e")
    if "." not in mantissa:
        mantissa += ".0"
    return f"{mantissa}e{exponent}" if exponent else mantissa


def _check_value(value: Any, tp: Any, key: str) -> Any:
    """Return ``value`` converted to ``tp`` where that is lossless, else raise ConfigError."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {type(value).__name__}")
        return _build(tp, value, key)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{key}: {value!r} is not allowed; allowed values: {', '.join(map(str, allowed))}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_value(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {type(value).__name__} ({value!r})")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        items = [_check_value(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {type(value).__name__}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {type(value).__name__} ({value!r})")
        return value
    if tp is int:
        if isinstance(value, float) and math.isfinite(value) and value.is_integer() and abs(value) < 2**53:
            raise ConfigError(f"{key} must be an integer, got {value!r}; write it without a dot: {int(value)}")
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {type(value).__name__} ({value!r})")
        return value
    if tp is float:
        if isinstance(value, str) and _NUMBER_LIKE.fullmatch(value.strip()):
            raise ConfigError(f"{key} must be a number, got the string {value!r}: YAML reads exponents without a "
                              f"dot as text; write it as {_yaml_float_hint(value)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {type(value).__name__} ({value!r})")
        if not math.isfinite(value):
            raise ConfigError(f"{key} must be a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {type(value).__name__} ({value!r})")
        return value
    raise ConfigError(f"{key}: unsupported config type {tp!r}")


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        where = f"section '{prefix}'" if prefix else "params"
        raise ConfigError(
            f"unknown key '{prefix + '.' if prefix else ''}{unknown[0]}' in {where}; "
            f"allowed keys: {', '.join(names)}"
        )
    kwargs = {
        name: _check_value(data[name], hints[name], f"{prefix + '.' if prefix else ''}{name}")
        for name in names
        if name in data
    }
    try:
        return cls(**kwargs)
    except TypeError as err:  # pragma: no cover - defensive: dataclass signature mismatch
        raise ConfigError(f"{prefix}: {err}") from err


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of ``base`` with ``override`` merged in (mappings recursively, others replaced)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(text: str) -> dict[str, Any]:
    """Turn ``"section.key=value"`` (value parsed as YAML) into a nested dict."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    dotted, raw = text.split("=", 1)
    parts = [p for p in dotted.strip().split(".") if p]
    if len(parts) < 2:
        raise ConfigError(f"override {text!r} must name a section and a key, e.g. sim.image_size=64")
    try:
        value: Any = yaml.safe_load(raw)
    except yaml.YAMLError as err:
        why = " ".join(str(getattr(err, "problem", None) or err).split())
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({why})") from None
    for part in reversed(parts):
        value = {part: value}
    return value


def config_from_dict(raw: dict[str, Any], profile: str | None = None, overrides: list[str] | None = None) -> Config:
    """Build a validated :class:`Config` from a parsed params.yaml mapping."""
    if not isinstance(raw, dict):
        raise ConfigError("params must be a mapping with one section per stage")
    raw = dict(raw)
    profiles = raw.pop("profiles", {}) or {}
    default_profile = raw.pop("profile", "quick")
    name = profile or default_profile
    if not isinstance(profiles, dict):
        raise ConfigError("'profiles' must be a mapping of profile name -> partial sections")
    if not isinstance(name, str):
        raise ConfigError(f"profile must be a name, got {name!r}")
    if profiles and name not in profiles:
        raise ConfigError(f"unknown profile {name!r}; allowed profiles: {', '.join(map(str, profiles))}")
    chosen = profiles.get(name, {}) or {}
    if not isinstance(chosen, dict):
        raise ConfigError(f"profiles.{name} must be a mapping of partial sections, got {type(chosen).__name__}")
    for section, value in {**raw, **chosen}.items():
        if not isinstance(section, str):
            raise ConfigError(f"params: section names must be text, got {section!r}")
        if section in SECTIONS and value is not None and not isinstance(value, dict):
            where = f"profiles.{name}.{section}" if section in chosen else section
            raise ConfigError(f"{where} must be a mapping of keys, got {type(value).__name__} ({value!r})")
    merged = deep_merge(raw, chosen)
    for text in overrides or []:
        merged = deep_merge(merged, parse_override(text))
    for section in merged:
        if section not in SECTIONS:
            raise ConfigError(f"unknown section '{section}' in params; allowed sections: {', '.join(SECTIONS)}")
    cfg = _build(Config, {"profile": name, **merged}, "")
    return cfg


def load_config(
    path: str | Path = "params.yaml", profile: str | None = None, overrides: list[str] | None = None
) -> Config:
    """Load params.yaml, apply a profile and ``section.key=value`` overrides, validate."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"params file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"params file {path} is not valid YAML: {err}") from err
    return config_from_dict(raw, profile=profile, overrides=overrides)

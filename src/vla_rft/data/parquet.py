"""Write recorded episodes as a LeRobot-style Parquet dataset, and read it back validated."""

from __future__ import annotations


import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vla_rft.data.schema import (
    ACTION, CODEBASE_VERSION, DONE, EPISODE_COLUMNS, EPISODE_INDEX, EXPERT_ACTION, FRAME_COLUMNS,
    DEFAULT_SOURCE, FRAME_INDEX, INDEX, OBS_ENV_STATE, OBS_IMAGE, OBS_STATE, REWARD, SOURCES, SPLITS, SUCCESS, TASK_INDEX,
    DatasetValidationError,
)


@dataclass
class EpisodeData:
    """One episode as arrays (what the writer takes; the simulator's EpisodeRecord fits it)."""

    task_index: int
    seed: int
    perturbation: str
    frames: np.ndarray  #: (T, H, W, 3) uint8
    states: np.ndarray  #: (T, S) float32
    actions: np.ndarray  #: (T, A) float32
    expert_actions: np.ndarray  #: (T, A) float32
    rewards: np.ndarray  #: (T,)
    successes: np.ndarray  #: (T,) bool
    noisy: bool
    success: bool
    first_success_step: int
    source: str = DEFAULT_SOURCE  #: "expert" or "policy" (a policy's rollout in the real simulator)
    env_states: np.ndarray | None = None  #: (T, E) float32 objects and goal (``observation.environment_state``)


def _fixed_list(array: np.ndarray, dtype: pa.DataType) -> pa.FixedSizeListArray:
    flat = array.reshape(len(array), -1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel(), type=dtype), flat.shape[1])


def write_dataset(
    out_dir: str | Path,
    episodes: Sequence[EpisodeData],
    splits: Sequence[str],
    tasks: Sequence[tuple[str, str]],
    info_extra: dict[str, Any] | None = None,
    frames_per_file: int = 50_000,
) -> dict[str, Any]:
    """Write ``episodes`` (with their split names) under ``out_dir``; returns info.json's content.

    ``tasks`` lists ``(task_name, instruction)`` in task-index order.
    """
    if not episodes:
        raise DatasetValidationError("no episodes to write: the dataset would be empty")
    out = Path(out_dir)
    (out / "meta" / "episodes" / "chunk-000").mkdir(parents=True, exist_ok=True)
    (out / "data" / "chunk-000").mkdir(parents=True, exist_ok=True)
    h, w, _ = episodes[0].frames.shape[1:]
    state_dim, action_dim = episodes[0].states.shape[1], episodes[0].actions.shape[1]
    # the environment state is written only when every episode has it: a column with holes would
    # make a world model trained on it silently skip (or invent) the missing episodes
    with_env = all(ep.env_states is not None for ep in episodes)
    env_dim = episodes[0].env_states.shape[1] if with_env else 0

    episode_rows: list[dict[str, Any]] = []
    file_index, pending, pending_rows, global_index = 0, [], 0, 0

    def flush() -> None:
        nonlocal file_index, pending, pending_rows
        if not pending:
            return
        cat = {k: np.concatenate([p[k] for p in pending]) for k in pending[0]}
        columns = {
            OBS_IMAGE: _fixed_list(cat[OBS_IMAGE], pa.uint8()),
            OBS_STATE: _fixed_list(cat[OBS_STATE], pa.float32()),
            ACTION: _fixed_list(cat[ACTION], pa.float32()),
            EXPERT_ACTION: _fixed_list(cat[EXPERT_ACTION], pa.float32()),
            REWARD: pa.array(cat[REWARD], pa.float32()),
            DONE: pa.array(cat[DONE], pa.bool_()),
            SUCCESS: pa.array(cat[SUCCESS], pa.bool_()),
            TASK_INDEX: pa.array(cat[TASK_INDEX], pa.int64()),
            EPISODE_INDEX: pa.array(cat[EPISODE_INDEX], pa.int64()),
            FRAME_INDEX: pa.array(cat[FRAME_INDEX], pa.int64()),
            INDEX: pa.array(cat[INDEX], pa.int64()),
        }
        if with_env:
            columns[OBS_ENV_STATE] = _fixed_list(cat[OBS_ENV_STATE], pa.float32())
        pq.write_table(pa.table(columns), out / "data" / "chunk-000" / f"file-{file_index:03d}.parquet", compression="zstd")
        file_index += 1
        pending, pending_rows = [], 0

    for ep_idx, (ep, split) in enumerate(zip(episodes, splits, strict=True)):
        if split not in SPLITS:
            raise DatasetValidationError(f"episode {ep_idx}: unknown split {split!r}; allowed: {SPLITS}")
        if ep.source not in SOURCES:
            raise DatasetValidationError(f"episode {ep_idx}: unknown source {ep.source!r}; allowed: {SOURCES}")
        if ep.frames.shape[1:] != (h, w, 3) or ep.actions.shape[1] != action_dim:
            raise DatasetValidationError(f"episode {ep_idx}: frames {ep.frames.shape} / actions {ep.actions.shape} "
                                         f"differ from the first episode's {(h, w, 3)} / {action_dim}")
        n = len(ep.actions)
        if with_env and ep.env_states.shape != (n, env_dim):
            raise DatasetValidationError(f"episode {ep_idx}: environment states {ep.env_states.shape}, expected "
                                         f"({n}, {env_dim}) (one row per frame, the first episode's width)")
        if pending_rows and pending_rows + n > frames_per_file:
            flush()
        done = np.zeros(n, bool)
        done[-1] = True
        row = {
            OBS_IMAGE: ep.frames.astype(np.uint8), OBS_STATE: ep.states.astype(np.float32),
            ACTION: ep.actions.astype(np.float32), EXPERT_ACTION: ep.expert_actions.astype(np.float32),
            REWARD: ep.rewards.astype(np.float32), DONE: done, SUCCESS: ep.successes.astype(bool),
            TASK_INDEX: np.full(n, ep.task_index), EPISODE_INDEX: np.full(n, ep_idx),
            FRAME_INDEX: np.arange(n), INDEX: np.arange(global_index, global_index + n),
        }
        if with_env:
            row[OBS_ENV_STATE] = ep.env_states.astype(np.float32)
        pending.append(row)
        episode_rows.append({
            "episode_index": ep_idx, "task_index": ep.task_index, "length": n, "seed": ep.seed,
            "perturbation": ep.perturbation, "noisy": ep.noisy, "success": ep.success,
            "first_success_step": ep.first_success_step, "split": split, "source": ep.source,
            "data/chunk_index": 0, "data/file_index": file_index,
            "dataset_from_index": global_index, "dataset_to_index": global_index + n,
        })
        pending_rows += n
        global_index += n
    flush()

    pq.write_table(pa.Table.from_pylist(episode_rows), out / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
    pq.write_table(
        pa.table({
            "task_index": pa.array(range(len(tasks)), pa.int64()),
            "task": [instr for _, instr in tasks],
            "task_name": [name for name, _ in tasks],
        }),
        out / "meta" / "tasks.parquet",
    )
    split_counts = {s: sum(1 for x in splits if x == s) for s in SPLITS}
    info = {
        "codebase_version": CODEBASE_VERSION,
        "fps": None,
        "total_episodes": len(episodes),
        "total_frames": global_index,
        "total_tasks": len(tasks),
        "data_files": file_index,
        "splits": split_counts,
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "features": {
            OBS_IMAGE: {"dtype": "uint8", "shape": [h, w, 3], "names": ["height", "width", "channel"]},
            OBS_STATE: {"dtype": "float32", "shape": [state_dim]},
            ACTION: {"dtype": "float32", "shape": [action_dim]},
            EXPERT_ACTION: {"dtype": "float32", "shape": [action_dim]},
            REWARD: {"dtype": "float32", "shape": [1]},
            DONE: {"dtype": "bool", "shape": [1]},
            SUCCESS: {"dtype": "bool", "shape": [1]},
            TASK_INDEX: {"dtype": "int64", "shape": [1]},
            EPISODE_INDEX: {"dtype": "int64", "shape": [1]},
            FRAME_INDEX: {"dtype": "int64", "shape": [1]},
            INDEX: {"dtype": "int64", "shape": [1]},
            **({OBS_ENV_STATE: {"dtype": "float32", "shape": [env_dim]}} if with_env else {}),
        },
        **(info_extra or {}),
    }
    (out / "meta" / "info.json").write_text(json.dumps(info, indent=2, sort_keys=True))
    return info


@dataclass
class LoadedDataset:
    """A validated dataset in memory: frame arrays in global-index order plus metadata."""

    root: Path
    info: dict[str, Any]
    tasks: list[str]  #: task names by task index
    instructions: list[str]  #: instructions by task index
    episodes: list[dict[str, Any]]
    images: np.ndarray  #: (N, H, W, 3) uint8
    states: np.ndarray  #: (N, S) float32
    actions: np.ndarray  #: (N, A) float32
    expert_actions: np.ndarray  #: (N, A) float32
    rewards: np.ndarray
    successes: np.ndarray
    task_index: np.ndarray  #: (N,) int64
    episode_index: np.ndarray  #: (N,) int64
    frame_index: np.ndarray  #: (N,) int64
    #: (N, E) float32 objects and goal (``observation.environment_state``); None: not recorded
    env_states: np.ndarray | None = None

    @property
    def image_size(self) -> int:
        return int(self.images.shape[1])

    @property
    def action_dim(self) -> int:
        return int(self.actions.shape[1])

    @property
    def state_dim(self) -> int:
        return int(self.states.shape[1])

    def episodes_in(self, split: str) -> list[dict[str, Any]]:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
        return [e for e in self.episodes if e["split"] == split]


def _read_table(path: Path) -> pa.Table:
    if not path.exists():
        raise DatasetValidationError(f"dataset file {path} is missing")
    try:
        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise DatasetValidationError(f"dataset file {path} is not a readable Parquet file: {err}") from err


def _column_array(table: pa.Table, name: str, path: Path, dtype: str, shape: tuple[int, ...] | None) -> np.ndarray:
    col = table.column(name).combine_chunks()
    if shape is None:
        arr = col.to_numpy(zero_copy_only=False)
    else:
        if not pa.types.is_fixed_size_list(col.type):
            raise DatasetValidationError(f"{path.name}: column '{name}' must be a fixed-size list, got {col.type}")
        width = col.type.list_size
        expected = int(np.prod(shape))
        if width != expected:
            raise DatasetValidationError(
                f"{path.name}: column '{name}' has shape ({width},) per row; the dataset declares {tuple(shape)} "
                f"({expected} values)"
            )
        if col.null_count:
            raise DatasetValidationError(f"{path.name}: column '{name}' has {col.null_count} null rows")
        arr = col.values.to_numpy(zero_copy_only=False).reshape(len(col), *shape)
    if str(arr.dtype) != dtype:
        raise DatasetValidationError(f"{path.name}: column '{name}' has dtype {arr.dtype}, expected {dtype}")
    return arr


def load_dataset(root: str | Path, expected_action_dim: int | None = None,
                 expected_image_size: int | None = None) -> LoadedDataset:
    """Read and validate a dataset directory: schema, shapes, dtypes, finiteness, episode bounds."""
    root = Path(root)
    info_path = root / "meta" / "info.json"
    if not info_path.exists():
        raise DatasetValidationError(f"{root} is not a dataset: meta/info.json is missing")
    try:
        info = json.loads(info_path.read_text())
    except json.JSONDecodeError as err:
        raise DatasetValidationError(f"{info_path} is not valid JSON: {err}") from err
    if info.get("codebase_version") != CODEBASE_VERSION:
        raise DatasetValidationError(
            f"{info_path}: codebase_version {info.get('codebase_version')!r}, this code reads {CODEBASE_VERSION!r}"
        )
    feats = info.get("features", {})
    try:
        h, w, _ = feats[OBS_IMAGE]["shape"]
        dims = {"H": h, "W": w, "S": feats[OBS_STATE]["shape"][0], "A": feats[ACTION]["shape"][0]}
        env_dim = int(feats[OBS_ENV_STATE]["shape"][0]) if OBS_ENV_STATE in feats else 0
    except (KeyError, ValueError, TypeError) as err:
        raise DatasetValidationError(f"{info_path}: features are incomplete ({err!r})") from err
    if expected_action_dim is not None and dims["A"] != expected_action_dim:
        raise DatasetValidationError(
            f"dataset column '{ACTION}' has shape ({dims['A']},), this task suite uses {expected_action_dim}-D actions"
        )
    if expected_image_size is not None and (h, w) != (expected_image_size, expected_image_size):
        raise DatasetValidationError(
            f"dataset column '{OBS_IMAGE}' has shape ({h}, {w}, 3), the configuration expects "
            f"({expected_image_size}, {expected_image_size}, 3)"
        )

    tasks_table = _read_table(root / "meta" / "tasks.parquet").to_pydict()
    episodes_path = root / "meta" / "episodes" / "chunk-000" / "file-000.parquet"
    episodes = _read_table(episodes_path).to_pylist()
    if not episodes:
        raise DatasetValidationError(f"{root}: the dataset has no episodes")
    missing = [c for c in EPISODE_COLUMNS if c not in episodes[0]]
    if missing:
        raise DatasetValidationError(f"{episodes_path.name}: missing episode column(s) {missing}")

    parts: dict[str, list[np.ndarray]] = {c: [] for c in FRAME_COLUMNS}
    env_parts: list[np.ndarray] = []
    files = sorted({(e["data/chunk_index"], e["data/file_index"]) for e in episodes})
    for chunk, file in files:
        path = root / info.get("data_path", "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet").format(
            chunk_index=chunk, file_index=file)
        table = _read_table(path)
        absent = [c for c in FRAME_COLUMNS if c not in table.column_names]
        if absent:
            raise DatasetValidationError(f"{path.name}: missing column '{absent[0]}' (required: {', '.join(FRAME_COLUMNS)})")
        for name, (dtype, shape) in FRAME_COLUMNS.items():
            resolved = None if shape is None else tuple(dims.get(d, d) if isinstance(d, str) else d for d in shape)
            parts[name].append(_column_array(table, name, path, dtype, resolved))
        if env_dim:
            if OBS_ENV_STATE not in table.column_names:
                raise DatasetValidationError(f"{path.name}: missing column '{OBS_ENV_STATE}' (meta/info.json declares it)")
            env_parts.append(_column_array(table, OBS_ENV_STATE, path, "float32", (env_dim,)))
    arrays = {k: np.concatenate(v) for k, v in parts.items()}
    if env_dim:
        arrays[OBS_ENV_STATE] = np.concatenate(env_parts)

    n = len(arrays[INDEX])
    if n == 0:
        raise DatasetValidationError(f"{root}: the dataset has no frames")
    if not np.array_equal(arrays[INDEX], np.arange(n)):
        raise DatasetValidationError(f"{root}: column '{INDEX}' is not 0..{n - 1} in file order (missing or reordered rows)")
    for name in (OBS_STATE, ACTION, EXPERT_ACTION, REWARD) + ((OBS_ENV_STATE,) if env_dim else ()):
        bad = ~np.isfinite(arrays[name])
        if bad.any():
            row = int(np.argwhere(bad.reshape(n, -1).any(axis=1))[0, 0])
            raise DatasetValidationError(f"dataset column '{name}' has NaN or inf values (first at row {row})")
    for ep in episodes:
        lo, hi = ep["dataset_from_index"], ep["dataset_to_index"]
        if not (0 <= lo < hi <= n) or hi - lo != ep["length"]:
            raise DatasetValidationError(f"episode {ep['episode_index']}: bounds [{lo}, {hi}) do not match {n} frames")
        if not np.all(arrays[EPISODE_INDEX][lo:hi] == ep["episode_index"]):
            raise DatasetValidationError(f"episode {ep['episode_index']}: rows [{lo}, {hi}) belong to another episode")
        if ep["split"] not in SPLITS:
            raise DatasetValidationError(f"episode {ep['episode_index']}: unknown split {ep['split']!r}")
        ep.setdefault("source", DEFAULT_SOURCE)  # written before the column existed: expert data
        if ep["source"] not in SOURCES:
            raise DatasetValidationError(f"episode {ep['episode_index']}: unknown source {ep['source']!r}; "
                                         f"allowed: {', '.join(SOURCES)}")
    n_tasks = len(tasks_table.get("task_name", []))
    if arrays[TASK_INDEX].min() < 0 or arrays[TASK_INDEX].max() >= n_tasks:
        raise DatasetValidationError(f"column '{TASK_INDEX}' refers to tasks outside meta/tasks.parquet ({n_tasks} tasks)")

    return LoadedDataset(
        root=root, info=info, tasks=list(tasks_table["task_name"]), instructions=list(tasks_table["task"]),
        episodes=episodes, images=arrays[OBS_IMAGE], states=arrays[OBS_STATE], actions=arrays[ACTION],
        expert_actions=arrays[EXPERT_ACTION], rewards=arrays[REWARD], successes=arrays[SUCCESS],
        task_index=arrays[TASK_INDEX], episode_index=arrays[EPISODE_INDEX], frame_index=arrays[FRAME_INDEX],
        env_states=arrays.get(OBS_ENV_STATE),
    )


def successful_episodes(data: LoadedDataset) -> LoadedDataset:
    """The same dataset with only its successful episodes listed (frame arrays shared, not copied).

    Training code reads episodes through ``episodes_in(split)``, so a failed episode's frames are never
    sampled. Refuses a result without a successful training episode.
    """
    kept = [e for e in data.episodes if e["success"]]
    if not any(e["split"] == "train" for e in kept):
        raise DatasetValidationError(f"{data.root}: no successful training episode among {len(data.episodes)} "
                                     "(policy.episodes=successful keeps only those)")
    return replace(data, episodes=kept)


def concat_datasets(datasets: Sequence[LoadedDataset]) -> LoadedDataset:
    """One in-memory dataset from several (e.g. expert data + policy rollouts), episodes renumbered.

    The datasets must share the task list (names in task-index order), image size, state and action
    dimensions; each episode keeps its split and its ``source``. The result's ``root`` is the first's.
    """
    if not datasets:
        raise ValueError("concat_datasets needs at least one dataset")
    first = datasets[0]
    if len(datasets) == 1:
        return first
    for d in datasets[1:]:
        if d.tasks != first.tasks:
            raise DatasetValidationError(f"{d.root}: tasks {d.tasks} differ from {first.root}'s {first.tasks}; "
                                         "record both with the same sim.tasks")
        for what, a, b in (("image size", d.image_size, first.image_size), ("state dim", d.state_dim, first.state_dim),
                           ("action dim", d.action_dim, first.action_dim)):
            if a != b:
                raise DatasetValidationError(f"{d.root}: {what} {a} differs from {first.root}'s {b}")
    episodes, offset, ep_offset = [], 0, 0
    for d in datasets:
        for ep in d.episodes:
            episodes.append({**ep, "episode_index": ep["episode_index"] + ep_offset,
                             "dataset_from_index": ep["dataset_from_index"] + offset,
                             "dataset_to_index": ep["dataset_to_index"] + offset})
        offset += len(d.images)
        ep_offset += len(d.episodes)

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(d, name) for d in datasets])

    episode_index = np.concatenate([d.episode_index + sum(len(x.episodes) for x in datasets[:i])
                                    for i, d in enumerate(datasets)])
    info = {**first.info, "total_episodes": len(episodes), "total_frames": offset,
            "sources": sorted({ep["source"] for ep in episodes})}
    # environment states only if every part has them, of one width (else a world model would train on holes)
    with_env = all(d.env_states is not None for d in datasets) and len({d.env_states.shape[1] for d in datasets
                                                                         if d.env_states is not None}) == 1
    return LoadedDataset(root=first.root, info=info, tasks=list(first.tasks), instructions=list(first.instructions),
                         episodes=episodes, images=cat("images"), states=cat("states"), actions=cat("actions"),
                         expert_actions=cat("expert_actions"), rewards=cat("rewards"), successes=cat("successes"),
                         task_index=cat("task_index"), episode_index=episode_index, frame_index=cat("frame_index"),
                         env_states=cat("env_states") if with_env else None)


def episodes_of(data: LoadedDataset) -> tuple[list[EpisodeData], list[str]]:
    """A loaded dataset back as the writer's episodes and their splits (to append episodes and write it anew)."""
    episodes, splits = [], []
    for ep in data.episodes:
        lo, hi = int(ep["dataset_from_index"]), int(ep["dataset_to_index"])
        episodes.append(EpisodeData(
            int(ep["task_index"]), int(ep["seed"]), str(ep["perturbation"]), data.images[lo:hi], data.states[lo:hi],
            data.actions[lo:hi], data.expert_actions[lo:hi], data.rewards[lo:hi], data.successes[lo:hi],
            bool(ep["noisy"]), bool(ep["success"]), int(ep["first_success_step"]),
            source=str(ep.get("source") or DEFAULT_SOURCE),
            env_states=None if data.env_states is None else data.env_states[lo:hi]))
        splits.append(str(ep["split"]))
    return episodes, splits

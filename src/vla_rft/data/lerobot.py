"""LeRobot dataset format v3.0: export our dataset to it, and import one (ours or anyone's) into our schema.

The layout, column types and meta fields are those lerobot 0.4.4 reads and writes
(``lerobot/datasets/utils.py``, ``lerobot_dataset.py``, ``compute_stats.py``)::

    meta/info.json                               codebase_version "v3.0", fps, features (dtype/shape/names)
    meta/stats.json                              per feature: min, max, mean, std, count, q01..q99
    meta/tasks.parquet                           a pandas frame: index = instruction, column task_index
    meta/episodes/chunk-000/file-000.parquet     one row per episode: tasks, length, data file, frame range
    data/chunk-000/file-000.parquet              one row per frame

Camera frames are an ``observation.images.<camera>`` feature of dtype ``image``: PNG bytes in a
``struct<bytes, path>`` column (Hugging Face ``datasets.Image``), so reading needs no video decoder and
the pixels survive a round trip bit for bit. Our extras ride along where LeRobot has a place for them:
``expert_action``, ``next.reward``, ``next.done``, ``next.success`` as frame features, seed/split/...
as extra episode columns, and our info.json fields under ``info["vla_rft"]``. Nothing here imports
``lerobot``: the tests load what we write with lerobot's own ``LeRobotDataset``.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vla_rft.data.parquet import EpisodeData, LoadedDataset, _fixed_list
from vla_rft.data.schema import (
    ACTION, CODEBASE_VERSION, DONE, EPISODE_INDEX, EXPERT_ACTION, FRAME_INDEX, INDEX, OBS_ENV_STATE, OBS_STATE, REWARD,
    SPLITS, SUCCESS, TASK_INDEX, DatasetValidationError,
)
from vla_rft.data.splits import split_by_episode
from vla_rft.tasks import ENV_STATE_DIM, ENV_STATE_NAMES, TASKS

LEROBOT_VERSION = "v3.0"
IMAGES_PREFIX = "observation.images."
TIMESTAMP = "timestamp"
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
CHUNKS_SIZE = 1000  #: lerobot's DEFAULT_CHUNK_SIZE: files per chunk directory
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)  #: lerobot's DEFAULT_QUANTILES
EXTRA_INFO_KEY = "vla_rft"  #: our own info.json fields, kept apart from LeRobot's
#: how a frame of another size becomes ours: a centred square crop (only if not square), then PIL's
#: antialiased bilinear filter (it averages over the source pixels a target pixel covers when shrinking)
RESIZE_METHOD = "center-crop to square, then PIL bilinear (antialiased)"

_IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
_EPISODE_EXTRAS = ("seed", "perturbation", "noisy", "success", "first_success_step", "split")


# ------------------------------------------------------------------------------------------ export
def _png(frame: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame, mode="RGB").save(buf, format="PNG")
    return buf.getvalue()


def _stats(array: np.ndarray, image: bool = False) -> dict[str, Any]:
    """lerobot's statistics of one feature: per dimension, or per channel in [0, 1] with shape (3, 1, 1).

    Quantiles are exact (``np.quantile``); lerobot's writer approximates them with histograms.
    """
    if image:  # (N, H, W, 3) uint8 -> (N*H*W, 3) in [0, 1]
        flat = array.reshape(-1, 3).astype(np.float64) / 255.0
        count = len(array)
    else:
        flat = array.reshape(len(array), -1).astype(np.float64)
        count = len(array)
    out = {
        "min": flat.min(axis=0), "max": flat.max(axis=0), "mean": flat.mean(axis=0), "std": flat.std(axis=0),
        "count": np.array([count]),
    }
    qs = np.quantile(flat, QUANTILES, axis=0)
    out.update({f"q{round(q * 100):02d}": qs[i] for i, q in enumerate(QUANTILES)})
    if image:
        out = {k: v if k == "count" else v.reshape(3, 1, 1) for k, v in out.items()}
    return {k: v.tolist() for k, v in out.items()}


def _camera_key(info: dict[str, Any]) -> str:
    return IMAGES_PREFIX + str(info.get("camera") or "main")


def _features(data: LoadedDataset, image_key: str) -> dict[str, dict[str, Any]]:
    info = data.info
    scalar = {"shape": [1], "names": None}
    return {
        image_key: {"dtype": "image", "shape": [data.image_size, int(data.images.shape[2]), 3],
                    "names": ["height", "width", "channels"]},
        OBS_STATE: {"dtype": "float32", "shape": [data.state_dim], "names": info.get("state_names")},
        ACTION: {"dtype": "float32", "shape": [data.action_dim], "names": info.get("action_names")},
        EXPERT_ACTION: {"dtype": "float32", "shape": [data.action_dim], "names": info.get("action_names")},
        REWARD: {"dtype": "float32", **scalar},
        DONE: {"dtype": "bool", **scalar},
        SUCCESS: {"dtype": "bool", **scalar},
        TIMESTAMP: {"dtype": "float32", **scalar},
        FRAME_INDEX: {"dtype": "int64", **scalar},
        EPISODE_INDEX: {"dtype": "int64", **scalar},
        INDEX: {"dtype": "int64", **scalar},
        TASK_INDEX: {"dtype": "int64", **scalar},
        **({OBS_ENV_STATE: {"dtype": "float32", "shape": [data.env_states.shape[1]], "names": list(ENV_STATE_NAMES)}}
           if data.env_states is not None else {}),
    }


def _hf_features(features: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The same features as ``datasets`` 4 serialises them into a Parquet schema (``huggingface`` metadata)."""
    out: dict[str, Any] = {}
    for key, ft in features.items():
        if ft["dtype"] == "image":
            out[key] = {"_type": "Image"}
        elif ft["shape"] == [1]:
            out[key] = {"dtype": ft["dtype"], "_type": "Value"}
        else:
            out[key] = {"feature": {"dtype": ft["dtype"], "_type": "Value"}, "length": ft["shape"][0], "_type": "List"}
    return out


def _frame_arrays(data: LoadedDataset, lo: int, hi: int, fps: float) -> dict[str, np.ndarray]:
    done = np.zeros(hi - lo, bool)
    ends = {e["dataset_to_index"] - 1 for e in data.episodes if lo <= e["dataset_to_index"] - 1 < hi}
    done[[i - lo for i in sorted(ends)]] = True
    env = {} if data.env_states is None else {OBS_ENV_STATE: data.env_states[lo:hi]}
    return {
        **env,
        OBS_STATE: data.states[lo:hi], ACTION: data.actions[lo:hi], EXPERT_ACTION: data.expert_actions[lo:hi],
        REWARD: data.rewards[lo:hi].astype(np.float32), DONE: done, SUCCESS: data.successes[lo:hi].astype(bool),
        TIMESTAMP: (data.frame_index[lo:hi] / fps).astype(np.float32), FRAME_INDEX: data.frame_index[lo:hi],
        EPISODE_INDEX: data.episode_index[lo:hi], INDEX: np.arange(lo, hi, dtype=np.int64),
        TASK_INDEX: data.task_index[lo:hi],
    }


def export_lerobot(data: LoadedDataset, out_dir: str | Path) -> dict[str, Any]:
    """Write ``data`` under ``out_dir`` (which must be empty or absent) as LeRobot v3.0; returns info.json."""
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise DatasetValidationError(f"{out} is not empty; a LeRobot dataset is written into an empty directory")
    fps = data.info.get("fps")
    if not fps:
        raise DatasetValidationError(f"{data.root}: info.json has no fps; LeRobot datasets need one")
    image_key = _camera_key(data.info)
    features = _features(data, image_key)
    schema_meta = {b"huggingface": json.dumps({"info": {"features": _hf_features(features)}}).encode()}

    files = sorted({(e["data/chunk_index"], e["data/file_index"]) for e in data.episodes})
    file_ids = {f: (i // CHUNKS_SIZE, i % CHUNKS_SIZE) for i, f in enumerate(files)}
    for f in files:
        eps = [e for e in data.episodes if (e["data/chunk_index"], e["data/file_index"]) == f]
        lo, hi = min(e["dataset_from_index"] for e in eps), max(e["dataset_to_index"] for e in eps)
        if sum(e["length"] for e in eps) != hi - lo:
            raise DatasetValidationError(f"{data.root}: the episodes of data file {f} are not one contiguous range")
        cols = _frame_arrays(data, lo, hi, float(fps))
        images = pa.StructArray.from_arrays(
            [pa.array([_png(x) for x in data.images[lo:hi]], pa.binary()),
             pa.array([f"frame-{int(i):06d}.png" for i in data.frame_index[lo:hi]], pa.string())],
            fields=list(_IMAGE_TYPE))
        arrays: dict[str, pa.Array] = {image_key: images}
        for key in features:
            if key == image_key:
                continue
            ft = features[key]
            if ft["shape"] == [1]:
                arrays[key] = pa.array(cols[key], pa.from_numpy_dtype(np.dtype(ft["dtype"])))
            else:
                arrays[key] = _fixed_list(cols[key], pa.float32())
        table = pa.table(arrays).replace_schema_metadata(schema_meta)
        chunk, file = file_ids[f]
        path = out / DATA_PATH.format(chunk_index=chunk, file_index=file)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path, compression="snappy")

    rows = []
    for e in data.episodes:
        lo, hi = e["dataset_from_index"], e["dataset_to_index"]
        chunk, file = file_ids[(e["data/chunk_index"], e["data/file_index"])]
        row: dict[str, Any] = {
            "episode_index": e["episode_index"], "tasks": [data.instructions[e["task_index"]]],
            "length": e["length"], "data/chunk_index": chunk, "data/file_index": file,
            "dataset_from_index": lo, "dataset_to_index": hi,
            "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0,
        }
        cols = _frame_arrays(data, lo, hi, float(fps))
        ep_stats = {image_key: _stats(data.images[lo:hi], image=True)}
        ep_stats.update({k: _stats(v) for k, v in cols.items()})
        for key, stats in ep_stats.items():
            row.update({f"stats/{key}/{name}": value for name, value in stats.items()})
        row.update({k: e[k] for k in _EPISODE_EXTRAS})
        row["task_index"] = e["task_index"]
        rows.append(row)
    path = out / EPISODES_PATH.format(chunk_index=0, file_index=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path, compression="snappy")

    _write_tasks(out / TASKS_PATH, data.instructions, data.tasks)
    stats = {image_key: _stats(data.images, image=True)}
    stats.update({k: _stats(v) for k, v in _frame_arrays(data, 0, len(data.states), float(fps)).items()})
    (out / STATS_PATH).write_text(json.dumps(stats, indent=4))

    extra = {k: v for k, v in data.info.items() if k not in
             ("codebase_version", "features", "total_episodes", "total_frames", "total_tasks", "data_files",
              "splits", "data_path", "fps")}
    info = {
        "codebase_version": LEROBOT_VERSION,
        "robot_type": data.info.get("robot_type"),
        "total_episodes": len(data.episodes),
        "total_frames": len(data.states),
        "total_tasks": len(data.instructions),
        "chunks_size": CHUNKS_SIZE,
        "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 200,
        "fps": fps,
        # LeRobot's splits are episode ranges; ours are per task and not contiguous, so every episode is
        # "train" to LeRobot and our split is the episodes' `split` column (import restores it)
        "splits": {"train": f"0:{len(data.episodes)}"},
        "data_path": DATA_PATH,
        "video_path": None,
        "features": features,
        EXTRA_INFO_KEY: {"codebase_version": CODEBASE_VERSION, **extra},
    }
    (out / INFO_PATH).write_text(json.dumps(info, indent=4))
    return info


def _write_tasks(path: Path, instructions: list[str], names: list[str]) -> None:
    """meta/tasks.parquet as pandas writes ``DataFrame({"task_index": ...}, index=instructions)``.

    Written with pyarrow plus the ``pandas`` schema metadata (so pandas is not needed to write it): lerobot
    reads it with ``pd.read_parquet`` and takes a task's instruction from the frame's index.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({
        "task_index": pa.array(range(len(instructions)), pa.int64()),
        "task_name": pa.array(names, pa.string()),
        "task": pa.array(instructions, pa.string()),
    })
    col = lambda name, kind, np_type: {"name": name, "field_name": name, "pandas_type": kind,  # noqa: E731
                                       "numpy_type": np_type, "metadata": None}
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
                            "metadata": {"encoding": "UTF-8"}}],
        "columns": [col("task_index", "int64", "int64"), col("task_name", "unicode", "object"),
                    col("task", "unicode", "object")],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.0",
    }
    pq.write_table(table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()}), path)


# ------------------------------------------------------------------------------------------ import
@dataclass
class ImportedDataset:
    """A LeRobot dataset read into what :func:`vla_rft.data.write_dataset` takes, plus what was done to it."""

    episodes: list[EpisodeData]
    splits: list[str]
    tasks: list[tuple[str, str]]  #: (task name, instruction) by task index
    info_extra: dict[str, Any]
    notes: dict[str, Any] = field(default_factory=dict)  #: camera, resize, defaults filled in, split source


def _read(path: Path, columns: list[str] | None = None) -> pa.Table:
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowInvalid, OSError, KeyError) as err:
        raise DatasetValidationError(f"LeRobot file {path} is not readable: {err}") from err


def _tasks_from_parquet(path: Path) -> tuple[list[str], list[str | None]]:
    """Instructions (the pandas index) and our task names, if written by us, by task index."""
    if not path.exists():
        raise DatasetValidationError(f"LeRobot dataset has no {TASKS_PATH}")
    table = _read(path)
    meta = json.loads((table.schema.metadata or {}).get(b"pandas", b"{}"))
    names = [c for c in meta.get("index_columns", []) if isinstance(c, str)] + ["__index_level_0__", "task"]
    text_col = next((c for c in names if c in table.column_names), None)
    if text_col is None or "task_index" not in table.column_names:
        raise DatasetValidationError(f"{path}: expected the task strings as the index and a 'task_index' column, "
                                     f"found columns {table.column_names}")
    by_index = dict(zip(table.column("task_index").to_pylist(), table.column(text_col).to_pylist(), strict=True))
    if sorted(by_index) != list(range(len(by_index))):
        raise DatasetValidationError(f"{path}: task_index values are not 0..{len(by_index) - 1}")
    extra = dict(zip(table.column("task_index").to_pylist(), table.column("task_name").to_pylist(), strict=True)) \
        if "task_name" in table.column_names else {}
    return [by_index[i] for i in range(len(by_index))], [extra.get(i) for i in range(len(by_index))]


def _task_name(instruction: str, given: str | None) -> str:
    if given:
        return given
    for name, spec in TASKS.items():
        if instruction in (spec.instruction, *spec.former_instructions):
            return name
    return re.sub(r"[^a-z0-9]+", "-", instruction.lower()).strip("-") or "task"


def _decode_images(column: pa.Array, root: Path, key: str, size: int, notes: dict) -> np.ndarray:
    from PIL import Image

    if not pa.types.is_struct(column.type) or column.type.get_field_index("bytes") < 0:
        raise DatasetValidationError(f"column '{key}' is {column.type}, expected an image struct<bytes, path>")
    blobs, paths = column.field("bytes").to_pylist(), column.field("path").to_pylist()
    out = np.empty((len(blobs), size, size, 3), np.uint8)
    for i, (blob, rel) in enumerate(zip(blobs, paths)):
        if blob is None:
            if rel is None or not (root / rel).is_file():
                raise DatasetValidationError(f"column '{key}', row {i}: no image bytes and no file at {rel!r}")
            blob = (root / rel).read_bytes()
        img = Image.open(io.BytesIO(blob)).convert("RGB")
        w, h = img.size
        if (h, w) != (size, size):
            notes.setdefault("resized_from", [h, w])
            notes["resize_method"] = RESIZE_METHOD
            side = min(h, w)
            left, top = (w - side) // 2, (h - side) // 2
            img = img.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.BILINEAR)
        out[i] = np.asarray(img)
    return out


def _vector(table: pa.Table, key: str, dim: int) -> np.ndarray:
    col = table.column(key).combine_chunks()
    if not (pa.types.is_fixed_size_list(col.type) or pa.types.is_list(col.type)):
        raise DatasetValidationError(f"column '{key}' is {col.type}, expected a list of floats")
    arr = np.asarray(col.flatten().to_numpy(zero_copy_only=False), np.float32)
    if arr.size != len(col) * dim:
        raise DatasetValidationError(f"column '{key}' does not hold {dim} values in every row")
    return arr.reshape(len(col), dim)


def read_lerobot(root: str | Path, *, image_size: int, state_dim: int, action_dim: int, fps: int,
                 camera: str | None = None, val_fraction: float = 0.2, seed: int = 0) -> ImportedDataset:
    """Read and validate a LeRobot v3.0 dataset directory; every mismatch is a named DatasetValidationError."""
    root = Path(root)
    info_path = root / INFO_PATH
    if not info_path.is_file():
        raise DatasetValidationError(f"{root} is not a LeRobot dataset: {INFO_PATH} is missing")
    try:
        info = json.loads(info_path.read_text())
    except json.JSONDecodeError as err:
        raise DatasetValidationError(f"{info_path} is not valid JSON: {err}") from err
    version = info.get("codebase_version")
    if version != LEROBOT_VERSION:
        hint = " (convert it with lerobot's datasets/v30/convert_dataset_v21_to_v30.py)" \
            if str(version).startswith("v2") else ""
        raise DatasetValidationError(f"{info_path}: codebase_version {version!r}; this importer reads "
                                     f"{LEROBOT_VERSION!r}{hint}")
    feats = info.get("features") or {}
    cams = {k: ft for k, ft in feats.items() if k.startswith(IMAGES_PREFIX)}
    if camera is not None:
        key = camera if camera.startswith(IMAGES_PREFIX) else IMAGES_PREFIX + camera
        if key not in cams:
            raise DatasetValidationError(f"camera {camera!r} is not in the dataset; its cameras: {sorted(cams) or 'none'}")
    elif len(cams) == 1:
        key = next(iter(cams))
    else:
        raise DatasetValidationError(
            f"{info_path}: " + ("no camera feature 'observation.images.<camera>'" if not cams else
                                f"{len(cams)} cameras {sorted(cams)}; choose one with --camera"))
    if cams[key].get("dtype") != "image":
        raise DatasetValidationError(f"feature '{key}' has dtype {cams[key].get('dtype')!r}; this importer reads "
                                     "camera frames stored as dtype 'image' (videos need a decoder)")
    shape = list(cams[key].get("shape") or [])
    names = cams[key].get("names") or ["height", "width", "channels"]
    if len(shape) != 3 or 3 not in (shape[0], shape[2]):
        raise DatasetValidationError(f"feature '{key}' has shape {shape}; expected (height, width, 3)")
    if names[0] in ("channel", "channels"):
        shape = shape[1:] + shape[:1]
    for name, dim in ((OBS_STATE, state_dim), (ACTION, action_dim)):
        if name not in feats:
            raise DatasetValidationError(f"{info_path}: feature '{name}' is missing (required: {key}, "
                                         f"{OBS_STATE}, {ACTION})")
        got = list(feats[name].get("shape") or [])
        if got != [dim]:
            raise DatasetValidationError(f"dataset feature '{name}' has shape {tuple(got)}, this task suite uses "
                                         f"({dim},)")
    if info.get("fps") != fps:
        raise DatasetValidationError(f"{info_path}: fps {info.get('fps')}, the simulator runs at {fps} "
                                     "(an action is one simulator step; resampling actions is not supported)")

    instructions, given_names = _tasks_from_parquet(root / TASKS_PATH)
    tasks = [(_task_name(i, g), i) for i, g in zip(instructions, given_names)]
    ep_paths = sorted((root / "meta" / "episodes").glob("*/*.parquet"))
    if not ep_paths:
        raise DatasetValidationError(f"{root}: no episode metadata under meta/episodes/")
    ep_table = pa.concat_tables([_read(p) for p in ep_paths], promote_options="permissive")
    needed = ["episode_index", "length", "dataset_from_index", "dataset_to_index"]
    missing = [c for c in needed if c not in ep_table.column_names]
    if missing:
        raise DatasetValidationError(f"{ep_paths[0]}: missing episode column(s) {missing}")
    episodes = sorted(ep_table.select([c for c in ep_table.column_names if not c.startswith("stats/")])
                      .to_pylist(), key=lambda e: e["episode_index"])
    if [e["episode_index"] for e in episodes] != list(range(len(episodes))):
        raise DatasetValidationError(f"{root}: episode_index values are not 0..{len(episodes) - 1}")

    data_paths = sorted((root / "data").glob("*/*.parquet"))
    if not data_paths:
        raise DatasetValidationError(f"{root}: no data files under data/")
    frame_cols = [key, OBS_STATE, ACTION, EPISODE_INDEX, FRAME_INDEX, INDEX, TASK_INDEX]
    # LeRobot's key for the scene's state; ours only where it is this suite's objects-and-goal vector
    env_shape = list(feats.get(OBS_ENV_STATE, {}).get("shape") or [])
    with_env = env_shape == [ENV_STATE_DIM]
    optional = [c for c in (EXPERT_ACTION, REWARD, SUCCESS) + ((OBS_ENV_STATE,) if with_env else ()) if c in feats]
    tables = []
    for p in data_paths:
        names_in = pq.read_schema(p).names
        absent = [c for c in frame_cols if c not in names_in]
        if absent:
            raise DatasetValidationError(f"{p}: missing column(s) {absent}")
        tables.append(_read(p, frame_cols + [c for c in optional if c in names_in]))
    table = pa.concat_tables(tables, promote_options="permissive")
    order = np.argsort(table.column(INDEX).to_numpy(), kind="stable")
    table = table.take(pa.array(order))
    n = len(table)
    index = table.column(INDEX).to_numpy()
    if not np.array_equal(index, np.arange(n)):
        raise DatasetValidationError(f"{root}: column 'index' is not 0..{n - 1} (missing or repeated frames)")

    notes: dict[str, Any] = {"camera": key, "filled_in": []}
    images = _decode_images(table.column(key).combine_chunks(), root, key, image_size, notes)
    states, actions = _vector(table, OBS_STATE, state_dim), _vector(table, ACTION, action_dim)
    env_states = None
    if with_env and OBS_ENV_STATE in table.column_names:
        env_states = _vector(table, OBS_ENV_STATE, ENV_STATE_DIM)
        if not np.isfinite(env_states).all():
            raise DatasetValidationError(f"dataset column '{OBS_ENV_STATE}' has NaN or inf values")
    elif OBS_ENV_STATE in feats:
        notes["not_imported"] = (f"{OBS_ENV_STATE} of shape {tuple(env_shape)} (this suite's objects-and-goal state "
                                 f"has {ENV_STATE_DIM} entries)")
    if EXPERT_ACTION in table.column_names:
        expert = _vector(table, EXPERT_ACTION, action_dim)
    else:
        expert = actions
        notes["filled_in"].append(f"{EXPERT_ACTION} = {ACTION} (behaviour cloning learns the executed actions)")
    if REWARD in table.column_names:
        rewards = table.column(REWARD).to_numpy().astype(np.float32).reshape(n)
    else:
        rewards = np.zeros(n, np.float32)
        notes["filled_in"].append(f"{REWARD} = 0")
    if SUCCESS in table.column_names:
        successes = np.asarray(table.column(SUCCESS).to_pylist(), bool).reshape(n)
    else:
        successes = np.zeros(n, bool)
        notes["filled_in"].append(f"{SUCCESS} = false (the dataset does not say)")
    for name, arr in ((OBS_STATE, states), (ACTION, actions), (EXPERT_ACTION, expert), (REWARD, rewards)):
        if not np.isfinite(arr).all():
            raise DatasetValidationError(f"dataset column '{name}' has NaN or inf values")
    ep_col, fr_col = table.column(EPISODE_INDEX).to_numpy(), table.column(FRAME_INDEX).to_numpy()
    task_col = table.column(TASK_INDEX).to_numpy()
    if task_col.min() < 0 or task_col.max() >= len(tasks):
        raise DatasetValidationError(f"column '{TASK_INDEX}' refers to tasks outside {TASKS_PATH} ({len(tasks)} tasks)")

    out: list[EpisodeData] = []
    for e in episodes:
        lo, hi = e["dataset_from_index"], e["dataset_to_index"]
        if not (0 <= lo < hi <= n) or hi - lo != e["length"] or not np.all(ep_col[lo:hi] == e["episode_index"]):
            raise DatasetValidationError(f"episode {e['episode_index']}: frames [{lo}, {hi}) do not match its "
                                         f"rows in data/ (length {e['length']})")
        if not np.array_equal(fr_col[lo:hi], np.arange(hi - lo)):
            raise DatasetValidationError(f"episode {e['episode_index']}: frame_index is not 0..{hi - lo - 1}")
        ep_tasks = np.unique(task_col[lo:hi])
        if len(ep_tasks) != 1:
            raise DatasetValidationError(f"episode {e['episode_index']} has {len(ep_tasks)} tasks; our schema "
                                         "gives each episode one task")
        succ = successes[lo:hi]
        first = int(np.argmax(succ)) + 1 if succ.any() else -1  # steps until success, as the recorder counts
        out.append(EpisodeData(
            task_index=int(ep_tasks[0]), seed=int(e.get("seed", -1) if e.get("seed") is not None else -1),
            perturbation=str(e.get("perturbation") or "external"), frames=images[lo:hi], states=states[lo:hi],
            actions=actions[lo:hi], expert_actions=expert[lo:hi], rewards=rewards[lo:hi], successes=succ,
            noisy=bool(e.get("noisy", False)), success=bool(e.get("success", succ.any())),
            first_success_step=int(e["first_success_step"]) if e.get("first_success_step") is not None else first,
            env_states=None if env_states is None else env_states[lo:hi],
        ))
    if all(e.get("split") in SPLITS for e in episodes):
        splits = [e["split"] for e in episodes]
        notes["split"] = "from the episodes' split column"
    else:
        # prepare-data's rule and random stream (stages.prepare_data)
        splits = split_by_episode([ep.task_index for ep in out], val_fraction, np.random.default_rng([seed, 2]))
        notes["split"] = f"by episode per task, val_fraction {val_fraction}, seed {seed}"

    extra = dict(info.get(EXTRA_INFO_KEY) or {})
    extra.pop("codebase_version", None)
    extra.setdefault("camera", key[len(IMAGES_PREFIX):])
    extra.setdefault("robot_type", info.get("robot_type"))
    extra.setdefault("state_names", feats[OBS_STATE].get("names"))
    extra.setdefault("action_names", feats[ACTION].get("names"))
    extra["fps"] = info["fps"]
    if EXTRA_INFO_KEY not in info:
        extra["source"] = {"format": f"lerobot/{LEROBOT_VERSION}", **{k: v for k, v in notes.items() if v}}
    return ImportedDataset(out, splits, tasks, extra, notes)


def prepare_lerobot_import() -> None:
    """Make ``lerobot`` 0.4.4 importable beside our torch 2.13 (CPU) and transformers 5; call before importing it.

    torchvision from PyPI is a CUDA build: its C extension cannot load beside the CPU torch, and its
    ``__init__`` then fails on registering fake kernels for ``torchvision::nms``/``qnms``, ops that only the
    extension declares; installed in site-packages it would break transformers' own imports, so it lives
    in ``.venv/lerobot-site`` and only this function puts it on ``sys.path``. Declaring the two schemas here lets torchvision's pure-Python parts (transforms,
    models, ``FrozenBatchNorm2d``) import; calling nms would still fail, and nothing LeRobot's dataset or
    ACT code runs needs it. ``lerobot.policies`` imports every policy's package, and GR00T's subclasses
    transformers' config in a way transformers 5 rejects, so lerobot is told transformers is absent (GR00T
    then takes its no-transformers path; ACT does not use transformers).
    """
    import importlib.util
    import os
    import sys

    import torch

    if importlib.util.find_spec("lerobot") is None:
        raise ModuleNotFoundError("lerobot is not installed: scripts/setup.sh installs lerobot==0.4.4 (--no-deps) "
                                  "with the project's `lerobot` extra")
    # torchvision lives outside site-packages (scripts/setup.sh: pip --target .venv/lerobot-site): where
    # transformers finds it installed it imports it, and without the schemas below that import fails
    site = Path(os.environ.get("VLA_RFT_LEROBOT_SITE", Path(sys.prefix) / "lerobot-site"))
    if site.is_dir() and str(site) not in sys.path:
        sys.path.insert(0, str(site))
    if importlib.util.find_spec("torchvision") is None:
        raise ModuleNotFoundError(f"torchvision is not importable (looked in {site} too): scripts/setup.sh installs "
                                  "torchvision==0.28.0 there")
    if not hasattr(torch.ops.torchvision, "nms"):
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        prepare_lerobot_import._library = lib  # a Library unregisters its definitions when collected
    import lerobot.utils.import_utils as import_utils

    import_utils._transformers_available = False

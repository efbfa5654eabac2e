"""The dataset schema: LeRobot-style feature keys, layout and the error raised on bad data.

Layout of a dataset directory (a LeRobot user recognises it)::

    meta/info.json                         features, fps, counts, splits, codebase version
    meta/tasks.parquet                     task_index, task (instruction), task_name
    meta/episodes/chunk-000/file-000.parquet   one row per episode (split, seed, perturbation, ...)
    data/chunk-000/file-000.parquet        one row per frame

Images are stored as fixed-shape uint8 arrays (a ``fixed_size_list<uint8>`` column, zstd
compressed), not PNG bytes: loading a whole split is then one reshape with no per-frame
decoding, which is what the training loops do, and zstd recovers most of PNG's size advantage.
"""

from __future__ import annotations

CODEBASE_VERSION = "vla-rft/v1"  # bump when the layout or a feature changes meaning

OBS_IMAGE = "observation.image"
OBS_STATE = "observation.state"
#: optional: objects and goal (``tasks.ENV_STATE_NAMES``), privileged; world models may predict it,
#: policies never see it. Written when every episode carries it; datasets without it read as None.
OBS_ENV_STATE = "observation.environment_state"
ACTION = "action"
EXPERT_ACTION = "expert_action"
REWARD = "next.reward"
DONE = "next.done"
SUCCESS = "next.success"
TASK_INDEX = "task_index"
EPISODE_INDEX = "episode_index"
FRAME_INDEX = "frame_index"
INDEX = "index"

#: column -> (arrow type name, per-row shape or None for scalars)
#: shapes with "H"/"W"/"S"/"A" are resolved from info.json
FRAME_COLUMNS: dict[str, tuple[str, tuple | None]] = {
    OBS_IMAGE: ("uint8", ("H", "W", 3)),
    OBS_STATE: ("float32", ("S",)),
    ACTION: ("float32", ("A",)),
    EXPERT_ACTION: ("float32", ("A",)),
    REWARD: ("float32", None),
    DONE: ("bool", None),
    SUCCESS: ("bool", None),
    TASK_INDEX: ("int64", None),
    EPISODE_INDEX: ("int64", None),
    FRAME_INDEX: ("int64", None),
    INDEX: ("int64", None),
}

EPISODE_COLUMNS = (
    "episode_index", "task_index", "length", "seed", "perturbation", "noisy", "success",
    "first_success_step", "split", "data/chunk_index", "data/file_index",
    "dataset_from_index", "dataset_to_index",
)

SPLITS = ("train", "val")

#: where an episode came from (episode column ``source``): the scripted expert, or a policy acting
#: in the real simulator (``collect-rollouts``). Datasets written before the column existed read as expert.
SOURCES = ("expert", "policy")
DEFAULT_SOURCE = "expert"


class DatasetValidationError(ValueError):
    """The dataset on disk does not match the schema; the message names the file, column and problem."""

"""lerobot 0.4.4's own code on our side of the interop, run in a fresh offline process by tests/test_lerobot.py.

    python lerobot_tool.py read ROOT OUT.npz CHUNK     LeRobotDataset(root=ROOT): every item, stats, episodes
    python lerobot_tool.py write DATASET ROOT H W      LeRobotDataset.create + add_frame/save_episode from our
                                                       dataset's frames resized to H x W, with none of our extras
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

assert os.environ.get("HF_HUB_OFFLINE") == "1", "run offline: HF_HUB_OFFLINE=1"

from vla_rft.data.lerobot import prepare_lerobot_import  # noqa: E402

prepare_lerobot_import()
from lerobot.datasets.compute_stats import get_feature_stats  # noqa: E402
from lerobot.datasets.lerobot_dataset import LeRobotDataset  # noqa: E402


def read(root: str, out: str, chunk: int) -> None:
    ds = LeRobotDataset("vla-rft/export", root=root)
    cam = ds.meta.camera_keys[0]
    fps = ds.fps
    chunked = LeRobotDataset("vla-rft/export", root=root, delta_timestamps={"action": [k / fps for k in range(chunk)]})
    items = [ds[i] for i in range(len(ds))]
    arrays = {
        "images": np.stack([np.round(it[cam].numpy() * 255).astype(np.uint8).transpose(1, 2, 0) for it in items]),
        "image_range": np.array([min(float(it[cam].min()) for it in items), max(float(it[cam].max()) for it in items)]),
        "states": np.stack([it["observation.state"].numpy() for it in items]),
        "actions": np.stack([it["action"].numpy() for it in items]),
        "successes": np.array([bool(it["next.success"]) for it in items]),
        "timestamps": np.array([float(it["timestamp"]) for it in items]),
        "episode_index": np.array([int(it["episode_index"]) for it in items]),
        "frame_index": np.array([int(it["frame_index"]) for it in items]),
        "index": np.array([int(it["index"]) for it in items]),
        "action_chunks": np.stack([chunked[i]["action"].numpy() for i in range(len(ds))]),
        "action_is_pad": np.stack([chunked[i]["action_is_pad"].numpy() for i in range(len(ds))]),
    }
    # lerobot's own statistics of what it loaded, to compare with the stats.json we wrote
    own = {"observation.state": get_feature_stats(arrays["states"], axis=0, keepdims=False),
           "action": get_feature_stats(arrays["actions"], axis=0, keepdims=False)}
    meta = {
        "camera": cam, "fps": fps, "num_episodes": ds.num_episodes, "num_frames": ds.num_frames,
        "tasks": [it["task"] for it in items],
        "episodes": [{k: ds.meta.episodes[i][k] for k in ("episode_index", "dataset_from_index", "dataset_to_index",
                                                         "length", "tasks")} for i in range(ds.meta.total_episodes)],
        "stats": {k: {s: np.asarray(v).tolist() for s, v in ds.meta.stats[k].items()}
                  for k in ("observation.state", "action", cam)},
        "own_stats": {k: {s: np.asarray(v).tolist() for s, v in st.items()} for k, st in own.items()},
        "features": {k: list(v["shape"]) for k, v in ds.features.items()},
    }
    np.savez(out, **arrays)
    with open(out + ".json", "w") as f:
        json.dump(meta, f)


def write(dataset: str, root: str, height: int, width: int) -> None:
    from PIL import Image

    from vla_rft.data import load_dataset

    data = load_dataset(dataset)
    features = {
        "observation.images.front": {"dtype": "image", "shape": (height, width, 3),
                                     "names": ["height", "width", "channels"]},
        "observation.state": {"dtype": "float32", "shape": (4,), "names": ["x", "y", "z", "gripper"]},
        "action": {"dtype": "float32", "shape": (4,), "names": ["dx", "dy", "dz", "grip"]},
    }
    ds = LeRobotDataset.create("someone/metaworld-demos", fps=data.info["fps"], features=features, root=root,
                               robot_type="sawyer", use_videos=False)
    for ep in data.episodes:
        for row in range(ep["dataset_from_index"], ep["dataset_to_index"]):
            frame = np.asarray(Image.fromarray(data.images[row]).resize((width, height), Image.Resampling.BILINEAR))
            ds.add_frame({"observation.images.front": frame, "observation.state": data.states[row],
                          "action": data.actions[row], "task": data.instructions[int(data.task_index[row])]})
        ds.save_episode()
    ds.finalize()


if __name__ == "__main__":
    if sys.argv[1] == "read":
        read(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif sys.argv[1] == "write":
        write(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    else:
        raise SystemExit(f"unknown mode {sys.argv[1]!r}: read or write")

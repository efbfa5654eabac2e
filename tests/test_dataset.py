"""Dataset: write -> read round trip on real recorded episodes; the validator names each defect."""

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vla_rft import storage
from vla_rft.data import DatasetValidationError, load_dataset
from vla_rft.data.torch_dataset import ChunkDataset

DATA_FILE = "data/chunk-000/file-000.parquet"


def test_round_trip(tiny_dataset):
    root, summary = tiny_dataset
    data = load_dataset(root, expected_action_dim=4, expected_image_size=64)
    assert data.tasks == ["push", "drawer-open"]
    assert data.instructions[1] == "open the drawer"
    assert len(data.episodes) == summary["episodes"] == 4
    assert data.images.shape == (summary["frames"], 64, 64, 3) and data.images.dtype == np.uint8
    assert data.actions.shape == (summary["frames"], 4)
    assert {e["split"] for e in data.episodes} == {"train", "val"}
    info = json.loads((root / "meta" / "info.json").read_text())
    assert info["total_frames"] == summary["frames"] and info["fps"] == 80
    # the manifest covers every file and verifies
    _, manifest = storage.read_artifact(str(root), expected_kind="dataset")
    assert DATA_FILE in manifest["files"]


def test_chunk_dataset_yields_aligned_chunks(tiny_dataset):
    root, _ = tiny_dataset
    data = load_dataset(root)
    ds = ChunkDataset(data, "train", chunk_len=8)
    item = ds[0]
    assert item["image"].shape == (3, 64, 64)
    assert item["actions"].shape == (8, 4) and item["future_images"].shape == (8, 3, 64, 64)
    t = int(ds.starts[3])
    item = ds[3]
    np.testing.assert_array_equal(item["future_images"][0].numpy(), data.images[t + 1].transpose(2, 0, 1))
    np.testing.assert_array_equal(item["actions"].numpy(), data.actions[t:t + 8])
    batch = ds.batch([0, 3])
    np.testing.assert_array_equal(batch["future_images"][1].numpy(), item["future_images"].numpy())
    # no chunk crosses an episode boundary
    for i in range(len(ds)):
        t = ds.starts[i]
        assert data.episode_index[t] == data.episode_index[t + 8]


def _copy(root, tmp_path):
    dst = tmp_path / "ds"
    shutil.copytree(root, dst)
    return dst


def _rewrite(path, fn):
    table = pq.read_table(path)
    pq.write_table(fn(table), path)


def test_rejects_missing_column(tiny_dataset, tmp_path):
    root = _copy(tiny_dataset[0], tmp_path)
    _rewrite(root / DATA_FILE, lambda t: t.drop_columns(["action"]))
    with pytest.raises(DatasetValidationError, match="missing column 'action'"):
        load_dataset(root)


def test_rejects_wrong_action_dimension(tiny_dataset, tmp_path):
    with pytest.raises(DatasetValidationError, match=r"'action' has shape \(4,\), this task suite uses 7-D actions"):
        load_dataset(tiny_dataset[0], expected_action_dim=7)
    root = _copy(tiny_dataset[0], tmp_path)

    def widen(t):
        acts = t.column("action").combine_chunks().values.to_numpy().reshape(-1, 4)
        wide = np.concatenate([acts, acts[:, :3]], axis=1).astype(np.float32)
        col = pa.FixedSizeListArray.from_arrays(pa.array(wide.ravel()), 7)
        return t.set_column(t.column_names.index("action"), "action", col)

    _rewrite(root / DATA_FILE, widen)
    with pytest.raises(DatasetValidationError, match=r"column 'action' has shape \(7,\) per row"):
        load_dataset(root)


def test_rejects_nan_actions(tiny_dataset, tmp_path):
    root = _copy(tiny_dataset[0], tmp_path)

    def poison(t):
        acts = t.column("action").combine_chunks().values.to_numpy().copy()
        acts[17] = np.nan
        col = pa.FixedSizeListArray.from_arrays(pa.array(acts), 4)
        return t.set_column(t.column_names.index("action"), "action", col)

    _rewrite(root / DATA_FILE, poison)
    with pytest.raises(DatasetValidationError, match="'action' has NaN or inf values"):
        load_dataset(root)


def test_rejects_wrong_image_shape(tiny_dataset, tmp_path):
    with pytest.raises(DatasetValidationError, match=r"'observation.image' has shape \(64, 64, 3\)"):
        load_dataset(tiny_dataset[0], expected_image_size=96)
    root = _copy(tiny_dataset[0], tmp_path)
    info = json.loads((root / "meta" / "info.json").read_text())
    info["features"]["observation.image"]["shape"] = [32, 32, 3]
    (root / "meta" / "info.json").write_text(json.dumps(info))
    with pytest.raises(DatasetValidationError, match="'observation.image' has shape"):
        load_dataset(root)


def test_rejects_corrupt_parquet(tiny_dataset, tmp_path):
    root = _copy(tiny_dataset[0], tmp_path)
    path = root / DATA_FILE
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(DatasetValidationError, match="not a readable Parquet file"):
        load_dataset(root)


def test_rejects_empty_and_non_dataset(tmp_path):
    with pytest.raises(DatasetValidationError, match="meta/info.json is missing"):
        load_dataset(tmp_path)

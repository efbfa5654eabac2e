"""Dataset schema, Parquet writer/reader with validation, and the torch Dataset of chunks."""

from vla_rft.data.parquet import EpisodeData, LoadedDataset, concat_datasets, load_dataset, write_dataset
from vla_rft.data.schema import DatasetValidationError

__all__ = ["DatasetValidationError", "EpisodeData", "LoadedDataset", "concat_datasets", "load_dataset", "write_dataset"]

"""A Hugging Face ``datasets`` image dataset as ``--data``: a folder written by ``Dataset.save_to_disk`` (its
state.json and dataset_info.json; the train split) or ``DatasetDict.save_to_disk`` (dataset_dict.json and a
folder per split; test is validation's where there is none). Its first ``Image`` column gives each row's encoded
image, as stored (decoded only by a stream's worker); a ``label`` or ``labels`` column of ClassLabel or integers
the labels (-1, ClassLabel's "no label", in every row: unlabelled). Rows are read by index through ImageStream,
as shards are. ``datasets`` is imported only when such a folder is read (``spatialssl[hf-datasets]``).

An imagefolder (class sub-folders of image files, or train/ and test/ of them) needs no ``datasets``: the
folder layouts of readers.py read it (labels from a metadata.csv are not read)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError, MissingSplit, first_line, optional_import
from .decode import _read
from .registry import Reader, register

LABEL_COLUMNS = ("label", "labels")


@dataclass(frozen=True)
class DatasetRows:
    """Rows of one split, an ItemSource of a stream."""
    dataset: object  # the split: its image column alone, not decoded
    column: str
    rows: np.ndarray  # int64: the dataset's rows, in the stream's order
    name: str  # "FOLDER [split]", for messages

    def __len__(self) -> int:
        return len(self.rows)

    def describe(self, index: int) -> str:
        return f"{self.name} row {int(self.rows[index])}"

    def read(self, index: int) -> bytes:
        value = self.dataset[int(self.rows[index])][self.column] or {}
        if value.get("bytes") is not None:
            return value["bytes"]
        if value.get("path"):  # an image stored as the path of its file
            return _read(Path(value["path"]))
        raise DataError(f"cannot read image {self.describe(index)}: the row holds no image")

    def take(self, index) -> "DatasetRows":
        return dataclasses.replace(self, rows=self.rows[np.asarray(index, dtype=np.int64)])

    @property
    def nbytes(self) -> int:
        return self.rows.nbytes


def _split(path: Path, split: str):
    """(the ``datasets`` module, the split's Dataset, its name)."""
    datasets = optional_import("datasets", "hf-datasets", f"reading the Hugging Face dataset {path}")
    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as err:  # datasets and pyarrow raise many types for a damaged folder
        raise DataError(f"cannot read the Hugging Face dataset {path}: {first_line(err)}") from None
    if not isinstance(loaded, datasets.DatasetDict):
        if split != "train":
            raise MissingSplit(f"{path} is one dataset, the train split, and has no '{split}' split",
                               "save a DatasetDict of train and test splits to give it both")
        return datasets, loaded, split
    for name in [split, "validation", "val"] if split == "test" else [split]:
        if name in loaded:
            return datasets, loaded[name], name
    raise MissingSplit(f"{path} has no '{split}' split", f"it has {', '.join(loaded)}")


def _labels(datasets, dataset, where: str) -> tuple:
    """(int64 labels or None, class names)."""
    column = next((c for c in LABEL_COLUMNS if c in dataset.features), None)
    if column is None:
        return None, []
    feature = dataset.features[column]
    integers = isinstance(feature, datasets.Value) and feature.dtype.startswith(("int", "uint"))
    if not (isinstance(feature, datasets.ClassLabel) or integers):
        raise DataError(f"{where} column '{column}' holds {feature}, not one class number per image")
    labels = np.asarray(dataset.with_format("numpy")[column], dtype=np.int64)
    unlabelled = labels < 0
    if unlabelled.all():
        return None, []
    if unlabelled.any():
        raise DataError(f"{where} row {int(np.argmax(unlabelled))} has no label ({column} -1) but others have one; "
                        "label every row or none")
    names = feature.names if isinstance(feature, datasets.ClassLabel) else []
    return labels, names or [str(c) for c in range(int(labels.max()) + 1)]


@register
class HuggingFaceDataset(Reader):
    layout = "hf-datasets"
    listed_by_one = False  # every process memory-maps the same Arrow files itself: no walk to share

    @classmethod
    def detects(cls, path: Path) -> bool:
        return path.is_dir() and ((path / "dataset_dict.json").is_file()
                                  or ((path / "state.json").is_file() and (path / "dataset_info.json").is_file()))

    @classmethod
    def list(cls, path: Path, split: str, cache: bool = True) -> tuple:  # datasets keeps its own
        datasets, dataset, name = _split(path, split)
        where = f"{path} [{name}]"
        column = next((c for c, f in dataset.features.items() if isinstance(f, datasets.Image)), None)
        if column is None:
            raise DataError(f"{where} has no Image column (it has {', '.join(dataset.features)}); save the images "
                            "as a datasets.Image feature")
        if not len(dataset):
            raise DataError(f"{where} holds no rows")
        labels, classes = _labels(datasets, dataset, where)
        images = dataset.select_columns([column]).cast_column(column, datasets.Image(decode=False))
        rows = DatasetRows(images, column, np.arange(len(dataset), dtype=np.int64), where)
        return rows, labels, classes, f"{where} (Hugging Face dataset)"

"""Arrays as images and signals share them: the members of an .npz file, and the per-item labels
and subject ids stored beside the data, each checked before use or refused in one DataError."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError, first_line


def open_npz(path: Path):
    """The arrays of an .npz file, each read when asked for with npz_array, or one DataError naming it."""
    try:
        arrays = np.load(path, allow_pickle=False)  # an object array is a pickle, and a pickle can run code
    except Exception as err:  # not a zip (truncated, text), or a pickle that np.load would only unpickle
        raise DataError(f"cannot read {path}: {_read_failure(err)}") from None
    if not isinstance(arrays, np.lib.npyio.NpzFile):  # np.load reads a lone .npy array under any name
        raise DataError(f"{path} holds one .npy array, not an .npz archive of named arrays; "
                        "write it with numpy.savez(path, images=..., labels=...)")
    return arrays


def npz_array(arrays, key: str, path: Path) -> np.ndarray:
    """Member ``key`` of an open .npz file, or one DataError naming the file and the member."""
    try:
        value = arrays[key]
    except Exception as err:  # zipfile and numpy raise many types: a bad CRC, a truncated member, a bad header
        raise DataError(f"cannot read {path}:{key}: {_read_failure(err)}") from None
    if not isinstance(value, np.ndarray):  # numpy hands back a member not named *.npy as its raw bytes
        raise DataError(f"{path}:{key} is a raw file in the archive, not a .npy array; write the file with numpy.savez")
    return value


def _read_failure(err: Exception) -> str:
    if "allow_pickle" in str(err):  # numpy's words for an object array, or a file that is no numpy file at all
        return ("only unpickling could read it (it holds Python objects, or is no numpy file at all), and "
                "unpickling can run code; store numeric arrays with numpy.savez")
    return f"{first_line(err)}; the file is damaged (write it again)"


def check_per_item(values: np.ndarray, count: int, where: str, item: str, fix: str) -> np.ndarray:
    """``values`` as int64, one integer per item (labels, subject ids), or one DataError naming ``where``."""
    if values.dtype.kind not in "iu":
        raise DataError(f"{where} holds {values.dtype} values, not integers; {fix}")
    if values.shape != (count,):
        raise DataError(f"{where} has shape {values.shape}, not one value per {item} ({count}); {fix}")
    return values.astype(np.int64)


def check_labels(labels: np.ndarray, count: int, classes: list, where: str, item: str = "image",
                 fix: str = "") -> np.ndarray:
    """``labels`` as int64 class indices, one per item and each naming one of ``classes`` (any index when there
    are no names), or one DataError naming ``where``: a bad label fails far later otherwise, as an IndexError
    or a device-side assert, or quietly trains on the wrong classes."""
    fix = fix or f"store one class index 0, 1, ... per {item}"
    labels = check_per_item(labels, count, where, item, fix)
    if count and labels.min() < 0:
        raise DataError(f"{where} holds the negative label {labels.min()}; {fix}")
    if count and classes and labels.max() >= len(classes):
        raise DataError(f"{where} holds the label {labels.max()}, but there are {len(classes)} class names "
                        f"(labels 0 to {len(classes) - 1}); {fix}")
    return labels

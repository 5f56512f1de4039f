"""Readers for the data layouts we recognise, and the detection that picks one for a path.

Known layouts (``--data PATH`` may point at the folder or at its parent):
  cifar10      torchvision's ``cifar-10-batches-py`` pickles
  cifar100     torchvision's ``cifar-100-python`` pickles (fine or coarse labels)
  stl10        ``stl10_binary`` (train, test, unlabeled)
  tiny         ``tiny-imagenet-200`` (the labelled val split serves as test)
  split-folder ``train/<class>/img`` and ``test/<class>/img`` (or ``val``)
  class-folder ``<class>/img`` (one split, train)
  unlabelled   a flat folder of images
  npz          a ``.npz`` file with ``images`` [+ ``labels``] or ``train_images`` ... ``test_labels``
"""
from __future__ import annotations

import codecs
import pickle
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from ..augment import GRAY_WEIGHTS
from ..errors import ConfigError, DataError, MissingSplit
from .arrays import check_labels, npz_array, open_npz
from .classes import joined_classes, numbered_as
from .decode import Resize, decode_files, is_image, list_images
from .filelist import FileList, image_names
from .imageset import ImageSet

CIFAR100_LABELS = ("fine", "coarse")  # the 100 classes or the 20 super-classes
Arrays = tuple  # (images N x H x W x 3 or N x 3 x H x W uint8, labels or None, class names)
REDOWNLOAD = "the data set folder is incomplete or damaged (download or extract it again)"


def _numpy_pickle_globals() -> dict:
    """The globals a pickled CIFAR batch may name: numpy's array, dtype and scalar rebuilders, under the
    module names numpy 1 (numpy.core) and numpy 2 (numpy._core) write, whichever numpy reads them."""
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy < 2
        from numpy.core import multiarray, numeric
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
               # Python 3 writes bytes as _codecs.encode(text, 'latin1') at pickle protocol 2.
               ("_codecs", "encode"): codecs.encode}
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = multiarray.scalar  # numpy integer labels
        allowed[(f"{core}.numeric", "_frombuffer")] = numeric._frombuffer  # arrays at protocol 5
    return allowed


class _NotACifarBatch(Exception):
    """A pickle naming a global a CIFAR batch never holds."""


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles only dicts, lists, strings, bytes, numbers and numpy arrays: a pickle can name any
    callable, and a crafted data folder must not run code."""

    _allowed = _numpy_pickle_globals()

    def find_class(self, module: str, name: str):
        found = self._allowed.get((module, name))
        if found is None:
            raise _NotACifarBatch(f"{module}.{name}")
        return found


def _unpickle(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"missing file {path}; the data set folder is incomplete (re-download it with --download)")
    try:
        with open(path, "rb") as f:
            batch = _CifarUnpickler(f, encoding="bytes").load()
    except _NotACifarBatch as err:
        raise DataError(f"{path} is not a CIFAR batch: it names {err}, which CIFAR batches never hold; "
                        "refusing to load it (re-download the data set)") from None
    except Exception as err:
        raise DataError(f"cannot read {path}: {err}; the file is corrupt (re-download it)") from None
    if not isinstance(batch, dict):
        raise DataError(f"{path} is not a CIFAR batch: it holds a {type(batch).__name__}, not a dict "
                        "(re-download the data set)")
    return batch


def _entry(batch: dict, key: bytes, path: Path):
    if key not in batch:
        raise DataError(f"{path} is not a CIFAR batch: it has no '{key.decode()}' entry (re-download the data set)")
    return batch[key]


def _cifar_batch(path: Path, label_key: bytes, classes: list) -> tuple:
    """(N x 3 x 32 x 32 uint8 images, N labels, each one of ``classes``) of one batch file, checked."""
    batch = _unpickle(path)
    data, labels = np.asarray(_entry(batch, b"data", path)), np.asarray(_entry(batch, label_key, path))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path} is not a CIFAR batch: expected N x 3072 uint8 images, got {data.dtype} {data.shape} "
                        "(re-download it)")
    labels = check_labels(labels, len(data), classes, f"{path} '{label_key.decode()}'", fix=REDOWNLOAD)
    return data.reshape(-1, 3, 32, 32), labels


def _class_names(path: Path, key: bytes) -> list:
    names = _entry(_unpickle(path), key, path)
    if not isinstance(names, list) or not all(isinstance(n, bytes) for n in names):
        raise DataError(f"{path} is not CIFAR metadata: '{key.decode()}' is not a list of names (re-download it)")
    return [n.decode(errors="replace") for n in names]


def read_cifar10(root: Path, split: str, labels: str) -> Arrays:
    classes = _class_names(root / "batches.meta", b"label_names")
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    batches = [_cifar_batch(root / n, b"labels", classes) for n in names]
    images = np.concatenate([images for images, _ in batches])
    targets = np.concatenate([targets for _, targets in batches])
    return images, targets, classes


def read_cifar100(root: Path, split: str, labels: str) -> Arrays:
    classes = _class_names(root / "meta", b"fine_label_names" if labels == "fine" else b"coarse_label_names")
    images, targets = _cifar_batch(root / split, b"fine_labels" if labels == "fine" else b"coarse_labels", classes)
    return images, targets, classes


def _read_binary(path: Path) -> np.ndarray:
    """The bytes of one of a data set's files as uint8, or one DataError naming it."""
    if not path.is_file():
        raise DataError(f"missing file {path}; {REDOWNLOAD}")
    try:
        return np.fromfile(path, dtype=np.uint8)
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror or err}") from None


def _read_text(path: Path, why: str = "") -> str:
    """The UTF-8 text of one of a data set's index files (class names, annotations), or one DataError naming it."""
    if not path.is_file():
        raise DataError(f"missing file {path}; {why or REDOWNLOAD}")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path} is not UTF-8 text (byte {err.start} is {err.object[err.start]:#04x}); "
                        f"{REDOWNLOAD}") from None
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror or err}") from None


def read_stl10(root: Path, split: str, labels: str) -> Arrays:
    names_file = root / "class_names.txt"
    classes = _read_text(names_file).split() if names_file.is_file() else [str(i) for i in range(10)]
    raw = _read_binary(root / f"{split}_X.bin")
    if raw.size % (3 * 96 * 96):
        raise DataError(f"{root / f'{split}_X.bin'} is truncated: its size is not a multiple of one 96x96 image")
    # Stored column-major per channel: transpose to rows first.
    images = raw.reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2)
    targets = None
    if split != "unlabeled":
        stored = root / f"{split}_y.bin"
        targets = check_labels(_read_binary(stored).astype(np.int64) - 1, len(images), classes,
                               f"{stored} (less 1: STL-10 counts labels from 1)", fix=REDOWNLOAD)
    return images, targets, classes


def read_tiny_imagenet(root: Path, split: str, labels: str, size: Optional[Resize], cache: bool) -> Arrays:
    wnids = _read_text(root / "wnids.txt").split()
    index = {w: i for i, w in enumerate(wnids)}
    if split == "train":
        files, targets = [], []
        for wnid in wnids:
            folder = root / "train" / wnid / "images"
            if not folder.is_dir():
                raise DataError(f"missing folder {folder} for the class {wnid} in {root / 'wnids.txt'}; {REDOWNLOAD}")
            found = list_images(folder)
            files += found
            targets += [index[wnid]] * len(found)
    else:
        annotations = root / "val" / "val_annotations.txt"
        files, targets = [], []
        lines = _read_text(annotations, "tiny-ImageNet's labelled split is its val folder").splitlines()
        for line_no, line in enumerate(lines, 1):
            parts = line.split("\t")
            if len(parts) < 2 or parts[1] not in index:
                raise DataError(f"{annotations} line {line_no} is not 'file<TAB>wnid' with a known wnid: {line!r}")
            files.append(root / "val" / "images" / parts[0])
            targets.append(index[parts[1]])
    return decode_files(files, root, size, cache), np.asarray(targets), wnids


def _class_folders(root: Path) -> list:
    return sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def list_class_folder(root: Path) -> tuple:
    """(files, class index per file, class names) of a folder of class sub-folders."""
    classes = _class_folders(root)
    files, targets = [], []
    for i, folder in enumerate(classes):
        found = sorted(p for p in folder.rglob("*") if is_image(p))
        if not found:
            raise DataError(f"class folder {folder} holds no images; remove it or add images")
        files += found
        targets += [i] * len(found)
    return files, np.asarray(targets), [c.name for c in classes]


def read_class_folder(root: Path, size: Optional[Resize], cache: bool) -> Arrays:
    files, targets, classes = list_class_folder(root)
    return decode_files(files, root, size, cache), targets, classes


STREAMED_LAYOUTS = ("split-folder", "class-folder", "unlabelled")  # folders of image files, one per image


def streams(path) -> bool:
    """Whether ``data.stream`` streams the data at ``path``: folders of image files do; array formats (CIFAR's
    and STL-10's binaries, .npz) are read whole, as they are stored."""
    return detect_layout(Path(path).expanduser())[0] in STREAMED_LAYOUTS


def list_class_files(root: Path) -> tuple:
    """``list_class_folder`` for a stream: (FileList, class index per file, class names)."""
    names, targets, classes = [], [], _class_folders(root)
    for i, folder in enumerate(classes):
        found = image_names(folder, root)
        if not found:
            raise DataError(f"class folder {folder} holds no images; remove it or add images")
        names += found
        targets.append(np.full(len(found), i, dtype=np.int64))
    return FileList.of(root, names), np.concatenate(targets), [c.name for c in classes]


def list_image_files(path, split: str = "train") -> tuple:
    """(FileList, labels or None, classes, layout) of an image-folder data set, without decoding (streaming),
    in the order the folder read whole has."""
    layout, root = detect_layout(Path(path).expanduser())
    if layout == "split-folder":
        return (*list_class_files(_split_folder(root, split)), layout)
    if layout == "class-folder" and split == "train":
        return (*list_class_files(root), layout)
    if layout == "unlabelled" and split == "train":
        return FileList.of(root, image_names(root, root, recursive=False)), None, [], layout
    if layout in ("class-folder", "unlabelled"):
        raise MissingSplit(f"{root} ({layout} layout) has no '{split}' split", "it has train")
    raise DataError(f"data.stream reads folders of image files; {path} ({layout} layout, split '{split}') is not one "
                    "(array formats are small enough to load: set data.stream=false)")


def read_unlabelled(root: Path, size: Optional[Resize], cache: bool) -> Arrays:
    return decode_files(list_images(root), root, size, cache), None, []


ARRAY_LAYOUTS = ("nhwc", "nchw")
COMMON_CHANNELS = (1, 3, 4)  # grey, RGB, RGBA or RGB-NIR


def channels_first(images: np.ndarray, layout: Optional[str], where: str) -> np.ndarray:
    """An .npz's N x H x W x C or N x C x H x W images as N x C x H x W: as ``layout`` (data.layout) says, or
    where only one reading is plausible (only one has 1, 3 or 4 channels, else only one is square); otherwise
    refused, naming the shape: a multi-band array must not be read with its bands as rows."""
    if layout is None:
        readings = {"nhwc": (images.shape[3], images.shape[1:3]), "nchw": (images.shape[1], images.shape[2:4])}
        for plausible in (lambda c, hw: c in COMMON_CHANNELS, lambda c, hw: hw[0] == hw[1]):
            fits = [name for name, (c, hw) in readings.items() if plausible(c, hw)]
            if len(fits) == 1:
                layout = fits[0]
                break
        else:
            n, a, b, c = images.shape
            raise DataError(f"{where} is {n} x {a} x {b} x {c}: its channel axis could be the second or the last; "
                            "set data.layout=nhwc (channels last) or data.layout=nchw (channels first)")
    return images.transpose(0, 3, 1, 2) if layout == "nhwc" else images


def read_npz(path: Path, split: str, layout: Optional[str] = None) -> Arrays:
    arrays = open_npz(path)
    keys = set(arrays.files)
    if f"{split}_images" in keys:
        image_key = f"{split}_images"
    elif "images" in keys and split == "train":
        image_key = "images"
    else:
        raise MissingSplit(f"{path} has no '{split}_images' array (it has {', '.join(sorted(keys))})",
                           "store 'images' [+ 'labels'] or 'train_images'/'test_images' [+ '_labels']")
    label_key = image_key.replace("images", "labels")
    images = npz_array(arrays, image_key, path)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise DataError(f"{path}:{image_key} must be uint8 N x H x W x C or N x C x H x W, "
                        f"got {images.dtype} {images.shape}")
    if not len(images):
        raise DataError(f"{path}:{image_key} holds no images")
    images = channels_first(images, layout, f"{path}:{image_key}")
    labels = None
    if label_key in keys:
        labels = check_labels(npz_array(arrays, label_key, path), len(images), [], f"{path}:{label_key}")
    return images, labels, []


def _find(path: Path, name: str) -> Optional[Path]:
    if path.name == name and path.is_dir():
        return path
    return path / name if (path / name).is_dir() else None


def _has_class_folders(path: Path) -> bool:
    subdirs = _class_folders(path)
    return bool(subdirs) and any(any(is_image(p) for p in d.iterdir()) for d in subdirs[:5])


def detect_layout(path: Path) -> tuple:
    """Return (layout name, folder to read) for ``path``, or raise DataError."""
    if not path.exists():
        raise DataError(f"--data {path} does not exist")
    if not (path.is_file() or path.is_dir()):
        raise DataError(f"--data {path} is not a regular file or a folder; pass the data's file or folder")
    if path.is_file():
        if path.suffix == ".npz":
            return "npz", path
        raise DataError(f"--data {path} is a file but not a .npz array file")
    for name, layout in (("cifar-10-batches-py", "cifar10"), ("cifar-100-python", "cifar100"),
                         ("stl10_binary", "stl10"), ("tiny-imagenet-200", "tiny")):
        found = _find(path, name)
        if found is not None:
            return layout, found
    if (path / "wnids.txt").is_file() and (path / "val").is_dir():
        return "tiny", path
    if (path / "train").is_dir() and _has_class_folders(path / "train"):
        return "split-folder", path
    if _has_class_folders(path):
        return "class-folder", path
    if list_images(path):
        return "unlabelled", path
    if not any(path.iterdir()):
        raise DataError(f"--data {path} is an empty folder")
    raise DataError(
        f"--data {path} matches no known layout. Expected torchvision's CIFAR-10/100 or STL-10 folders, "
        "tiny-imagenet-200, train/ and test/ with class sub-folders, class sub-folders, a flat folder "
        "of images, or a .npz file (see `spatialssl pretrain --help`).")


SPLITS = {
    "cifar10": ("train", "test"), "cifar100": ("train", "test"), "stl10": ("train", "test", "unlabeled"),
    "tiny": ("train", "test", "val"), "split-folder": ("train", "test", "val"), "class-folder": ("train",),
    "unlabelled": ("train",), "npz": ("train", "test"),
}


def _read_split(layout: str, root: Path, split: str, labels: str, size: Optional[Resize], cache: bool,
                axes: Optional[str] = None) -> Arrays:
    if split not in SPLITS[layout]:
        raise MissingSplit(f"{root} ({layout} layout) has no '{split}' split", f"it has {', '.join(SPLITS[layout])}")
    readers: dict = {
        "cifar10": lambda: read_cifar10(root, split, labels),
        "cifar100": lambda: read_cifar100(root, split, labels),
        "stl10": lambda: read_stl10(root, split, labels),
        "tiny": lambda: read_tiny_imagenet(root, "val" if split == "test" else split, labels, size, cache),
        "split-folder": lambda: read_class_folder(_split_folder(root, split), size, cache),
        "class-folder": lambda: read_class_folder(root, size, cache),
        "unlabelled": lambda: read_unlabelled(root, size, cache),
        "npz": lambda: read_npz(root, split, axes),
    }
    reader: Callable = readers[layout]
    return reader()


def split_names(split: str) -> list:
    """The names to look for ``split`` under, in order: test and val each stand for the other, where one is
    missing (either names the held-out split)."""
    return [split, {"test": "val", "val": "test"}[split]] if split in ("test", "val") else [split]


def _split_folder(root: Path, split: str) -> Path:
    folder = next((root / name for name in split_names(split) if (root / name).is_dir()), None)
    if folder is None:
        raise MissingSplit(f"{root} has no '{split}' folder", "add it, or name a split it has")
    return folder


def _to_tensor(images: np.ndarray, source: str, size: Optional[Resize], channels: Optional[int] = None) -> torch.Tensor:
    """N x C x H x W uint8 (what every reader returns: no layout is guessed here), fitted to ``size`` and given
    ``channels`` (``to_channels``)."""
    tensor = to_channels(torch.from_numpy(np.ascontiguousarray(images)), channels, source)
    if size is not None and tuple(tensor.shape[-2:]) != (size.size, size.size):
        width, height = size.scaled(tensor.shape[-1], tensor.shape[-2])
        resized = torch.nn.functional.interpolate(tensor.float(), size=(height, width), mode="bilinear",
                                                  antialias=True, align_corners=False)
        left, top = size.crop_box(width, height)
        tensor = resized[..., top:top + size.size, left:left + size.size].round_().clamp_(0, 255).to(torch.uint8)
    return tensor


def to_channels(images: torch.Tensor, channels: Optional[int], source: str) -> torch.Tensor:
    """N x C x H x W images with ``channels`` channels: grey expanded to RGB, RGB made grey (ITU-R 601
    weights), any other count only as it is. ``None``: RGB for grey or RGB data, else the data's own."""
    have = images.shape[1]
    want = channels or (3 if have in (1, 3) else have)
    if have == want:
        return images
    if (have, want) == (1, 3):
        return images.expand(-1, 3, -1, -1).contiguous()
    if (have, want) == (3, 1):
        weights = torch.tensor(GRAY_WEIGHTS, dtype=torch.float64, device=images.device)
        grey = torch.tensordot(weights, images.double(), dims=([0], [1]))
        return grey.round_().clamp_(0, 255).to(torch.uint8).unsqueeze(1)
    raise DataError(f"the images in {source} have {have} channels and data.channels is {want}; set data.channels="
                    f"{have} (or null), or convert the data")


def load_images(path, split: str = "train", labels: str = "fine", image_size: Optional[int] = None,
                cache: bool = True, resize: str = "short_side", channels: Optional[int] = None,
                array_layout: Optional[str] = None) -> ImageSet:
    """Read one split (or several joined by '+', e.g. 'train+unlabeled') of the data at ``path``; with
    ``image_size`` every image becomes that square (``resize``: decode.Resize's modes), with ``channels``
    that many channels (``to_channels``); ``array_layout`` (nhwc | nchw) says where an .npz keeps its channels
    when its shape cannot (``channels_first``)."""
    if resize == "whole":
        raise ConfigError("data.resize=whole keeps every image's own shape, which only a stream carries: set "
                          "data.stream=true (image folders, shards, datasets), or data.resize=short_side for data "
                          "read whole (.npz, CIFAR, or a folder without data.stream)")
    path = Path(path).expanduser()
    image_size = None if image_size is None else Resize(image_size, resize)
    layout, root = detect_layout(path)
    parts = []
    for name in split.split("+"):
        images, targets, classes = _read_split(layout, root, name, labels, image_size, cache, array_layout)
        tensor = _to_tensor(images, str(root), image_size, channels)
        target_tensor = None if targets is None else torch.as_tensor(targets, dtype=torch.int64)
        parts.append(ImageSet(tensor, target_tensor, classes, f"{root} [{name}]", layout))
    if len(parts) == 1:
        return parts[0]
    if len({p.image_size for p in parts}) > 1:
        raise DataError(f"splits {split} of {root} have different image sizes; set data.image_size")
    labelled = all(p.labels is not None for p in parts)
    classes = parts[0].classes
    if labelled and any(p.classes != classes for p in parts):  # each split numbered its own classes
        classes = joined_classes(parts)
        parts = [numbered_as(p, classes, f"{root} [{split}]", "joining splits") for p in parts]
    return ImageSet(torch.cat([p.images for p in parts]),
                    torch.cat([p.labels for p in parts]) if labelled else None,
                    classes, f"{root} [{split}]", layout)

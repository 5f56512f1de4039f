"""``spatialssl shard``: WebDataset shards (``OUT/SPLIT-000000.tar`` ...) from anything ``--data`` reads, in the
order its reader lists it, so that a run on the shards reads what a run on the data reads, in the same order.

Image files (folders, other shards, a Hugging Face dataset's stored images) are copied byte for byte, their
format kept; arrays (CIFAR's and STL-10's binaries, .npz, data sets decoded whole) are written as PNG, which is
lossless. A sample is ``KEY.EXT`` and, when the data has labels, ``KEY.cls``; KEY is the sample's number in
its split, zero-padded. The tars are deterministic (the order above, mtime 0, owner 0) and each is written
atomically."""
from __future__ import annotations

import io
import re
import sys
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..data.decode import _decode
from ..data.readers import list_image_files, load_images, streams
from ..data.registry import reader_for
from ..errors import ConfigError, DataError, MissingSplit
from ..files import atomic_write, refuse_to_replace, write_or_explain

FORMATS = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tiff",
           "PPM": "ppm"}  # Pillow's names of the formats a shard's reader takes, as extensions
READERS = 8  # threads reading the files of a shard: a network file system answers them together


def write_shards(data, out, split: Optional[str] = None, per_shard: int = 1000, overwrite: bool = False,
                 progress: bool = True) -> dict:
    """Shards of ``split`` of ``data`` (default: train, and test where there is one) in the folder ``out``, which
    is refused when it holds anything unless ``overwrite``; returns {split: (shards, samples, labelled)}."""
    if per_shard < 1:
        raise ConfigError(f"--samples-per-shard {per_shard}: a shard holds at least one sample")
    out = Path(out)
    refuse_to_replace(out, overwrite)
    written = {}
    for name in [split] if split else ["train", "test"]:
        try:
            count, item, labels = split_items(data, name)
        except MissingSplit:
            if split or name == "train":
                raise
            continue  # no test split: the train split alone
        written[name] = write_split(out, name, count, item, labels, per_shard, progress)
    return written


def split_items(data, split: str) -> tuple:
    """(count, item(i) -> (encoded bytes, extension), int64 labels or None) of ``split`` of ``data``, in its
    reader's order."""
    path = Path(str(data)).expanduser()
    reader = reader_for(path)
    if reader is not None:
        source, labels = reader.list(path, split)[:2]
        return len(source), lambda i: _sniffed(source.read(i), source.describe(i)), labels
    if streams(path):
        files, labels = list_image_files(path, split)[:2]
        return len(files), lambda i: (files.read(i), Path(files.name(i)).suffix.lower()[1:]), labels
    images = load_images(path, split, cache=False)
    labels = None if images.labels is None else images.labels.numpy()
    return len(images), lambda i: (_png(images.images[i].permute(1, 2, 0).numpy(), images.source), "png"), labels


def _sniffed(data: bytes, name: str) -> tuple:
    """(data, its format's extension); data in a format a shard's reader does not take becomes PNG."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            kind = image.format
    except Exception:  # Pillow raises many types for what it cannot read: let decoding say why
        kind = None
    if kind in FORMATS:
        return data, FORMATS[kind]
    return _png(_decode(name, data, None), name), "png"


def _png(pixels: np.ndarray, source: str) -> bytes:
    if pixels.shape[-1] not in (1, 3):
        raise DataError(f"the images of {source} have {pixels.shape[-1]} channels; shards hold grey or RGB images")
    buffer = io.BytesIO()
    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def write_split(out: Path, split: str, count: int, item: Callable, labels, per_shard: int, progress: bool) -> tuple:
    """Write the ``count`` samples of ``split``; with ``--overwrite``, shards of the split beyond the new last one
    (left by a larger earlier set) are removed, since a reader would take them as part of the split."""
    width = max(8, len(str(count - 1)))
    shards = range(0, count, per_shard)
    bar = tqdm(total=count, desc=f"shard {split}", unit="img", disable=not (progress and sys.stderr.isatty()))
    names = []
    with ThreadPoolExecutor(max_workers=READERS) as pool, bar:
        for number, first in enumerate(shards):
            index = range(first, min(first + per_shard, count))
            samples = []
            for i, (data, extension) in zip(index, pool.map(item, index)):
                members = [(extension, data)] + ([] if labels is None else [("cls", str(int(labels[i])).encode())])
                samples.append((f"{i:0{width}d}", members))
            names.append(f"{split}-{number:06d}.tar")
            write_tar(out / names[-1], samples)
            bar.update(len(index))
    stale = re.compile(rf"{re.escape(split)}-\d{{6,}}\.tar")
    for path in out.iterdir():
        if stale.fullmatch(path.name) and path.name not in names:
            path.unlink()
    return len(names), count, labels is not None


def write_tar(path: Path, samples: list) -> None:
    """One shard, the same bytes for the same samples: members in order, mtime 0, owner 0, mode 644."""
    def write(tmp):
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            for key, members in samples:
                for extension, data in sorted(members):
                    info = tarfile.TarInfo(f"{key}.{extension}")
                    info.size, info.mtime, info.mode = len(data), 0, 0o644
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    tar.addfile(info, io.BytesIO(data))

    write_or_explain(path, lambda: atomic_write(path, write), f"free space in (or fix the permissions of) "
                                                              f"{path.parent} and write the shards again")


def summary(written: dict, out) -> str:
    return "\n".join(f"wrote {shards} shard{'s' * (shards != 1)} of {samples} {split} samples "
                     f"({'labelled' if labelled else 'unlabelled'}) to {Path(out) / f'{split}-*.tar'}"
                     for split, (shards, samples, labelled) in written.items())


"""Decode image files once into a uint8 array, with a cache on disk keyed by the files' names, sizes and
modification times: one process decodes and writes it while the others of the machine wait for it, and
every process maps the same file (copy on write) instead of holding a copy.

Every image becomes 8-bit RGB: grey and palette images are expanded, alpha is dropped, 16-bit grey keeps
its top 8 bits (x >> 8, the whole range scaled rather than clipped), and images of floats or of signed or
32-bit integers, which have no fixed range to scale from, are refused with a DataError naming the file.
With a ``Resize`` every image becomes S x S: by default its short side is scaled to S and the long one
centre-cropped, keeping the aspect; ``squash`` scales both sides to S."""
from __future__ import annotations

import fcntl
import hashlib
import io
import os
import tempfile
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import DataError, first_line, warn
from ..files import atomic_write, sweep_temporaries

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}
CACHE_FORMAT = "6"  # 6: EXIF orientation applied. Bump when decoding changes, so old caches are not reused
# A cache write killed midway leaves its temporary; one untouched this long is no live writer's (the folder
# is shared by concurrent runs without a lock).
STALE_TEMPORARY_S = 3600
# Unsigned 16-bit grey as Pillow opens it; Pillow < 10 opens 16-bit grey PNGs as 32-bit "I", and a PNG holds
# no wider integers, so an "I" PNG is 16-bit too.
SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N"}


RESIZE_MODES = ("short_side", "squash", "whole")


@dataclass(frozen=True)
class Resize:
    """Every image to ``size`` x ``size``: short side scaled to it and the long one centre-cropped
    (``short_side``, the aspect kept), or both sides scaled (``squash``); or (``whole``, streams) the whole image,
    its aspect kept and its long side at most ``source`` (never enlarged), in a ``source`` x ``source`` canvas
    that training crops are cut from (``canvas.Canvases``; ``crop_pct``: its un-augmented view)."""
    size: int
    mode: str = "short_side"
    source: Optional[int] = None  # whole: the canvas side; None: 2 x size
    crop_pct: float = 1.0

    def __post_init__(self):
        if self.mode not in RESIZE_MODES:
            raise ValueError(f"mode '{self.mode}' is unknown; choose one of {', '.join(RESIZE_MODES)}")

    @property
    def canvas(self) -> int:
        """The side of what decoding makes."""
        return (self.source or 2 * self.size) if self.mode == "whole" else self.size

    def scaled(self, width: int, height: int) -> tuple:
        """(width, height) before the centre crop (or, whole, the image's size in its canvas)."""
        if self.mode == "squash":
            return self.size, self.size
        if self.mode == "whole":
            scale = min(1.0, self.canvas / max(width, height))
            return max(1, round(width * scale)), max(1, round(height * scale))
        scale = self.size / min(width, height)
        return max(self.size, round(width * scale)), max(self.size, round(height * scale))

    def crop_box(self, width: int, height: int) -> tuple:
        """(left, top) of the centred size x size window in a scaled image."""
        return (width - self.size) // 2, (height - self.size) // 2


def reduced_decode(img: Image.Image, resize: Resize) -> None:
    """Let a JPEG decode at 1/2, 1/4 or 1/8 of its size (DCT scaling, Pillow's draft mode) where that still gives
    at least the pixels ``resize`` keeps: most of a large JPEG's decoding time is saved. Other formats decode
    whole."""
    if img.format == "JPEG":
        img.draft("RGB", resize.scaled(*img.size))


ORIENTATION = 0x0112  # the EXIF tag a camera sets instead of turning the pixels


def orientation(img: Image.Image) -> int:
    """The EXIF orientation of an opened image (1: upright, as stored); a damaged EXIF block counts as upright."""
    try:
        return int(img.getexif().get(ORIENTATION, 1))
    except Exception:  # Pillow raises many types for malformed EXIF; the pixels may still decode
        return 1


def upright(img: Image.Image) -> Image.Image:
    """The image as its EXIF orientation says it is seen (a phone's portrait photo stands up), as browsers and
    torchvision's decode_image(apply_exif_orientation=True) show it."""
    return ImageOps.exif_transpose(img) if orientation(img) != 1 else img


def fit(img: Image.Image, resize: Resize) -> np.ndarray:
    if resize.mode == "whole":
        width, height = resize.scaled(*img.size)
        pixels = np.asarray(img if img.size == (width, height) else img.resize((width, height), Image.BILINEAR))
        side = resize.canvas  # the edge repeated past the image: bilinear crops at its border read its own pixels
        return np.pad(pixels, ((0, side - height), (0, side - width), (0, 0)), mode="edge")
    if img.size != (resize.size, resize.size):
        width, height = resize.scaled(*img.size)
        img = img.resize((width, height), Image.BILINEAR)
        left, top = resize.crop_box(width, height)
        img = img.crop((left, top, left + resize.size, top + resize.size))
    return np.asarray(img, dtype=np.uint8)


class Unreadable:
    """What a worker hands back for an image it cannot decode: DataLoader would re-raise the worker's DataError
    with the worker's traceback as its message, and the user is owed the one line that names the file."""

    def __init__(self, message: str):
        self.message = message


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()


def list_images(folder: Path) -> list:
    return sorted(p for p in folder.iterdir() if is_image(p))


def _decode(path: Path, data: bytes, size: Optional[Resize]) -> np.ndarray:
    """The image in ``data`` as 8-bit RGB (H x W x 3), made as ``size`` says."""
    return decode_sized(path, data, size)[0]


def as_tensor(pixels: np.ndarray) -> torch.Tensor:
    """A decoded H x W x C array as a C x H x W uint8 tensor, sharing its memory where it is writable (a whole image's
    canvas is) rather than copying it once more."""
    return torch.from_numpy(pixels if pixels.flags.writeable else pixels.copy()).permute(2, 0, 1)


def decode_sized(path: Path, data: bytes, size: Optional[Resize]) -> tuple:
    """(``_decode``'s array, the (height, width) the image fills of it: all of it but for ``whole``'s canvas)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            if size is not None:
                reduced_decode(img, size)
            img = upright(img)
            extent = img.size if size is None else size.scaled(*img.size)
            img = _to_rgb(img, path)
            pixels = np.asarray(img, dtype=np.uint8) if size is None else fit(img, size)
    except DataError:
        raise
    except Exception as err:  # Pillow raises many types for corrupt files
        raise DataError(f"cannot decode image {path}: {_decode_failure(err, data)}. Remove or replace the file.") from None
    if size is None or size.mode != "whole":
        return pixels, pixels.shape[:2]
    return pixels, (extent[1], extent[0])


def _to_rgb(img: Image.Image, path: Path) -> Image.Image:
    """8-bit RGB (see the module's note): Pillow's own convert("RGB") clips every wider grey value to 0..255,
    turning a 16-bit image white and a float image black."""
    if img.mode in SIXTEEN_BIT_MODES or (img.mode == "I" and img.format == "PNG"):
        return Image.fromarray((np.asarray(img).astype(np.uint32) >> 8).astype(np.uint8)).convert("RGB")
    if img.mode.startswith(("I", "F")):
        kind = "floating-point" if img.mode.startswith("F") else "signed or 32-bit integer"
        raise DataError(f"cannot decode image {path}: its pixels are {kind} values (Pillow mode {img.mode}), which "
                        "have no fixed range to scale to 0..255; save it as 8- or 16-bit unsigned, or remove it")
    return img.convert("RGB")


def _decode_failure(err: Exception, data: bytes) -> str:
    """Why Pillow could not decode ``data``, in words: its own message names the in-memory buffer
    (``<_io.BytesIO object at 0x...>``) instead of a reason."""
    if not data:
        return "the file is empty"
    if isinstance(err, UnidentifiedImageError):
        return "not an image format Pillow recognises, or its header is damaged"
    return first_line(err)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise DataError(f"cannot read image {path}: {err.strerror}") from None


def cache_folder(root: Path) -> Optional[Path]:
    """Next to the data when writable, else the user's cache folder; None (with a warning) when
    neither can be written: the cache only saves time, so the run goes on without it."""
    beside = root / ".spatialssl-cache"
    try:
        beside.mkdir(exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".write-test-", dir=beside)  # its own name: processes starting
        os.close(handle)  # together must not remove each other's probe (and fall back to the home cache)
        os.unlink(probe)
        folder = beside
    except OSError:
        folder = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "spatialssl"
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            warn(f"no decode cache: neither {beside} nor {folder} can be written ({err.strerror}); "
                 "decoding without it (set XDG_CACHE_HOME to a writable folder to cache)")
            return None
    try:
        sweep_temporaries(folder, idle_for=STALE_TEMPORARY_S)
    except OSError:  # tidying only: a folder we cannot tidy still caches, or its write warns
        pass
    return folder


def _read_cache(path: Path, count: int) -> Optional[np.ndarray]:
    """The cached images, memory-mapped copy-on-write (the page cache holds them once for every process), or
    None (with a warning) when the file is not a complete cache of ``count`` images: truncated by a full disk,
    or something else under our name."""
    try:
        images = np.load(path, mmap_mode="c", allow_pickle=False)
    except Exception as err:  # numpy and zipfile raise many types for a damaged file
        warn(f"ignoring the unreadable decode cache {path} ({type(err).__name__}: {err}); decoding the images again")
        return None
    if images.dtype != np.uint8 or images.ndim != 4 or len(images) != count or images.shape[1] != 3:
        warn(f"ignoring the decode cache {path}: it holds {images.dtype} {images.shape}, not {count} RGB uint8 "
             "images; decoding the images again")
        return None
    return images


def _write_cache(path: Path, images: np.ndarray) -> None:
    try:
        save_npy_atomic(path, images)
    except OSError as err:  # a full disk or a folder made read-only: the decoded images are still good
        warn(f"cannot write the decode cache {path} ({err.strerror or err}); the run goes on without it")


def save_npy_atomic(path: Path, array: np.ndarray) -> None:
    def write(tmp):
        with open(tmp, "wb") as f:  # a file object: np.save would add ".npy" to a bare name
            np.save(f, array, allow_pickle=False)

    atomic_write(path, write)


@contextmanager
def one_writer(cache_file: Path):
    """Held while a process looks for ``cache_file`` and, missing, decodes and writes it: the other processes
    (torchrun's, or runs started together) wait, then read what it wrote instead of all decoding."""
    lock = cache_file.with_name(cache_file.name + ".lock")
    try:
        handle = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)  # never through a link
    except OSError:  # no lock here (a link in the way): decode alone, as without a cache
        yield
        return
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)


def _stat(path: Path) -> os.stat_result:
    try:
        return path.stat()
    except OSError as err:
        raise DataError(f"cannot read image {path}: {err.strerror}") from None


def cache_key(files: list, root: Path, size: Optional[Resize]) -> str:
    """What names a cache: every file's name relative to ``root``, size and modification time (a stat, not a
    read of every file's bytes), and the resize option; a changed, added or removed file gives a new key."""
    key = hashlib.blake2b(f"{CACHE_FORMAT}|{size}".encode(), digest_size=16)
    for path in files:
        stat = _stat(path)
        key.update(f"{path.relative_to(root)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return key.hexdigest()


def decode_files(files: list, root: Path, size: Optional[Resize], cache: bool = True) -> np.ndarray:
    """Decode ``files`` into an N x 3 x H x W uint8 array (8-bit RGB, as the module's note says; the layout
    the loop uses, so a mapped cache is used as it is), or map the cache of them (``cache_key``) that this or
    another process wrote."""
    if not files:
        raise DataError(f"no images found in {root}")
    folder = cache_folder(root) if cache else None
    if folder is None:
        return _decode_all(files, root, size)
    cache_file = folder / f"images-{cache_key(files, root, size)}.npy"
    with one_writer(cache_file):
        if cache_file.is_file():
            cached = _read_cache(cache_file, len(files))
            if cached is not None:
                return cached
        images = _decode_all(files, root, size)
        _write_cache(cache_file, images)
    return images


def _decode_all(files: list, root: Path, size: Optional[Resize]) -> np.ndarray:
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        contents = list(pool.map(_read, files))
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        arrays = list(pool.map(lambda item: _decode(*item, size), zip(files, contents)))
    first = arrays[0].shape
    for path, array in zip(files, arrays):
        if array.shape != first:
            raise DataError(
                f"images in {root} have mixed sizes: {files[0].relative_to(root)} is {first[1]}x{first[0]}, "
                f"{path.relative_to(root)} is {array.shape[1]}x{array.shape[0]}. "
                "Set data.image_size=N to resize every image to N x N once at load.")
    return np.ascontiguousarray(np.stack(arrays).transpose(0, 3, 1, 2))

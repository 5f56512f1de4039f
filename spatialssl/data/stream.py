"""Image folders too large for memory: uint8 batches decoded by DataLoader workers, through
pinned memory to the device, where the same batched samplers augment them.

Host memory stays bounded by the batches in flight:
(workers x prefetch_factor + 2) x batch x 3 x S x S bytes for S x S images
(e.g. 16 workers, batch 256, 224 px: about 1.3 GB), whatever the data set's size.
Batches carry the images' indices, not their labels: the loop looks labels up where they stay
(on the device), so a method that makes its own (DeepCluster) streams too.

A stream reads its images by index from an ``ItemSource``: the files of a folder (``FileList``), the samples
of WebDataset shards (``shards.ShardIndex``), the rows of a Hugging Face dataset (``hf_datasets.DatasetRows``).
Reading by index is what makes every process's and worker's share exact, the order random and resuming at an
epoch boundary exact, whatever the source."""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from itertools import cycle
from pathlib import Path
from typing import Callable, ClassVar, Optional, Protocol

import numpy as np
import torch
import torch.distributed as dist

from ..canvas import Canvases, plain
from ..errors import ConfigError, DataError, SpatialSSLError, warn
from . import gpu_decode
from .decode import Resize, Unreadable, as_tensor, decode_sized
from .imageset import channel_statistics
from .readers import list_image_files, to_channels

PREFETCH = 2


class ItemSource(Protocol):
    """Where a stream's encoded images come from, one item per image, kept compactly (a million items in tens
    of MB of arrays, which forked workers share)."""

    def __len__(self) -> int: ...

    def read(self, index: int) -> bytes: ...  # the encoded image; a DataError naming it (describe) if unreadable

    def describe(self, index: int) -> str: ...  # what an error names: a file, or "SHARD.tar sample KEY"

    def take(self, index) -> "ItemSource": ...  # the items at ``index`` (positions), in that order

    @property
    def nbytes(self) -> int: ...


class _Files(torch.utils.data.Dataset):
    def __init__(self, files: ItemSource, size: Resize, channels: int = 3):
        self.files, self.size, self.channels = files, size, channels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        try:
            name = self.files.describe(index)
            pixels, extent = decode_sized(name, self.files.read(index), self.size)
            image = to_channels(as_tensor(pixels)[None], self.channels, name)[0]
        except DataError as err:
            return Unreadable(str(err))
        return image, index, torch.tensor(extent, dtype=torch.float32)


def ignore_stop_signals(worker: int) -> None:
    """In a decoding worker: a SIGTERM or Ctrl-C sent to the whole job is the training process's to act on (it
    finishes its step and checkpoints); a worker dying of it would end the run first. Workers still exit with
    their parent (DataLoader's watchdog)."""
    import signal

    for name in ("SIGTERM", "SIGUSR1", "SIGINT"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)


class EpochOrder(torch.utils.data.Sampler):
    """The indices of the current epoch, set before each: a persistent loader reads them anew every epoch."""

    def __init__(self):
        self.indices: list = []

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def _collate(items: list) -> tuple:
    """(images, indices, extents, the messages of the unreadable items). An unreadable item's place is taken by a
    readable one of the same batch, in turn, so a batch keeps its length and its other items their places
    (torchrun's processes and the pairing methods need full batches); (None, None, messages) when none is
    readable. ``ImageStream.batches`` decides whether that may happen (data.skip_corrupt)."""
    kept = [item for item in items if not isinstance(item, Unreadable)]
    errors = [item.message for item in items if isinstance(item, Unreadable)]
    if not kept:
        return None, None, None, errors
    if errors:
        stand_ins = cycle(kept)
        items = [next(stand_ins) if isinstance(item, Unreadable) else item for item in items]
    images, index, extent = torch.utils.data.default_collate(items)
    return images, index, extent, errors


@dataclass
class ImageStream:
    """Images read batch by batch (an image folder, shards, a dataset's rows); stands where an ImageSet would in
    the loop."""
    carries_labels: ClassVar[bool] = False  # batches bring the images' indices; the loop holds their labels
    files: ItemSource
    labels_array: Optional[np.ndarray]
    resize: Resize
    classes: list = field(default_factory=list)
    source: str = ""
    layout: str = ""  # readers.detect_layout's name for the folder, or a registered reader's (registry.py)
    channels: int = 3  # 1: decoded RGB made grey
    workers: int = 0  # decoding processes (decode_workers)
    skip_corrupt: bool = False  # data.skip_corrupt: an unreadable image is skipped (counted) instead of an error
    decoder: Optional[gpu_decode.Decoder] = field(default=None, repr=False)  # data.decode=gpu: nvJPEG; None: Pillow
    skipped: int = field(default=0, init=False, repr=False, compare=False)  # since the last take_skipped()
    _warned: set = field(default_factory=set, init=False, repr=False, compare=False)
    _loader: Optional[tuple] = field(default=None, init=False, repr=False, compare=False)  # (settings, order, loader)

    def __len__(self) -> int:
        return len(self.files)

    @property
    def labels(self) -> Optional[torch.Tensor]:
        return None if self.labels_array is None else torch.from_numpy(self.labels_array)

    @property
    def size(self) -> int:  # what the model sees (of whole images: their crops and un-augmented views)
        return self.resize.size

    @property
    def image_size(self) -> tuple:
        return (self.size, self.size)

    input_size = image_size

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def batches(self, order, batch: int, pin: bool):
        """uint8 (B x C x S x S) batches of the images in ``order`` (``Canvases`` of whole images with
        data.resize=whole) and their indices (the last batch may be short), decoded by ``workers`` processes. The loader and its processes are made once and kept for
        every epoch (only the order changes)."""
        settings = (batch, pin)
        if self._loader is None or self._loader[0] != settings:
            epoch_order = EpochOrder()
            if self.decoder is None:
                items, collate = _Files(self.files, self.resize, self.channels), _collate
            else:  # the workers read bytes; this process decodes them on the GPU (``decoded``)
                items, collate, pin = gpu_decode.Encoded(self.files, self.resize), gpu_decode.as_list, False
            loader = torch.utils.data.DataLoader(
                items, batch_size=batch, sampler=epoch_order, num_workers=self.workers, pin_memory=pin,
                persistent_workers=self.workers > 0, prefetch_factor=PREFETCH if self.workers else None,
                collate_fn=collate, generator=torch.Generator().manual_seed(0),  # not torch's global one
                worker_init_fn=ignore_stop_signals)
            self._loader = (settings, epoch_order, loader)
        _, epoch_order, loader = self._loader
        epoch_order.indices = list(order)
        whole = self.resize.mode == "whole"
        for read in loader:
            images, index, extent, errors = read if self.decoder is None else self._decoded(read)
            if errors:
                self._skip(errors, images is None)
            yield (Canvases(images, extent, self.size, self.resize.crop_pct) if whole else images), index

    def _decoded(self, items: list) -> tuple:
        """``_collate`` of the workers' items once their JPEGs are decoded on the GPU."""
        return _collate(gpu_decode.decode_items(items, self.decoder, self.resize, self.channels, self.files))

    def _skip(self, errors: list, whole_batch: bool) -> None:
        """Stop at the first unreadable image, or (data.skip_corrupt) count them, each named once in a warning;
        their places were taken by readable images of the batch (``_collate``)."""
        if not self.skip_corrupt:
            raise DataError(f"{errors[0]} (data.skip_corrupt=true skips unreadable images)")
        if whole_batch:
            raise DataError(f"{errors[0]}; no image of its batch of {len(errors)} could be read, so none can stand "
                            "in for the skipped ones (data.skip_corrupt)")
        self.skipped += len(errors)
        for message in errors:
            if message not in self._warned:
                self._warned.add(message)
                warn(f"skipped (data.skip_corrupt): {message}")

    def take_skipped(self) -> int:
        """The images skipped since the last call, for the epoch's log (data.skip_corrupt)."""
        count, self.skipped = self.skipped, 0
        return count

    def subset(self, count: int, seed: int = 0) -> "ImageStream":
        """A fixed random subset of the files (the same for the same seed, as ``ImageSet.subset``), or the
        whole stream if count >= len."""
        if count >= len(self):
            return self
        index = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:count].sort().values
        labels = None if self.labels_array is None else self.labels_array[index.numpy()]
        return dataclasses.replace(self, files=self.files.take(index.tolist()), labels_array=labels,
                                   source=f"{self.source} (subset of {count})")

    def images_at(self, index) -> torch.Tensor:
        """The decoded images at ``index``, as one uint8 tensor (e.g. the few a figure draws)."""
        return torch.cat([plain(x) for x, _ in self.batches(list(index), max(1, len(index)), False)])

    def mean_std(self, sample: int = 1000) -> tuple:
        """Per-channel statistics measured on a fixed random sample of the images."""
        sampled = self.subset(sample).batches(range(min(sample, len(self))), 256, False)
        return channel_statistics(plain(x) for x, _ in sampled)

    def memory_bound(self, batch: int) -> int:
        return (self.workers * PREFETCH + 2) * batch * self.channels * self.resize.canvas ** 2


def in_batches(data, batch_size: int, pin: bool = False, start: int = 0, stop: Optional[int] = None):
    """The inputs ``start:stop`` of ``data`` (a tensor, an ImageSet or SignalSet, or a stream) in order,
    ``batch_size`` at a time, the last batch short: what evaluation and prediction read."""
    stop = len(data) if stop is None else stop
    if streamed(data):
        if stop > start:
            for x, _ in data.batches(range(start, stop), batch_size, pin):
                yield plain(x)  # whole images: their un-augmented view
        return
    tensor = data if isinstance(data, torch.Tensor) else data.tensor
    for first in range(start, stop, batch_size):
        yield tensor[first:min(first + batch_size, stop)]


def usable_cpus() -> int:
    """The CPUs this process may use: its affinity (taskset, Slurm's binding), capped by a cgroup v2 CPU
    quota (containers, Kubernetes), which ``os.cpu_count()`` both ignore."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path(CGROUP_CPU_MAX).read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):  # no cgroup v2 quota here
        pass
    return max(1, cpus)


CGROUP_CPU_MAX = "/sys/fs/cgroup/cpu.max"


def decode_workers(requested: Optional[int]) -> int:
    """Decoding processes of a stream: ``requested`` (data.workers), or this process's share of the CPUs it may
    use (torchrun starts LOCAL_WORLD_SIZE training processes on a machine, each with its own workers)."""
    if requested is not None:
        return requested
    return max(1, usable_cpus() // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def streamed(data) -> bool:
    """Whether ``data`` is read a batch at a time: an ImageStream, or a stream of its kind (detection's
    CocoStream) with ``batches``, ``carries_labels`` (its batches bring their labels instead of indices),
    ``memory_bound``, ``workers`` and ``take_skipped``."""
    return hasattr(data, "batches")


def skipped_images(data) -> int:
    """The images ``data`` skipped since last asked: a stream's (data.skip_corrupt), 0 for data read whole."""
    return data.take_skipped() if streamed(data) else 0


def one_lists(listing: Callable, *args):
    """``listing(*args)`` (a folder's files, shards' samples), listed by one process of a torchrun job and handed
    to the others, which would otherwise each walk the same files on the shared file system; its error, if any,
    is everyone's."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return listing(*args)
    listed: list = [None]
    if dist.get_rank() == 0:
        try:
            listed = [listing(*args)]
        except SpatialSSLError as err:
            listed = [err]
    dist.broadcast_object_list(listed, src=0)  # our own objects between our own processes, not a file's
    if isinstance(listed[0], SpatialSSLError):
        raise listed[0]
    return listed[0]


def check_streamable(size: Optional[int], channels: Optional[int], needs: str = "data.stream needs") -> None:
    if size is None:
        raise ConfigError(f"{needs} data.image_size (every image is resized to it as it is decoded)")
    if channels not in (None, 1, 3):
        raise ConfigError(f"data.channels={channels}: image files hold grey or RGB; streams decode 1 or 3 channels")


def stream_images(path, split: str, size: Optional[int], resize: str = "short_side",
                  channels: Optional[int] = None, workers: Optional[int] = None,
                  skip_corrupt: bool = False, source_size: Optional[int] = None, crop_pct: float = 1.0) -> ImageStream:
    check_streamable(size, channels)
    files, labels, classes, layout = one_lists(list_image_files, path, split)
    return ImageStream(files, labels, Resize(size, resize, source_size, crop_pct), classes,
                       f"{Path(path)} ({split}, streamed)", layout, channels or 3, decode_workers(workers), skip_corrupt)


def stream_folder(path, split: str, options) -> ImageStream:
    """``split`` of the image folder ``path`` streamed as the config's data section (``options``) says."""
    files, labels, classes, layout = one_lists(list_image_files, path, split)
    return stream_of(files, labels, classes, f"{Path(path)} ({split}, streamed)", layout, options, "data.stream needs")


def stream_of(items: ItemSource, labels: Optional[np.ndarray], classes: list, source: str, layout: str,
              options, needs: str) -> ImageStream:
    """A stream of ``items`` decoded as the config's data section (``options``) says."""
    check_streamable(options.image_size, options.channels, needs)
    resize = Resize(options.image_size, options.resize, options.source_size, options.crop_pct)
    decoder = gpu_decode.device_decoder() if options.decode == "gpu" else None
    return ImageStream(items, labels, resize, classes, source, layout, options.channels or 3,
                       decode_workers(options.workers), options.skip_corrupt, decoder)

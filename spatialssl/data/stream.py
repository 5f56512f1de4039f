"""Image folders too large for memory: uint8 batches decoded by DataLoader workers, through
pinned memory to the device, where the same batched samplers augment them.

Host memory stays bounded by the batches in flight:
(workers x prefetch_factor + 2) x batch x 3 x S x S bytes for S x S images
(e.g. 16 workers, batch 256, 224 px: about 1.3 GB), whatever the data set's size.
Batches carry the images' indices, not their labels: the loop looks labels up where they stay
(on the device), so a method that makes its own (DeepCluster) streams too."""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist

from ..errors import ConfigError, DataError, SpatialSSLError
from .decode import Resize, _decode, _read
from .filelist import FileList
from .readers import list_image_files, to_channels

PREFETCH = 2


class _Unreadable:
    """What a worker hands back for an image it cannot decode: DataLoader would re-raise the worker's DataError
    with the worker's traceback as its message, and the user is owed the one line that names the file."""

    def __init__(self, message: str):
        self.message = message


class _Files(torch.utils.data.Dataset):
    def __init__(self, files: FileList, size: Resize, channels: int = 3):
        self.files, self.size, self.channels = files, size, channels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        path = self.files[index]
        try:
            image = torch.from_numpy(_decode(path, _read(path), self.size).copy()).permute(2, 0, 1)
            image = to_channels(image[None], self.channels, str(path))[0]
        except DataError as err:
            return _Unreadable(str(err))
        return image, index


class _EpochOrder(torch.utils.data.Sampler):
    """The indices of the current epoch, set before each: a persistent loader reads them anew every epoch."""

    def __init__(self):
        self.indices: list = []

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def _collate(items: list):
    """The batch, or the first _Unreadable among its items."""
    unreadable = [item for item in items if isinstance(item, _Unreadable)]
    return unreadable[0] if unreadable else torch.utils.data.default_collate(items)


@dataclass
class ImageStream:
    """An image folder read batch by batch; stands where an ImageSet would in the loop."""
    files: FileList
    labels_array: Optional[np.ndarray]
    resize: Resize
    classes: list = field(default_factory=list)
    source: str = ""
    layout: str = ""  # readers.detect_layout's name for the folder
    channels: int = 3  # 1: decoded RGB made grey
    workers: int = 0  # decoding processes (decode_workers)
    _loader: Optional[tuple] = field(default=None, init=False, repr=False, compare=False)  # (settings, order, loader)

    def __len__(self) -> int:
        return len(self.files)

    @property
    def labels(self) -> Optional[torch.Tensor]:
        return None if self.labels_array is None else torch.from_numpy(self.labels_array)

    @property
    def size(self) -> int:
        return self.resize.size

    @property
    def image_size(self) -> tuple:
        return (self.size, self.size)

    input_size = image_size

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def batches(self, order, batch: int, pin: bool):
        """uint8 (B x C x S x S) batches of the images in ``order`` and their indices (the last batch may be
        short), decoded by ``workers`` processes. The loader and its processes are made once and kept for
        every epoch (only the order changes)."""
        settings = (batch, pin)
        if self._loader is None or self._loader[0] != settings:
            epoch_order = _EpochOrder()
            loader = torch.utils.data.DataLoader(
                _Files(self.files, self.resize, self.channels), batch_size=batch, sampler=epoch_order,
                num_workers=self.workers, pin_memory=pin, persistent_workers=self.workers > 0,
                prefetch_factor=PREFETCH if self.workers else None, collate_fn=_collate)
            self._loader = (settings, epoch_order, loader)
        _, epoch_order, loader = self._loader
        epoch_order.indices = list(order)
        for batch_or_error in loader:
            if isinstance(batch_or_error, _Unreadable):
                raise DataError(batch_or_error.message)
            yield batch_or_error

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
        return torch.cat([x for x, _ in self.batches(list(index), max(1, len(index)), False)])

    def mean_std(self, sample: int = 1000) -> tuple:
        """Per-channel statistics measured on a fixed random sample of the images."""
        total, squares, count = 0, 0, 0
        for x, _ in self.subset(sample).batches(range(min(sample, len(self))), 256, False):
            x = x.double().div_(255)
            total, squares = total + x.sum((0, 2, 3)), squares + x.square().sum((0, 2, 3))
            count += x.numel() // x.shape[1]
        mean = total / count
        return mean.tolist(), (squares / count - mean.square()).clamp_min(1e-12).sqrt().tolist()

    def memory_bound(self, batch: int) -> int:
        return (self.workers * PREFETCH + 2) * batch * self.channels * self.size * self.size


def in_batches(data, batch_size: int, pin: bool = False, start: int = 0, stop: Optional[int] = None):
    """The inputs ``start:stop`` of ``data`` (a tensor, an ImageSet or SignalSet, or an ImageStream) in order,
    ``batch_size`` at a time, the last batch short: what evaluation and prediction read."""
    stop = len(data) if stop is None else stop
    if isinstance(data, ImageStream):
        if stop > start:
            for x, _ in data.batches(range(start, stop), batch_size, pin):
                yield x
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


def shared_listing(path, split: str) -> tuple:
    """``list_image_files``, listed by one process of a torchrun job and handed to the others, which would
    otherwise each walk the whole folder on the shared file system; its error, if any, is everyone's."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return list_image_files(path, split)
    listed: list = [None]
    if dist.get_rank() == 0:
        try:
            listed = [list_image_files(path, split)]
        except SpatialSSLError as err:
            listed = [err]
    dist.broadcast_object_list(listed, src=0)  # our own objects between our own processes, not a file's
    if isinstance(listed[0], SpatialSSLError):
        raise listed[0]
    return listed[0]


def stream_images(path, split: str, size: Optional[int], resize: str = "short_side",
                  channels: Optional[int] = None, workers: Optional[int] = None) -> ImageStream:
    if size is None:
        raise ConfigError("data.stream needs data.image_size (every image is resized to it as it is decoded)")
    if channels not in (None, 1, 3):
        raise ConfigError(f"data.channels={channels}: image files hold grey or RGB; streams decode 1 or 3 channels")
    files, labels, classes, layout = shared_listing(path, split)
    return ImageStream(files, labels, Resize(size, resize), classes, f"{Path(path)} ({split}, streamed)", layout,
                       channels or 3, decode_workers(workers))

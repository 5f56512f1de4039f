"""Image folders too large for memory: uint8 batches decoded by DataLoader workers, through
pinned memory to the device, where the same batched samplers augment them.

Host memory stays bounded by the batches in flight:
(workers x prefetch_factor + 2) x batch x 3 x S x S bytes for S x S images
(e.g. 16 workers, batch 256, 224 px: about 1.3 GB), whatever the data set's size."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..errors import ConfigError, DataError
from .decode import Resize, _decode, _read
from .readers import list_image_files, to_channels

PREFETCH = 2


class _Unreadable:
    """What a worker hands back for an image it cannot decode: DataLoader would re-raise the worker's DataError
    with the worker's traceback as its message, and the user is owed the one line that names the file."""

    def __init__(self, message: str):
        self.message = message


class _Files(torch.utils.data.Dataset):
    def __init__(self, files: list, labels: Optional[np.ndarray], size: Resize, channels: int = 3):
        self.files, self.labels, self.size, self.channels = files, labels, size, channels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        path = self.files[index]
        try:
            image = torch.from_numpy(_decode(path, _read(path), self.size).copy()).permute(2, 0, 1)
            image = to_channels(image[None], self.channels, str(path))[0]
        except DataError as err:
            return _Unreadable(str(err))
        return image, -1 if self.labels is None else int(self.labels[index])


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
    files: list
    labels_array: Optional[np.ndarray]
    resize: Resize
    classes: list = field(default_factory=list)
    source: str = ""
    layout: str = ""  # readers.detect_layout's name for the folder
    channels: int = 3  # 1: decoded RGB made grey
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

    def batches(self, order: list, batch: int, workers: int, pin: bool):
        """uint8 (B x 3 x S x S) and label batches in ``order``, decoded by ``workers`` processes. The loader
        and its worker processes are made once and kept for every epoch (only the order changes)."""
        settings = (batch, workers, pin)
        if self._loader is None or self._loader[0] != settings:
            epoch_order = _EpochOrder()
            loader = torch.utils.data.DataLoader(
                _Files(self.files, self.labels_array, self.resize, self.channels), batch_size=batch, sampler=epoch_order,
                num_workers=workers, pin_memory=pin, drop_last=True, persistent_workers=workers > 0,
                prefetch_factor=PREFETCH if workers else None, collate_fn=_collate)
            self._loader = (settings, epoch_order, loader)
        _, epoch_order, loader = self._loader
        epoch_order.indices = order
        for batch_or_error in loader:
            if isinstance(batch_or_error, _Unreadable):
                raise DataError(batch_or_error.message)
            yield batch_or_error

    def mean_std(self, sample: int = 1000) -> tuple:
        """Per-channel statistics measured on a fixed random sample of the images."""
        chosen = torch.randperm(len(self), generator=torch.Generator().manual_seed(0))[:sample].tolist()
        images = torch.from_numpy(np.stack([_decode(self.files[i], _read(self.files[i]), self.resize)
                                             for i in chosen])).permute(0, 3, 1, 2)
        x = to_channels(images, self.channels, self.source).double().div_(255)
        return x.mean((0, 2, 3)).tolist(), x.std((0, 2, 3)).tolist()

    def memory_bound(self, batch: int, workers: int) -> int:
        return (workers * PREFETCH + 2) * batch * self.channels * self.size * self.size


def stream_images(path, split: str, size: Optional[int], resize: str = "short_side",
                  channels: Optional[int] = None) -> ImageStream:
    if size is None:
        raise ConfigError("data.stream needs data.image_size (every image is resized to it as it is decoded)")
    if channels not in (None, 1, 3):
        raise ConfigError(f"data.channels={channels}: image files hold grey or RGB; streams decode 1 or 3 channels")
    files, labels, classes, layout = list_image_files(path, split)
    return ImageStream(files, labels, Resize(size, resize), classes, f"{Path(path)} ({split}, streamed)", layout,
                       channels or 3)

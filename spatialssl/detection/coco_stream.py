"""COCO-style detection data too large to hold (``data.stream=true``): DataLoader workers decode and letterbox a
batch of images at a time and rasterise its objects' masks at the canvas size; the training loop takes each
batch's targets with its images.

Host memory is bounded by the batches in flight, whatever the number of images:
(workers x PREFETCH + 2) x batch x (3 + M) x S x S bytes, M the most objects of any image (0 without masks);
e.g. 8 workers, 4 images per GPU, 1024 px, boxes only: about 0.2 GB. On the device: one batch and the jitter's
float copy of its masks. The annotations stay parsed in this process (forked workers share them)."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property, partial
from typing import ClassVar, Optional

import torch

from ..data.decode import Unreadable
from ..data.imageset import channel_statistics
from ..data.stream import PREFETCH, EpochOrder, ignore_stop_signals
from ..errors import DataError
from .coco import CocoSplit
from .targets import DetectionTargets


class _Items(torch.utils.data.Dataset):
    def __init__(self, split: CocoSplit, masks: bool):
        self.split, self.masks = split, masks

    def __len__(self) -> int:
        return len(self.split.index.images)

    def __getitem__(self, i: int):
        size, objects = self.split.size, len(self.split.index.images[i].objects)
        canvas = torch.zeros(3, size, size, dtype=torch.uint8)
        masks = torch.zeros(objects, size, size, dtype=torch.uint8) if self.masks else None
        try:
            self.split.letterbox(i, canvas, masks)
        except DataError as err:
            return Unreadable(str(err))
        return i, canvas, masks


def _canvas(item) -> torch.Tensor:
    """An item's canvas, or its unreadable image's DataError."""
    if isinstance(item, Unreadable):
        raise DataError(item.message)
    return item[1]


def _collate(split: CocoSplit, items: list) -> tuple:
    """(images B x 3 x S x S, DetectionTargets with as many object slots as the batch's fullest image), or the
    first unreadable image's message in place of both."""
    for item in items:
        if isinstance(item, Unreadable):
            return None, item.message
    indices = [i for i, _, _ in items]
    slots = max(len(split.index.images[i].objects) for i in indices)
    boxes, classes = split.targets(indices, slots, split.scales[indices])
    masks = None
    if items[0][2] is not None:
        masks = torch.zeros(len(items), slots, split.size, split.size, dtype=torch.uint8)
        for row, (_, _, image_masks) in enumerate(items):
            masks[row, :len(image_masks)] = image_masks
    return torch.stack([canvas for _, canvas, _ in items]), DetectionTargets(boxes, classes, masks)


@dataclass
class CocoStream:
    """A COCO split read batch by batch; stands where a DetectionSet would (training, evaluation)."""
    split: CocoSplit
    workers: int = 0  # decoding processes (data.workers)
    carries_labels: ClassVar[bool] = True  # each batch brings its own targets: the loop holds none
    layout: ClassVar[str] = "coco"
    channels: ClassVar[int] = 3
    _loader: Optional[tuple] = field(default=None, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.split.index.images)

    @property
    def source(self) -> str:
        return self.split.source

    @property
    def classes(self) -> list:
        return self.split.index.classes

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def category_ids(self) -> list:
        return self.split.index.category_ids

    @property
    def has_masks(self) -> bool:
        return self.split.masks

    @property
    def input_size(self) -> tuple:
        return (self.split.size, self.split.size)

    image_size = input_size

    @cached_property
    def labels(self) -> DetectionTargets:
        """Every image's boxes and classes (not masks: those are made with each batch), for the checks."""
        images = range(len(self))
        return DetectionTargets(*self.split.targets(images, self.split.slots, self.split.scales))

    @property
    def image_ids(self) -> torch.Tensor:
        return self.split.image_ids

    @property
    def scales(self) -> torch.Tensor:
        return self.split.scales

    @property
    def sizes(self) -> torch.Tensor:
        return self.split.sizes

    @property
    def annotations(self) -> str:
        return str(self.split.annotation_file)

    def batches(self, order, batch: int, pin: bool):
        """(uint8 images, DetectionTargets) of the images in ``order``, ``batch`` at a time (the last may be short),
        letterboxed by ``workers`` processes made once and kept for every epoch."""
        settings = (batch, pin)
        if self._loader is None or self._loader[0] != settings:
            epoch_order = EpochOrder()
            loader = torch.utils.data.DataLoader(
                _Items(self.split, self.split.masks), batch_size=batch, sampler=epoch_order,
                num_workers=self.workers, pin_memory=pin, persistent_workers=self.workers > 0,
                prefetch_factor=PREFETCH if self.workers else None, collate_fn=partial(_collate, self.split),
                generator=torch.Generator().manual_seed(0),  # its own: the loader would draw from torch's global one
                worker_init_fn=ignore_stop_signals)
            self._loader = (settings, epoch_order, loader)
        _, epoch_order, loader = self._loader
        epoch_order.indices = list(order)
        for images, targets in loader:
            if images is None:
                raise DataError(targets)
            yield images, targets

    def mean_std(self, sample: int = 200) -> tuple:
        """Per-channel statistics of the letterboxed canvases of a fixed random sample of the images."""
        chosen = torch.randperm(len(self), generator=torch.Generator().manual_seed(0))[:sample].tolist()
        canvases = _Items(self.split, masks=False)
        return channel_statistics(_canvas(canvases[i])[None] for i in chosen)

    def memory_bound(self, batch: int) -> int:
        masks = self.split.slots if self.split.masks else 0
        return (self.workers * PREFETCH + 2) * batch * (3 + masks) * self.split.size ** 2

    def take_skipped(self) -> int:  # an unreadable image stops the run (no data.skip_corrupt for detection)
        return 0

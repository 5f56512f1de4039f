"""ImageSet: a whole data set decoded once into one uint8 tensor, plus labels."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch


@dataclass
class ImageSet:
    images: torch.Tensor  # uint8, N x C x H x W (C = 3 for RGB, 1 for grey, any for multi-channel arrays)
    labels: Optional[torch.Tensor] = None  # int64, N; None for unlabelled data
    classes: list = field(default_factory=list)
    source: str = ""
    layout: str = ""  # the data set it was read as (readers.detect_layout); "" when built in memory

    def __post_init__(self):
        # ValueError: a caller's mistake. Readers check the files first and name them in a DataError.
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"ImageSet needs uint8 N x C x H x W images, got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels is not None and len(self.labels) != len(self.images):
            raise ValueError(f"{len(self.labels)} labels for {len(self.images)} images in {self.source}")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_size(self) -> tuple:
        return tuple(self.images.shape[-2:])

    @property
    def tensor(self) -> torch.Tensor:
        return self.images

    @property
    def input_size(self) -> tuple:
        return self.image_size

    @property
    def num_classes(self) -> int:
        if self.classes:
            return len(self.classes)
        return int(self.labels.max()) + 1 if self.labels is not None else 0

    def subset(self, count: int, seed: int = 0) -> "ImageSet":
        """A fixed random subset (the same for the same seed), or everything if count >= len."""
        if count >= len(self):
            return self
        index = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:count]
        index = index.sort().values
        labels = None if self.labels is None else self.labels[index]
        return ImageSet(self.images[index], labels, self.classes, f"{self.source} (subset of {count})", self.layout)

    def images_at(self, index) -> torch.Tensor:
        return self.images[index]

    def mean_std(self) -> tuple:
        """Per-channel mean and std in [0, 1], measured in chunks to bound memory."""
        return channel_statistics(self.images.split(4096))


def channel_statistics(batches) -> tuple:
    """(mean, std) per channel, in [0, 1], of uint8 B x C x H x W ``batches`` (any iterable), in float64."""
    total, squares, count = 0, 0, 0
    for batch in batches:
        x = batch.double().div_(255)
        total, squares = total + x.sum((0, 2, 3)), squares + x.square().sum((0, 2, 3))
        count += x.numel() // x.shape[1]
    mean = total / count
    return mean.tolist(), (squares / count - mean.square()).clamp_min(1e-12).sqrt().tolist()

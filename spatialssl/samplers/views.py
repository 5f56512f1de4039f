"""K augmented views of every image (Relational Reasoning), batched on the device."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from .. import augment


@dataclass
class ViewSampler:
    """Returns ``K * B`` normalised views laid out augmentation-major: view k of image b
    is row ``k * B + b``. Each view draws its own crop, flip, jitter and grayscale."""
    num_views: int
    mean: Sequence[float]
    std: Sequence[float]
    scale: Sequence[float] = (0.08, 1.0)
    ratio: Sequence[float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter: Sequence[float] = field(default=(0.8, 0.8, 0.8, 0.2))
    jitter_p: float = 0.8
    gray_p: float = 0.2

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        augment.require_uint8(images, "ViewSampler")
        batch, _, height, width = images.shape
        with augment.without_autocast(images):
            x = images.float().div_(255).repeat(self.num_views, 1, 1, 1)
            n, device = x.shape[0], x.device
            boxes = augment.sample_crop_boxes(n, height, width, self.scale, self.ratio, generator, device)
            flip = torch.rand(n, generator=generator, device=device) < self.flip_p
            x = augment.crop_resize(x, boxes, (height, width), flip)
            x = augment.color_jitter(x, self.jitter, self.jitter_p, generator)
            x = augment.random_grayscale(x, self.gray_p, generator)
            return augment.normalize(x, self.mean, self.std)

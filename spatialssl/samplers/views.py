"""K augmented views of every image (Relational Reasoning), batched on the device."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from .. import augment, canvas


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

    def __call__(self, images: canvas.Images, generator: torch.Generator) -> torch.Tensor:
        """``images``: uint8 (B x C x H x W; views of H x W), or whole images (``canvas.Canvases``; views of its
        size, cropped relative to each whole image)."""
        augment.require_uint8(images, "ViewSampler")
        with augment.without_autocast(images):
            x = canvas.random_resized_crops(images, self.num_views, self.scale, self.ratio, self.flip_p, generator)
            x = augment.color_jitter(x, self.jitter, self.jitter_p, generator)
            return augment.random_grayscale(x, self.gray_p, generator, self.mean, self.std)

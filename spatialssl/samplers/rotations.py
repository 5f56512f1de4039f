"""RotationNet's inputs (Gidaris et al. 2018): every image in all four rotations, batched on the device.

As the RR paper's RotationNet baseline (its published code, whose numbers the SR paper quotes):
a random crop of the zero-padded image (torchvision's RandomCrop(side, padding=side/8)) and a
horizontal flip first, then the quarter turns of that one view."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from .. import augment, canvas
from .patches import cut_patches

ROTATIONS = 4  # 0, 90, 180 and 270 degrees


def shifted_crops(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Each square image zero-padded by ``padding`` on every side, then cut back to its size at its own
    uniform integer offset: one gather for the batch."""
    batch, _, side, _ = images.shape
    x0, y0 = torch.randint(2 * padding + 1, (2, batch), generator=generator, device=images.device)
    padded = F.pad(images, (padding,) * 4)
    return cut_patches(padded, torch.arange(batch, device=images.device), x0, y0, side)


@dataclass
class RotationSampler:
    """uint8 square images (B x C x S x S) -> (normalised views 4B x C x S x S, rotation labels 4B).

    Rotation-major, as views: rotation r (r quarter turns counter-clockwise, ``torch.rot90``'s
    direction) of image b is row ``r * B + b``, label r."""
    mean: Sequence[float]
    std: Sequence[float]
    flip_p: float = 0.5
    padding_share: float = 1 / 8  # of the side: 4 px at 32 px, as the published baseline

    def __call__(self, images: canvas.Images, generator: torch.Generator) -> tuple:
        augment.require_uint8(images, "RotationSampler")
        images = canvas.plain(images)  # whole images: their un-augmented view
        batch, _, height, width = images.shape
        if height != width:
            raise ValueError(f"images must be square (a quarter turn of {height}x{width} is {width}x{height}), "
                             f"got {height}x{width}")
        device = images.device
        with augment.without_autocast(images):
            x = shifted_crops(images.float().div_(255), round(self.padding_share * height), generator)
            flip = torch.rand(batch, generator=generator, device=device) < self.flip_p
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            x = torch.cat([torch.rot90(x, turns, dims=(2, 3)) for turns in range(ROTATIONS)])
            labels = torch.arange(ROTATIONS, device=device).repeat_interleave(batch)
            return augment.normalize(x, self.mean, self.std), labels

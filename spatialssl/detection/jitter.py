"""Large-scale jitter and horizontal flip of a whole detection batch on its device, boxes and masks moved
with the pixels (ViTDet's augmentation: scale the S x S canvas by s, then crop a random S x S window when
it grew or pad right and bottom when it shrank). One affine resampling per batch, randomness per image."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .. import augment
from .targets import PADDING, DetectionTargets

MIN_SIDE = 1.0  # pixels: a box cropped thinner than this is no longer an object to find


def jitter_parameters(batch: int, size: int, scale_range: Sequence[float], flip_p: float,
                      generator: torch.Generator, device) -> tuple:
    """Per image: the scale s, the crop offset (x, y) in scaled pixels (0 where s <= 1), flipped or not."""
    low, high = scale_range
    uniform = lambda *shape: torch.rand(*shape, generator=generator, device=device)  # noqa: E731
    scales = low + (high - low) * uniform(batch)
    offsets = uniform(batch, 2) * (scales[:, None] * size - size).clamp_min(0)
    flips = uniform(batch) < flip_p
    return scales, offsets, flips


def _grid(scales: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, size: int) -> torch.Tensor:
    """The sampling grid taking each output pixel to its source: flip, then scale and crop, i.e. the crop of
    the S / s square at offset / s of the (flipped) image, resized to S x S."""
    side = size / scales
    x0, y0 = (offsets / scales[:, None]).unbind(1)
    x0 = torch.where(flips, size - x0 - side, x0)  # that crop of the flipped image is the mirror of this one
    return augment.crop_grid(torch.stack([x0, y0, side, side], dim=1), (size, size), (size, size), flips)


def move_boxes(targets: DetectionTargets, scales: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor,
               size: int) -> tuple:
    """(boxes, classes) after the flip, scale and crop; boxes clipped to the canvas, and those left thinner than
    MIN_SIDE marked empty."""
    boxes = targets.boxes.clone()
    flipped = torch.stack([size - boxes[..., 2], boxes[..., 1], size - boxes[..., 0], boxes[..., 3]], dim=-1)
    boxes = torch.where(flips[:, None, None], flipped, boxes)
    boxes = boxes * scales[:, None, None] - offsets.repeat(1, 2)[:, None, :]
    boxes = boxes.clamp(0, size)
    kept = (boxes[..., 2] - boxes[..., 0] >= MIN_SIDE) & (boxes[..., 3] - boxes[..., 1] >= MIN_SIDE)
    classes = torch.where(kept & targets.present, targets.classes, PADDING)
    return boxes, classes


def jitter(images: torch.Tensor, targets: DetectionTargets, scale_range: Sequence[float], flip_p: float,
           generator: torch.Generator) -> tuple:
    """(float images in [0, 1], targets) after large-scale jitter and flip; ``images`` uint8 B x C x S x S."""
    size = images.shape[-1]
    scales, offsets, flips = jitter_parameters(len(images), size, scale_range, flip_p, generator, images.device)
    grid = _grid(scales, offsets, flips, size)
    x = F.grid_sample(images.float().div_(255), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    boxes, classes = move_boxes(targets, scales, offsets, flips, size)
    masks = None
    if targets.masks is not None:
        b, m = targets.masks.shape[:2]
        if m:
            masks = F.grid_sample(targets.masks.float(), grid, mode="nearest", align_corners=False).to(torch.uint8)
        else:
            masks = targets.masks
        masks = masks.view(b, m, size, size)
    return x, DetectionTargets(boxes, classes, masks)

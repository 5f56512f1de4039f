"""Large-scale jitter and horizontal flip of a whole detection batch on its device, boxes and masks moved
with the pixels (ViTDet's augmentation: scale the S x S canvas by s, then crop a random S x S window when
it grew or pad right and bottom when it shrank). One affine resampling per batch, randomness per image."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

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
    """The sampling grid taking each output pixel to its source: flip, then scale and crop (align_corners off:
    output pixel u + 0.5 reads source (u + 0.5 + offset) / s)."""
    sign = 1 - 2 * flips.float()
    theta = torch.zeros(len(scales), 2, 3, device=scales.device)
    theta[:, 0, 0] = sign / scales
    theta[:, 0, 2] = sign * (1 / scales + 2 * offsets[:, 0] / (scales * size) - 1)
    theta[:, 1, 1] = 1 / scales
    theta[:, 1, 2] = 1 / scales + 2 * offsets[:, 1] / (scales * size) - 1
    return F.affine_grid(theta, [len(scales), 1, size, size], align_corners=False)


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

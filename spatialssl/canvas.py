"""Whole images of different sizes and aspects in one uint8 batch, so that training crops are drawn relative to
each whole image — the standard random resized crop of torchvision and timm — while the batch stays one tensor
on the device and every crop of it is cut by one ``grid_sample``.

A stream decoding with ``data.resize=whole`` gives ``Canvases``: image i fills ``pixels[i, :, :h_i, :w_i]`` of an
L x L canvas (its long side at most L, never enlarged; its last row and column repeated past it, so bilinear
samples at its edge read its own pixels), with (h_i, w_i) in ``extent``. Samplers that crop (views, PART's boxes,
finetuning) cut their crops from the whole image; the others, and evaluation, see the un-augmented image: the
central square of ``crop_pct`` of its short side, resized to ``size`` (``plain``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import torch
import torch.nn.functional as F

from .augment import crop_grid, crop_resize, sample_crop_boxes


@dataclass
class Canvases:
    pixels: torch.Tensor  # B x C x L x L uint8
    extent: torch.Tensor  # B x 2 float32: each image's (height, width) in pixels of its canvas
    size: int  # the side of the crops and of the un-augmented image the model sees (data.image_size)
    crop_pct: float = 1.0  # the un-augmented image: the central square of this share of the short side

    ndim = 4  # what methods ask of an image batch (signals are 3-D)

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, index) -> "Canvases":
        return Canvases(self.pixels[index], self.extent[index], self.size, self.crop_pct)

    @property
    def device(self) -> torch.device:
        return self.pixels.device

    @property
    def dtype(self) -> torch.dtype:
        return self.pixels.dtype

    def to(self, *args, **kwargs) -> "Canvases":
        return Canvases(self.pixels.to(*args, **kwargs), self.extent.to(*args, **kwargs), self.size, self.crop_pct)

    def pin_memory(self) -> "Canvases":
        return Canvases(self.pixels.pin_memory(), self.extent.pin_memory(), self.size, self.crop_pct)

    def centre(self) -> torch.Tensor:
        """The un-augmented images, uint8 B x C x size x size: each one's central square of ``crop_pct`` of its
        short side, resized (timm's evaluation view: resize to size / crop_pct, then centre-crop size)."""
        height, width = self.extent.unbind(1)
        side = torch.minimum(height, width) * self.crop_pct
        boxes = torch.stack([(width - side) / 2, (height - side) / 2, side, side], 1)
        x = cut(self.pixels.float(), boxes, self.size, None, self._supersample())
        return x.round_().clamp_(0, 255).to(torch.uint8)

    def _supersample(self) -> int:
        """Samples per output pixel along each axis: 2 where a crop may shrink (a canvas larger than the output),
        averaged, so a shrunk crop is not aliased as a bare bilinear sample would be."""
        return 2 if self.pixels.shape[-1] > self.size else 1


Images = Union[torch.Tensor, Canvases]


def plain(images: Images) -> torch.Tensor:
    """A uint8 B x C x H x W tensor: ``images`` itself, or the un-augmented view of canvases (``Canvases.centre``),
    for whatever takes same-sized images (SR's patches, rotations, evaluation)."""
    return images.centre() if isinstance(images, Canvases) else images


def cut(x: torch.Tensor, boxes: torch.Tensor, size: int, flip, supersample: int = 1, repeats: int = 1) -> torch.Tensor:
    """Box k * B + b (x0, y0, w, h in pixels) of image b of ``x`` (B x C x H x W float) resized to size x size and
    mirrored where ``flip``: (repeats * B) x C x size x size, repeat-major, by one grid_sample on ``x`` as it is
    (not ``repeats`` copies of it). ``supersample`` s: s x s bilinear samples per output pixel, averaged."""
    batch, channels = x.shape[:2]
    side = size * supersample
    grid = crop_grid(boxes, x.shape[-2:], (side, side), flip).to(x.dtype)  # (repeats * B) x side x side x 2
    grid = grid.view(repeats, batch, side, side, 2).transpose(0, 1).reshape(batch, repeats * side, side, 2)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if supersample > 1:
        out = F.avg_pool2d(out, supersample)
    out = out.view(batch, channels, repeats, size, size).permute(2, 0, 1, 3, 4)
    return out.reshape(repeats * batch, channels, size, size)


def random_resized_crops(images: Images, repeats: int, scale: Sequence[float], ratio: Sequence[float], flip_p: float,
                         generator: torch.Generator) -> torch.Tensor:
    """``repeats`` random resized crops, each flipped with probability ``flip_p``, of every image, repeat-major
    (crop k of image b is row k * B + b), floats in [0, 1]: of each whole image for canvases (area and aspect
    relative to it), of the image as it is for a tensor (the crops then have its size)."""
    device = images.device
    if not isinstance(images, Canvases):  # crops as they always were: of one copy of the batch per repeat
        x = images.float().div_(255).repeat(repeats, 1, 1, 1)
        boxes = sample_crop_boxes(len(x), *x.shape[-2:], scale, ratio, generator, device)
        flip = torch.rand(len(x), generator=generator, device=device) < flip_p
        return crop_resize(x, boxes, x.shape[-2:], flip)
    n = repeats * len(images)
    height, width = images.extent.repeat(repeats, 1).unbind(1)
    boxes = sample_crop_boxes(n, height, width, scale, ratio, generator, device)
    flip = torch.rand(n, generator=generator, device=device) < flip_p
    return cut(images.pixels.float().div_(255), boxes, images.size, flip, images._supersample(), repeats)

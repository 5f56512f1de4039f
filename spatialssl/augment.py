"""Batched image augmentation with per-sample randomness, on whatever device the batch is.

Images are float tensors in [0, 1], B x 3 x H x W. Every random draw takes a
``torch.Generator`` on the batch's device, so runs are reproducible and resumable.
Crop, resize and flip are one ``affine_grid`` + ``grid_sample``; colour ops are a few
element-wise tensor ops on the whole batch.
"""
from __future__ import annotations

import contextlib
import math
from functools import lru_cache
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601, as torchvision's rgb_to_grayscale
BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)  # colour_jitter's operations, in its ``strength`` order


def require_uint8(images: torch.Tensor, caller: str) -> None:
    """Samplers and the evaluators divide by 255: float images in [0, 1] (ToTensor's) would become near-black, near-constant
    views that train on nothing without any error."""
    if images.dtype != torch.uint8:
        raise ValueError(f"{caller} takes uint8 images with values 0-255, got {images.dtype}; pass uint8 0-255 "
                         "images (e.g. (x * 255).round().to(torch.uint8) for ToTensor's floats in [0, 1])")


def without_autocast(tensor: torch.Tensor):
    """A context with autocast off on ``tensor``'s device, for samplers and augmentations: under bf16
    autocast affine_grid and grid_sample would move sample positions by up to 0.41 px at 224 px."""
    if not _autocast_available(tensor.device.type):  # e.g. the meta device: nothing to turn off
        return contextlib.nullcontext()
    return torch.autocast(tensor.device.type, enabled=False)


# torch < 2.4 has no is_autocast_available; these are the devices it autocasts on.
_autocast_available = getattr(torch.amp, "is_autocast_available", lambda device: device in ("cpu", "cuda", "xpu"))


def uniform(low: float, high: float, n: int, generator: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=device) * (high - low) + low


def sample_crop_boxes(n: int, height, width, scale: Sequence[float], ratio: Sequence[float],
                      generator: torch.Generator, device, attempts: int = 10) -> torch.Tensor:
    """RandomResizedCrop's boxes (x0, y0, w, h) in pixels, n at once, of images ``height`` x ``width`` (ints, or
    tensors of n per-image sizes: whole images of different shapes, ``canvas.Canvases``).

    As torchvision: up to ``attempts`` draws of area and log-uniform aspect ratio per sample;
    samples with no box inside the image fall back to the largest centred box of a clamped ratio.
    """
    per_image = isinstance(height, torch.Tensor)
    rows, cols = (height[:, None], width[:, None]) if per_image else (height, width)
    area = rows * cols
    s = uniform(scale[0], scale[1], n * attempts, generator, device).view(n, attempts)
    log_r = uniform(math.log(ratio[0]), math.log(ratio[1]), n * attempts, generator, device).view(n, attempts)
    r = log_r.exp()
    w = (s * area * r).sqrt()
    h = (s * area / r).sqrt()
    fits = (w <= cols) & (h <= rows)
    first = fits.float().argmax(1)  # the first attempt that fits (0 where none does)
    w = w.gather(1, first[:, None]).squeeze(1)
    h = h.gather(1, first[:, None]).squeeze(1)
    fallback_w, fallback_h = (_fallback_sizes if per_image else _fallback_size)(height, width, ratio)
    found = fits.any(1)
    w = torch.where(found, w, fallback_w)
    h = torch.where(found, h, fallback_h)
    x0 = torch.rand(n, generator=generator, device=device) * (width - w)
    y0 = torch.rand(n, generator=generator, device=device) * (height - h)
    return torch.stack([x0, y0, w, h], dim=1)


def _fallback_size(height: int, width: int, ratio: Sequence[float]) -> tuple:
    """torchvision's box when no attempt fits: the whole image, its aspect ratio clamped into ``ratio``."""
    in_ratio = width / height
    if in_ratio < ratio[0]:
        return width, width / ratio[0]
    if in_ratio > ratio[1]:
        return height * ratio[1], height
    return width, height


def _fallback_sizes(height: torch.Tensor, width: torch.Tensor, ratio: Sequence[float]) -> tuple:
    """``_fallback_size`` of each of n images (tensors), without a wait for the device."""
    in_ratio = width / height
    narrow, wide = in_ratio < ratio[0], in_ratio > ratio[1]
    return (torch.where(wide, height * ratio[1], width),
            torch.where(narrow, width / ratio[0], height))


def crop_resize(images: torch.Tensor, boxes: torch.Tensor, size: Sequence[int],
                flip: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Cut box i = (x0, y0, w, h) out of image i, resize it bilinearly to ``size`` and
    mirror it where ``flip`` is true: one batched grid_sample."""
    grid = crop_grid(boxes, images.shape[-2:], size, flip).to(images.dtype)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def crop_grid(boxes: torch.Tensor, image_size: Sequence[int], size: Sequence[int],
              flip: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``crop_resize``'s sampling grid (N x size x 2): box i = (x0, y0, w, h) of an image of ``image_size``
    onto ``size`` pixels, mirrored where ``flip`` is true. A box may reach past the image."""
    height, width = image_size
    x0, y0, w, h = boxes.unbind(1)
    sx = w / width
    if flip is not None:
        sx = torch.where(flip, -sx, sx)
    theta = torch.zeros(len(boxes), 2, 3, device=boxes.device, dtype=boxes.dtype)
    theta[:, 0, 0] = sx
    theta[:, 0, 2] = (2 * x0 + w) / width - 1
    theta[:, 1, 1] = h / height
    theta[:, 1, 2] = (2 * y0 + h) / height - 1
    return F.affine_grid(theta, [len(boxes), 1, size[0], size[1]], align_corners=False)


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """B x 1 x H x W luma of RGB images; the channel mean of grey or multi-channel ones."""
    if images.shape[1] != 3:
        return images.mean(1, keepdim=True)
    r, g, b = images.unbind(1)
    return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b).unsqueeze(1)


def _blend(images: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    factor = factor.view(-1, 1, 1, 1)
    return (factor * images + (1 - factor) * other).clamp_(0, 1)


def adjust_brightness(images, factor):
    return _blend(images, torch.zeros_like(images[:, :1]), factor)


def adjust_contrast(images, factor):
    return _blend(images, grayscale(images).mean(dim=(1, 2, 3), keepdim=True), factor)


def adjust_saturation(images, factor):
    return _blend(images, grayscale(images), factor)


def rgb_to_hsv(images: torch.Tensor) -> torch.Tensor:
    r, g, b = images.unbind(1)
    maxc, _ = images.max(1)
    minc, _ = images.min(1)
    chroma = maxc - minc
    flat = chroma == 0
    s = chroma / torch.where(flat, torch.ones_like(maxc), maxc)
    divisor = torch.where(flat, torch.ones_like(chroma), chroma)
    rc, gc, bc = (maxc - r) / divisor, (maxc - g) / divisor, (maxc - b) / divisor
    is_r = maxc == r
    is_g = (maxc == g) & ~is_r
    is_b = ~is_r & ~is_g
    h = is_r * (bc - gc) + is_g * (2.0 + rc - bc) + is_b * (4.0 + gc - rc)
    h = torch.fmod(h / 6.0 + 1.0, 1.0)
    return torch.stack([h, s, maxc], dim=1)


def hsv_to_rgb(images: torch.Tensor) -> torch.Tensor:
    h, s, v = images.unbind(1)
    sector = torch.floor(h * 6.0)
    f = h * 6.0 - sector
    sector = sector.long() % 6
    p = (v * (1 - s)).clamp(0, 1)
    q = (v * (1 - s * f)).clamp(0, 1)
    t = (v * (1 - s * (1 - f))).clamp(0, 1)
    # Channel values for each of the six hue sectors, picked per pixel.
    table = torch.stack([
        torch.stack([v, q, p, p, t, v], 1),
        torch.stack([t, v, v, q, p, p], 1),
        torch.stack([p, p, t, v, v, q], 1)], 1)  # B x 3 x 6 x H x W
    index = sector.unsqueeze(1).unsqueeze(1).expand(-1, 3, 1, -1, -1)
    return table.gather(2, index).squeeze(2)


def adjust_hue(images, shift):
    hsv = rgb_to_hsv(images)
    hsv[:, 0] = torch.remainder(hsv[:, 0] + shift.view(-1, 1, 1), 1.0)
    return hsv_to_rgb(hsv)


def color_jitter(images: torch.Tensor, strength: Sequence[float], p: float, generator: torch.Generator) -> torch.Tensor:
    """torchvision's ColorJitter(b, c, s, h) applied with probability ``p``, per sample: each
    sample draws its own factors and its own order of the four operations.

    Every pass runs on the whole batch and is kept where chosen (selecting samples would make
    the host wait for the device): a sample's order is its three blends (brightness, contrast,
    saturation) with hue inserted among them, so the blends before hue, hue, and the blends
    after it are three batched passes. Returns ``images`` itself when nothing can change."""
    n, device = images.shape[0], images.device
    brightness, contrast, saturation, hue = strength
    if images.shape[1] != 3:  # saturation and hue mean something for RGB only
        saturation = hue = 0.0
    if p <= 0 or not any((brightness, contrast, saturation, hue)):
        return images
    applied = torch.rand(n, generator=generator, device=device) < p
    factors = torch.stack([uniform(max(0.0, 1 - brightness), 1 + brightness, n, generator, device),
                           uniform(max(0.0, 1 - contrast), 1 + contrast, n, generator, device),
                           uniform(max(0.0, 1 - saturation), 1 + saturation, n, generator, device)], 1)
    shift = uniform(-hue, hue, n, generator, device)
    order = torch.rand(n, 4, generator=generator, device=device).argsort(dim=1)  # op at each position
    hue_position = (order == HUE).long().argmax(1, keepdim=True)
    slots = torch.arange(3, device=device)
    blends = order.gather(1, slots + (slots >= hue_position).long())  # n x 3: the order without hue
    if not hue:
        return _blend_slots(images, blends, factors, applied[:, None].expand(-1, 3))
    before_hue = slots < hue_position
    x = _blend_slots(images, blends, factors, applied[:, None] & before_hue)
    x = torch.where(applied.view(-1, 1, 1, 1), adjust_hue(x, shift), x)
    return _blend_slots(x, blends, factors, applied[:, None] & ~before_hue)


def _blend_slots(images: torch.Tensor, blends: torch.Tensor, factors: torch.Tensor,
                 chosen: torch.Tensor) -> torch.Tensor:
    """Apply each sample's blends (n x 3 op indices, in order) where ``chosen`` (n x 3)."""
    for slot in range(blends.shape[1]):
        blended = _blend_by_op(images, blends[:, slot], factors)
        images = torch.where(chosen[:, slot].view(-1, 1, 1, 1), blended, images)
    return images


def _blend_by_op(images: torch.Tensor, op: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Brightness (op 0), contrast (1) or saturation (2) per sample, at its factor (n x 3): each
    blends the image with another (black, its mean grey, its grey), so one blend does all three."""
    gray = grayscale(images)
    op = op.view(-1, 1, 1, 1)
    other = torch.where(op == BRIGHTNESS, 0.0,
                        torch.where(op == CONTRAST, gray.mean(dim=(1, 2, 3), keepdim=True), gray))
    return _blend(images, other, factors.gather(1, op.view(-1, 1)))


def random_grayscale(images: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """RGB images made grey with probability ``p`` each; grey or multi-channel images as they are (the draw
    is made anyway, so the random stream does not depend on the channel count)."""
    chosen = torch.rand(images.shape[0], generator=generator, device=images.device) < p
    if images.shape[1] != 3:
        return images
    return torch.where(chosen.view(-1, 1, 1, 1), grayscale(images).expand_as(images), images)


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    return (images - _channel_constant(mean, images)) / _channel_constant(std, images)


def _channel_constant(values: Sequence[float], images: torch.Tensor) -> torch.Tensor:
    return _device_constant(tuple(map(float, values)), images.device, images.dtype).view(1, -1, 1, 1)


@lru_cache(maxsize=64)
def _device_constant(values: tuple, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``values`` on the device, copied there once: a copy from the host at every step would make it wait."""
    return torch.as_tensor(values, device=device, dtype=dtype)


def random_affine(images: torch.Tensor, generator: torch.Generator, degrees: float = 10.0,
                  translate: float = 0.1, scale: Sequence[float] = (0.9, 1.1), flip_p: float = 0.5) -> torch.Tensor:
    """Rotation, translation, scaling and horizontal flip per sample; black outside the image."""
    n, device = images.shape[0], images.device
    angle = uniform(-degrees, degrees, n, generator, device) * math.pi / 180
    zoom = uniform(scale[0], scale[1], n, generator, device)
    shift = uniform(-translate, translate, 2 * n, generator, device).view(n, 2) * 2
    mirror = torch.where(torch.rand(n, generator=generator, device=device) < flip_p, -1.0, 1.0)
    cos, sin = angle.cos() / zoom, angle.sin() / zoom
    theta = torch.stack([torch.stack([cos * mirror, -sin, shift[:, 0]], 1),
                         torch.stack([sin * mirror, cos, shift[:, 1]], 1)], 1).to(images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

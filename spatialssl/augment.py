"""Batched image augmentation with per-sample randomness, on whatever device the batch is.

Images are float tensors in [0, 1], B x 3 x H x W. Every random draw takes a
``torch.Generator`` on the batch's device, so runs are reproducible and resumable.
Crop, resize and flip are one ``affine_grid`` + ``grid_sample``; colour ops are a few
element-wise tensor ops on the whole batch.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601, as torchvision's rgb_to_grayscale


def require_uint8(images: torch.Tensor, caller: str) -> None:
    """Samplers and the evaluators divide by 255: float images in [0, 1] (ToTensor's) would become near-black, near-constant
    views that train on nothing without any error."""
    if images.dtype != torch.uint8:
        raise ValueError(f"{caller} takes uint8 images with values 0-255, got {images.dtype}; pass uint8 0-255 "
                         "images (e.g. (x * 255).round().to(torch.uint8) for ToTensor's floats in [0, 1])")


def uniform(low: float, high: float, n: int, generator: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=device) * (high - low) + low


def sample_crop_boxes(n: int, height: int, width: int, scale: Sequence[float], ratio: Sequence[float],
                      generator: torch.Generator, device, attempts: int = 10) -> torch.Tensor:
    """RandomResizedCrop's boxes (x0, y0, w, h) in pixels, n at once.

    As torchvision: up to ``attempts`` draws of area and log-uniform aspect ratio per sample;
    samples with no box inside the image fall back to the largest centred box of a clamped ratio.
    """
    area = height * width
    s = uniform(scale[0], scale[1], n * attempts, generator, device).view(n, attempts)
    log_r = uniform(math.log(ratio[0]), math.log(ratio[1]), n * attempts, generator, device).view(n, attempts)
    r = log_r.exp()
    w = (s * area * r).sqrt()
    h = (s * area / r).sqrt()
    fits = (w <= width) & (h <= height)
    first = torch.where(fits.any(1), fits.float().argmax(1), torch.zeros_like(fits[:, 0], dtype=torch.long))
    w = w.gather(1, first[:, None]).squeeze(1)
    h = h.gather(1, first[:, None]).squeeze(1)
    fallback = ~fits.any(1)
    if fallback.any():
        in_ratio = width / height
        if in_ratio < ratio[0]:
            fw, fh = width, width / ratio[0]
        elif in_ratio > ratio[1]:
            fw, fh = height * ratio[1], height
        else:
            fw, fh = width, height
        w = torch.where(fallback, torch.full_like(w, fw), w)
        h = torch.where(fallback, torch.full_like(h, fh), h)
    x0 = torch.rand(n, generator=generator, device=device) * (width - w)
    y0 = torch.rand(n, generator=generator, device=device) * (height - h)
    return torch.stack([x0, y0, w, h], dim=1)


def crop_resize(images: torch.Tensor, boxes: torch.Tensor, size: Sequence[int],
                flip: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Cut box i = (x0, y0, w, h) out of image i, resize it bilinearly to ``size`` and
    mirror it where ``flip`` is true: one batched grid_sample."""
    n, _, height, width = images.shape
    x0, y0, w, h = boxes.unbind(1)
    sx = w / width
    if flip is not None:
        sx = torch.where(flip, -sx, sx)
    theta = torch.zeros(n, 2, 3, device=images.device, dtype=images.dtype)
    theta[:, 0, 0] = sx
    theta[:, 0, 2] = (2 * x0 + w) / width - 1
    theta[:, 1, 1] = h / height
    theta[:, 1, 2] = (2 * y0 + h) / height - 1
    grid = F.affine_grid(theta, [n, images.shape[1], size[0], size[1]], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def grayscale(images: torch.Tensor) -> torch.Tensor:
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
    sample draws its own factors and its own order of the four operations."""
    n, device = images.shape[0], images.device
    brightness, contrast, saturation, hue = strength
    applied = torch.rand(n, generator=generator, device=device) < p
    factors = [uniform(max(0.0, 1 - brightness), 1 + brightness, n, generator, device),
               uniform(max(0.0, 1 - contrast), 1 + contrast, n, generator, device),
               uniform(max(0.0, 1 - saturation), 1 + saturation, n, generator, device),
               uniform(-hue, hue, n, generator, device)]
    ops = [adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue]
    active = [brightness > 0, contrast > 0, saturation > 0, hue > 0]
    order = torch.rand(n, 4, generator=generator, device=device).argsort(dim=1)
    out = images.clone()
    for position in range(4):
        for op_index, op in enumerate(ops):
            if not active[op_index]:
                continue
            chosen = (applied & (order[:, position] == op_index)).nonzero().squeeze(1)
            if chosen.numel():
                out[chosen] = op(out[chosen], factors[op_index][chosen])
    return out


def random_grayscale(images: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    chosen = torch.rand(images.shape[0], generator=generator, device=images.device) < p
    return torch.where(chosen.view(-1, 1, 1, 1), grayscale(images).expand_as(images), images)


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    mean_t = torch.as_tensor(mean, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
    return (images - mean_t) / std_t


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

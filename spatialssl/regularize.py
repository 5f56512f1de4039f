"""Finetuning's regularisers, batched on the device with per-sample randomness: RandAugment,
random erasing, mixup / cutmix with label smoothing (DeiT's recipe, as timm defines them).

Images are float B x C x H x W; RandAugment works on [0, 1] images, random erasing on
normalised ones. Every draw takes the run's generator.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import augment

GEOMETRIC = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
COLOUR = ("identity", "autocontrast", "equalize", "posterize", "solarize", "color", "contrast", "brightness",
          "sharpness")
OPS = GEOMETRIC + COLOUR


def _signed(m: float, n: int, generator, device) -> torch.Tensor:
    """Magnitude m with a random sign per sample (timm's random negation)."""
    sign = torch.where(torch.rand(n, generator=generator, device=device) < 0.5, -1.0, 1.0)
    return sign * m


def _affine(op: torch.Tensor, level: float, generator, device) -> torch.Tensor:
    """Per-sample 2 x 3 inverse-affine matrices (normalised coordinates) of the chosen geometric ops
    (the identity for the others), built by selection rather than by masked assignment, which would
    make the host wait for the device."""
    value = _signed(1.0, len(op), generator, device) * level
    angle = value * math.radians(30)

    def where(name: str, chosen: torch.Tensor, otherwise: float) -> torch.Tensor:
        return torch.where(op == OPS.index(name), chosen, otherwise)
    cos, sin = where("rotate", angle.cos(), 1.0), where("rotate", angle.sin(), 0.0)
    shear_x, shear_y = where("shear_x", 0.3 * value, 0.0), where("shear_y", 0.3 * value, 0.0)
    shift_x, shift_y = where("translate_x", 2 * 0.45 * value, 0.0), where("translate_y", 2 * 0.45 * value, 0.0)
    # one op per sample, so rotation and shear never share an entry
    return torch.stack([torch.stack([cos, shear_x - sin, shift_x], 1),
                        torch.stack([sin + shear_y, cos, shift_y], 1)], 1)


def _equalize(x: torch.Tensor) -> torch.Tensor:
    """Histogram equalisation per image and channel (256 bins), batched through a CDF lookup."""
    levels = (x * 255).round().long().clamp(0, 255).flatten(2)
    # integer counts: a float cumsum on CUDA is not deterministic (train.deterministic refuses it)
    hist = torch.zeros(*levels.shape[:2], 256, dtype=torch.long, device=x.device).scatter_add_(2, levels, torch.ones_like(levels))
    cdf = hist.cumsum(2).float()
    cdf_min = torch.where(hist > 0, cdf, torch.full_like(cdf, float("inf"))).amin(2, keepdim=True)
    scale = (cdf[..., -1:] - cdf_min).clamp_min(1)
    lut = ((cdf - cdf_min) / scale).clamp(0, 1)
    return lut.gather(2, levels).view_as(x)


def _colour(x: torch.Tensor, name: str, level: float, factor: torch.Tensor) -> torch.Tensor:
    if name == "identity":
        return x
    if name == "autocontrast":
        low, high = x.amin((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)
        return torch.where(high > low, (x - low) / (high - low).clamp_min(1e-6), x)
    if name == "equalize":
        return _equalize(x)
    if name == "posterize":
        bits = 8 - int(4 * level)
        step = 2 ** (8 - bits)
        return ((x * 255).floor() / step).floor() * step / 255
    if name == "solarize":
        threshold = 1.0 - level
        return torch.where(x >= threshold, 1 - x, x)
    f = factor.view(-1, 1, 1, 1)
    if name == "color":
        return augment.adjust_saturation(x, f)
    if name == "contrast":
        return augment.adjust_contrast(x, f)
    if name == "brightness":
        return augment.adjust_brightness(x, f)
    blurred = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)  # sharpness
    return (x + (1 - f) * (blurred - x)).clamp(0, 1)


def rand_augment(x: torch.Tensor, num_ops: int, magnitude: int, generator: torch.Generator) -> torch.Tensor:
    """RandAugment (Cubuk et al.): ``num_ops`` ops per image, each chosen uniformly per sample,
    at ``magnitude`` (0..10). Geometric ops of a round are one grid_sample; colour ops are
    computed for the batch and kept where chosen."""
    level = magnitude / 10
    n, device = len(x), x.device
    for _ in range(num_ops):
        op = torch.randint(len(OPS), (n,), generator=generator, device=device)
        factor = 1 + _signed(0.9 * level, n, generator, device)
        # every op runs on the whole batch, kept where chosen: no host sync to ask which are
        grid = F.affine_grid(_affine(op, level, generator, device), list(x.shape), align_corners=False)
        moved = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        x = torch.where((op < len(GEOMETRIC)).view(-1, 1, 1, 1), moved, x)
        for index, name in enumerate(COLOUR, start=len(GEOMETRIC)):
            x = torch.where((op == index).view(-1, 1, 1, 1), _colour(x, name, level, factor), x)
    return x


def random_erasing(x: torch.Tensor, p: float, generator: torch.Generator, area=(0.02, 1 / 3),
                   log_ratio=(math.log(0.3), math.log(3.3))) -> torch.Tensor:
    """Erase one random rectangle per chosen image (probability ``p``) with normal noise
    (timm's 'pixel' mode), on normalised images."""
    n, _, height, width = x.shape
    device = x.device
    chosen = torch.rand(n, generator=generator, device=device) < p
    target = augment.uniform(area[0], area[1], n, generator, device) * height * width
    ratio = augment.uniform(log_ratio[0], log_ratio[1], n, generator, device).exp()
    h = (target * ratio).sqrt().round().clamp(1, height)
    w = (target / ratio).sqrt().round().clamp(1, width)
    top = (torch.rand(n, generator=generator, device=device) * (height - h + 1)).floor()
    left = (torch.rand(n, generator=generator, device=device) * (width - w + 1)).floor()
    rows = torch.arange(height, device=device).view(1, -1, 1)
    cols = torch.arange(width, device=device).view(1, 1, -1)
    inside = ((rows >= top.view(-1, 1, 1)) & (rows < (top + h).view(-1, 1, 1))
              & (cols >= left.view(-1, 1, 1)) & (cols < (left + w).view(-1, 1, 1)) & chosen.view(-1, 1, 1))
    noise = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype)
    return torch.where(inside[:, None], noise, x)


def smooth_one_hot(labels: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    off = smoothing / num_classes
    return torch.full((len(labels), num_classes), off, device=labels.device).scatter_(1, labels[:, None], 1 - smoothing + off)


def mix_batch(x: torch.Tensor, labels: torch.Tensor, num_classes: int, generator: torch.Generator,
              mixup: float = 0.8, cutmix: float = 1.0, mix_prob: float = 1.0, switch_prob: float = 0.5,
              smoothing: float = 0.1) -> tuple:
    """timm's batch-mode Mixup: with probability ``mix_prob`` blend the batch with its reverse,
    by mixup (Beta(mixup)) or cutmix (Beta(cutmix), one box, lambda corrected to the box's
    area). Returns (images, soft targets B x classes).

    Every choice stays on the device (reading it would make the host wait): the batch is blended
    with per-pixel weights, lambda everywhere for mixup, 0 in the box and 1 elsewhere for cutmix,
    1 everywhere for a batch left unmixed."""
    targets = smooth_one_hot(labels, num_classes, smoothing)
    if mixup <= 0 and cutmix <= 0:
        return x, targets
    height, width = x.shape[-2:]
    mix_draw, switch_draw = torch.rand(2, generator=generator, device=x.device).unbind()
    mixes = mix_draw < mix_prob
    use_cutmix = switch_draw < (switch_prob if mixup > 0 and cutmix > 0 else float(cutmix > 0))
    lam = _beta(torch.where(use_cutmix, cutmix, mixup), generator)
    box = _cut_span(lam, height, generator)[:, None] & _cut_span(lam, width, generator)[None, :]
    keep = torch.where(mixes, torch.where(use_cutmix, (~box).float(), lam), 1.0)  # H x W: each pixel's share kept
    lam = torch.where(mixes, torch.where(use_cutmix, 1 - box.float().mean(), lam), 1.0)  # the image's share kept
    return keep * x + (1 - keep) * x.flip(0), lam * targets + (1 - lam) * targets.flip(0)


def _beta(alpha: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One draw of Beta(alpha, alpha) from the run's generator, on alpha's device: the first share of a
    two-way Dirichlet (torch.distributions cannot take a generator; its sampler can)."""
    return torch._sample_dirichlet(alpha.expand(2).contiguous(), generator=generator)[0]


def _cut_span(lam: torch.Tensor, length: int, generator: torch.Generator) -> torch.Tensor:
    """The rows (or columns) of ``length`` that timm's cutmix box covers: a side of int(length *
    sqrt(1 - lam)), centred on a uniform pixel, clipped to the image."""
    half = (length * (1 - lam).sqrt()).floor().div(2).floor()
    centre = (torch.rand((), generator=generator, device=lam.device) * length).floor()
    positions = torch.arange(length, device=lam.device)
    return (positions >= centre - half) & (positions < centre + half)

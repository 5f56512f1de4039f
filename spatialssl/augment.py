"""Batched image augmentation with per-sample randomness, on whatever device the batch is.

Images are float tensors in [0, 1], B x 3 x H x W. Every random draw takes a
``torch.Generator`` on the batch's device, so runs are reproducible and resumable.
Crop, resize and flip are one ``affine_grid`` + ``grid_sample``; colour ops work on the whole batch, as
per-sample channel mixes (batched matrix products) where they can: few kernel launches on a GPU.
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
    draws = torch.rand(n, 2 * attempts + 2, generator=generator, device=device)  # one draw: few launches
    s_and_log_r = torch.addcmul(_device_constant((scale[0], math.log(ratio[0])), device, draws.dtype).view(2, 1),
                                draws[:, :2 * attempts].view(n, 2, attempts),
                                _device_constant((scale[1] - scale[0], math.log(ratio[1] / ratio[0])), device,
                                                 draws.dtype).view(2, 1))
    area = s_and_log_r[:, 0] * (rows * cols)  # n x attempts: each attempt's area in pixels
    r = s_and_log_r[:, 1].exp()
    wh = torch.stack([area * r, area / r], 1).sqrt_()  # n x 2 x attempts: widths, heights
    fits = (wh[:, 0] <= cols) & (wh[:, 1] <= rows)
    first = fits.to(torch.uint8).argmax(1)  # the first attempt that fits (0 where none does)
    wh = wh.gather(2, first.view(n, 1, 1).expand(n, 2, 1)).squeeze(2)
    fallback_w, fallback_h = (_fallback_sizes if per_image else _fallback_size)(height, width, ratio)
    found = fits.any(1, keepdim=True)
    fallback = torch.stack([fallback_w, fallback_h], -1) if per_image else _device_constant(
        (float(fallback_w), float(fallback_h)), device, draws.dtype)
    wh = torch.where(found, wh, fallback)
    sizes = torch.stack([width, height], -1) if per_image else _device_constant((float(width), float(height)),
                                                                                  device, draws.dtype)
    return torch.cat([draws[:, 2 * attempts:] * (sizes - wh), wh], 1)


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
    scaled = boxes / _device_constant((width / 2, height / 2, width, height), boxes.device, boxes.dtype)
    centre = scaled[:, :2] + scaled[:, 2:] - 1  # (2 x0 + w) / width - 1, and the same for y
    sx, sy = scaled[:, 2:3], scaled[:, 3:4]
    if flip is not None:
        sx = torch.where(flip.view(-1, 1), -sx, sx)
    zero = torch.zeros_like(sx)
    theta = torch.cat([sx, zero, centre[:, :1], zero, sy, centre[:, 1:]], 1).view(-1, 2, 3)
    return F.affine_grid(theta, [len(boxes), 1, size[0], size[1]], align_corners=False)


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """B x 1 x H x W luma of RGB images; the channel mean of grey or multi-channel ones."""
    if images.shape[1] != 3:
        return images.mean(1, keepdim=True)
    r, g, b = images.unbind(1)  # planes, not a sum over the channel axis: element-wise passes are fast everywhere
    return (r * GRAY_WEIGHTS[0]).add_(g, alpha=GRAY_WEIGHTS[1]).add_(b, alpha=GRAY_WEIGHTS[2]).unsqueeze(1)


def _blend(images: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    factor = factor.view(-1, 1, 1, 1)
    return (factor * images + (1 - factor) * other).clamp_(0, 1)


def adjust_brightness(images, factor):
    return _blend(images, torch.zeros_like(images[:, :1]), factor)


def adjust_contrast(images, factor):
    return _blend(images, grayscale(images).mean(dim=(1, 2, 3), keepdim=True), factor)


def adjust_saturation(images, factor):
    return _blend(images, grayscale(images), factor)


def adjust_hue(images, shift):
    """Hue rotated by ``shift`` (per sample, in turns), as torchvision's adjust_hue."""
    return _rotate_hue(images, torch.addcmul(_device_constant((5.0, 3.0, 1.0), images.device, images.dtype),
                                             shift.view(-1, 1), _scalar(6.0, images)))


def _rotate_hue(images: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """torchvision's RGB -> HSV -> RGB (the hexcone model) with each sample's hue turned, in a third of those
    conversions' launches: worked in sixths of a turn, k = (n + 6 h + 6 shift) mod 6, and v s = chroma
    (``offsets``: n x 3, n + 6 shift for n = 5, 3, 1)."""
    value, least = images.amax(1, keepdim=True), images.amin(1, keepdim=True)
    chroma = value - least
    # chroma x sixths of a turn, by the channel c at the maximum: 2 c chroma + (g - b, b - r, r - g)[c]
    turned = images.roll(-1, 1).sub_(images.roll(-2, 1)).addcmul_(
        chroma, _device_constant((0.0, 2.0, 4.0), images.device, images.dtype).view(1, 3, 1, 1))
    red_turned, green_turned, blue_turned = turned.split(1, 1)
    sixths = torch.where(images[:, :1] == value, red_turned,  # red, then green, as torchvision's rgb_to_hsv
                         torch.where(images[:, 1:2] == value, green_turned, blue_turned))
    sixths.div_(chroma.clamp_min(1e-30))  # 0 / tiny = 0 where grey (all channels equal)
    # v - chroma clamp(min(k, 4 - k), 0, 1) = least + chroma clamp(|k - 2| - 1, 0, 1) for k in [0, 6); in place:
    # on a CPU every new tensor costs page faults
    k = torch.add(sixths, offsets.view(-1, 3, 1, 1)).remainder_(6.0)
    return torch.addcmul(least, chroma, k.sub_(2.0).abs_().sub_(1.0).clamp_(0.0, 1.0))


def color_jitter(images: torch.Tensor, strength: Sequence[float], p: float, generator: torch.Generator) -> torch.Tensor:
    """torchvision's ColorJitter(b, c, s, h) applied with probability ``p``, per sample: each
    sample draws its own factors and its own order of the four operations.

    Every pass runs on the whole batch (selecting samples would make the host wait for the device). A sample's
    order is its three blends (brightness, contrast, saturation) with hue inserted among them; each blend mixes
    channels, clamp(A x + B mean(x)) with per-sample matrices A and B (A = I, B = 0 where a sample does not blend in
    that pass), so the blends before hue, hue, and the blends after it are 3 + 1 + 3 batched passes whose
    matrices are all worked out at once. Returns ``images`` itself when nothing can change."""
    brightness, contrast, saturation, hue = strength
    if images.shape[1] != 3:  # saturation and hue mean something for RGB only
        saturation = hue = 0.0
    if p <= 0 or not any((brightness, contrast, saturation, hue)):
        return images
    draws = torch.rand(len(images), 9, generator=generator, device=images.device)
    return apply_jitter(images, draws, (brightness, contrast, saturation, hue), p)


@lru_cache(maxsize=8)
def _jitter_slots(sequences: int, device: torch.device) -> tuple:
    """Of each of ``apply_jitter``'s blend passes (3 per sequence): the rank of the blend it does, and whether it
    comes before hue, as passes x 1 x 1 tensors made on the device once."""
    slots = torch.arange(3 * sequences, device=device).view(-1, 1, 1)
    return slots % 3, slots < 3


@lru_cache(maxsize=16)
def _blend_mixes(channels: int, device: torch.device, dtype: torch.dtype) -> tuple:
    """The blends as channel mixes A, B (2 x C x C, flattened): a blend at factor f changes the identity mix (I, 0)
    by (f - 1) times its row of the basis: brightness (I, 0) (f x), contrast (I, -G) (f x + (1 - f) mean(grey)),
    saturation (I - G, 0) (f x + (1 - f) grey), where G's rows are the grey weights. Made on the device once."""
    grey = _grey_rows(channels, device, dtype)
    eye, zero = torch.eye(channels, device=device, dtype=dtype), torch.zeros_like(grey)
    basis = torch.stack([torch.stack([eye, zero]), torch.stack([eye, -grey]), torch.stack([eye - grey, zero])])
    return torch.stack([eye, zero]).flatten(), basis.flatten(1)


def _grey_rows(channels: int, device, dtype) -> torch.Tensor:
    """C x C: each row the weights of ``grayscale`` (luma for RGB, the mean otherwise)."""
    weights = GRAY_WEIGHTS if channels == 3 else (1 / channels,) * channels
    return torch.tensor(weights, device=device, dtype=dtype).expand(channels, channels).contiguous()


def apply_jitter(images: torch.Tensor, draws: torch.Tensor, strength: Sequence[float], p: float) -> torch.Tensor:
    """``color_jitter`` from its uniform draws (n x 9: applied, the three factors, the hue shift, the four
    operations' sort keys, which give their order).

    The mixes are batched matrix products: where TF32 is on (CUDA), their inputs are rounded to 2^-11, finer than
    a level of the uint8 images and than the bf16 the backbone reads."""
    device, dtype = images.device, images.dtype
    (n, channels), (brightness, contrast, saturation, hue) = images.shape[:2], strength
    low = [max(0.0, 1 - brightness), max(0.0, 1 - contrast), max(0.0, 1 - saturation)]
    span = [1 + brightness - low[0], 1 + contrast - low[1], 1 + saturation - low[2]]
    changes = torch.addcmul(_device_constant(tuple(f - 1 for f in low), device, dtype), draws[:, 1:4],
                            _device_constant(tuple(span), device, dtype))  # each blend's factor, less 1
    applied = draws[:, :1] < p
    position = draws[:, 5:].argsort(1).argsort(1)  # each operation's place in the sample's order
    blends_first = position[:, :3] < position[:, 3:]  # which blends come before hue
    rank = position[:, :3].sub(1).add_(blends_first)  # each blend's place among the blends
    slot_rank, slot_before = _jitter_slots(2 if hue else 1, device)  # the blends before hue, then after it
    chosen = rank == slot_rank  # slots x n x 3: pass j does the (j % 3)-th blend
    if hue:
        chosen &= slot_before == blends_first
    chosen &= applied
    identity, basis = _blend_mixes(channels, device, dtype)
    mixes = torch.addmm(identity, (chosen * changes).view(-1, 3), basis).view(-1, n, 2, channels, channels)
    x = images.flatten(2)
    for index, mix in enumerate(mixes.unbind(0)):
        if hue and index == 3:  # shifts in sixths of a turn plus n = 5, 3, 1: see _rotate_hue
            offsets = torch.add(_device_constant((5.0 - 6 * hue, 3.0 - 6 * hue, 1.0 - 6 * hue), device, dtype),
                                draws[:, 4:5], alpha=12 * hue)
            x = torch.where(applied.view(-1, 1, 1), _rotate_hue(x.view_as(images), offsets).flatten(2), x)
        x = torch.baddbmm(torch.bmm(mix[:, 1], x.mean(2, keepdim=True)), mix[:, 0], x).clamp_(0, 1)
    return x.view_as(images)


def random_grayscale(images: torch.Tensor, p: float, generator: torch.Generator, mean: Optional[Sequence[float]] = None,
                     std: Optional[Sequence[float]] = None) -> torch.Tensor:
    """RGB images made grey with probability ``p`` each, then normalised by ``mean`` and ``std`` if given: one
    channel-mixing pass, diag(1 / std) G or diag(1 / std), less mean / std. Grey or multi-channel images are only
    normalised (the draw is made anyway, so the random stream does not depend on the channel count)."""
    chosen = torch.rand(images.shape[0], generator=generator, device=images.device) < p
    if images.shape[1] != 3:
        return images if mean is None else normalize(images, mean, std)
    keep, grey, offset = _normalizing_mixes(tuple(mean or (0.0,) * 3), tuple(std or (1.0,) * 3), images.device,
                                           images.dtype)
    mixes = torch.where(chosen.view(-1, 1, 1), grey, keep)
    return torch.baddbmm(offset, mixes, images.flatten(2)).view_as(images)


@lru_cache(maxsize=16)
def _normalizing_mixes(mean: tuple, std: tuple, device: torch.device, dtype: torch.dtype) -> tuple:
    """``random_grayscale``'s matrices for RGB, kept and made grey, and its offset (3 x 1), made on the device once."""
    scale = 1 / torch.tensor(std, device=device, dtype=dtype).view(3, 1)
    offset = -torch.tensor(mean, device=device, dtype=dtype).view(3, 1) * scale
    return torch.eye(3, device=device, dtype=dtype) * scale, _grey_rows(3, device, dtype) * scale, offset


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    return (images - _channel_constant(mean, images)) / _channel_constant(std, images)


def _scalar(value: float, like: torch.Tensor) -> torch.Tensor:
    return _device_constant((value,), like.device, like.dtype).view(())


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

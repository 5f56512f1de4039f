"""PART's patch boxes: where each token is cut, its pixels resized to P x P, the pairs whose
relative translation is regressed, and the targets. All batched on the device with
per-sample randomness; every patch of a batch is cut by one ``grid_sample``.

A box is (x0, y0, w, h) in pixels of the (augmented) image; boxes are B x N x 4.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from .. import augment, canvas

MODES = ("offgrid", "scale", "grid", "stratified")


def grid_boxes(height: int, width: int, patch_size: int, device=None) -> torch.Tensor:
    """The on-grid tiling in raster order (top-left first, row by row): (H/P)(W/P) x 4."""
    ys, xs = torch.meshgrid(torch.arange(0, height - patch_size + 1, patch_size, device=device),
                            torch.arange(0, width - patch_size + 1, patch_size, device=device), indexing="ij")
    size = torch.full_like(xs, patch_size)
    return torch.stack([xs, ys, size, size], dim=-1).view(-1, 4).float()


def check_box_geometry(mode: str, height: int, width: int, patch_size: int, num_tokens: int,
                       box_size: Optional[int] = None, box_scale: Sequence[float] = (0.5, 2.0)) -> None:
    """Refuse impossible settings before any work, naming the argument to change."""
    if mode not in MODES:
        raise ValueError(f"mode '{mode}' is unknown; choose one of {', '.join(MODES)}")
    cells = (height // patch_size) * (width // patch_size)
    if mode in ("grid", "stratified") and (height % patch_size or width % patch_size):
        raise ValueError(f"mode={mode} tiles the {height}x{width} image with patch_size {patch_size}, which does "
                         "not divide it")
    if mode == "grid" and num_tokens > cells:
        raise ValueError(f"num_tokens {num_tokens} exceeds the {cells} grid cells of a {height}x{width} image")
    if mode == "stratified" and num_tokens != cells:
        raise ValueError(f"mode=stratified draws one box per grid cell ({cells}); num_tokens is {num_tokens}")
    side = box_size or patch_size
    if mode == "offgrid" and side > min(height, width):
        raise ValueError(f"box_size {side} exceeds the {height}x{width} image")
    if mode == "scale" and box_scale[1] * patch_size > min(height, width):
        raise ValueError(f"box_scale max {box_scale[1]} x patch_size {patch_size} exceeds the {height}x{width} image")
    if num_tokens < 2:
        raise ValueError(f"num_tokens must be >= 2 (pairs need two patches), got {num_tokens}")


def sample_boxes(batch: int, num_tokens: int, height: int, width: int, mode: str, patch_size: int,
                 generator: torch.Generator, device, box_size: Optional[int] = None,
                 box_scale: Sequence[float] = (0.5, 2.0)) -> torch.Tensor:
    """B x N x 4 boxes of the given mode, independently per image.

    offgrid: D x D boxes (D = ``box_size`` or P) at uniform integer positions, overlaps allowed.
    scale: w and h each uniform in ``box_scale`` * P, at uniform continuous positions.
    grid: the P x P tiling (a random subset of N cells per image if N is fewer), in a random order per image.
    stratified: one P x P box per grid cell, its centre uniform within the cell, kept inside the image, in a
    random order per image.
    """
    shape = (batch, num_tokens)
    rand = lambda: torch.rand(shape, generator=generator, device=device)  # noqa: E731
    if mode == "offgrid":
        side = box_size or patch_size
        x0 = (rand() * (width - side + 1)).floor()
        y0 = (rand() * (height - side + 1)).floor()
        size = torch.full(shape, float(side), device=device)
        return torch.stack([x0, y0, size, size], dim=-1)
    if mode == "scale":
        lo, hi = box_scale[0] * patch_size, box_scale[1] * patch_size
        w, h = lo + rand() * (hi - lo), lo + rand() * (hi - lo)
        return torch.stack([rand() * (width - w), rand() * (height - h), w, h], dim=-1)
    grid = grid_boxes(height, width, patch_size, device)
    # the cells in a random order per image, as the published code's --shuffle_patches: in raster order a token's
    # slot alone would tell where it sits, and a model could solve the task without looking at the pixels
    order = torch.rand(batch, len(grid), generator=generator, device=device).argsort(1)
    if mode == "grid":
        return grid[order[:, :num_tokens]]
    if mode == "stratified":
        jitter = (torch.rand(batch, len(grid), 2, generator=generator, device=device) - 0.5) * patch_size
        x0 = (grid[:, 0] + jitter[..., 0]).clamp(0, width - patch_size)
        y0 = (grid[:, 1] + jitter[..., 1]).clamp(0, height - patch_size)
        boxes = torch.stack([x0, y0, grid[:, 2].expand_as(x0), grid[:, 3].expand_as(x0)], dim=-1)
        return boxes.gather(1, order[..., None].expand(-1, -1, 4))
    raise ValueError(f"mode '{mode}' is unknown; choose one of {', '.join(MODES)}")


def cut_boxes(images: torch.Tensor, boxes: torch.Tensor, patch_size: int) -> torch.Tensor:
    """The pixels of every box resized to P x P (bilinear), B x N x C x P x P, by one grid_sample.

    Samples sit at the box's P x P cell centres, so a P x P box at an integer position is
    copied exactly."""
    batch, channels, height, width = images.shape
    num = boxes.shape[1]
    steps = (torch.arange(patch_size, device=images.device, dtype=images.dtype) + 0.5) / patch_size
    x0, y0, w, h = boxes.to(images.dtype).unbind(-1)
    xs = x0[..., None] + steps * w[..., None]  # B x N x P, pixel coordinates
    ys = y0[..., None] + steps * h[..., None]
    gx = (2 * xs / width - 1)[:, :, None, :].expand(-1, -1, patch_size, -1)
    gy = (2 * ys / height - 1)[:, :, :, None].expand(-1, -1, -1, patch_size)
    grid = torch.stack([gx, gy], dim=-1).reshape(batch, num * patch_size, patch_size, 2)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.view(batch, channels, num, patch_size, patch_size).transpose(1, 2)


def sample_pairs(batch: int, num_tokens: int, num_pairs: int, generator: torch.Generator, device) -> torch.Tensor:
    """B x M x 2 (reference, target) indices: M distinct ordered pairs i != j per image, uniformly."""
    total = num_tokens * (num_tokens - 1)
    if num_pairs > total:
        raise ValueError(f"num_pairs {num_pairs} exceeds the {total} ordered pairs of {num_tokens} patches")
    chosen = torch.rand(batch, total, generator=generator, device=device).argsort(1)[:, :num_pairs]
    ref = chosen // (num_tokens - 1)
    offset = chosen % (num_tokens - 1)
    tgt = offset + (offset >= ref).long()  # skip the diagonal
    return torch.stack([ref, tgt], dim=-1)


def all_pairs(num_tokens: int, device=None) -> torch.Tensor:
    """Every ordered pair (i, j), i-major, diagonal included: N^2 x 2 (for analysis)."""
    index = torch.arange(num_tokens, device=device)
    return torch.stack(torch.meshgrid(index, index, indexing="ij"), dim=-1).view(-1, 2)


def relative_targets(boxes: torch.Tensor, pairs: torch.Tensor, predict_scale: bool = False,
                     log_scale: bool = False) -> torch.Tensor:
    """PART's eq. (1): dx = (xc_tgt - xc_ref) / w_ref, dy = (yc_tgt - yc_ref) / h_ref, and with
    ``predict_scale`` dw = w_tgt / w_ref, dh = h_tgt / h_ref (log-ratios with ``log_scale``).
    ``boxes`` B x N x 2D (D starts then D sizes: (x0, y0, w, h), or (t0, length) for
    signals), ``pairs`` B x M x 2 -> B x M x D (2D with scale)."""
    dims = boxes.shape[-1] // 2

    def pick(which):
        return boxes.gather(1, pairs[..., which, None].expand(-1, -1, boxes.shape[-1]))
    ref, tgt = pick(0), pick(1)
    centre_ref = ref[..., :dims] + ref[..., dims:] / 2
    centre_tgt = tgt[..., :dims] + tgt[..., dims:] / 2
    shift = (centre_tgt - centre_ref) / ref[..., dims:]
    if not predict_scale:
        return shift
    ratio = tgt[..., dims:] / ref[..., dims:]
    return torch.cat([shift, ratio.log() if log_scale else ratio], dim=-1)


@dataclass
class BoxSampler:
    """uint8 images -> (normalised patches B x N x C x P x P, boxes B x N x 4).

    Each image first gets its own random resized crop and flip (``scale``; ``None`` keeps
    the image as is), then its own N boxes."""
    mode: str
    patch_size: int
    num_tokens: int
    mean: Sequence[float]
    std: Sequence[float]
    box_size: Optional[int] = None
    box_scale: Sequence[float] = (0.5, 2.0)
    scale: Optional[Sequence[float]] = (0.2, 1.0)
    flip_p: float = 0.5

    def __call__(self, images: canvas.Images, generator: torch.Generator) -> tuple:
        """``images``: uint8 (B x C x H x W), or whole images (``canvas.Canvases``: the crop relative to each whole
        image; without ``scale``, its un-augmented view)."""
        augment.require_uint8(images, "BoxSampler")
        with augment.without_autocast(images):
            if self.scale is not None:
                x = canvas.random_resized_crops(images, 1, self.scale, (3 / 4, 4 / 3), self.flip_p, generator)
            else:
                x = canvas.plain(images).float().div_(255)
            batch, _, height, width = x.shape
            boxes = sample_boxes(batch, self.num_tokens, height, width, self.mode, self.patch_size, generator,
                                 x.device, self.box_size, self.box_scale)
            patches = cut_boxes(x, boxes, self.patch_size)
            return augment.normalize(patches.flatten(0, 1), self.mean, self.std).view_as(patches), boxes

"""Spatial Reasoning's patches: N square patches per image with their positions as targets.

Patches are cut from the un-augmented image at integer pixel offsets, each gets its own
colour jitter and grayscale (no crop or flip), and is then either resized to the image
size (plain) or pasted at its native size on a black canvas (additive-patch-use) at an
independently drawn random position, as the official code does: the target stays where
the patch was cut, so it cannot be read off the canvas. The first two patches of every
image never overlap.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Sequence

import torch
import torch.nn.functional as F

from .. import augment, canvas

PLACEMENTS = ("random", "same")
# Evaluation patches on a 3x3 grid, as (row, col), in the paper's order of use:
# centre; left, right; top, bottom; two corners; the other two corners.
GRID_ORDER = ((1, 1), (1, 0), (1, 2), (0, 1), (2, 1), (0, 0), (2, 2), (0, 2), (2, 0))


def check_patch_geometry(patch_size: int, height: int, width: int, num_patches: int, non_overlapping: bool) -> None:
    if patch_size > min(height, width):
        raise ValueError(f"patch_size {patch_size} does not fit in {height}x{width} images; use at most "
                         f"{min(height, width)}")
    if non_overlapping and num_patches >= 2 and 2 * patch_size > max(height, width):
        raise ValueError(f"two {patch_size}px patches cannot avoid overlapping in {height}x{width} images; use "
                         f"patch_size <= {max(height, width) // 2}, or non_overlapping=false")


def _window(x0: torch.Tensor, y0: torch.Tensor, size: int) -> tuple:
    """Row and column indices (M x size x 1, M x 1 x size) of M square windows."""
    offsets = torch.arange(size, device=x0.device)
    return (y0[:, None] + offsets)[:, :, None], (x0[:, None] + offsets)[:, None, :]


def cut_patches(images: torch.Tensor, image_index: torch.Tensor, x0: torch.Tensor, y0: torch.Tensor,
                size: int) -> torch.Tensor:
    """Patch m = images[image_index[m], :, y0[m]:y0[m]+size, x0[m]:x0[m]+size], all at once."""
    rows, cols = _window(x0, y0, size)
    return images[image_index[:, None, None], :, rows, cols].permute(0, 3, 1, 2)


def paste_patches(patches: torch.Tensor, x0: torch.Tensor, y0: torch.Tensor, height: int, width: int,
                  background: torch.Tensor) -> torch.Tensor:
    """Each patch on a canvas of ``background`` (1 x C x 1 x 1: e.g. black, normalised) with its top-left corner at
    (x0, y0), at native resolution."""
    m, channels, size, _ = patches.shape
    canvas = patches.new_empty(m, channels, height, width).copy_(background)
    rows, cols = _window(x0, y0, size)
    canvas[torch.arange(m, device=patches.device)[:, None, None], :, rows, cols] = patches.permute(0, 2, 3, 1)
    return canvas


def resize_patches(patches: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The one interpolation used for patches in training and in evaluation."""
    return F.interpolate(patches, size=(height, width), mode="bilinear", align_corners=False)


def sample_positions(batch: int, num_patches: int, patch_size: int, height: int, width: int,
                     non_overlapping: bool, generator: torch.Generator, device) -> tuple:
    """Top-left corners (x0, y0), each N x B, integers.

    With ``non_overlapping`` the first two patches are drawn uniformly from all ordered pairs
    of positions that do not overlap: the first with weight equal to its number of
    non-overlapping partners, the second uniformly among those partners. The others are
    uniform over all positions.
    """
    span_x, span_y = width - patch_size + 1, height - patch_size + 1
    if not (non_overlapping and num_patches >= 2):
        return (torch.randint(span_x, (num_patches, batch), generator=generator, device=device),
                torch.randint(span_y, (num_patches, batch), generator=generator, device=device))
    near_x, near_y, partners = _overlap_tables(span_x, span_y, patch_size, torch.device(device))
    first = draw_by_weight(partners.expand(batch, -1), generator)
    overlaps = near_y[first // span_x][:, :, None] & near_x[first % span_x][:, None, :]  # B x span_y x span_x
    pair = torch.stack([first, draw_by_weight((~overlaps).flatten(1).long(), generator)])  # flat, y-major
    x0, y0 = pair % span_x, pair // span_x
    if num_patches == 2:
        return x0, y0
    return (torch.cat([x0, torch.randint(span_x, (num_patches - 2, batch), generator=generator, device=device)]),
            torch.cat([y0, torch.randint(span_y, (num_patches - 2, batch), generator=generator, device=device)]))


@lru_cache(maxsize=32)
def _overlap_tables(span_x: int, span_y: int, patch_size: int, device: torch.device) -> tuple:
    """Which top-left offsets along x (span_x x span_x) and along y overlap, and each position's number of
    non-overlapping partners (flat, y-major): the geometry's, made on the device once."""
    xs = torch.arange(span_x, device=device)
    ys = torch.arange(span_y, device=device)
    near_x = ((xs[:, None] - xs[None, :]).abs() < patch_size)
    near_y = ((ys[:, None] - ys[None, :]).abs() < patch_size)
    partners = span_x * span_y - near_y.sum(1)[:, None] * near_x.sum(1)[None, :]
    return near_x, near_y, partners.flatten()


def draw_by_weight(weights: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One index per row of the integer ``weights`` (rows x K), with probability proportional to its
    weight, as torch.multinomial draws it but without its host sync: a uniform integer below the row's
    total, found among the row's cumulative sums (integers: exact, and deterministic on CUDA)."""
    cumulative = weights.cumsum(1)
    # uniform below the total up to a bias of total / 2**62
    ticket = torch.randint(2 ** 62, (len(weights), 1), generator=generator, device=weights.device) % cumulative[:, -1:]
    return torch.searchsorted(cumulative, ticket, right=True).squeeze(1)


@dataclass
class PatchSampler:
    """Returns (patches, centres): ``N * B`` normalised patches laid out patch-major (patch i
    of image b is row ``i * B + b``) and their centres, N x B x 2, as (x, y) in [0, 1] of
    the image width and height."""
    num_patches: int
    patch_size: int
    mean: Sequence[float]
    std: Sequence[float]
    additive: bool = False
    non_overlapping: bool = True
    jitter: Sequence[float] = field(default=(0.8, 0.8, 0.8, 0.2))
    jitter_p: float = 0.8
    gray_p: float = 0.2
    additive_placement: str = "random"  # where additive patches go: random (the paper's) or same (where cut)

    def __post_init__(self):
        if self.additive_placement not in PLACEMENTS:
            raise ValueError(f"additive_placement '{self.additive_placement}' is unknown; choose one of "
                             f"{', '.join(PLACEMENTS)}")

    def __call__(self, images: canvas.Images, generator: torch.Generator) -> tuple:
        augment.require_uint8(images, "PatchSampler")
        images = canvas.plain(images)  # whole images: their un-augmented view
        batch, _, height, width = images.shape
        check_patch_geometry(self.patch_size, height, width, self.num_patches, self.non_overlapping)
        device = images.device
        with augment.without_autocast(images):
            x0, y0 = sample_positions(batch, self.num_patches, self.patch_size, height, width,
                                      self.non_overlapping, generator, device)
            image_index = torch.arange(batch, device=device).repeat(self.num_patches)
            x0, y0 = x0.flatten(), y0.flatten()
            patches = cut_patches(images, image_index, x0, y0, self.patch_size).float().div_(255)
            patches = augment.color_jitter(patches, self.jitter, self.jitter_p, generator)
            patches = augment.random_grayscale(patches, self.gray_p, generator, self.mean, self.std)
            if self.additive:
                paste_x, paste_y = x0, y0
                if self.additive_placement == "random":  # uniform over every place the patch fits
                    paste_x, paste_y = (c.flatten() for c in sample_positions(
                        len(x0), 1, self.patch_size, height, width, False, generator, device))
                black = augment.normalize(patches.new_zeros(1, patches.shape[1], 1, 1), self.mean, self.std)
                patches = paste_patches(patches, paste_x, paste_y, height, width, black)
            else:  # resizing is linear, with weights that sum to 1: normalising before it is the same
                patches = resize_patches(patches, height, width)
            half = self.patch_size / 2
            centres = torch.stack([(x0 + half) / width, (y0 + half) / height], dim=1)
            return patches, centres.view(self.num_patches, batch, 2)


def grid_positions(size: int, patch_size: int) -> list:
    """Three offsets along one axis: first, middle and last window (overlapping slightly)."""
    last = size - patch_size
    return [0, round(last / 2), last]


def grid_patches(images: torch.Tensor, patch_size: int, count: int, mean: Sequence[float],
                 std: Sequence[float]) -> torch.Tensor:
    """The first ``count`` evaluation patches in GRID_ORDER, resized to the image size and
    normalised: count x B x 3 x H x W. Deterministic: no randomness at test time.
    ``images`` are uint8, or float in [0, 1] (e.g. affine-augmented)."""
    batch, _, height, width = images.shape
    check_patch_geometry(patch_size, height, width, 1, False)
    corner_x, corner_y = _grid_corners(height, width, patch_size, count, images.device)
    cells = len(corner_x)
    x0, y0 = (corner[:, None].expand(cells, batch).flatten() for corner in (corner_x, corner_y))  # cell-major
    image_index = torch.arange(batch, device=images.device).repeat(cells)
    with augment.without_autocast(images):
        patches = cut_patches(images, image_index, x0, y0, patch_size)
        if patches.dtype == torch.uint8:
            patches = patches.float().div_(255)
        patches = augment.normalize(resize_patches(patches, height, width), mean, std)
    return patches.view(cells, batch, *patches.shape[1:])


@lru_cache(maxsize=32)
def _grid_corners(height: int, width: int, patch_size: int, count: int, device: torch.device) -> tuple:
    """Top-left corners (x0, y0) of the first ``count`` evaluation patches, put on the device once."""
    xs, ys = grid_positions(width, patch_size), grid_positions(height, patch_size)
    cells = GRID_ORDER[:count]
    return (torch.tensor([xs[c] for _, c in cells], device=device),
            torch.tensor([ys[r] for r, _ in cells], device=device))

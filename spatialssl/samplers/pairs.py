"""Which representations are paired for the relation head, as index tensors.

Features are laid out block-major: block k (a view, or a patch number) of image b is row
``k * B + b``. Built once per (B, K) and reused, so pairing is two gathers per step.
"""
from __future__ import annotations

from functools import lru_cache

import torch


@lru_cache(maxsize=32)
def relation_pairs(batch: int, views: int, device: str = "cpu") -> tuple:
    """Relational Reasoning's aggregation: for views i < j, the positive pair (f_i, f_j) and
    the negative pair (f_i, roll(f_j, shift)), the shift cycling through 1..B-1 so a negative
    never pairs an image with itself. ``B * K * (K - 1)`` pairs, half positive.

    Returns (left, right, target) with target 1 for positives and 0 for negatives.
    """
    if batch < 2:
        raise ValueError("relation pairs need at least 2 images per batch for negatives")
    rows = torch.arange(batch, device=device)
    first, second = torch.triu_indices(views, views, 1, device=device)  # (i, j), i < j, in raster order
    shift = 1 + torch.arange(first.numel(), device=device)[:, None] % (batch - 1)  # 1..B-1, cycling per pair
    left = (first[:, None] * batch + rows).repeat_interleave(2, dim=0)
    right = torch.stack([second[:, None] * batch + rows, second[:, None] * batch + (rows - shift) % batch], 1)
    target = torch.tensor([1.0, 0.0], device=device).repeat_interleave(batch).repeat(first.numel())
    return left.reshape(-1), right.reshape(-1), target


@lru_cache(maxsize=32)
def patch_pairs(batch: int, patches: int, device: str = "cpu") -> tuple:
    """Spatial Reasoning's patch aggregation: every unordered pair (i < j) of the N patches
    of the same image, positives only: ``B * (N^2 - N) / 2`` pairs. Returns (left, right)."""
    rows = torch.arange(batch, device=device)
    first, second = torch.triu_indices(patches, patches, 1, device=device)  # (i, j), i < j, in raster order
    return (first[:, None] * batch + rows).reshape(-1), (second[:, None] * batch + rows).reshape(-1)

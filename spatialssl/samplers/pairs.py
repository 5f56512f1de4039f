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
    left, right, target = [], [], []
    shift = 1
    for i in range(views):
        for j in range(i + 1, views):
            left += [i * batch + rows, i * batch + rows]
            right += [j * batch + rows, j * batch + (rows - shift) % batch]  # == roll(f_j, shift)
            target += [torch.ones(batch, device=device), torch.zeros(batch, device=device)]
            shift = shift + 1 if shift + 1 < batch else 1
    return torch.cat(left), torch.cat(right), torch.cat(target)


@lru_cache(maxsize=32)
def patch_pairs(batch: int, patches: int, device: str = "cpu") -> tuple:
    """Spatial Reasoning's patch aggregation: every unordered pair (i < j) of the N patches
    of the same image, positives only: ``B * (N^2 - N) / 2`` pairs. Returns (left, right)."""
    rows = torch.arange(batch, device=device)
    left, right = [], []
    for i in range(patches):
        for j in range(i + 1, patches):
            left.append(i * batch + rows)
            right.append(j * batch + rows)
    return torch.cat(left), torch.cat(right)

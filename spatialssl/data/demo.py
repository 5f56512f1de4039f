"""The embedded default data set: generated deterministically, no files, no network.

Each 32x32 image shows two coloured shapes on a noisy background; the class is the
unordered pair of shapes (5 shapes -> 10 classes). Position, size and colour are random,
so a representation must tell parts apart and see them together to classify well.
"""
from __future__ import annotations

from itertools import combinations

import numpy as np
import torch

from .imageset import ImageSet

SHAPES = ("square", "disc", "triangle", "cross", "ring")
CLASSES = [f"{a}+{b}" for a, b in combinations(SHAPES, 2)]


def _mask(shape: str, dy: np.ndarray, dx: np.ndarray, r: float) -> np.ndarray:
    if shape == "square":
        return (np.abs(dx) <= r * 0.8) & (np.abs(dy) <= r * 0.8)
    if shape == "disc":
        return dx**2 + dy**2 <= r**2
    if shape == "triangle":
        return (dy <= r * 0.8) & (dy >= -r) & (np.abs(dx) <= (dy + r) * 0.55)
    if shape == "cross":
        return ((np.abs(dx) <= r * 0.3) & (np.abs(dy) <= r)) | ((np.abs(dy) <= r * 0.3) & (np.abs(dx) <= r))
    return (dx**2 + dy**2 <= r**2) & (dx**2 + dy**2 >= (r * 0.55) ** 2)  # ring


def make_demo_images(count: int, seed: int, size: int = 32) -> ImageSet:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    images = np.empty((count, size, size, 3), dtype=np.uint8)
    labels = rng.integers(0, len(CLASSES), size=count)
    pairs = list(combinations(range(len(SHAPES)), 2))
    for i, label in enumerate(labels):
        canvas = rng.uniform(0, 90, size=3) + rng.normal(0, 12, size=(size, size, 3))
        radius = rng.uniform(size * 0.16, size * 0.24, size=2)
        # Place the two shapes apart: redraw both until their centres are far enough.
        while True:
            first, second = (rng.uniform(r, size - r, size=2) for r in radius)
            if np.hypot(*(second - first)) > radius.sum() * 0.9:
                break
        order = pairs[label] if rng.random() < 0.5 else pairs[label][::-1]
        for shape_index, centre, r in zip(order, (first, second), radius):
            mask = _mask(SHAPES[shape_index], yy - centre[0], xx - centre[1], r)
            canvas[mask] = rng.uniform(110, 255, size=3)
        images[i] = np.clip(canvas, 0, 255).astype(np.uint8)
    return ImageSet(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
                    torch.from_numpy(labels.astype(np.int64)), list(CLASSES), f"demo shapes (seed {seed})")


def demo_splits(train: int = 2000, test: int = 1000) -> tuple:
    """The demo's train and test splits: different seeds, so no image is in both."""
    return make_demo_images(train, seed=1), make_demo_images(test, seed=2)

"""A small synthetic detection data set in COCO's layout, written by us so the detection path can be run and
tested end to end without downloading COCO: each image a smooth random colour gradient with noise, and 1 to
``max_objects`` solid shapes (rectangles, ellipses, triangles) of random colour, place and size, a later one
allowed to hide part of an earlier one but never most of it."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from ..files import atomic_write
from .rasterise import polygon_mask

CATEGORIES = [{"id": 1, "name": "rectangle"}, {"id": 2, "name": "ellipse"}, {"id": 3, "name": "triangle"}]
ELLIPSE_VERTICES = 24
SIDE_RANGE = (0.1, 0.5)  # a shape's width and height, as fractions of the image side
MIN_VISIBLE = 0.6  # of its pixels, each shape keeps at least this much uncovered by later ones
MIN_CONTRAST = 90  # summed |R, G, B| difference between a shape and the mean background under it
NOISE = 10  # std of the background's pixel noise, so no background region is one flat colour
ATTEMPTS = 50


def write_shapes(folder, train: int, val: int, size: int = 128, seed: int = 0, max_objects: int = 4) -> Path:
    """Write ``train`` and ``val`` images of ``size`` x ``size`` pixels to ``folder/{split}/`` and their
    annotations to ``folder/annotations/instances_{split}.json`` (each json after its images, so a json
    present lists only written images); the same ``seed`` gives the same files. Returns ``folder``."""
    folder = Path(folder).expanduser()
    for split_index, (split, count) in enumerate((("train", train), ("val", val))):
        rng = np.random.default_rng([seed, split_index])
        (folder / split).mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for image_id in range(1, count + 1):
            pixels, shapes = _draw(rng, size, max_objects)
            name = f"{image_id:06d}.png"
            Image.fromarray(pixels).save(folder / split / name, compress_level=1)
            images.append({"id": image_id, "file_name": name, "width": size, "height": size})
            for category, polygon, mask in shapes:
                annotations.append(_annotation(len(annotations) + 1, image_id, category, polygon, mask))
        coco = {"info": {"description": f"spatialssl generated shapes (seed {seed})"}, "licenses": [],
                "images": images, "annotations": annotations, "categories": CATEGORIES}
        atomic_write(folder / "annotations" / f"instances_{split}.json",
                     lambda tmp: Path(tmp).write_text(json.dumps(coco)))
    return folder


def _draw(rng: np.random.Generator, size: int, max_objects: int) -> tuple:
    """(size x size x 3 uint8 image, [(category id, polygon, pixel mask)] in drawing order)."""
    corners = rng.uniform(0, 255, size=(2, 2, 3))
    ramp = np.linspace(0, 1, size)[:, None, None]
    left = corners[0, 0] * (1 - ramp) + corners[1, 0] * ramp  # size x 1 x 3, top to bottom
    right = corners[0, 1] * (1 - ramp) + corners[1, 1] * ramp
    across = np.linspace(0, 1, size)[None, :, None]
    background = left * (1 - across) + right * across
    canvas = background + rng.normal(0, NOISE, size=(size, size, 3))
    owner = np.full((size, size), -1)  # which shape each pixel shows
    shapes, areas = [], []
    for _ in range(rng.integers(1, max_objects + 1)):
        for _attempt in range(ATTEMPTS):
            category = int(rng.integers(1, len(CATEGORIES) + 1))
            polygon = _polygon(rng, category, size)
            mask = polygon_mask([polygon], 1.0, size, size).astype(bool)  # as pycocotools fills it
            covered = np.bincount(owner[mask] + 1, minlength=len(shapes) + 1)[1:]
            visible = np.bincount(owner.ravel() + 1, minlength=len(shapes) + 1)[1:]
            if mask.sum() >= 4 and np.all(visible - covered >= MIN_VISIBLE * np.asarray(areas, dtype=float)):
                break
        else:
            continue
        colour = _contrasting_colour(rng, background[mask].mean(axis=0))
        canvas[mask] = colour
        owner[mask] = len(shapes)
        shapes.append((category, polygon, mask))
        areas.append(int(mask.sum()))
    return np.clip(canvas, 0, 255).round().astype(np.uint8), shapes


def _polygon(rng: np.random.Generator, category: int, size: int) -> list:
    """The outline of a shape of ``category`` at a random place and size, as a flat [x0, y0, ...] list."""
    width, height = rng.uniform(*SIDE_RANGE, size=2) * size
    x, y = rng.uniform(0, size - width), rng.uniform(0, size - height)
    if category == 1:
        points = [(x, y), (x + width, y), (x + width, y + height), (x, y + height)]
    elif category == 2:
        angles = 2 * np.pi * np.arange(ELLIPSE_VERTICES) / ELLIPSE_VERTICES
        points = zip(x + width / 2 * (1 + np.cos(angles)), y + height / 2 * (1 + np.sin(angles)))
    else:
        apex, base = (y, y + height) if rng.random() < 0.5 else (y + height, y)  # pointing up or down
        points = [(x + rng.uniform(0, width), apex), (x + width, base), (x, base)]
    return [round(float(v), 2) for point in points for v in point]


def _contrasting_colour(rng: np.random.Generator, behind: np.ndarray) -> np.ndarray:
    """A random colour far enough from the background behind the shape that the shape stands out."""
    for _ in range(ATTEMPTS):
        colour = rng.integers(0, 256, size=3)
        if np.abs(colour - behind).sum() >= MIN_CONTRAST:
            return colour
    return np.where(behind < 128, 255, 0)  # the opposite corner of the colour cube


def _annotation(ann_id: int, image_id: int, category: int, polygon: list, mask: np.ndarray) -> dict:
    """COCO's annotation of a drawn shape: bbox the tight box of its pixels, area their count."""
    rows, cols = np.nonzero(mask)
    box = [int(cols.min()), int(rows.min()), int(cols.max() - cols.min() + 1), int(rows.max() - rows.min() + 1)]
    return {"id": ann_id, "image_id": image_id, "category_id": category, "bbox": box, "area": int(mask.sum()),
            "iscrowd": 0, "segmentation": [polygon]}

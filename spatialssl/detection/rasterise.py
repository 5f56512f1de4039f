"""COCO segmentations as pixel masks, guarding pycocotools' C code against hostile files: run-length encodings
are checked here (its decoder writes as many pixels as the counts say, however many the mask holds), and
polygons reaching far outside their image (its rasteriser allocates by the perimeter: a vertex at 1e9 px would
ask for gigabytes) are filled by our own code, which sets a pixel where its centre lies inside."""
from __future__ import annotations

import numpy as np

from ..errors import optional_import

# Polygons within this many image sides of their image go to pycocotools (as COCO's own, a pixel or so outside).
POLYGON_REACH = 1.0
# Rows of a polygon filled at once: bounds the rows x edges crossing table for polygons of many vertices.
CROSSINGS_PER_CHUNK = 4_000_000


def polygon_mask(polygons: list, scale: float, height: int, width: int) -> np.ndarray:
    """height x width uint8: the union of ``polygons`` (flat [x0, y0, ...] lists in original pixels) scaled by
    ``scale``, filled by pycocotools where they stay near the image, by ``fill_polygons`` otherwise."""
    scaled = [(np.asarray(polygon, dtype=np.float64) * scale) for polygon in polygons]
    low, high = -POLYGON_REACH * max(height, width), (1 + POLYGON_REACH) * max(height, width)
    if any(p.min() < low or p.max() > high for p in scaled):
        return fill_polygons(scaled, height, width).astype(np.uint8)
    mask_utils = optional_import("pycocotools.mask", "detection", "masks of COCO polygons")
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([p.tolist() for p in scaled], height, width)))


def fill_polygons(polygons: list, height: int, width: int) -> np.ndarray:
    """height x width bool: the union of ``polygons`` (flat [x0, y0, x1, y1, ...] lists, each filled
    even-odd), a pixel set when its centre lies inside."""
    mask = np.zeros((height, width), dtype=bool)
    for polygon in polygons:
        points = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
        x0, y0 = points[:, 0], points[:, 1]
        x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
        top, bottom = max(0, int(np.floor(y0.min()))), min(height, int(np.ceil(y0.max())) + 1)
        chunk = max(1, CROSSINGS_PER_CHUNK // len(points))
        for start in range(top, bottom, chunk):
            rows = np.arange(start, min(bottom, start + chunk)) + 0.5
            crosses = (y0 <= rows[:, None]) != (y1 <= rows[:, None])  # rows x edges
            t = (rows[:, None] - y0) / np.where(y1 == y0, 1.0, y1 - y0)
            x = x0 + t * (x1 - x0)
            # A crossing at x toggles every pixel whose centre lies right of it: columns from floor(x + 0.5).
            first = np.clip(np.floor(x + 0.5), 0, width).astype(np.int64)
            row_index, edge_index = np.nonzero(crosses)
            toggles = np.zeros((len(rows), width + 1), dtype=np.int32)
            np.add.at(toggles, (row_index, first[row_index, edge_index]), 1)
            mask[start:start + len(rows)] |= (np.cumsum(toggles[:, :width], axis=1) & 1).astype(bool)
    return mask


def rle_counts(counts, height: int, width: int) -> list:
    """The run lengths of a COCO RLE (a list, or pycocotools' compressed string), checked to cover exactly
    height x width pixels; ValueError saying what is wrong otherwise."""
    if isinstance(counts, str):
        counts = _uncompress(counts)
    elif not (isinstance(counts, list) and all(isinstance(c, int) and not isinstance(c, bool) for c in counts)):
        raise ValueError("its counts are neither a list of integers nor a compressed string")
    if any(c < 0 for c in counts):
        raise ValueError("it has a negative run length")
    if sum(counts) != height * width:
        raise ValueError(f"its runs cover {sum(counts)} pixels, not the {height} x {width} = {height * width} "
                         "of its size")
    return counts


def _uncompress(text: str) -> list:
    """pycocotools' rleFrString: runs as 5-bit groups with a continuation bit, from the third on stored as
    the difference to the run two before, each group an ASCII character offset by 48."""
    counts, position = [], 0
    while position < len(text):
        value, shift, more = 0, 0, True
        while more:
            if position == len(text):
                raise ValueError("its compressed counts end in the middle of a run")
            group = ord(text[position]) - 48
            if not 0 <= group < 64:
                raise ValueError(f"its compressed counts hold the character {text[position]!r}")
            value |= (group & 0x1F) << shift
            more = bool(group & 0x20)
            position, shift = position + 1, shift + 5
            if not more and group & 0x10:
                value |= -1 << shift
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts

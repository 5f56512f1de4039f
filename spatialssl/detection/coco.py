"""COCO-style detection data read once into a DetectionSet: images letterboxed into S x S canvases (the
longer side scaled to S, placed top-left, padded with zeros), boxes and masks mapped the same way.

Layout: ``folder/annotations/instances_{split}.json`` and the images in ``folder/{split}/`` or
``folder/{split}2017/`` (COCO's own names), the json's file names relative to that folder."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image

from ..data.decode import _decode, _read
from ..errors import ConfigError, DataError
from .coco_json import CocoImage, parse_coco
from .rasterise import fill_polygons, rle_mask
from .targets import PADDING, DetectionSet, DetectionTargets, letterbox_extent

MAX_MASK_BYTES = 4 * 2**30  # N x M x S x S uint8 masks are held whole, as the images are


def read_coco(folder, split: str = "train", image_size: int = 1024, masks: Optional[bool] = False) -> DetectionSet:
    """``split`` of the COCO-style data set in ``folder``, every image letterboxed to ``image_size`` square;
    with ``masks``, each object's segmentation as an S x S mask too (Mask R-CNN's targets); ``masks`` None:
    masks when the annotations have segmentations."""
    if image_size < 1:
        raise ConfigError(f"image_size must be a positive number of pixels, got {image_size}")
    root = Path(folder).expanduser()
    annotation_file = _find(root / "annotations", [f"instances_{name}.json" for name in _names(split)], root, split)
    image_folder = _find(root, _names(split), root, split)
    index = parse_coco(annotation_file, masks)
    masks = index.masks
    if not index.images:
        raise DataError(f"{annotation_file} lists no images")
    _check_files(index.images, image_folder, annotation_file)
    count, size = len(index.images), image_size
    slots = max(len(image.objects) for image in index.images)
    if masks and count * slots * size * size > MAX_MASK_BYTES:
        raise DataError(f"the masks of {annotation_file} would take {count * slots * size * size / 2**30:.1f} GiB "
                        f"({count} images x {slots} objects x {size} x {size} bytes, more than "
                        f"{MAX_MASK_BYTES / 2**30:.0f} GiB); read a smaller image_size or with masks off")
    images = torch.zeros(count, 3, size, size, dtype=torch.uint8)
    mask_tensor = torch.zeros(count, slots, size, size, dtype=torch.uint8) if masks else None
    scales = torch.tensor([size / max(image.width, image.height) for image in index.images], dtype=torch.float64)
    boxes = np.zeros((count, slots, 4))
    classes = np.full((count, slots), PADDING, dtype=np.int64)
    for i, image in enumerate(index.images):
        if image.objects:
            boxes[i, :len(image.objects)] = np.array([obj.box for obj in image.objects]) * float(scales[i])
            classes[i, :len(image.objects)] = [obj.category for obj in image.objects]

    def letterbox(i: int) -> None:  # fills its own slices of the shared tensors: threads write disjoint memory
        image, path = index.images[i], image_folder / index.images[i].file_name
        pixels = _decode(path, _read(path), None)
        if pixels.shape[:2] != (image.height, image.width):
            raise DataError(f"image {path} (id {image.id}) is {pixels.shape[1]} x {pixels.shape[0]} but "
                            f"{annotation_file} says {image.width} x {image.height}; fix the json's width and "
                            "height or replace the image")
        width, height = letterbox_extent(image.width, image.height, float(scales[i]))
        resized = Image.fromarray(pixels).resize((width, height), Image.BILINEAR)  # Pillow antialiases when shrinking
        images[i, :, :height, :width] = torch.from_numpy(np.array(resized)).permute(2, 0, 1)
        if mask_tensor is not None and image.objects:
            mask_tensor[i, :len(image.objects), :height, :width] = torch.from_numpy(_object_masks(image, width, height))

    # Threads: Pillow releases the GIL while decoding and resizing.
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        try:
            for _ in pool.map(letterbox, range(count)):
                pass
        except BaseException:
            pool.shutdown(cancel_futures=True)  # one bad file ends the read now, not after every other image
            raise
    targets = DetectionTargets(torch.from_numpy(boxes).float(), torch.from_numpy(classes), mask_tensor)
    return DetectionSet(images, targets, index.classes, f"{root} [{split}]", "coco",
                        torch.tensor([image.id for image in index.images]), scales, index.category_ids,
                        str(annotation_file),
                        torch.tensor([[image.height, image.width] for image in index.images], dtype=torch.int64))


def _names(split: str) -> list:
    return [split] if split.endswith("2017") else [split, f"{split}2017"]


def _find(folder: Path, names: list, root: Path, split: str) -> Path:
    """The first of ``folder/names`` that exists."""
    for name in names:
        if (folder / name).exists():
            return folder / name
    raise DataError(f"{root} has no {' or '.join(str(folder / n) for n in names)} for the split '{split}'; a COCO "
                    "data set holds annotations/instances_<split>.json and the images in <split>/ or <split>2017/")


def _check_files(images: list, folder: Path, annotation_file: Path) -> None:
    """Every image file there before any is decoded: a half-copied data set fails in seconds."""
    missing = [image for image in images if not (folder / image.file_name).is_file()]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise DataError(f"missing image file {folder / missing[0].file_name} (image {missing[0].id} of "
                        f"{annotation_file}){more}; copy the images in or drop them from the json")


def _object_masks(image: CocoImage, width: int, height: int) -> np.ndarray:
    """M x height x width uint8: each object's segmentation rasterised at the original size, then scaled to
    the letterbox nearest-neighbour, sampling each canvas pixel's centre."""
    rows = np.minimum(((np.arange(height) + 0.5) * image.height / height).astype(np.int64), image.height - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * image.width / width).astype(np.int64), image.width - 1)
    out = np.zeros((len(image.objects), height, width), dtype=np.uint8)
    for j, obj in enumerate(image.objects):
        full = (fill_polygons(obj.polygons, image.height, image.width) if obj.polygons is not None
                else rle_mask(obj.rle, image.height, image.width))
        out[j] = full[np.ix_(rows, cols)]
    return out

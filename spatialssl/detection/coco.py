"""COCO-style detection data read once into a DetectionSet: images letterboxed into S x S canvases (the
longer side scaled to S, placed top-left, padded with zeros), boxes and masks mapped the same way.

Layout: ``folder/annotations/instances_{split}.json`` and the images in ``folder/{split}/`` or
``folder/{split}2017/`` (COCO's own names), the json's file names relative to that folder."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image

from ..data.decode import _decode, _read
from ..errors import ConfigError, DataError, optional_import
from .coco_json import CocoImage, CocoIndex, parse_coco
from .rasterise import polygon_mask
from .targets import PADDING, DetectionSet, DetectionTargets, letterbox_extent

MAX_IN_MEMORY_BYTES = 4 * 2**30  # a set read whole (images, masks, the jitter's float copy of a batch's masks)


@dataclass
class CocoSplit:
    """A split's checked annotations and where its images are, before any is decoded; each image letterboxed
    on demand (``letterbox``), by ``read_coco`` into one tensor or by a ``CocoStream`` a batch at a time."""
    index: CocoIndex
    image_folder: Path
    annotation_file: Path
    size: int
    source: str

    @property
    def masks(self) -> bool:
        return self.index.masks

    @cached_property
    def slots(self) -> int:  # object slots per image: the most objects of any image
        return max(len(image.objects) for image in self.index.images)

    @cached_property
    def scales(self) -> torch.Tensor:  # canvas pixels per original pixel, per image
        return torch.tensor([self.size / max(image.width, image.height) for image in self.index.images],
                            dtype=torch.float64)

    @cached_property
    def image_ids(self) -> torch.Tensor:  # COCO's ids of the images
        return torch.tensor([image.id for image in self.index.images])

    @cached_property
    def sizes(self) -> torch.Tensor:  # N x 2: each image's original height and width
        return torch.tensor([[image.height, image.width] for image in self.index.images], dtype=torch.int64)

    def targets(self, indices, slots: int, scales: torch.Tensor) -> tuple:
        """(boxes len x slots x 4 in canvas pixels, classes len x slots, PADDING where empty) of the images at
        ``indices``."""
        boxes = np.zeros((len(indices), slots, 4))
        classes = np.full((len(indices), slots), PADDING, dtype=np.int64)
        for row, i in enumerate(indices):
            objects = self.index.images[i].objects
            if objects:
                boxes[row, :len(objects)] = np.array([obj.box for obj in objects]) * float(scales[row])
                classes[row, :len(objects)] = [obj.category for obj in objects]
        return torch.from_numpy(boxes).float(), torch.from_numpy(classes)

    def letterbox(self, i: int, canvas: torch.Tensor, masks: Optional[torch.Tensor]) -> None:
        """Image ``i`` decoded and scaled into ``canvas`` (3 x S x S, zero), its objects' masks into ``masks``
        (M x S x S, zero) when given."""
        image, path = self.index.images[i], self.image_folder / self.index.images[i].file_name
        pixels = _decode(path, _read(path), None)
        if pixels.shape[:2] != (image.height, image.width):
            raise DataError(f"image {path} (id {image.id}) is {pixels.shape[1]} x {pixels.shape[0]} but "
                            f"{self.annotation_file} says {image.width} x {image.height}; fix the json's width "
                            "and height or replace the image")
        scale = self.size / max(image.width, image.height)
        width, height = letterbox_extent(image.width, image.height, scale)
        resized = Image.fromarray(pixels).resize((width, height), Image.BILINEAR)  # Pillow antialiases when shrinking
        canvas[:, :height, :width] = torch.from_numpy(np.array(resized)).permute(2, 0, 1)
        if masks is not None and image.objects:
            masks[:len(image.objects), :height, :width] = torch.from_numpy(_object_masks(image, width, height, scale))

    def in_memory_bytes(self, batch: int) -> int:
        """What ``read_coco`` holds: the canvases, the masks, and the float copy the jitter makes of a batch's."""
        count, pixels = len(self.index.images), self.size * self.size
        masks = (count + 4 * batch) * self.slots * pixels if self.masks else 0
        return count * 3 * pixels + masks


def coco_split(folder, split: str = "train", image_size: int = 1024, masks: Optional[bool] = False) -> CocoSplit:
    """``split`` of the COCO-style data set in ``folder``, checked: its annotations (with masks, or masks None:
    when they have segmentations) and that every image file is there."""
    if image_size < 1:
        raise ConfigError(f"image_size must be a positive number of pixels, got {image_size}")
    root = Path(folder).expanduser()
    annotation_file = _find(root / "annotations", [f"instances_{name}.json" for name in _names(split)], root, split)
    image_folder = _find(root, _names(split), root, split)
    index = parse_coco(annotation_file, masks)
    if not index.images:
        raise DataError(f"{annotation_file} lists no images")
    _check_files(index.images, image_folder, annotation_file)
    return CocoSplit(index, image_folder, annotation_file, image_size, f"{root} [{split}]")


def read_coco(folder, split: str = "train", image_size: int = 1024, masks: Optional[bool] = False,
              batch_size: int = 16) -> DetectionSet:
    """``split`` of the COCO-style data set in ``folder``, every image letterboxed to ``image_size`` square, held
    whole; with ``masks``, each object's segmentation as an S x S mask too (Mask R-CNN's targets); ``masks`` None:
    masks when the annotations have segmentations. Refused past MAX_IN_MEMORY_BYTES, counted for batches of
    ``batch_size`` (data.stream=true reads any size: ``CocoStream``)."""
    data = coco_split(folder, split, image_size, masks)
    return read_whole(data, batch_size)


def read_whole(data: CocoSplit, batch_size: int) -> DetectionSet:
    """``read_coco`` of a checked split."""
    needed, count, slots, size = data.in_memory_bytes(batch_size), len(data.index.images), data.slots, data.size
    if needed > MAX_IN_MEMORY_BYTES:
        raise DataError(f"{data.annotation_file} read whole would take {needed / 2**30:.1f} GiB ({count} images of "
                        f"3 x {size} x {size} bytes" + (f", {slots} masks of {size} x {size} each and a batch's float "
                                                        "copy" if data.masks else "") +
                        f"), more than {MAX_IN_MEMORY_BYTES / 2**30:.0f} GiB; set data.stream=true to read it a batch "
                        "at a time, or a smaller detect.image_size")
    images = torch.zeros(count, 3, size, size, dtype=torch.uint8)
    mask_tensor = torch.zeros(count, slots, size, size, dtype=torch.uint8) if data.masks else None
    scales = data.scales
    boxes, classes = data.targets(range(count), slots, scales)

    def letterbox(i: int) -> None:  # fills its own slices of the shared tensors: threads write disjoint memory
        data.letterbox(i, images[i], None if mask_tensor is None else mask_tensor[i])

    # Threads: Pillow releases the GIL while decoding and resizing.
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        try:
            for _ in pool.map(letterbox, range(count)):
                pass
        except BaseException:
            pool.shutdown(cancel_futures=True)  # one bad file ends the read now, not after every other image
            raise
    return DetectionSet(images, DetectionTargets(boxes, classes, mask_tensor), data.index.classes, data.source, "coco",
                        data.image_ids, scales, data.index.category_ids, str(data.annotation_file), data.sizes)


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


def _object_masks(image: CocoImage, width: int, height: int, scale: float) -> np.ndarray:
    """M x height x width uint8: each object's segmentation as pycocotools rasterises it (the masks it scores
    against): polygons scaled to the letterbox and filled there, RLE (checked by coco_json) decoded at the
    original size and scaled nearest-neighbour, sampling each canvas pixel's centre."""
    mask_utils = optional_import("pycocotools.mask", "detection", "masks of COCO segmentations")
    out = np.zeros((len(image.objects), height, width), dtype=np.uint8)
    rows = cols = None
    for j, obj in enumerate(image.objects):
        if obj.polygons is not None:
            out[j] = polygon_mask(obj.polygons, scale, height, width)
            continue
        if rows is None:
            rows = np.minimum(((np.arange(height) + 0.5) * image.height / height).astype(np.int64), image.height - 1)
            cols = np.minimum(((np.arange(width) + 0.5) * image.width / width).astype(np.int64), image.width - 1)
        rle = mask_utils.frPyObjects({"counts": obj.rle, "size": [image.height, image.width]}, image.height,
                                     image.width)
        out[j] = mask_utils.decode(rle)[np.ix_(rows, cols)]
    return out

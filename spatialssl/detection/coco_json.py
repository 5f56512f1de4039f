"""A COCO instances file read and checked before any image is decoded: every problem one DataError naming
the file, the image or annotation id, and what to do. The file is parsed as JSON only and every value is
checked before use, since a downloaded annotation file is no more trusted than its images."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Optional

from ..errors import DataError, warn
from .rasterise import rle_counts

FIX = "fix or drop it"
COORDINATE_BOUND = 1e9  # pixels; far beyond any image


@dataclass
class CocoObject:
    """One non-crowd annotation: its contiguous class, its box (x1, y1, x2, y2 in original pixels, clipped to
    the image) and its segmentation: polygons (flat coordinate lists), RLE run lengths, or None."""
    category: int
    box: tuple
    polygons: Optional[list] = None
    rle: Optional[list] = None

    @property
    def has_mask(self) -> bool:
        return self.polygons is not None or self.rle is not None


@dataclass
class CocoImage:
    id: int
    file_name: str
    width: int
    height: int
    objects: list = field(default_factory=list)


@dataclass
class CocoIndex:
    images: list  # CocoImage, in the file's order
    category_ids: list  # COCO ids of the contiguous classes 0..K-1, ascending
    classes: list  # their names
    masks: bool = False  # whether the objects are those with masks (read for Mask R-CNN)


def parse_coco(path, masks: Optional[bool] = False) -> CocoIndex:
    """The images, categories and non-crowd objects of a COCO instances file, all checked. Crowd regions are
    left out: the evaluation reads them from the file. With ``masks``, objects without a usable segmentation
    are left out too (with a warning), as detectron2 does, and a file without any is refused; ``masks`` None:
    masks when the file has segmentations, else boxes alone."""
    data = _load(path)
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{path} has no '{key}' list; a COCO instances file holds images, annotations and "
                            "categories (fix the file or download it again)")
    category_ids, classes = _categories(data["categories"], path)
    contiguous = {coco_id: i for i, coco_id in enumerate(category_ids)}
    images = _images(data["images"], path)
    seen, unmasked, segmented = set(), [], False
    for position, entry in enumerate(data["annotations"]):
        obj, crowd, ann_id = _annotation(entry, position, path, images, contiguous, seen)
        if crowd:
            continue
        segmented |= obj.has_mask
        if masks is not False and not obj.has_mask:
            unmasked.append(ann_id)
        images[entry["image_id"]].objects.append(obj)
    if masks is None:
        masks = segmented
    if masks:  # objects without a mask cannot train the mask head
        for image in images.values():
            image.objects = [obj for obj in image.objects if obj.has_mask]
    if masks and unmasked:
        if not segmented:
            raise DataError(f"{path} holds no segmentations; read it with masks off (boxes only)")
        warn(f"{path}: {len(unmasked)} annotations (ids {unmasked[:5]}) have no segmentation (or only "
             "polygons of fewer than 3 points); they are left out of the mask-training targets")
    return CocoIndex(list(images.values()), category_ids, classes, bool(masks))


def _load(path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text; a COCO instances file is JSON (download it again)") from None
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror or err}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}); "
                        "fix the file or download it again") from None
    except RecursionError:
        raise DataError(f"{path} nests too deeply to be a COCO instances file") from None
    if not isinstance(data, dict):
        raise DataError(f"{path} holds a JSON {type(data).__name__}, not the object of a COCO instances file")
    return data


def _show(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    """A finite coordinate of sane size: NaN fails the comparison, and a bound keeps huge integers and floats
    from overflowing when rasterised."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) < COORDINATE_BOUND


def _categories(entries: list, path) -> tuple:
    names = {}
    for position, entry in enumerate(entries):
        if not (isinstance(entry, dict) and _is_int(entry.get("id")) and isinstance(entry.get("name"), str)):
            raise DataError(f"{path} category #{position} is {_show(entry)}, not an object with an integer 'id' "
                            "and a 'name'; fix the file")
        if entry["id"] in names:
            raise DataError(f"{path} lists category id {entry['id']} twice; give each category its own id")
        names[entry["id"]] = entry["name"]
    if not names:
        raise DataError(f"{path} lists no categories; a detection data set needs at least one")
    ids = sorted(names)
    return ids, [names[i] for i in ids]


def _images(entries: list, path) -> dict:
    images = {}
    for position, entry in enumerate(entries):
        where = f"{path} image #{position}"
        if not isinstance(entry, dict) or not _is_int(entry.get("id")):
            raise DataError(f"{where} is {_show(entry)}, not an object with an integer 'id'; fix the file")
        where = f"{path} image {entry['id']}"
        if entry["id"] in images:
            raise DataError(f"{path} lists image id {entry['id']} twice; give each image its own id")
        name = entry.get("file_name")
        if not isinstance(name, str) or not name or PurePosixPath(name).is_absolute() or ".." in name.split("/"):
            raise DataError(f"{where} has file_name {_show(name)}; it must name a file inside the split's image "
                            "folder (relative, without '..')")
        width, height = entry.get("width"), entry.get("height")
        if not (_is_int(width) and _is_int(height) and width > 0 and height > 0):
            raise DataError(f"{where} ({name}) has width {_show(width)} and height {_show(height)}, not positive "
                            "integers; set them to the image's size")
        images[entry["id"]] = CocoImage(entry["id"], name, width, height)
    return images


def _annotation(entry, position: int, path, images: dict, contiguous: dict, seen: set) -> tuple:
    """(CocoObject, is crowd, id) of one annotation, checked."""
    if not isinstance(entry, dict) or not _is_int(entry.get("id")):
        raise DataError(f"{path} annotation #{position} is {_show(entry)}, not an object with an integer 'id'; "
                        f"{FIX}")
    ann_id = entry["id"]
    where = f"{path} annotation {ann_id}"
    if ann_id in seen:
        raise DataError(f"{path} lists annotation id {ann_id} twice; give each annotation its own id")
    seen.add(ann_id)
    image = images.get(entry.get("image_id")) if _is_int(entry.get("image_id")) else None
    if image is None:
        raise DataError(f"{where} points at image {_show(entry.get('image_id'))}, which the file does not list; {FIX}")
    where = f"{where} (image {image.id})"
    category = entry.get("category_id")
    if not _is_int(category) or category not in contiguous:
        raise DataError(f"{where} has category {_show(category)}, which the file's categories do not list; {FIX}")
    crowd = entry.get("iscrowd", 0)
    if crowd not in (0, 1) or isinstance(crowd, float):
        raise DataError(f"{where} has iscrowd {_show(crowd)}, not 0 or 1; {FIX}")
    polygons, rle = _segmentation(entry.get("segmentation"), image, where)
    return CocoObject(contiguous[category], _box(entry.get("bbox"), image, where), polygons, rle), crowd == 1, ann_id


def _box(bbox, image: CocoImage, where: str) -> tuple:
    """(x1, y1, x2, y2) of a COCO [x, y, width, height], clipped to the image."""
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
        raise DataError(f"{where} has bbox {_show(bbox)}, not 4 finite numbers [x, y, width, height]; {FIX}")
    x, y, w, h = bbox
    if w <= 0 or h <= 0:
        raise DataError(f"{where} has bbox {_show(bbox)} with a width or height that is not positive; {FIX}")
    box = max(x, 0), max(y, 0), min(x + w, image.width), min(y + h, image.height)
    outside = x < -1 or y < -1 or x + w > image.width + 1 or y + h > image.height + 1
    if outside or box[2] <= box[0] or box[3] <= box[1]:
        raise DataError(f"{where} has bbox {_show(bbox)}, outside its {image.width} x {image.height} image "
                        f"({image.file_name}) by more than a pixel; {FIX}")
    return box


def _segmentation(segmentation, image: CocoImage, where: str) -> tuple:
    """(polygons or None, RLE run lengths or None). Polygons of fewer than 3 points cover no pixel and are
    dropped (COCO itself holds a few)."""
    if segmentation is None or segmentation == []:
        return None, None
    if isinstance(segmentation, dict):
        size = segmentation.get("size")
        if size != [image.height, image.width]:
            raise DataError(f"{where} has an RLE segmentation of size {_show(size)}, not its image's "
                            f"[{image.height}, {image.width}]; {FIX}")
        try:
            return None, rle_counts(segmentation.get("counts"), image.height, image.width)
        except ValueError as err:
            raise DataError(f"{where} has a malformed RLE segmentation: {err}; {FIX}") from None
    if not isinstance(segmentation, list) or not all(isinstance(p, list) for p in segmentation):
        raise DataError(f"{where} has segmentation {_show(segmentation)}, neither a list of polygons nor an RLE "
                        f"object; {FIX}")
    for polygon in segmentation:
        if len(polygon) % 2 or not all(_is_number(v) for v in polygon):
            raise DataError(f"{where} has a polygon {_show(polygon)} that is not an even count of finite numbers "
                            f"(x, y pairs); {FIX}")
    polygons = [polygon for polygon in segmentation if len(polygon) >= 6]
    return polygons or None, None

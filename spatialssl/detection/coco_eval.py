"""COCO AP as papers report it (pycocotools' COCOeval, in percent), and torchvision-style detections on
letterboxed canvases turned into COCO results in the original images' pixels."""
from __future__ import annotations

import io
from contextlib import redirect_stdout
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..errors import DataError, first_line, optional_import
from .targets import letterbox_extent

# COCOeval.stats in order: the first six of a bbox evaluation, the first three of a segm one.
KEYS = {"bbox": ("AP", "AP50", "AP75", "APs", "APm", "APl"), "segm": ("mask_AP", "mask_AP50", "mask_AP75")}
MASK_CHUNK = 16  # masks resized back at once: bounds the K x H x W floats in flight


def coco_scores(predictions: list, annotation_file, iou_types=("bbox",)) -> dict:
    """AP, AP50, AP75, APs, APm, APl (bbox) and mask_AP, mask_AP50, mask_AP75 (segm) of ``predictions`` (COCO
    results: image_id, category_id, bbox [x, y, w, h] in original pixels, score, and for segm an RLE
    segmentation) against ``annotation_file``, in percent. No predictions score 0; a score pycocotools cannot
    define (no ground truth of that size) is NaN. pycocotools' printing is captured, not shown."""
    unknown = set(iou_types) - set(KEYS)
    if unknown:
        raise ValueError(f"iou_types {sorted(unknown)} unknown; choose from {', '.join(KEYS)}")
    coco = optional_import("pycocotools.coco", "detection", "COCO evaluation")
    cocoeval = optional_import("pycocotools.cocoeval", "detection", "COCO evaluation")
    path = Path(annotation_file)
    if not path.is_file():
        raise DataError(f"no annotation file {path} to score detections against")
    try:
        with redirect_stdout(io.StringIO()):
            truth = coco.COCO(str(path))
    except Exception as err:  # pycocotools raises what its json and dict look-ups raise
        raise DataError(f"pycocotools cannot read {path}: {first_line(err)}") from None
    _check(predictions, iou_types, set(truth.getImgIds()), path)
    scores = {}
    for iou_type in iou_types:
        if not predictions:
            scores.update(dict.fromkeys(KEYS[iou_type], 0.0))
            continue
        with redirect_stdout(io.StringIO()):
            results = truth.loadRes([dict(p) for p in predictions])  # it adds keys to the dicts it is given
            evaluation = cocoeval.COCOeval(truth, results, iou_type)
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
        for key, value in zip(KEYS[iou_type], evaluation.stats):
            scores[key] = 100 * float(value) if value >= 0 else float("nan")
    return scores


def _check(predictions: list, iou_types, image_ids: set, path: Path) -> None:
    """What pycocotools would meet with an assertion or a KeyError, said in words."""
    if "segm" in iou_types and any("segmentation" not in p for p in predictions):
        raise ValueError("segm scores need a 'segmentation' in every prediction (to_coco_results gives them "
                         "when the detections hold masks)")
    strangers = {p["image_id"] for p in predictions} - image_ids
    if strangers:
        raise ValueError(f"predictions for images {sorted(strangers)[:5]} that {path} does not list")


def to_coco_results(detections: list, image_ids, scales, category_ids: list, masks_threshold: float = 0.5,
                    sizes: Optional[torch.Tensor] = None) -> list:
    """COCO results from torchvision-style ``detections`` (per image: boxes x1, y1, x2, y2 in canvas pixels,
    labels 1..K with 0 the background, scores, optionally masks K x 1 x S x S probabilities), the images'
    COCO ``image_ids``, ``scales`` (canvas pixels per original pixel) and the classes' COCO
    ``category_ids``. ``sizes`` (N x 2 original height, width: DetectionSet.sizes) clips boxes to the
    images and is needed for masks, which are cropped to the image's part of the canvas, resized back and
    thresholded at ``masks_threshold``."""
    results = []
    for i, detection in enumerate(detections):
        scale, image_id = float(scales[i]), int(image_ids[i])
        boxes = detection["boxes"].detach().double().cpu() / scale
        labels, scores = detection["labels"].detach().cpu(), detection["scores"].detach().cpu()
        if len(labels) and (labels.min() < 1 or labels.max() > len(category_ids)):
            raise ValueError(f"labels of image {image_id} run {int(labels.min())}..{int(labels.max())}; "
                             f"expected 1..{len(category_ids)} (0 is the background)")
        segmentations = None
        if "masks" in detection:
            if sizes is None:
                raise ValueError("masks map back to the original images by their sizes: pass sizes "
                                 "(DetectionSet.sizes)")
            height, width = (int(v) for v in sizes[i])
            segmentations = _encode_masks(detection["masks"], height, width, scale, masks_threshold)
        if sizes is not None:
            height, width = (int(v) for v in sizes[i])
            boxes = torch.stack([boxes[:, 0].clamp(0, width), boxes[:, 1].clamp(0, height),
                                 boxes[:, 2].clamp(0, width), boxes[:, 3].clamp(0, height)], dim=1)
        for k, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
            result = {"image_id": image_id, "category_id": category_ids[int(labels[k]) - 1],
                      "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(scores[k])}
            if segmentations is not None:
                result["segmentation"] = segmentations[k]
            results.append(result)
    return results


def _encode_masks(masks: torch.Tensor, height: int, width: int, scale: float, threshold: float) -> list:
    """COCO RLEs (counts as text, so the results can be written as JSON) of K x 1 x S x S probabilities,
    cropped to the letterboxed image and resized back to height x width."""
    mask_utils = optional_import("pycocotools.mask", "detection", "COCO mask results")
    canvas_width, canvas_height = letterbox_extent(width, height, scale)
    encoded = []
    for chunk in masks.detach()[:, :, :canvas_height, :canvas_width].float().split(MASK_CHUNK):
        back = torch.nn.functional.interpolate(chunk, size=(height, width), mode="bilinear", align_corners=False)
        binary = (back[:, 0] > threshold).cpu().numpy().astype(np.uint8)
        for rle in mask_utils.encode(np.asfortranarray(binary.transpose(1, 2, 0))):
            encoded.append({"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")})
    return encoded

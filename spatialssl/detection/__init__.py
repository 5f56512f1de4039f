"""Object detection downstream of pretraining (PART Sec. 4): COCO-style data, a ViTDet simple feature
pyramid or a ResNet FPN under torchvision's Faster / Mask R-CNN heads, COCO AP."""
from __future__ import annotations

from .coco import read_coco
from .coco_eval import coco_scores, to_coco_results
from .generated import write_shapes
from .targets import PADDING, DetectionSet, DetectionTargets, letterbox_extent
from .torchvision_ops import import_torchvision

__all__ = ["PADDING", "DetectionSet", "DetectionTargets", "letterbox_extent", "read_coco", "write_shapes",
           "coco_scores", "to_coco_results", "import_torchvision"]

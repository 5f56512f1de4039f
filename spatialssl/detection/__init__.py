"""Object detection downstream of pretraining (PART Sec. 4): COCO-style data, a ViTDet simple feature
pyramid or a ResNet FPN under torchvision's Faster / Mask R-CNN heads, COCO AP."""
from __future__ import annotations

from .targets import PADDING, DetectionSet, DetectionTargets

__all__ = ["PADDING", "DetectionSet", "DetectionTargets"]

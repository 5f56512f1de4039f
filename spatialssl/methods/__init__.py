"""Methods: each a small composition of sampler + backbone + head + loss."""
from __future__ import annotations

from ..errors import DataError
from ..models import create_backbone
from .base import Method, RandomWeights
from .relational import RelationalReasoning
from .spatial import SpatialReasoning, spatial_targets
from .supervised import Supervised

METHODS = {"rr": RelationalReasoning, "sr": SpatialReasoning, "supervised": Supervised, "random": RandomWeights}


def build_method(cfg, mean, std, num_classes: int = 0) -> Method:
    """The method named by ``cfg.method.name`` with a fresh backbone."""
    cls = METHODS[cfg.method.name]
    if cls.needs_labels and num_classes < 2:
        raise DataError(f"method '{cfg.method.name}' needs labelled data; --data {cfg.data.path} "
                        f"split '{cfg.data.split}' has no labels")
    backbone = create_backbone(cfg.model.backbone, cfg.model.cifar_stem)
    return cls.from_config(cfg, backbone, mean, std, num_classes)


__all__ = ["Method", "RandomWeights", "RelationalReasoning", "SpatialReasoning", "Supervised",
           "spatial_targets", "build_method", "METHODS"]

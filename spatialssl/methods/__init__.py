"""Methods: each a small composition of sampler + backbone + head + loss."""
from __future__ import annotations

from ..checkpoint import load_pretrained
from ..errors import DataError
from ..models import backbone_from_config
from .base import Method, RandomWeights
from .finetune import Finetune
from .part import PART
from .relational import RelationalReasoning
from .spatial import SpatialReasoning, spatial_targets
from .supervised import Supervised

METHODS = {"rr": RelationalReasoning, "sr": SpatialReasoning, "part": PART, "supervised": Supervised,
           "finetune": Finetune, "random": RandomWeights}


def build_method(cfg, mean, std, num_classes: int = 0) -> Method:
    """The method named by ``cfg.method.name`` with a fresh backbone (or, with
    ``model.init_from``, one holding a pretrained checkpoint's weights)."""
    cls = METHODS[cfg.method.name]
    if cls.needs_labels and num_classes < 2:
        raise DataError(f"method '{cfg.method.name}' needs labelled data; --data {cfg.data.path} "
                        f"split '{cfg.data.split}' has no labels")
    backbone = backbone_from_config(cfg.model, num_classes if cls.classifies else 0)
    if cfg.model.init_from:
        load_pretrained(backbone, cfg.model.init_from)
    return cls.from_config(cfg, backbone, mean, std, num_classes)


__all__ = ["Method", "RandomWeights", "RelationalReasoning", "SpatialReasoning", "PART", "Supervised", "Finetune",
           "spatial_targets", "build_method", "METHODS"]

"""Methods: each a small composition of sampler + backbone + head + loss."""
from __future__ import annotations

from .base import Method, RandomWeights
from .finetune import Finetune
from .part import PART
from .relational import RelationalReasoning
from .spatial import SpatialReasoning, spatial_targets
from .supervised import Supervised

METHODS = {"rr": RelationalReasoning, "sr": SpatialReasoning, "part": PART, "supervised": Supervised,
           "finetune": Finetune, "random": RandomWeights}


__all__ = ["Method", "RandomWeights", "RelationalReasoning", "SpatialReasoning", "PART", "Supervised", "Finetune",
           "spatial_targets", "METHODS"]

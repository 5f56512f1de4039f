"""Methods: each a small composition of sampler + backbone + head + loss."""
from __future__ import annotations

from .base import Method, RandomWeights
from .finetune import Finetune
from .part import PART
from .relational import RelationalReasoning
from .spatial import SpatialReasoning, spatial_targets
from .supervised import Supervised

# Baselines and combinations: SimCLR, RotationNet, SR + SimCLR, PART + contrastive.
from .part_contrastive import PARTContrastive
from .rotation import RotationNet
from .simclr import SimCLR
from .sr_simclr import SpatialSimCLR

METHODS = {"rr": RelationalReasoning, "sr": SpatialReasoning, "part": PART, "supervised": Supervised,
           "finetune": Finetune, "random": RandomWeights}
METHODS.update({"simclr": SimCLR, "rotation": RotationNet, "sr_simclr": SpatialSimCLR,
                "part_contrastive": PARTContrastive})


__all__ = ["Method", "RandomWeights", "RelationalReasoning", "SpatialReasoning", "PART", "Supervised", "Finetune",
           "spatial_targets", "METHODS", "SimCLR", "RotationNet", "SpatialSimCLR", "PARTContrastive"]

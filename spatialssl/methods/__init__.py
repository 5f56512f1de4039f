"""Methods: each a small composition of sampler + backbone + head + loss."""
from __future__ import annotations

from .base import Method, RandomWeights
from .deepcluster import DeepCluster
from .detection import Detection
from .droppos import DropPos
from .finetune import Finetune
from .mae import MAE
from .mp3 import MP3
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
           "finetune": Finetune, "random": RandomWeights,
           # baselines: PART's Tables 2 and 6-7, the SR paper's Table 1
           "mae": MAE, "mp3": MP3, "droppos": DropPos, "deepcluster": DeepCluster}
METHODS.update({"simclr": SimCLR, "rotation": RotationNet, "sr_simclr": SpatialSimCLR,
                "part_contrastive": PARTContrastive})
METHODS["detect"] = Detection  # downstream: `spatialssl detect` (PART's COCO experiments)


__all__ = ["Method", "RandomWeights", "RelationalReasoning", "SpatialReasoning", "PART", "Supervised", "Finetune",
           "spatial_targets", "METHODS", "MAE", "MP3", "DropPos", "DeepCluster", "SimCLR", "RotationNet",
           "SpatialSimCLR",
           "PARTContrastive", "Detection"]

"""RotationNet (Gidaris et al. 2018): every image in its four quarter turns; a linear classifier on the
pooled features tells which turn it sees (4-way cross-entropy)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from ..models import embed
from ..samplers.rotations import ROTATIONS, RotationSampler
from .base import Method


class RotationNet(Method):
    def __init__(self, backbone, rotations: RotationSampler, classifier: nn.Linear):
        super().__init__(backbone)
        self.rotations = rotations
        self.classifier = classifier

    @classmethod
    def from_config(cls, cfg, backbone, mean, std, num_classes):
        classifier = nn.Linear(backbone.num_features, ROTATIONS)
        return cls(backbone, RotationSampler(mean, std, cfg.augment.flip_p), classifier)

    def training_step(self, images, labels, generator):
        views, turns = self.rotations(images, generator)
        logits = self.classifier(embed(self.backbone, views))
        return F.cross_entropy(logits, turns), {"rotation_acc": (logits.argmax(1) == turns).float().mean().detach()}

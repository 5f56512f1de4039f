"""The supervised upper bound: one augmented view, a linear classifier, cross-entropy."""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from ..models import embed
from ..samplers import ViewSampler
from .base import Method
from .relational import view_sampler


class Supervised(Method):
    needs_labels = True

    def __init__(self, backbone, views: ViewSampler, classifier: nn.Linear):
        super().__init__(backbone)
        self.views = views
        self.classifier = classifier

    @classmethod
    def from_config(cls, cfg, backbone, mean, std, num_classes):
        return cls(backbone, view_sampler(cfg, mean, std, 1), nn.Linear(backbone.num_features, num_classes))

    def training_step(self, images, labels, generator):
        logits = self.classifier(embed(self.backbone, self.views(images, generator)))
        loss = F.cross_entropy(logits, labels)
        return loss, {"train_acc": (logits.argmax(1) == labels).float().mean().detach()}

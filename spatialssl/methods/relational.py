"""Relational Reasoning (Patacchiola & Storkey 2020): K views per image, a relation head
tells whether two views come from the same image."""
from __future__ import annotations

import torch

from ..losses import FocalBCELoss
from ..models import RelationHead, embed
from ..samplers import ViewSampler, relation_pairs
from .base import Method
from .gather import global_batch


def view_sampler(cfg, mean, std, num_views: int) -> ViewSampler:
    a = cfg.augment
    return ViewSampler(num_views, mean, std, a.scale, a.ratio, a.flip_p, a.jitter, a.jitter_p, a.gray_p)


class RelationalReasoning(Method):
    def __init__(self, backbone, views: ViewSampler, head: RelationHead, loss=None):
        super().__init__(backbone)
        self.views = views
        self.head = head
        self.loss = loss if loss is not None else FocalBCELoss()

    @classmethod
    def from_config(cls, cfg, backbone, mean, std, num_classes):
        m = cfg.method
        loss = FocalBCELoss() if m.focal in (None, True) else torch.nn.BCEWithLogitsLoss()
        return cls(backbone, view_sampler(cfg, mean, std, m.augmentations),
                   RelationHead(backbone.num_features, 1, m.head_hidden), loss)

    def training_step(self, images, labels, generator):
        views = self.views.num_views
        # Pairs over the global batch under torchrun: negatives from every process's images.
        z = global_batch(embed(self.backbone, self.views(images, generator)), views)
        left, right, target = relation_pairs(len(z) // views, views, str(z.device))
        logits = self.head(z[left], z[right]).squeeze(1)
        loss = self.loss(logits, target)
        accuracy = ((logits > 0) == (target > 0.5)).float().mean()
        return loss, {"relation_acc": accuracy.detach()}

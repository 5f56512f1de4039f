"""SimCLR (Chen et al. 2020): two augmented views of every image (RR's augmentations), a projection
MLP, and NT-Xent, in which every other view of the global batch is a negative."""
from __future__ import annotations

import torch
from torch import nn

from ..losses import NTXentLoss
from ..models import ProjectionHead, embed
from ..samplers import ViewSampler
from .base import Method
from .gather import global_batch
from .relational import view_sampler

VIEWS = 2


def check_weights(**weights: float) -> None:
    """The weights of a combined method's loss terms: each >= 0 (0 turns its term off)."""
    for name, value in weights.items():
        if not value >= 0:
            raise ValueError(f"{name} must be >= 0, got {value}")


class ContrastiveTerm(nn.Module):
    """SimCLR's objective on pooled features of two views (view-major, 2B x D): the projection MLP, then
    NT-Xent. Give it the global batch's features (``global_batch``): the projection's BatchNorm then sees
    every view and the negatives span every process, as RR's relation head on gathered features."""

    def __init__(self, projection: ProjectionHead, loss: NTXentLoss):
        super().__init__()
        self.projection = projection
        self.loss = loss

    @classmethod
    def from_config(cls, cfg, feature_dim: int) -> "ContrastiveTerm":
        return cls(ProjectionHead(feature_dim, cfg.method.head_hidden, cfg.simclr.projection_dim),
                   NTXentLoss(cfg.simclr.temperature))

    def forward(self, features: torch.Tensor) -> tuple:
        return self.loss(self.projection(features))


class SimCLR(Method):
    def __init__(self, backbone, views: ViewSampler, contrastive: ContrastiveTerm):
        super().__init__(backbone)
        if views.num_views != VIEWS:
            raise ValueError(f"views must draw {VIEWS} views per image, got {views.num_views}")
        self.views = views
        self.contrastive = contrastive

    @classmethod
    def from_config(cls, cfg, backbone, mean, std, num_classes):
        contrastive = ContrastiveTerm.from_config(cfg, backbone.num_features)
        return cls(backbone, view_sampler(cfg, mean, std, VIEWS), contrastive)

    def training_step(self, images, labels, generator):
        return self.contrastive(global_batch(embed(self.backbone, self.views(images, generator)), VIEWS))

"""Heads that sit on a backbone's pooled features."""
from __future__ import annotations

import torch
from torch import nn


class RelationHead(nn.Module):
    """Relational Reasoning's relation module on concatenated pairs:
    Linear(2D -> hidden) - BatchNorm1d - LeakyReLU - Linear(hidden -> outputs).
    ``outputs=1`` for RR (same/different logit), 3 for Spatial Reasoning (logit, dx, dy)."""

    def __init__(self, feature_dim: int, outputs: int = 1, hidden: int = 256):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2 * feature_dim, hidden), nn.BatchNorm1d(hidden),
                                 nn.LeakyReLU(), nn.Linear(hidden, outputs))

    def forward(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([left, right], dim=1))


class ProjectionHead(nn.Module):
    """SimCLR's projection MLP g(.) between the pooled features and the contrastive loss (Chen et al.
    2020): Linear(D -> hidden) - BatchNorm1d - ReLU - Linear(hidden -> outputs); 128 outputs as published.
    The loss sees its outputs; evaluation keeps the features before it."""

    def __init__(self, feature_dim: int, hidden: int = 256, outputs: int = 128):
        super().__init__()
        for name, value in (("feature_dim", feature_dim), ("hidden", hidden), ("outputs", outputs)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.net = nn.Sequential(nn.Linear(feature_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                                 nn.Linear(hidden, outputs))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)

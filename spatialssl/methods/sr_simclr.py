"""Spatial Reasoning as an auxiliary task of SimCLR (the SR paper's future work, Sec. 5): SimCLR's NT-Xent
on two views of every image plus SR's patch-pair position regression on N patches of it, one backbone
and one forward pass for views and patches. Loss: ``combined.contrastive_weight`` * NT-Xent +
``combined.spatial_weight`` * (MSE_x + MSE_y) of the patch displacements."""
from __future__ import annotations

from ..losses import axis_mse
from ..models import RelationHead
from ..samplers import PatchSampler, ViewSampler, patch_pairs
from .base import Method
from .relational import view_sampler
from .simclr import VIEWS, ContrastiveTerm, check_weights
from .spatial import embed_views_and_patches, patch_sampler


class SpatialSimCLR(Method):
    def __init__(self, backbone, views: ViewSampler, patches: PatchSampler, contrastive: ContrastiveTerm,
                 position_head: RelationHead, contrastive_weight: float = 1.0, spatial_weight: float = 1.0):
        super().__init__(backbone)
        check_weights(contrastive_weight=contrastive_weight, spatial_weight=spatial_weight)
        self.views, self.patches = views, patches
        self.contrastive = contrastive
        self.position_head = position_head  # SR's relation head on patch pairs, regressing (dx, dy) alone
        self.contrastive_weight, self.spatial_weight = contrastive_weight, spatial_weight

    @classmethod
    def from_config(cls, cfg, backbone, mean, std, num_classes):
        features, c = backbone.num_features, cfg.combined
        return cls(backbone, view_sampler(cfg, mean, std, VIEWS), patch_sampler(cfg, mean, std),
                   ContrastiveTerm.from_config(cfg, features), RelationHead(features, 2, cfg.method.head_hidden),
                   c.contrastive_weight, c.spatial_weight)

    def training_step(self, images, labels, generator):
        z_views, z_patches, centres = embed_views_and_patches(self.backbone, self.views, self.patches, images,
                                                              generator)
        nt_xent, metrics = self.contrastive(z_views)
        left, right = patch_pairs(len(z_views) // VIEWS, self.patches.num_patches, str(z_views.device))
        displacement = self.position_head(z_patches[left], z_patches[right])
        truth = centres[left] - centres[right]
        mse_x, mse_y = axis_mse(displacement, truth)
        loss = self.contrastive_weight * nt_xent + self.spatial_weight * (mse_x + mse_y)
        position_error = (displacement - truth).norm(dim=1).mean()
        return loss, {"nt_xent": nt_xent.detach(), **metrics, "mse_x": mse_x.detach(), "mse_y": mse_y.detach(),
                      "position_error": position_error.detach()}

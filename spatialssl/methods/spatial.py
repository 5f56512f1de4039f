"""Spatial Reasoning (Albert et al. 2024): Relational Reasoning plus N patches per image
whose pairwise displacement the relation head regresses (plain or additive-patch-use)."""
from __future__ import annotations

import torch

from ..losses import SpatialRelationLoss
from ..models import RelationHead, embed
from ..samplers import PatchSampler, ViewSampler, patch_pairs, relation_pairs
from .base import Method
from .gather import global_batch
from .relational import view_sampler


def spatial_targets(image_target: torch.Tensor, centres: torch.Tensor, left: torch.Tensor,
                    right: torch.Tensor) -> torch.Tensor:
    """Targets (same-image, x, y) for image pairs then patch pairs (P x 3).

    Image pairs: pseudo targets 0 (same image) or 1 (different) on both position outputs.
    Patch pairs: always "same image", and the displacement p_left - p_right in (x, y).
    ``centres`` is the N*B x 2 table of normalised patch centres."""
    pseudo = (1 - image_target)[:, None].expand(-1, 2)
    images = torch.cat([image_target[:, None], pseudo], dim=1)
    displacement = centres[left] - centres[right]
    patches = torch.cat([torch.ones_like(displacement[:, :1]), displacement], dim=1)
    return torch.cat([images, patches])


def patch_sampler(cfg, mean, std) -> PatchSampler:
    m, a = cfg.method, cfg.augment
    return PatchSampler(m.num_patches, m.patch_size, mean, std, m.additive, m.non_overlapping, a.jitter, a.jitter_p,
                        a.gray_p, m.additive_placement)


def embed_views_and_patches(backbone, views: ViewSampler, patches: PatchSampler, images: torch.Tensor,
                            generator: torch.Generator) -> tuple:
    """(view features K*B x D, patch features N*B x D, patch centres N*B x 2), block-major; under torchrun,
    those of the global batch. One forward pass for views and patches, as the published code (shared
    BatchNorm statistics)."""
    num_views, num_patches = views.num_views, patches.num_patches
    drawn_views = views(images, generator)
    drawn_patches, centres = patches(images, generator)
    z = global_batch(embed(backbone, torch.cat([drawn_views, drawn_patches])), num_views + num_patches)
    centres = global_batch(centres.reshape(-1, 2), num_patches)
    split = num_views * (len(z) // (num_views + num_patches))
    return z[:split], z[split:], centres


class SpatialReasoning(Method):
    def __init__(self, backbone, views: ViewSampler, patches: PatchSampler, head: RelationHead, loss=None):
        super().__init__(backbone)
        self.views = views
        self.patches = patches
        self.head = head
        self.loss = loss if loss is not None else SpatialRelationLoss()

    @classmethod
    def from_config(cls, cfg, backbone, mean, std, num_classes):
        m = cfg.method
        return cls(backbone, view_sampler(cfg, mean, std, m.augmentations), patch_sampler(cfg, mean, std),
                   RelationHead(backbone.num_features, 3, m.head_hidden),
                   SpatialRelationLoss(bool(m.focal), m.position_weight))

    def training_step(self, images, labels, generator):
        z_views, z_patches, centres = embed_views_and_patches(self.backbone, self.views, self.patches, images,
                                                              generator)
        num_views, num_patches = self.views.num_views, self.patches.num_patches
        batch, device = len(z_views) // num_views, str(z_views.device)
        image_left, image_right, image_target = relation_pairs(batch, num_views, device)
        patch_left, patch_right = patch_pairs(batch, num_patches, device)
        outputs = self.head(torch.cat([z_views[image_left], z_patches[patch_left]]),
                            torch.cat([z_views[image_right], z_patches[patch_right]]))
        targets = spatial_targets(image_target, centres, patch_left, patch_right)
        loss, parts = self.loss(outputs, targets)
        images_count = len(image_target)
        relation_acc = ((outputs[:images_count, 0] > 0) == (image_target > 0.5)).float().mean()
        position_error = (outputs[images_count:, 1:] - targets[images_count:, 1:]).norm(dim=1).mean()
        return loss, {**parts, "relation_acc": relation_acc.detach(), "position_error": position_error.detach()}

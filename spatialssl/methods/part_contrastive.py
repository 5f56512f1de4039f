"""PART with a contrastive term (the PART paper's future work, Sec. 6: off-grid relative positions for local
structure, contrastive views for global invariance): PART's relative-translation loss on its off-grid
patches, plus SimCLR's NT-Xent between two augmented views (RR's augmentations) of every image, each
view's on-grid patch tokens mean-pooled (the features evaluation uses) and projected by an MLP.
Loss: ``combined.spatial_weight`` * PART's MSE + ``combined.contrastive_weight`` * NT-Xent."""
from __future__ import annotations

from ..models import embed
from ..samplers import ViewSampler
from .gather import global_batch
from .part import PART
from .relational import view_sampler
from .simclr import VIEWS, ContrastiveTerm, check_weights


class PARTContrastive(PART):
    def __init__(self, backbone, views: ViewSampler, contrastive: ContrastiveTerm, contrastive_weight: float = 1.0,
                 spatial_weight: float = 1.0, **part_options):
        super().__init__(backbone, **part_options)
        check_weights(contrastive_weight=contrastive_weight, spatial_weight=spatial_weight)
        self.views = views
        self.contrastive = contrastive
        self.contrastive_weight, self.spatial_weight = contrastive_weight, spatial_weight

    @classmethod
    def from_config(cls, cfg, backbone, mean, std, num_classes):
        c = cfg.combined
        contrastive = ContrastiveTerm.from_config(cfg, backbone.num_features)
        return cls(backbone, view_sampler(cfg, mean, std, VIEWS), contrastive, c.contrastive_weight, c.spatial_weight,
                   **cls.options_from(cfg, backbone, mean, std))

    def training_step(self, images, labels, generator):
        relative, parts = super().training_step(images, labels, generator)
        # Each view cut on the grid (no position embedding in PART) and mean-pooled: the evaluated features.
        pooled = embed(self.backbone, self.views(images, generator))
        nt_xent, metrics = self.contrastive(global_batch(pooled, VIEWS))
        loss = self.spatial_weight * relative + self.contrastive_weight * nt_xent
        return loss, {"relative_mse": relative.detach(), **parts, "nt_xent": nt_xent.detach(), **metrics}

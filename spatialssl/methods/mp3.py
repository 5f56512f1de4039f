"""MP3 (Zhai et al. 2022, "Position prediction as an effective pretraining strategy"): a ViT without
position embedding sees an image's on-grid tokens, attends only to a random share of them (the masked
tokens' keys and values are left out) and classifies every token's absolute grid position. PART's
on-grid, absolute-target sibling."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..samplers import ViewSampler
from ..samplers.masking import random_masking
from .base import Method
from .relational import view_sampler


def grid_positions(batch: int, num_tokens: int, device) -> torch.Tensor:
    """Each token's target: its index in the grid's raster order (the order the ViT tiles an image in), B x N."""
    return torch.arange(num_tokens, device=device).expand(batch, -1)


class MP3(Method):
    def __init__(self, backbone, views: ViewSampler, num_tokens: int, mask_ratio: float = 0.75):
        super().__init__(backbone)
        self.views = views
        self.mask_ratio = mask_ratio
        self.head = nn.Linear(backbone.num_features, num_tokens)  # one class per grid position, on each token

    @classmethod
    def from_config(cls, cfg, backbone, mean, std, num_classes):
        height, width = cfg.model.input_size
        tokens = (height // backbone.patch_size) * (width // backbone.patch_size)
        return cls(backbone, view_sampler(cfg, mean, std, 1), tokens, cfg.mp3.mask_ratio)

    def training_step(self, images, labels, generator):
        x = self.views(images, generator)
        tokens = self.backbone.embed_patches(x)
        batch, num = tokens.shape[:2]
        context = None  # every token attends to every token
        if self.mask_ratio > 0:
            context = ~random_masking(batch, num, self.mask_ratio, generator, x.device)[1]
        encoded = self.backbone.encode(tokens, context)[:, self.backbone.num_prefix_tokens:]
        logits = self.head(encoded)
        targets = grid_positions(batch, num, x.device)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return loss, {"position_acc": (logits.argmax(-1) == targets).float().mean().detach()}

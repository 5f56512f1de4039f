"""MAE (He et al. 2022), the grid-based baseline of PART's Tables 6-7: 75% of a ViT's tokens masked per
image, the encoder (with a position embedding) on the visible ones alone, a light decoder regressing
the pixels of the masked patches."""
from __future__ import annotations

import torch

from ..losses import MaskedPixelLoss
from ..models.decoder import MaskedDecoder
from ..models.vit import sincos_position_embedding
from ..samplers import ViewSampler
from ..samplers.masking import random_masking
from .base import Method
from .relational import view_sampler


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """B x C x H x W -> B x N x (P * P * C): each patch's pixels (row, column, channel), the patches in the
    raster order of the ViT's tokens."""
    batch, channels, height, width = images.shape
    rows, cols = height // patch_size, width // patch_size
    x = images.reshape(batch, channels, rows, patch_size, cols, patch_size)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(batch, rows * cols, patch_size * patch_size * channels)


def fix_position_embedding(backbone, grid) -> None:
    """MAE's encoder position embedding: the 2-D sine-cosine one, frozen ([CLS]'s slot zero). Finetuning
    loads it into a learnable embedding, as MAE's does."""
    if backbone.pos_embed is None:
        raise ValueError("MAE's encoder adds a position embedding: build the backbone with pos_embed=True")
    with torch.no_grad():
        backbone.pos_embed.zero_()
        backbone.pos_embed[0, backbone.num_prefix_tokens:] = sincos_position_embedding(backbone.embed_dim, *grid)
    backbone.pos_embed.requires_grad_(False)


class MAE(Method):
    def __init__(self, backbone, views: ViewSampler, decoder: MaskedDecoder, mask_ratio: float = 0.75,
                 loss=None):
        super().__init__(backbone)
        self.views = views
        self.decoder = decoder
        self.mask_ratio = mask_ratio
        self.loss = loss if loss is not None else MaskedPixelLoss()

    @classmethod
    def from_config(cls, cfg, backbone, mean, std, num_classes):
        o, patch = cfg.mae, backbone.patch_size
        grid = [side // patch for side in cfg.model.input_size]
        fix_position_embedding(backbone, grid)
        decoder = MaskedDecoder(backbone.num_features, grid, patch * patch * backbone.patch_embed.proj.in_channels,
                                o.decoder_dim, o.decoder_depth, o.decoder_heads, backbone.num_prefix_tokens)
        return cls(backbone, view_sampler(cfg, mean, std, 1), decoder, o.mask_ratio, MaskedPixelLoss(o.norm_pix_loss))

    def training_step(self, images, labels, generator):
        x = self.views(images, generator)  # the normalised view is both the input and the target, as MAE's
        tokens = self.backbone.embed_patches(x)
        visible, masked = random_masking(len(x), tokens.shape[1], self.mask_ratio, generator, x.device)
        kept = tokens.gather(1, visible[..., None].expand(-1, -1, tokens.shape[-1]))
        predicted = self.decoder(self.backbone.encode(kept), visible)
        return self.loss(predicted, patchify(x, self.backbone.patch_size), masked)

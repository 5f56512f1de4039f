"""1-D Vision Transformer for multichannel signals, built from the image ViT's blocks.

Tokens are windows of ``patch_size`` samples of all channels, embedded by a linear
tokeniser (a strided Conv1d). Like the image ViT it takes either whole epochs (B x C x T,
cut on the grid) or windows cut anywhere (B x N x C x W)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .vit import SIZES, VisionTransformer


class PatchEmbed1D(nn.Module):
    def __init__(self, patch_size: int, in_chans: int, dim: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv1d(in_chans, dim, patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Epochs B x C x T or windows B x N x C x W -> B x N x D."""
        if x.dim() == 4:
            batch, tokens = x.shape[:2]
            if x.shape[-1] != self.patch_size:
                raise ValueError(f"windows must be {self.patch_size} samples long, got {x.shape[-1]}")
            return self.proj(x.flatten(0, 1)).view(batch, tokens, -1)
        if x.shape[-1] % self.patch_size:
            raise ValueError(f"signal length {x.shape[-1]} is not a multiple of the window size {self.patch_size}")
        return self.proj(x).transpose(1, 2)


class VisionTransformer1D(VisionTransformer):
    """The image ViT with a 1-D tokeniser; its position embedding is resampled to sequences
    of another length (windows of PART 1-D, 20% of whose embeddings may be dropped through
    ``drop_position``)."""

    embed_layer = PatchEmbed1D

    def __init__(self, in_chans: int = 1, **kwargs):
        super().__init__(in_chans=in_chans, **kwargs)

    def position_embedding(self, tokens: int) -> torch.Tensor:
        """Linearly resampled when the sequence has another length than the model was built
        for (as timm resamples image position embeddings)."""
        position = self.pos_embed[:, self.num_prefix_tokens:]
        if tokens == position.shape[1]:
            return position
        return F.interpolate(position.transpose(1, 2), size=tokens, mode="linear", align_corners=False).transpose(1, 2)


def vision_transformer_1d(size: str, depth=None, **kwargs) -> VisionTransformer1D:
    width, blocks, heads = SIZES[size]
    return VisionTransformer1D(embed_dim=width, depth=depth or blocks, num_heads=heads, **kwargs)

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
    """The image ViT with a 1-D tokeniser. ``forward_features`` may drop the position
    embedding of chosen tokens (PART 1-D masks 20% of them) and resamples it to sequences
    of another length."""

    def __init__(self, in_chans: int = 1, **kwargs):
        super().__init__(in_chans=in_chans, **kwargs)
        self.patch_embed = PatchEmbed1D(self.patch_size, in_chans, self.embed_dim)
        self.reset_parameters()

    def position_embedding(self, tokens: int) -> torch.Tensor:
        """The position embedding of the sequence tokens, linearly resampled when the
        sequence has another length than the model was built for (as timm resamples
        image position embeddings)."""
        position = self.pos_embed[:, self.num_prefix_tokens:]
        if tokens == position.shape[1]:
            return position
        return F.interpolate(position.transpose(1, 2), size=tokens, mode="linear", align_corners=False).transpose(1, 2)

    def forward_features(self, x: torch.Tensor, drop_position=None) -> torch.Tensor:
        """``drop_position``: B x N bool, tokens whose position embedding is left out."""
        x = self.patch_embed(x)
        if self.pos_embed is not None:
            position = self.position_embedding(x.shape[1])
            x = x + (position if drop_position is None else position * (~drop_position)[..., None])
        if self.cls_token is not None:
            cls = self.cls_token if self.pos_embed is None else self.cls_token + self.pos_embed[:, :1]
            x = torch.cat([cls.expand(len(x), -1, -1), x], dim=1)
        return self.norm(self.blocks(x))

    def patch_tokens(self, x: torch.Tensor, drop_position=None) -> torch.Tensor:
        return self.forward_features(x, drop_position)[:, self.num_prefix_tokens:]


def vision_transformer_1d(size: str, depth=None, **kwargs) -> VisionTransformer1D:
    width, blocks, heads = SIZES[size]
    return VisionTransformer1D(embed_dim=width, depth=depth or blocks, num_heads=heads, **kwargs)

"""MAE's light decoder (He et al. 2022): the encoded visible tokens, a shared mask token at every masked
place, a fixed 2-D sine-cosine position embedding, a few transformer blocks and a linear map to each
patch's pixels. Used in pretraining only; the encoder is what is kept."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .vit import Block, sincos_position_embedding


class MaskedDecoder(nn.Module):
    """``forward(latent, visible)``: the encoder's output B x (prefix + K) x D for the K ``visible`` token
    indices (B x K) of a ``grid`` of rows x cols tokens -> B x N x ``patch_pixels`` predictions, raster order."""

    def __init__(self, encoder_dim: int, grid: Sequence[int], patch_pixels: int, dim: int = 128, depth: int = 2,
                 num_heads: int = 4, prefix_tokens: int = 0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"num_heads {num_heads} must divide dim {dim}")
        self.prefix_tokens = prefix_tokens
        self.embed = nn.Linear(encoder_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        # Fixed, as MAE's (a frozen parameter there): rebuilt from the grid, so not saved.
        self.register_buffer("pos_embed", sincos_position_embedding(dim, *grid)[None], persistent=False)
        self.blocks = nn.ModuleList([Block(dim, num_heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pred = nn.Linear(dim, patch_pixels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """MAE's initialisation: Xavier-uniform linear weights, zero biases, the mask token N(0, 0.02)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, latent: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        x = self.embed(latent)
        prefix, tokens = x[:, :self.prefix_tokens], x[:, self.prefix_tokens:]
        batch, num, dim = len(x), self.pos_embed.shape[1], x.shape[-1]
        full = self.mask_token.expand(batch, num, dim).scatter(1, visible[..., None].expand(-1, -1, dim), tokens)
        x = torch.cat([prefix, full + self.pos_embed], dim=1)  # [CLS]'s decoder position is zero, as MAE's
        for block in self.blocks:
            x = block(x)
        return self.pred(self.norm(x))[:, self.prefix_tokens:]


class PositionDecoder(nn.Module):
    """DropPos's decoder (Wang et al. 2023): a few transformer blocks over the encoded visible tokens alone,
    with no position embedding (it would give the answer away), and a linear map of each token to the
    ``num_positions`` grid positions it may have come from. ``forward(latent)``: B x T x D -> B x T x positions."""

    def __init__(self, encoder_dim: int, num_positions: int, dim: int = 128, depth: int = 2, num_heads: int = 4):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"num_heads {num_heads} must divide dim {dim}")
        self.embed = nn.Linear(encoder_dim, dim)
        self.blocks = nn.ModuleList([Block(dim, num_heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pred = nn.Linear(dim, num_positions)
        for module in self.modules():  # DropPos's (MAE's) initialisation
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        x = self.embed(latent)
        for block in self.blocks:
            x = block(x)
        return self.pred(self.norm(x))

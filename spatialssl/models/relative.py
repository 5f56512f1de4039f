"""PART's relative encoders: from patch embeddings to the translation of chosen patch pairs.

Each takes ``tokens`` (B x N x D) and ``pairs`` (B x M x 2: reference index, target index)
and returns B x M x C (C = 2 for dx, dy; 4 with dw, dh). Usable in any loop.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def gather_pairs(tokens: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """cat(z_ref, z_tgt) per pair: B x M x 2D."""
    index = pairs.flatten(1)[..., None].expand(-1, -1, tokens.shape[-1])
    chosen = tokens.gather(1, index).view(*pairs.shape[:2], 2 * tokens.shape[-1])
    return chosen


class CrossAttentionEncoder(nn.Module):
    """The paper's encoder (Sec. 3.3) as the official code builds it: query =
    Linear(2D -> D)(cat(z_i, z_j)); one ``nn.MultiheadAttention`` (1 head by default) with keys
    and values = all patch embeddings of the same image; Linear(D -> C). No norms, no residual."""

    def __init__(self, dim: int, outputs: int = 2, num_heads: int = 1):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"num_heads {num_heads} must divide the embedding width {dim}")
        self.query = nn.Linear(2 * dim, dim)
        self.attention = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.out = nn.Linear(dim, outputs)

    def forward(self, tokens: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        query = self.query(gather_pairs(tokens, pairs))
        attended, _ = self.attention(query, tokens, tokens, need_weights=False)
        return self.out(attended)


class CrossAttentionBlockEncoder(nn.Module):
    """A variant of the paper's encoder shaped as a transformer block: pre-norm on the query
    and on the keys/values, the backbone's head count, a residual on the query and a final norm."""

    def __init__(self, dim: int, outputs: int = 2, num_heads: int = 3):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"num_heads {num_heads} must divide the embedding width {dim}")
        self.num_heads = num_heads
        self.query = nn.Linear(2 * dim, dim)
        self.norm_q = nn.LayerNorm(dim, eps=1e-6)
        self.norm_kv = nn.LayerNorm(dim, eps=1e-6)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm_out = nn.LayerNorm(dim, eps=1e-6)
        self.out = nn.Linear(dim, outputs)

    def forward(self, tokens: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        batch, num, dim = tokens.shape
        heads, head_dim = self.num_heads, dim // self.num_heads
        query = self.query(gather_pairs(tokens, pairs))
        q = self.q(self.norm_q(query)).view(batch, -1, heads, head_dim).transpose(1, 2)
        k, v = self.kv(self.norm_kv(tokens)).view(batch, num, 2, heads, head_dim).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, -1, dim)
        return self.out(self.norm_out(query + self.proj(attended)))


class PairwiseMLPEncoder(nn.Module):
    """The ablation's pairwise MLP: Linear(2D -> C) on the two embeddings alone (weights
    shared across pairs; it sees no other patch)."""

    def __init__(self, dim: int, outputs: int = 2):
        super().__init__()
        self.out = nn.Linear(2 * dim, outputs)

    def forward(self, tokens: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        return self.out(gather_pairs(tokens, pairs))


class FullMLPEncoder(nn.Module):
    """The ablation's full MLP: all N embeddings concatenated predict all N x N translations,
    of which the chosen pairs are read. ``hidden=0`` is the paper's single linear map
    (N * D * N^2 * C weights: 100M for ViT-tiny at 64 tokens); a bottleneck keeps it trainable."""

    def __init__(self, dim: int, num_tokens: int, outputs: int = 2, hidden: int = 512):
        super().__init__()
        self.num_tokens, self.outputs = num_tokens, outputs
        size_in, size_out = num_tokens * dim, num_tokens * num_tokens * outputs
        self.net = (nn.Sequential(nn.Linear(size_in, hidden), nn.GELU(), nn.Linear(hidden, size_out)) if hidden
                    else nn.Linear(size_in, size_out))

    def forward(self, tokens: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        batch, num, _ = tokens.shape
        if num != self.num_tokens:
            raise ValueError(f"the full-MLP encoder was built for {self.num_tokens} tokens, got {num}")
        table = self.net(tokens.flatten(1)).view(batch, num * num, self.outputs)
        flat = pairs[..., 0] * num + pairs[..., 1]
        return table.gather(1, flat[..., None].expand(-1, -1, self.outputs))


# name -> factory(dim, outputs, num_heads, num_tokens, mlp_hidden): each takes what it uses
ENCODERS: dict = {
    "cross_attention": lambda dim, outputs, num_heads, **_: CrossAttentionEncoder(dim, outputs, num_heads),
    "cross_attention_block": lambda dim, outputs, num_heads, **_: CrossAttentionBlockEncoder(dim, outputs, num_heads),
    "pairwise_mlp": lambda dim, outputs, **_: PairwiseMLPEncoder(dim, outputs),
    "mlp": lambda dim, outputs, num_tokens, mlp_hidden, **_: FullMLPEncoder(dim, num_tokens, outputs, mlp_hidden),
}


def build_encoder(name: str, dim: int, outputs: int, num_heads: int, num_tokens: int, mlp_hidden: int) -> nn.Module:
    """``num_heads``: the cross-attention encoders' head count; ``num_tokens``, ``mlp_hidden``: the full MLP's."""
    if name not in ENCODERS:
        raise ValueError(f"relative encoder '{name}' is unknown; choose one of {', '.join(ENCODERS)}")
    return ENCODERS[name](dim=dim, outputs=outputs, num_heads=num_heads, num_tokens=num_tokens, mlp_hidden=mlp_hidden)

"""MViTv2's decomposed relative position bias, as ViTDet adds it to a plain ViT's attention (``use_rel_pos``):
per block, a learned vector per row offset and per column offset within its attention's square extent (a
window, or the whole map in a global block); query i's logit for key j gains q_i . R_rows[row_i - row_j] +
q_i . R_cols[col_i - col_j]. Zero at the start, as ViTDet's: the pretrained attention as it was."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RelativePositions(nn.Module):
    def __init__(self, head_dim: int, side: int):
        super().__init__()
        self.rows = nn.Parameter(torch.zeros(2 * side - 1, head_dim))
        self.cols = nn.Parameter(torch.zeros(2 * side - 1, head_dim))

    def forward(self, q: torch.Tensor, side: int) -> torch.Tensor:
        """The bias (B x heads x T x T, T = side^2) for queries ``q`` (B x heads x T x head_dim) of a side x side
        extent in row-major order; the tables resized linearly for another side (detectron2's get_rel_pos)."""
        batch, heads, tokens, dim = q.shape
        position = torch.arange(side, device=q.device)
        offsets = position[:, None] - position[None, :] + side - 1  # side x side: index of row_i - row_j
        grid = q.view(batch, heads, side, side, dim)
        by_row = torch.einsum("bnhwc,hkc->bnhwk", grid, _sized(self.rows, side)[offsets])
        by_col = torch.einsum("bnhwc,wkc->bnhwk", grid, _sized(self.cols, side)[offsets])
        return (by_row[..., :, None] + by_col[..., None, :]).reshape(batch, heads, tokens, tokens)


def _sized(table: torch.Tensor, side: int) -> torch.Tensor:
    if len(table) == 2 * side - 1:
        return table
    return F.interpolate(table.T[None], size=2 * side - 1, mode="linear")[0].T


def attention(attn: nn.Module, x: torch.Tensor, positions: RelativePositions, side: int) -> torch.Tensor:
    """Our ViT block's attention (``attn``: qkv, proj, num_heads) over side x side tokens ``x`` with the bias of
    ``positions`` added to its logits."""
    batch, tokens, dim = x.shape
    q, k, v = attn.qkv(x).view(batch, tokens, 3, attn.num_heads, dim // attn.num_heads).permute(2, 0, 3, 1, 4)
    x = F.scaled_dot_product_attention(q, k, v, attn_mask=positions(q, side).to(q.dtype))
    return attn.proj(x.transpose(1, 2).reshape(batch, tokens, dim))

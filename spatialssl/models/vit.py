"""Vision Transformer with timm's keys and manners, position embedding optional.

PART pretrains it with no position embedding and no class token on patches cut anywhere in
the image; finetuning adds both. The state dict matches ``timm``'s ``VisionTransformer``
built with the same options (see ``timm_kwargs``), so weights load there unchanged.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.utils.checkpoint
import torch.nn.functional as F
from torch import nn

SIZES = {"tiny": (192, 12, 3), "small": (384, 12, 6), "base": (768, 12, 12)}  # width, depth, heads
POOLS = ("avg", "token")  # mean of the patch tokens | the [CLS] token


def sincos_position_embedding(dim: int, rows: int, cols: int, device=None) -> torch.Tensor:
    """MAE's fixed 2-D sine-cosine position embedding of a rows x cols grid, (rows * cols) x dim in raster
    order: the first half of the channels encodes the column, the second the row, each as the sines then
    the cosines of the coordinate times dim / 4 frequencies 1 / 10000^(i / (dim / 4))."""
    if dim % 4:
        raise ValueError(f"dim must be a multiple of 4 (sines and cosines of two coordinates), got {dim}")
    frequencies = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64, device=device) / (dim / 4))
    ys, xs = torch.meshgrid(torch.arange(rows, dtype=torch.float64, device=device),
                            torch.arange(cols, dtype=torch.float64, device=device), indexing="ij")
    angles = [coordinate.flatten()[:, None] * frequencies for coordinate in (xs, ys)]
    return torch.cat([part for angle in angles for part in (angle.sin(), angle.cos())], dim=1).float()


def resize_position_embedding(position: torch.Tensor, prefix: int, new_prefix: int, new_tokens: int):
    """A learned 1 x (prefix + N) x D position embedding of a square grid resampled (bicubic, as timm's
    ``resample_abs_pos_embed``) to ``new_tokens`` patches of a square grid behind ``new_prefix`` slots: a
    [CLS] slot is kept when both have one, zeros when only the new one does. None when either grid is not
    square (its shape is then unknown)."""
    side, new_side = math.isqrt(position.shape[1] - prefix), math.isqrt(new_tokens)
    if side * side != position.shape[1] - prefix or new_side * new_side != new_tokens:
        return None
    grid = position[:, prefix:].reshape(1, side, side, -1).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=(new_side, new_side), mode="bicubic", align_corners=False, antialias=True)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_tokens, -1).to(position.dtype)
    head = position[:, :new_prefix] if prefix >= new_prefix else position.new_zeros(1, new_prefix, position.shape[2])
    return torch.cat([head, grid], dim=1)


class DropPath(nn.Module):
    """Stochastic depth per sample: drop a residual branch, rescale the survivors. Masks come from ``seed`` when
    one is set (``use_seed``): a one-element int64 tensor on the device that the training loop redraws from its
    generator (seeded per epoch and process) before every forward pass, hashed with this layer's ``salt`` and each
    sample's index. No generator object reaches the graph, so compiled code has no break; the masks are a function
    of the seed, so a checkpointed block's recomputation draws the same ones and resuming is exact. Else the masks
    come from torch's global generator."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p
        self.seed: Optional[torch.Tensor] = None
        self.salt = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        shape = (x.shape[0], *([1] * (x.dim() - 1)))
        if self.seed is None:
            keep = x.new_empty(shape).bernoulli_(1 - self.p)
        else:
            keep = (hashed_uniform(self.seed, self.salt, x.shape[0]) >= self.p).to(x.dtype).view(shape)
        return x * keep / (1 - self.p)


MASK32 = 0xFFFFFFFF
MIX = (0x2545F491, 0x68E31DA5, 0x3C6EF373, 0x7FEB352D, 0x6A09E667)  # odd, below 2**31: no product overflows int64


def hashed_uniform(seed: torch.Tensor, salt: int, count: int) -> torch.Tensor:
    """``count`` uniforms in [0, 1) on ``seed``'s device from a counter-based hash of (seed, salt, index), each
    a function of those alone: integer tensor operations that compile into the graph (a multiply-xorshift
    finaliser in 32 bits, every product below 2**63)."""
    index = torch.arange(count, device=seed.device)
    h = ((seed * MIX[0]) & MASK32) + ((salt * MIX[1]) & MASK32) + ((index * MIX[2]) & MASK32)
    h = h & MASK32
    h = ((h ^ (h >> 16)) * MIX[3]) & MASK32
    h = ((h ^ (h >> 15)) * MIX[4]) & MASK32
    h = h ^ (h >> 16)
    return (h >> 8).to(torch.float32) / float(1 << 24)


def checkpointed(block: nn.Module, *inputs):
    """``block(*inputs)`` under ``torch.utils.checkpoint``: its recomputation draws the drop-path masks the
    forward pass drew (they are the seed's, or the global generator's, whose state checkpoint keeps)."""
    return torch.utils.checkpoint.checkpoint(block, *inputs, use_reentrant=False)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, attn_mask=None) -> torch.Tensor:
        """``attn_mask``: None, or bool broadcastable to B x heads x T x T, True where a query may attend a key."""
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(x).view(batch, tokens, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.proj(x.transpose(1, 2).reshape(batch, tokens, dim))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block; shared by the image and the 1-D ViT."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, attn_mask=None) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), attn_mask))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    """Linear tokeniser of P x P patches, as a strided convolution (timm's ``patch_embed.proj``)."""

    def __init__(self, patch_size: int, in_chans: int, dim: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, dim, patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images B x C x H x W (an on-grid tiling) or cut patches B x N x C x P x P -> B x N x D."""
        if x.dim() == 5:
            batch, tokens = x.shape[:2]
            if x.shape[-1] != self.patch_size or x.shape[-2] != self.patch_size:
                raise ValueError(f"patches must be {self.patch_size} x {self.patch_size}, got {tuple(x.shape[-2:])}")
            return self.proj(x.flatten(0, 1)).view(batch, tokens, -1)
        if x.shape[-1] % self.patch_size or x.shape[-2] % self.patch_size:
            raise ValueError(f"image size {tuple(x.shape[-2:])} is not a multiple of the patch size {self.patch_size}")
        return self.proj(x).flatten(2).transpose(1, 2)


class VisionTransformer(nn.Module):
    """ViT with timm's ``forward_features`` / ``forward_head`` / ``num_features``.

    ``pos_embed`` and ``class_token`` are off for PART pretraining (the model must not know
    where a patch came from) and on for finetuning. ``num_tokens`` sizes the position
    embedding: (H / P) * (W / P) for on-grid images."""

    embed_layer = PatchEmbed  # the tokeniser; the 1-D ViT swaps it, as timm's ``embed_layer``

    def __init__(self, patch_size: int = 4, embed_dim: int = 192, depth: int = 12, num_heads: int = 3,
                 mlp_ratio: float = 4.0, in_chans: int = 3, num_tokens: int = 64, pos_embed: bool = False,
                 class_token: bool = False, global_pool: str = "avg", num_classes: int = 0,
                 drop_path_rate: float = 0.0):
        super().__init__()
        if global_pool not in POOLS:
            raise ValueError(f"global_pool must be one of {', '.join(POOLS)}, got '{global_pool}'")
        if global_pool == "token" and not class_token:
            raise ValueError("global_pool=token needs class_token=True")
        self.patch_size, self.global_pool, self.num_tokens = patch_size, global_pool, num_tokens
        self.num_features = self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.num_prefix_tokens = int(class_token)
        self.patch_embed = self.embed_layer(patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if class_token else None
        self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens + self.num_prefix_tokens, embed_dim)) if pos_embed else None
        rates = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.Sequential(*[Block(embed_dim, num_heads, mlp_ratio, r) for r in rates])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.grad_checkpointing = False
        self.reset_parameters()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """timm's switch: keep only each block's input in training and recompute the rest in the backward
        pass (about a third more compute for a fraction of the activations)."""
        self.grad_checkpointing = enable

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        if self.pos_embed is not None:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)

    def no_weight_decay(self) -> set:
        """Parameters that weight decay would pull to zero for no gain (timm's rule; biases and norms,
        being 1-D, are left out by the optimiser's own rule)."""
        return {name for name in ("pos_embed", "cls_token") if getattr(self, name) is not None}

    def position_embedding(self, tokens: int) -> torch.Tensor:
        """The position embedding of the ``tokens`` sequence tokens (the [CLS] slot left out)."""
        position = self.pos_embed[:, self.num_prefix_tokens:]
        if tokens != position.shape[1]:
            raise ValueError(f"the position embedding is sized for {self.num_tokens} patches, got {tokens}; "
                             "use the image size the model was built for")
        return position

    def forward_features(self, x: torch.Tensor, drop_position=None) -> torch.Tensor:
        """Images (B x C x H x W) or cut patches (B x N x C x P x P) -> normed tokens B x (prefix + N) x D.
        ``drop_position``: B x N bool, tokens whose position embedding is left out (PART 1-D)."""
        return self.encode(self.embed_patches(x, drop_position))

    def embed_patches(self, x: torch.Tensor, drop_position=None) -> torch.Tensor:
        """The tokens before the blocks: patch embeddings plus their position embedding, B x N x D (no prefix).
        MAE keeps a subset of them (``encode`` of the visible tokens alone)."""
        x = self.patch_embed(x)
        if self.pos_embed is not None:
            position = self.position_embedding(x.shape[1])
            x = x + (position if drop_position is None else position * (~drop_position)[..., None])
        return x

    def encode(self, tokens: torch.Tensor, context=None) -> torch.Tensor:
        """[CLS] (if any) + ``tokens`` (B x N x D) through the blocks and the final norm: B x (prefix + N) x D.
        ``context``: B x N bool, the tokens every token may attend to (MP3's keys and values); None: all."""
        if self.cls_token is not None:
            cls = self.cls_token if self.pos_embed is None else self.cls_token + self.pos_embed[:, :1]
            tokens = torch.cat([cls.expand(len(tokens), -1, -1), tokens], dim=1)
            if context is not None:
                context = F.pad(context, (self.num_prefix_tokens, 0), value=True)  # [CLS] is always context
        mask = None if context is None else context[:, None, None, :]
        for block in self.blocks:
            tokens = checkpointed(block, tokens, mask) if self.grad_checkpointing and torch.is_grad_enabled() \
                else block(tokens, mask)
        return self.norm(tokens)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x[:, 0] if self.global_pool == "token" else x[:, self.num_prefix_tokens:].mean(dim=1)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def patch_tokens(self, x: torch.Tensor, drop_position=None) -> torch.Tensor:
        """One embedding per patch (B x N x D), without the class token."""
        return self.forward_features(x, drop_position)[:, self.num_prefix_tokens:]

    def timm_kwargs(self) -> dict:
        """Arguments of ``timm.models.vision_transformer.VisionTransformer`` whose state dict
        has this model's keys and shapes (``img_size`` assumes a square on-grid image)."""
        side = int(round(self.num_tokens ** 0.5))
        return dict(img_size=side * self.patch_size, patch_size=self.patch_size, embed_dim=self.embed_dim,
                    depth=len(self.blocks), num_heads=self.num_heads,
                    mlp_ratio=self.blocks[0].mlp.fc1.out_features / self.embed_dim,
                    class_token=self.cls_token is not None,
                    pos_embed="learn" if self.pos_embed is not None else "none",
                    global_pool=self.global_pool, fc_norm=False,
                    num_classes=self.head.out_features if isinstance(self.head, nn.Linear) else 0)


def vision_transformer(size: str, depth=None, **kwargs) -> VisionTransformer:
    """ViT-tiny / small / base by name; ``depth`` overrides the number of blocks."""
    width, blocks, heads = SIZES[size]
    return VisionTransformer(embed_dim=width, depth=depth or blocks, num_heads=heads, **kwargs)

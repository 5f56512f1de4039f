"""Multi-scale features for detection heads: ViTDet's simple feature pyramid over a plain ViT (Li et al. 2022,
the backbone of PART's COCO experiments), or a feature pyramid network over a ResNet's stages.

The module layout copies detectron2's ``SimpleFeaturePyramid`` (``simfp_2`` .. ``simfp_5``, channel LayerNorms,
convolutions whose norm is their ``.norm``), so its weights export to detectron2 by renaming the prefix alone.
The ViT itself stays outside the pyramid's parameters (the method holds it as ``backbone``): the pyramid is
handed it at each call, so checkpoints keep the backbone under the keys evaluation and export read.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .relpos import RelativePositions, attention


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of B x C x H x W maps (detectron2's "LN" norm)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], self.weight, self.bias, self.eps).permute(0, 3, 1, 2)


class NormedConv(nn.Conv2d):
    """A bias-free convolution followed by its norm (detectron2's ``Conv2d(..., norm=...)``: keys ``weight``,
    ``norm.weight``, ``norm.bias``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.norm = LayerNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(super().forward(x))


def global_blocks(depth: int) -> list:
    """ViTDet's blocks with global attention: the last of each quarter (2, 5, 8, 11 of ViT-B's 12)."""
    return sorted({(quarter + 1) * depth // 4 - 1 for quarter in range(4)} - {-1})


def windowed_block(block: nn.Module, tokens: torch.Tensor, grid: tuple, window: int,
                   positions: Optional[RelativePositions] = None) -> torch.Tensor:
    """One of our ViT blocks with its attention inside non-overlapping ``window`` x ``window`` windows of the
    ``grid`` of tokens, the map zero-padded to whole windows (ViTDet), with ``positions``' relative position bias
    when given; norms, MLP and drop path as the block's."""
    batch, _, dim = tokens.shape
    rows, cols = grid
    x = block.norm1(tokens).view(batch, rows, cols, dim)
    pad_rows, pad_cols = -rows % window, -cols % window
    x = F.pad(x, (0, 0, 0, pad_cols, 0, pad_rows))
    across, down = (cols + pad_cols) // window, (rows + pad_rows) // window
    x = x.view(batch, down, window, across, window, dim).transpose(2, 3).reshape(-1, window * window, dim)
    x = block.attn(x) if positions is None else attention(block.attn, x, positions, window)
    x = x.view(batch, down, across, window, window, dim).transpose(2, 3)
    x = x.reshape(batch, down * window, across * window, dim)[:, :rows, :cols].reshape(batch, rows * cols, dim)
    tokens = tokens + block.drop_path(x)
    return tokens + block.drop_path(block.mlp(block.norm2(tokens)))


def vit_feature_map(vit: nn.Module, images: torch.Tensor, window: int = 0, global_blocks: Sequence[int] = (),
                    positions: Optional[nn.ModuleList] = None):
    """The last block's tokens of ``vit`` (ours: timm's layout) as a B x D x H/P x W/P map, without the final
    norm (ViTDet's). ``window`` > 0: windowed attention in every block but ``global_blocks``; ``positions``: each
    block's relative position bias (square maps only: letterboxed canvases)."""
    tokens = vit.embed_patches(images)
    grid = (images.shape[-2] // vit.patch_size, images.shape[-1] // vit.patch_size)
    if positions is not None and grid[0] != grid[1]:
        raise ValueError(f"relative position biases take square maps (letterboxed canvases), got {grid} tokens")
    window = attended_window(window, max(grid))
    for index, block in enumerate(vit.blocks):
        side = window if window and index not in global_blocks else 0
        bias = None if positions is None else positions[index]
        if side or bias is not None:
            tokens = windowed_block(block, tokens, grid, side or grid[0], bias)  # a global block: one whole window
        else:
            tokens = block(tokens)
    return tokens.transpose(1, 2).reshape(len(tokens), -1, *grid)


def attended_window(window: int, side: int) -> int:
    """The window used: 0 (global attention) where one window would hold the whole map."""
    return window if window < side else 0


class SimpleFeaturePyramid(nn.Module):
    """Maps at strides P/4, P/2, P and 2P (P the ViT's patch size) from its single stride-P map: two and one
    2x2 deconvolutions, identity, 2x2 max-pooling; each then a 1x1 and a 3x3 convolution with LayerNorm to
    ``out_channels``; a fifth level by stride-2 subsampling of the last (detectron2's LastLevelMaxPool).
    Outputs named p2..p6 as detectron2's (the stage numbers assume P = 16)."""

    def __init__(self, dim: int, patch_size: int, out_channels: int = 256, window: int = 0,
                 global_blocks: Sequence[int] = (), relative_positions: Optional[tuple] = None):
        """``relative_positions``: (depth, head dim, canvas side in tokens) for ViTDet's relative position bias in
        every block (``relpos``), held here with the pyramid; None: none."""
        super().__init__()
        self.out_channels, self.window, self.global_blocks = out_channels, window, tuple(global_blocks)
        self.positions = None
        if relative_positions is not None:
            depth, head_dim, side = relative_positions
            windowed = attended_window(window, side)
            self.positions = nn.ModuleList(RelativePositions(head_dim, windowed if windowed and i not in
                                                             self.global_blocks else side) for i in range(depth))
        self.strides = [patch_size // 4, patch_size // 2, patch_size, patch_size * 2, patch_size * 4]
        if patch_size % 4:
            raise ValueError(f"the simple feature pyramid needs a patch size divisible by 4, got {patch_size}")
        for stage, scale in zip((2, 3, 4, 5), (4.0, 2.0, 1.0, 0.5)):
            layers, width = [], dim
            if scale == 4.0:
                layers = [nn.ConvTranspose2d(dim, dim // 2, 2, 2), LayerNorm2d(dim // 2), nn.GELU(),
                          nn.ConvTranspose2d(dim // 2, dim // 4, 2, 2)]
                width = dim // 4
            elif scale == 2.0:
                layers, width = [nn.ConvTranspose2d(dim, dim // 2, 2, 2)], dim // 2
            elif scale == 0.5:
                layers = [nn.MaxPool2d(2, 2)]
            layers += [NormedConv(width, out_channels, 1), NormedConv(out_channels, out_channels, 3)]
            self.add_module(f"simfp_{stage}", nn.Sequential(*layers))

    @property
    def names(self) -> list:
        return ["p2", "p3", "p4", "p5", "p6"]

    def forward(self, vit: nn.Module, images: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        features = vit_feature_map(vit, images, self.window, self.global_blocks, self.positions)
        levels = [getattr(self, f"simfp_{stage}")(features) for stage in (2, 3, 4, 5)]
        levels.append(F.max_pool2d(levels[-1], kernel_size=1, stride=2))
        return OrderedDict(zip(self.names, levels))


def resnet_stages(resnet: nn.Module, images: torch.Tensor) -> list:
    """The outputs of each residual stage of our ResNet (torchvision's layout: conv1 .. layer4)."""
    x = resnet.maxpool(resnet.relu(resnet.bn1(resnet.conv1(images))))
    outputs = []
    for name in ("layer1", "layer2", "layer3", "layer4"):
        if hasattr(resnet, name):
            x = getattr(resnet, name)(x)
            outputs.append(x)
    return outputs


def stage_widths(resnet: nn.Module) -> list:
    """Output channels of each stage (its last convolution's)."""
    widths = []
    for name in ("layer1", "layer2", "layer3", "layer4"):
        if hasattr(resnet, name):
            convs = [m for m in getattr(resnet, name).modules() if isinstance(m, nn.Conv2d)]
            widths.append(convs[-1].out_channels)
    return widths


def stage_strides(resnet: nn.Module) -> list:
    """The stride of each stage's output relative to the image."""
    stride = resnet.conv1.stride[0] * (1 if isinstance(resnet.maxpool, nn.Identity) else 2)
    strides = []
    for name in ("layer1", "layer2", "layer3", "layer4"):
        if hasattr(resnet, name):
            first = next(m for m in getattr(resnet, name).modules() if isinstance(m, nn.Conv2d))
            stride *= first.stride[0]
            strides.append(stride)
    return strides


class ResNetPyramid(nn.Module):
    """torchvision's feature pyramid network over a ResNet's stages, plus a max-pooled level above the last."""

    def __init__(self, resnet: nn.Module, out_channels: int, torchvision):
        super().__init__()
        ops = torchvision.ops
        self.fpn = ops.FeaturePyramidNetwork(stage_widths(resnet), out_channels,
                                             extra_blocks=ops.feature_pyramid_network.LastLevelMaxPool())
        self.out_channels = out_channels
        strides = stage_strides(resnet)
        self.strides = strides + [strides[-1] * 2]
        self.names = [f"p{int(math.log2(s))}" if s > 0 else str(i) for i, s in enumerate(self.strides)]

    def forward(self, resnet: nn.Module, images: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        maps = self.fpn(OrderedDict((str(i), x) for i, x in enumerate(resnet_stages(resnet, images))))
        return OrderedDict(zip(self.names, maps.values()))

"""Backbones (timm manners; torchvision keys for ResNets, timm keys for ViTs) and heads."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from ..errors import ConfigError
from .heads import RelationHead
from .relative import (ENCODERS, CrossAttentionBlockEncoder, CrossAttentionEncoder, FullMLPEncoder, PairwiseMLPEncoder,
                       build_encoder)
from .resnet import ResNet, resnet8, resnet18, resnet20, resnet32, resnet34, resnet56
from .vit import SIZES, VisionTransformer, vision_transformer
from .vit1d import VisionTransformer1D, vision_transformer_1d

RESNETS = {"resnet8": resnet8, "resnet20": resnet20, "resnet32": resnet32, "resnet56": resnet56,
           "resnet18": resnet18, "resnet34": resnet34}
BACKBONES = (*RESNETS, *(f"vit_{size}" for size in SIZES), *(f"vit1d_{size}" for size in SIZES))


def create_backbone(name: str, cifar_stem: bool = False, num_classes: int = 0,
                    input_size: Optional[Sequence[int]] = None, patch_size: int = 4, pos_embed: bool = False,
                    class_token: bool = False, global_pool: str = "avg", drop_path: float = 0.0,
                    depth: Optional[int] = None, in_chans: Optional[int] = None,
                    num_tokens: Optional[int] = None) -> nn.Module:
    """A fresh backbone by name; the ViT options apply to ``vit_*`` / ``vit1d_*`` names only.
    For 1-D backbones ``input_size`` is [T] and ``in_chans`` the number of signal channels."""
    if name.startswith("vit1d_") and name[6:] in SIZES:
        (length,) = input_size or (3000,)
        if length % patch_size:
            raise ConfigError(f"signal length {length} is not a multiple of model.patch_size {patch_size}")
        return vision_transformer_1d(name[6:], in_chans=in_chans or 1, patch_size=patch_size,
                                     num_tokens=num_tokens or length // patch_size, pos_embed=pos_embed, class_token=class_token,
                                     global_pool=global_pool, num_classes=num_classes, drop_path_rate=drop_path,
                                     depth=depth)
    if name.startswith("vit_") and name[4:] in SIZES:
        height, width = input_size or (32, 32)
        if height % patch_size or width % patch_size:
            raise ConfigError(f"input size {height}x{width} is not a multiple of model.patch_size {patch_size}")
        return vision_transformer(name[4:], patch_size=patch_size, num_tokens=(height // patch_size) * (width // patch_size),
                                  pos_embed=pos_embed, class_token=class_token, global_pool=global_pool,
                                  num_classes=num_classes, drop_path_rate=drop_path, depth=depth)
    if name not in RESNETS:
        raise ConfigError(f"model.backbone '{name}' is unknown; choose one of {', '.join(BACKBONES)}")
    if name in ("resnet18", "resnet34"):
        return RESNETS[name](cifar_stem=cifar_stem, num_classes=num_classes)
    return RESNETS[name](num_classes=num_classes)


def backbone_from_config(model, num_classes: int = 0) -> nn.Module:
    """``create_backbone`` with the options of a ``ModelConfig``."""
    return create_backbone(model.backbone, model.cifar_stem, num_classes, model.input_size, model.patch_size,
                           model.pos_embed, model.class_token, model.global_pool, model.drop_path, model.depth,
                           model.in_chans, model.num_tokens)


def input_channels(backbone: nn.Module) -> int:
    """The channels a backbone takes: its first convolution's (a ResNet's stem, a ViT's patch embedding)."""
    return next(m.in_channels for m in backbone.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d)))


def embed(backbone: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Pooled features (B x num_features) of any backbone with timm's manners."""
    return backbone.forward_head(backbone.forward_features(images), pre_logits=True)


__all__ = ["ResNet", "VisionTransformer", "VisionTransformer1D", "RelationHead", "CrossAttentionEncoder", "CrossAttentionBlockEncoder",
           "PairwiseMLPEncoder",
           "FullMLPEncoder", "ENCODERS", "build_encoder", "create_backbone", "backbone_from_config", "embed", "input_channels",
           "BACKBONES", *RESNETS]

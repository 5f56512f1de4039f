"""Backbones (timm manners, torchvision keys) and heads."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from .heads import RelationHead
from .resnet import ResNet, resnet8, resnet18, resnet20, resnet32, resnet34, resnet56

BACKBONES = {"resnet8": resnet8, "resnet20": resnet20, "resnet32": resnet32, "resnet56": resnet56,
             "resnet18": resnet18, "resnet34": resnet34}


def create_backbone(name: str, cifar_stem: bool = False, num_classes: int = 0) -> nn.Module:
    if name not in BACKBONES:
        raise ConfigError(f"model.backbone '{name}' is unknown; choose one of {', '.join(BACKBONES)}")
    if name in ("resnet18", "resnet34"):
        return BACKBONES[name](cifar_stem=cifar_stem, num_classes=num_classes)
    return BACKBONES[name](num_classes=num_classes)


def embed(backbone: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Pooled features (B x num_features) of any backbone with timm's manners."""
    return backbone.forward_head(backbone.forward_features(images), pre_logits=True)


__all__ = ["ResNet", "RelationHead", "create_backbone", "embed", "BACKBONES", *BACKBONES]

"""Backbones (timm manners; torchvision keys for ResNets, timm keys for ViTs) and heads."""
from __future__ import annotations

from functools import partial
from typing import Callable, Optional, Sequence

import torch
from torch import nn

from ..errors import ConfigError
from . import external
from .heads import ProjectionHead, RelationHead
from .relative import (
    ENCODERS,
    CrossAttentionBlockEncoder,
    CrossAttentionEncoder,
    FullMLPEncoder,
    PairwiseMLPEncoder,
    build_encoder,
)
from .resnet import ResNet, resnet8, resnet18, resnet20, resnet32, resnet34, resnet56
from .vit import SIZES, DropPath, VisionTransformer, vision_transformer
from .vit1d import VisionTransformer1D, vision_transformer_1d

RESNETS = {"resnet8": resnet8, "resnet20": resnet20, "resnet32": resnet32, "resnet56": resnet56,
           "resnet18": resnet18, "resnet34": resnet34}


def _resnet(factory: Callable, *, cifar_stem: bool = False, num_classes: int = 0, in_chans: int = 3, **_vit_options):
    """A ResNet; ``cifar_stem`` matters to ResNet-18/34 only (the CIFAR depths always have it)."""
    extra = {"cifar_stem": cifar_stem} if factory in (resnet18, resnet34) else {}
    return factory(num_classes=num_classes, in_chans=in_chans, **extra)


def _vit(size: str, *, input_size: Optional[Sequence[int]] = None, patch_size: int = 4, in_chans: int = 3,
         num_tokens: Optional[int] = None, drop_path: float = 0.0, cifar_stem: bool = False, **options):
    height, width = input_size or (32, 32)
    if height % patch_size or width % patch_size:
        raise ValueError(f"input_size {height}x{width} is not a multiple of patch_size {patch_size}")
    return vision_transformer(size, patch_size=patch_size, in_chans=in_chans, drop_path_rate=drop_path,
                              num_tokens=num_tokens or (height // patch_size) * (width // patch_size), **options)


def _vit1d(size: str, *, input_size: Optional[Sequence[int]] = None, patch_size: int = 4, in_chans: int = 1,
           num_tokens: Optional[int] = None, drop_path: float = 0.0, cifar_stem: bool = False, **options):
    (length,) = input_size or (3000,)
    if length % patch_size:
        raise ValueError(f"input_size {length} (samples) is not a multiple of patch_size {patch_size}")
    return vision_transformer_1d(size, patch_size=patch_size, in_chans=in_chans, drop_path_rate=drop_path,
                                 num_tokens=num_tokens or length // patch_size, **options)


# name -> factory(**options): every backbone takes create_backbone's keywords; each uses its family's.
BACKBONES: dict = {**{name: partial(_resnet, factory) for name, factory in RESNETS.items()},
                   **{f"vit_{size}": partial(_vit, size) for size in SIZES},
                   **{f"vit1d_{size}": partial(_vit1d, size) for size in SIZES}}


def check_backbone(name: str) -> None:
    """ConfigError unless ``name`` is one of ``BACKBONES`` or ``timm/<name>`` / ``torchvision/<name>`` that the
    installed library builds (importing it)."""
    if external.is_external(name):
        external.check_name(name)
    elif name not in BACKBONES:
        raise ConfigError(f"model.backbone '{name}' is unknown; choose one of {', '.join(BACKBONES)}, "
                          "or timm/<name> or torchvision/<name>")


def modality(name: str) -> str:
    """What a backbone reads: "signals" (B x C x T epochs) for the 1-D ViTs, "images" for the rest."""
    return "signals" if name.startswith("vit1d_") else "images"


def is_vit(name: str) -> bool:
    """Whether a backbone is a ViT (image or 1-D): tokens, patch_tokens, position embedding options. A
    ``timm/`` name is one when timm's vision_transformer or deit module defines it (``is_timm_vit``)."""
    return name.startswith(("vit_", "vit1d_")) or (name.startswith("timm/") and external.is_timm_vit(name))


def create_backbone(name: str, cifar_stem: bool = False, num_classes: int = 0,
                    input_size: Optional[Sequence[int]] = None, patch_size: int = 4, pos_embed: bool = False,
                    class_token: bool = False, global_pool: str = "avg", drop_path: float = 0.0,
                    depth: Optional[int] = None, in_chans: Optional[int] = None,
                    num_tokens: Optional[int] = None, pretrained: bool = False) -> nn.Module:
    """A fresh backbone by name; the ViT options apply to ``vit_*`` / ``vit1d_*`` names only.
    For 1-D backbones ``input_size`` is [T] and ``in_chans`` the number of signal channels.
    ``timm/<name>`` and ``torchvision/<name>`` build that library's model (``pretrained``: with its weights)."""
    options = dict(cifar_stem=cifar_stem, num_classes=num_classes, input_size=input_size, patch_size=patch_size,
                   pos_embed=pos_embed, class_token=class_token, global_pool=global_pool, drop_path=drop_path,
                   depth=depth, num_tokens=num_tokens)
    if in_chans is not None:
        options["in_chans"] = in_chans
    if external.is_external(name):
        return external.external_backbone(name, pretrained=pretrained, **options)
    if name not in BACKBONES:
        raise ValueError(f"backbone '{name}' is unknown; choose one of {', '.join(BACKBONES)}")
    if pretrained:
        raise ValueError(f"backbone '{name}' has no pretrained weights; timm/<name> and torchvision/<name> have")
    return BACKBONES[name](**options)


ENTRY_POINTS = ("forward", "forward_features", "forward_head", "patch_tokens", "encode")  # what the methods call


def compile_backbone(backbone: nn.Module, **options) -> nn.Module:
    """``torch.compile`` each entry point the methods call (``nn.Module.compile`` compiles only ``forward``,
    which they do not call). In place, as instance attributes: the state dict keeps its keys."""
    for name in ENTRY_POINTS:
        if hasattr(backbone, name):
            setattr(backbone, name, torch.compile(getattr(backbone, name), **options))
    return backbone


def compile_method(method: nn.Module, **options) -> nn.Module:
    """``torch.compile`` what a method's step runs on the device besides its samplers: the backbone's entry points
    (``compile_backbone``) and the ``forward`` of each of its other parts (heads, PART's relative encoder, MAE's
    decoder, the losses). The samplers stay eager: they draw from generator objects, which would break graphs.
    In place; the state dict keeps its keys."""
    for name, part in method.named_children():
        if name == "backbone":
            compile_backbone(part, **options)
        else:
            part.forward = torch.compile(part.forward, **options)
    return method


def use_seed(module: nn.Module, seed: torch.Tensor) -> bool:
    """Draw the random masks of ``module``'s stochastic-depth layers from ``seed`` (a one-element int64 tensor
    on their device, redrawn in place before each forward pass), each layer with its own salt; whether any layer
    draws at all."""
    layers = [layer for layer in module.modules() if isinstance(layer, DropPath) and layer.p > 0]
    for salt, layer in enumerate(layers, start=1):
        layer.seed, layer.salt = seed, salt
    return bool(layers)


def input_channels(backbone: nn.Module) -> int:
    """The channels a backbone takes: its first convolution's (a ResNet's stem, a ViT's patch embedding)."""
    return next(m.in_channels for m in backbone.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d)))


def embed(backbone: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Pooled features (B x num_features) of any backbone with timm's manners."""
    return backbone.forward_head(backbone.forward_features(images), pre_logits=True)


__all__ = ["ResNet", "VisionTransformer", "VisionTransformer1D", "RelationHead", "ProjectionHead",
           "CrossAttentionEncoder", "CrossAttentionBlockEncoder",
           "PairwiseMLPEncoder",
           "FullMLPEncoder", "ENCODERS", "build_encoder", "create_backbone", "embed",
           "BACKBONES", "check_backbone", "modality", "is_vit", "input_channels", "use_seed", "compile_backbone", "compile_method", *RESNETS]

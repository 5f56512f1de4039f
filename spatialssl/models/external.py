"""Backbones of timm and torchvision (``timm/<name>``, ``torchvision/<name>``) with spatialssl's manners.

The model stays the library's own object with its own state-dict keys, so its weights load back into
``timm.create_model`` / ``torchvision.models`` unchanged; ``adopt`` only mixes in what the methods call
(``forward_features``, ``forward_head(x, pre_logits)``, ``num_features``, ``no_weight_decay()`` and, for
timm's ViTs, ``patch_tokens``). timm and torchvision are imported here alone, when such a backbone is asked for.
"""
from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional, Sequence

import torch
from torch import nn

from ..errors import ConfigError, MissingPackage, first_line

SOURCES = ("timm", "torchvision")
# timm's VisionTransformer and its subclasses (DeiT's distilled one): a patch_embed.proj convolution, then
# blocks over a plain token sequence, which is what PART's patch_tokens needs. Named by timm's module, so
# hybrid (CNN stem) and relative-position ViTs, whose blocks take more than tokens, are not ViTs here.
TIMM_VIT_MODULES = ["vision_transformer", "deit"]
TORCHVISION_RESNET_MODULE = "torchvision.models.resnet"  # resnet*, resnext*, wide_resnet*: the family adapted here


def is_external(name: str) -> bool:
    return name.startswith(tuple(f"{source}/" for source in SOURCES))


def library(name: str):
    """timm or torchvision, whichever ``name`` (``timm/<arch>``) names; one line saying how to install it."""
    from ..detection.torchvision_ops import import_torchvision  # torchvision with stand-in kernels if needed

    source = name.partition("/")[0]
    try:
        if source == "torchvision":
            return import_torchvision()
        try:
            import_torchvision()  # timm imports it
        except MissingPackage:
            pass
        return importlib.import_module(source)
    except Exception as err:  # ImportError, or a torchvision built for another torch (RuntimeError)
        raise MissingPackage(f"model.backbone={name} needs {source}, which cannot be imported here ({first_line(err)}); "
                          f"pip install {source} (or spatialssl[{source}])") from None


def _unknown(name: str, known: Sequence[str], where: str) -> ConfigError:
    arch = name.partition("/")[2]
    close = difflib.get_close_matches(arch, known, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return ConfigError(f"model.backbone={name}: {name.partition('/')[0]} has no model '{arch}' ({where} lists "
                       f"them){hint}")


def check_name(name: str) -> None:
    """ConfigError unless the installed timm/torchvision builds ``name`` (and spatialssl adapts it)."""
    source, _, arch = name.partition("/")
    lib = library(name)
    if source == "timm":
        if not lib.is_model(arch):
            raise _unknown(name, lib.list_models(), "timm.list_models()")
        return
    known = lib.models.list_models(module=lib.models)
    if arch not in known:
        raise _unknown(name, known, "torchvision.models.list_models()")
    if lib.models.get_model_builder(arch).__module__ != TORCHVISION_RESNET_MODULE:
        raise ConfigError(f"model.backbone={name}: spatialssl adapts torchvision's ResNets (resnet*, resnext*, "
                          f"wide_resnet*) only; use timm/<name> for other architectures")


def is_timm_vit(name: str) -> bool:
    """Whether ``timm/<arch>`` is one of timm's plain ViTs (see TIMM_VIT_MODULES): PART can use it."""
    timm = library(name)
    arch = timm.models.split_model_name_tag(name.partition("/")[2])[0]
    return arch in timm.list_models(module=TIMM_VIT_MODULES)


class ExternalBackbone:
    """Mixed into every adopted model: an empty ``no_weight_decay`` where the model names none."""

    def no_weight_decay(self) -> set:
        own = getattr(super(), "no_weight_decay", None)
        return set(own()) if own is not None else set()


class TimmViT(ExternalBackbone):
    """timm's ViT as spatialssl's: ``patch_tokens`` embeds cut patches through the model's own
    ``patch_embed.proj`` (kernel = stride = P), then its blocks and final norm, without the position
    embedding and without prefix tokens ([CLS], registers): PART must not tell where a patch came from.
    On images (``forward_features``) the model is timm's as it is, position embedding and [CLS] included."""

    @property
    def patch_size(self) -> int:
        return self.patch_embed.patch_size[0]

    @property
    def num_tokens(self) -> int:  # the patches of the image size it was built for
        return self.patch_embed.num_patches

    @property
    def num_heads(self) -> int:
        return self.blocks[0].attn.num_heads

    def patch_tokens(self, patches: torch.Tensor, drop_position=None) -> torch.Tensor:
        """Cut patches B x N x C x P x P -> B x N x D. ``drop_position`` (PART 1-D) has nothing to act on:
        no position embedding is added here."""
        batch, tokens = patches.shape[:2]
        if tuple(patches.shape[-2:]) != tuple(self.patch_embed.patch_size):
            raise ValueError(f"patches must be {self.patch_size} x {self.patch_size}, got {tuple(patches.shape[-2:])}")
        x = self.patch_embed.proj(patches.flatten(0, 1)).flatten(1)  # one 1 x 1 output per patch
        x = self.patch_embed.norm(x).view(batch, tokens, -1)
        return self.norm(self.blocks(self.norm_pre(x)))


class TorchvisionResNet(ExternalBackbone):
    """torchvision's ResNet split as timm's: the feature map, then global average pooling and ``fc``
    (``forward`` stays torchvision's; ``num_features`` is set by ``torchvision_backbone``)."""

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean((2, 3))  # its avgpool; AdaptiveAvgPool2d's CUDA backward is not deterministic
        return x if pre_logits else self.fc(x)


@lru_cache(maxsize=None)
def _adopted_class(cls: type, manners: type) -> type:
    return type(cls.__name__, (manners, cls), {})


def adopt(model: nn.Module, manners: type) -> nn.Module:
    """Give ``model`` spatialssl's manners in place: its type becomes a subclass of its own with ``manners``
    mixed in, so the object, its weights, keys and every method of its library stay what they were."""
    model.__class__ = _adopted_class(type(model), manners)
    return model


@dataclass(frozen=True)
class Origin:
    """Where an external backbone comes from: ``library``'s ``architecture`` built with ``kwargs``
    (no pretrained weights) has its state-dict keys and shapes; export reads it."""
    library: str
    architecture: str
    kwargs: dict


def _built(create, name: str, pretrained: bool) -> nn.Module:
    """``create()``; a failed download of pretrained weights as one line."""
    try:
        return create()
    except Exception as err:
        if not pretrained:
            raise
        raise ConfigError(f"cannot fetch the pretrained weights of {name} ({first_line(err)}); connect this machine "
                          "to the internet (weights are cached after the first download) or set "
                          "model.pretrained=false") from None


def timm_backbone(name: str, num_classes: int, input_size: Optional[Sequence[int]], patch_size: int,
                  drop_path: float, in_chans: int, pretrained: bool) -> nn.Module:
    timm, arch = library(name), name.partition("/")[2]
    vit = is_timm_vit(name)
    kwargs = {"num_classes": num_classes, "in_chans": in_chans}
    if vit and input_size is not None:
        kwargs["img_size"] = list(input_size)  # position embedding sized for the data (timm resizes pretrained ones)
    training = {"drop_path_rate": drop_path} if drop_path else {}  # not needed to rebuild it
    model = _built(lambda: timm.create_model(arch, pretrained=pretrained, **kwargs, **training), name, pretrained)
    model.origin = Origin("timm", timm.models.split_model_name_tag(arch)[0], kwargs)
    if not vit:
        return adopt(model, ExternalBackbone)
    adopt(model, TimmViT)
    if model.patch_embed.patch_size != (patch_size, patch_size):
        side = "x".join(map(str, model.patch_embed.patch_size))
        raise ConfigError(f"{name} embeds {side}-pixel tokens but model.patch_size is {patch_size}; set "
                          f"model.patch_size={model.patch_embed.patch_size[0]} (the token size of the ViT, which "
                          "methods that cut patches for it also use), or choose a timm ViT with that token size")
    return model


def torchvision_backbone(name: str, num_classes: int, in_chans: int, drop_path: float, pretrained: bool) -> nn.Module:
    torchvision, arch = library(name), name.partition("/")[2]
    if in_chans != 3:
        raise ConfigError(f"{name} takes RGB images; for {in_chans}-channel inputs use timm/{arch} (timm adapts "
                          "the first convolution)")
    if drop_path:
        raise ConfigError(f"torchvision's ResNets have no stochastic depth; set model.drop_path=0 for {name} "
                          f"(timm/{arch} takes it)")
    weights = "DEFAULT" if pretrained else None
    model = _built(lambda: torchvision.models.get_model(arch, weights=weights), name, pretrained)
    num_features = model.fc.in_features
    model.fc = nn.Linear(num_features, num_classes) if num_classes else nn.Identity()  # ImageNet's head replaced
    adopt(model, TorchvisionResNet)
    model.num_features = num_features
    model.origin = Origin("torchvision", arch, {"num_classes": num_classes} if num_classes else {})
    return model


def external_backbone(name: str, *, num_classes: int = 0, input_size: Optional[Sequence[int]] = None,
                      patch_size: int = 4, drop_path: float = 0.0, depth: Optional[int] = None, in_chans: int = 3,
                      pretrained: bool = False, **_vit_options) -> nn.Module:
    """``timm/<arch>`` or ``torchvision/<arch>`` as a spatialssl backbone. spatialssl's ViT options
    (position embedding, [CLS], pooling) do not apply: the model keeps its own."""
    check_name(name)
    if depth is not None:
        raise ConfigError(f"model.depth applies to spatialssl's ViTs; {name} has its own depth (leave model.depth "
                          "unset, or choose a smaller model)")
    if name.startswith("timm/"):
        return timm_backbone(name, num_classes, input_size, patch_size, drop_path, in_chans, pretrained)
    return torchvision_backbone(name, num_classes, in_chans, drop_path, pretrained)

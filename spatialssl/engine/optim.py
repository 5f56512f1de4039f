"""The optimiser and its learning-rate schedule."""
from __future__ import annotations

import math

import torch

from ..errors import ConfigError
from ..lars import LARS
from .safeguards import warmup_epochs

OPTIMIZERS = ("adam", "adamw", "sgd", "lars")
SCHEDULES = ("constant", "cosine", "step")


def build_optimizer(optim, model: torch.nn.Module, fused: bool = False) -> torch.optim.Optimizer:
    """Adam, SGD (``optim.momentum``), or AdamW (both Adams with ``optim.betas``) and LARS with no weight decay on
    biases, norms (1-D parameters) and what the model's ``no_weight_decay()`` names (timm's rule), which LARS also
    steps without its trust ratio (SimCLR's rule). With ``optim.layer_decay`` each group carries its ``lr_scale``
    (``layer_scales``). ``fused``: the fused CUDA kernels of Adam/AdamW."""
    extra = {"fused": True} if fused else {}
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    scales = layer_scales(model, [n for n, _ in named], optim.layer_decay)
    if optim.name in ("adam", "sgd"):  # one weight decay (L2) for every parameter
        groups = _grouped([named], scales, [{}])
        if optim.name == "adam":
            return torch.optim.Adam(groups, lr=optim.lr, betas=tuple(optim.betas), weight_decay=optim.weight_decay,
                                    **extra)
        return torch.optim.SGD(groups, lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay)
    kept_out = model.no_weight_decay() if hasattr(model, "no_weight_decay") else set()
    decayed = [(n, p) for n, p in named if p.dim() > 1 and n not in kept_out]
    exempt = [(n, p) for n, p in named if not (p.dim() > 1 and n not in kept_out)]
    if optim.name == "lars":
        groups = _grouped([decayed, exempt], scales, [{}, {"weight_decay": 0.0, "adapt": False}])
        return LARS(groups, lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay,
                    trust_coefficient=optim.trust_coefficient)
    groups = _grouped([decayed, exempt], scales, [{"weight_decay": optim.weight_decay}, {"weight_decay": 0.0}])
    return torch.optim.AdamW(groups, lr=optim.lr, betas=tuple(optim.betas), **extra)


def _grouped(kinds: list, scales: dict, settings: list) -> list:
    """One parameter group per kind (its ``settings``) and lr_scale, kinds in order (the groups a run without
    layer decay always had), then scales in first-seen order."""
    groups = []
    for named, options in zip(kinds, settings):
        by_scale: dict = {}
        for name, parameter in named:
            scale = scales.get(name, 1.0)
            by_scale.setdefault(scale, {"params": [], **options, "lr_scale": scale})["params"].append(parameter)
        groups += list(by_scale.values()) or [{"params": [], **options, "lr_scale": 1.0}]
    return groups


def layer_scales(model: torch.nn.Module, names: list, decay: float) -> dict:
    """Each parameter's learning-rate factor under layer-wise decay (BEiT's, ViTDet's rule): a ViT backbone's
    embeddings (layer 0) and its blocks (layer i + 1) at decay^(d + 1 - layer) for depth d, and what the model's
    ``layer_of(name)`` places in block i (detection's relative position biases) as that block; everything else
    (its final norm, heads, a feature pyramid) at 1. ``{}`` when off."""
    if decay == 1.0:
        return {}
    backbone = getattr(model, "backbone", model)
    blocks = getattr(backbone, "blocks", None)
    if blocks is None:
        raise ConfigError(f"optim.layer_decay needs a ViT (blocks to decay by depth); {type(backbone).__name__} has "
                          "none: set optim.layer_decay=1")
    depth, prefix = len(blocks), "backbone." if backbone is not model else ""
    scales, block_of = {}, getattr(model, "layer_of", lambda name: None)  # a method's parameters of a block
    for name in names:
        if not name.startswith(prefix):
            block = block_of(name)
            if block is not None:
                scales[name] = decay ** (depth - block)
            continue
        inner = name[len(prefix):]
        if inner.startswith(("patch_embed.", "pos_embed", "cls_token", "reg_token", "mask_token")):
            scales[name] = decay ** (depth + 1)
        elif inner.startswith("blocks."):
            scales[name] = decay ** (depth - int(inner.split(".")[1]))
    return scales


def learning_rate(optim, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """Linear warm-up (``optim.warmup_steps``, or safeguards.warmup_epochs), then constant, cosine down to
    ``min_lr``, or stepped down by ``gamma`` at each milestone."""
    warmup = optim.warmup_steps or int(warmup_epochs(optim, total_steps / steps_per_epoch) * steps_per_epoch)
    if step < warmup:
        return optim.lr * (step + 1) / warmup
    if optim.schedule == "constant":
        return optim.lr
    if optim.schedule == "step":
        return optim.lr * optim.gamma ** sum(step >= milestone * total_steps for milestone in optim.milestones)
    progress = (step - warmup) / max(1, total_steps - warmup)
    return optim.min_lr + (optim.lr - optim.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


def set_learning_rate(optimizer: torch.optim.Optimizer, optim, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """Set the step's learning rate on every group (times its ``lr_scale``: layer-wise decay); return it."""
    lr = learning_rate(optim, step, total_steps, steps_per_epoch)
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    return lr

"""The optimiser and its learning-rate schedule."""
from __future__ import annotations

import math

import torch

from .safeguards import warmup_epochs

from ..lars import LARS

OPTIMIZERS = ("adam", "adamw", "sgd", "lars")
SCHEDULES = ("constant", "cosine")


def build_optimizer(optim, model: torch.nn.Module, fused: bool = False) -> torch.optim.Optimizer:
    """Adam, SGD (``optim.momentum``), or AdamW (both Adams with ``optim.betas``) and LARS with no weight decay on
    biases, norms (1-D parameters) and what the model's ``no_weight_decay()`` names (timm's rule), which LARS also
    steps without its trust ratio (SimCLR's rule). ``fused``: the fused CUDA kernels of Adam/AdamW."""
    extra = {"fused": True} if fused else {}
    if optim.name == "adam":
        return torch.optim.Adam(model.parameters(), lr=optim.lr, betas=tuple(optim.betas),
                                weight_decay=optim.weight_decay, **extra)
    if optim.name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=optim.lr, momentum=optim.momentum,
                               weight_decay=optim.weight_decay)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    kept_out = model.no_weight_decay() if hasattr(model, "no_weight_decay") else set()
    decay = [p for n, p in named if p.dim() > 1 and n not in kept_out]
    no_decay = [p for n, p in named if p.dim() <= 1 or n in kept_out]
    if optim.name == "lars":
        return LARS([{"params": decay}, {"params": no_decay, "weight_decay": 0.0, "adapt": False}], lr=optim.lr,
                    momentum=optim.momentum, weight_decay=optim.weight_decay,
                    trust_coefficient=optim.trust_coefficient)
    return torch.optim.AdamW([{"params": decay, "weight_decay": optim.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=optim.lr, betas=tuple(optim.betas),
                             **extra)


def learning_rate(optim, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """Linear warm-up (safeguards.warmup_epochs), then constant or cosine down to ``min_lr``."""
    warmup = int(warmup_epochs(optim, total_steps / steps_per_epoch) * steps_per_epoch)
    if step < warmup:
        return optim.lr * (step + 1) / warmup
    if optim.schedule == "constant":
        return optim.lr
    progress = (step - warmup) / max(1, total_steps - warmup)
    return optim.min_lr + (optim.lr - optim.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


def set_learning_rate(optimizer: torch.optim.Optimizer, optim, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """Set the step's learning rate on every group; return it."""
    lr = learning_rate(optim, step, total_steps, steps_per_epoch)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr

"""An exponential moving average (EMA) of a model's weights, as the PART recipe keeps.

Usable in any loop: ``ema = WeightEMA(model, 0.9999)`` once, ``ema.update(model)`` after
every optimiser step, evaluate ``ema.module``. Under DistributedDataParallel pass the
unwrapped model.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


class WeightEMA:
    """``ema = decay * ema + (1 - decay) * weight`` for every floating-point parameter.

    Buffers (BatchNorm running statistics and counters) and any non-float parameters are
    copied from the live model, as torch's ``AveragedModel`` does by default: the running
    statistics are already an average, and copying keeps integer counters exact. (timm's
    ModelEmaV2 averages them instead.) ``AveragedModel`` itself is not used because its
    state dict adds a ``module.`` prefix and a counter, and it starts from the weights after
    the first step; here ``module`` is a plain copy whose state dict has the model's keys and
    starts from the model as given.
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0 <= decay < 1:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self._averaged, self._copied = self._split(self.module)

    @staticmethod
    def _split(model: nn.Module) -> tuple:
        """(float parameters, everything else in the state: non-float parameters and buffers)."""
        params = list(model.parameters())
        return ([p for p in params if p.is_floating_point()],
                [p for p in params if not p.is_floating_point()] + list(model.buffers()))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One step towards ``model``'s current weights (the same architecture as at creation)."""
        averaged, copied = self._split(model)
        if averaged:  # lerp(ema, w, 1 - decay) = decay * ema + (1 - decay) * w, one fused kernel per group
            torch._foreach_lerp_(self._averaged, averaged, 1 - self.decay)
        if copied:
            torch._foreach_copy_(self._copied, copied)

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state)

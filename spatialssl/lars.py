"""LARS (You et al. 2017) as SimCLR uses it for large batches: SGD with momentum whose step for each weight tensor
is scaled by a trust ratio, ``trust_coefficient * ||w|| / ||g + weight_decay * w||``; groups with ``adapt=False``
(SimCLR's biases and BatchNorm parameters, which also take no weight decay) step as plain SGD. A block: usable in
any training loop, as ``LARS(params, lr=...)`` (an iterable of tensors or of param groups).

Per group, one pass of multi-tensor (``_foreach``) kernels, the trust ratios computed on the device: no host sync
and a few launches per step, whatever the number of tensors."""
from __future__ import annotations

import torch


class LARS(torch.optim.Optimizer):
    """v = momentum * v + lr * ratio * (g + weight_decay * w);  w = w - v (SimCLR's ``classic_momentum``), where
    ratio = trust_coefficient * ||w|| / ||g + weight_decay * w|| when ``adapt`` and both norms are positive, else 1."""

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 trust_coefficient: float = 0.001, adapt: bool = True):
        if lr <= 0 or not 0 <= momentum < 1 or weight_decay < 0 or trust_coefficient <= 0:
            raise ValueError(f"LARS needs lr > 0, 0 <= momentum < 1, weight_decay >= 0 and trust_coefficient > 0; got "
                             f"lr={lr}, momentum={momentum}, weight_decay={weight_decay}, "
                             f"trust_coefficient={trust_coefficient}")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                                      trust_coefficient=trust_coefficient, adapt=adapt))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if group["weight_decay"]:
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            if group["adapt"]:
                weight_norms, grad_norms = (torch.stack(torch._foreach_norm(t)) for t in (params, grads))
                ratios = torch.where((weight_norms > 0) & (grad_norms > 0),
                                     group["trust_coefficient"] * weight_norms / grad_norms, 1.0)
                grads = torch._foreach_mul(grads, list(ratios.to(grads[0].dtype).unbind()))
            velocities = [self._velocity(p) for p in params]
            torch._foreach_mul_(velocities, group["momentum"])
            torch._foreach_add_(velocities, grads, alpha=group["lr"])
            torch._foreach_sub_(params, velocities)
        return loss

    def _velocity(self, param: torch.Tensor) -> torch.Tensor:
        state = self.state[param]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        return state["momentum_buffer"]

"""The global batch's features under torchrun. RR and SR pair representations of different images
(negatives, and the relation head's BatchNorm sees every pair), so each process gathers every
process's features and forms the pairs one process would form on the whole batch. Alone, a no-op."""
from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist


_ALONE = []  # set by ``alone``


def processes() -> int:
    """How many processes train together (1 without torchrun, or inside ``alone``)."""
    if _ALONE:
        return 1
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


@contextlib.contextmanager
def alone():
    """Steps inside gather nothing: what one process holds is measured on the meta device (engine.memory),
    where the other processes' features cannot be gathered."""
    _ALONE.append(True)
    try:
        yield
    finally:
        _ALONE.pop()


class _AllGather(torch.autograd.Function):
    """Every process's tensor, stacked in rank order (W x ...). Every process's loss depends on
    every process's rows, so backward hands each process the sum over processes of the
    gradients with respect to its own rows."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.stack(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone(memory_format=torch.contiguous_format)  # all_reduce works in place
        dist.all_reduce(grad)
        return grad[dist.get_rank()]


def global_batch(x: torch.Tensor, blocks: int) -> torch.Tensor:
    """Block-major rows of the global batch from this process's block-major rows: ``x`` holds block
    k (a view or a patch number) of local image b at row ``k * B + b``; the result holds it at row
    ``k * W * B + rank * B + b``, since the loop gives process ``rank`` the global images
    ``rank * B`` to ``rank * B + B - 1``. Differentiable; a no-op alone.

    Every process then computes the loss of all the global pairs, as one process would. The head's
    gradient is then the single-process one in every process; a backbone's is W times the share of
    this process's images (the backward above sums W equal gradients), and DistributedDataParallel's
    mean over the W processes turns both into the single-process gradient."""
    if processes() == 1:
        return x
    gathered = _AllGather.apply(x)
    world, rows = gathered.shape[:2]
    by_block = gathered.view(world, blocks, rows // blocks, *x.shape[1:]).transpose(0, 1)
    return by_block.reshape(world * rows, *x.shape[1:])

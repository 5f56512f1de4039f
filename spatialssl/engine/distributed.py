"""Multi-GPU / multi-node training through torchrun: one process per device, the code only
reads the environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT).
Without it, everything is one process and these helpers do nothing."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import ConfigError

GRAD_COMPRESSIONS = ("none", "bf16", "fp16")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name} but no CUDA device is available; use train.device=cpu")
    return torch.device(name)


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, index: torch.Tensor) -> torch.Tensor:
        """This process's contiguous share of a global batch (its size divides evenly)."""
        share = len(index) // self.world
        return index[self.rank * share:(self.rank + 1) * share]

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean over processes (a no-op alone)."""
        if self.world == 1:
            return value
        value = value.detach().clone()
        dist.all_reduce(value)
        return value / self.world

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def share(self, count: int) -> range:
        """This process's contiguous share of ``count`` items (the first ones one longer where it does not
        divide): evaluation's split of a validation set."""
        return range(self.rank * count // self.world, (self.rank + 1) * count // self.world)

    def gather_text(self, text: str, device: torch.device) -> list:
        """Every process's ``text``, in rank order, in rank 0 (the others get []): as UTF-8 bytes in tensors on
        ``device`` (NCCL's are on the GPU), never pickled."""
        if self.world == 1:
            return [text]
        data = torch.frombuffer(bytearray(text.encode()), dtype=torch.uint8) if text else torch.zeros(0, dtype=torch.uint8)
        length = torch.tensor([len(data)], device=device)
        lengths = [torch.zeros_like(length) for _ in range(self.world)]
        dist.all_gather(lengths, length)
        longest = int(max(lengths).item())
        padded = torch.zeros(longest, dtype=torch.uint8, device=device)
        padded[:len(data)] = data.to(device)
        pieces = [torch.zeros_like(padded) for _ in range(self.world)]
        dist.all_gather(pieces, padded)
        if not self.main:
            return []
        return [bytes(piece[:int(n.item())].cpu().numpy()).decode() for piece, n in zip(pieces, lengths)]

    def broadcast(self, value: torch.Tensor) -> torch.Tensor:
        """Rank 0's ``value`` in every process (a no-op alone): one decision that all must share."""
        if self.world > 1:
            dist.broadcast(value, src=0)
        return value


def writes() -> bool:
    """Whether this process writes the run's files: alone, or rank 0 under torchrun. Read from the
    environment, so it is known before the process group is joined."""
    return int(os.environ.get("WORLD_SIZE", "1")) == 1 or int(os.environ.get("RANK", "0")) == 0


def from_environment(device_name: str) -> tuple:
    """(Distributed, device): joins the process group when started by torchrun (NCCL on
    GPUs, gloo on CPUs); each process takes the GPU of its LOCAL_RANK."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Distributed(), resolve_device(device_name)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and not device_name.startswith("cpu")
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:  # before the group: NCCL's communicator and barriers then use this GPU, not GPU 0 in every process
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", device_id=device if cuda else None)
    return Distributed(rank, world), device


def wrap_for_processes(method: torch.nn.Module, device: torch.device, bucket_mb: float,
                       compression: str) -> torch.nn.Module:
    """``method`` in DistributedDataParallel, its gradients reduced in buckets of ``bucket_mb`` as the backward
    pass makes them (a backbone compiled by torch.compile is split at the same buckets by dynamo's DDP
    optimiser, as long as it is first called inside this wrapper's forward, as the loop calls it), sent as
    ``compression`` (none, bf16, fp16) through DDP's communication hooks."""
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    model = torch.nn.parallel.DistributedDataParallel(method, device_ids=[device] if device.type == "cuda" else None,
                                                      bucket_cap_mb=bucket_mb)
    hooks = {"bf16": default_hooks.bf16_compress_hook, "fp16": default_hooks.fp16_compress_hook}
    if compression in hooks:
        model.register_comm_hook(dist.group.WORLD, hooks[compression])
    return model

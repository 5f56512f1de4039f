"""Stopping when asked: SIGTERM (what Slurm and Kubernetes send before they kill a job), SIGUSR1 (Slurm's
``--signal``) and a first Ctrl-C let the current step finish; the loop then writes a checkpoint from which
``--resume`` continues mid-epoch exactly, and the process exits with errors.Interrupted's code (75). Under
torchrun the processes agree on the step at a logged step (the step's one wait for the device already), so all
stop together."""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Optional

import torch

STOP_SIGNALS = ("SIGTERM", "SIGUSR1", "SIGINT")


class StopRequest:
    """Which stop signal arrived, if any; a second Ctrl-C stops at once (KeyboardInterrupt)."""

    def __init__(self):
        self.signal: Optional[int] = None

    @property
    def name(self) -> str:
        return signal.Signals(self.signal).name if self.signal is not None else ""

    def _handle(self, signum, frame) -> None:
        if signum == signal.SIGINT and self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum

    @contextmanager
    def listening(self):
        """The handlers installed while the block runs (Python allows them in the main thread only; elsewhere,
        e.g. a notebook's worker thread, the signals keep their own handling)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {}
        for name in STOP_SIGNALS:
            number = getattr(signal, name, None)  # Windows has no SIGUSR1
            if number is not None:
                previous[number] = signal.signal(number, self._handle)
        try:
            yield self
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)


def loss_and_stop(ranks, loss: torch.Tensor, stop: StopRequest) -> tuple:
    """(the loss averaged over processes, whether any process was asked to stop), in one all-reduce."""
    if ranks.world == 1:
        return loss.item(), stop.signal is not None
    asked = torch.tensor(float(stop.signal is not None), device=loss.device)
    both = ranks.mean(torch.stack([loss.detach().float(), asked])).tolist()
    return both[0], both[1] > 0


def anyone_asked(ranks, stop: StopRequest, device) -> bool:
    """Whether any process was asked to stop (a collective under torchrun: call it in every process)."""
    if ranks.world == 1:
        return stop.signal is not None
    return ranks.mean(torch.tensor(float(stop.signal is not None), device=device)).item() > 0


def sample_states(ranks, generator: torch.Generator) -> torch.Tensor:
    """Every process's augmentation generator state, one row per rank (gathered: rank 0 writes them)."""
    own = generator.get_state()
    if ranks.world == 1:
        return own[None]
    import torch.distributed as dist

    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    rows = [torch.empty_like(own, device=device) for _ in range(ranks.world)]
    dist.all_gather(rows, own.to(device))
    return torch.stack([row.cpu() for row in rows])

"""What a training step will hold on the device, measured before training on the meta device (shapes
without memory, so no GPU and no allocation): the weights, their gradients and optimiser state, an
EMA copy, and the live tensors of one micro-batch's forward and backward pass at their peak. A batch
that cannot fit the device is refused before any work."""
from __future__ import annotations

import contextlib
import dataclasses
import os
import weakref
from typing import Optional

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakIdKeyDictionary

from ..canvas import Canvases
from ..data.decode import Resize
from ..errors import ConfigError
from ..methods import gather
from .build import build_method
from .precision import AUTOCAST

META = torch.device("meta")
OPTIMISER_STATES = {"adam": 2, "adamw": 2, "sgd": 1, "lars": 1}  # fp32 tensors per parameter (moments, momentum)
AUTOCAST_ACTIVATIONS = 0.5  # bf16/fp16 autocast keeps about half the bytes of fp32 activations (estimated)


class LiveBytes(TorchDispatchMode):
    """The bytes of the storages made inside it that are still alive, and their peak: a view or an in-place
    result shares its input's storage and adds nothing; a storage counts until Python frees it (autograd's
    saved tensors keep theirs alive)."""

    def __init__(self):
        super().__init__()
        self.now = self.peak = 0
        self.counted = WeakIdKeyDictionary()

    def _freed(self, nbytes: int) -> None:
        self.now -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        inputs = {t.untyped_storage()._cdata for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = tensor.untyped_storage()
            if storage._cdata in inputs or storage in self.counted:
                continue
            self.counted[storage] = storage.nbytes()
            self.now += storage.nbytes()
            weakref.finalize(storage, self._freed, storage.nbytes())
        self.peak = max(self.peak, self.now)
        return out


MEASURED_WHOLE = 64  # micro-batches up to it are measured as they are; a meta step's time grows with the batch


def expected_peak(cfg, num_classes: int, input_size: tuple, in_chans: int, world: int) -> Optional[dict]:
    """Bytes one process will hold at the peak of a step with ``cfg``'s batch (its share of it, in micro-batches
    of train.accumulate_steps), or None where the step cannot run on the meta device (detection's targets, an
    operation without a meta kernel). A micro-batch over MEASURED_WHOLE is extrapolated from three smaller ones
    (what a step holds grows at most with the square of its batch: SimCLR's similarities)."""
    if cfg.method.name == "detect":
        return None
    micro = cfg.train.batch_size // world // cfg.train.accumulate_steps
    sizes = (micro,) if micro <= MEASURED_WHOLE else (MEASURED_WHOLE // 4, MEASURED_WHOLE // 2, MEASURED_WHOLE)
    try:
        measured = [step_bytes(cfg, size, num_classes, input_size, in_chans) for size in sizes]
    except (NotImplementedError, RuntimeError, TypeError):  # no meta kernel for some operation
        return None
    (weights, trained), steps = measured[0][:2], [live for _, _, live in measured]
    step = steps[0] if len(sizes) == 1 else quadratic_growth(sizes, steps, micro)
    states = OPTIMISER_STATES.get(cfg.optim.name, 2) * trained + (weights if cfg.train.ema > 0 else 0)
    if cfg.train.precision in AUTOCAST:
        step = int(step * AUTOCAST_ACTIVATIONS)
    images = step_inputs(cfg, micro, in_chans, input_size)
    batch = (images.pixels if isinstance(images, Canvases) else images).nbytes * cfg.train.accumulate_steps
    return {"total": weights + trained + states + step + batch, "weights": weights + trained + states,
            "activations": step, "micro_batch": micro}


def step_bytes(cfg, micro: int, num_classes: int, input_size: tuple, in_chans: int) -> tuple[int, int, int]:
    """(the bytes of the weights and buffers, of the trained weights, of the live tensors at the peak of one
    step of ``micro`` inputs, the gradients among them counted apart)."""
    tracker = LiveBytes()
    method, _ = meta_step(cfg, micro, num_classes, input_size, in_chans, tracker)
    trained = sum(p.numel() * 4 for p in method.parameters() if p.requires_grad)
    weights = sum(p.numel() * 4 for p in method.parameters()) + sum(b.nbytes for b in method.buffers())
    return weights, trained, max(0, tracker.peak - trained)


def quadratic_growth(sizes: tuple, measured: list, size: int) -> int:
    """``measured`` at ``sizes`` (m, 2m, 4m), continued to ``size`` as c + a n + b n^2 with a, b >= 0."""
    (m, _, _), (small, middle, large) = sizes, measured
    b = max(0.0, ((large - middle) - 2 * (middle - small)) / (6 * m * m))  # the second difference is 6 b m^2
    a = max(0.0, (large - middle - 12 * b * m * m) / (2 * m))
    c = large - 4 * a * m - 16 * b * m * m
    return int(c + a * size + b * size * size)


def meta_step(cfg, micro: int, num_classes: int, input_size: tuple, in_chans: int, *modes) -> tuple:
    """One training step (forward and backward) of ``micro`` inputs on the meta device, where nothing is computed,
    under the dispatch modes ``modes`` (what counts bytes, FLOPs or launches); returns (the method, its inputs)."""
    model = dataclasses.replace(cfg.model, pretrained=False, init_from=None)  # values do not matter, shapes do
    mean, std = cfg.data.mean or [0.5] * in_chans, cfg.data.std or [0.25] * in_chans  # values do not matter
    method = build_method(dataclasses.replace(cfg, model=model), mean, std, num_classes)
    method.to(META).train()  # built on the CPU: initialisers read values the meta device does not hold
    if cfg.train.activation_checkpointing and hasattr(method.backbone, "set_grad_checkpointing"):
        method.backbone.set_grad_checkpointing(True)
    images = step_inputs(cfg, micro, in_chans, input_size)
    labels = torch.zeros(micro, dtype=torch.long, device=META)
    with gather.alone(), contextlib.ExitStack() as counting:
        for mode in modes:
            counting.enter_context(mode)
        loss, _ = method.training_step(images, labels, torch.Generator())
        loss.backward()
    return method, images


def step_inputs(cfg, micro: int, in_chans: int, input_size: tuple):
    """A micro-batch as the step will get it, on the meta device: signals (float), images (uint8), or whole
    images in their canvases (data.resize=whole)."""
    if len(input_size) == 1:
        return torch.zeros(micro, in_chans, *input_size, device=META)
    if cfg.data.resize != "whole":
        return torch.zeros(micro, in_chans, *input_size, dtype=torch.uint8, device=META)
    side = Resize(cfg.data.image_size, "whole", cfg.data.source_size).canvas
    return Canvases(torch.zeros(micro, in_chans, side, side, dtype=torch.uint8, device=META),
                    torch.full((micro, 2), float(side), device=META), cfg.data.image_size)


def capacity(device: torch.device) -> int:
    """The bytes a process may hold: a CUDA device's memory, or the machine's memory shared by the processes
    that run on it (torchrun's LOCAL_WORLD_SIZE)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // int(os.environ.get("LOCAL_WORLD_SIZE", 1))


def check_memory(cfg, num_classes: int, input_size: tuple, in_chans: int, world: int, device) -> Optional[str]:
    """One line saying what the step will hold; a batch that cannot fit the device (or, on the CPU, the
    machine's memory) is refused before work (a ConfigError saying what lowers it)."""
    peak = expected_peak(cfg, num_classes, input_size, in_chans, world)
    if peak is None:
        return None
    available = capacity(device)
    gib = {k: v / 2**30 for k, v in peak.items() if k != "micro_batch"}
    halved = "halved for autocast, " if cfg.train.precision in AUTOCAST else ""
    how = ("measured" if peak["micro_batch"] <= MEASURED_WHOLE
           else f"extrapolated from {MEASURED_WHOLE // 4}-{MEASURED_WHOLE}")
    where = "device memory" if device.type == "cuda" else "memory"
    said = (f"expected peak {where} per process: {gib['total']:.1f} GiB of {available / 2**30:.0f} "
            f"({gib['weights']:.1f} GiB weights, gradients and optimiser state; {gib['activations']:.1f} GiB for a "
            f"micro-batch of {peak['micro_batch']} {halved}{how} on the meta device)")
    if peak["total"] > available:
        raise ConfigError(f"train.batch_size {cfg.train.batch_size} cannot fit: {said}; lower train.batch_size, raise "
                          "train.accumulate_steps, set train.activation_checkpointing=true (ViTs) or "
                          "train.precision=bf16, or lower the sizes that multiply into it (patches, tokens, pairs, "
                          "views, image size)")
    return said

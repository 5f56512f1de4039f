"""A performance model of every method's training step on an H100 and on 8 H100s: derived, not measured.

    python benchmarks/performance_model.py --write BENCHMARKS.md

For each recipe, one training step (forward and backward) runs on the meta device, where nothing is computed,
under two counters: torch's FlopCounterMode (matrix products and convolutions: the FLOPs tensor cores run) and
a dispatch mode counting the operators that launch a kernel (views launch none). From those, per step:

- compute time = FLOPs / (989 TFLOPS, the H100 SXM's dense bf16 peak, x MFU), for MFU 0.5 and 0.3;
- launch time = launches x 5 us (eager PyTorch's host cost per kernel; the GPU idles when this is longer);
- the step takes the longer of the two (the host queues kernels while the GPU runs earlier ones);
- on 8 GPUs each takes batch / 8 and the gradients are all-reduced in buckets during the backward pass
  (2 x bytes / 450 GB/s of NVLink bus bandwidth, counted where it exceeds the backward pass, two thirds of the
  step);
- data: images/s a node must decode, against the per-core rate measured in BENCHMARKS.md's ImageNet-scale table
  (280 images/s per core for whole images in 512 px canvases); CIFAR-sized sets sit on the GPU and decode nothing.

The optimiser step (a few fused kernels) and the samplers' share of host time are in the launch count only as
far as they run inside the method's step. These are estimates to plan with, to be replaced by the measured
rows of `pytest -m cuda`'s timed smoke benchmark once a GPU runs it."""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

PEAK_BF16, MFU, LAUNCH_S, NVLINK_BPS, DECODE_PER_CORE = 989e12, (0.5, 0.3), 5e-6, 450e9, 280
BEGIN, END = "<!-- model:begin -->", "<!-- model:end -->"
RECIPES = ["rr_cifar10", "sr_cifar10", "sr_additive_cifar10", "simclr_cifar10", "rotation_cifar10",
           "deepcluster_cifar10", "part_cifar10", "mae_cifar10", "mp3_cifar10", "droppos_cifar10",
           "rr_imagenet", "sr_imagenet", "part_imagenet", "mae_imagenet", "mp3_imagenet", "droppos_imagenet"]


class Launches(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += not func.is_view
        return func(*args, **(kwargs or {}))


def step_counts(recipe: str, images: int) -> dict:
    """FLOPs and launching operators of one training step of ``images`` images, on the meta device."""
    from spatialssl.engine.config import load_config, read_recipe
    from spatialssl.engine.memory import meta_step

    cfg = load_config(base=read_recipe(recipe))
    size = cfg.data.image_size or 32
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, input_size=[size, size], in_chans=3))
    flops, launches = FlopCounterMode(display=False), Launches()
    method, _ = meta_step(cfg, images, 10, (size, size), 3, flops, launches)
    weights = sum(p.numel() for p in method.parameters() if p.requires_grad)
    return {"batch": cfg.train.batch_size, "size": size, "flops": flops.get_total_flops(), "launches": launches.count,
            "weights": weights, "streamed": bool(cfg.data.stream)}


def throughput(counts: dict, per_gpu: int, gpus: int, mfu: float) -> tuple:
    """(images/s over all GPUs, what bounds the step) with ``per_gpu`` images per GPU."""
    compute = counts["flops_per_image"] * per_gpu / (PEAK_BF16 * mfu)
    launch = counts["launches"] * LAUNCH_S
    step, bound = (compute, "compute") if compute >= launch else (launch, "launches")
    if gpus > 1:
        reduce = 2 * counts["weights"] * 4 / NVLINK_BPS
        hidden = 2 / 3 * step  # the backward pass's share of the step, during which buckets are sent
        if reduce > hidden:
            step, bound = step + reduce - hidden, "all-reduce"
    return gpus * per_gpu / step, bound


def table() -> str:
    from spatialssl.studies.bench import machine

    lines = [BEGIN, "## Performance model: H100 and 8 H100s (derived, not measured)", "",
             f"Counted on: {machine(torch.device('cpu'))}, the step run on the meta device. "
             "Command: `python benchmarks/performance_model.py --write BENCHMARKS.md`; its docstring states the "
             "model. Images/s at MFU 0.5 / 0.3 of 989 TFLOPS bf16; launches at 5 us each (eager).", "",
             "| recipe | px | batch | GFLOPs / image (fwd+bwd) | launches / step | 1 H100: images/s (bound) | "
             "8 H100: images/s (bound) | decoding cores / node |", "|---|---|---|---|---|---|---|---|"]
    for recipe in RECIPES:
        probe = 8
        counts = step_counts(recipe, probe)
        counts["flops_per_image"] = counts["flops"] / probe
        batch = counts["batch"]
        cells = []
        for gpus in (1, 8):
            rates = [throughput(counts, batch // gpus, gpus, mfu) for mfu in MFU]
            cells.append(f"{rates[0][0]:,.0f} / {rates[1][0]:,.0f} ({rates[0][1]})")
        needed = throughput(counts, batch // 8, 8, MFU[0])[0]
        cores = f"{needed / DECODE_PER_CORE:.0f}" if counts["streamed"] else "0 (on the GPU)"
        lines.append(f"| {recipe} | {counts['size']} | {batch} | {counts['flops_per_image'] / 1e9:.2f} | "
                     f"{counts['launches']:,} | {cells[0]} | {cells[1]} | {cores} |")
    lines += ["", "Launches are counted at 8 images; they hardly depend on the batch. Where the bound is "
                  "launches, `train.compile=true` (fewer, fused kernels) or a larger per-GPU batch is what helps; "
                  "8 GPUs then give less than 8x, because each GPU's share of the batch shrinks while its "
                  "launches do not.", END]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", help="write the table into this BENCHMARKS.md")
    args = parser.parse_args()
    text = table()
    print(text)
    if args.write:
        from spatialssl.studies.bench import write_section
        write_section(Path(args.write), text, BEGIN, END)


if __name__ == "__main__":
    main()

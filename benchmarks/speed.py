"""Pretraining throughput and the share of step time spent sampling/augmenting.

    python benchmarks/speed.py --data /tmp/cifar10 --write BENCHMARKS.md

Times whole optimiser steps of RR (K=4) and SR (K=4, N=2) with ResNet-32 and of PART with
ViT-tiny (patch 4, 64 tokens, 2048 pairs), all at 32 px and batch 128, and, inside the same
steps, the time spent in the samplers (views, patches, boxes). Writes a section of
BENCHMARKS.md naming the machine and the command.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from spatialssl.bench import machine as describe_machine
from spatialssl.bench import write_section as write_marked_section
from spatialssl.config import load_config
from spatialssl.data import load_images, make_demo_images
from spatialssl.methods import build_method

BEGIN, END = "<!-- speed:begin -->", "<!-- speed:end -->"


def machine() -> str:
    return describe_machine(torch.device("cuda" if torch.cuda.is_available() else "cpu"))


class Timed:
    """Wraps a sampler and adds up the seconds spent in it."""

    def __init__(self, fn, device):
        self.fn, self.device, self.seconds = fn, device, 0.0

    def __getattr__(self, name):
        return getattr(self.fn, name)

    def __call__(self, *args):
        sync(self.device)
        start = time.perf_counter()
        out = self.fn(*args)
        sync(self.device)
        self.seconds += time.perf_counter() - start
        return out


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(name: str, overrides: list, images: torch.Tensor, steps: int, warmup: int, device) -> dict:
    cfg = load_config(overrides=["model.backbone=resnet32", "train.batch_size=128", "model.input_size=[32,32]",
                                 *overrides])
    method = build_method(cfg, [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]).to(device)
    samplers = [s for s in ("views", "patches", "boxes") if hasattr(method, s)]
    optimizer = torch.optim.Adam(method.parameters(), lr=1e-3)
    generator = torch.Generator(device=device).manual_seed(0)
    batch = cfg.train.batch_size
    data = images.to(device)
    for step in range(warmup + steps):
        if step == warmup:
            for s in samplers:
                setattr(method, s, Timed(getattr(method, s), device))
            sync(device)
            start = time.perf_counter()
        index = torch.randint(len(data), (batch,), device=device, generator=generator)
        loss, _ = method.training_step(data[index], None, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    sync(device)
    seconds = time.perf_counter() - start
    sampling = sum(getattr(method, s).seconds for s in samplers)
    return {"name": name, "images_per_s": steps * batch / seconds, "step_ms": 1000 * seconds / steps,
            "sampling_share": sampling / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="CIFAR-10 (any layout we read); default: generated 32 px images")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--write", type=Path, help="update this BENCHMARKS.md section")
    args = parser.parse_args()
    device = torch.device(args.device)
    images = (load_images(args.data).images if args.data else make_demo_images(1024, seed=0).images)
    runs = [("RR, K=4", ["method.name=rr", "method.augmentations=4"]),
            ("SR plain, K=4, N=2", ["method.name=sr", "method.augmentations=4", "method.num_patches=2", "method.patch_size=16"]),
            ("SR additive, K=4, N=2", ["method.name=sr", "method.augmentations=4", "method.num_patches=2",
                                       "method.patch_size=16", "method.additive=true"]),
            ("PART ViT-tiny, 2048 pairs", ["method.name=part", "model.backbone=vit_tiny", "model.patch_size=4",
                                           "part.num_pairs=2048", "part.sampling=scale"])]
    rows = [measure(name, o, images, args.steps, args.warmup, device) for name, o in runs]
    lines = [BEGIN, "## Pretraining speed (32 px, batch 128; ResNet-32 for RR/SR, ViT-tiny patch 4 for PART)", "",
             f"Machine: {machine()}.  ",
             f"Data: {args.data or 'generated 32 px images'}; {args.steps} timed steps after {args.warmup} warm-up steps.  ",
             f"Command: `python benchmarks/speed.py {' '.join(sys.argv[1:])}`", "",
             "| method | images/s | ms/step | sampling + augmentation share of step |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['images_per_s']:.1f} | {r['step_ms']:.0f} | {100 * r['sampling_share']:.1f}% |")
    lines.append(END)
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section(args.write, text)


def write_section(path: Path, text: str, begin: str = BEGIN, end: str = END) -> None:
    write_marked_section(path, text, begin, end)


if __name__ == "__main__":
    main()

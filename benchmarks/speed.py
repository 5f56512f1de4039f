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
from pathlib import Path

import torch

from spatialssl.data import load_images, make_demo_images
from spatialssl.studies.bench import machine as describe_machine
from spatialssl.studies.bench import run_ours
from spatialssl.studies.bench import write_section as write_marked_section

BEGIN, END = "<!-- speed:begin -->", "<!-- speed:end -->"


def machine() -> str:
    return describe_machine(torch.device("cuda" if torch.cuda.is_available() else "cpu"))


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
    runs = [("RR, K=4", "rr"), ("SR plain, K=4, N=2", "sr"), ("SR additive, K=4, N=2", "sr_additive"),
            ("PART ViT-tiny, 2048 pairs", "part")]
    rows = [{"name": name, **run_ours(kind, images, 128, args.steps, args.warmup, device, "vit_tiny")}
            for name, kind in runs]
    lines = [BEGIN, "## Pretraining speed (32 px, batch 128; ResNet-32 for RR/SR, ViT-tiny patch 4 for PART)", "",
             f"Machine: {machine()}.  ",
             f"Data: {args.data or 'generated 32 px images'}; {args.steps} timed steps after {args.warmup} warm-up steps.  ",
             f"Command: `python benchmarks/speed.py {' '.join(sys.argv[1:])}`", "",
             "| method | images/s | ms/step | sampling + augmentation share of step |", "|---|---|---|---|"]
    for r in rows:
        step_ms = 1000 * 128 / r["images_per_s"]
        lines.append(f"| {r['name']} | {r['images_per_s']:.1f} | {step_ms:.0f} | {100 * r['outside_share']:.1f}% |")
    lines.append(END)
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section(args.write, text)


def write_section(path: Path, text: str, begin: str = BEGIN, end: str = END) -> None:
    write_marked_section(path, text, begin, end)


if __name__ == "__main__":
    main()

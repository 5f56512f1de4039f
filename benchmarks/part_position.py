"""PART position error after a short pretrain: off-grid vs grid sampling, and the three
relative encoders (paper Tables 4-5, at a CPU budget).

    python benchmarks/part_position.py --data /tmp/cifar10 --write BENCHMARKS.md

Each variant pretrains the same ViT on the same CIFAR-10 subset with the same budget, then
its error is measured on held-out test images: the mean Euclidean distance, in
reference-patch units, between predicted and true (dx, dy) over every ordered pair of
patches, both with the variant's own sampling and with off-grid boxes (a common yardstick).
"Mean predictor" is the error of always predicting the mean true translation.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from spatialssl.analysis import analyse, load_part
from spatialssl.config import load_config
from spatialssl.data import load_images
from spatialssl.train import pretrain

from speed import machine, write_section

BEGIN, END = "<!-- part-position:begin -->", "<!-- part-position:end -->"
VARIANTS = [("off-grid, cross-attention", ["part.sampling=offgrid", "part.encoder=cross_attention"]),
            ("grid, cross-attention", ["part.sampling=grid", "part.encoder=cross_attention"]),
            ("off-grid, pairwise MLP", ["part.sampling=offgrid", "part.encoder=pairwise_mlp"]),
            ("off-grid, full MLP", ["part.sampling=offgrid", "part.encoder=mlp"])]


def position_errors(samples: list) -> tuple:
    """(model error, mean-predictor error) over every ordered pair i != j of the samples."""
    predicted = torch.stack([s.predictions[..., :2] for s in samples])
    truth = torch.stack([s.targets[..., :2] for s in samples])
    off = ~torch.eye(truth.shape[1], dtype=torch.bool)
    predicted, truth = predicted[:, off], truth[:, off]
    model = (predicted - truth).norm(dim=-1).mean().item()
    mean = (truth.mean((0, 1)) - truth).norm(dim=-1).mean().item()
    return model, mean


def evaluate(checkpoint: Path, images: torch.Tensor, sampling: str) -> tuple:
    method, cfg = load_part(checkpoint)
    samples = []
    for start in range(0, len(images), 100):
        samples += analyse(method, cfg, images[start:start + 100], seed=start, sampling=sampling)
    return position_errors(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="CIFAR-10 (any layout we read)")
    parser.add_argument("--train-images", type=int, default=4000)
    parser.add_argument("--test-images", type=int, default=500)
    parser.add_argument("--write", type=Path, help="update this BENCHMARKS.md section")
    parser.add_argument("overrides", nargs="*", help="shared settings, e.g. train.epochs=3")
    args = parser.parse_args()
    shared = ["model.backbone=vit_tiny", "model.depth=6", "model.drop_path=0", "part.num_pairs=512",
              "train.epochs=5", "train.batch_size=64", "optim.lr=0.001", "optim.warmup_epochs=1",
              "train.knn_monitor=0", *args.overrides]
    train = load_images(args.data, "train").subset(args.train_images, seed=0)
    test = load_images(args.data, "test").subset(args.test_images, seed=0).images
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, variant in VARIANTS:
            cfg = load_config("recipes/part_cifar10.yaml", [*shared, *variant, f"data.path={args.data}"])
            started = time.perf_counter()
            last = pretrain(cfg, Path(tmp) / name.replace(" ", "_").replace(",", ""), train_set=train, progress=False)
            seconds = time.perf_counter() - started
            own, own_mean = evaluate(last, test, cfg.part.sampling)
            offgrid, offgrid_mean = evaluate(last, test, "offgrid")
            rows.append((name, own, own_mean, offgrid, offgrid_mean, seconds))
            print(rows[-1], flush=True)
    lines = [BEGIN, "## PART position error after a short pretrain (CIFAR-10, CPU budget)", "",
             f"Machine: {machine()}.  ",
             f"Budget: ViT-tiny with 6 blocks, patch 4 (64 tokens), 512 pairs per image, {args.train_images} "
             f"CIFAR-10 training images, settings `{' '.join(shared)}`; error on {args.test_images} test images, "
             "every ordered pair of patches, in reference-patch units.  ",
             f"Command: `python benchmarks/part_position.py {' '.join(sys.argv[1:])}`", "",
             "| variant | error, own sampling | mean predictor, own | error, off-grid boxes | mean predictor, off-grid | pretrain s |",
             "|---|---|---|---|---|---|"]
    for name, own, own_mean, offgrid, offgrid_mean, seconds in rows:
        lines.append(f"| {name} | {own:.3f} | {own_mean:.3f} | {offgrid:.3f} | {offgrid_mean:.3f} | {seconds:.0f} |")
    lines.append(END)
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section(args.write, text, BEGIN, END)


if __name__ == "__main__":
    main()

"""PART's detection comparison (paper Tables 2 and 4) at a CPU budget: PART and PART-grid pretrained on natural
images (a CIFAR-10 subset upscaled to the canvas size, as the paper pretrains on ImageNet) or on the generated
canvases themselves, then they and a random-init twin finetuned to detect generated shapes at the same budget,
several seeds; COCO box AP on the validation canvases, with the paper's COCO numbers beside them (a different
scale: ViT-B, ImageNet, COCO at 1024 px).

Resumable: every run writes as it finishes (pretraining checkpoints each epoch, detect.json per finetuning) and
a rerun continues where the last one stopped.

    python benchmarks/detection.py --out runs/detection-study --pretrain-data ~/data/cifar10 --seeds 0,1 \
        --write RESULTS.md
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from speed import machine, write_section

from spatialssl.commands.detect import REPORT, detect, read_split
from spatialssl.data.imageset import ImageSet
from spatialssl.data.load import load_data
from spatialssl.detection.generated import write_shapes
from spatialssl.engine.config import load_config
from spatialssl.engine.runlog import read_metrics
from spatialssl.engine.train import pretrain
from spatialssl.metrics import cell, verdict

BEGIN, END = "<!-- detection-cpu:begin -->", "<!-- detection-cpu:end -->"
PRETRAINED = {"PART": ["part.sampling=offgrid"], "PART-grid": ["part.sampling=grid"]}
MODELS = ("random init", "PART-grid", "PART")
PAPER = {"PART": ("42.4", "62.5", "46.8"), "PART-grid": ("41.4", "-", "-"), "random init": ("-", "-", "-")}


def pretrained(label: str, seed: int, cfg_overrides: list, out: Path, train) -> Path:
    """The PART (or PART-grid) checkpoint of ``seed``, pretrained or resumed as needed."""
    folder = out / f"{label}-seed{seed}"
    cfg = load_config("demo_detection", [*PRETRAINED[label], f"train.seed={seed}", *cfg_overrides])
    info = folder / "last.json"
    if info.is_file() and json.loads(info.read_text()).get("epoch", 0) >= cfg.train.epochs:
        return folder / "last.ckpt"
    return pretrain(None if info.is_file() else cfg, folder, resume=info.is_file(), train_set=train, progress=False)


def finetuned(label: str, seed: int, checkpoint: Path, args, data: Path, train_set, val_set) -> dict:
    """The detection report of ``label`` for ``seed``: read when finished, else finetuned (or resumed)."""
    folder = args.out / f"detect-{label.replace(' ', '-')}-seed{seed}"
    if (folder / REPORT).is_file():
        return json.loads((folder / REPORT).read_text())
    settings = [f"train.epochs={args.detect_epochs}", "train.batch_size=16", "optim.lr=3e-4", "optim.warmup_epochs=1",
                f"train.seed={seed}", *args.detect_overrides]
    return detect(checkpoint, data, folder, settings, resume=(folder / "last.ckpt").is_file(),
                  progress=False, scratch=label == "random init", train_set=train_set, val_set=val_set)


def pretext_error(label: str, seeds: list, out: Path) -> str:
    """The pretraining's last-epoch position error (mean ± std over seeds): what the pretext task learned."""
    if label not in PRETRAINED:
        return "-"
    return cell([float(read_metrics(out / f"{label}-seed{seed}")[-1]["position_error"]) for seed in seeds], 2)


def table(reports: dict, keys: tuple, seeds: list, out: Path) -> list:
    lines = ["| model | " + " | ".join(f"{k} (ours, mean ± std)" for k in keys) +
             " | pretext position error | paper COCO AP / AP50 / AP75 |", "|---|" + "---|" * len(keys) + "---|---|"]
    for label in MODELS:
        runs = reports.get(label, [])
        lines.append(f"| {label} | " + " | ".join(cell([r[k] for r in runs]) for k in keys) +
                     f" | {pretext_error(label, seeds, out)} | {' / '.join(PAPER[label])} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/detection-study"))
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--images", default="600,200", help="train,val canvases generated")
    parser.add_argument("--pretrain-data", help="images to pretrain on (any layout we read; its train split); "
                                                    "default: the generated training canvases")
    parser.add_argument("--pretrain-images", type=int, default=5000, help="a fixed subset of --pretrain-data")
    parser.add_argument("--pretrain-epochs", type=int, default=8)
    parser.add_argument("--detect-epochs", type=int, default=12)
    parser.add_argument("--detect-overrides", nargs="*", default=[], help="e.g. detect.masks=false")
    parser.add_argument("--write", type=Path, help="update this RESULTS.md section")
    args = parser.parse_args()
    started = time.perf_counter()
    size = load_config("demo_detection").detect.image_size
    data = args.out / "shapes"
    if not (data / "annotations" / "instances_val.json").is_file():
        write_shapes(data, *map(int, args.images.split(",")), size=size, seed=0)
    cfg = load_config("demo_detection", [f"data.path={data}", *args.detect_overrides])
    train_set, val_set = read_split(cfg, "train"), read_split(cfg, "val", targets=False)
    canvases = ImageSet(train_set.images, source=train_set.source)
    if args.pretrain_data:  # resized at decode to the canvas size: the ViT's tokens cover the same pixels
        natural = load_config("demo_detection", [f"data.path={args.pretrain_data}", f"data.image_size={size}"])
        canvases = load_data(natural, "train").subset(args.pretrain_images, seed=0)
        canvases = ImageSet(canvases.images, source=canvases.source)  # labels unused
    reports: dict = {}
    seeds = [int(seed) for seed in args.seeds.split(",")]
    for seed in seeds:
        for label in MODELS:
            source = "PART" if label == "random init" else label  # the scratch twin takes PART's architecture
            checkpoint = pretrained(source, seed, [f"train.epochs={args.pretrain_epochs}"], args.out, canvases)
            reports.setdefault(label, []).append(finetuned(label, seed, checkpoint, args, data, train_set, val_set))
            print(f"seed {seed} {label}: AP {reports[label][-1]['AP']:.1f}", flush=True)
    keys = ("AP", "AP50", "AP75") + (("mask_AP",) if "mask_AP" in reports["PART"][0] else ())
    ap = {label: [r["AP"] for r in runs] for label, runs in reports.items()}
    wins = [f"- PART over random init, AP: {verdict(ap['PART'], ap['random init'])}",
            f"- PART over PART-grid, AP: {verdict(ap['PART'], ap['PART-grid'])}"]
    demo = load_config("demo_detection")
    lines = [BEGIN, "## Detection at the `cpu` budget (generated shapes; PART Tables 2 and 4 in miniature)", "",
             f"Machine: {machine()}. Whole study: {(time.perf_counter() - started) / 60:.0f} min this call "
             "(earlier calls' finished runs reused).  ",
             f"Command: `python benchmarks/detection.py {' '.join(sys.argv[1:])}`  ",
             f"Data: {len(train_set)} train / {len(val_set)} val generated {size} px canvases, "
             f"{train_set.num_classes} shape classes, 1-4 objects each. Pretraining: {demo.model.backbone} "
             f"({demo.model.depth} blocks, {demo.model.patch_size} px tokens), {args.pretrain_epochs} epochs on "
             f"{len(canvases)} images of {canvases.source} without labels. Detection: the simple feature pyramid "
             f"and torchvision's R-CNN heads, narrowed for a CPU (`recipes/demo_detection.yaml`, "
             f"{' '.join(args.detect_overrides) or 'masks from the data'}), {args.detect_epochs} epochs, batch 16, "
             f"for every model; seeds {args.seeds}.", "",
             *table(reports, keys, seeds, args.out), "",
             "Verdicts (the suite's rule: a win must exceed the seed spread):", *wins, "",
             "Pretext position error: PART's mean distance between predicted and true translations in patch "
             "units (of the reference patch's side), last pretraining epoch; a model that has learned nothing scores "
             "about 3.7 here.", "",
             "The paper's numbers are COCO with ViT-B/16 pretrained on ImageNet-1K, at 1024 px: a different scale, "
             "shown for direction only.", END]
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section(args.write, text, BEGIN, END)


if __name__ == "__main__":
    main()

"""``spatialssl demo --modality detection``: PART's detection experiment in miniature on a CPU. Generated
canvases of shapes (a COCO-style folder written by us), PART pretrained on their images without labels, then
the PART checkpoint and a randomly initialised twin finetuned to detect the shapes at the same budget and
scored with COCO's AP, printed as measured."""
from __future__ import annotations

import shutil
from pathlib import Path

from ..data.imageset import ImageSet
from ..detection.generated import write_shapes
from ..engine.config import load_config
from ..engine.train import pretrain
from .detect import detect, read_split, summary

IMAGES = (300, 100)  # train, val canvases
DETECT_SETTINGS = ["train.epochs=8", "train.batch_size=16", "optim.lr=3e-4", "optim.warmup_epochs=1"]


def run_detection_demo(out_dir="runs/demo-detection", overrides=None, progress: bool = True,
                       images: tuple = IMAGES) -> dict:
    """Pretrain PART, finetune it and its random-init twin for detection; returns {label: report}."""
    out_dir = Path(out_dir)
    cfg = load_config("demo_detection", overrides)
    data = write_shapes(out_dir / "shapes", *images, size=cfg.detect.image_size, seed=cfg.train.seed)
    cfg = load_config("demo_detection", [f"data.path={data}", *(overrides or [])])
    train_set, val_set = read_split(cfg, "train"), read_split(cfg, "val", targets=False)
    print(f"demo detection data: {len(train_set)} train / {len(val_set)} val canvases of {cfg.detect.image_size} px, "
          f"{train_set.num_classes} shape classes ({', '.join(train_set.classes)}), generated in {data}")
    pretrained = out_dir / "part"
    for folder in (pretrained, out_dir / "part-detect", out_dir / "scratch-detect"):
        if (folder / "last.json").is_file():  # a previous demo: start afresh
            shutil.rmtree(folder)
    print(f"\n== PART: pretraining {cfg.model.backbone} ({cfg.model.depth} blocks) for {cfg.train.epochs} epochs on "
          "the training canvases, labels unused")
    ckpt = pretrain(cfg, pretrained, train_set=ImageSet(train_set.images, source=train_set.source), progress=progress)
    reports = {}
    for label, folder, scratch in (("random init", "scratch-detect", True), ("PART", "part-detect", False)):
        print(f"\n== {label}: detection finetuning ({' '.join(DETECT_SETTINGS)})")
        reports[label] = detect(ckpt, data, out_dir / folder, [*DETECT_SETTINGS, *(overrides or [])],
                                progress=progress, scratch=scratch, train_set=train_set, val_set=val_set)
    print(f"\nDetection on the {len(val_set)} validation canvases (COCO AP, %):")
    for label, report in reports.items():
        print(f"{label:<12} {summary(report)}")
    gain = reports["PART"]["AP"] - reports["random init"]["AP"]
    print(f"PART {'gains' if gain > 0 else 'loses'} {abs(gain):.1f} AP points over random init at this budget "
          "(one seed: see RESULTS.md for the seed spread).")
    return reports

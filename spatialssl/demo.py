"""``spatialssl demo``: the whole path on the embedded data set, on a laptop CPU in minutes:
pretrain Relational and Spatial Reasoning, then linearly evaluate them beside random weights."""
from __future__ import annotations

import shutil
from pathlib import Path

from . import checkpoint
from .config import load_config
from .data import demo_splits
from .evaluate import format_results
from .evaluate_checkpoint import evaluate_sets
from .train import pretrain

DEMO_SETTINGS = {
    "model": {"backbone": "resnet8"},
    "method": {"augmentations": 4, "num_patches": 2, "patch_size": 16},
    "train": {"epochs": 6, "batch_size": 64},
    "eval": {"epochs": 50, "patches": [0, 9]},
}
RUNS = (("random weights", "random"), ("relational reasoning", "rr"), ("spatial reasoning", "sr"))


def run_demo(out_dir="runs/demo", overrides=None, progress: bool = True) -> dict:
    train_set, test_set = demo_splits()
    print(f"demo data: {len(train_set)} train / {len(test_set)} test images, 32x32, "
          f"{train_set.num_classes} classes (pairs of shapes), generated")
    rows = {}
    for label, method in RUNS:
        cfg = load_config(base=DEMO_SETTINGS, overrides=[f"method.name={method}", *(overrides or [])])
        run_dir = Path(out_dir) / method
        if (run_dir / "last.json").is_file():  # a previous demo: start afresh
            shutil.rmtree(run_dir)
        print(f"\n== {label}: pretraining {cfg.model.backbone} for {cfg.train.epochs if method != 'random' else 0} epochs")
        ckpt = pretrain(cfg, run_dir, train_set=train_set, monitor=(train_set.subset(1000), test_set),
                        progress=progress)
        backbone, saved = checkpoint.load_backbone(ckpt)
        e = cfg.eval
        print(f"== {label}: linear evaluation ({e.epochs} epochs, image + {max(e.patches)} patch features)")
        rows[label] = evaluate_sets(backbone, saved, train_set, test_set, e.patches)
    print("\nTest accuracy (%) on the demo data:")
    print(format_results(rows))
    return rows

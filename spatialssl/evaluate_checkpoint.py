"""Linear evaluation of a saved checkpoint on any labelled data (cross-domain included)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

from . import checkpoint
from .config import load_config
from .data import load_images
from .errors import DataError
from .evaluate import linear_evaluation, patch_counts_for
from .train import resolve_device


def evaluate_checkpoint(path, data: str, overrides: Optional[list] = None,
                        patch_counts: Optional[Sequence[int]] = None) -> dict:
    """Linear evaluation of ``path`` on ``data``'s train and test splits.

    Normalisation and patch size come from the checkpoint (what the backbone was trained
    with); ``overrides`` may set ``eval.*`` and ``data.*`` (e.g. ``data.labels=coarse``)."""
    backbone, saved = checkpoint.load_backbone(path)
    cfg = load_config(base=saved.to_dict(), overrides=overrides)
    d = cfg.data
    train = load_images(data, "train", d.labels, d.image_size, d.cache)
    test = load_images(data, d.test_split, d.labels, d.image_size, d.cache)
    for split in (train, test):
        if split.labels is None:
            raise DataError(f"linear evaluation needs labels; {split.source} has none")
    cfg.data.mean, cfg.data.std = saved.data.mean, saved.data.std  # what the backbone was trained with
    results = evaluate_sets(backbone, cfg, train, test, patch_counts_for(cfg, patch_counts))
    report = {"checkpoint": str(path), "data": str(data), "method": saved.method.name,
              "knn": results["knn"],
              "linear": {str(n): {"test_acc": r.test_acc, "train_acc": r.train_acc} for n, r in results["linear"].items()}}
    out = Path(path).with_name(f"linear_eval-{Path(data).name or 'data'}.json")
    out.write_text(json.dumps(report, indent=2))
    results["report_path"] = out
    return results


def evaluate_sets(backbone, cfg, train, test, patch_counts) -> dict:
    """``linear_evaluation`` on two labelled ImageSets with the options of ``cfg``: eval.*,
    method.patch_size, data.mean/std (the pretraining normalisation), train.seed/device."""
    e = cfg.eval
    return linear_evaluation(
        backbone, train.images, train.labels, test.images, test.labels, max(train.num_classes, test.num_classes),
        cfg.data.mean, cfg.data.std, cfg.method.patch_size, patch_counts, e.epochs, e.lr, e.batch_size,
        e.affine_augment, e.augment_copies, e.knn_k, cfg.train.seed, str(resolve_device(cfg.train.device)))

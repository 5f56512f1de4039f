"""Linear evaluation of a saved checkpoint on any labelled data (cross-domain included)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

from ..data.load import load_labelled, low_label
from ..engine import build, checkpoint
from ..engine.checks import check_input_size
from ..engine.config import SR_PATCH_METHODS, load_config
from ..engine.distributed import from_environment, resolve_device
from ..engine.runfolder import check_writable
from ..evaluate import linear_evaluation
from ..files import atomic_write, refuse_to_replace, write_or_explain


def evaluate_checkpoint(path, data: str, overrides: Optional[list] = None,
                        patch_counts: Optional[Sequence[int]] = None, report_path=None,
                        overwrite: bool = False) -> dict:
    """Linear evaluation of ``path`` on ``data``'s train and test splits.

    Normalisation and patch size come from the checkpoint (what the backbone was trained
    with); ``overrides`` may set ``eval.*`` and ``data.*`` (e.g. ``data.labels=coarse``).
    The results carry their ``report`` and its ``report_path`` (default: beside the checkpoint, under
    the next free name so an earlier report is kept), whose folder is checked writable first; a given
    ``report_path`` that exists is refused unless ``overwrite``. ``write_report`` writes it, so a caller
    can show the results before a write that may fail. Under torchrun every process extracts the features of
    its share of the images; rank 0 reports."""
    path = checkpoint.run_checkpoint(path)  # a run folder: its last.ckpt, beside which the report goes
    tensors, info = checkpoint.read_checkpoint(path)
    if report_path is None:
        report_path = default_report_path(path, data)
    else:
        refuse_to_replace(report_path, overwrite, "--report")
    report_path = Path(report_path)
    check_writable(report_path.parent, "the report's folder", "pass --report PATH to write it elsewhere")
    backbone, saved = build.backbone_from(tensors, info, path)
    cfg = load_config(base=saved.to_dict(), overrides=overrides)
    ranks, _ = from_environment(cfg.train.device)  # before the data: one process lists a stream's files
    train, test = load_labelled(cfg, ("train", cfg.data.test_split), "linear evaluation", data)
    if cfg.finetune.subjects:
        train = low_label(train, test, cfg.finetune.subjects, cfg.train.seed)
    cfg.data.mean, cfg.data.std = saved.data.mean, saved.data.std  # what the backbone was trained with
    counts = patch_counts_for(cfg, patch_counts)
    patches = [(cfg.method.patch_size, cfg.method.patch_size)] if max(counts) else []
    for split in (train, test):
        check_input_size(backbone, path, split, [split.input_size, *patches])
    results = evaluate_sets(backbone, cfg, train, test, counts, shard=ranks.world > 1)
    results["report"] = {
        "checkpoint": str(path), "data": str(data), "method": saved.method.name,
        **(checkpoint.weights_record(info) or {"weights": "live"}),
        "knn": results["knn"], "knn_k": results["knn_k"], "standardized_features": cfg.eval.standardize,
        "linear": {str(n): {"test_acc": r.test_acc, "train_acc": r.train_acc, "macro_f1": r.macro_f1,
                            "kappa": r.kappa} for n, r in results["linear"].items()}}
    results["report_path"] = report_path
    return results


def default_report_path(checkpoint_path, data) -> Path:
    """``linear_eval-<data>.json`` beside the checkpoint (<data>: a folder's name, a file's without its suffix),
    or ``-2``, ``-3`` ... when earlier reports exist."""
    data = Path(data)
    stem = Path(checkpoint_path).with_name(f"linear_eval-{(data.stem if data.is_file() else data.name) or 'data'}")
    path, number = stem.with_name(stem.name + ".json"), 1
    while path.exists():
        number += 1
        path = stem.with_name(f"{stem.name}-{number}.json")
    return path


def write_report(results: dict) -> Path:
    """Write ``evaluate_checkpoint``'s report; a failure is one line (the results were shown before)."""
    path = results["report_path"]
    write_or_explain(path, lambda: atomic_write(path, lambda tmp: Path(tmp).write_text(
        json.dumps(results["report"], indent=2))), "the results are printed above; pass --report PATH to write it "
                                                   "elsewhere")
    return path


def evaluate_sets(backbone, cfg, train, test, patch_counts, shard: bool = False) -> dict:
    """``linear_evaluation`` on two labelled data sets (read whole or streamed) with the options of ``cfg``: eval.*,
    method.patch_size, data.mean/std (the pretraining normalisation), train.seed/device; ``shard``: see
    ``extract_features``."""
    e = cfg.eval
    return linear_evaluation(
        backbone, train, train.labels, test, test.labels, max(train.num_classes, test.num_classes),
        cfg.data.mean, cfg.data.std, cfg.method.patch_size, patch_counts, e.epochs, e.lr, e.batch_size,
        e.affine_augment, e.augment_copies, e.knn_k, cfg.train.seed, str(resolve_device(cfg.train.device)),
        e.standardize, shard)


def patch_counts_for(cfg, requested: Optional[Sequence[int]] = None) -> list:
    """Patch features make sense for plain Spatial Reasoning (alone or beside SimCLR); other methods use the
    image alone."""
    if requested is not None:
        return sorted(set(requested))
    if cfg.method.name in SR_PATCH_METHODS and not cfg.method.additive:
        return sorted(set(cfg.eval.patches))
    return [0]


def format_results(rows: dict) -> str:
    """A plain-text table: one row per model, columns kNN (and its k) and linear top-1 per patch
    count on the test split, and under it the probes' accuracy on their own training features."""
    counts = sorted({n for r in rows.values() for n in r["linear"]})
    header = f"{'model':<24}{'kNN':>8}{'k':>5}" + "".join(f"{f'lin+{n}p' if n else 'linear':>9}" for n in counts)
    lines = [header, "-" * len(header)]
    for name, r in rows.items():
        rows_of = ((name, f"{100 * r['knn']:>8.2f}{r['knn_k']:>5}", "test_acc"), ("  (probe train acc.)", " " * 13, "train_acc"))
        for label, knn, field in rows_of:
            cells = "".join(f"{100 * getattr(r['linear'][n], field):>9.2f}" if n in r["linear"] else f"{'-':>9}"
                            for n in counts)
            lines.append(f"{label:<24}{knn}{cells}")
    return "\n".join(lines)

"""``spatialssl demo``: the whole path on the embedded data set, on a laptop CPU in minutes:
pretrain Relational and Spatial Reasoning with several seeds, then linearly evaluate them
beside random weights and say, in words, whether each beat random weights."""
from __future__ import annotations

import shutil
from pathlib import Path

from ..data import demo_splits
from ..engine import build
from ..engine.config import load_config
from ..engine.train import pretrain
from ..metrics import cell, verdict
from .linear_eval import evaluate_sets

DEMO_SEEDS = (0, 1, 2)
DEMO_IMAGES = (1000, 1000)  # train, test
RUNS = (("random weights", "random"), ("relational reasoning", "rr"), ("spatial reasoning", "sr"))
BASELINE = "random weights"


def run_demo(out_dir="runs/demo", overrides=None, progress: bool = True, seeds=DEMO_SEEDS,
             images=DEMO_IMAGES) -> dict:
    """Every method with every seed; prints mean ± std over seeds and a verdict per method.
    Returns {label: [per-seed evaluation results]}."""
    train_set, test_set = demo_splits(*images)
    print(f"demo data: {len(train_set)} train / {len(test_set)} test images, 32x32, "
          f"{train_set.num_classes} classes (pairs of shapes), generated; seeds {', '.join(map(str, seeds))}")
    rows: dict = {label: [] for label, _ in RUNS}
    for seed in seeds:
        for label, method in RUNS:
            cfg = load_config("demo", [f"method.name={method}", f"train.seed={seed}", *(overrides or [])])
            run_dir = Path(out_dir) / method / f"seed{seed}"
            if (run_dir / "last.json").is_file():  # a previous demo: start afresh
                shutil.rmtree(run_dir)
            epochs = cfg.train.epochs if method != "random" else 0
            print(f"== seed {seed}, {label}: pretraining {cfg.model.backbone} for {epochs} epochs, "
                  f"then a linear probe ({cfg.eval.epochs} epochs, image + {max(cfg.eval.patches)} patch features)")
            ckpt = pretrain(cfg, run_dir, train_set=train_set, progress=progress)
            backbone, saved = build.load_backbone(ckpt)
            rows[label].append(evaluate_sets(backbone, saved, train_set, test_set, cfg.eval.patches))
    print(f"\nTest accuracy (%) on the demo data, mean ± std over {len(seeds)} seeds:")
    print(seed_table(rows))
    print()
    print("\n".join(verdicts(rows)))
    return rows


def measures(results: list) -> dict:
    """Column name -> accuracies (%) over seeds."""
    columns = {"kNN": [100 * r["knn"] for r in results]}
    for n in sorted(results[0]["linear"]):
        columns["linear" if n == 0 else f"linear + {n} patches"] = [100 * r["linear"][n].test_acc for r in results]
    return columns


def seed_table(rows: dict) -> str:
    names = list(measures(next(iter(rows.values()))))
    lines = [f"{'model':<22}" + "".join(f"{name:>22}" for name in names)]
    lines.append("-" * len(lines[0]))
    for label, results in rows.items():
        columns = measures(results)
        lines.append(f"{label:<22}" + "".join(f"{cell(columns[name]):>22}" for name in names))
    return "\n".join(lines)


WORDS = {"yes": "beats random weights by more than the seed spread",
         "direction only (within seed spread)": "is above random weights, but within the seed spread: not a clear win",
         "no (opposite, within seed spread)": "does NOT beat random weights at this budget (below, within the seed spread)",
         "no": "does NOT beat random weights at this budget (below, beyond the seed spread)"}


def verdicts(rows: dict) -> list:
    """One sentence per method and measure: did it beat random weights? (the suite's rule)."""
    baseline = measures(rows[BASELINE])
    lines = []
    for label, results in rows.items():
        if label == BASELINE:
            continue
        for name, values in measures(results).items():
            gain = sum(values) / len(values) - sum(baseline[name]) / len(baseline[name])
            lines.append(f"{label}, {name}: {gain:+.1f} points; it {WORDS[verdict(values, baseline[name])]}.")
    return lines


FINETUNE_EPOCHS = 30


def run_signal_demo(out_dir="runs/demo-timeseries", overrides=None, progress: bool = True) -> dict:
    """PART on generated multichannel signals: pretrain a 1-D ViT, then finetune it and a
    randomly initialised twin with the same budget, and probe both linearly."""
    from ..data.demo_signals import demo_signal_splits
    from .finetune import finetune

    train_set, test_set = demo_signal_splits()
    print(f"demo signals: {len(train_set)} train / {len(test_set)} test epochs from {len(train_set.subject_ids())} / "
          f"{len(test_set.subject_ids())} subjects, {train_set.num_channels} channels x {train_set.input_size[0]} "
          f"samples, {train_set.num_classes} classes (order and timing of two motifs), generated")
    rows = {}
    for label, method in (("random init", "random"), ("PART", "part")):
        cfg = load_config("demo_timeseries", [f"method.name={method}", *(overrides or [])])
        run_dir = Path(out_dir) / method
        for folder in (run_dir, Path(f"{run_dir}-finetuned")):
            if (folder / "last.json").is_file():  # a previous demo: start afresh
                shutil.rmtree(folder)
        print(f"\n== {label}: pretraining {cfg.model.backbone} ({cfg.model.depth} blocks) for "
              f"{cfg.train.epochs if method != 'random' else 0} epochs")
        ckpt = pretrain(cfg, run_dir, train_set=train_set, progress=progress)
        backbone, saved = build.load_backbone(ckpt)
        print(f"== {label}: linear probe ({cfg.eval.epochs} epochs)")
        probe = evaluate_sets(backbone, saved, train_set, test_set, [0])["linear"][0]
        print(f"== {label}: finetuning {FINETUNE_EPOCHS} epochs")
        tuned = finetune(ckpt, None, f"{run_dir}-finetuned", [f"train.epochs={FINETUNE_EPOCHS}", "train.batch_size=32",
                                                              "optim.warmup_epochs=1", *(overrides or [])],
                         progress=progress, train_set=train_set, test_set=test_set)
        rows[label] = {"probe": probe, "finetune": tuned}
    print("\nTest scores on held-out subjects of the demo signals (accuracy % / macro-F1 / Cohen's kappa):")
    print(f"{'model':<14}{'linear probe':>26}{'finetuned':>26}")
    for label, r in rows.items():
        p, f = r["probe"], r["finetune"]
        print(f"{label:<14}{100 * p.test_acc:>12.1f}{p.macro_f1:>7.3f}{p.kappa:>7.3f}"
              f"{100 * f['test_acc']:>12.1f}{f['macro_f1']:>7.3f}{f['kappa']:>7.3f}")
    return rows

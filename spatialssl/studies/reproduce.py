"""``spatialssl reproduce``: both papers' comparisons on CIFAR-10 at one budget.

Every variant of a study gets the same data, backbone, epochs, batch and seeds; only what
the comparison is about differs. Each finished run keeps its scores in
``OUT/<run>/seed<s>/result.json``, so a suite that stops continues where it stopped
(an unfinished pretraining or finetuning resumes from its last epoch)."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from ..commands.analysis import load_part, position_error
from ..commands.finetune import finetune
from ..commands.linear_eval import evaluate_sets
from ..data import load_images
from ..engine import build
from ..engine.checks import check_against_data, require_labels
from ..engine.config import BUNDLED_RECIPES, load_config
from ..engine.train import pretrain
from ..errors import ConfigError, DataError
from ..files import atomic_write
from .plots import plot
from .results import headline, write_markdown

# Bumped when a method or the evaluation changes meaning, so stored results of the old one are
# not reused: 2 = SR additive patches at random positions, the published PART encoder and
# off-grid default, standardised linear probes.
PROTOCOL = 2
PATCH_COUNTS = (0, 1, 3, 5, 9)  # linear evaluation on the image + this many 3x3-grid patch features
IMAGE_SIZE = 32  # the recipes' patch sizes and ViT token size are for 32 px images


@dataclass(frozen=True)
class Budget:
    """How much compute each run gets. Every run of a study shares these settings."""
    name: str
    train_images: Optional[int]  # a fixed random subset of the training split (pretraining and probes); None: all
    test_images: Optional[int]
    seeds: tuple
    resnet: tuple  # overrides of every SR-study run
    vit: tuple  # overrides of every PART-study run
    finetune: tuple  # overrides of every PART finetuning
    probe_epochs: int
    affine_copies: int  # affine-augmented feature sets of the SR Fig. 4 evaluation
    sr_patches: tuple  # (N, patch size) of the SR plain runs; the first is the main one
    pairs: tuple  # PART #pairs sweep
    default_pairs: int  # #pairs of the other PART variants
    position_images: int  # test images on which the position error is measured
    note: str

    def describe(self) -> str:
        data = (f"a fixed random subset of {self.train_images} CIFAR-10 training images (pretraining and probes) "
                f"and {self.test_images} test images" if self.train_images else "all 50,000 training and 10,000 test images")
        return (f"{data}; seeds {', '.join(map(str, self.seeds))}. SR study: `{' '.join(self.resnet)}`, linear probes "
                f"{self.probe_epochs} epochs, affine evaluation with {self.affine_copies} augmented copies. PART study: "
                f"`{' '.join(self.vit)}`, {self.default_pairs} pairs unless swept; finetuning `{' '.join(self.finetune)}`; "
                f"position error on {self.position_images} test images. {self.note}")


BUDGETS = {
    "cpu": Budget(
        "cpu", 3000, 2000, (0, 1),
        resnet=("model.backbone=resnet8", "train.epochs=8", "train.batch_size=64"),
        vit=("model.backbone=vit_tiny", "model.depth=3", "model.drop_path=0", "train.epochs=8", "train.batch_size=64",
             "optim.lr=0.001", "optim.warmup_epochs=1"),
        finetune=("train.epochs=4", "train.batch_size=64", "optim.lr=0.001", "optim.warmup_epochs=0.5",
                  "finetune.mixup=0", "finetune.cutmix=0", "finetune.randaugment_ops=0", "finetune.random_erasing=0"),
        probe_epochs=100, affine_copies=2, sr_patches=((2, 16),), pairs=(), default_pairs=256, position_images=500,
        note="Sized for about 2.5 hours on a 2-core CPU: ResNet-8 instead of ResNet-32, a 3-block ViT-tiny, "
             "8 epochs at batch 64 (368 optimiser steps per pretraining, 4x the first cpu budget), about 1/250 "
             "of the papers' compute. Finetuning is 4 epochs without mixup, cutmix, RandAugment or erasing "
             "(the DeiT recipe's regularisation keeps a few-epoch run near chance). Sweeps narrowed to fit: "
             "no patch-size, N=3 or #pairs sweep."),
    "paper": Budget(
        "paper", None, None, (0, 1, 2),
        resnet=("model.backbone=resnet32", "train.epochs=200", "train.batch_size=128"),
        vit=("model.backbone=vit_tiny", "train.epochs=400", "train.batch_size=256"),
        finetune=("train.epochs=400", "train.batch_size=128"),
        probe_epochs=100, affine_copies=10, sr_patches=((2, 16), (3, 16), (2, 12), (2, 20), (2, 24)),
        pairs=(512, 1024, 2048, 4032), default_pairs=2048, position_images=1000,
        note="The papers' settings: ResNet-32, 200 epochs, batch 128, Adam 1e-3 (SR); ViT-tiny, patch 4, the "
             "CIFAR recipe of recipes/part_cifar10.yaml (AdamW, cosine, 20 warm-up epochs), 400 pretraining "
             "epochs (PART Fig. 8's shortest) and 400 finetuning epochs (PART's CIFAR recipe). The #pairs sweep ends at 4032, all distinct ordered pairs of 64 "
             "patches (the paper's 4096 = 64^2 counts each patch with itself). For a GPU."),
}


@dataclass(frozen=True)
class Run:
    """One variant of a study: a recipe and what it changes."""
    key: str  # its folder (never a study's name, so --only is unambiguous)
    label: str  # its row in RESULTS.md
    study: str  # "sr", "part" or "baselines" (the papers' comparison methods, and the combinations)
    recipe: str
    overrides: tuple = ()
    affine: bool = False  # also evaluate with affine-augmented probe training (SR Fig. 4)
    vit: bool = False  # the budget's ViT settings and evaluation (probe, finetuning; position error for PART)


def plan(budget: Budget) -> list:
    """Every run of both studies at ``budget``."""
    sr = [Run("random", "random weights", "sr", "random_cifar10", ("method.patch_size=16",)),
          Run("supervised", "supervised", "sr", "supervised_cifar10", ("method.patch_size=16",)),
          Run("rr", "RR, K=4", "sr", "rr_cifar10", ("method.augmentations=4", "method.patch_size=16"))]
    for n, size in budget.sr_patches:
        overlap = 2 * size > IMAGE_SIZE  # two such patches cannot avoid each other in a 32 px image
        sr.append(Run(f"sr-n{n}-p{size}", f"SR plain, N={n}, {size} px" + (" (may overlap)" if overlap else ""),
                      "sr", "sr_cifar10", ("method.augmentations=4", f"method.num_patches={n}",
                                           f"method.patch_size={size}", f"method.non_overlapping={not overlap}"),
                      affine=(n, size) == (2, 16)))
    sr.append(Run("sr-additive", "SR additive, N=2, 16 px", "sr", "sr_additive_cifar10",
                  ("method.augmentations=4", "method.num_patches=2", "method.patch_size=16")))

    def part(key, label, sampling="offgrid", encoder="cross_attention", pairs=budget.default_pairs):
        return Run(key, label, "part", "part_cifar10",
                   (f"part.sampling={sampling}", f"part.encoder={encoder}", f"part.num_pairs={pairs}"), vit=True)

    parts = [Run("part-random", "random init (no pretraining)", "part", "part_cifar10", ("method.name=random",),
                 vit=True),
             part("part-offgrid", "PART (off-grid), cross-attention"),
             part("part-grid", "PART-grid, cross-attention", sampling="grid"),
             part("part-scale", "PART + scale, cross-attention", sampling="scale"),
             part("part-pairwise", "PART, pairwise MLP", encoder="pairwise_mlp"),
             part("part-mlp", "PART, full MLP", encoder="mlp")]
    parts += [part(f"part-pairs{m}", f"PART, cross-attention, {m} pairs", pairs=m)
              for m in budget.pairs if m != budget.default_pairs]
    return sr + parts + baselines(budget)


def baselines(budget: Budget) -> list:
    """The papers' comparison methods and spatial reasoning inside contrastive learning, on the SR
    study's ResNet or the PART study's ViT settings (evaluation patches of 16 px, as RR's)."""
    evaluation = ("method.patch_size=16",)
    return [Run("simclr", "SimCLR", "baselines", "simclr_cifar10", evaluation),
            Run("rotation", "RotationNet", "baselines", "rotation_cifar10", evaluation),
            Run("deepcluster", "DeepCluster", "baselines", "deepcluster_cifar10", evaluation),
            Run("sr-simclr", "SR + SimCLR", "baselines", "sr_simclr_cifar10", evaluation),
            Run("mae", "MAE (position embedding)", "baselines", "mae_cifar10", vit=True),
            Run("mp3", "MP3 (no position embedding)", "baselines", "mp3_cifar10", vit=True),
            Run("droppos", "DropPos (position embedding)", "baselines", "droppos_cifar10", vit=True),
            Run("part-contrastive", "PART + contrastive", "baselines", "part_contrastive_cifar10",
                (f"part.num_pairs={budget.default_pairs}",), vit=True)]


def run_config(run: Run, budget: Budget, seed: int, data, overrides: Sequence[str] = ()):
    shared = budget.vit if run.vit else budget.resnet
    return load_config(BUNDLED_RECIPES / f"{run.recipe}.yaml",
                       [*shared, *run.overrides, f"train.seed={seed}", "train.knn_monitor=0", f"data.path={data}",
                        *overrides])


def load_splits(data, budget: Budget) -> tuple:
    """The budget's fixed subsets of the train and test splits, checked before any work."""
    splits = []
    for split, count in (("train", budget.train_images), ("test", budget.test_images)):
        images = load_images(data, split)
        require_labels(images, "the reproduction suite")
        if tuple(images.image_size) != (IMAGE_SIZE, IMAGE_SIZE):
            raise DataError(f"the reproduction suite's recipes are for {IMAGE_SIZE} px images (CIFAR-10); {data} "
                            f"holds {images.image_size[0]}x{images.image_size[1]} images")
        splits.append(images.subset(count, seed=0) if count else images)
    return tuple(splits)


def evaluate_resnet(run: Run, last: Path, budget: Budget, train, test) -> dict:
    """The SR paper's protocol: linear probes on the image + 0-9 patch features (and, for the
    Fig. 4 run, the same with affine-augmented probe training)."""
    backbone, cfg = build.load_backbone(last)
    cfg.eval.epochs = budget.probe_epochs
    plain = evaluate_sets(backbone, cfg, train, test, PATCH_COUNTS)
    scores = {"knn": plain["knn"], "linear": {str(n): r.test_acc for n, r in plain["linear"].items()},
              "linear_train": {str(n): r.train_acc for n, r in plain["linear"].items()}}
    if run.affine:
        cfg.eval.affine_augment, cfg.eval.augment_copies = True, budget.affine_copies
        augmented = evaluate_sets(backbone, cfg, train, test, PATCH_COUNTS)
        scores["linear_affine"] = {str(n): r.test_acc for n, r in augmented["linear"].items()}
    return scores


def evaluate_vit(last: Path, folder: Path, budget: Budget, train, test, progress: bool) -> dict:
    """PART's measures: position error (off-grid fixed-size boxes for every variant, and the
    variant's own sampling), a linear probe of the frozen encoder, and a finetuning."""
    backbone, cfg = build.load_backbone(last)
    cfg.eval.epochs = budget.probe_epochs
    probe = evaluate_sets(backbone, cfg, train, test, [0])
    scores = {"knn": probe["knn"], "linear": {"0": probe["linear"][0].test_acc},
              "linear_train": {"0": probe["linear"][0].train_acc}}
    if cfg.method.name == "part":
        method, part_cfg = load_part(last)
        images = test.images[: budget.position_images]
        scores["position_error"], scores["position_error_mean_predictor"] = position_error(
            method, part_cfg, images, "offgrid")
        scores["position_error_own"], scores["position_error_own_mean_predictor"] = position_error(
            method, part_cfg, images)
    tuned_dir = folder / "finetune"
    tuned = finetune(last, None, tuned_dir, list(budget.finetune), resume=(tuned_dir / "last.ckpt").exists(),
                     progress=progress, train_set=train, test_set=test)
    scores["finetune"] = tuned["test_acc"]
    return scores


def run_settings(run: Run, budget: Budget, overrides: Sequence[str] = ()) -> dict:
    """What a stored result must have been made with to be reused."""
    shared = [*budget.vit, "finetune:", *budget.finetune] if run.vit else budget.resnet
    return {"protocol": PROTOCOL, "budget": budget.name, "recipe": run.recipe, "overrides": [*run.overrides, *overrides],
            "shared": list(shared), "train_images": budget.train_images, "test_images": budget.test_images,
            "probe_epochs": budget.probe_epochs}


def stored_result(folder: Path, settings: dict) -> Optional[dict]:
    """The finished result in ``folder``, None if there is none; refused if made otherwise."""
    done = folder / "result.json"
    if not done.is_file():
        return None
    stored = json.loads(done.read_text())
    if stored["settings"] != settings:
        raise ConfigError(f"{folder} holds a result of other settings ({stored['settings']}); "
                          "remove it or choose another --out")
    return stored


def finished_results(budget: Budget, out, only: Optional[Sequence[str]] = None, seeds: Optional[Sequence[int]] = None,
                     overrides: Sequence[str] = ()) -> dict:
    """{run key: [stored result per finished seed]} without running anything (--report-only)."""
    results = {}
    for run in select(plan(budget), only):
        for seed in (tuple(seeds) if seeds else budget.seeds):
            found = stored_result(Path(out) / run.key / f"seed{seed}", run_settings(run, budget, overrides))
            if found is not None:
                results.setdefault(run.key, []).append(found)
    return results


def run_one(run: Run, seed: int, budget: Budget, data, out: Path, train, test, overrides: Sequence[str] = (),
            progress: bool = False) -> dict:
    """Pretrain and evaluate one run with one seed, or return its stored result."""
    folder = Path(out) / run.key / f"seed{seed}"
    settings = run_settings(run, budget, overrides)
    stored = stored_result(folder, settings)
    if stored is not None:
        return stored
    cfg = run_config(run, budget, seed, data, overrides)
    started = time.perf_counter()
    pretrain_dir = folder / "pretrain"
    last = pretrain(cfg, pretrain_dir, resume=(pretrain_dir / "last.ckpt").exists(), train_set=train,
                    progress=progress)
    pretrain_s = time.perf_counter() - started
    if run.vit:
        scores = evaluate_vit(last, folder, budget, train, test, progress)
    else:
        scores = evaluate_resnet(run, last, budget, train, test)
    result = {"run": run.key, "seed": seed, "settings": settings, "commit": commit(), "pretrain_s": pretrain_s,
              "total_s": time.perf_counter() - started, **scores}
    atomic_write(folder / "result.json", lambda tmp: Path(tmp).write_text(json.dumps(result, indent=2)))
    return result


def select(runs: list, only: Optional[Sequence[str]]) -> list:
    """The runs of the named studies or run keys (all when ``only`` is empty)."""
    if not only:
        return runs
    known = {r.study for r in runs} | {r.key for r in runs}
    unknown = [name for name in only if name not in known]
    if unknown:
        raise ConfigError(f"--only {', '.join(unknown)}: not a study or run; choose from {', '.join(sorted(known))}")
    return [r for r in runs if r.study in only or r.key in only]


def run_suite(budget: Budget, data, out, only: Optional[Sequence[str]] = None, seeds: Optional[Sequence[int]] = None,
              overrides: Sequence[str] = (), progress: bool = False, log=print) -> dict:
    """Every selected run with every seed; returns {run key: [result per seed]}."""
    runs = select(plan(budget), only)
    seeds = tuple(seeds) if seeds else budget.seeds
    configs = [run_config(run, budget, seeds[0], data, overrides) for run in runs]  # a bad override: refused now
    train, test = load_splits(data, budget)
    for cfg in configs:  # and impossible geometry too, before any work
        check_against_data(cfg, train)
    results = {}
    for index, run in enumerate(runs, 1):
        for seed in seeds:
            started = time.perf_counter()
            result = run_one(run, seed, budget, data, Path(out), train, test, overrides, progress)
            results.setdefault(run.key, []).append(result)
            log(f"[{index}/{len(runs)}] {run.label}, seed {seed}: {headline(result)} "
                f"({time.perf_counter() - started:.0f} s)")
    return results


def commit() -> str:
    """The checkout's commit (and whether it has uncommitted changes), for RESULTS.md."""
    import subprocess
    here = Path(__file__).parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return head.stdout.strip() + (" with uncommitted changes" if dirty.stdout.strip() else "")


def report(results: dict, budget: Budget, write: Path, command: str, wall_s: float) -> str:
    """Write the budget's section of ``write`` (RESULTS.md) and its plots beside it."""
    from ..engine.distributed import resolve_device
    from .bench import machine

    labels = {r.key: r.label for r in plan(budget)}
    studies = {r.key: r.study for r in plan(budget)}
    seeds = sorted({r["seed"] for runs in results.values() for r in runs})
    figures = plot(results, labels, write.parent / "results" / budget.name, studies)
    run_s = sum(r["total_s"] for runs in results.values() for r in runs)
    header = [f"Machine: {machine(resolve_device('auto'))}.  ",
              f"Runs made at commit {', '.join(sorted({r.get('commit', 'unknown') for rs in results.values() for r in rs}))}; "
              f"this report at {commit()}.  ",
              f"Budget: {budget.describe()}  ",
              f"Seeds run: {', '.join(map(str, seeds))}; ± is the standard deviation over seeds.  ",
              f"Time: {run_s / 60:.0f} min in runs (this invocation {wall_s / 60:.0f} min; stored runs are reused).  ",
              f"Command: `{command}`"]
    return write_markdown(write, budget.name, header, results, labels, figures, studies)


def run_reproduce(args) -> str:
    """The ``reproduce`` command: plan (``--dry-run``) or run the suite, then write RESULTS.md."""
    import shlex
    import sys

    budget = BUDGETS[args.budget]
    if args.dry_run:
        runs = select(plan(budget), args.only)
        seeds = args.seeds or budget.seeds
        lines = [f"budget {budget.name}: {budget.describe()}", ""]
        lines += [f"{r.key:<16} {r.label:<36} {r.recipe} {' '.join(r.overrides)}" for r in runs]
        lines.append(f"\n{len(runs)} runs x {len(seeds)} seeds; nothing was run (--dry-run)")
        return "\n".join(lines)
    started = time.perf_counter()
    if args.report_only:
        results = finished_results(budget, args.out, args.only, args.seeds, args.overrides)
        if not results:
            raise ConfigError(f"--report-only: {args.out} holds no finished run of the {budget.name} budget")
    else:
        results = run_suite(budget, args.data, Path(args.out), args.only, args.seeds, args.overrides,
                            progress=not args.no_progress)
    command = "spatialssl " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if args.write:  # every finished run of the budget, so a run of one study keeps the others' tables
        everything = finished_results(budget, args.out, None, args.seeds, args.overrides)
        report(everything, budget, Path(args.write), command, time.perf_counter() - started)
        return f"wrote the {budget.name} section of {args.write} and its plots"
    return "done; pass --write RESULTS.md to write the tables and plots"

"""The ``spatialssl`` command: subcommands parse, validate and call the library."""
from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

from . import __version__
from .errors import ConfigError, Interrupted, SpatialSSLError, SpatialSSLWarning
from .samplers.boxes import MODES as BOX_MODES

# Each command's --help ends with its own examples; the top-level one with the commonest path.
EXAMPLES = {
    "spatialssl": ("spatialssl demo",
                   "spatialssl pretrain --config recipes/sr_cifar10.yaml --data ~/data/cifar10 --out runs/sr",
                   "spatialssl linear-eval --checkpoint runs/sr/last.ckpt --data ~/data/cifar10",
                   "spatialssl options optim"),
    "demo": ("spatialssl demo", "spatialssl demo --modality timeseries train.epochs=2"),
    "pretrain": ("spatialssl pretrain --config recipes/sr_cifar10.yaml --data ~/data/cifar10 --out runs/sr",
                 "spatialssl pretrain --config sr_cifar10 --data ~/data/cifar10 --out runs/sr3 method.num_patches=3",
                 "spatialssl pretrain --out runs/sr --resume train.epochs=300"),
    "linear-eval": ("spatialssl linear-eval --checkpoint runs/sr/last.ckpt --data ~/data/cifar100 --patches 0,1,3,9",),
    "finetune": ("spatialssl finetune --checkpoint runs/part/last.ckpt --data ~/data/cifar10 --out runs/part-ft",
                 "spatialssl finetune --scratch --config part_cifar10 --data ~/data/cifar10 --out runs/part-ft0"),
    "detect": ("spatialssl detect --checkpoint runs/part/last.ckpt --data ~/data/coco --out runs/part-det",),
    "detect-eval": ("spatialssl detect-eval --checkpoint runs/part-det/last.ckpt --report runs/part-det/ap.json",),
    "bench": ("spatialssl bench --data ~/data/cifar10 --methods sr,part --write BENCHMARKS.md",),
    "reproduce": ("spatialssl reproduce --data ~/data/cifar10 --budget cpu --write RESULTS.md",
                  "spatialssl reproduce --dry-run --only part"),
    "export": ("spatialssl export --checkpoint runs/part/last.ckpt --out part_vit_tiny.safetensors",
               "spatialssl export --checkpoint runs/part/last.ckpt --out exports/part_vit_tiny --format hf",
               "spatialssl export --checkpoint runs/part-det/last.ckpt --out exports/part_vitdet --format detectron2"),
    "reconstruct": ("spatialssl reconstruct --checkpoint runs/part/last.ckpt --data ~/data/cifar10 --out rebuilt.png",),
    "symmetry": ("spatialssl symmetry --checkpoint runs/part/last.ckpt --data ~/data/cifar10 --out symmetry.png",),
    "uncertainty": ("spatialssl uncertainty --checkpoint runs/part/last.ckpt --data ~/data/cifar10 --seed 3",),
    "options": ("spatialssl options", "spatialssl options optim", "spatialssl options optim.lr"),
    "shard": ("spatialssl shard --data ~/data/imagenet --out /data/imagenet-shards",
              "spatialssl shard --data ~/data/cifar10 --out shards/cifar10 --split train --samples-per-shard 5000"),
}

LAYOUTS = "README's --data says how each is laid out"
IMAGE_DATA = ("CIFAR-10/100, STL-10 or tiny-imagenet-200 folders, class folders, a folder of images, an .npz of "
              "images, WebDataset shards (a folder, a .tar or a brace pattern), a saved Hugging Face dataset")
DATA_HELP = f"{IMAGE_DATA}; for vit1d_* backbones an .npz of epochs, WFDB or EDF recordings ({LAYOUTS})"
OVERRIDES_HELP = "section.key=value (see `spatialssl options`)"


# command: (what it is, what its PNG shows, what --seed draws)
FIGURES = {
    "reconstruct": ("PART: rebuild images from predicted translations (paper Fig. 4)",
                    "per image, the image, its patches at their true places, and the patches placed by the predicted "
                    "translations from one reference patch (outlined); prints the mean position error",
                    "the images, their boxes and each image's reference patch"),
    "symmetry": ("PART: predicted vs true dx/dy matrices and their antisymmetry (Fig. 6)",
                 "for one image, the predicted and the true dx and dy of every ordered pair of its patches; prints "
                 "how far each matrix is from antisymmetric (dx(i, j) = -dx(j, i) scaled by the boxes' sizes)",
                 "the image and its boxes"),
    "uncertainty": ("PART: per-patch spread of predicted positions across references (Fig. 5)",
                    "for one image, one target patch placed from every other patch as reference, beside its true "
                    "centre, and a map of each patch's spread of placements; prints the mean and largest spread in "
                    "pixels",
                    "the image, its boxes and the target patch"),
}


def _patch_list(text: str) -> list:
    try:
        return [int(n) for n in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--patches takes numbers separated by commas, e.g. 0,1,3,9; got {text!r}")


def version_line() -> str:
    import torch

    cuda = f"CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s)" if torch.cuda.is_available() else "no GPU"
    return f"spatialssl {__version__} (torch {torch.__version__}, {cuda}, Python {platform.python_version()})"


class VersionAction(argparse.Action):
    """``--version``: asks torch about GPUs only when given, not on every command."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_line())
        parser.exit()


class ExamplesFormatter(argparse.HelpFormatter):
    """Prose wrapped to the terminal; the indented example lines kept whole, so they paste as they are."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        fill = super()._fill_text
        return "\n".join(line if line.startswith("  ") else fill(line, width, indent) for line in text.splitlines())


def _examples(command: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in EXAMPLES[command])


class OneLineParser(argparse.ArgumentParser):
    """A usage mistake is one line naming it and where help is (argparse prints the usage too)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, formatter_class=ExamplesFormatter, **kwargs)

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="spatialssl", description="Self-supervised pretraining by spatial reasoning.",
                           epilog=_examples("spatialssl") + "\n\n`spatialssl COMMAND --help` shows a command's options "
                           "and examples.")
    parser.add_argument("--version", action=VersionAction,
                        help="spatialssl's version, with torch's and the accelerator (for bug reports)")
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info",
                        help="what the 'spatialssl' logger shows (progress lines when output is not a terminal)")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="the whole path on embedded data in minutes on a CPU: RR and SR on "
                               "images, PART on signals (--modality timeseries) or for detection (--modality detection)")
    demo.add_argument("--out", help="where the demo's runs go (default runs/demo, runs/demo-timeseries or "
                                    "runs/demo-detection)")
    demo.add_argument("--modality", choices=("images", "timeseries", "detection"), default="images",
                      help="images: RR/SR on generated shapes; timeseries: PART 1-D on generated signals; detection: "
                           "PART vs random init finetuned to detect generated shapes (needs spatialssl[detection])")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    demo.add_argument("overrides", nargs="*", help=f"{OVERRIDES_HELP}, e.g. train.epochs=2")

    pre = commands.add_parser("pretrain", help="pretrain a backbone")
    pre.add_argument("--config", help="a YAML recipe (see recipes/)")
    pre.add_argument("--data", help=DATA_HELP)
    pre.add_argument("--out", required=True, help="run folder: checkpoints, metrics.csv, tensorboard/")
    pre.add_argument("--resume", action="store_true", help="continue the run in --out where it stopped")
    pre.add_argument("--overwrite", action="store_true", help="replace the run already in --out (its checkpoints, logs and reports)")
    pre.add_argument("--download", action="store_true", help="download data.dataset into --data first (needs torchvision)")
    pre.add_argument("--no-progress", action="store_true", help="no progress bars")
    pre.add_argument("overrides", nargs="*", help=f"{OVERRIDES_HELP}, e.g. method.num_patches=3")

    lin = commands.add_parser("linear-eval", help="linear evaluation of a checkpoint")
    lin.add_argument("--checkpoint", required=True, help="a run folder of pretrain (or its last.ckpt)")
    lin.add_argument("--data", required=True, help=DATA_HELP + " (with labels, train and test splits)")
    lin.add_argument("--patches", type=_patch_list, help="patch-feature counts to evaluate, from 0,1,3,5,7,9")
    lin.add_argument("--epochs", type=int, help="linear-probe epochs (default 100)")
    lin.add_argument("--affine-augment", action="store_true", help="affine augmentation of training images")
    lin.add_argument("--report", help="where to write the JSON report (default: linear_eval-<data>.json beside "
                                      "the checkpoint, or -2, -3 ... when earlier reports are there: they are kept)")
    lin.add_argument("--overwrite", action="store_true", help="replace an existing --report")
    lin.add_argument("overrides", nargs="*", help=f"{OVERRIDES_HELP}, e.g. data.labels=coarse eval.lr=1e-3")
    fine = commands.add_parser("finetune", help="finetune a pretrained checkpoint end to end on labelled data")
    fine.add_argument("--checkpoint", help="a run folder of pretrain, or its last.ckpt (not needed with --resume)")
    fine.add_argument("--scratch", action="store_true", help="the architecture of --checkpoint, or of --config, "
                                                             "from random weights: the baseline at the same budget")
    fine.add_argument("--config", help="with --scratch instead of --checkpoint: a pretraining recipe whose model "
                                       "is finetuned from random weights, e.g. recipes/part_cifar10.yaml")
    fine.add_argument("--data", help=DATA_HELP + " (with labels, train and test splits)")
    fine.add_argument("--out", required=True, help="run folder of the finetuning")
    fine.add_argument("--epochs", type=int, help="finetuning epochs (default 100)")
    fine.add_argument("--resume", action="store_true", help="continue the finetuning in --out where it stopped")
    fine.add_argument("--overwrite", action="store_true", help="replace the run already in --out (its checkpoints, logs and reports)")
    fine.add_argument("--no-progress", action="store_true", help="no progress bars")
    fine.add_argument("overrides", nargs="*", help=f"{OVERRIDES_HELP}, e.g. finetune.mixup=0 optim.lr=1e-3")

    det = commands.add_parser("detect", help="finetune a pretrained checkpoint for object detection on COCO-style "
                              "data (ViTDet pyramid + Mask/Faster R-CNN; needs spatialssl[detection])")
    det.add_argument("--checkpoint", help="a run folder of pretrain, or its last.ckpt (not needed with --resume)")
    det.add_argument("--data", help="a COCO-style folder: annotations/instances_{train,val}.json and the images "
                                    "in train/ (or train2017/) and val/")
    det.add_argument("--out", required=True, help="run folder of the detection finetuning")
    det.add_argument("--scratch", action="store_true", help="the checkpoint's architecture from random weights: "
                                                            "the baseline at the same budget")
    det.add_argument("--coco", action="store_true", help="ViTDet-B's COCO recipe (recipes/overlays/detect_coco.yaml: "
                                                         "1024 px, batch 64, 100 epochs, layer decay, step schedule, "
                                                         "streamed), as PART's Table 2 ran")
    det.add_argument("--resume", action="store_true", help="continue the run in --out where it stopped")
    det.add_argument("--overwrite", action="store_true", help="replace the run already in --out (its checkpoints, logs and reports)")
    det.add_argument("--no-progress", action="store_true", help="no progress bars")
    det.add_argument("overrides", nargs="*", help=f"{OVERRIDES_HELP}, e.g. detect.image_size=512 train.epochs=24")
    deval = commands.add_parser("detect-eval", help="COCO AP of a detection checkpoint")
    deval.add_argument("--checkpoint", required=True, help="a run folder of detect (or its last.ckpt)")
    deval.add_argument("--data", help="a COCO-style folder (default: the run's)")
    deval.add_argument("--split", help="which annotations/instances_<split>.json (default: the run's, val)")
    deval.add_argument("--report", help="write the scores to this JSON file")
    deval.add_argument("--overwrite", action="store_true", help="replace an existing --report")

    ben = commands.add_parser("bench", help="time our batched data path against per-image Pillow in DataLoader workers")
    ben.add_argument("--data", help=DATA_HELP + " (default: generated 32 px images)")
    ben.add_argument("--image-size", type=int, help="resize to this size (default: the data's own; 32 px for shards "
                                                    "and saved datasets, which are streamed)")
    ben.add_argument("--methods", default="rr,sr,sr_additive,part", help="from rr,sr,sr_additive,part (default all)")
    ben.add_argument("--steps", type=int, default=10, help="timed steps per path (default 10)")
    ben.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    ben.add_argument("--workers", type=int, help="DataLoader workers of the conventional path (default: all cores)")
    ben.add_argument("--batch", type=int, default=128, help="images per step (default 128)")
    ben.add_argument("--vit", default="vit_tiny", choices=("vit_tiny", "vit_small", "vit_base"), help="PART's ViT")
    ben.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ben.add_argument("--write", help="write the rows into this BENCHMARKS.md, with the machine named")

    rep = commands.add_parser("reproduce", help="the papers' comparisons on CIFAR-10 at one budget -> RESULTS.md")
    rep.add_argument("--data", help=DATA_HELP + " (CIFAR-10, 32 px, labelled train and test splits)")
    rep.add_argument("--budget", choices=("cpu", "paper"), default="cpu",
                     help="cpu: about an hour on a 2-core CPU; paper: the papers' epochs and full data (a GPU)")
    rep.add_argument("--out", default="runs/reproduce", help="run folders; finished runs are reused (default runs/reproduce)")
    rep.add_argument("--write", help="write the budget's section of this RESULTS.md (plots go to results/<budget>/ beside it)")
    rep.add_argument("--only", type=lambda t: t.split(","), help="comma-separated studies (sr, part) or run names")
    rep.add_argument("--seeds", type=lambda t: [int(s) for s in t.split(",")], help="comma-separated seeds "
                     "(default: the budget's)")
    rep.add_argument("--dry-run", action="store_true", help="list the runs and settings, run nothing")
    rep.add_argument("--report-only", action="store_true",
                     help="write --write from the runs finished in --out so far, run nothing (no --data needed)")
    rep.add_argument("--no-progress", action="store_true", help="no progress bars")
    rep.add_argument("overrides", nargs="*", help=f"{OVERRIDES_HELP} for every pretraining, e.g. "
                     "train.precision=bf16")

    exp = commands.add_parser("export", help="write a checkpoint's backbone for timm, torchvision, the Hugging Face "
                                          "Hub or detectron2's ViTDet")
    exp.add_argument("--checkpoint", required=True, help="a run folder (or its last.ckpt)")
    exp.add_argument("--out", required=True, help="output .safetensors file (a .json beside it says how to load it), "
                                                  "or a folder with --format")
    # the choices are commands.export.FORMATS, spelled out: importing it loads the engine
    exp.add_argument("--format", choices=("timm", "torchvision", "hf", "detectron2"),
                     help="a folder (model.safetensors, config.json) that timm.create_model('local-dir:OUT', "
                          "pretrained=True) loads | that torchvision's ResNet loads | for the Hugging Face Hub, "
                          "with a model card | a folder (vitdet_init.pth, config.json) of an image ViT for "
                          "detectron2 ViTDet's train.init_checkpoint, with the command that finetunes it")
    exp.add_argument("--push", metavar="REPO_ID", help="with --format hf: upload the folder to the Hub as REPO_ID "
                                                       "(needs huggingface_hub and a login)")
    exp.add_argument("--overwrite", action="store_true", help="replace an existing --out")

    shard = commands.add_parser("shard", help="write WebDataset shards (OUT/SPLIT-000000.tar ...) from anything --data "
                                "reads, in its order: image files copied as they are, arrays as PNG")
    shard.add_argument("--data", required=True, help=f"{IMAGE_DATA} ({LAYOUTS})")
    shard.add_argument("--out", required=True, help="the folder of the shards")
    shard.add_argument("--split", help="one split (default: train, and test where the data has one)")
    shard.add_argument("--samples-per-shard", type=int, default=1000, help="samples in each shard (default 1000)")
    shard.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    shard.add_argument("--no-progress", action="store_true", help="no progress bar")

    listing = "every config option (section.key) with its default, range or choices and meaning"
    opts = commands.add_parser("options", help=listing, description=f"{listing}, from the declarations the "
                               "config's checks enforce")
    opts.add_argument("name", nargs="?", metavar="SECTION | KEY", help="one section (optim) or option (optim.lr); "
                                                                     "default: all of them")

    for name, (text, shows, drawn) in FIGURES.items():
        figure = commands.add_parser(name, help=text, description=f"{text}. Writes a PNG: {shows}")
        figure.add_argument("--checkpoint", required=True, help="a PART run folder or last.ckpt (images, not signals)")
        figure.add_argument("--data", required=True, help=f"images of the size the model was trained on: {IMAGE_DATA} "
                                                            f"({LAYOUTS})")
        figure.add_argument("--out", default=f"{name}.png", help=f"PNG to write (default {name}.png)")
        figure.add_argument("--overwrite", action="store_true", help="replace an existing --out")
        figure.add_argument("--split", help="which split's images (default: test, or all the images of data "
                                             "without one)")
        if name == "reconstruct":
            figure.add_argument("--images", type=int, default=4, help="how many images, one row each (default 4)")
        figure.add_argument("--sampling", choices=BOX_MODES, help="how patches are cut: fixed-size off-grid, "
                            "scaled (random sizes), grid or stratified boxes (default: the checkpoint's part.sampling)")
        figure.add_argument("--seed", type=int, default=0, help=f"draws {drawn} (default 0)")
    for name, command in commands.choices.items():
        command.epilog = _examples(name)
    return parser


def run(args: argparse.Namespace) -> None:
    if getattr(args, "checkpoint", None):  # --checkpoint RUN: the run folder names its last.ckpt
        from .engine.checkpoint import run_checkpoint

        args.checkpoint = str(run_checkpoint(args.checkpoint))
    if args.command == "demo":
        from .commands.demo import run_demo, run_signal_demo

        if args.modality == "timeseries":
            run_signal_demo(args.out or "runs/demo-timeseries", args.overrides, progress=not args.no_progress)
        elif args.modality == "detection":
            from .commands.demo_detection import run_detection_demo

            run_detection_demo(args.out or "runs/demo-detection", args.overrides, progress=not args.no_progress)
        else:
            run_demo(args.out or "runs/demo", args.overrides, progress=not args.no_progress)
    elif args.command == "pretrain":
        from .engine.config import load_config
        from .engine.train import pretrain

        overrides = list(args.overrides)
        if args.data:
            overrides.append(f"data.path={args.data}")
        if args.resume and not args.config:
            cfg = _resume_overrides(args.out, overrides)
        else:
            cfg = load_config(args.config, overrides)
        if args.download:
            from .data.download import download

            download(cfg.data.dataset, Path(cfg.data.path))
        path = pretrain(cfg, args.out, resume=args.resume, progress=not args.no_progress, overwrite=args.overwrite)
        if os.environ.get("RANK", "0") == "0":  # under torchrun, one process reports
            print(f"checkpoint: {path}")
    elif args.command == "linear-eval":
        from .commands.linear_eval import evaluate_checkpoint, format_results, write_report
        from .engine.distributed import writes

        overrides = list(args.overrides)
        if args.epochs is not None:
            overrides.append(f"eval.epochs={args.epochs}")
        if args.affine_augment:
            overrides.append("eval.affine_augment=true")
        results = evaluate_checkpoint(args.checkpoint, args.data, overrides, args.patches, args.report,
                                      args.overwrite)
        if not writes():  # under torchrun: rank 0 reports
            return
        print(format_results({Path(args.checkpoint).parent.name or "model": results}), flush=True)
        for n, r in results["linear"].items():
            print(f"linear probe with {n} patch features: macro-F1 {r.macro_f1:.3f}, Cohen's kappa {r.kappa:.3f}",
                  flush=True)  # shown before the report is written: a failed write cannot lose them
        print(f"report: {write_report(results)}")
    elif args.command == "finetune":
        from .commands.finetune import finetune

        if args.config and (args.checkpoint or not args.scratch):
            raise ConfigError("finetune takes --config only with --scratch and without --checkpoint (a pretrained "
                              "run brings its own config)")
        if not args.resume and (not (args.checkpoint or args.config) or not args.data):
            raise ConfigError("finetune needs --checkpoint and --data (or --scratch --config RECIPE --data, or "
                              "--resume with --out)")
        overrides = list(args.overrides) + ([f"train.epochs={args.epochs}"] if args.epochs is not None else [])
        report = finetune(args.checkpoint, args.data, args.out, overrides, args.resume, not args.no_progress,
                          scratch=args.scratch, recipe=args.config, overwrite=args.overwrite)
        if os.environ.get("RANK", "0") == "0":
            print(f"test accuracy {100 * report['test_acc']:.2f}%, macro-F1 {report['macro_f1']:.3f}, Cohen's kappa "
                  f"{report['kappa']:.3f} after {report['epochs']} epochs; report: {Path(args.out) / 'finetune.json'}")
    elif args.command in ("detect", "detect-eval"):
        run_detection(args)
    elif args.command == "bench":
        from .studies.bench import run_bench

        print(run_bench(args))
    elif args.command == "reproduce":
        from .studies.reproduce import run_reproduce

        if not (args.dry_run or args.report_only or args.data):
            raise ConfigError("reproduce needs --data (CIFAR-10; see --help), --dry-run to list the runs, "
                              "or --report-only to report the finished ones")
        if args.report_only and not args.write:
            raise ConfigError("--report-only writes a report; add --write RESULTS.md")
        print(run_reproduce(args))
    elif args.command == "export":
        from .commands.export import export

        described = export(args.checkpoint, args.out, args.format, args.push, args.overwrite)
        if args.format is None:
            print(f"wrote {described['path']}; load it into {described['class']}(**{described['kwargs']})")
        else:
            use = "finetune ViTDet from it, in a detectron2 checkout" if args.format == "detectron2" else "load it"
            print(f"wrote {described['path']}{f' and pushed it to {args.push}' if args.push else ''}; {use} with:\n"
                  f"{described['snippet']}")
    elif args.command == "shard":
        from .commands.shard import summary, write_shards

        written = write_shards(args.data, args.out, args.split, args.samples_per_shard, args.overwrite,
                               not args.no_progress)
        print(summary(written, args.out))
    elif args.command == "options":
        from .commands.options import describe

        print(describe(args.name))
    elif args.command in ("reconstruct", "symmetry", "uncertainty"):
        from .commands.analysis import run_analysis

        shown = getattr(args, "images", 1)  # reconstruct's option; the others show one image
        result = run_analysis(args.command, args.checkpoint, args.data, args.out, args.split, shown, args.seed,
                              args.sampling, args.overwrite)
        print(", ".join(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}" for k, v in result.items()))


def run_detection(args: argparse.Namespace) -> None:
    from .commands.detect import REPORT, detect, detect_eval, summary

    if args.command == "detect-eval":
        report = detect_eval(args.checkpoint, args.data, args.split, args.report, args.overwrite)
        print(summary(report) + (f"; report: {args.report}" if args.report else ""))
        return
    if not args.resume and (not args.checkpoint or not args.data):
        raise ConfigError("detect needs --checkpoint and --data (or --resume with --out)")
    report = detect(args.checkpoint, args.data, args.out, args.overrides, args.resume, not args.no_progress,
                    args.scratch, overwrite=args.overwrite, coco=args.coco)
    if os.environ.get("RANK", "0") == "0":
        print(f"{summary(report)} after {report['epochs']} epochs; report: {Path(args.out) / REPORT}")


def _resume_overrides(out: str, overrides: list):
    """A resumed run's own config with the given overrides on top (e.g. more epochs)."""
    from .engine.checkpoint import read_resumable
    from .engine.config import load_config
    from .engine.runfolder import refuse_links_in

    refuse_links_in(Path(out))  # before reading through one
    _, info = read_resumable(Path(out))
    return load_config(base=info["config"], overrides=overrides)


def _show_warning(message, category, filename, lineno, file=None, line=None, shown=warnings.showwarning):
    """spatialssl's warnings as one line that does not break a progress bar; others as Python shows them."""
    if issubclass(category, SpatialSSLWarning):
        from tqdm import tqdm

        tqdm.write(f"warning: {message}", file=sys.stderr)
    else:
        shown(message, category, filename, lineno, file, line)


class _ToStdout(logging.Handler):
    """Log lines on standard output, in order with what the commands print; the stream is looked up at
    every line, so tests that capture standard output see them too."""

    def emit(self, record: logging.LogRecord) -> None:
        print(self.format(record), file=sys.stdout, flush=True)


@contextmanager
def _logging_to_stdout(level: str):
    """The 'spatialssl' logger at ``level`` on standard output while a command runs, then as it was: a
    program (or test) that calls main() in-process keeps its own logging configuration."""
    logger = logging.getLogger("spatialssl")
    kept = logger.level, logger.propagate
    handler = _ToStdout()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    logger.setLevel(level.upper())
    logger.addHandler(handler)
    logger.propagate = False  # the root logger's handlers would print each line twice
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(kept[0])
        logger.propagate = kept[1]


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with _logging_to_stdout(args.log_level), warnings.catch_warnings():  # restores the caller's showwarning
            warnings.showwarning = _show_warning
            run(args)
    except Interrupted as err:  # a signal asked the run to stop, and it did so resumably
        print(f"stopped: {err}", file=sys.stderr)
        return err.exit_code
    except SpatialSSLError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; --resume continues a run from its last checkpoint (a run stopped before its first "
              "one left nothing behind)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

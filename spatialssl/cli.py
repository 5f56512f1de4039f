"""The ``spatialssl`` command: subcommands parse, validate and call the library."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import SpatialSSLError

EXAMPLES = """examples:
  spatialssl demo
  spatialssl pretrain --config recipes/sr_cifar10.yaml --data ~/data/cifar10 --out runs/sr
  spatialssl pretrain --config recipes/sr_cifar10.yaml --data ~/data/cifar10 --out runs/sr method.num_patches=3 train.epochs=50
  spatialssl pretrain --out runs/sr --resume
  spatialssl linear-eval --checkpoint runs/sr/last.ckpt --data ~/data/cifar100 --patches 0,1,3,9
"""

DATA_HELP = ("a data set: torchvision's CIFAR-10/100 or STL-10 folders, tiny-imagenet-200, a folder with "
             "train/ and test/ class sub-folders, a folder of class sub-folders, a flat folder of images, "
             "or a .npz file")


def _patch_list(text: str) -> list:
    try:
        return [int(n) for n in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--patches takes numbers separated by commas, e.g. 0,1,3,9; got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spatialssl", description="Self-supervised pretraining by spatial reasoning.",
                                     epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="pretrain RR and SR on embedded data and compare them (CPU, minutes)")
    demo.add_argument("--out", default="runs/demo", help="where the demo's runs go (default runs/demo)")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    demo.add_argument("overrides", nargs="*", help="section.key=value, e.g. train.epochs=2")

    pre = commands.add_parser("pretrain", help="pretrain a backbone", epilog=EXAMPLES,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    pre.add_argument("--config", help="a YAML recipe (see recipes/)")
    pre.add_argument("--data", help=DATA_HELP)
    pre.add_argument("--out", required=True, help="run folder: checkpoints, metrics.csv, tensorboard/")
    pre.add_argument("--resume", action="store_true", help="continue the run in --out where it stopped")
    pre.add_argument("--download", action="store_true", help="download data.dataset into --data first (needs torchvision)")
    pre.add_argument("--no-progress", action="store_true", help="no progress bars")
    pre.add_argument("overrides", nargs="*", help="section.key=value, e.g. method.num_patches=3")

    lin = commands.add_parser("linear-eval", help="linear evaluation of a checkpoint",
                              epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    lin.add_argument("--checkpoint", required=True, help="a last.ckpt written by pretrain")
    lin.add_argument("--data", required=True, help=DATA_HELP + " (with labels, train and test splits)")
    lin.add_argument("--patches", type=_patch_list, help="patch-feature counts to evaluate, from 0,1,3,5,7,9")
    lin.add_argument("--epochs", type=int, help="linear-probe epochs (default 100)")
    lin.add_argument("--affine-augment", action="store_true", help="affine augmentation of training images")
    lin.add_argument("overrides", nargs="*", help="section.key=value, e.g. data.labels=coarse eval.lr=1e-3")
    return parser


def run(args: argparse.Namespace) -> None:
    if args.command == "demo":
        from .demo import run_demo

        run_demo(args.out, args.overrides, progress=not args.no_progress)
    elif args.command == "pretrain":
        from .config import load_config
        from .train import pretrain

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
        path = pretrain(cfg, args.out, resume=args.resume, progress=not args.no_progress)
        print(f"checkpoint: {path}")
    elif args.command == "linear-eval":
        from .evaluate import format_results
        from .evaluate_checkpoint import evaluate_checkpoint

        overrides = list(args.overrides)
        if args.epochs is not None:
            overrides.append(f"eval.epochs={args.epochs}")
        if args.affine_augment:
            overrides.append("eval.affine_augment=true")
        results = evaluate_checkpoint(args.checkpoint, args.data, overrides, args.patches)
        print(format_results({Path(args.checkpoint).parent.name or "model": results}))
        print(f"report: {results['report_path']}")


def _resume_overrides(out: str, overrides: list):
    """A resumed run's own config with the given overrides on top (e.g. more epochs)."""
    from .checkpoint import read_checkpoint
    from .config import load_config

    _, info = read_checkpoint(Path(out) / "last.ckpt")
    return load_config(base=info["config"], overrides=overrides)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except SpatialSSLError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; resume with --resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

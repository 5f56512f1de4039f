"""PART for time series on the generated demo signals: pretraining speed in windows/s, and
linear-probe / finetuning scores of PART-pretrained vs randomly initialised 1-D ViTs at
the same finetuning budget (the `spatialssl demo --modality timeseries` run).

    python benchmarks/signals.py --write BENCHMARKS.md
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from speed import machine, write_section

from spatialssl.commands.demo import FINETUNE_EPOCHS, run_signal_demo
from spatialssl.engine.config import load_config
from spatialssl.engine.runlog import read_metrics

BEGIN, END = "<!-- signals:begin -->", "<!-- signals:end -->"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", type=Path, help="update this BENCHMARKS.md section")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        rows = run_signal_demo(out, progress=False)
        seconds = time.perf_counter() - started
        epochs = [float(r["images_per_s"]) for r in read_metrics(Path(out) / "part")][1:]  # first epoch warms up
    settings = load_config("demo_timeseries")
    tokens = settings.part.num_tokens
    rate = sum(epochs) / len(epochs)
    m, t = settings.model, settings.train
    lines = [BEGIN, "## PART for time series (generated demo signals)", "",
             f"Machine: {machine()}.  ",
             f"Setting: `spatialssl demo --modality timeseries` -- {m.backbone} with {m.depth} blocks, windows of "
             f"{m.patch_size} samples, {tokens} windows and {settings.part.num_pairs} pairs per epoch, "
             f"{t.epochs} pretraining epochs (batch {t.batch_size}); then {FINETUNE_EPOCHS} finetuning epochs for "
             f"both models; 640 training epochs from 16 subjects, 160 test epochs from 4 held-out subjects. "
             f"Whole run: {seconds / 60:.1f} min.  ",
             f"Command: `python benchmarks/signals.py {' '.join(sys.argv[1:])}`", "",
             f"Pretraining speed: {rate * tokens:.0f} windows/s ({rate:.1f} signal epochs/s).", "",
             "| model | probe acc % | probe macro-F1 | probe kappa | finetuned acc % | finetuned macro-F1 | finetuned kappa |",
             "|---|---|---|---|---|---|---|"]
    for label, r in rows.items():
        p, f = r["probe"], r["finetune"]
        lines.append(f"| {label} | {100 * p.test_acc:.1f} | {p.macro_f1:.3f} | {p.kappa:.3f} | "
                     f"{100 * f['test_acc']:.1f} | {f['macro_f1']:.3f} | {f['kappa']:.3f} |")
    lines.append(END)
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section(args.write, text, BEGIN, END)


if __name__ == "__main__":
    main()

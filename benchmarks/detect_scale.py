"""`spatialssl detect` as a generated COCO-style set grows (issue 25): peak memory and time of one epoch, the set
held whole against streamed (data.stream=true), at 1k and 10k images. Held whole, memory grows with the set;
streamed, it stays at the batches in flight.

    python benchmarks/detect_scale.py --root /tmp/detect-scale --write BENCHMARKS.md

Resumable: each run's figures are kept beside it, and a rerun measures only what has not finished. Each run is
its own process (`spatialssl detect`, 1 epoch, the narrow CPU heads of tests/test_detect_command.py,
masks on); its peak RSS and its DataLoader worker's are read from getrusage in a wrapper process."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from speed import machine, write_section

BEGIN, END = "<!-- detect-scale:begin -->", "<!-- detect-scale:end -->"
SMALL = ["model.depth=1", "part.num_pairs=16", "train.batch_size=16", "optim.warmup_epochs=0",
         "detect.pyramid_channels=16", "detect.representation_size=32", "detect.box_head_convs=0",
         "detect.rpn_batch_size_per_image=32", "detect.box_batch_size_per_image=16", "detect.proposals_train=64",
         "detect.proposals_test=32", "detect.masks=true", "train.epochs=1", "train.device=cpu"]
RUN = r"""
import json, resource, sys, time
from spatialssl.commands.detect import detect
started = time.perf_counter()
report = detect(sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), progress=False, overwrite=True)
print(json.dumps({"seconds": time.perf_counter() - started, "images": report["images"],
                  "self_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "workers_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def data_set(root: Path, count: int, size: int) -> Path:
    from spatialssl.detection import write_shapes

    folder = root / f"shapes-{count}"
    if not (folder / "annotations" / "instances_val.json").is_file():
        write_shapes(folder, count, 100, size=size, seed=count)
    return folder


def checkpoint(root: Path, data: Path) -> Path:
    from spatialssl.engine.config import load_config
    from spatialssl.engine.train import pretrain

    folder = root / "part"
    if (folder / "last.ckpt").is_file():
        return folder / "last.ckpt"
    cfg = load_config("demo_detection", [f"data.path={data / 'train'}", "train.epochs=0", "model.depth=1",
                                         "part.num_pairs=16", "train.batch_size=16"])
    return pretrain(cfg, folder, progress=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True, help="where the generated sets and runs go")
    parser.add_argument("--counts", default="1000,10000")
    parser.add_argument("--size", type=int, default=64, help="image side and canvas size, px")
    parser.add_argument("--write", type=Path, help="update this BENCHMARKS.md section")
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    sets = {count: data_set(args.root, count, args.size) for count in counts}
    weights = checkpoint(args.root, sets[counts[0]])
    rows = []
    for count in counts:
        for mode, settings in (("held whole", []), ("streamed, 1 worker", ["data.stream=true", "data.workers=1"])):
            out = args.root / "runs" / f"{count}-{'stream' if settings else 'whole'}"
            measured = out.with_name(out.name + ".json")  # a rerun writes the table from the runs that finished
            if measured.is_file():
                rows.append((count, mode, json.loads(measured.read_text())))
                continue
            run = subprocess.run([sys.executable, "-c", RUN, str(weights), str(sets[count]), str(out),
                                  json.dumps([*SMALL, f"detect.image_size={args.size}", *settings])],
                                 capture_output=True, text=True)
            if run.returncode:
                sys.exit(run.stderr[-3000:])
            figures = json.loads(run.stdout.splitlines()[-1])
            measured.write_text(json.dumps(figures))
            rows.append((count, mode, figures))
            print(count, mode, figures, flush=True)
    whole = args.size * args.size * (3 + 4)
    peak = {(count, mode): f["self_mb"] for count, mode, f in rows}
    grown = {mode: peak[counts[-1], mode] - peak[counts[0], mode] for _, mode, _ in rows}
    text = "\n".join([
        "## Detection as the data set grows (generated COCO-style sets, issue 25)", "",
        f"Machine: {machine()}.  ",
        f"Command: `python benchmarks/detect_scale.py --root {args.root} --write BENCHMARKS.md`, measured "
        f"{time.strftime('%Y-%m-%d')}.  ",
        f"Data: generated shapes, {args.size} px, 1-4 objects with masks; one epoch of `spatialssl detect` (Mask "
        "R-CNN heads narrowed for a CPU, batch 16) and the scoring of 100 validation images, each run its own "
        "process. Peak RSS from getrusage: the training process, and the largest of its children (the DataLoader "
        "worker when streamed, a fork that shares the parent's pages).", "",
        "| images | data | epoch + scoring, s | peak RSS, MB | worker's peak RSS, MB |", "|---|---|---|---|---|",
        *[f"| {count:,} | {mode} | {f['seconds']:.0f} | {f['self_mb']:.0f} | "
          f"{f['workers_mb']:.0f} |" for count, mode, f in rows], "",
        f"From {counts[0]:,} to {counts[-1]:,} images the training process's peak grew by "
        + " and by ".join(f"{grown[mode]:.0f} MB {mode}" for mode in grown) +
        f". Held whole it grows with the pixels (canvases and masks: {whole / 2**20 * 1000:.0f} MB per 1,000 "
        f"images at {args.size} px, 3 colour planes and 4 mask slots each, and the copies made reading them); "
        "streamed, only by the parsed annotations and their boxes, while the pixels in flight stay bounded: "
        "(workers x 2 + 2) x batch x (3 + M) x S x S bytes. At COCO's scale held whole is refused before any "
        "decoding (about 370 GB of canvases at 1024 px)."])
    if args.write:
        write_section(args.write, text, BEGIN, END)
    print(text)


if __name__ == "__main__":
    main()

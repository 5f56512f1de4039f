"""What full COCO with `spatialssl detect --coco` needs (PART Table 2's run: ViT-B/16, Mask R-CNN, 1024 px, batch
64 on 8 GPUs), measured on this CPU for one image and scaled, not measured on a GPU.

    python benchmarks/detect_coco_budget.py --write BENCHMARKS.md

One training step (forward and backward, fp32) of ViT-B/16 under ViTDet's pyramid and torchvision's Mask R-CNN
heads, at 1024 px with --objects objects (COCO: 7.3 per image on average), runs here under two counters: torch's
FlopCounterMode (matrix products and convolutions) and the bytes of the tensors alive at the step's peak
(spatialssl.engine.memory.LiveBytes). Scaled to a GPU, per process of 8 with 8 images each:

- device memory = weights, gradients and AdamW's two moments (fp32) + 8 x one image's live tensors, halved for
  bf16 autocast (the factor engine/memory.py uses; estimated) + the batch's canvases and masks;
- step time = 8 x FLOPs per image / (989 TFLOPS, the H100 SXM's dense bf16 peak, x MFU), for two assumed MFUs
  and for the one detectron2's ViTDet model zoo implies (ViT-B Mask R-CNN: 0.314 s an iteration at one image
  per A100, 10.9 GB of training memory per GPU; the memory is scaled from that measurement too);
- an epoch is COCO's 118,287 training images, the run ViTDet-B's 184,375 iterations at batch 64;
- host memory per process: the streamed reader's bound (data.workers x 2 + 2 batches of 8 canvases and their
  masks in flight; README)."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from speed import machine, write_section
from torch.utils.flop_counter import FlopCounterMode

from spatialssl.detection.targets import DetectionTargets
from spatialssl.engine.build import build_method
from spatialssl.engine.config import BUNDLED_RECIPES, load_config, overlay, read_recipe
from spatialssl.engine.memory import AUTOCAST_ACTIVATIONS, LiveBytes

H100_BF16, A100_BF16, MFU, GPUS, PER_GPU, H100_BYTES = 989e12, 312e12, (0.3, 0.15), 8, 8, 80e9
VITDET_SECONDS, VITDET_MEMORY = 0.314, 10.9e9  # detectron2 ViTDet model zoo, mask_rcnn_vitdet_b_100ep, A100s
COCO_TRAIN, ITERATIONS, CLASSES = 118_287, 184_375, 80
BEGIN, END = "<!-- coco-budget:begin -->", "<!-- coco-budget:end -->"


def coco_config(size: int):
    """PART's ImageNet recipe (ViT-B/16) turned into `detect --coco`'s config, as `spatialssl detect` builds it."""
    base = load_config(base=read_recipe("part_imagenet")).to_dict()
    for name in ("detect.yaml", "detect_coco.yaml"):
        base = overlay(base, read_recipe(BUNDLED_RECIPES / "overlays" / name))
    return load_config(base=base, overrides=[f"detect.image_size={size}", f"model.input_size=[{size},{size}]",
                                             "model.init_from=null", "model.in_chans=3"])


def one_image(size: int, objects: int, generator: torch.Generator) -> tuple:
    """A canvas of noise and ``objects`` boxes with their masks, as a streamed batch of one brings them."""
    image = torch.randint(0, 256, (1, 3, size, size), dtype=torch.uint8, generator=generator)
    corner = torch.rand(1, objects, 2, generator=generator) * size * 0.7
    extent = (0.05 + torch.rand(1, objects, 2, generator=generator) * 0.25) * size
    boxes = torch.cat([corner, corner + extent], -1)
    masks = torch.zeros(1, objects, size, size, dtype=torch.uint8)
    for k, (x1, y1, x2, y2) in enumerate(boxes[0].round().long().tolist()):
        masks[0, k, y1:y2, x1:x2] = 1
    classes = torch.randint(0, CLASSES, (1, objects), generator=generator)
    return image, DetectionTargets(boxes, classes, masks)


def measure(size: int, objects: int) -> dict:
    cfg = coco_config(size)
    torch.manual_seed(0)
    method = build_method(cfg, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225], CLASSES).train()
    image, targets = one_image(size, objects, torch.Generator().manual_seed(0))
    flops, live = FlopCounterMode(display=False), LiveBytes()
    started = time.perf_counter()
    with flops, live:
        loss, _ = method.training_step(image, targets, torch.Generator().manual_seed(0))
        loss.backward()
    trained = sum(p.numel() for p in method.parameters() if p.requires_grad)
    return {"cfg": cfg, "flops": flops.get_total_flops(), "live": max(0, live.peak - 4 * trained),
            "trained": trained, "seconds": time.perf_counter() - started,
            "batch_bytes": image.nbytes + targets.masks.nbytes}


def section(m: dict, objects: int, workers: int) -> str:
    cfg, gib = m["cfg"], 2**30
    states = 4 * m["trained"] * (1 + 1 + 2)  # fp32 weights, gradients, AdamW's two moments
    activations = PER_GPU * m["live"] * AUTOCAST_ACTIVATIONS
    device = states + activations + PER_GPU * m["batch_bytes"]
    published = states + PER_GPU * (VITDET_MEMORY - states)  # ViTDet's measured image, 8 times over
    host = (workers * 2 + 2) * PER_GPU * m["batch_bytes"]
    epoch_steps = COCO_TRAIN / (GPUS * PER_GPU)
    vitdet_mfu = m["flops"] / (VITDET_SECONDS * A100_BF16)
    rows = []
    for mfu, said in ((MFU[0], "assumed"), (MFU[1], "assumed"), (vitdet_mfu, "ViTDet's own, measured on A100s")):
        step = PER_GPU * m["flops"] / (H100_BF16 * mfu)
        rows.append(f"| {mfu:.3f} ({said}) | {step:.2f} s | {step * epoch_steps / 60:.0f} min | "
                    f"{step * ITERATIONS / 3600:.0f} h |")
    size = cfg.detect.image_size
    return "\n".join([
        BEGIN, "## Full COCO detection with `detect --coco`: what it needs (derived from one image, not a GPU)", "",
        f"Machine that measured one image: {machine()}. Command: "
        f"`python benchmarks/detect_coco_budget.py {' '.join(sys.argv[1:])}`  ",
        f"One training step of {cfg.model.backbone} ({m['trained'] / 1e6:.0f} M trained parameters) under ViTDet's "
        f"pyramid and torchvision's Mask R-CNN heads at {size} px, {objects} objects with masks, fp32 on this CPU "
        f"({m['seconds']:.0f} s): **{m['flops'] / 1e12:.2f} TFLOPs** forward and backward, "
        f"**{m['live'] / gib:.1f} GiB** of tensors alive at the step's peak (gradients apart).", "",
        "For calibration, detectron2's ViTDet model zoo measured ViT-B Mask R-CNN (100 epochs, 1024 px) on 64 A100s "
        f"at one image per GPU: {VITDET_SECONDS} s per iteration and {VITDET_MEMORY / 1e9:.1f} GB of training memory "
        "per GPU.", "",
        f"Scaled to 8 H100s x {PER_GPU} images (batch 64, as ViTDet-B and PART's Table 2):", "",
        f"- device memory per GPU: **{device / gib:.0f} GiB** from our count ({states / gib:.1f} GiB weights, "
        f"gradients and AdamW's moments; {activations / gib:.1f} GiB for 8 images' activations, fp32's halved "
        f"for bf16 autocast; {PER_GPU * m['batch_bytes'] / gib:.2f} GiB the batch's canvases and masks), but "
        f"**{published / 1e9:.0f} GB** if each image takes what ViTDet measured: "
        + ("within an 80 GB H100, barely. " if published < H100_BYTES else "past an 80 GB H100. ")
        + "Plan on `train.accumulate_steps=2` (4 images at a time) or `train.activation_checkpointing=true`, or 16 "
        "GPUs of 4 images, until a GPU has measured it.",
        f"- host memory per process: the streamed reader's bound, {(workers * 2 + 2)} batches of 8 in flight "
        f"with data.workers={workers}: {host / gib:.1f} GiB at {objects} objects an image (the README's formula; "
        "COCO images with more objects raise it in proportion), plus the parsed annotations.",
        f"- time (one epoch = {epoch_steps:.0f} steps; the run = ViTDet-B's {ITERATIONS:,} steps), at the H100's "
        f"{H100_BF16 / 1e12:.0f} TFLOPS dense bf16 and a model FLOPs utilisation (MFU):", "",
        "| MFU | step | epoch | whole run |", "|---|---|---|---|", *rows, "",
        f"The FLOPs are counted exactly; the MFU is not ours to measure (no GPU has been lent). ViTDet's own "
        f"runs used {vitdet_mfu:.1%} of an A100 (our count of {m['flops'] / 1e12:.2f} TFLOPs per image in {VITDET_SECONDS} s of "
        f"{A100_BF16 / 1e12:.0f} TFLOPS), at one image per GPU with data loading, NMS and RoIAlign inside the step: "
        "the last row is the one to plan with; eight images per GPU should do better. Replace these figures with "
        "measured ones when a GPU runs `spatialssl detect --coco`.", END])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--objects", type=int, default=7, help="objects with masks in the measured image")
    parser.add_argument("--workers", type=int, default=8, help="data.workers per process, for the host bound")
    parser.add_argument("--write", type=Path, help="update this BENCHMARKS.md section")
    args = parser.parse_args()
    text = section(measure(args.size, args.objects), args.objects, args.workers)
    print(text)
    if args.write:
        write_section(args.write, text, BEGIN, END)


if __name__ == "__main__":
    main()

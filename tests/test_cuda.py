"""Opt-in smoke suite for a machine with a GPU: ``pytest -m cuda`` (skipped without CUDA; the default
run leaves it out). Two steps per method with bf16, channels_last and torch.compile, a resume, fp16,
a step free of host syncs under CUDA's sync debug mode, and a 2-GPU torchrun run when there are two."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from spatialssl.data import make_demo_images
from spatialssl.engine.build import build_method
from spatialssl.engine.config import load_config
from spatialssl.engine.runlog import read_metrics
from spatialssl.engine.train import pretrain

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

IMAGES = ["model.backbone=resnet8", "method.patch_size=12"]
VIT = ["model.backbone=vit_tiny", "model.depth=2", "model.patch_size=8", "part.num_pairs=64", "model.drop_path=0.1"]
METHODS = {"rr": [*IMAGES, "method.name=rr"], "sr": [*IMAGES, "method.name=sr"],
           "sr additive": [*IMAGES, "method.name=sr", "method.additive=true"],
           "supervised": [*IMAGES, "method.name=supervised"], "part": [*VIT, "method.name=part"],
           "part + scale": [*VIT, "method.name=part", "part.sampling=scale"]}
METHODS.update({"simclr": [*IMAGES, "method.name=simclr"], "rotation": [*IMAGES, "method.name=rotation"],
                "sr_simclr": [*IMAGES, "method.name=sr_simclr"], "part_contrastive": [*VIT, "method.name=part_contrastive"]})
FAST = ["train.batch_size=32", "train.epochs=1", "train.knn_monitor=0", "train.device=cuda"]


@pytest.fixture(scope="module")
def images():
    return make_demo_images(64, seed=3)


@pytest.mark.parametrize("case", METHODS)
def test_two_steps_with_bf16_channels_last_and_compile_then_resume(case, images, tmp_path):
    cfg = load_config(overrides=[*METHODS[case], *FAST, "train.precision=bf16", "train.channels_last=true",
                                 "train.compile=true", "optim.name=adamw"])
    pretrain(cfg, tmp_path, train_set=images, progress=False)
    pretrain(load_config(overrides=[*METHODS[case], *FAST, "train.precision=bf16", "train.channels_last=true",
                                    "train.compile=true", "optim.name=adamw", "train.epochs=2"]),
             tmp_path, resume=True, train_set=images, progress=False)
    losses = [float(r["loss"]) for r in read_metrics(tmp_path)]
    assert len(losses) == 2 and all(np.isfinite(losses))


def test_fp16_with_a_gradient_scaler(images, tmp_path):
    pretrain(load_config(overrides=[*METHODS["sr"], *FAST, "train.precision=fp16"]), tmp_path, train_set=images,
             progress=False)
    assert np.isfinite(float(read_metrics(tmp_path)[0]["loss"]))


@pytest.mark.parametrize("case", METHODS)
def test_a_step_does_not_wait_for_the_gpu(case, images):
    """CUDA's sync debug mode raises on every host sync: the step (not the loop's periodic NaN check) has none."""
    cfg = load_config(overrides=[*METHODS[case], "model.input_size=[32, 32]"])
    method = build_method(cfg, [0.5] * 3, [0.25] * 3, num_classes=10).cuda()
    batch = images.images[:16].cuda()
    generator = torch.Generator(device="cuda").manual_seed(0)
    method.training_step(batch, None, generator)[0].backward()  # warm-up: caches and lazy initialisation
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        method.training_step(batch, None, generator)[0].backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_torchrun_on_two_gpus_matches_one_process(tmp_path):
    data = tmp_path / "data.npz"
    demo = make_demo_images(64, seed=3)
    np.savez(data, images=demo.images.permute(0, 2, 3, 1).numpy(), labels=demo.labels.numpy())
    settings = ["method.name=supervised", "model.backbone=vit_tiny", "model.depth=1", "train.batch_size=16",
                "train.epochs=1", "train.knn_monitor=0", "optim.name=sgd", f"data.path={data}",
                "augment.scale=[1.0,1.0]", "augment.ratio=[1.0,1.0]", "augment.flip_p=0", "augment.jitter_p=0",
                "augment.gray_p=0"]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "-m", "spatialssl", "pretrain",
               "--no-progress", "--out", str(tmp_path / "two"), *settings]
    subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    pretrain(load_config(overrides=settings), tmp_path / "one", progress=False)
    one, two = load_file(tmp_path / "one" / "last.ckpt"), load_file(tmp_path / "two" / "last.ckpt")
    for key in one:
        if key.startswith("method."):
            torch.testing.assert_close(one[key], two[key], rtol=1e-3, atol=1e-5)


def test_detection_trains_in_bf16_on_the_gpu_and_scores(tmp_path):
    from spatialssl.commands.detect import detect
    from spatialssl.detection import write_shapes

    shapes = write_shapes(tmp_path / "shapes", 32, 8, size=64, seed=0)
    cfg = load_config("demo_detection", [f"data.path={shapes / 'train'}", "train.epochs=1", "train.device=cuda",
                                         "model.depth=2"])
    checkpoint = pretrain(cfg, tmp_path / "part", progress=False)
    report = detect(checkpoint, shapes, tmp_path / "det", ["train.epochs=2", "train.precision=bf16",
                                                          "train.device=cuda", "train.batch_size=8"], progress=False)
    losses = [float(r["loss"]) for r in read_metrics(tmp_path / "det")]
    assert len(losses) == 2 and all(np.isfinite(losses)) and 0 <= report["AP"] <= 100 and "mask_AP" in report


def test_the_stand_in_roi_align_matches_torchvision_on_the_gpu():
    from spatialssl.detection import import_torchvision
    from spatialssl.detection.torchvision_ops import roi_align

    torchvision = import_torchvision()
    x = torch.randn(2, 8, 20, 24, device="cuda")
    rois = torch.tensor([[0, 1.5, 2.0, 15.0, 12.5], [1, 0.0, 0.0, 23.0, 19.0], [1, 5.2, 3.3, 6.1, 9.9]], device="cuda")
    for aligned in (False, True):
        ours = roi_align(x, rois, 0.5, 7, 7, 0, aligned)
        theirs = torchvision.ops.roi_align(x, rois, (7, 7), 0.5, 0, aligned)
        assert torch.allclose(ours, theirs, atol=1e-5)


def test_nvjpeg_decoding_gives_pillows_images_and_trains_on_whole_images(tmp_path):
    from test_gpu_decode import write_mixed
    from spatialssl.data import gpu_decode
    from spatialssl.data.stream import stream_images

    write_mixed(tmp_path / "data")
    decoder = gpu_decode.device_decoder()
    assert decoder is not None, "torchvision's nvJPEG decoding did not load"
    for resize in ("short_side", "whole"):
        pillow = stream_images(tmp_path / "data", "train", 16, resize, workers=2, source_size=48)
        gpu = stream_images(tmp_path / "data", "train", 16, resize, workers=2, source_size=48)
        gpu.decoder = decoder
        (ours, _), = gpu.batches(range(len(gpu)), len(gpu), False)
        (theirs, _), = pillow.batches(range(len(pillow)), len(pillow), False)
        if resize == "whole":
            assert torch.equal(ours.extent.cpu(), theirs.extent)
            ours, theirs = ours.pixels, theirs.pixels
        assert ours.device.type == "cuda" and (ours.cpu().float() - theirs.float()).abs().mean() < 4
    cfg = load_config("demo", [f"data.path={tmp_path / 'data'}", "data.stream=true", "data.decode=gpu",
                               "data.resize=whole", "data.image_size=32", "data.source_size=48", "train.batch_size=4",
                               "train.epochs=1", "train.knn_monitor=0", "train.device=cuda", "train.precision=bf16"])
    pretrain(cfg, tmp_path / "run", progress=False)
    assert np.isfinite(float(read_metrics(tmp_path / "run")[-1]["loss"]))


def test_timed_smoke_benchmark_writes_the_measured_rows(tmp_path):
    """The measured counterpart of BENCHMARKS.md's performance model: images/s of 2 epochs (the first, with
    compilation, left out) of SR and PART at their CIFAR recipes' batch, bf16 (train.precision=auto), one GPU.
    Rows go to $SPATIALSSL_CUDA_BENCH (default benchmarks/cuda-smoke.jsonl), the device named."""
    import json
    import time
    from pathlib import Path

    out = Path(os.environ.get("SPATIALSSL_CUDA_BENCH", Path(__file__).parents[1] / "benchmarks" / "cuda-smoke.jsonl"))
    rows, images = [], make_demo_images(4096, seed=3)
    for recipe in ("sr_cifar10", "part_cifar10"):
        cfg = load_config(recipe, overrides=["train.epochs=2", "train.knn_monitor=0", "data.image_size=32"])
        started = time.perf_counter()
        run = pretrain(cfg, tmp_path / recipe, train_set=images, progress=False).parent
        rate = float(read_metrics(run)[-1]["images_per_s"])
        rows.append({"recipe": recipe, "device": torch.cuda.get_device_name(), "torch": torch.__version__,
                     "precision": "auto", "images_per_s": rate, "wall_s": time.perf_counter() - started})
        assert rate > 0
    with out.open("a") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)


def test_reduce_overhead_replays_cuda_graphs_for_a_small_image_method(images, tmp_path):
    """train.compile_mode=reduce-overhead: SR's compiled parts run as CUDA graphs, and the run trains."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    cfg = load_config(overrides=[*METHODS["sr"], *FAST, "train.epochs=2", "train.compile=true",
                                 "train.compile_mode=reduce-overhead"])
    run = pretrain(cfg, tmp_path / "run", train_set=images, progress=False).parent
    losses = [float(r["loss"]) for r in read_metrics(run)]
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert not counters["inductor"]["cudagraph_skips"], dict(counters["inductor"])  # no graph fell back to eager

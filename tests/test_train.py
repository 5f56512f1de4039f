import json
import math

import pytest
import torch
from safetensors.torch import load_file

from spatialssl.data import make_demo_images
from spatialssl.engine import build, checkpoint
from spatialssl.engine.config import load_config
from spatialssl.engine.runlog import read_metrics
from spatialssl.engine.train import pretrain
from spatialssl.errors import ConfigError, DataError, SpatialSSLWarning, TrainingDiverged
from spatialssl.evaluate import linear_evaluation
from spatialssl.methods import SpatialReasoning

TINY = {"model": {"backbone": "resnet8"}, "method": {"patch_size": 12},
        "train": {"batch_size": 32, "epochs": 2, "knn_monitor": 0}}


def tiny_config(*overrides):
    return load_config(base=TINY, overrides=list(overrides))


@pytest.fixture(scope="module")
def demo_small():
    return make_demo_images(128, seed=5)


def test_resume_continues_exactly(tmp_path, demo_small):
    whole = pretrain(tiny_config(), tmp_path / "whole", train_set=demo_small, progress=False)
    pretrain(tiny_config(), tmp_path / "split", train_set=demo_small, progress=False, stop_after_epoch=1)
    assert json.loads((tmp_path / "split" / "last.json").read_text())["epoch"] == 1
    split = pretrain(tiny_config(), tmp_path / "split", resume=True, train_set=demo_small, progress=False)
    a, b = load_file(whole), load_file(split)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert [r["loss"] for r in read_metrics(tmp_path / "whole")] == [r["loss"] for r in read_metrics(tmp_path / "split")]


def test_resume_refuses_a_different_config_and_existing_runs_are_not_overwritten(tmp_path, demo_small):
    pretrain(tiny_config("train.epochs=1"), tmp_path, train_set=demo_small, progress=False)
    with pytest.raises(ConfigError, match="already exists; pass --resume to continue it, --overwrite to replace it"):
        pretrain(tiny_config(), tmp_path, train_set=demo_small, progress=False)
    with pytest.raises(ConfigError, match="differs .* in method.num_patches"):
        pretrain(tiny_config("method.num_patches=3"), tmp_path, resume=True, train_set=demo_small, progress=False)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, demo_small, monkeypatch):
    calls = {"n": 0}
    real = SpatialReasoning.training_step

    def failing(self, images, labels, generator):
        loss, metrics = real(self, images, labels, generator)
        calls["n"] += 1
        return (loss * float("nan") if calls["n"] > 5 else loss), metrics  # 4 steps per epoch

    monkeypatch.setattr(SpatialReasoning, "training_step", failing)
    with pytest.raises(TrainingDiverged, match="loss became nan at epoch 2.*last.ckpt"):
        pretrain(tiny_config("train.epochs=3", "train.log_every=1"), tmp_path, train_set=demo_small, progress=False)
    tensors, info = checkpoint.read_checkpoint(tmp_path / "last.ckpt")
    assert info["epoch"] == 1
    assert all(torch.isfinite(t).all() for k, t in tensors.items() if t.is_floating_point())


def test_after_a_nan_stop_a_lower_learning_rate_can_be_resumed_as_advised(tmp_path, demo_small, monkeypatch):
    real = SpatialReasoning.training_step

    def diverging(self, images, labels, generator):
        loss, metrics = real(self, images, labels, generator)
        return loss * float("nan"), metrics

    pretrain(tiny_config("train.epochs=1"), tmp_path, train_set=demo_small, progress=False)
    monkeypatch.setattr(SpatialReasoning, "training_step", diverging)
    with pytest.raises(TrainingDiverged, match=r"continue from it with a lower learning rate \(--resume optim.lr=0.0001\)"):
        pretrain(tiny_config("train.epochs=2"), tmp_path, resume=True, train_set=demo_small, progress=False)
    monkeypatch.undo()
    lower = tiny_config("train.epochs=2", "optim.lr=1e-4", "optim.weight_decay=0.01")
    with pytest.warns(SpatialSSLWarning, match=r"optimiser settings .*: optim.lr 0.001 -> 0.0001, optim.weight_decay 0.0 -> 0.01"):
        pretrain(lower, tmp_path, resume=True, train_set=demo_small, progress=False)
    _, info = checkpoint.read_checkpoint(tmp_path / "last.ckpt")
    assert info["epoch"] == 2 and info["config"]["optim"]["lr"] == 1e-4
    assert info["param_groups"][0]["weight_decay"] == 0.01  # the optimiser runs with the new settings
    with pytest.raises(ConfigError, match="differs .* in optim.name"):
        pretrain(tiny_config("train.epochs=3", "optim.name=sgd"), tmp_path, resume=True, train_set=demo_small,
                 progress=False)


def test_checkpoint_files_and_torchvision_keys(tmp_path, demo_small):
    pretrain(tiny_config("train.epochs=1"), tmp_path, train_set=demo_small, progress=False)
    assert not list(tmp_path.glob("*tmp")) and not list(tmp_path.glob(".*tmp"))
    backbone = load_file(tmp_path / "backbone.safetensors")
    assert "conv1.weight" in backbone and "layer1.0.bn1.running_mean" in backbone
    info = json.loads((tmp_path / "last.json").read_text())
    assert info["config"]["method"]["name"] == "sr" and len(info["config"]["data"]["mean"]) == 3
    assert (tmp_path / "metrics.csv").is_file() and any((tmp_path / "tensorboard").iterdir())


@pytest.mark.parametrize("method, drop", [("sr", 0.9), ("rr", 0.95)])
def test_tiny_pretraining_loss_falls_and_probe_beats_chance(tmp_path, method, drop):
    train_set, test_set = make_demo_images(512, seed=11), make_demo_images(256, seed=12)
    cfg = tiny_config(f"method.name={method}", "train.epochs=4", "train.batch_size=64")
    ckpt = pretrain(cfg, tmp_path, train_set=train_set, progress=False)
    losses = [float(r["loss"]) for r in read_metrics(tmp_path)]
    assert losses[-1] < drop * losses[0], losses
    backbone, saved = build.load_backbone(ckpt)
    results = linear_evaluation(backbone, train_set.images, train_set.labels, test_set.images, test_set.labels, 10,
                                saved.data.mean, saved.data.std, 12, (0, 3), epochs=100)
    assert results["linear"][3].test_acc > 0.16  # chance is 0.1; 0.16 is 3 sigma above it on 256 images


def test_supervised_needs_labels_and_learns(tmp_path, demo_small):
    unlabelled = type(demo_small)(demo_small.images, None, [], "unlabelled")
    with pytest.raises(DataError, match="method supervised .split 'train'. needs labels; unlabelled has none"):
        pretrain(tiny_config("method.name=supervised"), tmp_path / "a", train_set=unlabelled, progress=False)
    pretrain(tiny_config("method.name=supervised", "train.epochs=3"), tmp_path / "b", train_set=demo_small, progress=False)
    accuracies = [float(r["train_acc"]) for r in read_metrics(tmp_path / "b")]
    assert accuracies[-1] > accuracies[0]


def test_random_weights_writes_an_untrained_checkpoint(tmp_path, demo_small):
    ckpt = pretrain(tiny_config("method.name=random"), tmp_path, train_set=demo_small, progress=False)
    _, info = checkpoint.read_checkpoint(ckpt)
    assert info["epoch"] == 0 and not (tmp_path / "metrics.csv").exists()


@pytest.mark.parametrize("overrides, message", [
    (["method.patch_size=40"], "does not fit"),
    (["method.patch_size=20"], "cannot avoid overlapping"),
    (["train.batch_size=500"], "larger than the 128 images"),
])
def test_options_are_checked_against_the_data_before_work(tmp_path, demo_small, overrides, message):
    with pytest.raises(ConfigError, match=message):
        pretrain(tiny_config(*overrides), tmp_path, train_set=demo_small, progress=False)
    assert not (tmp_path / "last.ckpt").exists()


def test_bf16_autocast_and_channels_last_keep_fp32_weights(tmp_path, demo_small):
    cfg = tiny_config("train.precision=bf16", "train.channels_last=true", "train.epochs=1", "method.name=rr")
    last = pretrain(cfg, tmp_path / "run", train_set=demo_small.subset(64), progress=False)
    tensors = load_file(last)
    assert all(t.dtype == torch.float32 for k, t in tensors.items() if k.startswith("method.") and t.is_floating_point())
    assert math.isfinite(float(read_metrics(tmp_path / "run")[0]["loss"]))
    with pytest.raises(ConfigError, match="train.precision"):
        tiny_config("train.precision=fp8")


def test_streamed_folder_trains_with_each_image_once_per_epoch(tmp_path, monkeypatch):
    import numpy as np
    from conftest import random_images, write_class_folders

    from spatialssl.data import stream

    folder = write_class_folders(tmp_path / "data", random_images(40, 32, seed=3), np.arange(40) % 4)
    seen = []
    original = stream._Files.__getitem__
    monkeypatch.setattr(stream._Files, "__getitem__", lambda self, i: (seen.append(i), original(self, i))[1])
    cfg = tiny_config("data.stream=true", "data.image_size=16", "data.workers=0", "train.batch_size=8",
                      "train.epochs=1", "method.name=supervised", f"data.path={folder}",
                      "data.mean=[0.5,0.5,0.5]", "data.std=[0.2,0.2,0.2]")  # given: none decoded to measure them
    pretrain(cfg, tmp_path / "run", progress=False)
    assert sorted(seen) == list(range(40))  # 5 full batches: every image exactly once
    assert read_metrics(tmp_path / "run")[0]["train_acc"] != ""
    with pytest.raises(ConfigError, match="data.image_size"):
        pretrain(tiny_config("data.stream=true", f"data.path={folder}"), tmp_path / "x", progress=False)


def test_deterministic_runs_are_bit_identical_and_restore_the_global_settings(tmp_path):
    # Measured on this 2-thread CPU: without train.deterministic these runs differ in the last bits
    # (the pair gathers' backward adds atomically from both threads), so this fails without it.
    assert torch.get_num_threads() == 2  # conftest; one thread would be deterministic anyway
    data = make_demo_images(128, seed=5)
    cfg = tiny_config("method.name=rr", "train.batch_size=64", "train.epochs=1", "train.deterministic=true")
    runs = [load_file(pretrain(cfg, tmp_path / str(i), train_set=data, progress=False)) for i in range(2)]
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic
    assert "CUBLAS_WORKSPACE_CONFIG" not in __import__("os").environ


def test_a_warmup_as_long_as_the_run_is_cut_to_a_tenth_of_it(tmp_path, demo_small):
    from spatialssl.engine.optim import learning_rate
    from spatialssl.errors import SpatialSSLWarning

    optim = tiny_config("optim.warmup_epochs=20").optim
    assert learning_rate(optim, 0, 5 * 10, 10) == optim.lr / 5  # 0.5 epochs = 5 steps of warm-up
    assert learning_rate(optim, 5, 5 * 10, 10) == optim.lr
    assert learning_rate(optim, 5, 40 * 10, 10) == optim.lr * 6 / 200  # shorter than the run: kept
    with pytest.warns(SpatialSSLWarning, match="warmup_epochs 20 is not shorter than the 2-epoch run; warming up "
                                               r"for 0.2 epochs \(10% of the run\)"):
        pretrain(tiny_config("optim.warmup_epochs=20", "train.epochs=2"), tmp_path, train_set=demo_small.subset(64),
                 progress=False, stop_after_epoch=1)
    with pytest.warns(SpatialSSLWarning, match="warming up for 0.2 epochs"):  # the resumed run schedules the same
        pretrain(tiny_config("optim.warmup_epochs=20", "train.epochs=2"), tmp_path, resume=True,
                 train_set=demo_small.subset(64), progress=False)


def test_monitor_knn_chooses_k_from_the_training_subset_and_logs_it(tmp_path, demo_small):
    monitor = (demo_small.subset(64, seed=1), demo_small.subset(32, seed=2))
    pretrain(tiny_config("train.epochs=1"), tmp_path / "auto", train_set=demo_small, monitor=monitor, progress=False)
    assert float(read_metrics(tmp_path / "auto")[0]["knn_k"]) == 8  # sqrt(64)
    pretrain(tiny_config("train.epochs=1", "eval.knn_k=3"), tmp_path / "given", train_set=demo_small, monitor=monitor,
             progress=False)
    assert float(read_metrics(tmp_path / "given")[0]["knn_k"]) == 3


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)],
                         ids=["umask022", "umask002", "umask077"])
def test_written_files_honour_the_umask(tmp_path, demo_small, umask, mode):
    import os

    previous = os.umask(umask)
    try:
        pretrain(tiny_config("method.name=random"), tmp_path, train_set=demo_small, progress=False)
    finally:
        os.umask(previous)
    written = [tmp_path / name for name in ("last.ckpt", "last.json", "backbone.safetensors")]
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in written} == {p.name: oct(mode) for p in written}


def test_a_method_that_makes_its_own_labels_gets_them_for_the_epoch(tmp_path, demo_small, monkeypatch):
    """The hook DeepCluster uses: labels made from the whole training set at each epoch's start."""
    seen, made = [], []

    def epoch_labels(self, images, generator):
        made.append(len(images))
        return torch.full((len(images),), len(made) % 2, dtype=torch.long)  # epoch 1: ones, epoch 2: zeros

    step = SpatialReasoning.training_step
    monkeypatch.setattr(SpatialReasoning, "epoch_labels", epoch_labels)

    def recorded_step(self, images, labels, generator):
        if not labels.is_meta:  # the memory check's step on the meta device apart
            seen.append(labels)
        return step(self, images, labels, generator)

    monkeypatch.setattr(SpatialReasoning, "training_step", recorded_step)
    pretrain(tiny_config("train.epochs=2"), tmp_path, train_set=demo_small, progress=False)
    steps = len(demo_small) // 32
    assert made == [len(demo_small)] * 2
    assert all((labels == 1).all() for labels in seen[:steps]) and all((labels == 0).all() for labels in seen[steps:])

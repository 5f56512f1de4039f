"""Memory: gradient accumulation (train.accumulate_steps) and activation checkpointing for ViTs
(train.activation_checkpointing) change what is kept, not what is learned."""
import pytest
import torch
from safetensors.torch import load_file

from spatialssl.data import make_demo_images
from spatialssl.engine.config import load_config
from spatialssl.engine.train import pretrain
from spatialssl.errors import ConfigError
from spatialssl.models import create_backbone, embed, use_seed

# No randomness in the step (full-image crops, no flip or colour), a LayerNorm backbone and SGD: the weights
# after a step are a function of the summed gradients alone, however the batch is split.
EXACT = ["method.name=supervised", "model.backbone=vit_tiny", "model.depth=1", "train.batch_size=16",
         "train.epochs=1", "train.knn_monitor=0", "train.device=cpu", "optim.name=sgd", "optim.lr=0.1",
         "augment.scale=[1.0,1.0]", "augment.ratio=[1.0,1.0]", "augment.flip_p=0", "augment.jitter_p=0",
         "augment.gray_p=0", "data.mean=[0.5,0.5,0.5]", "data.std=[0.25,0.25,0.25]"]


def weights(path):
    return {k: v for k, v in load_file(path).items() if k.startswith("method.") and v.is_floating_point()}


@pytest.mark.parametrize("memory", [["train.accumulate_steps=4"], ["train.activation_checkpointing=true"],
                                    ["train.accumulate_steps=2", "train.activation_checkpointing=true"]])
def test_accumulation_and_checkpointing_learn_what_the_whole_batch_learns(memory, tmp_path, monkeypatch):
    from spatialssl.methods.supervised import Supervised
    from spatialssl.models import vit

    data = make_demo_images(32, seed=4)
    whole = weights(pretrain(load_config(overrides=EXACT), tmp_path / "whole", train_set=data, progress=False))
    sizes, recomputed = [], []
    step, real_checkpoint = Supervised.training_step, vit.torch.utils.checkpoint.checkpoint

    def counted_step(self, x, *rest):
        if not x.is_meta:  # the memory check's step on the meta device apart
            sizes.append(len(x))
        return step(self, x, *rest)

    def counted_checkpoint(function, *inputs, **kw):
        if not inputs[0].is_meta:
            recomputed.append(1)
        return real_checkpoint(function, *inputs, **kw)

    monkeypatch.setattr(Supervised, "training_step", counted_step)
    monkeypatch.setattr(vit.torch.utils.checkpoint, "checkpoint", counted_checkpoint)
    cfg = load_config(overrides=[*EXACT, *memory])
    split = weights(pretrain(cfg, tmp_path / "split", train_set=data, progress=False))
    assert sizes == [16 // cfg.train.accumulate_steps] * (2 * cfg.train.accumulate_steps)  # 2 steps of micro-batches
    assert len(recomputed) == (len(sizes) if cfg.train.activation_checkpointing else 0)  # the one block, each step
    assert all(torch.allclose(whole[k], split[k], atol=1e-6) for k in whole)
    assert any(not torch.equal(whole[k], weights_at_start) for k, weights_at_start in
               weights(pretrain(load_config(overrides=[*EXACT, "train.epochs=0"]), tmp_path / "start",
                                train_set=data, progress=False)).items())  # the runs did learn something


def test_checkpointed_blocks_recompute_the_drop_path_masks_they_drew():
    torch.manual_seed(0)
    vit = create_backbone("vit_tiny", depth=2, patch_size=8, input_size=[32, 32], drop_path=0.5).train()
    images = torch.randn(8, 3, 32, 32)
    grads = []
    for checkpointing in (False, True):
        vit.set_grad_checkpointing(checkpointing)
        use_seed(vit, torch.tensor(3))
        vit.zero_grad()
        embed(vit, images).square().sum().backward()
        grads.append({n: p.grad.clone() for n, p in vit.named_parameters()})
    assert all(torch.allclose(grads[0][n], grads[1][n], atol=1e-6) for n in grads[0])
    dropped = [n for n in grads[0] if "blocks.0.mlp" in n and not grads[0][n].any()]
    assert not dropped  # with half the branches dropped, some samples still train every block


def test_checkpointing_keeps_less_for_the_backward_pass():
    vit = create_backbone("vit_tiny", depth=4, patch_size=4, input_size=[32, 32]).train()
    images = torch.randn(8, 3, 32, 32)
    kept = []
    for checkpointing in (False, True):
        vit.set_grad_checkpointing(checkpointing)
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
            embed(vit, images).sum().backward()
        kept.append(sum(saved))
    assert kept[1] < kept[0] / 3


@pytest.mark.parametrize("overrides, message", [
    (["train.batch_size=16", "train.accumulate_steps=3"], "train.accumulate_steps 3 must divide each process's "
                                                          "share of train.batch_size \\(16 images\\)"),
    (["train.batch_size=8", "train.accumulate_steps=8"], "micro-batches of 1 image; each needs two"),
    (["model.backbone=resnet8", "train.batch_size=8", "train.activation_checkpointing=true"], "needs a ViT"),
])
def test_memory_options_the_run_cannot_meet_are_refused_before_work(overrides, message, tmp_path):
    cfg = load_config(overrides=["train.epochs=1", "train.knn_monitor=0", "method.name=supervised",
                                 "model.backbone=vit_tiny", "model.depth=1", *overrides])
    with pytest.raises(ConfigError, match=message):
        pretrain(cfg, tmp_path / "run", train_set=make_demo_images(16, seed=0), progress=False)
    assert not (tmp_path / "run").exists()


MEASURED = ["model.backbone=vit_tiny", "model.depth=2", "model.patch_size=8", "model.input_size=[32,32]",
            "model.in_chans=3", "method.name=part", "part.num_pairs=32", "train.batch_size=32"]


def peak(*overrides):
    from spatialssl.engine.memory import expected_peak

    cfg = load_config(overrides=[*MEASURED, *overrides])
    return expected_peak(cfg, 0, (32, 32), 3, world=1)


def test_the_expected_peak_follows_the_micro_batch_and_what_is_kept():
    whole, half = peak(), peak("train.accumulate_steps=2")
    assert whole["weights"] == half["weights"] > 0 and whole["micro_batch"] == 32 and half["micro_batch"] == 16
    assert 1.6 < whole["activations"] / half["activations"] < 3.2  # activations grow with the micro-batch
    assert peak("train.activation_checkpointing=true")["activations"] < whole["activations"] / 2
    assert peak("train.precision=bf16")["activations"] == int(whole["activations"] * 0.5)
    adam, sgd = whole["weights"], peak("optim.name=sgd")["weights"]
    parameters = sum(p.numel() for p in create_backbone("vit_tiny", depth=2, patch_size=8,
                                                        input_size=[32, 32]).parameters())
    assert adam - sgd >= 4 * parameters  # Adam keeps two moments, SGD one momentum: one fp32 copy more


def test_a_batch_that_cannot_fit_the_device_is_refused_before_work_and_one_that_fits_is_announced(
        tmp_path, monkeypatch, caplog):
    from spatialssl.engine import memory

    cfg = load_config(overrides=[*MEASURED, "train.epochs=1", "train.knn_monitor=0", "model.input_size=null",
                                 "model.in_chans=null"])
    data = make_demo_images(32, seed=0)
    needed = memory.expected_peak(load_config(overrides=MEASURED), 0, (32, 32), 3, 1)["total"]
    monkeypatch.setattr(memory, "capacity", lambda device: needed // 2)  # a device half the size needed
    with pytest.raises(ConfigError, match="train.batch_size 32 cannot fit: expected peak memory per "
                                          "process: .* raise train.accumulate_steps"):
        pretrain(cfg, tmp_path / "run", train_set=data, progress=False)
    assert not (tmp_path / "run").exists()
    monkeypatch.setattr(memory, "capacity", lambda device: needed * 2)
    with caplog.at_level("INFO", logger="spatialssl"):
        pretrain(cfg, tmp_path / "run", train_set=data, progress=True)
    assert any("expected peak memory per process" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("overrides", [["model.backbone=resnet8", "method.name=simclr"], [],
                                       ["model.backbone=resnet8", "method.name=sr", "method.num_patches=3",
                                        "method.patch_size=8"]])
def test_a_large_micro_batch_is_extrapolated_to_what_measuring_it_whole_finds(overrides, monkeypatch):
    from spatialssl.engine import memory

    cfg = load_config(overrides=[*MEASURED, "train.batch_size=256", *overrides])  # PART's ViT where none is named
    extrapolated = memory.expected_peak(cfg, 0, (32, 32), 3, 1)
    monkeypatch.setattr(memory, "MEASURED_WHOLE", 256)
    whole = memory.expected_peak(cfg, 0, (32, 32), 3, 1)
    assert extrapolated["micro_batch"] == whole["micro_batch"] == 256
    assert abs(extrapolated["activations"] / whole["activations"] - 1) < 0.01  # SimCLR's B^2 similarities included


def test_sizes_that_multiply_past_the_machines_memory_are_refused_through_the_cli_before_training(
        cifar_like, tmp_path, capsys):
    from spatialssl.cli import main

    out = tmp_path / "run"
    code = main(["pretrain", "--out", str(out), "--data", str(cifar_like), "--no-progress", "method.name=sr",
                 "model.backbone=resnet8", "method.num_patches=1024", "method.patch_size=8", "train.batch_size=64",
                 "train.epochs=1", "train.knn_monitor=0"])  # 1024 patches: 523,776 pairs per image
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and not out.exists()
    assert err[0].startswith("error: train.batch_size 64 cannot fit: expected peak memory per process: ")
    assert "lower the sizes that multiply into it (patches" in err[0]

"""Finetuning (weights carried over, regularisers, schedule), export to timm, the PART CLI."""
import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from spatialssl import regularize
from spatialssl.cli import main
from spatialssl.commands.export import export
from spatialssl.data import make_demo_images
from spatialssl.engine import build, checkpoint
from spatialssl.engine.config import OptimConfig, load_config
from spatialssl.engine.optim import learning_rate
from spatialssl.engine.train import pretrain
from spatialssl.errors import ConfigError, DataError
from spatialssl.models import create_backbone, embed

VIT = ["model.backbone=vit_tiny", "model.depth=2", "train.knn_monitor=0", "train.batch_size=16"]


@pytest.fixture(scope="module")
def part_run(tmp_path_factory):
    """A PART checkpoint after one short epoch on demo images."""
    out = tmp_path_factory.mktemp("part")
    cfg = load_config(overrides=["method.name=part", *VIT, "part.num_pairs=128", "train.epochs=1"])
    return pretrain(cfg, out / "run", train_set=make_demo_images(64, seed=3), progress=False)


def test_export_round_trip_through_timm(part_run, tmp_path, timm):
    described = export(part_run, tmp_path / "vit")
    assert described["kwargs"]["pos_embed"] == "none" and not described["kwargs"]["class_token"]
    theirs = timm.models.vision_transformer.VisionTransformer(**described["kwargs"]).eval()
    state = load_file(tmp_path / "vit.safetensors")
    theirs.load_state_dict(state, strict=True)  # same keys and shapes
    ours, _ = build.load_backbone(part_run)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(embed(ours.eval(), x), theirs.forward_head(theirs.forward_features(x), pre_logits=True),
                              atol=1e-5)
    ours.load_state_dict(theirs.state_dict(), strict=True)  # and back
    assert json.loads((tmp_path / "vit.json").read_text())["class"].startswith("timm.")


def test_finetuned_vit_with_position_embedding_and_class_token_matches_timm(timm):
    ours = create_backbone("vit_tiny", num_classes=7, input_size=(32, 32), pos_embed=True, class_token=True,
                           global_pool="token", depth=2).eval()
    theirs = timm.models.vision_transformer.VisionTransformer(**ours.timm_kwargs()).eval()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(ours(x), theirs(x), atol=1e-5)


def test_finetuning_starts_from_the_pretrained_weights_and_adds_position_embedding(part_run, tmp_path):
    from spatialssl.commands.finetune import finetune_config
    from spatialssl.engine.build import build_method

    cfg = finetune_config(part_run, None, ["model.input_size=[32,32]"])
    assert cfg.model.pos_embed and cfg.model.class_token and cfg.method.name == "finetune"
    method = build_method(cfg, [0.5] * 3, [0.25] * 3, num_classes=10)
    pretrained = checkpoint.backbone_state(checkpoint.read_checkpoint(part_run)[0])
    state = method.backbone.state_dict()
    assert all(torch.equal(state[k], v) for k, v in pretrained.items())
    assert state["pos_embed"].shape == (1, 65, 192) and state["head.weight"].shape == (10, 192)


def test_finetuning_from_scratch_keeps_the_architecture_not_the_weights(part_run):
    from spatialssl.commands.finetune import finetune_config
    from spatialssl.engine.build import build_method

    pretrained = checkpoint.backbone_state(checkpoint.read_checkpoint(part_run)[0])
    for cfg in (finetune_config(part_run, None, ["model.input_size=[32,32]"], scratch=True),
                finetune_config(None, None, ["model.input_size=[32,32]", *VIT], scratch=True, recipe="part_cifar10")):
        assert cfg.finetune.scratch and cfg.model.init_from is None and cfg.model.pos_embed
        state = build_method(cfg, [0.5] * 3, [0.25] * 3, num_classes=10).backbone.state_dict()
        assert {k: v.shape for k, v in pretrained.items()} == {k: state[k].shape for k in pretrained}
        assert not any(torch.equal(state[k], v) for k, v in pretrained.items() if k.endswith("qkv.weight"))
    with pytest.raises(ConfigError, match=r"needs model.init_from .* \(or --scratch for random weights\)"):
        load_config(overrides=["method.name=finetune", *VIT])


def test_pretrained_weights_that_do_not_fit_are_named(part_run):
    from spatialssl.engine.build import load_pretrained

    with pytest.raises(DataError, match="do not fit.*blocks.2"):
        load_pretrained(create_backbone("vit_tiny", depth=3), part_run)
    with pytest.raises(DataError, match="does not exist|do not exist"):
        load_pretrained(create_backbone("vit_tiny", depth=2), "missing.safetensors")


def test_mixup_and_cutmix_targets_are_distributions_matching_the_mixed_area():
    labels = torch.arange(8) % 4
    x = torch.stack([torch.full((3, 16, 16), float(i)) for i in range(8)])
    for seed in range(6):
        g = torch.Generator().manual_seed(seed)
        mixed, targets = regularize.mix_batch(x, labels, 4, g, mixup=0.0, cutmix=1.0, smoothing=0.1)
        assert torch.allclose(targets.sum(1), torch.ones(8))
        own = (mixed[0] == x[0]).float().mean().item()  # share of image 0's pixels kept
        difference = targets[0, labels[0]] - targets[0, labels[7]]  # image 7 is pasted into image 0
        assert difference.item() == pytest.approx((2 * own - 1) * 0.9, abs=1e-5)  # (lam - (1 - lam)) * (1 - smoothing)
    g = torch.Generator().manual_seed(0)
    mixed, _ = regularize.mix_batch(x, labels, 4, g, mixup=0.8, cutmix=0.0)
    assert torch.allclose(mixed + mixed.flip(0), x + x.flip(0))  # a convex blend with the reversed batch


def test_random_erasing_hits_about_p_of_the_images():
    x = torch.zeros(400, 3, 16, 16)
    erased = regularize.random_erasing(x, 0.25, torch.Generator().manual_seed(0))
    changed = (erased != 0).flatten(1).any(1).float().mean().item()
    assert 0.18 < changed < 0.32


def test_rand_augment_keeps_range_and_varies_per_image():
    x = torch.rand(1, 3, 16, 16).expand(64, -1, -1, -1).contiguous()
    out = regularize.rand_augment(x, 2, 9, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    distinct = {round(v, 4) for v in out.flatten(1).sum(1).tolist()}
    assert len(distinct) > 20  # each image drew its own ops
    equal = regularize._equalize(torch.linspace(0.2, 0.4, 256).view(1, 1, 16, 16).expand(1, 3, -1, -1))
    assert equal.min() == 0 and equal.max() == 1  # equalisation stretches a narrow histogram


def test_learning_rate_warms_up_linearly_then_follows_the_cosine():
    optim = OptimConfig(lr=1.0, schedule="cosine", warmup_epochs=2, min_lr=0.1)
    rates = [learning_rate(optim, step, 100, 10) for step in range(100)]
    assert rates[0] == pytest.approx(0.05) and rates[19] == pytest.approx(1.0)
    assert rates[20] == pytest.approx(1.0) and rates[-1] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 79 / 80)))
    assert all(a >= b for a, b in zip(rates[20:], rates[21:]))
    assert learning_rate(OptimConfig(lr=0.5), 50, 100, 10) == 0.5


def test_part_commands_end_to_end(part_run, tmp_path, capsys):
    from spatialssl.data import demo_splits

    train, test = demo_splits(64, 32)
    data = tmp_path / "demo.npz"
    np.savez(data, train_images=train.images.numpy(), train_labels=train.labels.numpy(),
             test_images=test.images.numpy(), test_labels=test.labels.numpy())
    for kind in ("reconstruct", "symmetry", "uncertainty"):
        png = tmp_path / f"{kind}.png"
        shown = ["--images", "2"] if kind == "reconstruct" else []
        assert main([kind, "--checkpoint", str(part_run), "--data", str(data), "--out", str(png), *shown]) == 0
        assert png.read_bytes()[:4] == b"\x89PNG"
    assert "antisymmetry error" in capsys.readouterr().out
    assert main(["finetune", "--checkpoint", str(part_run), "--data", str(data), "--out", str(tmp_path / "ft"),
                 "--epochs", "1", "--no-progress", "train.batch_size=16"]) == 0
    report = json.loads((tmp_path / "ft" / "finetune.json").read_text())
    assert 0 <= report["test_acc"] <= 1 and report["pretrained"] == str(part_run)
    assert main(["finetune", "--scratch", "--checkpoint", str(part_run), "--data", str(data), "--out",
                 str(tmp_path / "ft-scratch"), "--epochs", "1", "--no-progress", "train.batch_size=16"]) == 0
    assert json.loads((tmp_path / "ft-scratch" / "finetune.json").read_text())["pretrained"] == "random weights"
    assert main(["finetune", "--config", "part_cifar10", "--checkpoint", str(part_run), "--data", str(data),
                 "--out", str(tmp_path / "x")]) == 2
    assert "--config only with --scratch" in capsys.readouterr().err
    assert main(["export", "--checkpoint", str(tmp_path / "ft" / "last.ckpt"), "--out", str(tmp_path / "ft.safetensors")]) == 0
    assert load_file(tmp_path / "ft.safetensors")["head.weight"].shape == (10, 192)
    assert main(["symmetry", "--checkpoint", str(tmp_path / "ft" / "last.ckpt"), "--data", str(data)]) == 2
    assert "need a PART checkpoint" in capsys.readouterr().err


def build_from_export(described: dict) -> torch.nn.Module:
    """The model an export's description names: import ``class`` by its dotted path, call it with ``kwargs``
    (no exec, as a user's loader would)."""
    import importlib

    module, _, name = described["class"].rpartition(".")
    return getattr(importlib.import_module(module), name)(**described["kwargs"])


@pytest.mark.parametrize("overrides, size", [
    (["model.backbone=resnet8"], 32),
    (["model.backbone=resnet18", "model.cifar_stem=true"], 32),
    (["model.backbone=resnet18"], 64),
])
def test_resnet_export_names_a_constructor_that_rebuilds_it(tmp_path, capsys, overrides, size):
    cfg = load_config(overrides=["method.name=random", "train.knn_monitor=0", "train.batch_size=16", *overrides])
    ckpt = pretrain(cfg, tmp_path / "run", train_set=make_demo_images(32, seed=3), progress=False)
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "resnet.safetensors")]) == 0
    described = json.loads((tmp_path / "resnet.json").read_text())
    assert f"{described['class']}(**{described['kwargs']})" in capsys.readouterr().out  # what is printed
    theirs = build_from_export(described).eval()
    theirs.load_state_dict(load_file(tmp_path / "resnet.safetensors"), strict=True)
    ours = build.load_backbone(ckpt)[0].eval()
    x = torch.randn(2, 3, size, size)
    assert torch.equal(theirs(x), ours(x))


def test_resnet_export_keeps_a_classifier():
    from spatialssl.commands.export import timm_constructor

    model = create_backbone("resnet20", num_classes=10)
    rebuilt = build_from_export(timm_constructor(model))
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    assert rebuilt.fc.out_features == 10


def test_the_step_schedule_drops_by_gamma_at_each_milestone_after_a_warm_up_in_steps():
    optim = OptimConfig(lr=1.0, schedule="step", milestones=[0.5, 0.75], gamma=0.1, warmup_steps=4)
    rates = [learning_rate(optim, step, 100, 10) for step in range(100)]
    assert rates[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert rates[4:50] == pytest.approx([1.0] * 46) and rates[50:75] == pytest.approx([0.1] * 25)
    assert rates[75:] == pytest.approx([0.01] * 25)


@pytest.mark.parametrize("setting, message", [
    (["optim.milestones=[0.5]"], "milestones must be empty unless optim.schedule=step"),
    (["optim.schedule=step", "optim.milestones=[0.8,0.5]"], "milestones must be ascending"),
    (["optim.gamma=0.5"], "gamma must be left at its default"),
    (["optim.warmup_steps=10", "optim.warmup_epochs=1"], "warmup_steps must be 0 when optim.warmup_epochs"),
    (["optim.schedule=step", "optim.milestones=[1.5]"], "milestones")])
def test_schedule_options_that_cannot_apply_are_refused(setting, message):
    from spatialssl.engine.config import load_config
    from spatialssl.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        load_config(overrides=setting)

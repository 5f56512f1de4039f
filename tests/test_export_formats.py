"""export --format timm | torchvision | hf: folders that timm, torchvision and the Hugging Face Hub load as they are."""
import json

import numpy as np
import pytest
import torch
from conftest import random_images
from safetensors import safe_open
from safetensors.torch import save_file

from spatialssl import load_backbone
from spatialssl.cli import main
from spatialssl.commands.export import export
from spatialssl.commands.finetune import finetune_config
from spatialssl.data import make_demo_images
from spatialssl.engine.config import load_config
from spatialssl.engine.runlog import read_metrics
from spatialssl.engine.train import pretrain
from spatialssl.errors import DataError
from spatialssl.models import embed

QUICK = ["train.knn_monitor=0", "train.batch_size=8"]


def run(folder, overrides: list, size: int = 32):
    cfg = load_config(overrides=[*QUICK, "train.epochs=1", *overrides])
    return pretrain(cfg, folder, train_set=make_demo_images(16, seed=3, size=size), progress=False)


@pytest.fixture(scope="module")
def part_run(tmp_path_factory):
    """PART's ViT: no position embedding, no [CLS], mean-pooled."""
    return run(tmp_path_factory.mktemp("part") / "run", ["method.name=part", "model.backbone=vit_tiny", "model.depth=2",
                                                        "part.num_pairs=128"])


@pytest.fixture(scope="module")
def finetuned_run(part_run, tmp_path_factory):
    """The same ViT finetuned: learned position embedding, [CLS] pooling and a 10-class head."""
    cfg = finetune_config(part_run, None, [*QUICK, "train.epochs=1", "optim.warmup_epochs=0"])
    return pretrain(cfg, tmp_path_factory.mktemp("ft") / "run", train_set=make_demo_images(16, seed=3), progress=False)


def exported(capsys, checkpoint, out, format: str) -> str:
    """The CLI's export; returns the snippet it prints."""
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(out), "--format", format]) == 0
    return capsys.readouterr().out.split("load it with:\n", 1)[1]


def executed(snippet: str):
    """What the printed snippet builds: the `backbone` it defines."""
    namespace = {}
    exec(snippet, namespace)
    return namespace["backbone"].eval()


@pytest.mark.parametrize("which", ["part_run", "finetuned_run"])
def test_timm_format_loads_in_timm_create_model(which, request, tmp_path, capsys, timm):
    checkpoint = request.getfixturevalue(which)
    snippet = exported(capsys, checkpoint, tmp_path / "vit", "timm")
    config = json.loads((tmp_path / "vit" / "config.json").read_text())
    assert config["architecture"] == "vit_tiny_patch16_224.spatialssl" and config["num_features"] == 192
    weights = dict(config["pretrained_cfg"], file=str(tmp_path / "vit" / "model.safetensors"))
    by_name = timm.create_model(config["architecture"], pretrained=True, pretrained_cfg=weights,
                                **config["model_args"]).eval()
    ours, _ = load_backbone(checkpoint)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for theirs in (by_name, executed(snippet)):  # the printed snippet: timm.create_model("local-dir:...")
            assert torch.allclose(theirs(x), ours.eval()(x), atol=1e-5)
            assert torch.allclose(theirs.forward_head(theirs.forward_features(x), pre_logits=True), embed(ours, x),
                                  atol=1e-5)
    assert executed(snippet).pretrained_cfg["mean"] == config["spatialssl"]["mean"]  # our normalisation travels


@pytest.mark.parametrize("backbone, format", [("resnet18", "torchvision"), ("resnet18", "timm"),
                                              ("torchvision/resnet18", "torchvision"), ("timm/resnet18", "timm")])
def test_resnet_exports_load_where_they_say(backbone, format, tmp_path, capsys, timm, torchvision):
    checkpoint = run(tmp_path / "run", ["method.name=random", f"model.backbone={backbone}"])
    model = executed(exported(capsys, checkpoint, tmp_path / "out", format))
    ours, _ = load_backbone(checkpoint)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), embed(ours.eval(), x), atol=1e-5)


def test_hf_format_has_a_model_card_and_loads_with_spatialssl_and_timm(part_run, tmp_path, timm):
    described = export(part_run, tmp_path / "hf", "hf")
    assert sorted(p.name for p in (tmp_path / "hf").iterdir()) == ["README.md", "config.json", "model.safetensors"]
    card = (tmp_path / "hf" / "README.md").read_text()
    assert "library_name: timm" in card and "PART (Ayoughi et al.)" in card and "for **1 epoch**" in card
    assert "data given in memory" in card and "timm.create_model(\"hf-hub:" in card and "load_backbone" in card
    ours, _ = load_backbone(part_run)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(embed(load_backbone(tmp_path / "hf")[0].eval(), x), embed(ours.eval(), x))
        from_timm = timm.create_model(f"local-dir:{tmp_path / 'hf'}", pretrained=True).eval()
        assert torch.allclose(from_timm.forward_head(from_timm.forward_features(x), pre_logits=True), embed(ours, x),
                              atol=1e-5)
    assert "load_backbone" in described["snippet"]
    assert str(part_run.parent) not in (tmp_path / "hf" / "config.json").read_text()  # no local paths in public


def test_hf_format_of_a_backbone_timm_cannot_build_loads_with_spatialssl(tmp_path):
    checkpoint = run(tmp_path / "run", ["method.name=random", "model.backbone=resnet8"])
    export(checkpoint, tmp_path / "hf", "hf")
    assert "library_name: spatialssl" in (tmp_path / "hf" / "README.md").read_text()
    assert "architecture" not in json.loads((tmp_path / "hf" / "config.json").read_text())
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(load_backbone(tmp_path / "hf")[0].eval()(x), load_backbone(checkpoint)[0].eval()(x))


def test_load_backbone_reads_a_default_export_and_explains_other_files(part_run, tmp_path):
    export(part_run, tmp_path / "vit.safetensors")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(embed(load_backbone(tmp_path / "vit.safetensors")[0].eval(), x),
                           embed(load_backbone(part_run)[0].eval(), x))
        for named in (part_run.parent, part_run.parent / "backbone.safetensors"):  # the run, its backbone
            assert torch.equal(embed(load_backbone(named)[0].eval(), x), embed(load_backbone(part_run)[0].eval(), x))
    lone = tmp_path / "lone.safetensors"
    lone.write_bytes((part_run.parent / "backbone.safetensors").read_bytes())
    with pytest.raises(DataError, match="load_backbone takes a run folder .or its last.ckpt., an export folder"):
        load_backbone(lone)  # nothing beside it says what it is


@pytest.mark.parametrize("arguments, message", [
    (["--format", "torchvision"], "--format torchvision needs a backbone torchvision builds.*export without --format"),
    (["--format", "timm"], "--format timm needs a backbone timm builds.*spatialssl.models.ResNet"),
    (["--push", "me/model"], "--push uploads a Hugging Face folder; add --format hf"),
])
def test_exports_that_cannot_be_made_are_one_line(arguments, message, tmp_path, capsys):
    import re

    checkpoint = run(tmp_path / "run", ["method.name=random", "model.backbone=resnet8"])
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out"), *arguments]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(message, err)


def test_push_without_network_or_login_is_one_line_and_keeps_the_folder(part_run, tmp_path, capsys, monkeypatch):
    import huggingface_hub

    class Offline:
        def create_repo(self, *args, **kwargs):
            raise ConnectionError("Failed to resolve 'huggingface.co'\nmore detail")

    monkeypatch.setattr(huggingface_hub, "HfApi", Offline)
    out = tmp_path / "hf"
    assert main(["export", "--checkpoint", str(part_run), "--out", str(out), "--format", "hf", "--push", "me/vit"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pushing" in err and "me/vit failed (Failed to resolve 'huggingface.co')" in err
    assert f"huggingface-cli upload me/vit {out}" in err and (out / "model.safetensors").is_file()


def test_timm_builds_exactly_our_vit_from_the_config_and_refuses_its_name_alone(part_run, tmp_path, timm):
    folder = tmp_path / "vit"
    export(part_run, folder, "timm")
    config = json.loads((folder / "config.json").read_text())
    ours, _ = load_backbone(part_run)
    theirs = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    assert len(theirs.blocks) == len(ours.blocks) == 2 and theirs.patch_embed.patch_size == (4, 4)
    assert theirs.pos_embed is None and theirs.cls_token is None
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(theirs.forward_head(theirs.forward_features(x), pre_logits=True), embed(ours.eval(), x),
                              atol=1e-6)
    # The name without model_args would build timm's stock ViT (12 blocks, patch 16, 224 px, a position
    # embedding) and load our weights into what fits of it; with num_classes=0 (no head to compare) timm even
    # loads it non-strictly. Both must fail, not build another model.
    weights = dict(file=str(folder / "model.safetensors"))
    for extra in ({}, {"num_classes": 0}):
        with pytest.raises(RuntimeError, match="Invalid pretrained tag .spatialssl. for vit_tiny_patch16_224"):
            timm.create_model(config["architecture"], pretrained=True, pretrained_cfg_overlay=weights, **extra)


def strip_data_record(checkpoint, out):
    """A copy of ``checkpoint`` as spatialssl wrote it before checkpoints recorded the data a run read."""
    with safe_open(str(checkpoint), framework="pt") as f:
        info = json.loads(f.metadata()["spatialssl"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    del info["data"]
    out.parent.mkdir(parents=True)
    save_file(tensors, str(out), metadata={"spatialssl": json.dumps(info)})
    return out


def test_hf_card_describes_the_data_the_run_read_and_its_results_not_its_recipe(tmp_path, capsys):
    data = tmp_path / "my_shapes.npz"
    np.savez(data, train_images=random_images(24, 32, seed=1), train_labels=np.arange(24) % 2,
             test_images=random_images(16, 32, seed=2), test_labels=np.arange(16) % 2)
    cfg = load_config("recipes/rr_cifar10.yaml", ["model.backbone=resnet8", "train.epochs=2", "train.batch_size=8",
                                                  "train.knn_monitor=8", f"data.path={data}"])
    assert cfg.data.dataset == "cifar10"  # what the recipe was written for, not what this run reads
    last = pretrain(cfg, tmp_path / "run", progress=False)
    assert main(["linear-eval", "--checkpoint", str(last), "--data", str(data), "--epochs", "2"]) == 0
    assert main(["export", "--checkpoint", str(last), "--out", str(tmp_path / "hf"), "--format", "hf"]) == 0
    card = (tmp_path / "hf" / "README.md").read_text()
    final = read_metrics(tmp_path / "run")[-1]
    assert "for **2 epochs**" in card and "on **my_shapes.npz** (an .npz file: 24 training images of 32x32" in card
    first = read_metrics(tmp_path / "run")[0]
    assert f"loss: {float(final['loss']):.4g} after epoch 2 (from {float(first['loss']):.4g} after epoch 1)" in card
    assert f"kNN monitor accuracy after epoch 2: {float(final['knn_acc']):.4f} (k=" in card
    assert "Linear evaluation on my_shapes.npz: test accuracy" in card and "(`linear_eval-my_shapes.json`)" in card
    assert "cifar10" not in card.lower() and "cifar-10" not in card.lower() and str(tmp_path) not in card
    described = json.loads((tmp_path / "hf" / "config.json").read_text())["spatialssl"]
    assert described["data"] == {"layout": "npz", "name": "my_shapes.npz", "examples": 24, "input_size": [32, 32]}
    assert str(tmp_path) not in json.dumps(described)

    old = strip_data_record(last, tmp_path / "moved" / "last.ckpt")  # and away from its metrics.csv
    export(old, tmp_path / "old", "hf")
    card = (tmp_path / "old" / "README.md").read_text()
    assert "on **my_shapes.npz** (split `train`; the config's `data.path`: this checkpoint is older" in card
    assert "cifar10" not in card.lower() and f"{float(final['loss']):.4g} after epoch 2" in card  # its own metrics


@pytest.mark.parametrize("format", [None, "hf"])
def test_export_keeps_what_is_at_out_unless_overwrite(format, part_run, tmp_path, capsys):
    out = tmp_path / ("vit.safetensors" if format is None else "hf")
    command = ["export", "--checkpoint", str(part_run), "--out", str(out), *(["--format", format] if format else [])]
    assert main(command) == 0
    capsys.readouterr()
    assert main(command) == 2
    assert f"--out {out} already exists; pass --overwrite to replace it" in capsys.readouterr().err
    if format is None:  # the description beside it counts as much as the weights
        out.unlink()
        assert main(command) == 2
        assert f"--out {out.with_suffix('.json')} already exists" in capsys.readouterr().err
    assert main([*command, "--overwrite"]) == 0 and out.exists()

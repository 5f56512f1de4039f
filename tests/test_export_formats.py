"""export --format timm | torchvision | hf: folders that timm, torchvision and the Hugging Face Hub load as they are."""
import json

import pytest
import torch

from spatialssl import load_backbone
from spatialssl.cli import main
from spatialssl.commands.export import export
from spatialssl.commands.finetune import finetune_config
from spatialssl.data import make_demo_images
from spatialssl.engine.config import load_config
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
    assert config["architecture"] == "vit_tiny_patch16_224" and config["num_features"] == 192
    weights = dict(file=str(tmp_path / "vit" / "model.safetensors"), num_classes=config["num_classes"])  # else
    # timm drops a head whose classes differ from the architecture's ImageNet 1000
    by_name = timm.create_model(config["architecture"], pretrained=True, pretrained_cfg_overlay=weights,
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

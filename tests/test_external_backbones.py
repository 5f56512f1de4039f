"""timm and torchvision backbones (model.backbone=timm/<name>, torchvision/<name>) through every method path."""
import sys

import pytest
import torch
from safetensors.torch import load_file

from spatialssl.data import make_demo_images
from spatialssl.engine.build import build_method, load_backbone
from spatialssl.engine.config import load_config
from spatialssl.engine.train import pretrain
from spatialssl.errors import ConfigError
from spatialssl.models import create_backbone, embed, is_vit

MEAN, STD = [0.5] * 3, [0.25] * 3
RESNETS = ["timm/resnet18", "torchvision/resnet18"]
VIT = ["model.backbone=timm/vit_tiny_patch16_224", "model.patch_size=16"]


@pytest.fixture(autouse=True)
def libraries(timm, torchvision):
    """Both imported the way that works on this CPU torch; the library then finds them in sys.modules."""


def method(overrides: list, size: int, num_classes: int = 4):
    cfg = load_config(overrides=[*overrides, f"model.input_size=[{size},{size}]", "model.in_chans=3"])
    return build_method(cfg, MEAN, STD, num_classes)


def images(count: int, size: int) -> torch.Tensor:
    return torch.randint(0, 256, (count, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("backbone", RESNETS)
@pytest.mark.parametrize("name", ["supervised", "rr"])
def test_supervised_and_rr_train_a_library_resnet(backbone, name):
    m = method([f"model.backbone={backbone}", f"method.name={name}"], 32)
    loss, _ = m.training_step(images(8, 32), torch.arange(8) % 4, torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and m.backbone.conv1.weight.grad.abs().sum() > 0
    assert m.backbone.num_features == 512 and m.no_weight_decay() == set()
    assert all(not k.startswith("model.") for k in m.backbone.state_dict())  # the library's own keys


def test_torchvision_resnet_features_are_its_pooled_features(torchvision):
    ours = create_backbone("torchvision/resnet18", num_classes=5).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(ours.forward_head(ours.forward_features(x)), ours(x), atol=1e-6)
        theirs = torchvision.models.resnet18(num_classes=5).eval()
        theirs.load_state_dict(ours.state_dict(), strict=True)
        assert torch.allclose(theirs(x), ours(x), atol=1e-6)


def test_part_trains_a_timm_vit_on_cut_patches_without_position_or_prefix_tokens():
    m = method(["method.name=part", *VIT, "part.num_tokens=8", "part.num_pairs=16"], 64, num_classes=0)
    vit = m.backbone
    assert is_vit("timm/vit_tiny_patch16_224") and not is_vit("timm/resnet18")
    patches = torch.randn(2, 8, 3, 16, 16)
    assert vit.patch_tokens(patches).shape == (2, 8, 192)
    # Each token depends only on the patches, not on where they are: permuting patches permutes tokens.
    order = torch.randperm(8)
    with torch.no_grad():
        assert torch.allclose(vit.patch_tokens(patches[:, order]), vit.patch_tokens(patches)[:, order], atol=1e-5)
    loss, _ = m.training_step(images(4, 64), None, torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and vit.patch_embed.proj.weight.grad is not None
    assert vit.pos_embed.grad is None and vit.cls_token.grad is None  # never used by PART
    with torch.no_grad():  # on images it is timm's model as it is (position embedding and [CLS])
        assert embed(vit.eval(), torch.randn(2, 3, 64, 64)).shape == (2, 192)


def test_pretrain_with_a_timm_backbone_writes_a_checkpoint_that_loads(tmp_path, timm):
    cfg = load_config(overrides=["model.backbone=timm/resnet18", "method.name=rr", "method.augmentations=2",
                                 "train.epochs=1", "train.batch_size=8", "train.knn_monitor=0"])
    ckpt = pretrain(cfg, tmp_path / "run", train_set=make_demo_images(16, seed=3), progress=False)
    backbone, loaded = load_backbone(ckpt)
    assert loaded.model.backbone == "timm/resnet18" and backbone.num_features == 512
    theirs = timm.create_model("resnet18", num_classes=0).eval()
    theirs.load_state_dict(load_file(tmp_path / "run" / "backbone.safetensors"), strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(theirs(x), embed(backbone.eval(), x), atol=1e-5)


def test_finetuning_a_part_pretrained_timm_vit_starts_from_its_weights(tmp_path):
    from spatialssl.commands.finetune import finetune_config

    cfg = load_config(overrides=["method.name=part", *VIT, "part.num_tokens=8", "part.num_pairs=16", "train.epochs=1",
                                 "train.batch_size=8", "train.knn_monitor=0"])
    ckpt = pretrain(cfg, tmp_path / "part", train_set=make_demo_images(8, seed=3, size=64), progress=False)
    finetuning = finetune_config(ckpt, None, ["model.input_size=[64,64]", "model.in_chans=3"])
    assert finetuning.model.drop_path == 0.1  # the ViT overlay; timm takes it as drop_path_rate
    m = build_method(finetuning, MEAN, STD, num_classes=10)
    pretrained, _ = load_backbone(ckpt)
    state = m.backbone.state_dict()
    assert all(torch.equal(state[k], v) for k, v in pretrained.state_dict().items())
    assert m.backbone(torch.randn(2, 3, 64, 64)).shape == (2, 10)  # timm's forward: its own [CLS] and head


def test_a_missing_library_is_named_with_its_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # what `import timm` meets when timm is not installed
    with pytest.raises(ConfigError, match=r"needs timm.*pip install timm \(or spatialssl\[timm\]\)"):
        load_config(overrides=["model.backbone=timm/resnet18"])


@pytest.mark.parametrize("name, message", [
    ("timm/resnet_eighteen", "timm has no model 'resnet_eighteen'.*did you mean"),
    ("torchvision/resnet_eighteen", "torchvision has no model 'resnet_eighteen'"),
    ("torchvision/vit_b_16", "adapts torchvision's ResNets"),
    ("resnet_eighteen", "model.backbone 'resnet_eighteen' is unknown.*timm/<name>"),
])
def test_unknown_or_unadapted_names_are_refused(name, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[f"model.backbone={name}"])


def test_part_needs_a_timm_vit_and_its_patch_size():
    with pytest.raises(ConfigError, match="method part needs a ViT.*timm/resnet18"):
        load_config(overrides=["method.name=part", "model.backbone=timm/resnet18"])
    for name in ("part", "sr"):  # the message is about the ViT, whichever method uses it
        with pytest.raises(ConfigError, match="embeds 16x16-pixel tokens but model.patch_size is 8; set "
                                              "model.patch_size=16 ") as refused:
            method([f"method.name={name}", "model.backbone=timm/vit_tiny_patch16_224", "model.patch_size=8"], 64, 0)
        assert "PART" not in str(refused.value)


def test_options_that_do_not_apply_are_refused():
    with pytest.raises(ConfigError, match="model.pretrained applies to timm/<name> and torchvision/<name>"):
        load_config(overrides=["model.pretrained=true"])
    with pytest.raises(ConfigError, match="model.depth applies to spatialssl's ViTs"):
        method(["model.backbone=timm/resnet18", "model.depth=2"], 32)
    with pytest.raises(ConfigError, match="no stochastic depth"):
        method(["model.backbone=torchvision/resnet18", "model.drop_path=0.1"], 32)


@pytest.mark.parametrize("backbone", RESNETS)
def test_pretrained_weights_without_network_are_one_clear_line(backbone, monkeypatch, tmp_path):
    import socket

    import huggingface_hub.constants

    def no_network(*args, **kwargs):
        raise OSError("network is unreachable (test)")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)  # nothing may be downloaded
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # fail at once, without retries
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))  # nothing cached either
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(ConfigError, match=f"cannot fetch the pretrained weights of {backbone}.*model.pretrained=false"):
        method([f"model.backbone={backbone}", "model.pretrained=true", "method.name=rr"], 32)

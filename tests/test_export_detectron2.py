"""export --format detectron2: our ViT (and a detection run's pyramid) under detectron2 ViTDet's keys, as the
init checkpoint its LazyConfig training reads, with the overrides that build a ViT it fits."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from spatialssl.cli import main
from spatialssl.commands.export import export
from spatialssl.detection import detectron2
from spatialssl.detection.pyramid import SimpleFeaturePyramid
from spatialssl.engine.build import backbone_from_config, load_backbone
from spatialssl.engine.checkpoint import save_checkpoint
from spatialssl.engine.config import load_config
from spatialssl.errors import ConfigError, DataError
from spatialssl.models import VisionTransformer1D

# detectron2/modeling/backbone/vit.py: ViT.patch_embed (utils.PatchEmbed.proj), Block.norm1, Attention.qkv/proj
# (rel_pos_h/w only with use_rel_pos, zero-initialised), Block.norm2, timm's Mlp.fc1/fc2; under
# SimpleFeaturePyramid.net, which is model.backbone.
BLOCK_0 = [f"backbone.net.blocks.0.{name}.{kind}" for name in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1",
                                                                 "mlp.fc2") for kind in ("weight", "bias")]
# SimpleFeaturePyramid with scale_factors (4, 2, 1, 0.5) and norm "LN": simfp_<log2 stride> Sequentials of
# ConvTranspose2d (weight, bias), LayerNorm (weight, bias), GELU, and Conv2d(bias=False, norm=LayerNorm).
NORMED_CONV = ("weight", "norm.weight", "norm.bias")
PYRAMID = ([f"backbone.simfp_2.{i}.{k}" for i in (0, 1, 3) for k in ("weight", "bias")]
           + [f"backbone.simfp_2.{i}.{k}" for i in (4, 5) for k in NORMED_CONV]
           + ["backbone.simfp_3.0.weight", "backbone.simfp_3.0.bias"]
           + [f"backbone.simfp_3.{i}.{k}" for i in (1, 2) for k in NORMED_CONV]
           + [f"backbone.simfp_4.{i}.{k}" for i in (0, 1) for k in NORMED_CONV]
           + [f"backbone.simfp_5.{i}.{k}" for i in (1, 2) for k in NORMED_CONV])  # simfp_5.0: max pooling
MODEL = ["model.backbone=vit_tiny", "model.depth=2", "model.patch_size=16", "model.input_size=[32,32]",
         "data.mean=[0.5,0.4,0.3]", "data.std=[0.2,0.25,0.3]"]


class Run(nn.Module):
    """A method's weights as a checkpoint holds them: the backbone and, for a detection run, the pyramid."""

    def __init__(self, backbone, pyramid=None):
        super().__init__()
        self.backbone, self.pyramid = backbone, pyramid


def checkpoint_of(folder, overrides: list, pyramid_channels: int = 0, classes: int = 0):
    """A last.ckpt of a run with ``overrides``' ViT (its weights random, with a classifier of ``classes``), and a
    pyramid when asked."""
    cfg = load_config(overrides=[*MODEL, *overrides])
    backbone = backbone_from_config(cfg.model, classes)
    heads = backbone.blocks[0].attn.num_heads
    positions = (len(backbone.blocks), backbone.embed_dim // heads, 4)  # relative position biases, as detect's
    run = Run(backbone, SimpleFeaturePyramid(backbone.embed_dim, backbone.patch_size, pyramid_channels,
                                             relative_positions=positions) if pyramid_channels else None)
    return save_checkpoint(folder, run, None, {}, cfg.to_dict(), 1, {}), run


def exported_state(folder) -> dict:
    content = torch.load(folder / detectron2.CHECKPOINT, weights_only=True)  # tensors and strings alone
    assert content["__author__"] == "spatialssl"
    return content["model"]


def test_a_vit_exports_under_vitdet_keys_with_its_values(tmp_path):
    path, run = checkpoint_of(tmp_path / "run", ["model.pos_embed=true"])
    described = export(path, tmp_path / "d2", "detectron2")
    state, ours = exported_state(tmp_path / "d2"), run.backbone.state_dict()
    blocks = [key.replace(".0.", f".{index}.", 1) for index in (0, 1) for key in BLOCK_0]
    assert sorted(state) == sorted(["backbone.net.patch_embed.proj.weight", "backbone.net.patch_embed.proj.bias",
                                    "backbone.net.pos_embed", *blocks])  # no final norm, [CLS], head or pyramid
    assert state["backbone.net.patch_embed.proj.weight"].shape == (192, 3, 16, 16)
    assert state["backbone.net.blocks.0.attn.qkv.weight"].shape == (3 * 192, 192)
    for key in ("patch_embed.proj.weight", "blocks.1.attn.qkv.weight", "blocks.1.mlp.fc2.bias"):
        assert torch.equal(state[f"backbone.net.{key}"], ours[key])
    # ViT.__init__: pos_embed is 1 x ((pretrain_img_size // patch_size) ** 2 + 1) x D, the first a [CLS] slot
    overrides = json.loads((tmp_path / "d2" / "config.json").read_text())["detectron2"]["overrides"]
    side = overrides["model.backbone.net.pretrain_img_size"] // overrides["model.backbone.net.patch_size"]
    assert state["backbone.net.pos_embed"].shape == (1, side * side + 1, 192) and side == 2
    assert torch.equal(state["backbone.net.pos_embed"][:, 1:], ours["pos_embed"])
    assert not state["backbone.net.pos_embed"][:, 0].any()  # ours has no [CLS]: a zero slot, which ViTDet drops
    assert {k: overrides[f"model.backbone.net.{k}"] for k in ("embed_dim", "depth", "num_heads", "use_rel_pos")} == \
        {"embed_dim": 192, "depth": 2, "num_heads": 3, "use_rel_pos": True}
    assert overrides["model.pixel_mean"] == [127.5, 102.0, 76.5] and overrides["model.pixel_std"] == [51.0, 63.75, 76.5]
    assert f"train.init_checkpoint={tmp_path / 'd2' / detectron2.CHECKPOINT}" in described["snippet"]
    assert "mask_rcnn_vitdet_b_100ep.py" in described["snippet"]


def test_a_class_token_s_position_slot_is_kept_and_the_token_and_classifier_dropped(tmp_path):
    path, run = checkpoint_of(tmp_path / "run", ["model.pos_embed=true", "model.class_token=true",
                                                 "model.global_pool=token"], classes=10)  # a finetuned ViT
    described = export(path, tmp_path / "d2", "detectron2")
    state = exported_state(tmp_path / "d2")
    assert torch.equal(state["backbone.net.pos_embed"], run.backbone.pos_embed.detach())
    assert not [key for key in state if "cls_token" in key or "head" in key or key.startswith("backbone.net.norm.")]
    assert any("[CLS] token is left out" in note for note in described["notes"])
    assert any("classifier is left out" in note for note in described["notes"])


def test_without_a_position_embedding_vitdet_learns_its_own(tmp_path):
    path, _ = checkpoint_of(tmp_path / "run", [])  # PART's pretraining: no position embedding, no [CLS]
    described = export(path, tmp_path / "d2", "detectron2")
    assert "backbone.net.pos_embed" not in exported_state(tmp_path / "d2")
    assert any("no position embedding" in note for note in described["notes"])
    assert "pretrain_img_size" not in described["snippet"]
    assert "# no position embedding" in described["snippet"]  # the notes head the command
    with pytest.raises(DataError, match=f"is an export for detectron2's ViTDet .*load_backbone takes {path} instead"):
        load_backbone(tmp_path / "d2")


def test_a_detection_run_exports_its_pyramid_too(tmp_path):
    path, run = checkpoint_of(tmp_path / "run", ["method.name=detect", "model.pos_embed=true"], pyramid_channels=32)
    described = export(path, tmp_path / "d2", "detectron2")
    state = exported_state(tmp_path / "d2")
    assert sorted(k for k in state if not k.startswith("backbone.net.")) == sorted(PYRAMID)
    ours = run.pyramid.state_dict()
    assert all(torch.equal(state[f"backbone.{key}"], value) for key, value in ours.items()
               if not key.startswith("positions."))
    # relative position biases go into each block's attention, under ViTDet's names
    assert torch.equal(state["backbone.net.blocks.0.attn.rel_pos_h"], ours["positions.0.rows"])
    assert torch.equal(state["backbone.net.blocks.0.attn.rel_pos_w"], ours["positions.0.cols"])
    assert state["backbone.simfp_2.5.norm.weight"].shape == (32,)
    notes = " ".join(described["notes"])
    assert "RPN and ROI heads are left out" in notes and "32 channels wide" in notes


def test_other_patch_sizes_name_the_levels_as_detectron2_does():
    vit = backbone_from_config(load_config(overrides=["model.backbone=vit_tiny", "model.depth=1",
                                                      "model.patch_size=8", "model.input_size=[32,32]"]).model)
    pyramid = SimpleFeaturePyramid(192, 8, 16).state_dict()  # strides 2, 4, 8, 16: detectron2's simfp_1..4
    state, notes = detectron2.vitdet_state(vit, (4, 4), pyramid)
    assert sorted({key.split(".")[1] for key in state if key.startswith("backbone.simfp")}) == \
        ["simfp_1", "simfp_2", "simfp_3", "simfp_4"]
    assert torch.equal(state["backbone.simfp_1.0.weight"], pyramid["simfp_2.0.weight"])
    assert any("they are p1..p5" in note for note in notes)
    assert any("num_layers=1" in note for note in notes)  # the config file's layer-wise decay assumes 12 blocks


def test_window_attention_keeps_vitdet_s_global_blocks():
    # projects/ViTDet configs: global attention in blocks 2, 5, 8, 11 (B); 5, 11, 17, 23 (L); 7, 15, 23, 31 (H)
    assert [detectron2.global_blocks(depth) for depth in (12, 24, 32)] == \
        [[2, 5, 8, 11], [5, 11, 17, 23], [7, 15, 23, 31]]
    assert detectron2.global_blocks(2) == [0, 1]


def test_the_cli_writes_the_folder_and_prints_the_command(tmp_path, capsys):
    path, _ = checkpoint_of(tmp_path / "run", ["model.pos_embed=true"])
    out = tmp_path / "d2"
    assert main(["export", "--checkpoint", str(path), "--out", str(out), "--format", "detectron2"]) == 0
    printed = capsys.readouterr().out
    assert "finetune ViTDet from it, in a detectron2 checkout with:\n#" in printed  # the notes, then the command
    assert "\npython tools/lazyconfig_train_net.py --config-file" in printed
    assert "model.backbone.net.embed_dim=192" in printed and "'model.pixel_mean=[127.5,102.0,76.5]'" in printed
    assert sorted(p.name for p in out.iterdir()) == ["config.json", detectron2.CHECKPOINT]
    described = json.loads((out / "config.json").read_text())
    assert described["spatialssl"]["config"]["model"]["backbone"] == "vit_tiny"
    assert described["detectron2"]["init_checkpoint"] == detectron2.CHECKPOINT


def test_a_resnet_is_refused_in_one_line_and_nothing_is_written(tmp_path, capsys):
    cfg = load_config(overrides=["model.backbone=resnet8"])
    path = save_checkpoint(tmp_path / "run", Run(backbone_from_config(cfg.model)), None, {}, cfg.to_dict(), 1, {})
    out = tmp_path / "d2"
    assert main(["export", "--checkpoint", str(path), "--out", str(out), "--format", "detectron2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--format detectron2 exports image ViTs" in err and "--format torchvision" in err
    assert not out.exists()


def test_a_1d_vit_is_refused():
    with pytest.raises(ConfigError, match="1-D ViT of signals: export it without --format"):
        detectron2.require_image_vit(VisionTransformer1D(patch_size=4, embed_dim=8, depth=1, num_heads=2, in_chans=1,
                                                         num_tokens=4), "vit1d_tiny")

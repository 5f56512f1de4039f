"""`spatialssl detect` / `detect-eval` end to end on a generated COCO-style set: a pretrained ViT finetuned
for detection by the one loop, resumed, scored with COCO AP; the random-init twin; the demo; bad input."""
import json

import pytest
import torch
from safetensors.torch import load_file

from spatialssl.cli import main
from spatialssl.commands.demo_detection import run_detection_demo
from spatialssl.commands.detect import detect, detect_config, detect_eval
from spatialssl.detection import write_shapes
from spatialssl.engine.build import load_backbone
from spatialssl.engine.config import load_config
from spatialssl.engine.runlog import read_metrics
from spatialssl.engine.train import pretrain
from spatialssl.errors import ConfigError, DataError

SMALL = ["model.depth=1", "part.num_pairs=16", "train.batch_size=8", "optim.warmup_epochs=0",
         "detect.pyramid_channels=16", "detect.representation_size=32", "detect.box_head_convs=0",
         "detect.rpn_batch_size_per_image=32", "detect.box_batch_size_per_image=16", "detect.proposals_train=64",
         "detect.proposals_test=32"]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return write_shapes(tmp_path_factory.mktemp("det") / "shapes", 16, 8, size=64, seed=0)


@pytest.fixture(scope="module")
def part_checkpoint(shapes, tmp_path_factory):
    cfg = load_config("demo_detection", [f"data.path={shapes / 'train'}", "train.epochs=1", *SMALL])
    return pretrain(cfg, tmp_path_factory.mktemp("part") / "run", progress=False)


def test_detect_trains_resumes_and_scores(part_checkpoint, shapes, tmp_path):
    out = tmp_path / "det"
    settings = ["train.epochs=2", "detect.masks=false", *SMALL]
    detect(part_checkpoint, shapes, out, settings, progress=False)
    report = json.loads((out / "detect.json").read_text())
    assert report["images"] == 8 and 0 <= report["AP"] <= 100 and "mask_AP" not in report
    losses = [float(row["loss"]) for row in read_metrics(out)]
    assert len(losses) == 2 and losses[1] < losses[0]  # the heads learn
    # more epochs on the same folder: resumed from epoch 2, not restarted
    resumed = detect(None, None, out, ["train.epochs=3"], resume=True, progress=False)
    assert [int(row["epoch"]) for row in read_metrics(out)] == [1, 2, 3] and resumed["epochs"] == 3
    # the checkpoint's ViT is the backbone every other command reads (linear-eval, export)
    tensors = load_file(out / "last.ckpt")
    assert any(k.startswith("method.pyramid.simfp_2.") for k in tensors)
    backbone, cfg = load_backbone(out / "last.ckpt")
    assert cfg.method.name == "detect" and backbone.pos_embed is not None
    assert torch.equal(backbone.blocks[0].attn.qkv.weight, tensors["method.backbone.blocks.0.attn.qkv.weight"])
    # detect-eval scores the same weights the same way
    again = detect_eval(out / "last.ckpt", None, None, str(tmp_path / "eval.json"))
    assert again["AP"] == pytest.approx(resumed["AP"])
    assert json.loads((tmp_path / "eval.json").read_text())["images"] == 8


def test_the_pretrained_weights_start_the_detector_and_scratch_does_not(part_checkpoint, shapes):
    pretrained = load_file(part_checkpoint)["method.backbone.blocks.0.mlp.fc1.weight"]
    cfg = detect_config(part_checkpoint, shapes, SMALL)
    scratch = detect_config(part_checkpoint, shapes, SMALL, scratch=True)
    assert cfg.method.name == "detect" and cfg.model.init_from == str(part_checkpoint)
    assert scratch.model.init_from is None
    assert cfg.model.pos_embed and not cfg.model.class_token  # ViTDet: learned position embedding, no [CLS]
    assert (cfg.model.backbone, cfg.model.depth, cfg.model.patch_size) == (scratch.model.backbone, 1, 8)
    from spatialssl.engine.build import build_method

    cfg = load_config(base={**cfg.to_dict(), "model": {**cfg.to_dict()["model"], "input_size": [64, 64]},
                            "detect": {**cfg.to_dict()["detect"], "masks": True}})
    method = build_method(cfg, [0.5] * 3, [0.25] * 3, 3)
    assert torch.equal(method.backbone.blocks[0].mlp.fc1.weight.detach(), pretrained)
    assert method.roi_heads.has_mask() and method.roi_heads.box_predictor.cls_score.out_features == 4  # 3 + background


def test_masks_train_the_mask_head(part_checkpoint, shapes, tmp_path):
    report = detect(part_checkpoint, shapes, tmp_path / "det", ["train.epochs=1", *SMALL], progress=False)
    assert "mask_AP" in report and "loss_mask" in read_metrics(tmp_path / "det")[0]  # masks: null -> on for shapes


def test_masks_asked_of_boxes_only_annotations_are_refused(part_checkpoint, shapes, tmp_path):
    boxes_only = tmp_path / "boxes"
    (boxes_only / "annotations").mkdir(parents=True)
    for split in ("train", "val"):
        (boxes_only / split).symlink_to(shapes / split)
        described = json.loads((shapes / "annotations" / f"instances_{split}.json").read_text())
        for annotation in described["annotations"]:
            del annotation["segmentation"]
        (boxes_only / "annotations" / f"instances_{split}.json").write_text(json.dumps(described))
    with pytest.raises(DataError, match="holds no segmentations; read it with masks off"):
        detect(part_checkpoint, boxes_only, tmp_path / "det", ["detect.masks=true", *SMALL], progress=False)
    # left to the data (detect.masks: null), the same annotations train a box-only detector
    report = detect(part_checkpoint, boxes_only, tmp_path / "auto", ["train.epochs=1", *SMALL], progress=False)
    assert "mask_AP" not in report


def test_the_cli_refuses_a_pretraining_checkpoint_for_detect_eval(part_checkpoint, capsys):
    assert main(["detect-eval", "--checkpoint", str(part_checkpoint)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a detection run" in err[0] and "Traceback" not in err[0]


def test_the_cli_needs_a_checkpoint_and_data(tmp_path, capsys):
    assert main(["detect", "--out", str(tmp_path / "x")]) == 2
    assert "detect needs --checkpoint and --data" in capsys.readouterr().err


def test_the_demo_compares_part_with_random_init(tmp_path, capsys):
    reports = run_detection_demo(tmp_path, ["train.epochs=1", *SMALL], progress=False, images=(16, 8))
    assert set(reports) == {"random init", "PART"} and all(r["images"] == 8 for r in reports.values())
    printed = capsys.readouterr().out
    assert "PART" in printed and "random init" in printed and "AP points over random init" in printed


def test_every_trained_weight_gets_a_gradient(part_checkpoint, shapes):
    """DistributedDataParallel (torchrun) requires it: a weight that no step uses stops the run."""
    from spatialssl.commands.detect import read_split
    from spatialssl.engine.build import build_method

    cfg = detect_config(part_checkpoint, shapes, [*SMALL, "detect.masks=true"])
    cfg = load_config(base={**cfg.to_dict(), "model": {**cfg.to_dict()["model"], "input_size": [64, 64]}})
    data = read_split(cfg, "train")
    method = build_method(cfg, [0.5] * 3, [0.25] * 3, data.num_classes)
    loss, _ = method(data.images[:4], data.labels[:4], torch.Generator().manual_seed(0))
    loss.backward()
    idle = [name for name, p in method.named_parameters() if p.requires_grad and p.grad is None]
    assert not idle, idle


def test_a_resnet_checkpoint_detects_through_a_feature_pyramid_network(shapes, tmp_path):
    cfg = load_config(overrides=[f"data.path={shapes / 'train'}", "method.name=random", "model.backbone=resnet8",
                                 "train.epochs=0", "train.knn_monitor=0"])
    checkpoint = pretrain(cfg, tmp_path / "resnet", progress=False)
    report = detect(checkpoint, shapes, tmp_path / "det", ["train.epochs=1", "detect.masks=false",
                                                          "detect.image_size=32", *SMALL], progress=False)
    assert report["images"] == 8 and "method.pyramid.fpn.inner_blocks.0.0.weight" in load_file(tmp_path / "det" /
                                                                                                 "last.ckpt")


def test_pretrain_refuses_the_detect_method_on_image_folders(shapes, tmp_path, capsys):
    assert main(["pretrain", "--data", str(shapes / "train"), "--out", str(tmp_path / "x"), "method.name=detect",
                 "model.backbone=vit_tiny", "model.patch_size=8", "train.batch_size=8", "--no-progress"]) == 2
    assert "detection trains through `spatialssl detect`" in capsys.readouterr().err


def test_a_checkpoint_with_a_class_token_detects_without_it(shapes, tmp_path):
    """MAE's recipes pretrain with a [CLS] token (PART's Table 2 baseline); ViTDet reads patch tokens alone."""
    cfg = load_config(overrides=[f"data.path={shapes / 'train'}", "method.name=random", "model.backbone=vit_tiny",
                                 "model.patch_size=8", "model.depth=1", "model.class_token=true",
                                 "model.pos_embed=true", "train.epochs=0", "train.knn_monitor=0"])
    checkpoint = pretrain(cfg, tmp_path / "mae-like", progress=False)
    detecting = detect_config(checkpoint, shapes, SMALL)
    assert not detecting.model.class_token
    from spatialssl.engine.build import build_method

    detecting = load_config(base={**detecting.to_dict(), "model": {**detecting.to_dict()["model"],
                                                                     "input_size": [64, 64]},
                                  "detect": {**detecting.to_dict()["detect"], "masks": False}})
    method = build_method(detecting, [0.5] * 3, [0.25] * 3, 3)
    grid = load_file(checkpoint)["method.backbone.pos_embed"][:, 1:]  # the pretrained grid, [CLS] slot dropped
    assert method.backbone.cls_token is None and torch.allclose(method.backbone.pos_embed.detach(), grid)
    with pytest.raises(ConfigError, match="model.class_token=false"):
        detect_config(checkpoint, shapes, [*SMALL, "model.class_token=true"])


def test_vitdet_keeps_the_last_block_of_each_quarter_global(part_checkpoint, shapes):
    from spatialssl.detection.pyramid import global_blocks
    from spatialssl.methods.detection import build_pyramid

    assert global_blocks(12) == [2, 5, 8, 11] and global_blocks(24) == [5, 11, 17, 23] and global_blocks(2) == [0, 1]
    cfg = detect_config(part_checkpoint, shapes, [*SMALL, "detect.global_blocks=[1,3]"])
    vit = load_backbone(part_checkpoint)[0]
    with pytest.raises(ConfigError, match=r"detect.global_blocks \[1, 3\] names blocks past the ViT's 1"):
        build_pyramid(vit, cfg.detect, None)


def test_boxes_decode_in_float32_under_bf16(part_checkpoint, shapes):
    from spatialssl.detection import import_torchvision
    from spatialssl.detection.heads import float32_box_coder

    coder = float32_box_coder(import_torchvision())(weights=(1.0, 1.0, 1.0, 1.0))
    anchors = torch.tensor([[1000.0, 1000.0, 1013.0, 1013.0]])
    decoded = coder.decode_single(torch.zeros(1, 4, dtype=torch.bfloat16), anchors)
    assert decoded.dtype == torch.float32 and torch.equal(decoded, anchors)  # bf16: 1013 -> 1012


def test_a_signal_checkpoint_is_refused_for_detection(shapes, tmp_path):
    from spatialssl.engine.checkpoint import save_checkpoint

    cfg = load_config(overrides=["model.backbone=vit1d_tiny", "model.patch_size=25", "method.name=part",
                                 "model.depth=1"])
    folder = tmp_path / "signals"
    save_checkpoint(folder, torch.nn.Linear(1, 1), None, {"order": torch.Generator()}, cfg.to_dict(), 0, {})
    with pytest.raises(ConfigError, match="reads signals; detection takes image backbones"):
        detect_config(folder / "last.ckpt", shapes)


def test_scoring_data_of_other_categories_is_refused(part_checkpoint, shapes, tmp_path):
    out = tmp_path / "det"
    detect(part_checkpoint, shapes, out, ["train.epochs=1", "detect.masks=false", *SMALL], progress=False)
    other = tmp_path / "other"
    (other / "annotations").mkdir(parents=True)
    (other / "val").symlink_to(shapes / "val")
    described = json.loads((shapes / "annotations" / "instances_val.json").read_text())
    for category in described["categories"]:
        category["id"] += 10
    for annotation in described["annotations"]:
        annotation["category_id"] += 10
    (other / "annotations" / "instances_val.json").write_text(json.dumps(described))
    with pytest.raises(ConfigError, match=r"categories \[11, 12, 13\], but the run was trained on \[1, 2, 3\]"):
        detect_eval(out / "last.ckpt", other)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_streamed_coco_set_trains_and_scores_as_the_set_held_whole(part_checkpoint, shapes, tmp_path, workers):
    """data.stream=true: each batch's images letterboxed and its masks rasterised by the workers, the targets
    carried with the batch (padded to its fullest image, not the set's): the same steps as the set held whole."""
    settings = ["train.epochs=1", "detect.masks=true", *SMALL]
    whole = detect(part_checkpoint, shapes, tmp_path / "whole", settings, progress=False)
    streamed = detect(part_checkpoint, shapes, tmp_path / "streamed",
                      [*settings, "data.stream=true", f"data.workers={workers}"], progress=False)
    assert [float(row["loss"]) for row in read_metrics(tmp_path / "streamed")] == pytest.approx(
        [float(row["loss"]) for row in read_metrics(tmp_path / "whole")], rel=1e-5)
    assert streamed["AP"] == pytest.approx(whole["AP"], abs=1e-6)
    assert streamed["mask_AP"] == pytest.approx(whole["mask_AP"], abs=1e-6)
    assert streamed["images"] == whole["images"] == 8


def test_the_coco_recipe_is_vitdet_b_and_runs(part_checkpoint, shapes, tmp_path):
    cfg = detect_config(part_checkpoint, shapes, coco=True)
    o, d = cfg.optim, cfg.detect
    assert (o.layer_decay, o.schedule, o.milestones, o.warmup_steps, o.lr, o.weight_decay) == (
        0.7, "step", [0.889, 0.963], 250, 1e-4, 0.1)
    assert (cfg.train.batch_size, cfg.train.epochs, cfg.data.stream) == (64, 100, True)
    assert (d.image_size, d.window_size, d.proposals_train, d.aligned_roi, d.masks) == (1024, 14, 1000, True, True)
    # the same recipe at this set's scale: streamed, layer-decayed, stepped, aligned
    report = detect(part_checkpoint, shapes, tmp_path / "coco", ["train.epochs=2", "detect.image_size=64",
                    "data.workers=0", "optim.warmup_steps=1", "detect.window_size=0", "optim.milestones=[0.5,0.75]",
                    *SMALL], progress=False,
                    coco=True)
    assert report["images"] == 8 and "mask_AP" in report
    rates = [float(row["lr"]) for row in read_metrics(tmp_path / "coco")]
    assert rates == pytest.approx([1e-4, 1e-6])  # each epoch's last step (of 4): before, after both


def test_skipping_corrupt_images_is_refused_for_detection(part_checkpoint, shapes, tmp_path):
    with pytest.raises(ConfigError, match="data.skip_corrupt does not apply to detection"):
        detect(part_checkpoint, shapes, tmp_path / "det", ["data.skip_corrupt=true", "data.stream=true", *SMALL],
               progress=False)


def test_a_checkpoint_pretrained_on_whole_images_detects(shapes, tmp_path):
    """An ImageNet recipe streams whole images (data.resize=whole, source_size, crop_pct): detection letterboxes
    its own canvases, so those options go back to their defaults instead of refusing the run."""
    cfg = load_config("part_imagenet", [f"data.path={shapes / 'train'}", "model.backbone=vit_tiny", "model.depth=1",
                                        "model.patch_size=8", "data.image_size=32", "data.source_size=64",
                                        "part.num_pairs=16", "train.epochs=0", "train.batch_size=8",
                                        "train.knn_monitor=0"])
    checkpoint = pretrain(cfg, tmp_path / "whole-images", progress=False)
    detecting = detect_config(checkpoint, shapes, coco=True)
    assert (detecting.data.resize, detecting.data.source_size, detecting.data.image_size) == ("short_side", None, None)

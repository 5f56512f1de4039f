"""Weight EMA (train.ema): the update, exact resume, and which weights evaluation reads."""
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from spatialssl.commands.export import export
from spatialssl.data import make_demo_images
from spatialssl.ema import WeightEMA
from spatialssl.engine import build, train
from spatialssl.engine.config import load_config
from spatialssl.engine.train import pretrain
from spatialssl.errors import ConfigError

# Supervised: the cheapest method with BatchNorm buffers and a head; the loop is the same for all.
TINY = {"model": {"backbone": "resnet8"}, "method": {"name": "supervised"},
        "train": {"batch_size": 16, "epochs": 2, "knn_monitor": 0}}


def tiny_config(*overrides):
    return load_config(base=TINY, overrides=list(overrides))


@pytest.fixture(scope="module")
def demo_small():
    return make_demo_images(64, seed=5)  # 4 steps per epoch


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory, demo_small):
    out = tmp_path_factory.mktemp("ema") / "run"
    return pretrain(tiny_config("train.ema=0.9"), out, train_set=demo_small, progress=False)


def prefixed(tensors: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def test_one_update_moves_the_average_by_one_minus_decay_and_copies_buffers():
    model = nn.Sequential(nn.Linear(1, 1), nn.BatchNorm1d(1))
    with torch.no_grad():
        model[0].weight.fill_(4.0)
        model[0].bias.fill_(-2.0)
    ema = WeightEMA(model, decay=0.75)
    with torch.no_grad():
        model[0].weight.fill_(8.0)
        model[0].bias.fill_(2.0)
    model.train()(torch.tensor([[1.0], [3.0]]))  # moves the running statistics and the counter
    ema.update(model)
    assert ema.module[0].weight.item() == 0.75 * 4 + 0.25 * 8 == 5.0
    assert ema.module[0].bias.item() == 0.75 * -2 + 0.25 * 2 == -1.0
    for name, buffer in model[1].named_buffers():
        assert torch.equal(dict(ema.module[1].named_buffers())[name], buffer), name
    assert model[1].num_batches_tracked.item() == 1 and not ema.module[0].weight.requires_grad


def test_an_invalid_decay_is_refused_naming_the_option():
    for decay in ("1.0", "-0.1", "1.5"):
        with pytest.raises(ConfigError, match="train.ema"):
            tiny_config(f"train.ema={decay}")
    with pytest.raises(ValueError, match="decay"):
        WeightEMA(nn.Linear(1, 1), 1.0)


def test_a_resumed_run_keeps_live_and_averaged_weights_exactly(tmp_path, demo_small, ema_run):
    cfg = tiny_config("train.ema=0.9")
    pretrain(cfg, tmp_path, train_set=demo_small, progress=False, stop_after_epoch=1)
    resumed = load_file(pretrain(cfg, tmp_path, resume=True, train_set=demo_small, progress=False))
    whole = load_file(ema_run)
    assert whole.keys() == resumed.keys() and any(k.startswith("ema.") for k in whole)
    for key in whole:
        assert torch.equal(whole[key], resumed[key]), key
    live, averaged = prefixed(whole, "method."), prefixed(whole, "ema.")
    assert live.keys() == averaged.keys()
    assert not torch.equal(live["backbone.conv1.weight"], averaged["backbone.conv1.weight"])


def test_evaluation_export_and_backbone_file_use_the_averaged_weights(ema_run, tmp_path):
    stored = load_file(ema_run)
    averaged, live = prefixed(stored, "ema.backbone."), prefixed(stored, "method.backbone.")
    backbone, _ = build.load_backbone(ema_run)
    loaded = backbone.state_dict()
    assert all(torch.equal(loaded[k], averaged[k]) for k in averaged)
    assert not torch.equal(loaded["conv1.weight"], live["conv1.weight"])
    for weights in (load_file(ema_run.with_name("backbone.safetensors")), build.pretrained_state(ema_run)):
        assert weights.keys() == averaged.keys() and all(torch.equal(weights[k], averaged[k]) for k in averaged)
    info = json.loads(ema_run.with_name("last.json").read_text())
    assert (info["weights"], info["ema_decay"]) == ("ema", 0.9)
    with safe_open(str(ema_run.with_name("backbone.safetensors")), framework="pt") as f:
        assert json.loads(f.metadata()["spatialssl"])["weights"] == "ema"
    described = export(ema_run, tmp_path / "exported")
    assert (described["weights"], described["ema_decay"]) == ("ema", 0.9)
    exported = load_file(tmp_path / "exported.safetensors")
    assert all(torch.equal(exported[k], averaged[k]) for k in averaged)


def test_without_ema_checkpoints_hold_the_live_weights_only(tmp_path, demo_small):
    last = pretrain(tiny_config("train.epochs=1"), tmp_path, train_set=demo_small, progress=False)
    stored = load_file(last)
    assert not any(k.startswith("ema.") for k in stored)
    assert "weights" not in json.loads((tmp_path / "last.json").read_text())
    live = prefixed(stored, "method.backbone.")
    backbone, _ = build.load_backbone(last)
    for weights in (load_file(tmp_path / "backbone.safetensors"), backbone.state_dict()):
        assert weights.keys() == live.keys() and all(torch.equal(weights[k], live[k]) for k in live)
    assert "weights" not in export(last, tmp_path / "exported")


def test_the_knn_monitor_scores_the_averaged_backbone(tmp_path, demo_small, monkeypatch):
    seen = []
    monkeypatch.setattr(train, "monitor_knn", lambda backbone, *_: (seen.append(
        {k: v.clone() for k, v in backbone.state_dict().items()}), (0.5, 5))[1])
    pretrain(tiny_config("train.ema=0.9", "train.epochs=1"), tmp_path, train_set=demo_small,
             monitor=(demo_small, demo_small), progress=False)
    averaged = load_file(tmp_path / "backbone.safetensors")
    assert len(seen) == 1 and all(torch.equal(seen[0][k], averaged[k]) for k in averaged)


def test_part_figures_read_the_averaged_method_and_finetuning_starts_without_an_average(tmp_path):
    from spatialssl.commands.analysis import load_part
    from spatialssl.commands.finetune import finetune_config

    cfg = load_config(overrides=["method.name=part", "model.backbone=vit_tiny", "model.depth=2", "part.num_pairs=16",
                                 "train.knn_monitor=0", "train.batch_size=16", "train.epochs=1", "train.ema=0.5"])
    last = pretrain(cfg, tmp_path, train_set=make_demo_images(32, seed=3), progress=False)
    averaged = prefixed(load_file(last), "ema.")
    method, _ = load_part(last)
    assert all(torch.equal(v, averaged[k]) for k, v in method.state_dict().items())
    assert finetune_config(last, None).train.ema == 0
    assert finetune_config(last, None, ["train.ema=0.999"]).train.ema == 0.999


def test_an_average_longer_than_the_run_is_warned_about(tmp_path, demo_small):
    from spatialssl.errors import SpatialSSLWarning

    with pytest.warns(SpatialSSLWarning, match=r"train.ema 0.9999 averages over about 10000 steps but the run has"):
        pretrain(tiny_config("train.ema=0.9999", "train.epochs=1"), tmp_path, train_set=demo_small, progress=False)

"""Damaged or hand-made checkpoints are refused in one line naming the file, by the library and the CLI."""
import json
import re

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from spatialssl.cli import main
from spatialssl.data import make_demo_images
from spatialssl.engine import build
from spatialssl.engine.config import load_config
from spatialssl.engine.train import pretrain
from spatialssl.errors import DataError


def labelled_npz(path, size: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    np.savez(path, train_images=rng.integers(0, 255, (16, size, size, 3), dtype=np.uint8),
             train_labels=np.arange(16) % 2, test_images=rng.integers(0, 255, (8, size, size, 3), dtype=np.uint8),
             test_labels=np.arange(8) % 2)
    return path


def untrained(out, size: int = 16, *overrides):
    """The quickest checkpoint: random weights, written without training."""
    cfg = load_config(base={"method": {"name": "random"}, "model": {"backbone": "resnet8"},
                            "train": {"knn_monitor": 0}}, overrides=list(overrides))
    return pretrain(cfg, out, train_set=make_demo_images(8, size=size, seed=0), progress=False)


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return untrained(tmp_path_factory.mktemp("good") / "run")


def contents(path) -> tuple:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, json.loads(f.metadata()["spatialssl"])


def without(info, key):
    return {k: v for k, v in info.items() if k != key}


def with_nan(tensors, key):
    return {**tensors, key: torch.full_like(tensors[key], float("nan"))}


DAMAGES = {  # name: (tensors, info -> tensors, info), what the error says
    "missing config": (lambda t, i: (t, without(i, "config")), "lacks 'config' in its metadata"),
    "config not a mapping": (lambda t, i: (t, {**i, "config": ["model"]}), "malformed 'config'"),
    "epoch a string": (lambda t, i: (t, {**i, "epoch": "3"}), "malformed 'epoch' in its metadata (int expected"),
    "unknown config key": (lambda t, i: (t, {**i, "config": {**i["config"], "model": {"depht": 3}}}),
                           "the config inside checkpoint"),
    "unknown backbone": (lambda t, i: (t, {**i, "config": {**i["config"], "model": {"backbone": "resnet9000"}}}),
                         "the config inside checkpoint"),
    "tensor of another shape": (lambda t, i: ({**t, "method.backbone.conv1.weight": torch.zeros(2, 3, 3, 3)}, i),
                                "do not fit the model its config describes (shape: conv1.weight (2, 3, 3, 3)"),
    "NaN weights": (lambda t, i: (with_nan(t, "method.backbone.layer1.0.conv2.weight"), i),
                    "are not finite (first: layer1.0.conv2.weight)"),
    "float weights stored as int32": (
        lambda t, i: ({**t, "method.backbone.conv1.weight": (t["method.backbone.conv1.weight"] * 100).to(torch.int32)},
                      i), "(dtype: conv1.weight int32 vs float32"),
    "metadata nested 100k deep": (lambda t, i: (t, json.dumps(i)[:-1] + ', "metrics": ' + '{"a": ' * 100_000 + "1" +
                                                "}" * 100_001), "metadata that is not readable JSON"),
    "a huge malformed value": (lambda t, i: (t, {**i, "metrics": list(range(1_000_000))}),
                               "malformed 'metrics' in its metadata (dict expected, got [0, 1, 2, 3, 4, 5, ...])"),
}


def damaged(good, folder, damage):
    tensors, info = DAMAGES[damage][0](*contents(good))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "last.ckpt"
    save_file(tensors, path, metadata={"spatialssl": info if isinstance(info, str) else json.dumps(info)})
    return path


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_checkpoint_is_refused_by_the_library_naming_the_file(good, tmp_path, damage):
    path = damaged(good, tmp_path, damage)
    with pytest.raises(DataError) as refused:
        build.load_backbone(path)
    message = str(refused.value)
    assert str(path) in message and DAMAGES[damage][1] in message and "\n" not in message


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_checkpoint_is_one_line_from_linear_eval(good, tmp_path, capsys, damage):
    path = damaged(good, tmp_path / "run", damage)
    data = labelled_npz(tmp_path / "data.npz", 16)
    assert main(["linear-eval", "--checkpoint", str(path), "--data", str(data), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert str(path) in err and DAMAGES[damage][1] in err


def test_a_resume_from_a_checkpoint_whose_weights_do_not_fit_names_it(good, tmp_path):
    path = damaged(good, tmp_path, "tensor of another shape")
    with pytest.raises(DataError, match=f"the weights in {path} do not fit"):
        pretrain(None, tmp_path, resume=True, train_set=make_demo_images(8, size=16, seed=0), progress=False)


@pytest.mark.parametrize("size, message", [
    (32, "position embedding is sized for 16 patches; the 32x32 inputs of .* give 64: set data.image_size"),
    (18, "ViT with 4-pixel patches, which cannot tile the 18x18 inputs of .*; set data.image_size to a multiple of 4"),
])
def test_a_vit_evaluated_at_a_size_its_weights_cannot_take_is_one_line(tmp_path, capsys, size, message):
    vit = untrained(tmp_path / "vit", 16, "model.backbone=vit_tiny", "model.depth=1", "model.patch_size=4",
                    "model.pos_embed=true")
    data = labelled_npz(tmp_path / f"data{size}.npz", size)
    assert main(["linear-eval", "--checkpoint", str(vit), "--data", str(data), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(vit) in err
    assert re.search(message, err), err


def test_a_checkpoint_whose_backbone_needs_a_missing_package_says_so_not_damaged(tmp_path, monkeypatch):
    import sys

    from spatialssl.engine.checkpoint import FORMAT, read_checkpoint
    from spatialssl.errors import MissingPackage

    path = tmp_path / "last.ckpt"
    info = {"format": FORMAT, "epoch": 1, "config": {"model": {"backbone": "timm/resnet18"}}}
    save_file({"method.backbone.conv1.weight": torch.zeros(1)}, path, metadata={"spatialssl": json.dumps(info)})
    monkeypatch.setitem(sys.modules, "timm", None)  # as on a machine without timm
    with pytest.raises(MissingPackage) as missing:
        read_checkpoint(path)
    assert "pip install timm" in str(missing.value) and "damaged" not in str(missing.value)

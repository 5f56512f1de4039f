"""Settings that would quietly spoil a run: a recipe's normalisation on other data (measured there instead,
quietly, said once), DeiT-style regularisation on a short finetuning (the warm-up and kNN ones are in
test_train/test_evaluate)."""
import json
import logging
import warnings

import numpy as np
import pytest
from conftest import random_images, write_class_folders

from spatialssl.commands.finetune import OVERLAYS
from spatialssl.engine.config import load_config, read_recipe
from spatialssl.engine.safeguards import warn_about_short_finetune
from spatialssl.engine.train import pretrain
from spatialssl.errors import SpatialSSLWarning

CIFAR10_MEAN = [0.491, 0.482, 0.447]  # recipes/rr_cifar10.yaml
TINY = ["model.backbone=resnet8", "train.epochs=0", "train.knn_monitor=0", "train.batch_size=8"]


@pytest.fixture
def notes(caplog):
    """What runs said through the 'spatialssl' logger (under pytest its lines go there, not to stdout)."""
    with caplog.at_level(logging.INFO, logger="spatialssl"):
        yield lambda: "\n".join(r.getMessage() for r in caplog.records if r.name == "spatialssl")


def saved_data_config(run) -> dict:
    return json.loads((run / "last.json").read_text())["config"]["data"]


def test_a_recipes_statistics_apply_to_its_own_data_set(tmp_path, cifar_like, notes):
    cfg = load_config("recipes/rr_cifar10.yaml", [*TINY, f"data.path={cifar_like}"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", SpatialSSLWarning)
        pretrain(cfg, tmp_path / "run")
    assert saved_data_config(tmp_path / "run")["mean"] == CIFAR10_MEAN
    assert "normalising with the statistics given for cifar10" in notes()


@pytest.mark.parametrize("recipe, more", [
    ("recipes/rr_cifar10.yaml", []),
    ("recipes/rr_cifar10.yaml", ["data.dataset=null"]),  # the obvious fix is no longer needed, and still works
    ("recipes/rr_tiny_imagenet.yaml", ["model.backbone=resnet8"]),  # its statistics are tiny-imagenet's
])
def test_on_other_data_statistics_are_measured_quietly_and_said_once(tmp_path, notes, recipe, more):
    folder = write_class_folders(tmp_path / "data", random_images(16, 32, seed=3), np.arange(16) % 2)
    cfg = load_config(recipe, [*TINY, f"data.path={folder}", *more])
    given = cfg.data.mean
    with warnings.catch_warnings():
        warnings.simplefilter("error", SpatialSSLWarning)
        pretrain(cfg, tmp_path / "measured")
    saved = saved_data_config(tmp_path / "measured")
    assert saved["mean"] != given and abs(saved["mean"][0] - 0.5) < 0.05  # uniform random pixels
    assert saved["statistics_of"] == "class-folder"
    out = notes()
    assert out.count("normalising with") == 1 and "normalising with statistics measured on" in out
    assert f"not the recipe's for {cfg.data.statistics_of}" in out


def test_statistics_the_user_gives_apply_to_any_data(tmp_path, notes):
    folder = write_class_folders(tmp_path / "data", random_images(16, 32, seed=3), np.arange(16) % 2)
    mine = [0.1, 0.2, 0.3]
    cfg = load_config("recipes/rr_cifar10.yaml", [*TINY, f"data.path={folder}", f"data.mean={mine}",
                                                  "data.std=[0.5,0.5,0.5]"])
    pretrain(cfg, tmp_path / "overridden")
    assert saved_data_config(tmp_path / "overridden")["mean"] == mine
    recipe = tmp_path / "mine.yaml"  # a recipe of the user's own that names no data set
    recipe.write_text(f"data:\n  mean: {mine}\n  std: [0.5, 0.5, 0.5]\nmodel:\n  backbone: resnet8\n")
    pretrain(load_config(recipe, [*TINY, f"data.path={folder}"]), tmp_path / "recipe")
    assert saved_data_config(tmp_path / "recipe")["mean"] == mine
    assert notes().count("normalising with the statistics given (data.mean/std)") == 2


def test_whose_statistics_follows_the_layer_that_gave_them():
    assert load_config("recipes/rr_cifar10.yaml").data.statistics_of == "cifar10"
    assert load_config("recipes/rr_cifar10.yaml", ["data.dataset=null"]).data.statistics_of == "cifar10"
    assert load_config("recipes/rr_cifar10.yaml", ["data.mean=[0.5,0.5,0.5]"]).data.statistics_of is None
    assert load_config("recipes/part_imagenet.yaml").data.statistics_of is None  # ImageNet's, for any images
    assert load_config().data.statistics_of is None


def finetune_config(*overrides):
    recipe = read_recipe(OVERLAYS / "finetune.yaml")
    return load_config(base={**recipe, "model": {"init_from": "pretrained.ckpt"}}, overrides=list(overrides))


def test_a_short_finetuning_with_heavy_regularisation_is_warned_about_once_per_setting():
    with pytest.warns(SpatialSSLWarning, match="finetuning for 5 epochs with mixup, cutmix, randaugment_ops on.*"
                                               "add finetune.mixup=0 finetune.cutmix=0 finetune.randaugment_ops=0"):
        warn_about_short_finetune(finetune_config("train.epochs=5"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", SpatialSSLWarning)
        warn_about_short_finetune(finetune_config("train.epochs=100"))
        warn_about_short_finetune(finetune_config("train.epochs=5", "finetune.mixup=0", "finetune.cutmix=0",
                                                  "finetune.randaugment_ops=0"))

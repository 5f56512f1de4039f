"""Settings that would quietly spoil a run: a recipe's normalisation on other data, DeiT-style
regularisation on a short finetuning (the warm-up and kNN ones are in test_train/test_evaluate)."""
import json
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


def saved_data_config(run) -> dict:
    return json.loads((run / "last.json").read_text())["config"]["data"]


def test_a_recipes_statistics_apply_to_its_own_data_set(tmp_path, cifar_like, capsys):
    cfg = load_config("recipes/rr_cifar10.yaml", [*TINY, f"data.path={cifar_like}"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", SpatialSSLWarning)
        pretrain(cfg, tmp_path / "run")
    assert saved_data_config(tmp_path / "run")["mean"] == CIFAR10_MEAN
    assert "normalising with the statistics given for cifar10" in capsys.readouterr().out


def test_on_other_data_they_are_measured_with_a_warning_unless_the_data_set_is_unnamed(tmp_path, capsys):
    folder = write_class_folders(tmp_path / "data", random_images(16, 32, seed=3), np.arange(16) % 2)
    cfg = load_config("recipes/rr_cifar10.yaml", [*TINY, f"data.path={folder}"])
    with pytest.warns(SpatialSSLWarning, match="given for cifar10 .* is a class-folder data set; using statistics "
                                               "measured on its training images"):
        pretrain(cfg, tmp_path / "measured")
    mean = saved_data_config(tmp_path / "measured")["mean"]
    assert mean != CIFAR10_MEAN and abs(mean[0] - 0.5) < 0.05  # uniform random pixels
    assert "normalising with statistics measured on" in capsys.readouterr().out
    kept = load_config("recipes/rr_cifar10.yaml", [*TINY, f"data.path={folder}", "data.dataset=null"])
    pretrain(kept, tmp_path / "kept")
    assert saved_data_config(tmp_path / "kept")["mean"] == CIFAR10_MEAN


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

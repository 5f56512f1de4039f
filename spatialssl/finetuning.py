"""``spatialssl finetune``: a pretrained checkpoint trained end to end on labelled data by
the one training loop (method ``finetune``), then scored on the test split."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch

from . import augment, checkpoint
from .config import Config, load_config
from .data import load_images
from .errors import DataError
from .train import pretrain, resolve_device

# DeiT's recipe as PART finetunes with it (warm-up 5 epochs, AdamW 5e-4 * batch / 512, wd 0.05,
# RandAugment m9, mixup 0.8, cutmix 1.0, label smoothing 0.1, random erasing 0.25). Colour
# jitter is left to RandAugment.
RECIPE = {"method": {"name": "finetune"},
          "optim": {"name": "adamw", "lr": 5e-4 * 128 / 512, "weight_decay": 0.05, "schedule": "cosine",
                    "warmup_epochs": 5, "min_lr": 1e-6},
          "augment": {"scale": [0.08, 1.0], "jitter_p": 0.0, "gray_p": 0.0},
          "train": {"epochs": 100, "batch_size": 128}}
VIT = {"pos_embed": True, "class_token": True, "global_pool": "token", "drop_path": 0.1}


def finetune_config(path, data: Optional[str], overrides: Optional[list] = None) -> Config:
    """The pretrained run's config turned into a finetuning one: the recipe above, position
    embedding and [CLS] token for ViTs, the model's input size taken from the new data."""
    _, info = checkpoint.read_checkpoint(path)
    base = load_config(base=info["config"]).to_dict()
    for section, values in RECIPE.items():
        base[section].update(values)
    if base["model"]["backbone"].startswith("vit_"):
        base["model"].update(VIT)
    base["model"].update({"init_from": str(path), "input_size": None})
    if data is not None:
        base["data"].update({"path": str(data), "split": "train"})
    return load_config(base=base, overrides=overrides)


@torch.no_grad()
def classification_accuracy(backbone, images: torch.Tensor, labels: torch.Tensor, mean, std,
                            device: str = "cpu", batch_size: int = 256) -> float:
    """Top-1 of a backbone with its classification head on on-grid, unaugmented images."""
    was_training = backbone.training
    backbone.eval().to(device)
    correct = 0
    for start in range(0, len(images), batch_size):
        x = augment.normalize(images[start:start + batch_size].to(device).float().div_(255), mean, std)
        correct += (backbone(x).argmax(1).cpu() == labels[start:start + batch_size]).sum().item()
    backbone.train(was_training)
    return correct / len(images)


def finetune(path, data: Optional[str], out_dir, overrides: Optional[list] = None, resume: bool = False,
             progress: bool = True) -> dict:
    """Finetune the checkpoint at ``path`` on ``data`` into ``out_dir``; returns the report
    (test accuracy), also written to ``out_dir/finetune.json``."""
    out_dir = Path(out_dir)
    cfg = finetune_config(path, data, overrides) if not resume else None
    if resume:
        _, info = checkpoint.read_checkpoint(out_dir / "last.ckpt")
        cfg = load_config(base=info["config"], overrides=overrides)
    last = pretrain(cfg, out_dir, resume=resume, progress=progress)
    backbone, saved = checkpoint.load_backbone(last)
    d = saved.data
    test = load_images(d.path, d.test_split, d.labels, d.image_size, d.cache)
    if test.labels is None:
        raise DataError(f"finetuning needs a labelled test split; {test.source} has none")
    accuracy = classification_accuracy(backbone, test.images, test.labels, d.mean, d.std,
                                       str(resolve_device(saved.train.device)))
    report = {"pretrained": str(saved.model.init_from), "data": str(d.path), "epochs": saved.train.epochs,
              "test_acc": accuracy, "checkpoint": str(last)}
    (out_dir / "finetune.json").write_text(json.dumps(report, indent=2))
    return report

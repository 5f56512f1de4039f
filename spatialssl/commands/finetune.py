"""``spatialssl finetune``: a pretrained checkpoint trained end to end on labelled data by
the one training loop (method ``finetune``), then scored on the test split."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import torch

from .. import augment
from ..data.load import load_data
from ..engine import build, checkpoint
from ..engine.config import Config, load_config
from ..engine.distributed import resolve_device
from ..engine.safeguards import warn_about_short_finetune
from ..engine.train import pretrain
from ..errors import DataError
from ..files import atomic_write
from ..metrics import classification_report
from ..models import is_vit, modality
from .linear_eval import low_label

# DeiT's recipe as PART finetunes with it (warm-up 5 epochs, AdamW 5e-4 * batch / 512, wd 0.05,
# RandAugment m9, mixup 0.8, cutmix 1.0, label smoothing 0.1, random erasing 0.25). Colour
# jitter is left to RandAugment. The pretraining's weight EMA is not inherited: finetune with
# train.ema=DECAY to keep one.
RECIPE = {"method": {"name": "finetune"},
          "optim": {"name": "adamw", "lr": 5e-4 * 128 / 512, "weight_decay": 0.05, "schedule": "cosine",
                    "warmup_epochs": 5, "min_lr": 1e-6},
          "augment": {"scale": [0.08, 1.0], "jitter_p": 0.0, "gray_p": 0.0},
          "train": {"epochs": 100, "batch_size": 128, "ema": 0.0}}
VIT = {"pos_embed": True, "class_token": True, "global_pool": "token", "drop_path": 0.1}
SIGNALS = {"mixup": 0.0, "cutmix": 0.0, "randaugment_ops": 0, "random_erasing": 0.0}


def finetune_config(path, data: Optional[str], overrides: Optional[list] = None) -> Config:
    """The pretrained run's config turned into a finetuning one: the recipe above, position
    embedding and [CLS] token for ViTs, the model's input size taken from the new data."""
    _, info = checkpoint.read_checkpoint(path)
    base = load_config(base=info["config"]).to_dict()
    for section, values in RECIPE.items():
        base[section].update(values)
    if is_vit(base["model"]["backbone"]):
        base["model"].update(VIT)
    if modality(base["model"]["backbone"]) == "signals":  # no image augmentation
        base["finetune"].update(SIGNALS)
    base["model"].update({"init_from": str(path), "input_size": None, "num_tokens": None})
    if data is not None:
        base["data"].update({"path": str(data), "split": "train"})
    return load_config(base=base, overrides=overrides)


@torch.no_grad()
def predict(backbone, data: torch.Tensor, mean, std, device: str = "cpu", batch_size: int = 256) -> torch.Tensor:
    """Class predictions of a backbone with its head on on-grid, unaugmented images
    (normalised with ``mean``/``std``) or signal epochs."""
    was_training = backbone.training
    backbone.eval().to(device)
    out = []
    for start in range(0, len(data), batch_size):
        x = data[start:start + batch_size].to(device)
        if x.dtype == torch.uint8:
            x = augment.normalize(x.float().div_(255), mean, std)
        out.append(backbone(x).argmax(1).cpu())
    backbone.train(was_training)
    return torch.cat(out)


def finetune(path, data: Optional[str], out_dir, overrides: Optional[list] = None, resume: bool = False,
             progress: bool = True, train_set=None, test_set=None) -> dict:
    """Finetune the checkpoint at ``path`` on ``data`` into ``out_dir``; returns the report
    (test accuracy, macro-F1, kappa), also written to ``out_dir/finetune.json``.
    ``train_set``/``test_set`` may be given directly (e.g. the demo) instead of read from ``data``."""
    out_dir = Path(out_dir)
    cfg = finetune_config(path, data, overrides) if not resume else None
    if resume:
        _, info = checkpoint.read_checkpoint(out_dir / "last.ckpt")
        cfg = load_config(base=info["config"], overrides=overrides)
    warn_about_short_finetune(cfg)
    test = test_set if test_set is not None else load_data(cfg, cfg.data.test_split)
    if test.labels is None:
        raise DataError(f"finetuning needs a labelled test split; {test.source} has none")
    train = train_set if train_set is not None else load_data(cfg, cfg.data.split)
    if cfg.finetune.subjects:
        train = low_label(train, test, cfg.finetune.subjects, cfg.train.seed)
    last = pretrain(cfg, out_dir, resume=resume, train_set=train, progress=progress)
    backbone, saved = build.load_backbone(last)
    predicted = predict(backbone, test.tensor, saved.data.mean, saved.data.std, str(resolve_device(saved.train.device)))
    scores = classification_report(predicted, test.labels, max(test.num_classes, int(predicted.max()) + 1))
    report = {"pretrained": str(saved.model.init_from), "data": str(saved.data.path), "epochs": saved.train.epochs,
              "test_acc": scores["accuracy"], "macro_f1": scores["macro_f1"], "kappa": scores["kappa"],
              "train_subjects": len(train.subject_ids()) if hasattr(train, "subject_ids") else None,
              "checkpoint": str(last)}
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one writer
        atomic_write(out_dir / "finetune.json", lambda tmp: Path(tmp).write_text(json.dumps(report, indent=2)))
    return report

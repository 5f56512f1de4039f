"""``spatialssl finetune``: a pretrained checkpoint trained end to end on labelled data by
the one training loop (method ``finetune``), then scored on the test split."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import torch

from .. import augment
from ..data.classes import numbered_as
from ..data.load import load_data, load_labelled, low_label
from ..data.stream import in_batches
from ..engine import build, checkpoint
from ..engine.checks import require_labels
from ..engine.config import BUNDLED_RECIPES, Config, load_config, overlay, read_recipe
from ..engine.distributed import from_environment, resolve_device
from ..engine.safeguards import warn_about_short_finetune
from ..engine.train import pretrain, refuse_existing_run
from ..files import atomic_write
from ..metrics import classification_report
from ..models import is_vit, modality

OVERLAYS = BUNDLED_RECIPES / "overlays"  # finetune.yaml (DeiT's recipe), then finetune_vit / finetune_signals


def finetune_config(path, data: Optional[str], overrides: Optional[list] = None, scratch: bool = False,
                    recipe: Optional[str] = None) -> Config:
    """The pretrained run's config turned into a finetuning one: the recipe overlays/finetune.yaml, then
    position embedding and [CLS] token for ViTs (overlays/finetune_vit.yaml) or no image augmentation for
    signals (overlays/finetune_signals.yaml), the model's input size taken from the new data.
    ``scratch`` keeps the architecture (of the checkpoint at ``path``, or of a pretraining ``recipe``)
    but not the weights: the random-init baseline at the same budget."""
    if recipe is not None:
        base = load_config(recipe).to_dict()
    else:
        _, info = checkpoint.read_checkpoint(path)
        base = load_config(base=info["config"]).to_dict()
    base = overlay(base, read_recipe(OVERLAYS / "finetune.yaml"))
    if is_vit(base["model"]["backbone"]):
        base = overlay(base, read_recipe(OVERLAYS / "finetune_vit.yaml"))
    if modality(base["model"]["backbone"]) == "signals":
        base = overlay(base, read_recipe(OVERLAYS / "finetune_signals.yaml"))
    base["model"].update({"init_from": None if scratch else str(path), "input_size": None, "num_tokens": None})
    base["finetune"]["scratch"] = scratch
    if data is not None:
        base["data"].update({"path": str(data), "split": "train"})
    return load_config(base=base, overrides=overrides)


@torch.no_grad()
def predict(backbone, data, mean, std, device: str = "cpu", batch_size: int = 256) -> torch.Tensor:
    """Class predictions of a backbone with its head on on-grid, unaugmented images
    (normalised with ``mean``/``std``) or signal epochs: a tensor, or a data set read a batch at a time."""
    was_training = backbone.training
    backbone.eval().to(device)
    out = []
    for x in in_batches(data, batch_size):
        x = x.to(device)
        if x.dtype == torch.uint8:
            x = augment.normalize(x.float().div_(255), mean, std)
        out.append(backbone(x).argmax(1).cpu())
    backbone.train(was_training)
    return torch.cat(out)


def finetune(path, data: Optional[str], out_dir, overrides: Optional[list] = None, resume: bool = False,
             progress: bool = True, train_set=None, test_set=None, scratch: bool = False,
             recipe: Optional[str] = None, overwrite: bool = False) -> dict:
    """Finetune the checkpoint at ``path`` on ``data`` into ``out_dir``; returns the report
    (test accuracy, macro-F1, kappa), also written to ``out_dir/finetune.json``.
    ``train_set``/``test_set`` may be given directly (e.g. the demo) instead of read from ``data``;
    ``scratch``/``recipe``: see ``finetune_config``. A run already in ``out_dir`` is continued (``resume``)
    or replaced (``overwrite``)."""
    out_dir = Path(out_dir)
    refuse_existing_run(out_dir, resume, overwrite)
    cfg = finetune_config(path, data, overrides, scratch, recipe) if not resume else None
    if resume:
        _, info = checkpoint.read_resumable(out_dir)
        cfg = load_config(base=info["config"], overrides=overrides)
    warn_about_short_finetune(cfg)
    from_environment(cfg.train.device)  # before the data: under torchrun one process lists a stream's files
    test = test_set if test_set is not None else load_labelled(cfg, (cfg.data.test_split,), "finetuning")[0]
    require_labels(test, "finetuning's test split")  # a test set given in memory
    train = train_set if train_set is not None else load_data(cfg, cfg.data.split)
    test = numbered_as(test, train.classes, train.source, "finetuning")  # each split numbers its own classes
    if cfg.finetune.subjects:
        train = low_label(train, test, cfg.finetune.subjects, cfg.train.seed)
    last = pretrain(cfg, out_dir, resume=resume, train_set=train, progress=progress, overwrite=overwrite)
    backbone, saved = build.load_backbone(last)
    predicted = predict(backbone, test, saved.data.mean, saved.data.std, str(resolve_device(saved.train.device)))
    scores = classification_report(predicted, test.labels, max(test.num_classes, int(predicted.max()) + 1))
    report = {"pretrained": str(saved.model.init_from) if saved.model.init_from else "random weights",
              "data": str(saved.data.path), "epochs": saved.train.epochs,
              "test_acc": scores["accuracy"], "macro_f1": scores["macro_f1"], "kappa": scores["kappa"],
              "train_subjects": len(train.subject_ids()) if hasattr(train, "subject_ids") else None,
              "checkpoint": str(last)}
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one writer
        atomic_write(out_dir / "finetune.json", lambda tmp: Path(tmp).write_text(json.dumps(report, indent=2)))
    return report

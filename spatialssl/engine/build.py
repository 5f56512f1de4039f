"""Models from configs and checkpoints: a config's backbone and method (fresh, or starting from pretrained
weights), and a checkpoint's evaluated backbone."""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from ..errors import ConfigError, DataError
from ..methods import METHODS, Method
from ..models import create_backbone
from .checkpoint import backbone_state, check_finite, invalid_config, load_exactly, mismatch, read_checkpoint
from .config import load_config

ADDED_AT_FINETUNING = ("cls_token", "pos_embed")
CLASSIFIERS = ("head.", "fc.")


def backbone_from_config(model, num_classes: int = 0) -> nn.Module:
    """``create_backbone`` with the options of a ``ModelConfig``."""
    return create_backbone(model.backbone, model.cifar_stem, num_classes, model.input_size, model.patch_size,
                           model.pos_embed, model.class_token, model.global_pool, model.drop_path, model.depth,
                           model.in_chans, model.num_tokens)


def build_method(cfg, mean, std, num_classes: int = 0) -> Method:
    """The method named by ``cfg.method.name`` with a fresh backbone (or, with
    ``model.init_from``, one holding a pretrained checkpoint's weights)."""
    cls = METHODS[cfg.method.name]
    if cls.needs_labels and num_classes < 2:
        raise ValueError(f"method {cfg.method.name} classifies: num_classes must be >= 2, got {num_classes}")
    backbone = backbone_from_config(cfg.model, num_classes if cls.classifies else 0)
    if cfg.model.init_from:
        load_pretrained(backbone, cfg.model.init_from)
    return cls.from_config(cfg, backbone, mean, std, num_classes)


def load_backbone(path) -> tuple:
    """(backbone with the checkpoint's evaluated weights, its Config) from a ``last.ckpt``; a
    finetuned backbone comes with its classification head. Non-finite weights are refused."""
    return backbone_from(*read_checkpoint(path), path)


def backbone_from(tensors: dict, info: dict, path) -> tuple:
    """``load_backbone`` of a checkpoint already read from ``path``."""
    cfg = load_config(base=info["config"])
    state = backbone_state(tensors)
    check_finite(state, path)
    head = next((state[k] for k in ("head.weight", "fc.weight") if k in state), None)
    try:
        backbone = backbone_from_config(cfg.model, 0 if head is None or not head.dim() else head.shape[0])
    except (ConfigError, ValueError) as err:  # no option of the user's can mend a checkpoint's own config
        raise invalid_config(path, err) from None
    load_exactly(backbone, state, path)
    return backbone, cfg


def pretrained_state(path) -> dict:
    """Backbone weights from a ``last.ckpt`` or a ``backbone.safetensors``."""
    path = Path(path)
    if path.suffix == ".ckpt":
        return backbone_state(read_checkpoint(path)[0])
    if not path.is_file():
        raise DataError(f"pretrained weights {path} do not exist")
    try:
        return load_file(str(path))
    except Exception as err:
        raise DataError(f"cannot read pretrained weights {path}: {err}") from None


def load_pretrained(backbone: torch.nn.Module, path) -> None:
    """Copy pretrained weights into ``backbone``. A classifier of the pretraining task is
    dropped; the [CLS] token and position embedding may be missing or sized for another
    sequence (finetuning then starts them freshly initialised). Anything else that does not match is an error naming the keys."""
    own = backbone.state_dict()
    state = {k: v for k, v in pretrained_state(path).items() if not k.startswith(CLASSIFIERS)
             and not (k in ADDED_AT_FINETUNING and k in own and v.shape != own[k].shape)}  # resized: fresh
    problems = mismatch(own, state, may_miss=lambda k: k.startswith(CLASSIFIERS) or k in ADDED_AT_FINETUNING)
    if problems:
        raise DataError(f"the weights in {path} do not fit model.backbone ({problems}); "
                        "use the backbone and model.patch_size the checkpoint was trained with")
    backbone.load_state_dict(state, strict=False)

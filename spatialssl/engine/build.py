"""Models from configs and checkpoints: a config's backbone and method (fresh, or starting from pretrained
weights), and the evaluated backbone of a checkpoint or an export."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from ..detection import detectron2
from ..errors import ConfigError, DataError
from ..methods import METHODS, Method
from ..models import create_backbone
from ..models.vit import resize_position_embedding
from ..models.vit1d import VisionTransformer1D
from .checkpoint import (backbone_state, check_finite, invalid_config, load_exactly, migrate_config, mismatch,
                         read_checkpoint, run_checkpoint)
from .config import load_config

ADDED_AT_FINETUNING = ("cls_token", "pos_embed")
CLASSIFIERS = ("head.", "fc.")
EXPORTED_WEIGHTS, EXPORTED_DESCRIPTION = "model.safetensors", "config.json"  # an export folder's files


def backbone_from_config(model, num_classes: int = 0, pretrained: bool = False) -> nn.Module:
    """``create_backbone`` with the options of a ``ModelConfig``; ``pretrained`` fetches a timm/torchvision
    backbone's published weights (only a fresh run asks: a checkpoint's own weights replace them)."""
    return create_backbone(model.backbone, model.cifar_stem, num_classes, model.input_size, model.patch_size,
                           model.pos_embed, model.class_token, model.global_pool, model.drop_path, model.depth,
                           model.in_chans, model.num_tokens, pretrained)


def build_method(cfg, mean, std, num_classes: int = 0) -> Method:
    """The method named by ``cfg.method.name`` with a fresh backbone (or, with
    ``model.init_from``, one holding a pretrained checkpoint's weights)."""
    cls = METHODS[cfg.method.name]
    if cls.needs_labels and num_classes < cls.min_classes:
        raise ValueError(f"method {cfg.method.name} needs labels of >= {cls.min_classes} classes, got {num_classes}")
    backbone = backbone_from_config(cfg.model, num_classes if cls.classifies else 0,
                                    pretrained=cfg.model.pretrained and not cfg.model.init_from)
    if cfg.model.init_from:
        load_pretrained(backbone, cfg.model.init_from)
    return cls.from_config(cfg, backbone, mean, std, num_classes)


def load_backbone(path) -> tuple:
    """(backbone with the evaluated weights, its run's Config) from a run folder or its ``last.ckpt`` or
    ``backbone.safetensors``, an export folder (``export --format``) or an exported ``.safetensors`` with its
    ``.json`` beside it; a finetuned backbone comes with its classification head. Non-finite weights are refused."""
    path = run_checkpoint(path)
    if path.is_dir() and (path / detectron2.CHECKPOINT).is_file():
        raise DataError(detectron2_export(path))
    if path.is_dir() or path.suffix == ".safetensors":
        return backbone_from_export(path)
    tensors, info = read_checkpoint(path)
    return backbone_from(tensors, info, path)


def detectron2_export(folder: Path) -> str:
    """What to say of a folder ``export --format detectron2`` wrote: detectron2's, not a spatialssl backbone."""
    try:
        source = json.loads((folder / EXPORTED_DESCRIPTION).read_text())["spatialssl"]["source"]
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        source = "the checkpoint it was exported from"
    return (f"{folder} is an export for detectron2's ViTDet ({detectron2.CHECKPOINT}, ViTDet's keys), which "
            f"detectron2 loads as train.init_checkpoint; load_backbone takes {source} instead (or an export "
            "without --format, or with --format timm, torchvision or hf)")


def backbone_from(tensors: dict, info: dict, path) -> tuple:
    """``load_backbone`` of a checkpoint already read from ``path``."""
    return backbone_with(backbone_state(tensors), info["config"], path)


def backbone_from_export(path: Path) -> tuple:
    """``load_backbone`` of an export: the weights and the run's config its description carries (under
    "spatialssl" in a folder's config.json, which may follow timm's conventions around it)."""
    weights, description = ((path / EXPORTED_WEIGHTS, path / EXPORTED_DESCRIPTION) if path.is_dir()
                            else (path, path.with_suffix(".json")))
    if path.name == "backbone.safetensors" and not description.exists():  # a run's own: its last.json says what
        description = path.with_name("last.json")
    try:
        described = json.loads(description.read_text())
    except (OSError, ValueError, RecursionError) as err:
        reason = "nested too deeply" if isinstance(err, RecursionError) else getattr(err, "strerror", None) or err
        raise DataError(f"cannot read {description} ({reason}); load_backbone takes "
                        "a run folder (or its last.ckpt), an export folder, or an exported .safetensors with its .json "
                        "beside it") from None
    ours = described.get("spatialssl", described) if isinstance(described, dict) else None
    config = ours.get("config") if isinstance(ours, dict) else None
    if not isinstance(config, dict):
        raise DataError(f"{description} does not hold the run's config (exported by an older spatialssl?); build "
                        "the model with the class and kwargs it names, or load_backbone the run's last.ckpt")
    return backbone_with(pretrained_state(weights), migrate_config(config), path)


def backbone_with(state: dict, config: dict, path) -> tuple:
    """(the backbone ``config`` describes holding ``state``, the Config) or one line naming ``path``."""
    check_finite(state, path)
    try:
        cfg = load_config(base=config)
        backbone = backbone_from_config(cfg.model, classes_of(state))
    except (ConfigError, ValueError) as err:  # no option of the user's can mend a checkpoint's own config
        raise invalid_config(path, err) from None
    load_exactly(backbone, state, path)
    return backbone, cfg


def classes_of(state: dict) -> int:
    """The classes of the classification head in a backbone's ``state``: its last 2-D classifier weight
    (``head.weight``, ``fc.weight``, timm's ``head.fc.weight``); 0 without one."""
    heads = [v for k, v in state.items() if k.startswith(CLASSIFIERS) and k.endswith("weight") and v.dim() == 2]
    return heads[-1].shape[0] if heads else 0


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


def resized_to(own: dict, state: dict) -> dict:
    """``state`` with a position embedding learned on another square grid resampled to the model's (a
    detection canvas, a finetuning resolution), as timm and ViTDet do."""
    position, wanted = state.get("pos_embed"), own.get("pos_embed")
    if position is None or wanted is None or position.shape == wanted.shape or position.dim() != 3:
        return state
    new_prefix = int("cls_token" in own)
    resized = resize_position_embedding(position, int("cls_token" in state), new_prefix, wanted.shape[1] - new_prefix)
    return state if resized is None or resized.shape != wanted.shape else {**state, "pos_embed": resized}


def load_pretrained(backbone: torch.nn.Module, path) -> None:
    """Copy pretrained weights into ``backbone``. A classifier of the pretraining task is
    dropped; the [CLS] token and position embedding may be missing (finetuning then starts them freshly
    initialised); a position embedding of another square grid is resampled to the model's. Anything else that
    does not match is an error naming the keys."""
    own = backbone.state_dict()
    state = pretrained_state(path)
    if not isinstance(backbone, VisionTransformer1D):  # a 1-D sequence is no grid
        state = resized_to(own, state)
    state = {k: v for k, v in state.items() if not k.startswith(CLASSIFIERS)
             and not (k in ADDED_AT_FINETUNING and (k not in own or v.shape != own[k].shape))}  # unwanted or misfit
    problems = mismatch(own, state, may_miss=lambda k: k.startswith(CLASSIFIERS) or k in ADDED_AT_FINETUNING)
    if problems:
        raise DataError(f"the weights in {path} do not fit model.backbone ({problems}); "
                        "use the backbone and model.patch_size the checkpoint was trained with")
    backbone.load_state_dict(state, strict=False)

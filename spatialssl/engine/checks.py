"""Checks of a run's options against its data, before any work: the config alone is checked by
``config.validate``; here what needs the images or signals too. Building blocks check their own
arguments and name them (``num_tokens``); ``options_named`` re-words them with the options a user set."""
from __future__ import annotations

import re
from contextlib import contextmanager

from ..detection.targets import DetectionTargets
from ..errors import ConfigError, DataError
from ..methods import METHODS
from ..methods.deepcluster import cluster_count
from ..methods.part import part_tokens
from ..models import VisionTransformer1D, input_channels, is_vit, modality
from ..samplers.boxes import check_box_geometry
from ..samplers.masking import visible_count
from ..samplers.patches import check_patch_geometry
from ..samplers.windows import check_window_geometry
from .config import PART_BOX_METHODS, SR_PATCH_METHODS, Config


def is_signal_model(cfg: Config) -> bool:
    return modality(cfg.model.backbone) == "signals"


@contextmanager
def options_named(**keys: str):
    """Building blocks name their own arguments (``num_tokens``); a user set options (``part.num_tokens``):
    a block's ValueError becomes a ConfigError in the user's words."""
    try:
        yield
    except ValueError as err:
        message = str(err)
        for argument, key in keys.items():
            message = re.sub(rf"(?<![\w.]){re.escape(argument)}(?!\w)", key, message)
        raise ConfigError(message) from None


def data_channels(data) -> int:
    """Channels of an ImageSet/SignalSet (its tensor's dim 1) or of a stream (what it decodes to)."""
    return data.tensor.shape[1] if hasattr(data, "tensor") else data.channels


def check_statistics(cfg: Config, data) -> None:
    """The normalisation a run will use (given, a recipe's, or measured) has a value per channel."""
    channels = data_channels(data)
    for name in ("mean", "std"):
        values = getattr(cfg.data, name)
        if values is not None and len(values) != channels:
            raise ConfigError(f"data.{name} has {len(values)} values but {data.source} has {channels} channels; "
                              f"give {channels} values, or null to measure them on the training images")


def require_labels(data, purpose: str) -> None:
    if data.labels is None:
        raise DataError(f"{purpose} needs labels; {data.source} has none")


def check_processes(cfg: Config, world: int, device) -> None:
    """Options that depend on the processes torchrun started and their device."""
    # Each process takes an equal share, one image at least; RR and SR pair over the global batch, so a
    # share of one image is enough (config.validate asks for two images in the global batch).
    if cfg.train.batch_size % world:
        raise ConfigError(f"train.batch_size {cfg.train.batch_size} (the global batch) must be a multiple of the "
                          f"{world} processes, which take equal shares of it")
    share, micro = cfg.train.batch_size // world, cfg.train.accumulate_steps
    if cfg.train.batch_size // micro < 2:
        raise ConfigError(f"train.accumulate_steps {micro} leaves micro-batches of "
                          f"{cfg.train.batch_size // micro} image; each needs two at least")
    if share % micro:
        raise ConfigError(f"train.accumulate_steps {micro} must divide each process's share of train.batch_size "
                          f"({share} images{f' of {cfg.train.batch_size} over {world} processes' if world > 1 else ''})")
    if cfg.train.grad_compression == "bf16" and world > 1 and device.type != "cuda":
        raise ConfigError("train.grad_compression=bf16 needs CUDA devices (NCCL reduces bf16; gloo does not); use "
                          "train.grad_compression=fp16 or none for CPU processes")
    if cfg.train.sync_bn and world > 1 and device.type != "cuda":
        raise ConfigError("train.sync_bn needs CUDA devices (PyTorch's SyncBatchNorm is GPU-only); "
                          "turn it off for CPU processes")


def check_against_data(cfg: Config, data) -> None:
    """Checks of the options against the images or signals, before any work."""
    m, p, patch = cfg.method, cfg.part, cfg.model.patch_size
    if (m.name == "detect") != isinstance(getattr(data, "labels", None), DetectionTargets):
        raise ConfigError(f"method {m.name} cannot train on {data.source}: detection trains through `spatialssl "
                          "detect` on COCO-style data, and only it does")
    if METHODS[m.name].needs_labels:
        require_labels(data, f"method {m.name} (split '{cfg.data.split}')")
    size = data.input_size
    tokens = part_tokens(cfg, size)
    if is_signal_model(cfg):
        (length,) = size
        if m.name not in ("part", "finetune", "supervised", "random"):
            raise ConfigError(f"method {m.name} works on images; signals take part, finetune or supervised")
        if m.name == "part":
            with options_named(mode="part.sampling", window="model.patch_size", num_tokens="part.num_tokens",
                               window_scale="part.box_scale"):
                check_window_geometry(p.sampling, length, patch, tokens, p.box_scale)
        if length % patch:
            raise ConfigError(f"the {length}-sample epochs of {data.source} are not a multiple of model.patch_size "
                              f"{patch}; change model.patch_size or signal.epoch_seconds")
        tokens_are, items_are = "windows", "epochs"
    else:
        height, width = size
        if m.name in SR_PATCH_METHODS:
            with options_named(patch_size="method.patch_size", non_overlapping="method.non_overlapping"):
                check_patch_geometry(m.patch_size, height, width, m.num_patches, m.non_overlapping)
        if m.name == "rotation" and height != width:
            raise ConfigError(f"method rotation turns images by quarter turns, which needs them square; the "
                              f"{height}x{width} images of {data.source} are not: set data.image_size")
        if m.name in PART_BOX_METHODS:
            with options_named(mode="part.sampling", patch_size="model.patch_size", num_tokens="part.num_tokens",
                               box_size="part.box_size", box_scale="part.box_scale"):
                check_box_geometry(p.sampling, height, width, patch, tokens, p.box_size, p.box_scale)
        if is_vit(cfg.model.backbone) and (height % patch or width % patch):
            raise ConfigError(f"the {height}x{width} images of {data.source} are not a multiple of model.patch_size "
                              f"{patch}; set data.image_size or model.patch_size")
        tokens_are, items_are = "patches", "images"
    check_baselines_against_data(cfg, data)
    if m.name in PART_BOX_METHODS and p.num_pairs > tokens * (tokens - 1):
        raise ConfigError(f"part.num_pairs {p.num_pairs} exceeds the {tokens * (tokens - 1)} ordered pairs "
                          f"of {tokens} {tokens_are}; lower part.num_pairs")
    channels = data_channels(data)
    if cfg.model.in_chans is not None and cfg.model.in_chans != channels:  # set by a checkpoint (resume, finetune)
        raise DataError(f"the backbone takes {cfg.model.in_chans}-channel inputs (model.in_chans, from its "
                        f"checkpoint); {data.source} has {channels} (for signals, signal.channels picks which, in order)")
    if m.name != "random" and len(data) < cfg.train.batch_size:
        raise ConfigError(f"train.batch_size {cfg.train.batch_size} is larger than the {len(data)} {items_are} in "
                          f"{data.source}; lower train.batch_size")


def check_baselines_against_data(cfg: Config, data) -> None:
    """MAE, MP3 and DropPos keep a token of the image's grid visible (DropPos: one with its position too);
    DeepCluster has no more clusters than images."""
    name, patch = cfg.method.name, cfg.model.patch_size
    if name in ("mae", "mp3", "droppos"):
        height, width = data.input_size
        with options_named(mask_ratio=f"{name}.mask_ratio"):
            visible = visible_count((height // patch) * (width // patch), getattr(cfg, name).mask_ratio)
        if name == "droppos":
            with options_named(mask_ratio="droppos.position_mask_ratio"):
                visible_count(visible, cfg.droppos.position_mask_ratio)
    if name == "deepcluster":
        clusters = cluster_count(cfg, data.num_classes if data.labels is not None else 0)
        if clusters > len(data):
            raise ConfigError(f"deepcluster.clusters {clusters} exceeds the {len(data)} images of {data.source}; "
                              "lower deepcluster.clusters")


def check_input_size(backbone, path, data, sizes) -> None:
    """A backbone takes the channels it was trained on; an image ViT takes inputs that are a multiple of its
    patch size and, with a position embedding, only as many patches as it was trained with; anything else
    would fail deep in its forward pass."""
    channels, theirs = input_channels(backbone), data_channels(data)
    if channels != theirs:
        raise DataError(f"{path} holds a backbone that takes {channels}-channel inputs; {data.source} has {theirs} "
                        "channels (for signals, signal.channels picks which, in order)")
    if not hasattr(backbone, "patch_tokens") or isinstance(backbone, VisionTransformer1D):
        return  # not an image ViT (ours or timm's); the 1-D ViT's lengths are checked when signals are read
    patch = backbone.patch_size
    for height, width in sizes:
        if height % patch or width % patch:
            raise DataError(f"{path} holds a ViT with {patch}-pixel patches, which cannot tile the {height}x{width} "
                            f"inputs of {data.source}; set data.image_size to a multiple of {patch}")
        tokens = (height // patch) * (width // patch)
        if backbone.pos_embed is not None and tokens != backbone.num_tokens:
            raise DataError(f"{path} holds a ViT whose position embedding is sized for {backbone.num_tokens} patches; "
                            f"the {height}x{width} inputs of {data.source} give {tokens}: set data.image_size to "
                            "the size it was trained on")

"""Our image ViTs as the initialisation of detectron2's ViTDet (projects/ViTDet, Mask R-CNN): the state dict its
``DetectionCheckpointer`` loads as ``train.init_checkpoint`` and the LazyConfig overrides that build a ViT it fits.

ViTDet's backbone is a ``SimpleFeaturePyramid`` (``backbone.simfp_<stage>``) holding the ViT as ``.net``: its
blocks have timm's keys, so ours go under ``backbone.net.`` as they are. It has no final norm (the pyramid reads
the last block), no [CLS] token and no classifier. Its absolute position embedding is a square grid of
``pretrain_img_size / patch_size`` a side behind a [CLS] slot (``pretrain_use_cls_token``) that it drops, and is
resampled to the input. Its relative position tables (``use_rel_pos``) start at zero, so a ViT initialised
without them computes what ours computes, as with the MAE weights ViTDet starts from.
"""
from __future__ import annotations

import math
import shlex
from pathlib import Path
from typing import Optional

import torch

from ..errors import ConfigError
from ..models import VisionTransformer, VisionTransformer1D
from .pyramid import global_blocks

CHECKPOINT = "vitdet_init.pth"  # a .pth: DetectionCheckpointer reads it with torch.load, keys matched exactly
CONFIG_FILE = "projects/ViTDet/configs/COCO/mask_rcnn_vitdet_b_100ep.py"
NET, PYRAMID = "backbone.net.", "backbone."
LEFT_OUT = ("norm.", "head.", "cls_token")  # ViTDet's ViT has no final norm, classifier or [CLS] token
RELATIVE_TABLES = {"rows": "h", "cols": "w"}  # ours (relpos.RelativePositions) -> ViTDet's rel_pos_h, rel_pos_w
PYRAMID_SCALES = {"simfp_2": 4.0, "simfp_3": 2.0, "simfp_4": 1.0, "simfp_5": 0.5}  # ours, named for patch size 16
VITDET_PATCH, VITDET_DEPTH, VITDET_CHANNELS = 16, 12, 256  # what ViTDet-B's config assumes


def require_image_vit(backbone, name: str) -> None:
    """One line unless ``backbone`` is one of our image ViTs, the only backbones ViTDet's ViT takes."""
    if isinstance(backbone, VisionTransformer1D):
        raise ConfigError(f"--format detectron2 exports image ViTs (ViTDet's backbone); {name} is a 1-D ViT of "
                          "signals: export it without --format")
    if not isinstance(backbone, VisionTransformer):
        raise ConfigError(f"--format detectron2 exports image ViTs (ViTDet's backbone); {name} is not one: a "
                          "ResNet reaches detectron2 through torchvision's keys (--format torchvision, then "
                          "detectron2's tools/convert-torchvision-to-d2.py), else export without --format")


def pyramid_stage(patch_size: int, scale: float) -> int:
    """detectron2's number for a pyramid level: log2 of its stride, the ViT's patch size over the scale."""
    return int(math.log2(int(patch_size / scale)))


def position_grid(vit: VisionTransformer, input_size: Optional[list]) -> Optional[tuple]:
    """The (rows, columns) of ``vit``'s position embedding: the patches of ``input_size`` ([H, W]) when they are
    as many, else a square of its tokens; None when it is neither."""
    tokens = vit.num_tokens
    if input_size and len(input_size) == 2:
        rows, cols = (side // vit.patch_size for side in input_size)
        if rows * cols == tokens:
            return rows, cols
    side = math.isqrt(tokens)
    return (side, side) if side * side == tokens else None


def vitdet_state(vit: VisionTransformer, grid: Optional[tuple], pyramid: Optional[dict] = None) -> tuple:
    """(ViTDet's state dict holding ``vit`` and, from a detection run, its ``pyramid`` state; notes on what was
    left out or needs the config changed). ``grid``: the position embedding's (rows, columns), None if unknown."""
    state, notes = {}, []
    for key, value in vit.state_dict().items():
        if not key.startswith(LEFT_OUT) and key != "pos_embed":
            state[NET + key] = value
    if vit.cls_token is not None:
        notes.append("the [CLS] token is left out: ViTDet reads the patch tokens alone")
    if isinstance(vit.head, torch.nn.Linear):
        notes.append("the classifier is left out: ViTDet's heads replace it")
    position = _position_embedding(vit, grid, notes)
    if position is not None:
        state[NET + "pos_embed"] = position
    if pyramid is not None:
        for key, value in pyramid.items():
            level, rest = key.split(".", 1)
            if level == "positions":  # relative position biases: ViTDet keeps them in each block's attention
                block, table = rest.split(".")
                state[f"{NET}blocks.{block}.attn.rel_pos_{RELATIVE_TABLES[table]}"] = value
                continue
            state[f"{PYRAMID}simfp_{pyramid_stage(vit.patch_size, PYRAMID_SCALES[level])}.{rest}"] = value
        notes.append("the RPN and ROI heads are left out: ours are torchvision's, laid out unlike detectron2's, "
                     "which starts its own")
        channels = pyramid["simfp_4.0.weight"].shape[0]
        if channels != VITDET_CHANNELS:
            notes.append(f"the pyramid is {channels} channels wide, ViTDet's {VITDET_CHANNELS}: detectron2 skips its "
                         "convolutions (shapes differ) unless model.backbone.out_channels and the heads' widths "
                         "are changed to match")
    notes += _config_notes(vit)
    return {key: value.detach().contiguous() for key, value in state.items()}, notes


def _position_embedding(vit: VisionTransformer, grid: Optional[tuple], notes: list) -> Optional[torch.Tensor]:
    """Ours behind a [CLS] slot (zeros when ours has none: ViTDet drops the slot), or None with a note."""
    if vit.pos_embed is None:
        notes.append("no position embedding (as PART pretrains): ViTDet learns its own from a random start")
        return None
    if grid is None or grid[0] != grid[1]:
        shape = f"a {grid[0]} x {grid[1]} grid" if grid else "not a square grid"
        notes.append(f"the position embedding ({shape}) is left out: ViTDet's is square; it learns its own from a "
                     "random start")
        return None
    position = vit.pos_embed.detach()
    if vit.cls_token is None:
        position = torch.cat([position.new_zeros(1, 1, position.shape[2]), position], dim=1)
    return position


def _config_notes(vit: VisionTransformer) -> list:
    """Where ViTDet-B's config file assumes what our ViT is not, and the command line cannot say otherwise."""
    notes = []
    if vit.patch_size != VITDET_PATCH:
        if vit.patch_size % 4:
            notes.append(f"ViTDet's simple feature pyramid needs a patch size divisible by 4, this ViT's is "
                         f"{vit.patch_size}")
        else:
            low = pyramid_stage(vit.patch_size, 4.0)
            notes.append(f"ViTDet's Mask R-CNN reads pyramid levels p2..p6 (patch size 16); with patch size "
                         f"{vit.patch_size} they are p{low}..p{low + 4}: set the RPN's and ROI heads' in_features")
    depth = len(vit.blocks)
    if depth != VITDET_DEPTH:
        notes.append(f"set num_layers={depth} in the config file's optimizer.params.lr_factor_func (layer-wise "
                     "learning-rate decay; a functools.partial the command line cannot reach)")
    return notes


def vitdet_overrides(vit: VisionTransformer, state: dict, mean: Optional[list], std: Optional[list]) -> dict:
    """LazyConfig overrides of ViTDet-B's config that build a ViT ``state`` fits: our architecture, the
    pretraining grid of an exported position embedding, ViTDet's relative positions and stochastic depth,
    and our normalisation (in 0..255 pixels, as detectron2's)."""
    net, depth = "model.backbone.net.", len(vit.blocks)
    overrides = {f"{net}embed_dim": vit.embed_dim, f"{net}depth": depth, f"{net}num_heads": vit.num_heads,
                 f"{net}patch_size": vit.patch_size}
    mlp_ratio = vit.blocks[0].mlp.fc1.out_features / vit.embed_dim
    if mlp_ratio != 4:
        overrides[f"{net}mlp_ratio"] = mlp_ratio
    position = state.get(NET + "pos_embed")
    if position is not None:
        overrides[f"{net}pretrain_img_size"] = math.isqrt(position.shape[1] - 1) * vit.patch_size
    if depth != VITDET_DEPTH:
        overrides[f"{net}window_block_indexes"] = [i for i in range(depth) if i not in global_blocks(depth)]
    overrides.update({f"{net}use_rel_pos": True, f"{net}drop_path_rate": 0.1})
    if mean is not None and std is not None:
        overrides["model.pixel_mean"] = [round(m * 255, 3) for m in mean]
        overrides["model.pixel_std"] = [round(s * 255, 3) for s in std]
    return overrides


def _value(value) -> str:
    if isinstance(value, list):
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(value)


def train_command(checkpoint: Path, overrides: dict, notes: list) -> str:
    """The shell command that finetunes ViTDet from ``checkpoint`` in a detectron2 checkout, notes first."""
    arguments = [f"train.init_checkpoint={checkpoint}", *(f"{k}={_value(v)}" for k, v in overrides.items())]
    lines = [f"# {note}" for note in notes]
    lines.append(f"python tools/lazyconfig_train_net.py --config-file {CONFIG_FILE} \\")
    lines += [f"    {shlex.quote(argument)} \\" for argument in arguments[:-1]]
    lines.append(f"    {shlex.quote(arguments[-1])}")
    return "\n".join(lines)

"""``spatialssl export``: a checkpoint's backbone as a plain safetensors state dict that the
matching timm ViT or our ResNet (torchvision's keys) loads with ``load_state_dict``; the export
names that constructor and its keyword arguments."""
from __future__ import annotations

import json
from pathlib import Path

from ..engine import build, checkpoint
from ..engine.runfolder import check_writable
from ..files import atomic_write, write_or_explain
from ..models import VisionTransformer, VisionTransformer1D


def timm_constructor(backbone) -> dict:
    """How to build the matching model outside spatialssl."""
    if isinstance(backbone, VisionTransformer1D):  # timm has no 1-D ViT: its blocks use timm's keys
        timm = backbone.timm_kwargs()
        kwargs = {k: timm[k] for k in ("patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio", "class_token",
                                       "global_pool", "num_classes")}
        return {"library": "spatialssl", "class": "spatialssl.models.VisionTransformer1D",
                "kwargs": {**kwargs, "in_chans": backbone.patch_embed.proj.in_channels,
                           "num_tokens": backbone.num_tokens, "pos_embed": backbone.pos_embed is not None}}
    if isinstance(backbone, VisionTransformer):
        return {"library": "timm", "class": "timm.models.vision_transformer.VisionTransformer",
                "kwargs": backbone.timm_kwargs()}
    # Our ResNet class, not a torchvision name: the CIFAR ResNets and the CIFAR stem have no torchvision
    # constructor. Its keys are torchvision's, so an ImageNet-stem resnet18/34 loads there too.
    return {"library": "spatialssl", "class": "spatialssl.models.ResNet", "kwargs": backbone.constructor_kwargs()}


def export(path, out) -> dict:
    """Write the backbone of checkpoint ``path`` to ``out`` (.safetensors): the weights' moving
    average when the run kept one (``train.ema``, said in ``weights``). The metadata and a
    sibling ``.json`` say how to construct the model it fits. Returns that description."""
    out = Path(out)
    if out.suffix != ".safetensors":
        out = out.with_suffix(".safetensors")
    check_writable(out.parent, "the export folder", "choose another --out or fix its permissions")
    tensors, info = checkpoint.read_checkpoint(path)
    backbone, cfg = build.backbone_from(tensors, info, path)
    described = {**timm_constructor(backbone), "backbone": cfg.model.backbone, "source": str(path),
                 "mean": cfg.data.mean, "std": cfg.data.std, **checkpoint.weights_record(info)}
    advice = f"free space in (or fix the permissions of) {out.parent} and export again"
    write_or_explain(out, lambda: checkpoint.save_weights(out, backbone.state_dict(),
                                                          {"spatialssl": json.dumps(described)}), advice)
    sidecar = out.with_suffix(".json")
    write_or_explain(sidecar, lambda: atomic_write(sidecar, lambda tmp: Path(tmp).write_text(
        json.dumps(described, indent=2))), advice)
    return {**described, "path": str(out)}

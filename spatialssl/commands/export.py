"""``spatialssl export``: a checkpoint's backbone for use outside spatialssl.

Without ``--format``: a plain safetensors state dict that the matching timm ViT or our ResNet (torchvision's
keys) loads with ``load_state_dict``, and a sibling ``.json`` naming that constructor and its keyword arguments.
With ``--format``, a folder of ``model.safetensors`` and ``config.json``: ``timm`` follows timm's conventions
(``timm.create_model("local-dir:DIR", pretrained=True)``), ``torchvision`` is a state dict torchvision's ResNet
loads, ``hf`` adds a model card for the Hugging Face Hub (``--push`` uploads it). Every description holds the
run's config, so ``spatialssl.load_backbone`` reads these exports as it reads a checkpoint, and the data the run
read and the results beside its checkpoint (metrics.csv, linear-evaluation and finetuning reports), so the model
card describes the run, not its recipe. ``detectron2`` is a folder of ``vitdet_init.pth``, the ViT (and a
detection run's pyramid) under detectron2 ViTDet's keys for its ``train.init_checkpoint``, and a config.json with
the LazyConfig overrides that fit it; not a spatialssl backbone, so ``load_backbone`` takes the checkpoint it came
from instead.
"""
from __future__ import annotations

import copy
import csv
import json
from pathlib import Path
from typing import Optional

import torch

from ..detection import detectron2
from ..engine import build, checkpoint
from ..engine.runfolder import check_writable
from ..engine.runlog import read_metrics
from ..errors import ConfigError, DataError, first_line
from ..files import atomic_write, refuse_to_replace, write_or_explain
from ..models import VisionTransformer, VisionTransformer1D
from .card import model_card

FORMATS = ("timm", "torchvision", "hf", "detectron2")
TORCHVISION_RESNETS = ("resnet18", "resnet34")  # ours with the ImageNet stem are torchvision's (and timm's)
# The pretrained tag of our timm architectures ("vit_tiny_patch16_224.spatialssl"). timm builds the architecture
# and ignores the tag where config.json is read (local-dir:, hf-hub:), with its model_args; the bare name, without
# them, would build timm's stock model (patch 16, 224 px, a position embedding) and load our weights into it with a
# log line. timm knows no such tag, so that call fails instead.
TIMM_TAG = "spatialssl"


def timm_constructor(backbone) -> dict:
    """How to build the matching model outside spatialssl."""
    origin = getattr(backbone, "origin", None)  # a timm/ or torchvision/ backbone
    if origin is not None and origin.library == "timm":
        return {"library": "timm", "class": "timm.create_model",
                "kwargs": {"model_name": origin.architecture, **origin.kwargs}}
    if origin is not None:  # without a classifier, load with strict=False (or set model.fc = nn.Identity())
        return {"library": "torchvision", "class": f"torchvision.models.{origin.architecture}", "kwargs": origin.kwargs}
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


def built_by(backbone, cfg) -> dict:
    """{library: (architecture, keyword arguments)} for each of timm and torchvision that builds a model with
    ``backbone``'s keys and features."""
    origin = getattr(backbone, "origin", None)
    if origin is not None:
        return {origin.library: (origin.architecture, origin.kwargs)}
    if isinstance(backbone, VisionTransformer1D):
        return {}
    if isinstance(backbone, VisionTransformer):  # the size's timm name; the arguments set everything else
        return {"timm": (f"{cfg.model.backbone}_patch16_224", backbone.timm_kwargs())}
    kwargs = backbone.constructor_kwargs()
    if cfg.model.backbone not in TORCHVISION_RESNETS or kwargs["stem"] != "imagenet":
        return {}
    classes = kwargs["num_classes"]
    return {"timm": (cfg.model.backbone, {"num_classes": classes}),
            "torchvision": (cfg.model.backbone, {"num_classes": classes} if classes else {})}


def describe(backbone, cfg, info: dict, path) -> dict:
    """What an export says about itself: the constructor, where it came from, its inputs, the data the run read
    (None for checkpoints older than that record), its results and the run's config."""
    return {**timm_constructor(backbone), "backbone": cfg.model.backbone, "source": str(path), "epoch": info["epoch"],
            "mean": cfg.data.mean, "std": cfg.data.std, **checkpoint.weights_record(info), "data": info.get("data"),
            "results": run_results(path, info), "config": cfg.to_dict()}


def run_results(path, info: dict) -> dict:
    """What the run folder of checkpoint ``path`` measured, where it exists: the loss of the first and the last
    epoch and the last kNN monitor, up to the checkpoint's epoch (metrics.csv, else the checkpoint's own metrics),
    ``linear_eval-*.json`` and ``finetune.json``; data named, never a path."""
    folder = checkpoint.run_checkpoint(path).parent
    results = {}
    rows = _epoch_rows(folder, info)
    losses = [(int(row["epoch"]), float(row["loss"])) for row in rows if _present(row.get("loss"))]
    if losses:
        results["loss"] = {"epoch": losses[-1][0], "final": losses[-1][1]}
        if len(losses) > 1:
            results["loss"].update(first_epoch=losses[0][0], first=losses[0][1])
    monitored = [row for row in rows if _present(row.get("knn_acc"))]
    if monitored:
        last = monitored[-1]
        results["knn"] = {"accuracy": float(last["knn_acc"]), "k": int(last["knn_k"]), "epoch": int(last["epoch"])}
    linear = [{"report": report.name, "data": _name(r["data"]), "knn": r.get("knn"),
               "test_acc": {n: scores["test_acc"] for n, scores in r["linear"].items()}}
              for report in sorted(folder.glob("linear_eval-*.json")) for r in [_json(report)]
              if isinstance(r, dict) and "data" in r and isinstance(r.get("linear"), dict)]
    if linear:
        results["linear_eval"] = linear
    finetuned = _json(folder / "finetune.json")
    if isinstance(finetuned, dict) and "test_acc" in finetuned:
        results["finetune"] = {"data": _name(finetuned.get("data")),
                               **{k: finetuned.get(k) for k in ("test_acc", "macro_f1", "kappa")}}
    return results


def _epoch_rows(folder: Path, info: dict) -> list:
    """metrics.csv's rows up to the checkpoint's epoch; the checkpoint's own metrics without one."""
    try:
        return [row for row in read_metrics(folder) if int(row["epoch"]) <= info["epoch"]]
    except (OSError, ValueError, KeyError, csv.Error):  # a checkpoint moved out of its run, or a damaged log
        own = info.get("metrics") or {}
        return [{"epoch": info["epoch"], **own}] if own else []


def _present(value) -> bool:
    return value is not None and value != ""  # an empty csv cell: not measured that epoch


def _name(path) -> Optional[str]:
    """A report's data, by name: reports write data given in memory as "None"."""
    return Path(path).name if path not in (None, "None") else None


def _json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return None


def export(path, out, format: Optional[str] = None, push: Optional[str] = None, overwrite: bool = False) -> dict:
    """Write the backbone of checkpoint ``path`` to ``out``: the weights' moving average when the run kept
    one (``train.ema``, said in ``weights``). Without ``format`` a .safetensors file with a sibling .json; with
    one of FORMATS a folder. Output already at ``out`` is refused unless ``overwrite``. Returns the description,
    with ``path`` and a ``snippet`` that loads it."""
    if format is not None and format not in FORMATS:
        raise ConfigError(f"--format '{format}' is unknown; choose one of {', '.join(FORMATS)}")
    if push and format != "hf":
        raise ConfigError("--push uploads a Hugging Face folder; add --format hf")
    out = Path(out)
    if format is None:
        out = out.with_suffix(".safetensors")
    elif out.suffix in (".safetensors", ".pth"):
        raise ConfigError(f"--format {format} writes a folder (with a config.json); give --out a folder name")
    for target in (out, out.with_suffix(".json")) if format is None else (out,):
        refuse_to_replace(target, overwrite)
    tensors, info = checkpoint.read_checkpoint(path)
    backbone, cfg = build.backbone_from(tensors, info, path)
    if format == "detectron2":  # before the folder is made: a refused export leaves nothing behind
        detectron2.require_image_vit(backbone, cfg.model.backbone)
    check_writable(out if format else out.parent, "the export folder", "choose another --out or fix its permissions")
    described = describe(backbone, cfg, info, path)
    if format is None:
        return export_file(backbone, described, out)
    if format == "detectron2":
        return export_detectron2(backbone, cfg, described, checkpoint.evaluated_state(tensors), out)
    return export_folder(backbone, cfg, described, out, format, push)


def _advice(folder: Path) -> str:
    return f"free space in (or fix the permissions of) {folder} and export again"


def _write_json(path: Path, content: dict) -> None:
    write_or_explain(path, lambda: atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(content, indent=2))),
                     _advice(path.parent))


def _write_weights(path: Path, backbone, described: dict) -> None:
    write_or_explain(path, lambda: checkpoint.save_weights(path, backbone.state_dict(),
                                                           {"spatialssl": json.dumps(described)}), _advice(path.parent))


def export_file(backbone, described: dict, out: Path) -> dict:
    """The default export: ``out`` (.safetensors, the description in its metadata) and ``out.json``."""
    _write_weights(out, backbone, described)
    _write_json(out.with_suffix(".json"), described)
    return {**described, "path": str(out)}


def _builder(library: str, builders: dict, described: dict, format: str) -> tuple:
    if library not in builders:
        raise ConfigError(f"--format {format} needs a backbone {library} builds (timm: spatialssl's image ViTs, "
                          f"resnet18/34 with the ImageNet stem, timm/ backbones; torchvision: those ResNets and "
                          f"torchvision/ backbones); {described['backbone']} has none: export without --format "
                          f"({described['class']}(**kwargs) rebuilds it) or with --format hf")
    return builders[library]


def export_folder(backbone, cfg, described: dict, folder: Path, format: str, push: Optional[str]) -> dict:
    """``folder``/model.safetensors and config.json in ``format``'s conventions (hf: timm's where timm builds
    the backbone, else our description alone) and, for hf, README.md; pushed to ``push`` when given."""
    builders = built_by(backbone, cfg)
    if format == "hf":
        described = without_local_paths(described)
    if format == "torchvision":
        config = {"spatialssl": described}
        snippet = torchvision_snippet(folder, *_builder("torchvision", builders, described, format))
    elif format == "timm":
        config = timm_config(backbone, cfg, described, *_builder("timm", builders, described, format))
        snippet = f"import timm\nbackbone = timm.create_model({f'local-dir:{folder}'!r}, pretrained=True)"
    else:  # hf: timm's config where timm builds the backbone (timm.create_model("hf-hub:...")), else ours alone
        config = (timm_config(backbone, cfg, described, *builders["timm"]) if "timm" in builders
                  else {"spatialssl": described})
        snippet = f"import spatialssl\nbackbone, cfg = spatialssl.load_backbone({str(folder)!r})"
    _write_weights(folder / build.EXPORTED_WEIGHTS, backbone, described)
    _write_json(folder / build.EXPORTED_DESCRIPTION, config)
    if format == "hf":
        card, text = folder / "README.md", model_card(described, push, timm="timm" in builders)
        write_or_explain(card, lambda: atomic_write(card, lambda tmp: Path(tmp).write_text(text)), _advice(folder))
        if push:
            push_to_hub(folder, push)
    return {**described, "path": str(folder), "snippet": snippet}


def export_detectron2(backbone, cfg, described: dict, weights: dict, folder: Path) -> dict:
    """``folder``/vitdet_init.pth, ViTDet's state dict with the ViT (and a detection run's pyramid) as a
    detectron2 checkpoint, and config.json: the LazyConfig overrides that fit it, notes, our description.
    ``weights``: the method's evaluated state (the pyramid's source)."""
    pyramid = ({k[len("pyramid."):]: v for k, v in weights.items() if k.startswith("pyramid.")}
               if cfg.method.name == "detect" else None)
    state, notes = detectron2.vitdet_state(backbone, detectron2.position_grid(backbone, cfg.model.input_size),
                                             pyramid)
    overrides = detectron2.vitdet_overrides(backbone, state, cfg.data.mean, cfg.data.std)
    target = folder / detectron2.CHECKPOINT
    # detectron2's own checkpoint layout: {"model": state dict} (a pickle, which only torch.load reads)
    content = {"model": state, "__author__": "spatialssl"}
    write_or_explain(target, lambda: atomic_write(target, lambda tmp: torch.save(content, tmp)), _advice(folder))
    _write_json(folder / build.EXPORTED_DESCRIPTION,
                {"detectron2": {"init_checkpoint": detectron2.CHECKPOINT, "config_file": detectron2.CONFIG_FILE,
                                "overrides": overrides, "notes": notes}, "spatialssl": described})
    return {**described, "path": str(folder), "notes": notes,
            "snippet": detectron2.train_command(target, overrides, notes)}


def without_local_paths(described: dict) -> dict:
    """``described`` for a public repository: the checkpoint's, the data's and model.init_from's paths cut to
    their names, the data's source (a path) left out (nothing that builds the backbone needs them)."""
    config = copy.deepcopy(described["config"])
    for section, key in (("data", "path"), ("model", "init_from")):
        if config[section][key]:
            config[section][key] = Path(config[section][key]).name
    data = described["data"] and {k: v for k, v in described["data"].items() if k != "source"}
    return {**described, "source": Path(described["source"]).name, "data": data, "config": config}


def timm_config(backbone, cfg, described: dict, architecture: str, kwargs: dict) -> dict:
    """timm's config.json (as ``timm.models.push_to_hf_hub`` writes it): the architecture (with TIMM_TAG) and
    the arguments that rebuild this backbone, and a pretrained_cfg with its input size and our normalisation.
    ``spatialssl`` holds our description."""
    classes = build.classes_of(backbone.state_dict())
    pretrained_cfg = {"input_size": [cfg.model.in_chans, *cfg.model.input_size], "interpolation": "bilinear",
                      "crop_pct": 1.0, "mean": cfg.data.mean, "std": cfg.data.std, "num_classes": classes,
                      **timm_layers(backbone)}
    return {"architecture": f"{architecture}.{TIMM_TAG}", "num_classes": classes,
            "num_features": backbone.num_features, "model_args": kwargs, "pretrained_cfg": pretrained_cfg,
            "spatialssl": described}


def timm_layers(backbone) -> dict:
    """The layers timm's pretrained_cfg names (a stem adapted to other channels, a classifier dropped for
    other classes) and whether the input size is fixed: a timm model states its own."""
    own = getattr(backbone, "pretrained_cfg", None)
    if own is not None:
        return {k: own.get(k) for k in ("first_conv", "classifier", "fixed_input_size")}
    vit = isinstance(backbone, VisionTransformer)
    return {"first_conv": "patch_embed.proj" if vit else "conv1", "classifier": "head" if vit else "fc",
            "fixed_input_size": vit}


def torchvision_snippet(folder: Path, architecture: str, kwargs: dict) -> str:
    arguments = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    lines = ["import torch, torchvision", "from safetensors.torch import load_file",
             f"backbone = torchvision.models.{architecture}({arguments})"]
    if not kwargs.get("num_classes"):
        lines.append("backbone.fc = torch.nn.Identity()  # a pretrained backbone has no classifier")
    lines.append(f"backbone.load_state_dict(load_file({str(folder / build.EXPORTED_WEIGHTS)!r}))")
    return "\n".join(lines)


def push_to_hub(folder: Path, repo_id: str) -> None:
    """Upload ``folder`` as the Hub model ``repo_id`` (created if needed); a failure as one line."""
    try:
        from huggingface_hub import HfApi

        api = HfApi()
        api.create_repo(repo_id, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, commit_message="spatialssl export")
    except Exception as err:
        raise DataError(f"pushing {folder} to the Hugging Face Hub as {repo_id} failed ({first_line(err)}); the "
                        f"folder is written: log in (huggingface-cli login, or HF_TOKEN) and check the network, "
                        f"then `huggingface-cli upload {repo_id} {folder}`") from None

"""Checkpoints: safetensors files written atomically, with the run's config inside.

``last.ckpt`` (safetensors) holds the method's weights (``method.*``), the optimiser state
(``optimizer.*``) and the data-order generator (``rng.order``); its metadata holds the config,
the epoch and the optimiser's hyper-parameters, so it alone resumes a run, and what data it read
(``data_record``, for exports' model cards; older checkpoints have none). With ``train.ema``
it also holds the moving average of the method's weights (``ema.*``, the same keys), and
evaluation, export and finetuning read those (metadata ``"weights": "ema"`` and the decay).
``last.json`` is the same metadata for people. ``backbone.safetensors`` is the backbone that
evaluation uses (the EMA's when there is one) under torchvision's keys, for use outside spatialssl.
"""
from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Optional

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..ema import WeightEMA
from ..errors import ConfigError, DataError, MissingPackage, shown, warn
from ..files import TEMPORARY_SUFFIX, atomic_write, write_or_explain

FORMAT = "spatialssl-checkpoint-1"  # ema.* is optional: checkpoints without it read as before
LIVE, EMA = "method.", "ema."


def save_weights(path: Path, tensors: dict, metadata: Optional[dict] = None, before_rename=None) -> None:
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}

    def write(tmp):
        try:
            save_file(tensors, tmp, metadata=metadata)
        except SafetensorError as err:  # e.g. a full disk; not an OSError, so say it as one
            raise OSError(errno.EIO, f"safetensors: {err}") from None

    atomic_write(Path(path), write, before_rename)


def kept_checkpoints(out_dir: Path, keep: int) -> list:
    """last.ckpt and the ``keep - 1`` before it, newest first: last-1.ckpt, last-2.ckpt, ..."""
    return [Path(out_dir) / "last.ckpt"] + [Path(out_dir) / f"last-{i}.ckpt" for i in range(1, keep)]


def rotate(out_dir: Path, keep: int) -> None:
    """Each kept checkpoint one place older (the oldest dropped), each by an atomic rename; last.ckpt is
    linked, not moved, where the file system allows, so a kill between two renames always leaves one."""
    kept = kept_checkpoints(out_dir, keep)
    for newer, older in reversed(list(zip(kept[1:-1], kept[2:]))):
        if newer.exists():
            os.replace(newer, older)
    if keep > 1 and kept[0].exists():
        try:
            side = kept[1].with_name(f".{kept[1].name}.linkside{TEMPORARY_SUFFIX}")  # swept if a kill leaves it
            side.unlink(missing_ok=True)
            os.link(kept[0], side)
            os.replace(side, kept[1])
        except OSError:  # no hard links here: moved, and for an instant last-1.ckpt alone holds the run
            os.replace(kept[0], kept[1])


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple:
    state = optimizer.state_dict()
    tensors = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            tensors[f"optimizer.{index}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return tensors, state["param_groups"]


def save_checkpoint(out_dir: Path, method: torch.nn.Module, optimizer: Optional[torch.optim.Optimizer],
                    generators: dict, config: dict, epoch: int, metrics: dict, ema: Optional[WeightEMA] = None,
                    scaler: Optional[torch.amp.GradScaler] = None, data: Optional[dict] = None, keep: int = 1,
                    progress: Optional[dict] = None, extra: Optional[dict] = None) -> Path:
    """``data``: ``data_record`` of the training data, what exports say the run was trained on; ``keep``: how
    many checkpoints the folder keeps (the previous ones rotated to last-1.ckpt, ...); ``progress`` and
    ``extra`` tensors: where in the epoch a checkpoint written mid-epoch stopped (``epoch`` epochs done)."""
    out_dir = Path(out_dir)
    tensors = {f"{LIVE}{k}": v for k, v in method.state_dict().items()}
    averaging = {}
    if ema is not None:
        tensors.update({f"{EMA}{k}": v for k, v in ema.state_dict().items()})
        averaging = {"weights": "ema", "ema_decay": ema.decay}
    param_groups = []
    if optimizer is not None:
        optimizer_tensors, param_groups = _optimizer_tensors(optimizer)
        tensors.update(optimizer_tensors)
    for name, generator in generators.items():
        tensors[f"rng.{name}"] = generator.get_state()
    tensors.update(extra or {})
    info = {"format": FORMAT, "epoch": epoch, "config": config, "metrics": metrics, **averaging,
            **({"data": data} if data else {})}
    resumption = {"param_groups": param_groups, **({"grad_scaler": scaler.state_dict()} if scaler else {}),
                  **({"progress": progress} if progress else {})}
    metadata = {"spatialssl": json.dumps({**info, **resumption})}
    path = out_dir / "last.ckpt"
    _write_or_explain(path, lambda: save_weights(path, tensors, metadata, lambda: rotate(out_dir, keep)))
    write_companions(out_dir, tensors, info)
    return path


def write_companions(out_dir: Path, tensors: dict, info: dict) -> None:
    """``backbone.safetensors`` and ``last.json``, derived from a checkpoint's tensors and info alone.
    ``last.ckpt`` is written first and is the commit point: a run killed before these were written
    gets them re-derived from it on resume (``sync_companions``)."""
    out_dir = Path(out_dir)
    info = {k: v for k, v in info.items() if k not in ("param_groups", "grad_scaler")}  # for resuming, not people
    backbone_metadata = {"spatialssl": json.dumps({"backbone": info["config"]["model"], "epoch": info["epoch"],
                                                   **weights_record(info)})}
    backbone = out_dir / "backbone.safetensors"
    _write_or_explain(backbone, lambda: save_weights(backbone, backbone_state(tensors), backbone_metadata))
    summary = out_dir / "last.json"
    _write_or_explain(summary, lambda: atomic_write(summary, lambda tmp: Path(tmp).write_text(json.dumps(info, indent=2))))


def sync_companions(out_dir: Path, tensors: dict, info: dict) -> bool:
    """Re-derive ``backbone.safetensors`` and ``last.json`` from the checkpoint (``tensors``, ``info``)
    when either is missing, unreadable or of another epoch; return whether they were rewritten."""
    out_dir = Path(out_dir)
    epochs = (_backbone_epoch(out_dir / "backbone.safetensors"), _summary_epoch(out_dir / "last.json"))
    if all(epoch == info["epoch"] for epoch in epochs):
        return False
    write_companions(out_dir, tensors, info)
    return True


def _backbone_epoch(path: Path) -> Optional[int]:
    """The epoch in an exported backbone's metadata; None when missing or unreadable (a kill mid-write)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return json.loads((f.metadata() or {}).get("spatialssl", "{}")).get("epoch")
    except Exception:  # any damage means the same thing here: derive it again
        return None


def _summary_epoch(path: Path) -> Optional[int]:
    try:
        return json.loads(path.read_text()).get("epoch")
    except (OSError, ValueError, AttributeError, RecursionError):
        return None


def _write_or_explain(path: Path, write) -> None:
    """The write is atomic, so on failure the previous file stays whole and the run can resume from it."""
    write_or_explain(path, write, f"the previous {path.name} is kept. Free space in (or fix the permissions of) "
                                  f"{path.parent} and continue with --resume")


def data_record(data, cfg) -> dict:
    """What a run read, which its config alone cannot say (a recipe's ``data.dataset`` names the data it was
    written for): the layout the reader detected, the data's name (``data.path``'s last part, never the whole
    path), its source, and how many training examples of which size."""
    layout = getattr(data, "layout", None)  # "": images built in memory; None: signals, which have no layouts
    name = Path(cfg.data.path).name if cfg.data.path and layout != "" else None
    return {"layout": layout or None, "name": name, "source": data.source, "examples": len(data),
            "input_size": list(data.input_size)}


def run_checkpoint(path) -> Path:
    """The checkpoint ``path`` names: a run folder names its ``last.ckpt``, so ``--checkpoint RUN`` works."""
    path = Path(path)
    return path / "last.ckpt" if path.is_dir() and (path / "last.ckpt").is_file() else path


def read_resumable(out_dir: Path, keep: int = 100, repair: bool = False) -> tuple:
    """(tensors, info) of the newest readable checkpoint in the run folder ``out_dir`` (last.ckpt, else
    last-1.ckpt, ...), warning what it skipped and why. ``repair`` (only while holding the folder's lock): the
    unreadable ones are renamed ``*.unreadable`` and the readable one becomes last.ckpt again."""
    candidates = [p for p in kept_checkpoints(out_dir, keep) if p.exists() or p.name == "last.ckpt"]
    skipped = []
    for path in candidates:
        try:
            tensors, info = read_checkpoint(path)
        except DataError as err:
            skipped.append((path, err))
            continue
        if skipped:
            warn(f"--resume: {'; '.join(f'{p.name} skipped ({e})' for p, e in skipped)}; resuming from {path.name} "
                 f"(epoch {info['epoch']})")
            if repair:
                for bad, _ in skipped:
                    if bad.exists():
                        os.replace(bad, bad.with_name(bad.name + ".unreadable"))
                os.replace(path, candidates[0])
        return tensors, info
    raise skipped[0][1] if len(skipped) == 1 else DataError(
        f"no readable checkpoint in {out_dir}: {'; '.join(str(e) for _, e in skipped)}")


def read_checkpoint(path) -> tuple:
    """Return (tensors, info) of a checkpoint (or of a run folder's), or raise DataError naming the file."""
    path = run_checkpoint(path)
    if path.is_dir():
        raise DataError(f"checkpoint {path} is a folder without a last.ckpt; pass a run folder or a last.ckpt")
    if not path.is_file():
        if path.exists():  # a FIFO or a device: reading it could block or never end
            raise DataError(f"checkpoint {path} is not a regular file; pass a run folder or its last.ckpt")
        raise DataError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = (f.metadata() or {}).get("spatialssl", "{}")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:
        raise DataError(f"cannot read checkpoint {path}: {err}") from None
    info = _checked_info(path, metadata)
    info["config"] = migrate_config(info["config"])
    _check_config(path, info["config"])
    return tensors, info


MAX_METADATA = 64 << 20  # characters; a run's metadata (config, metrics, param groups) is a few kB
# What every checkpoint's metadata holds (required) and may hold, with the type each must have.
REQUIRED = {"epoch": int, "config": dict}
OPTIONAL = {"metrics": dict, "param_groups": list, "ema_decay": float, "grad_scaler": dict, "data": dict,
            "progress": dict}


def _checked_info(path: Path, metadata: str) -> dict:
    """The checkpoint's metadata, its keys and their types checked: a damaged or hand-made file is
    refused here, in one line, rather than wherever a key is first used."""
    try:
        info = json.loads(metadata) if len(metadata) <= MAX_METADATA else None
    except (ValueError, RecursionError):  # not JSON, or nested too deeply for Python to read it
        raise DataError(f"checkpoint {path} holds metadata that is not readable JSON (malformed or nested too "
                        "deeply); it is damaged: use another checkpoint") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise DataError(f"{path} is not a spatialssl checkpoint (no '{FORMAT}' metadata)")
    for key, kind in {**REQUIRED, **OPTIONAL}.items():
        if key not in info:
            if key in REQUIRED:
                raise DataError(f"checkpoint {path} lacks '{key}' in its metadata; it is damaged or not written "
                                "by spatialssl: use another checkpoint")
        elif not isinstance(info[key], kind) or isinstance(info[key], bool):
            raise DataError(f"checkpoint {path} has a malformed '{key}' in its metadata ({kind.__name__} expected, "
                            f"got {shown(info[key])}); it is damaged: use another checkpoint")
    if info["epoch"] < 0:
        raise DataError(f"checkpoint {path} has a negative epoch {info['epoch']}; it is damaged: use another checkpoint")
    return info


def _check_config(path: Path, config: dict) -> None:
    from .config import load_config

    try:
        load_config(base=config)
    except MissingPackage:  # the checkpoint is fine; this machine lacks what its backbone needs
        raise
    except ConfigError as err:
        raise invalid_config(path, err) from None


def invalid_config(path: Path, err: ConfigError) -> DataError:
    return DataError(f"the config inside checkpoint {path} is not valid ({err}); it is damaged or from an "
                     "incompatible spatialssl: use another checkpoint")


def migrate_config(config: dict) -> dict:
    """A checkpoint's config as today's defaults would read it, meaning what it meant when
    written: runs from before these options pasted SR additive patches where they were cut
    and built PART's cross-attention encoder as a pre-norm block."""
    if not isinstance(config, dict):  # malformed: load_config names the problem
        return config
    method, part = config.get("method"), config.get("part")
    if isinstance(method, dict) and "additive_placement" not in method:
        method["additive_placement"] = "same"
    if isinstance(part, dict) and "encoder_heads" not in part and part.get("encoder") == "cross_attention":
        part["encoder"] = "cross_attention_block"
    return config


def _state(tensors: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def restore(tensors: dict, info: dict, method: torch.nn.Module, optimizer=None, generators=None,
            ema: Optional[WeightEMA] = None, path="the checkpoint", scaler: Optional[torch.amp.GradScaler] = None) -> None:
    """Everything a resumed run needs: live weights, optimiser, generators, the weights' EMA and fp16's
    gradient scale (a checkpoint of another precision has none: the scaler starts afresh)."""
    load_exactly(method, _state(tensors, LIVE), path)
    if ema is not None:
        averaged = _state(tensors, EMA)
        if not averaged:
            raise DataError(f"{path} holds no moving average of the weights (ema.*) to resume train.ema from")
        load_exactly(ema.module, averaged, path)
    try:
        if optimizer is not None:
            _restore_optimizer(optimizer, tensors, info["param_groups"])
        for name, generator in (generators or {}).items():
            generator.set_state(tensors[f"rng.{name}"])
        if scaler is not None and "grad_scaler" in info:
            scaler.load_state_dict(info["grad_scaler"])
    except (KeyError, ValueError, TypeError, RuntimeError) as err:  # what torch raises for a state that does not fit
        raise DataError(f"cannot resume from {path}: its optimiser or random-generator state is damaged "
                        f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                        "start a new run in another --out") from None


def _restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict, param_groups: list) -> None:
    """The saved optimiser state, under the hyper-parameters ``optimizer`` was built with: optim.*
    may change on resume (e.g. a lower learning rate after a NaN stop)."""
    own = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
    optimizer.load_state_dict({"state": _optimizer_state(tensors), "param_groups": param_groups})
    for group, settings in zip(optimizer.param_groups, own):
        group.update(settings)  # fused/foreach too: the kernels of this machine, not of the one that saved
    _restride_like_parameters(optimizer)


def _restride_like_parameters(optimizer: torch.optim.Optimizer) -> None:
    """Moments were saved contiguous; a channels_last parameter needs channels_last moments (CUDA's fused
    Adam refuses mismatched layouts, and a fused kernel would pair the wrong elements)."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            for key, value in state.items():
                if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                    state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def _optimizer_state(tensors: dict) -> dict:
    state: dict = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    return state


def load_exactly(module: torch.nn.Module, state: dict, path) -> None:
    """``module.load_state_dict(state)``, or one line naming ``path`` and the keys that do not fit."""
    problems = mismatch(module.state_dict(), state)
    if problems:
        raise DataError(f"the weights in {path} do not fit the model its config describes ({problems}); "
                        "the file is damaged or was edited: use another checkpoint")
    module.load_state_dict(state)


def mismatch(own: dict, state: dict, may_miss=lambda key: False) -> str:
    """How ``state`` does not fit a module whose state dict is ``own`` ("" when it fits): the first
    unexpected, missing (unless ``may_miss``) and misshapen keys."""
    unexpected = [k for k in state if k not in own]
    missing = [k for k in own if k not in state and not may_miss(k)]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in state
              if k in own and state[k].shape != own[k].shape]
    # loading would cast silently: float weights stored as integers arrive truncated
    dtypes = [f"{k} {str(state[k].dtype).replace('torch.', '')} vs {str(own[k].dtype).replace('torch.', '')}"
              for k in state if k in own and state[k].dtype != own[k].dtype]
    return "; ".join(f"{name}: {', '.join(keys[:5])}" for name, keys in
                     (("unexpected", unexpected), ("missing", missing), ("shape", shapes), ("dtype", dtypes)) if keys)


def check_finite(state: dict, path) -> None:
    """Refuse weights that hold NaN or infinity: evaluated, they would give garbage, not an error."""
    for key, value in state.items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise DataError(f"the weights in {path} are not finite (first: {key}); evaluate an earlier "
                            "checkpoint, or retrain (e.g. with a lower optim.lr)")


def evaluated_state(tensors: dict) -> dict:
    """The method's weights that evaluation uses: their moving average when the run kept one
    (``train.ema``), else the live weights."""
    return _state(tensors, EMA if any(k.startswith(EMA) for k in tensors) else LIVE)


def backbone_state(tensors: dict) -> dict:
    return _state(evaluated_state(tensors), "backbone.")


def weights_record(info: dict) -> dict:
    """Which weights evaluation uses, for reports: ``{"weights": "ema", "ema_decay": d}`` or {}."""
    return {k: info[k] for k in ("weights", "ema_decay") if k in info}





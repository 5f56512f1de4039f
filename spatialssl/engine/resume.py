"""What ``--resume`` may change, and the repair of a run folder to its checkpoint (the commit point)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..errors import ConfigError, warn
from . import checkpoint
from .config import Config, load_config
from .runlog import align_metrics


def resume_config(out_dir: Path, cfg: Optional[Config]) -> tuple:
    """(the run's own config with what ``cfg`` may change applied, checkpoint tensors, info). ``cfg`` may
    ask for more epochs, another precision, another data path, data.skip_corrupt, other optim.* settings than
    optim.name; anything else is refused naming the keys that differ."""
    tensors, info = checkpoint.read_resumable(out_dir, repair=True)  # under the run folder's lock
    saved = load_config(base=info["config"])
    if cfg is not None:
        mine, theirs = cfg.to_dict(), saved.to_dict()
        for key in ("epochs", "deterministic", "precision", "keep_checkpoints"):  # more epochs may be asked of a
            mine["train"][key] = theirs["train"][key]  # resumed run, exact reruns, another device's precision
        for key in ("path", "mean", "std", "skip_corrupt"):  # data may have moved; a run keeps its normalisation;
            mine["data"][key] = theirs["data"][key]  # one stopped by a corrupt image may go on skipping such
        if mine["eval"]["knn_k"] is None:  # chosen from the data
            mine["eval"]["knn_k"] = theirs["eval"]["knn_k"]
        for key in ("input_size", "in_chans"):  # measured on the data
            if mine["model"][key] is None:
                mine["model"][key] = theirs["model"][key]
        adjusted = _adjusted_optimiser(mine["optim"], theirs["optim"])
        mine["optim"] = {**theirs["optim"], "name": mine["optim"]["name"]}
        if mine != theirs:
            differ = [f"{s}.{k}" for s in mine for k in mine[s] if mine[s][k] != theirs[s][k]]
            raise ConfigError(f"--resume: the config differs from the run in {out_dir} in {', '.join(differ)}; "
                              "resume with the same config (more train.epochs and other optim.* settings than "
                              "optim.name are allowed)")
        if adjusted:
            warn(f"--resume changes the optimiser settings of the run in {out_dir}: {', '.join(adjusted)}")
        saved.train.epochs, saved.train.deterministic = cfg.train.epochs, cfg.train.deterministic
        saved.train.precision, saved.train.keep_checkpoints = cfg.train.precision, cfg.train.keep_checkpoints
        saved.data.path = cfg.data.path or saved.data.path
        saved.data.skip_corrupt = cfg.data.skip_corrupt
        saved.optim = cfg.optim
    return saved, tensors, info


def _adjusted_optimiser(mine: dict, theirs: dict) -> list:
    """The optim.* settings that a resumed run changes ("optim.lr 0.001 -> 0.0001"), e.g. a lower
    learning rate after a NaN stop. optim.name is not among them: the saved optimiser state fits
    only its own optimiser."""
    return [f"optim.{k} {theirs[k]} -> {v}" for k, v in mine.items() if k != "name" and v != theirs[k]]


def recommit(out_dir: Path, tensors: dict, info: dict) -> None:
    """Bring the run folder back to its checkpoint, the commit point: a run killed after writing
    last.ckpt left backbone.safetensors and last.json stale and metrics.csv a row short or long."""
    checkpoint.sync_companions(out_dir, tensors, info)
    align_metrics(out_dir, info["epoch"], info.get("metrics") or {}, (info.get("progress") or {}).get("global_step"))

"""The one training loop. It never asks which method it runs."""
from __future__ import annotations

import dataclasses
import math
import os
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import torch
from tqdm import tqdm

from . import checkpoint
from .config import Config, load_config
from .data import ImageSet, load_images
from .ema import WeightEMA
from .errors import ConfigError, DataError, SpatialSSLError, TrainingDiverged, warn
from .determinism import algorithms
from .evaluate import extract_features, knn_accuracy, knn_neighbours
from .distributed import from_environment, writes
from .methods import build_method
from .models import is_vit, modality
from .runlog import RunLog, align_metrics
from .runfolder import claimed
from .safeguards import choose_statistics, warmup_epochs, warn_about_ema, warn_about_warmup
from .data.signals import load_signals
from .data.stream import ImageStream, stream_images
from .methods.part import part_tokens
from .samplers.windows import check_window_geometry
from .samplers.boxes import check_box_geometry
from .samplers.patches import check_patch_geometry


def is_signal_model(cfg: Config) -> bool:
    return modality(cfg.model.backbone) == "signals"


def load_data(cfg: Config, split: str, path=None):
    """``split`` of ``path`` (default ``data.path``): an ImageSet, or a SignalSet for 1-D backbones."""
    d = cfg.data
    path = path or d.path
    if path is None:
        raise ConfigError("no data: pass --data PATH (or data.path=PATH)")
    if is_signal_model(cfg):
        return load_signals(path, split, cfg.signal)
    if d.stream:
        return stream_images(path, split, d.image_size)
    return load_images(path, split, d.labels, d.image_size, d.cache)


def load_training_data(cfg: Config):
    return load_data(cfg, cfg.data.split)


def load_monitor_data(cfg: Config, train_set: ImageSet) -> Optional[tuple]:
    """(train subset, test subset) with labels for the kNN monitor, or None if unavailable."""
    if cfg.train.knn_monitor <= 0 or train_set.labels is None or cfg.data.path is None or cfg.data.stream:
        return None
    try:
        test_set = load_data(cfg, cfg.data.test_split)
    except SpatialSSLError:
        return None
    if test_set.labels is None:
        return None
    n = cfg.train.knn_monitor
    return train_set.subset(n, seed=1), test_set.subset(n, seed=2)


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
    """Channels of an ImageSet/SignalSet (its tensor's dim 1) or of a stream (decoded to RGB)."""
    return data.tensor.shape[1] if hasattr(data, "tensor") else 3


def check_against_data(cfg: Config, data) -> None:
    """Checks of the options against the images or signals, before any work."""
    m, p, patch = cfg.method, cfg.part, cfg.model.patch_size
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
        if m.name == "sr":
            with options_named(patch_size="method.patch_size", non_overlapping="method.non_overlapping"):
                check_patch_geometry(m.patch_size, height, width, m.num_patches, m.non_overlapping)
        if m.name == "part":
            with options_named(mode="part.sampling", patch_size="model.patch_size", num_tokens="part.num_tokens",
                               box_size="part.box_size", box_scale="part.box_scale"):
                check_box_geometry(p.sampling, height, width, patch, tokens, p.box_size, p.box_scale)
        if is_vit(cfg.model.backbone) and (height % patch or width % patch):
            raise ConfigError(f"the {height}x{width} images of {data.source} are not a multiple of model.patch_size "
                              f"{patch}; set data.image_size or model.patch_size")
        tokens_are, items_are = "patches", "images"
    if m.name == "part" and p.num_pairs > tokens * (tokens - 1):
        raise ConfigError(f"part.num_pairs {p.num_pairs} exceeds the {tokens * (tokens - 1)} ordered pairs "
                          f"of {tokens} {tokens_are}; lower part.num_pairs")
    channels = data_channels(data)
    if cfg.model.in_chans is not None and cfg.model.in_chans != channels:  # set by a checkpoint (resume, finetune)
        raise DataError(f"the backbone takes {cfg.model.in_chans}-channel inputs (model.in_chans, from its "
                        f"checkpoint); {data.source} has {channels} (for signals, signal.channels picks which, in order)")
    if m.name != "random" and len(data) < cfg.train.batch_size:
        raise ConfigError(f"train.batch_size {cfg.train.batch_size} is larger than the {len(data)} {items_are} in "
                          f"{data.source}; lower train.batch_size")


def _resume_config(out_dir: Path, cfg: Optional[Config]) -> tuple:
    tensors, info = checkpoint.read_checkpoint(out_dir / "last.ckpt")
    saved = load_config(base=info["config"])
    if cfg is not None:
        mine, theirs = cfg.to_dict(), saved.to_dict()
        for key in ("epochs", "deterministic"):  # more epochs may be asked of a resumed run, or exact reruns
            mine["train"][key] = theirs["train"][key]
        for key in ("path", "mean", "std"):  # data may have moved; a run keeps its normalisation
            mine["data"][key] = theirs["data"][key]
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
        saved.data.path = cfg.data.path or saved.data.path
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
    align_metrics(out_dir, info["epoch"], info.get("metrics") or {})


def pretrain(cfg: Optional[Config], out_dir, resume: bool = False, train_set: Optional[ImageSet] = None,
             monitor: Optional[tuple] = None, progress: bool = True, stop_after_epoch: Optional[int] = None) -> Path:
    """Pretrain ``cfg.method`` and write checkpoints to ``out_dir`` every epoch.

    ``train_set``/``monitor`` may be given directly (e.g. the demo); otherwise they are read
    from ``cfg.data``. With ``resume`` the run continues from ``out_dir/last.ckpt`` exactly:
    weights, optimiser, data order and augmentation randomness. ``stop_after_epoch`` ends
    this call early, as an interruption would (the run stays resumable).
    """
    out_dir = Path(out_dir)
    with claimed(out_dir, writes()):  # held to the end: a second run on out_dir is refused meanwhile
        state = None
        if resume:
            cfg, *state = _resume_config(out_dir, cfg)
            if writes():
                recommit(out_dir, *state)
        elif (out_dir / "last.ckpt").exists():
            raise ConfigError(f"{out_dir} already holds a run; pass --resume to continue it or choose another --out")
        with algorithms(cfg.train.deterministic):
            return _train(cfg, out_dir, state, train_set, monitor, progress, stop_after_epoch)


def _train(cfg: Config, out_dir: Path, state: Optional[list], train_set, monitor: Optional[tuple], progress: bool,
           stop_after_epoch: Optional[int]) -> Path:
    if train_set is None:
        train_set = load_training_data(cfg)
        if monitor is None:
            monitor = load_monitor_data(cfg, train_set)
    check_against_data(cfg, train_set)
    warn_about_warmup(cfg)
    statistics = None  # a resumed run keeps its normalisation
    if isinstance(train_set, (ImageSet, ImageStream)) and state is None:
        cfg, statistics = choose_statistics(cfg, train_set)
    if cfg.model.input_size is None or cfg.model.in_chans is None:
        measured = {"input_size": list(train_set.input_size), "in_chans": data_channels(train_set)}
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(
            cfg.model, **{k: v for k, v in measured.items() if getattr(cfg.model, k) is None}))
    ranks, device = from_environment(cfg.train.device)
    if cfg.train.batch_size % ranks.world:
        raise ConfigError(f"train.batch_size {cfg.train.batch_size} (the global batch) must divide evenly among "
                          f"{ranks.world} processes")
    torch.manual_seed(cfg.train.seed)
    method = build_method(cfg, cfg.data.mean, cfg.data.std, train_set.num_classes if train_set.labels is not None else 0)
    if cfg.train.sync_bn and ranks.world > 1:
        if device.type != "cuda":
            raise ConfigError("train.sync_bn needs CUDA devices (PyTorch's SyncBatchNorm is GPU-only); "
                              "turn it off for CPU processes")
        method = torch.nn.SyncBatchNorm.convert_sync_batchnorm(method)
    method.to(device)
    if cfg.train.channels_last:
        method.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg.optim, method, fused=device.type == "cuda")
    # Only the writing process keeps the average: every process steps the same weights, and
    # rank 0 alone checkpoints and monitors. Copied before compile and DDP wrap the method.
    ema = WeightEMA(method, cfg.train.ema) if cfg.train.ema > 0 and method.trains and ranks.main else None
    # Checkpointed: the data order. Augmentation randomness is reseeded every epoch (sample_seed).
    generators = {"order": torch.Generator().manual_seed(cfg.train.seed)}
    sample = torch.Generator(device=device)
    start_epoch = 0
    if state is not None:
        tensors, info = state
        checkpoint.restore(tensors, info, method, optimizer if method.trains else None, generators, ema,
                           out_dir / "last.ckpt")
        start_epoch = info["epoch"]
    config_dict = cfg.to_dict()
    last = out_dir / "last.ckpt"
    if not method.trains:
        if ranks.main:
            checkpoint.save_checkpoint(out_dir, method, None, generators, config_dict, 0, {})
        return last
    if cfg.train.compile:
        method.backbone.compile()  # in place: the state dict keeps its keys
    model = method
    if ranks.world > 1:
        model = torch.nn.parallel.DistributedDataParallel(method, device_ids=[device] if device.type == "cuda" else None)
    streamed = isinstance(train_set, ImageStream)
    images = None if streamed else train_set.tensor.to(device)
    labels = None if train_set.labels is None or streamed else train_set.labels.to(device)
    workers = (os.cpu_count() or 1) if cfg.data.workers is None else cfg.data.workers
    log = RunLog(out_dir) if ranks.main else None
    progress = progress and ranks.main
    if statistics and progress:
        tqdm.write(statistics)
    batch = cfg.train.batch_size
    steps = len(train_set) // batch  # drop the last partial batch: relation pairs want full batches
    if ema is not None:
        warn_about_ema(cfg.train.ema, steps * cfg.train.epochs)
    if streamed and progress:
        tqdm.write(f"streaming {len(train_set)} images from {train_set.source}: at most "
                   f"{train_set.memory_bound(batch // ranks.world, workers) / 2**20:.0f} MiB of batches in flight")
    try:
        for epoch in range(start_epoch, cfg.train.epochs):
            if stop_after_epoch is not None and epoch >= stop_after_epoch:
                break
            method.train()
            # Every process draws the same global order; augmentation randomness is seeded per epoch
            # and process, so a run resumed at an epoch boundary continues exactly, under torchrun too.
            order = torch.randperm(len(train_set), generator=generators["order"])
            sample.manual_seed(sample_seed(cfg.train.seed, epoch, ranks.rank))
            if streamed:
                mine = [i for s in range(steps) for i in ranks.shard(order[s * batch:(s + 1) * batch]).tolist()]
                stream = train_set.batches(mine, batch // ranks.world, workers, device.type == "cuda")
            else:
                order = order.to(device)
            totals: dict = {}
            started = time.perf_counter()
            bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{cfg.train.epochs}", disable=not progress,
                       unit="step", leave=False, dynamic_ncols=True)
            for step in bar:
                set_learning_rate(optimizer, cfg.optim, epoch * steps + step, cfg.train.epochs * steps, steps)
                if streamed:
                    x, y = (t.to(device, non_blocking=True) for t in next(stream))
                    y = None if train_set.labels is None else y
                else:
                    index = ranks.shard(order[step * batch:(step + 1) * batch])
                    x, y = images[index], None if labels is None else labels[index]
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.train.precision == "bf16"):
                    loss, metrics = model(x, y, sample)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if ema is not None:
                    ema.update(method)
                for key, value in {"loss": loss.detach(), **metrics}.items():
                    totals[key] = totals.get(key, 0) + value
                if step % cfg.train.log_every == 0 or step == steps - 1:
                    current = ranks.mean(loss.detach()).item()
                    if not math.isfinite(current):
                        raise diverged(f"the loss became {current} at epoch {epoch + 1}, step {step + 1}", cfg, last)
                    rate = (step + 1) * batch / (time.perf_counter() - started)
                    bar.set_postfix(loss=f"{current:.4f}", img_s=f"{rate:.0f}")
            seconds = time.perf_counter() - started
            summary = {k: float(ranks.mean(torch.as_tensor(v, device=device, dtype=torch.float32))) / steps
                       for k, v in totals.items()}
            if not math.isfinite(summary["loss"]):
                raise diverged(f"the loss became non-finite in epoch {epoch + 1}", cfg, last)
            summary["images_per_s"] = steps * batch / seconds
            if ranks.main:  # one writer: checkpoints, logs and the kNN monitor
                if monitor is not None:  # the backbone that will be evaluated
                    summary["knn_acc"], summary["knn_k"] = monitor_knn((method if ema is None else ema.module).backbone,
                                                                       monitor, cfg, device)
                checkpoint.save_checkpoint(out_dir, method, optimizer, generators, config_dict, epoch + 1, summary, ema)
                log.write(epoch + 1, summary)
            if progress:
                shown = ", ".join(f"{k} {v:.4g}" for k, v in summary.items())
                tqdm.write(f"epoch {epoch + 1}/{cfg.train.epochs}: {shown}")
            ranks.barrier()
    finally:
        if log is not None:
            log.close()
    if ranks.main and not last.exists():  # zero epochs asked: still leave a usable checkpoint
        checkpoint.save_checkpoint(out_dir, method, optimizer, generators, config_dict, 0, {}, ema)
    ranks.barrier()
    return last


def diverged(what: str, cfg: Config, last: Path) -> TrainingDiverged:
    """The NaN stop, with advice that can be followed: optim.* may change on --resume."""
    if not last.exists():
        return TrainingDiverged(f"{what}; stopped before the first checkpoint. Lower optim.lr "
                                f"(e.g. optim.lr={cfg.optim.lr / 10:g}) or check the data")
    return TrainingDiverged(f"{what}; stopped. The last good checkpoint is kept at {last}; continue from it with a "
                            f"lower learning rate (--resume optim.lr={cfg.optim.lr / 10:g}) or check the data")


def sample_seed(seed: int, epoch: int, rank: int) -> int:
    """The augmentation seed of one epoch in one process."""
    return (seed + 1) * 1_000_003 + epoch * 1_009 + rank


def build_optimizer(optim, model: torch.nn.Module, fused: bool = False) -> torch.optim.Optimizer:
    """Adam, SGD (momentum 0.9), or AdamW with no weight decay on biases, norms (1-D parameters) and what
    the model's ``no_weight_decay()`` names (timm's rule). ``fused``: the fused CUDA kernels of Adam/AdamW."""
    extra = {"fused": True} if fused else {}
    if optim.name == "adam":
        return torch.optim.Adam(model.parameters(), lr=optim.lr, weight_decay=optim.weight_decay, **extra)
    if optim.name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=optim.lr, momentum=0.9, weight_decay=optim.weight_decay)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    kept_out = model.no_weight_decay() if hasattr(model, "no_weight_decay") else set()
    decay = [p for n, p in named if p.dim() > 1 and n not in kept_out]
    no_decay = [p for n, p in named if p.dim() <= 1 or n in kept_out]
    return torch.optim.AdamW([{"params": decay, "weight_decay": optim.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=optim.lr, **extra)


def learning_rate(optim, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """Linear warm-up (safeguards.warmup_epochs), then constant or cosine down to ``min_lr``."""
    warmup = int(warmup_epochs(optim, total_steps / steps_per_epoch) * steps_per_epoch)
    if step < warmup:
        return optim.lr * (step + 1) / warmup
    if optim.schedule == "constant":
        return optim.lr
    progress = (step - warmup) / max(1, total_steps - warmup)
    return optim.min_lr + (optim.lr - optim.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


def set_learning_rate(optimizer: torch.optim.Optimizer, optim, step: int, total_steps: int, steps_per_epoch: int) -> None:
    lr = learning_rate(optim, step, total_steps, steps_per_epoch)
    for group in optimizer.param_groups:
        group["lr"] = lr


def monitor_knn(backbone, monitor: tuple, cfg: Config, device) -> tuple:
    """(kNN accuracy, the k it used) on the monitor's subsets."""
    train_set, test_set = monitor
    train = extract_features(backbone, train_set.tensor, cfg.data.mean, cfg.data.std, device=str(device))
    test = extract_features(backbone, test_set.tensor, cfg.data.mean, cfg.data.std, device=str(device))
    k = knn_neighbours(len(train), cfg.eval.knn_k)
    return knn_accuracy(train[:, 0], train_set.labels, test[:, 0], test_set.labels, k), k

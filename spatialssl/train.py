"""The one training loop. It never asks which method it runs."""
from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Optional

import torch
from tqdm import tqdm

from . import checkpoint
from .config import Config, load_config
from .data import ImageSet, load_images
from .errors import ConfigError, SpatialSSLError, TrainingDiverged
from .evaluate import extract_features, knn_accuracy
from .methods import build_method
from .runlog import RunLog
from .samplers.patches import check_patch_geometry


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name} but no CUDA device is available; use train.device=cpu")
    return torch.device(name)


def load_training_data(cfg: Config) -> ImageSet:
    if cfg.data.path is None:
        raise ConfigError("no data: pass --data PATH (or data.path=PATH)")
    d = cfg.data
    return load_images(d.path, d.split, d.labels, d.image_size, d.cache)


def load_monitor_data(cfg: Config, train_set: ImageSet) -> Optional[tuple]:
    """(train subset, test subset) with labels for the kNN monitor, or None if unavailable."""
    if cfg.train.knn_monitor <= 0 or train_set.labels is None or cfg.data.path is None:
        return None
    d = cfg.data
    try:
        test_set = load_images(d.path, d.test_split, d.labels, d.image_size, d.cache)
    except SpatialSSLError:
        return None
    if test_set.labels is None:
        return None
    n = cfg.train.knn_monitor
    return train_set.subset(n, seed=1), test_set.subset(n, seed=2)


def check_against_data(cfg: Config, data: ImageSet) -> None:
    """Checks of the options against the images, before any work."""
    height, width = data.image_size
    if cfg.method.name == "sr":
        check_patch_geometry(cfg.method.patch_size, height, width, cfg.method.num_patches, cfg.method.non_overlapping)
    if cfg.method.name != "random" and len(data) < cfg.train.batch_size:
        raise ConfigError(f"train.batch_size {cfg.train.batch_size} is larger than the {len(data)} images in "
                          f"{data.source}; lower train.batch_size")


def _resume_config(out_dir: Path, cfg: Optional[Config]) -> tuple:
    tensors, info = checkpoint.read_checkpoint(out_dir / "last.ckpt")
    saved = load_config(base=info["config"])
    if cfg is not None:
        mine, theirs = cfg.to_dict(), saved.to_dict()
        mine["train"]["epochs"] = theirs["train"]["epochs"]  # more epochs may be asked of a resumed run
        for key in ("path", "mean", "std"):  # data may have moved; measured statistics are kept
            if key == "path" or mine["data"][key] is None:
                mine["data"][key] = theirs["data"][key]
        if mine != theirs:
            differ = [f"{s}.{k}" for s in mine for k in mine[s] if mine[s][k] != theirs[s][k]]
            raise ConfigError(f"--resume: the config differs from the run in {out_dir} in {', '.join(differ)}; "
                              "resume with the same config (more train.epochs are allowed)")
        saved.train.epochs = cfg.train.epochs
        saved.data.path = cfg.data.path or saved.data.path
    return saved, tensors, info


def pretrain(cfg: Optional[Config], out_dir, resume: bool = False, train_set: Optional[ImageSet] = None,
             monitor: Optional[tuple] = None, progress: bool = True, stop_after_epoch: Optional[int] = None) -> Path:
    """Pretrain ``cfg.method`` and write checkpoints to ``out_dir`` every epoch.

    ``train_set``/``monitor`` may be given directly (e.g. the demo); otherwise they are read
    from ``cfg.data``. With ``resume`` the run continues from ``out_dir/last.ckpt`` exactly:
    weights, optimiser, data order and augmentation randomness. ``stop_after_epoch`` ends
    this call early, as an interruption would (the run stays resumable).
    """
    out_dir = Path(out_dir)
    state = None
    if resume:
        cfg, *state = _resume_config(out_dir, cfg)
    elif (out_dir / "last.ckpt").exists():
        raise ConfigError(f"{out_dir} already holds a run; pass --resume to continue it or choose another --out")
    if train_set is None:
        train_set = load_training_data(cfg)
        if monitor is None:
            monitor = load_monitor_data(cfg, train_set)
    check_against_data(cfg, train_set)
    if cfg.data.mean is None or cfg.data.std is None:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, **dict(zip(("mean", "std"), train_set.mean_std()))))
    device = resolve_device(cfg.train.device)
    torch.manual_seed(cfg.train.seed)
    method = build_method(cfg, cfg.data.mean, cfg.data.std, train_set.num_classes if train_set.labels is not None else 0)
    method.to(device)
    optimizer = torch.optim.Adam(method.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    generators = {"order": torch.Generator().manual_seed(cfg.train.seed),
                  "sample": torch.Generator(device=device).manual_seed(cfg.train.seed + 1)}
    start_epoch = 0
    if state is not None:
        tensors, info = state
        checkpoint.restore(tensors, info, method, optimizer if method.trains else None, generators)
        start_epoch = info["epoch"]
    out_dir.mkdir(parents=True, exist_ok=True)
    config_dict = cfg.to_dict()
    if not method.trains:
        return checkpoint.save_checkpoint(out_dir, method, None, generators, config_dict, 0, {})
    images = train_set.images.to(device)
    labels = None if train_set.labels is None else train_set.labels.to(device)
    log = RunLog(out_dir)
    batch = cfg.train.batch_size
    steps = len(images) // batch  # drop the last partial batch: relation pairs want full batches
    last = out_dir / "last.ckpt"
    try:
        for epoch in range(start_epoch, cfg.train.epochs):
            if stop_after_epoch is not None and epoch >= stop_after_epoch:
                break
            method.train()
            order = torch.randperm(len(images), generator=generators["order"]).to(device)
            totals: dict = {}
            started = time.perf_counter()
            bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{cfg.train.epochs}", disable=not progress,
                       unit="step", leave=False, dynamic_ncols=True)
            for step in bar:
                index = order[step * batch:(step + 1) * batch]
                loss, metrics = method.training_step(images[index], None if labels is None else labels[index],
                                                     generators["sample"])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                for key, value in {"loss": loss.detach(), **metrics}.items():
                    totals[key] = totals.get(key, 0) + value
                if step % cfg.train.log_every == 0 or step == steps - 1:
                    current = loss.item()
                    if not math.isfinite(current):
                        raise TrainingDiverged(
                            f"the loss became {current} at epoch {epoch + 1}, step {step + 1}; stopped. "
                            f"The last good checkpoint is kept at {last if last.exists() else '(none yet)'}; "
                            "lower optim.lr or check the data")
                    rate = (step + 1) * batch / (time.perf_counter() - started)
                    bar.set_postfix(loss=f"{current:.4f}", img_s=f"{rate:.0f}")
            seconds = time.perf_counter() - started
            summary = {k: float(v) / steps for k, v in totals.items()}
            if not math.isfinite(summary["loss"]):
                raise TrainingDiverged(f"the loss became non-finite in epoch {epoch + 1}; the last good checkpoint "
                                       f"is kept at {last if last.exists() else '(none yet)'}")
            summary["images_per_s"] = steps * batch / seconds
            if monitor is not None:
                summary["knn_acc"] = monitor_knn(method.backbone, monitor, cfg, device)
            checkpoint.save_checkpoint(out_dir, method, optimizer, generators, config_dict, epoch + 1, summary)
            log.write(epoch + 1, summary)
            if progress:
                shown = ", ".join(f"{k} {v:.4g}" for k, v in summary.items())
                tqdm.write(f"epoch {epoch + 1}/{cfg.train.epochs}: {shown}")
    finally:
        log.close()
    if not last.exists():  # zero epochs asked: still leave a usable checkpoint
        checkpoint.save_checkpoint(out_dir, method, optimizer, generators, config_dict, 0, {})
    return last


def monitor_knn(backbone, monitor: tuple, cfg: Config, device) -> float:
    train_set, test_set = monitor
    train = extract_features(backbone, train_set.images, cfg.data.mean, cfg.data.std, device=str(device))
    test = extract_features(backbone, test_set.images, cfg.data.mean, cfg.data.std, device=str(device))
    return knn_accuracy(train[:, 0], train_set.labels, test[:, 0], test_set.labels, cfg.eval.knn_k)

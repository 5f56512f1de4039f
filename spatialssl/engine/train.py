"""The one training loop. It never asks which method it runs.

Three phases, each small: ``setup`` (data, checks, the method on its device, optimiser, resume),
``train_epoch`` (the steps) and ``end_epoch`` (means over processes, the kNN monitor, the
checkpoint and the log)."""
from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from pathlib import Path
from typing import Optional

import torch

from ..data import ImageSet, SignalSet
from ..data.load import load_monitor_data, load_training_data
from ..data.stream import skipped_images, streamed
from ..ema import WeightEMA
from ..errors import ConfigError, DataError, Interrupted, TrainingDiverged, warn
from ..evaluate import extract_features, knn_accuracy, knn_neighbours
from ..files import refuse_to_replace
from ..models import compile_method, use_seed
from .precision import autocast_dtype, resolve_precision, set_matmul_precision
from . import checkpoint
from .build import build_method
from .checks import check_against_data, check_processes, check_statistics, data_channels
from .config import Config
from .determinism import algorithms
from .distributed import Distributed, from_environment, wrap_for_processes, writes
from .memory import check_memory
from .optim import build_optimizer, set_learning_rate
from .preemption import StopRequest, anyone_asked, loss_and_stop, sample_states
from .progress import Progress
from .resume import recommit, resume_config
from .runfolder import claimed, refuse_links_in
from .runlog import RunLog
from .safeguards import choose_statistics, warn_about_ema, warn_about_warmup




def pretrain(cfg: Optional[Config], out_dir, resume: bool = False, train_set: Optional[ImageSet] = None,
             monitor: Optional[tuple] = None, progress: bool = True, stop_after_epoch: Optional[int] = None,
             overwrite: bool = False) -> Path:
    """Pretrain ``cfg.method`` and write checkpoints to ``out_dir`` every epoch.

    ``train_set``/``monitor`` may be given directly (e.g. the demo); otherwise they are read
    from ``cfg.data``. With ``resume`` the run continues from ``out_dir/last.ckpt`` exactly:
    weights, optimiser, data order and augmentation randomness. ``stop_after_epoch`` ends
    this call early, as an interruption would (the run stays resumable). A run already in
    ``out_dir`` is refused unless ``resume`` (continue it) or ``overwrite`` (replace it).
    """
    out_dir = Path(out_dir)
    refuse_existing_run(out_dir, resume, overwrite)
    with claimed(out_dir, writes(), overwrite):  # held to the end: a second run on out_dir is refused meanwhile
        state = None
        if resume:
            cfg, *state = resume_config(out_dir, cfg)
            if writes():
                recommit(out_dir, *state)
        with algorithms(cfg.train.deterministic):
            run = setup(cfg, out_dir, state, train_set, monitor, progress)
            return run.train(stop_after_epoch)


def refuse_existing_run(out_dir, resume: bool, overwrite: bool) -> None:
    """A run already in ``out_dir`` is continued (``resume``) or replaced (``overwrite``), never written over
    unasked; commands that read data first call this before reading it."""
    if resume and overwrite:
        raise ConfigError("--resume continues the run in --out and --overwrite replaces it: choose one")
    if not (resume or overwrite) and (Path(out_dir) / "last.ckpt").exists():
        refuse_to_replace(out_dir, overwrite, resumable=True)
    if not overwrite:  # --overwrite removes the links with the run
        refuse_links_in(out_dir)


@dataclasses.dataclass
class Run:
    """One run's state between its phases."""
    cfg: Config
    out_dir: Path
    method: torch.nn.Module  # what is checkpointed
    model: torch.nn.Module  # what steps: the method, or its DistributedDataParallel wrapper
    optimizer: torch.optim.Optimizer
    ema: Optional[WeightEMA]
    generators: dict  # checkpointed: the data order
    sample: torch.Generator  # augmentation and drop-path randomness, reseeded every epoch (sample_seed)
    ranks: Distributed
    device: torch.device
    train_set: object  # an ImageSet, SignalSet, or a stream (ImageStream, detection's CocoStream)
    resident: tuple  # (inputs, labels or None) where they stay (see ``place``); inputs None when streamed
    monitor: Optional[tuple]
    start_epoch: int
    progress: Progress
    scaler: Optional[torch.amp.GradScaler] = None  # fp16 only: keeps small gradients from underflowing
    log: Optional[RunLog] = None
    drop_seed: Optional[torch.Tensor] = None  # drop-path masks' seed, redrawn from ``sample`` before each forward
    resume_at: Optional[dict] = None  # a mid-epoch checkpoint's progress (``stop_mid_epoch``): where to go on
    stop: StopRequest = dataclasses.field(default_factory=StopRequest)
    order_state: Optional[torch.Tensor] = None  # the data-order generator before this epoch's order was drawn
    last_summary: dict = dataclasses.field(default_factory=dict)  # the last finished epoch's metrics
    made_labels: bool = False  # the method made this epoch's labels (``epoch_labels``)

    @property
    def last(self) -> Path:
        return self.out_dir / "last.ckpt"

    @property
    def steps(self) -> int:
        return len(self.train_set) // self.cfg.train.batch_size  # full batches only: relation pairs want them

    def train(self, stop_after_epoch: Optional[int] = None) -> Path:
        if not self.method.trains:
            if self.ranks.main:
                checkpoint.save_checkpoint(self.out_dir, self.method, None, self.generators, self.cfg.to_dict(), 0, {},
                                           data=checkpoint.data_record(self.train_set, self.cfg))
            return self.last
        self.log = RunLog(self.out_dir, self.cfg.to_dict()) if self.ranks.main else None
        try:
            with self.stop.listening():
                for epoch in range(self.start_epoch, self.cfg.train.epochs):
                    if stop_after_epoch is not None and epoch >= stop_after_epoch:
                        break
                    relabel(self, epoch)
                    end_epoch(self, epoch, *train_epoch(self, epoch))
                    self.resume_at = None
                    if epoch + 1 < self.cfg.train.epochs and anyone_asked(self.ranks, self.stop, self.device):
                        raise Interrupted(f"stopped by {self.stop.name or 'a signal'} after epoch {epoch + 1}: "
                                          f"{self.last} holds the run; --resume continues from there exactly")
        finally:
            if self.log is not None:
                self.log.close()
        if self.ranks.main and not self.last.exists():  # zero epochs asked: still leave a usable checkpoint
            checkpoint.save_checkpoint(self.out_dir, self.method, self.optimizer, self.generators, self.cfg.to_dict(),
                                       0, {}, self.ema, data=checkpoint.data_record(self.train_set, self.cfg),
                                       keep=self.cfg.train.keep_checkpoints)
        self.ranks.barrier()
        return self.last


def prepare_data(cfg: Config, resumed: bool, train_set, monitor: Optional[tuple]) -> tuple:
    """(cfg completed from the data, training data, monitor data, a note on the normalisation or None):
    the data read when not given, checked against the options, its statistics chosen (a resumed run
    keeps its own), the model's input size and channels measured."""
    if train_set is None:
        train_set = load_training_data(cfg)
        if monitor is None:
            monitor = load_monitor_data(cfg, train_set)
    check_against_data(cfg, train_set)
    warn_about_warmup(cfg)
    note = None
    if (isinstance(train_set, ImageSet) or streamed(train_set)) and not resumed:
        cfg, note = choose_statistics(cfg, train_set)
        check_statistics(cfg, train_set)
    measured = {"input_size": list(train_set.input_size), "in_chans": data_channels(train_set)}
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(
        cfg.model, **{k: v for k, v in measured.items() if getattr(cfg.model, k) is None}))
    return cfg, train_set, monitor, note


def setup(cfg: Config, out_dir: Path, state: Optional[list], train_set, monitor: Optional[tuple],
          progress: bool) -> Run:
    """Everything before the first step: data, checks, the method on its device, optimiser, resume."""
    ranks, device = from_environment(cfg.train.device)  # first: under torchrun one process lists a stream's files
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(
        cfg.train, precision=resolve_precision(cfg.train.precision, device)))  # recorded as it runs
    set_matmul_precision(cfg.train.precision, device)
    cfg, train_set, monitor, note = prepare_data(cfg, state is not None, train_set, monitor)
    check_processes(cfg, ranks.world, device)
    classes = train_set.num_classes if train_set.labels is not None else 0
    memory = check_memory(cfg, classes, tuple(cfg.model.input_size), cfg.model.in_chans, ranks.world, device)
    torch.manual_seed(cfg.train.seed)
    method = build_method(cfg, cfg.data.mean, cfg.data.std, classes)
    if cfg.train.activation_checkpointing:
        if not hasattr(method.backbone, "set_grad_checkpointing"):
            raise ConfigError(f"train.activation_checkpointing needs a ViT (spatialssl's or timm's); "
                              f"{cfg.model.backbone} cannot recompute its activations")
        method.backbone.set_grad_checkpointing(True)
    if cfg.train.sync_bn and ranks.world > 1:
        method = torch.nn.SyncBatchNorm.convert_sync_batchnorm(method)
    method.to(device)
    if cfg.train.channels_last:
        method.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg.optim, method, fused=device.type == "cuda")
    # Only the writing process keeps the average: every process steps the same weights, and
    # rank 0 alone checkpoints and monitors. Copied before compile and DDP wrap the method.
    ema = WeightEMA(method, cfg.train.ema) if cfg.train.ema > 0 and method.trains and ranks.main else None
    generators = {"order": torch.Generator().manual_seed(cfg.train.seed)}
    scaler = torch.amp.GradScaler(device.type) if cfg.train.precision == "fp16" and method.trains else None
    start_epoch = 0
    if state is not None:
        tensors, info = state
        checkpoint.restore(tensors, info, method, optimizer if method.trains else None, generators, ema,
                           out_dir / "last.ckpt", scaler)
        start_epoch = info["epoch"]
    if cfg.train.compile and method.trains:
        compile_method(method, **({} if cfg.train.compile_mode == "default" else {"mode": cfg.train.compile_mode}))
    model = method
    if ranks.world > 1 and method.trains:
        model = wrap_for_processes(method, device, cfg.train.ddp_bucket_mb, cfg.train.grad_compression)
    resident = place(train_set, device) if method.trains else (None, None)
    sample = torch.Generator(device=device)
    drop_seed = torch.zeros((), dtype=torch.int64, device=device)
    drops = use_seed(method, drop_seed)  # after the EMA's copy: drop-path masks are drawn only in training
    run = Run(cfg, out_dir, method, model, optimizer, ema, generators, sample, ranks, device,
              train_set, resident, monitor, start_epoch,
              Progress(progress and ranks.main, cfg.train.epochs, len(train_set) // cfg.train.batch_size), scaler,
              drop_seed=drop_seed if drops else None)
    if state is not None:
        run.last_summary = state[1].get("metrics") or {}
        run.resume_at = mid_epoch_progress(*state)
    announce(run, note)
    if memory:
        run.progress.note(memory)
    return run


def mid_epoch_progress(tensors: dict, info: dict) -> Optional[dict]:
    """Where a checkpoint written mid-epoch (``stop_mid_epoch``) stopped; None for one written at an epoch's end."""
    progress = info.get("progress")
    if progress is None:
        return None
    wanted = {"step": int, "global_step": int, "totals": dict, "seconds": float, "world": int}
    if (any(not isinstance(progress.get(k), kind) for k, kind in wanted.items()) or "rng.sample" not in tensors
            or any(not isinstance(v, float) for v in progress["totals"].values())):
        raise DataError("the checkpoint's mid-epoch progress is damaged; resume from last-1.ckpt (rename it to "
                        "last.ckpt) or start a new run")
    return {**progress, "sample_states": tensors["rng.sample"], "labels": tensors.get("epoch_labels")}


def announce(run: Run, note: Optional[str]) -> None:
    """What a user should know before the first step: the normalisation, an EMA horizon longer than the
    run, the memory a stream keeps in flight."""
    cfg, data = run.cfg, run.train_set
    if run.ema is not None:
        warn_about_ema(cfg.train.ema, run.steps * cfg.train.epochs)
    if note:
        run.progress.note(note)
    if streamed(data):
        in_flight = data.memory_bound(cfg.train.batch_size // run.ranks.world)
        run.progress.note(f"streaming {len(data)} images from {data.source} with {data.workers} decoding processes: "
                          f"at most {in_flight / 2**20:.0f} MiB of batches in flight")


def batches(run: Run):
    """This process's (images, labels or None) for each step of an epoch. Every process draws the same
    global order and takes its shard of each global batch."""
    data, batch, ranks, device = run.train_set, run.cfg.train.batch_size, run.ranks, run.device
    run.order_state = run.generators["order"].get_state()  # what a mid-epoch checkpoint keeps
    order = torch.randperm(len(data), generator=run.generators["order"])
    first = run.resume_at["step"] if run.resume_at else 0  # the steps a mid-epoch checkpoint already took
    inputs, labels = run.resident
    if streamed(data):  # full batches only, as below: this rank's share of each
        mine = [i for s in range(first, run.steps) for i in ranks.shard(order[s * batch:(s + 1) * batch]).tolist()]
        for x, carried in data.batches(mine, batch // ranks.world, device.type == "cuda"):
            if data.carries_labels:  # the batch's own (detection targets, made with its images)
                yield x.to(device, non_blocking=True), carried.to(device, non_blocking=True)
            else:  # the images' indices: their labels stay on the device
                yield x.to(device, non_blocking=True), None if labels is None else labels[carried.to(labels.device)]
        return
    order = order.to(inputs.device)
    for step in range(first, run.steps):
        index = ranks.shard(order[step * batch:(step + 1) * batch])
        yield to_device(inputs[index], device), None if labels is None else to_device(labels[index], device)


def place(data, device: torch.device) -> tuple:
    """(inputs, labels) where they stay for the run: images (uint8, decoded once) on the device whole;
    signal epochs (float, at PhysioNet scale larger than a GPU) in host memory, a batch at a time; a
    stream's labels alone on the device (its images come a batch at a time)."""
    if streamed(data):
        return None, None if data.labels is None or data.carries_labels else data.labels.to(device)
    tensors = (data.tensor, data.labels)
    if isinstance(data, SignalSet):
        return tensors
    return tuple(None if t is None else t.to(device) for t in tensors)


def to_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``batch`` on ``device``; from host memory through pinned memory, so the copy does not block."""
    if batch.device == device:
        return batch
    if device.type == "cuda":
        batch = batch.pin_memory()
    return batch.to(device, non_blocking=True)


def relabel(run: Run, epoch: int) -> None:
    """Seed the epoch's randomness (per epoch and process: a run resumed at an epoch boundary continues
    exactly, under torchrun too) and let a method that makes its own labels make them, from the weights
    as they are now; rank 0's labels are everyone's. Resumed mid-epoch, the epoch's labels and each process's
    generator come from the checkpoint instead (``resume_mid_epoch``)."""
    run.sample.manual_seed(sample_seed(run.cfg.train.seed, epoch, run.ranks.rank))
    run.method.start_epoch(epoch, run.cfg.train.epochs)
    if run.resume_at is not None:
        resume_mid_epoch(run)
        return
    inputs, labels = run.resident
    made = run.method.epoch_labels(run.train_set if inputs is None else inputs, run.sample)  # None: a stream's
    run.made_labels = made is not None
    if made is not None:
        where = labels.device if labels is not None else run.device if inputs is None else inputs.device
        run.resident = (inputs, run.ranks.broadcast(made.to(where)))
    for parameter in run.method.reinitialised_parameters():
        run.optimizer.state.pop(parameter, None)  # moments of the old weights would steer the new ones


def resume_mid_epoch(run: Run) -> None:
    """The state of the epoch a mid-epoch checkpoint stopped in: each process's augmentation generator (with
    another number of processes, reseeded: the rest of the epoch then differs) and the epoch's own labels."""
    at = run.resume_at
    if at["world"] == run.ranks.world:
        run.sample.set_state(at["sample_states"][run.ranks.rank].clone())  # a row of its own storage
    else:
        warn(f"--resume: the run stopped mid-epoch with {at['world']} processes and continues with "
             f"{run.ranks.world}; the rest of the epoch is augmented afresh (not as it would have been)")
    if at["labels"] is not None:
        inputs, labels = run.resident
        where = labels.device if labels is not None else run.device if inputs is None else inputs.device
        run.resident, run.made_labels = (inputs, at["labels"].to(where)), True
        run.method.restore_epoch_labels(run.resident[1])


def train_epoch(run: Run, epoch: int) -> tuple:
    """The steps of one epoch; returns (the sums of the logged metrics, seconds)."""
    cfg, steps = run.cfg, run.steps
    run.method.train()
    precision = autocast_dtype(cfg.train.precision)  # None: fp32 or tf32
    first = run.resume_at["step"] if run.resume_at else 0
    totals: dict = dict(run.resume_at["totals"]) if run.resume_at else {}
    started = time.perf_counter() - (run.resume_at["seconds"] if run.resume_at else 0.0)
    run.progress.start_epoch(epoch)
    for step, (x, y) in enumerate(batches(run), start=first):
        lr = set_learning_rate(run.optimizer, cfg.optim, epoch * steps + step, cfg.train.epochs * steps, steps)
        loss, metrics = optimiser_step(run, x, y, precision)
        if run.ema is not None:
            run.ema.update(run.method)
        for key, value in {"loss": loss.detach(), **metrics}.items():
            totals[key] = totals.get(key, 0) + value
        scalars, stop = None, run.ranks.world == 1 and run.stop.signal is not None
        if step % cfg.train.log_every == 0 or step == steps - 1:  # the step's only wait for the device
            current, stop = loss_and_stop(run.ranks, loss.detach(), run.stop)
            if not math.isfinite(current):
                raise diverged(f"the loss became {current} at epoch {epoch + 1}, step {step + 1}", cfg, run.last)
            rate = (step + 1) * cfg.train.batch_size / (time.perf_counter() - started)
            scalars = {"loss": current, "lr": lr, "images_per_s": rate}
            if run.log is not None:
                run.log.write_step(epoch + 1, epoch * steps + step + 1, scalars)
        run.progress.step(step, scalars)
        if stop and step < steps - 1:  # at the epoch's last step its own checkpoint follows
            stop_mid_epoch(run, epoch, step + 1, totals, time.perf_counter() - started)
    totals["lr"] = lr * steps  # summed like the others: the epoch's row shows its last learning rate
    return totals, time.perf_counter() - started


def optimiser_step(run: Run, x, y, precision) -> tuple:
    """One optimiser step on this process's batch (x, y), in ``train.accumulate_steps`` micro-batches: each
    one's loss divided by their number and its gradients added, DDP reducing them after the last only.
    Returns the loss and metrics, means over the micro-batches."""
    micro = run.cfg.train.accumulate_steps
    size = len(x) // micro
    run.optimizer.zero_grad(set_to_none=True)
    losses, summed = [], {}
    for index in range(micro):
        part = slice(index * size, (index + 1) * size)
        xs, ys = (x, y) if micro == 1 else (x[part], None if y is None else y[part])
        later = index < micro - 1 and isinstance(run.model, torch.nn.parallel.DistributedDataParallel)
        with run.model.no_sync() if later else contextlib.nullcontext():
            with torch.autocast(run.device.type, dtype=precision, enabled=precision is not None):
                if run.drop_seed is not None:  # in place: compiled code reads it as an input, never recompiles
                    run.drop_seed.random_(0, 2**31, generator=run.sample)
                loss, metrics = run.model(xs, ys, run.sample)
            (loss / micro if run.scaler is None else run.scaler.scale(loss / micro)).backward()
        losses.append(loss.detach())
        for key, value in metrics.items():
            summed[key] = summed.get(key, 0) + value
    if run.scaler is None:
        run.optimizer.step()
    else:
        run.scaler.step(run.optimizer)  # skipped when the scaled gradients overflowed; the scale then shrinks
        run.scaler.update()
    loss = losses[0] if micro == 1 else torch.stack(losses).mean()
    return loss, {key: value / micro for key, value in summed.items()} if micro > 1 else summed


def stop_mid_epoch(run: Run, epoch: int, done: int, totals: dict, seconds: float) -> None:
    """Write a checkpoint after ``done`` steps of ``epoch`` from which --resume continues exactly (the epoch's
    data order, every process's generator, the epoch's labels and metric sums so far), then stop the run."""
    cfg = run.cfg
    sums = {k: float(run.ranks.mean(torch.as_tensor(v, device=run.device, dtype=torch.float32))) for k, v in
            totals.items()}  # the processes' means: resumed, each adds its own steps to them and end_epoch means
    states = sample_states(run.ranks, run.sample)
    if run.ranks.main:
        before = torch.Generator()
        before.set_state(run.order_state)
        made = run.resident[1] if run.made_labels else None
        progress = {"step": done, "global_step": epoch * run.steps + done, "totals": sums, "seconds": seconds,
                    "world": run.ranks.world}
        extra = {"rng.sample": states, **({"epoch_labels": made} if made is not None else {})}
        checkpoint.save_checkpoint(run.out_dir, run.method, run.optimizer, {"order": before}, cfg.to_dict(), epoch,
                                   run.last_summary, run.ema, run.scaler, checkpoint.data_record(run.train_set, cfg),
                                   cfg.train.keep_checkpoints, progress, extra)
    run.ranks.barrier()
    raise Interrupted(f"stopped by {run.stop.name or 'a signal'} at epoch {epoch + 1}, step {done} of {run.steps}: "
                      f"{run.last} holds the run as it was; --resume continues from that step exactly")


def end_epoch(run: Run, epoch: int, totals: dict, seconds: float) -> None:
    """Means over steps and processes, the kNN monitor, the checkpoint (the commit point), the log."""
    cfg, steps = run.cfg, run.steps
    summary = {k: float(run.ranks.mean(torch.as_tensor(v, device=run.device, dtype=torch.float32))) / steps
               for k, v in totals.items()}
    if not math.isfinite(summary["loss"]):
        raise diverged(f"the loss became non-finite in epoch {epoch + 1}", cfg, run.last)
    summary["images_per_s"] = steps * cfg.train.batch_size / seconds
    if cfg.data.skip_corrupt:  # unreadable images skipped this epoch by all processes (their mean times their count)
        skipped = torch.tensor(float(skipped_images(run.train_set)), device=run.device)
        summary["skipped"] = round(float(run.ranks.mean(skipped)) * run.ranks.world)
    if run.ranks.main:  # one writer: checkpoints, logs and the kNN monitor
        if run.monitor is not None:  # the backbone that will be evaluated
            evaluated = (run.method if run.ema is None else run.ema.module).backbone
            summary["knn_acc"], summary["knn_k"] = monitor_knn(evaluated, run.monitor, cfg, run.device)
        checkpoint.save_checkpoint(run.out_dir, run.method, run.optimizer, run.generators, cfg.to_dict(), epoch + 1,
                                   summary, run.ema, run.scaler, data=checkpoint.data_record(run.train_set, cfg),
                                   keep=cfg.train.keep_checkpoints)
        run.log.write(epoch + 1, summary)
    run.last_summary = summary
    run.progress.end_epoch(summary)
    run.ranks.barrier()


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


def monitor_knn(backbone, monitor: tuple, cfg: Config, device) -> tuple:
    """(kNN accuracy, the k it used) on the monitor's subsets."""
    train_set, test_set = monitor
    train = extract_features(backbone, train_set, cfg.data.mean, cfg.data.std, device=str(device))
    test = extract_features(backbone, test_set, cfg.data.mean, cfg.data.std, device=str(device))
    k = knn_neighbours(len(train), cfg.eval.knn_k)
    return knn_accuracy(train[:, 0], train_set.labels, test[:, 0], test_set.labels, k), k

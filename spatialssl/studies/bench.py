"""``spatialssl bench``: our batched on-device data path against the conventional per-image
Pillow pipeline in DataLoader workers, feeding the same model the same kind of batch, in
one process. Reports images/s of each, their ratio, the share of the step spent outside
the model, and peak memory; can write the rows into BENCHMARKS.md with the machine named."""
from __future__ import annotations

import os
import platform
import re
import resource
import time
from pathlib import Path

import torch

from ..engine.build import build_method
from ..engine.config import load_config
from ..engine.distributed import resolve_device
from ..engine.optim import build_optimizer
from ..files import atomic_write
from .conventional import ConventionalDataset, collate

MEAN, STD = (0.491, 0.482, 0.447), (0.247, 0.243, 0.262)
SETTINGS = {
    "rr": ("RR, K=4, ResNet-32", ["method.name=rr", "method.augmentations=4"]),
    "sr": ("SR plain, K=4, N=2, ResNet-32", ["method.name=sr", "method.augmentations=4", "method.num_patches=2",
                                             "method.patch_size=16"]),
    "sr_additive": ("SR additive, K=4, N=2, ResNet-32", ["method.name=sr", "method.augmentations=4",
                                                         "method.num_patches=2", "method.patch_size=16",
                                                         "method.additive=true"]),
    "part": ("PART + scale, 2048 pairs", ["method.name=part", "model.patch_size=4", "part.num_pairs=2048",
                                          "part.sampling=scale"]),
}
SAMPLERS = ("views", "patches", "boxes")


def machine(device: torch.device) -> str:
    cpu = platform.processor() or "unknown CPU"
    info = Path("/proc/cpuinfo")
    if info.is_file():
        found = re.search(r"model name\s*:\s*(.+)", info.read_text())
        cpu = found.group(1).strip() if found else cpu
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU only, {torch.get_num_threads()} threads"
    return f"{cpu} ({os.cpu_count()} cores); {where}; torch {torch.__version__}; Python {platform.python_version()}"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS (Linux: KiB)


def _method(kind: str, batch: int, vit: str, device: torch.device, size) -> tuple:
    overrides = ["model.backbone=resnet32", f"train.batch_size={batch}", f"model.input_size=[{size[0]},{size[1]}]",
                 *SETTINGS[kind][1]]
    if kind == "part":
        overrides.append(f"model.backbone={vit}")
    cfg = load_config(overrides=overrides)
    method = build_method(cfg, MEAN, STD).to(device)
    return cfg, method, build_optimizer(cfg.optim, method, fused=device.type == "cuda")  # as the loop builds it


def _step(method, optimizer, images, generator) -> None:
    loss, _ = method.training_step(images, None, generator)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def run_ours(kind: str, images: torch.Tensor, batch: int, steps: int, warmup: int, device, vit: str) -> dict:
    """Our path: uint8 data on the device, batched samplers inside the step (timed)."""
    cfg, method, optimizer = _method(kind, batch, vit, device, images.shape[-2:])
    data = images.to(device)
    generator = torch.Generator(device=device).manual_seed(0)
    seconds_in = {"sampling": 0.0}
    for name in SAMPLERS:
        if hasattr(method, name):
            setattr(method, name, _timed(getattr(method, name), device, seconds_in))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for step in range(warmup + steps):
        if step == warmup:
            sync(device)
            seconds_in["sampling"] = 0.0
            start = time.perf_counter()
        index = torch.randint(len(data), (batch,), device=device, generator=generator)
        _step(method, optimizer, data[index], generator)
    sync(device)
    total = time.perf_counter() - start
    return {"images_per_s": steps * batch / total, "outside_share": seconds_in["sampling"] / total,
            "peak_mb": peak_memory_mb(device)}


class Standin:
    """Takes a sampler's place: ``call`` answers its calls, its other attributes (e.g.
    ``num_views``, which the method reads) stay the sampler's."""

    def __init__(self, sampler, call):
        self.sampler, self.call = sampler, call

    def __getattr__(self, name):
        return getattr(self.sampler, name)

    def __call__(self, images, generator):
        return self.call(images, generator)


def _timed(sampler, device, seconds_in: dict) -> Standin:
    def timed(images, generator):
        sync(device)
        start = time.perf_counter()
        out = sampler(images, generator)
        sync(device)
        seconds_in["sampling"] += time.perf_counter() - start
        return out
    return Standin(sampler, timed)


def run_conventional(kind: str, images: torch.Tensor, batch: int, steps: int, warmup: int, device, vit: str,
                     workers: int) -> dict:
    """The conventional path: per-image Pillow transforms in ``workers`` DataLoader processes;
    the model's samplers are replaced by the loader's batch (time waiting + copying is the
    share outside the model)."""
    cfg, method, optimizer = _method(kind, batch, vit, device, images.shape[-2:])
    dataset = ConventionalDataset(images, kind, MEAN, STD, views=cfg.method.augmentations,
                                  patches=cfg.method.num_patches, patch_size=cfg.method.patch_size,
                                  part_patch=cfg.model.patch_size,
                                  part_tokens=(images.shape[-2] // cfg.model.patch_size) * (images.shape[-1] // cfg.model.patch_size))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=True, num_workers=workers,
                                         collate_fn=collate, pin_memory=device.type == "cuda",
                                         persistent_workers=workers > 0)
    current: dict = {}
    fed = {"views": lambda images, generator: current["views"],
           "patches": lambda images, generator: (current["patches"], current["centres"]),
           "boxes": lambda images, generator: (current["patches"], current["boxes"])}
    for name, call in fed.items():
        if hasattr(method, name):
            setattr(method, name, Standin(getattr(method, name), call))
    generator = torch.Generator(device=device).manual_seed(0)
    iterator = iter(loader)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    waiting = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            sync(device)
            waiting, start = 0.0, time.perf_counter()
        before = time.perf_counter()
        try:
            host = next(iterator)
        except StopIteration:
            iterator = iter(loader)
            host = next(iterator)
        current.clear()
        current.update({k: v.to(device, non_blocking=True) for k, v in host.items()})
        sync(device)
        waiting += time.perf_counter() - before
        _step(method, optimizer, current["images"], generator)
    sync(device)
    total = time.perf_counter() - start
    return {"images_per_s": steps * batch / total, "outside_share": waiting / total, "peak_mb": peak_memory_mb(device)}


def bench(images: torch.Tensor, kinds, steps: int = 10, warmup: int = 2, workers=None, batch: int = 128,
          device: str = "auto", vit: str = "vit_tiny") -> list:
    """One row per method: both paths' images/s, the ratio ours / conventional, the share of
    the step spent outside the model, and peak memory."""
    device = resolve_device(device)
    workers = os.cpu_count() if workers is None else workers
    rows = []
    for kind in kinds:
        name = SETTINGS[kind][0] + (f" ({vit})" if kind == "part" else "")
        conventional = run_conventional(kind, images, batch, steps, warmup, device, vit, workers)
        ours = run_ours(kind, images, batch, steps, warmup, device, vit)
        rows.append({"name": name, "ours": ours, "conventional": conventional,
                     "ratio": ours["images_per_s"] / conventional["images_per_s"]})
    return rows


def format_rows(rows: list) -> str:
    lines = ["| method | ours images/s | conventional images/s | ratio | outside model: ours / conventional | peak MB: ours / conventional |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        o, c = r["ours"], r["conventional"]
        lines.append(f"| {r['name']} | {o['images_per_s']:.1f} | {c['images_per_s']:.1f} | {r['ratio']:.2f}x | "
                     f"{100 * o['outside_share']:.1f}% / {100 * c['outside_share']:.1f}% | "
                     f"{o['peak_mb']:.0f} / {c['peak_mb']:.0f} |")
    return "\n".join(lines)


BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def write_section(path: Path, text: str, begin: str = BEGIN, end: str = END) -> None:
    """Replace the section between the markers ``begin`` and ``end`` of ``path`` (or append it)."""
    old = path.read_text() if path.is_file() else "# Benchmarks\n"
    if begin in old:
        new = old[: old.index(begin)] + text + old[old.index(end) + len(end):]
    else:
        new = old.rstrip() + "\n\n" + text + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(new))  # replaces a link standing there, never follows it


def bench_images(path: str, image_size, count: int) -> torch.Tensor:
    """The images both paths are timed on: an in-memory data set as it is (at ``image_size`` if given), or the first
    ``count`` images of a stream (a folder with ``image_size``, shards, a saved dataset: 32 px by default)."""
    from ..data.load import load_data
    from ..data.readers import load_images
    from ..data.registry import reader_for
    from ..data.stream import ImageStream

    if image_size is None and reader_for(Path(path).expanduser()) is None:
        return load_images(path).images
    cfg = load_config(None, [f"data.path={path}", "data.stream=true", f"data.image_size={image_size or 32}"])
    data = load_data(cfg, "train")
    return data.images_at(range(min(count, len(data)))) if isinstance(data, ImageStream) else data.images


def run_bench(args) -> str:
    """The ``bench`` command: read or generate images, time both paths, format (and write) the rows."""
    import shlex
    import sys

    from ..data import make_demo_images
    from ..errors import ConfigError

    kinds = [k.strip() for k in args.methods.split(",")]
    unknown = [k for k in kinds if k not in SETTINGS]
    if unknown:
        raise ConfigError(f"--methods: unknown {', '.join(unknown)}; choose from {', '.join(SETTINGS)}")
    count = max(1024, 2 * args.batch)
    images = bench_images(args.data, args.image_size, count) if args.data else make_demo_images(count, seed=0).images
    if len(images) < args.batch:
        raise ConfigError(f"--batch {args.batch} is larger than the {len(images)} images of {args.data}")
    device = resolve_device(args.device)
    workers = os.cpu_count() if args.workers is None else args.workers
    rows = bench(images, kinds, args.steps, args.warmup, workers, args.batch, args.device, args.vit)
    text = "\n".join([BEGIN, f"## Our data path vs the conventional one ({images.shape[-1]} px, batch {args.batch})", "",
                      f"Machine: {machine(device)}.  ",
                      f"Data: {args.data or 'generated images'}; {args.steps} timed steps after {args.warmup} "
                      f"warm-up steps per path; conventional path: per-image Pillow transforms in {workers} DataLoader "
                      "workers; same model, optimiser and batch layout for both.  ",
                      f"Command: `spatialssl {shlex.join(sys.argv[1:])}`", "", format_rows(rows), END])
    if args.write:
        write_section(Path(args.write), text)
    return text

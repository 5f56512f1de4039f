"""The data path at ImageNet scale, on a generated ImageNet-like set.

    python benchmarks/imagenet_scale.py --root /tmp/imagenet-like --write BENCHMARKS.md

Generates (once) ``--images`` JPEGs (default 20,000) of 350-600 px long side and aspect 3:4 to 4:3, in 10 class
folders, with photo-like content (a smooth random field plus grain, quality 90: about as many bytes per pixel as
ImageNet's JPEGs), and the same images as WebDataset shards of 1,000. Then measures, writing each figure as it
comes (``--results``, JSON lines; a killed run resumes where it stopped):

- images/s of the decoding side of a data path, in 1 and 2 DataLoader workers, reading the folder and the shards:
  ours (``data.resize=short_side`` at 224, and ``data.resize=whole`` in 512 px canvases) against a timm-style
  pipeline (torchvision's RandomResizedCrop(224) + flip + ToTensor + Normalize per image in the workers, K crops
  per image for K views);
- the cost of our batched views on this CPU (what a GPU does in the step): K = 1 and 4 views of 224 px;
- host memory per process for a stream's list of 10k, 100k and 1.28M names (simulated ImageNet names; no files)
  and for a shard index of as many samples, against a list of ``Path`` objects;
- start-up: listing the folder, scanning the shards, and scanning 1,281,167 samples' headers in simulated shards;
- 2 gloo processes streaming their shares of every global batch (each image once).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch

SIZE, CANVAS, BATCH = 224, 512, 64
BEGIN, END = "<!-- scale:begin -->", "<!-- scale:end -->"


def _write_image(job: tuple) -> int:
    from PIL import Image

    path, seed = job
    rng = np.random.default_rng(seed)
    long_side = int(rng.integers(350, 601))
    aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
    width, height = (long_side, round(long_side / aspect)) if aspect >= 1 else (round(long_side * aspect), long_side)
    field = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
    pixels = np.asarray(field, dtype=np.float32) + rng.normal(0, 10, (height, width, 3))
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path, "JPEG", quality=90)
    return path.stat().st_size


def generate(root: Path, count: int, classes: int = 10) -> dict:
    """The JPEG folder (root/train/classN/*.JPEG) and its shards (root-shards/), made once."""
    folder, shards = root / "train", root.with_name(root.name + "-shards")
    done = root / "generated.json"
    if done.is_file():
        return json.loads(done.read_text())
    jobs = []
    for i in range(count):
        target = folder / f"class{i % classes}"
        target.mkdir(parents=True, exist_ok=True)
        jobs.append((target / f"{i:07d}.JPEG", i))
    started = time.perf_counter()
    with Pool(os.cpu_count()) as pool:
        sizes = pool.map(_write_image, jobs, chunksize=64)
    from spatialssl.commands.shard import write_shards
    write_shards(root, shards, split="train", per_shard=1000, overwrite=True, progress=False)
    facts = {"images": count, "classes": classes, "mean_kb": float(np.mean(sizes)) / 1024,
             "seconds": time.perf_counter() - started}
    done.write_text(json.dumps(facts))
    return facts


def _rate(batches, count: int, buffered: int, warmup: int = 2) -> float:
    """Images per second in the steady state: after ``warmup`` batches (the workers' start) and a pause that
    fills the loader's queue (``buffered`` images, which are then not counted), over ``count`` images."""
    batches = iter(batches)
    for _ in range(warmup):
        next(batches)
    time.sleep(3)
    started, seen = time.perf_counter(), 0
    for images in batches:
        seen += len(images)
        if seen >= count + buffered:
            break
    return (seen - buffered) / (time.perf_counter() - started)


PREFETCH = 2  # batches each worker keeps ready (the loaders' prefetch_factor)


def ours(source: str, data: str, resize: str, workers: int, count: int, canvas: int = CANVAS) -> float:
    from spatialssl.engine.config import load_config
    from spatialssl.data.load import load_data

    options = [f"data.path={data}", "data.stream=true", f"data.image_size={SIZE}", f"data.resize={resize}",
               f"data.workers={workers}"]
    if resize == "whole":
        options.append(f"data.source_size={canvas}")
    stream = load_data(load_config(None, options), "train")
    order = torch.randperm(len(stream), generator=torch.Generator().manual_seed(0)).tolist()
    return _rate((x for x, _ in stream.batches(order, BATCH, False)), count, workers * PREFETCH * BATCH)


class TimmStyle(torch.utils.data.Dataset):
    """timm's and torchvision's ImageNet training transform, per image in the workers, ``views`` times."""

    def __init__(self, files, views: int):
        from spatialssl.detection.torchvision_ops import import_torchvision

        import_torchvision()  # our stand-ins for the compiled operations this CPU torch cannot load
        from torchvision import transforms as T

        self.files, self.views = files, views
        self.transform = T.Compose([T.RandomResizedCrop(SIZE), T.RandomHorizontalFlip(), T.ToTensor(),
                                    T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        import io

        from PIL import Image

        with Image.open(io.BytesIO(self.files.read(index))) as img:
            img = img.convert("RGB")
            return torch.stack([self.transform(img) for _ in range(self.views)])


def timm_style(data: str, workers: int, count: int, views: int) -> float:
    from spatialssl.engine.config import load_config
    from spatialssl.data.load import load_data

    stream = load_data(load_config(None, [f"data.path={data}", "data.stream=true", f"data.image_size={SIZE}"]),
                       "train")
    order = torch.randperm(len(stream), generator=torch.Generator().manual_seed(0)).tolist()
    loader = torch.utils.data.DataLoader(TimmStyle(stream.files, views), batch_size=BATCH, num_workers=workers,
                                         sampler=order, prefetch_factor=PREFETCH, persistent_workers=False)
    return _rate(iter(loader), count, workers * PREFETCH * BATCH)


def augmentation(views: int, whole: bool) -> float:
    """Images/s of our ViewSampler on this CPU, from 512 px canvases or 224 px images."""
    from spatialssl.canvas import Canvases
    from spatialssl.samplers import ViewSampler

    sampler = ViewSampler(views, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    generator = torch.Generator().manual_seed(0)
    if whole:
        extent = torch.tensor([[375.0, 500.0]]).repeat(BATCH, 1)
        images = Canvases(torch.randint(0, 256, (BATCH, 3, CANVAS, CANVAS), dtype=torch.uint8), extent, SIZE)
    else:
        images = torch.randint(0, 256, (BATCH, 3, SIZE, SIZE), dtype=torch.uint8)
    sampler(images, generator)
    started = time.perf_counter()
    for _ in range(5):
        sampler(images, generator)
    return 5 * BATCH / (time.perf_counter() - started)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def imagenet_names(count: int) -> list:
    return [f"n{i % 1000:08d}/n{i % 1000:08d}_{i}.JPEG" for i in range(count)]


def names_memory(count: int, kind: str) -> dict:
    """Resident MB a process holds for ``count`` names as ``kind`` (measured in a fresh process)."""
    from spatialssl.data.filelist import FileList, pack
    from spatialssl.data.shards import ShardIndex

    gc.collect()
    before = rss_mb()
    started = time.perf_counter()
    names = imagenet_names(count)
    if kind == "paths":
        root = Path("/data/imagenet/train")
        kept = [root / name for name in names]
    elif kind == "filelist":
        kept = FileList.of(Path("/data/imagenet/train"), sorted(names, key=lambda n: n.split(os.sep)))
    else:
        shard = (np.arange(count) // 1000).astype(np.int32)
        kept = ShardIndex(tuple(f"/data/shards/train-{i:06d}.tar" for i in range(int(shard[-1]) + 1)), shard,
                          np.arange(count, dtype=np.int64) * 110_000, np.full(count, 110_000, np.uint32),
                          *pack([name.rsplit(".", 1)[0] for name in names]))
    seconds = time.perf_counter() - started
    del names
    gc.collect()
    return {"mb": rss_mb() - before, "seconds": seconds, "nbytes_mb": getattr(kept, "nbytes", 0) / 2**20}


def startup(root: Path) -> dict:
    from spatialssl.data.readers import list_image_files
    from spatialssl.data.shards import folder_shards, list_shards

    started = time.perf_counter()
    files = list_image_files(root, "train")[0]
    listed = time.perf_counter() - started
    started = time.perf_counter()
    index = list_shards(folder_shards(root.with_name(root.name + "-shards"), "train"))[0]
    scanned = time.perf_counter() - started
    return {"folder_s": listed, "folder_items": len(files), "shards_s": scanned, "shard_items": len(index)}


def _sparse_shard(job: tuple) -> None:
    """A shard of ``samples`` ImageNet-sized samples whose tar headers and labels are real and whose images are
    holes: what a scan reads, without the 140 GB a scan never reads."""
    import tarfile

    path, first, samples = job
    sizes = np.random.default_rng(first).integers(60_000, 160_000, samples)
    with open(path, "wb") as out:
        for number, size in zip(range(first, first + samples), sizes.tolist()):
            label = b"%d" % (number % 1000)
            for name, length in ((f"{number:08d}.cls", len(label)), (f"{number:08d}.jpg", size)):
                info = tarfile.TarInfo(name)
                info.size = length
                out.write(info.tobuf(tarfile.USTAR_FORMAT))
                if name.endswith(".cls"):
                    out.write(label.ljust(512, b"\0"))
                else:
                    out.seek(-(-size // 512) * 512, os.SEEK_CUR)
        out.write(bytes(1024))


def simulated_scan(root: Path, count: int) -> dict:
    """Scanning ``count`` samples (ImageNet's 1.28M) in shards of 1,000, written sparse (``_sparse_shard``)."""
    from spatialssl.data.shards import folder_shards, list_shards

    root.mkdir(parents=True, exist_ok=True)
    jobs = [(root / f"train-{i:06d}.tar", i * 1000, min(1000, count - i * 1000)) for i in range(-(-count // 1000))]
    if len(list(root.glob("*.tar"))) != len(jobs):
        with Pool(os.cpu_count()) as pool:
            pool.map(_sparse_shard, jobs)
    paths = folder_shards(root, "train")
    started = time.perf_counter()
    index = list_shards(paths, cache=False)[0]
    scanned = time.perf_counter() - started
    list_shards(paths)  # scanned and kept
    started = time.perf_counter()
    list_shards(paths)
    return {"samples": len(index), "shards": len(jobs), "seconds": scanned, "kept_s": time.perf_counter() - started}


def _rank(rank: int, world: int, data: str, count: int, port: int, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), LOCAL_WORLD_SIZE=str(world))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    from spatialssl.engine.config import load_config
    from spatialssl.data.load import load_data

    started = time.perf_counter()
    stream = load_data(load_config(None, [f"data.path={data}", "data.stream=true", f"data.image_size={SIZE}",
                                          "data.resize=whole", f"data.source_size={CANVAS}", "data.workers=1"]),
                       "train")
    listed = time.perf_counter() - started
    order = torch.randperm(len(stream), generator=torch.Generator().manual_seed(0))[:count]
    mine = [int(i) for step in range(count // BATCH) for i in order[step * BATCH:(step + 1) * BATCH][rank::world]]
    seen, started = [], time.perf_counter()
    for _, index in stream.batches(mine, BATCH // world, False):
        seen.extend(index.tolist())
    seconds = time.perf_counter() - started
    everyone = [None] * world
    dist.all_gather_object(everyone, seen)
    Path(out, f"rank{rank}.json").write_text(json.dumps(
        {"seconds": seconds, "images": len(seen), "rss_mb": rss_mb(), "listed_s": listed,
         "distinct": len({i for part in everyone for i in part}), "total": sum(len(p) for p in everyone)}))
    dist.destroy_process_group()


def two_processes(data: str, count: int, out: Path) -> dict:
    import torch.multiprocessing as mp

    out.mkdir(parents=True, exist_ok=True)
    mp.spawn(_rank, args=(2, data, count, 29500 + os.getpid() % 1000, str(out)), nprocs=2)
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    return {"images_per_s": sum(r["images"] for r in ranks) / max(r["seconds"] for r in ranks),
            "rss_mb": [r["rss_mb"] for r in ranks], "distinct": ranks[0]["distinct"], "total": ranks[0]["total"],
            "listed_s": max(r["listed_s"] for r in ranks)}


def measure(name: str, results: Path, run) -> dict:
    """``run()``'s figure, or the one a previous run already wrote (measurements resume)."""
    done = {}
    if results.is_file():
        done = {row["name"]: row["value"] for row in map(json.loads, results.read_text().splitlines())}
    if name not in done:
        value = run()
        with results.open("a") as f:
            f.write(json.dumps({"name": name, "value": value}) + "\n")
        done[name] = value
        print(f"{name}: {value}", flush=True)
    return done[name]


def in_fresh_process(count: int, kind: str) -> dict:
    import subprocess

    code = (f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import imagenet_scale as s; "
            f"print(json.dumps(s.names_memory({count}, {kind!r})))")
    return json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                     check=True).stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("/tmp/imagenet-like"))
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--count", type=int, default=1024, help="images timed per throughput figure")
    parser.add_argument("--results", type=Path, help="JSON lines of the figures (default: ROOT/results.jsonl)")
    parser.add_argument("--write", type=Path, help="write the table into this BENCHMARKS.md")
    args = parser.parse_args()
    results = args.results or args.root / "results.jsonl"
    facts = generate(args.root, args.images)
    folder, shards = str(args.root), str(args.root.with_name(args.root.name + "-shards"))
    figures = {}
    for source, data in (("folder", folder), ("shards", shards)):
        for workers in (1, 2):
            for resize in ("short_side", "whole"):
                figures[source, resize, workers] = measure(f"ours {source} {resize} w{workers}", results,
                                                           lambda: ours(source, data, resize, workers, args.count))
            figures[source, "whole640", workers] = measure(
                f"ours {source} whole 640 w{workers}", results,
                lambda: ours(source, data, "whole", workers, args.count, canvas=640))
            for views in (1, 4):
                figures[source, f"timm{views}", workers] = measure(
                    f"timm {source} K={views} w{workers}", results,
                    lambda: timm_style(data, workers, args.count // views, views))
    for views in (1, 4):
        for whole in (False, True):
            figures["augment", views, whole] = measure(f"augment K={views} whole={whole}", results,
                                                       lambda: augmentation(views, whole))
    for count in (10_000, 100_000, 1_280_000):
        for kind in ("paths", "filelist", "shardindex"):
            figures["names", count, kind] = measure(f"names {count} {kind}", results,
                                                    lambda: in_fresh_process(count, kind))
    figures["startup"] = measure("startup", results, lambda: startup(args.root))
    figures["scan"] = measure("scan 1.28M", results, lambda: simulated_scan(args.root.with_name(
        args.root.name + "-sparse-shards"), 1_281_167))
    figures["gloo"] = measure("gloo 2 processes", results,
                              lambda: two_processes(folder, args.count, args.root / "gloo"))
    text = table(facts, figures, args)
    print(text)
    if args.write:
        from spatialssl.studies.bench import write_section
        write_section(args.write, text, BEGIN, END)


def table(facts: dict, f: dict, args) -> str:
    from spatialssl.studies.bench import machine

    lines = [BEGIN, "## ImageNet-scale data path (generated ImageNet-like JPEGs, 224 px)", "",
             f"Machine: {machine(torch.device('cpu'))}.  ",
             f"Data: {facts['images']:,} generated JPEGs in {facts['classes']} classes, long side 350-600 px, aspect "
             f"3:4 to 4:3, quality 90, {facts['mean_kb']:.0f} KB on average (ImageNet's average is about 110 KB at "
             f"about 400 x 350 px); the same images as WebDataset shards of 1,000. Batch {BATCH}; {args.count} "
             "images timed per figure after 2 warm-up batches, in a fixed random order.  ",
             f"Command: `python benchmarks/imagenet_scale.py --root {args.root} --write BENCHMARKS.md`", "",
             "Decoding side, images/s (DataLoader workers; the training process only receives batches):", "",
             "| pipeline | folder, 1 worker | folder, 2 workers | shards, 1 worker | shards, 2 workers |",
             "|---|---|---|---|---|"]
    rows = [("ours, short_side 224 (Pillow, reduced-size JPEG decoding)", "short_side"),
            (f"ours, whole images in {CANVAS} px canvases (data.resize=whole; larger images resized)", "whole"),
            ("ours, whole images in 640 px canvases (none resized: decoding and a copy)", "whole640"),
            ("timm-style: torchvision RandomResizedCrop + flip + ToTensor + Normalize, 1 crop", "timm1"),
            ("timm-style, 4 crops per image (RR/SR's K=4 views in the workers)", "timm4")]
    for label, key in rows:
        cells = [f"{f[source, key, workers]:.0f}" for source in ("folder", "shards") for workers in (1, 2)]
        lines.append(f"| {label} | {' | '.join(cells)} |")
    lines += ["", "Our views, batched, on this CPU (on a GPU this runs in the step), images/s:", "",
              "| views per image | from 224 px images | from 512 px canvases (whole) |", "|---|---|---|"]
    for views in (1, 4):
        lines.append(f"| K = {views} | {f['augment', views, False]:.0f} | {f['augment', views, True]:.0f} |")
    lines += ["", "Host memory of a stream's item list, per process (resident MB measured in a fresh process; "
                  "simulated ImageNet names, no files):", "",
              "| names | list of Path | FileList (ours) | ShardIndex (ours) | time to build FileList |",
              "|---|---|---|---|---|"]
    for count in (10_000, 100_000, 1_280_000):
        p, fl, si = (f["names", count, kind] for kind in ("paths", "filelist", "shardindex"))
        lines.append(f"| {count:,} | {p['mb']:.0f} | {fl['mb']:.0f} ({fl['nbytes_mb']:.0f} in arrays) | "
                     f"{si['mb']:.0f} ({si['nbytes_mb']:.0f} in arrays) | {fl['seconds']:.1f} s |")
    s, g = f["startup"], f["gloo"]
    lines += ["", f"Start-up: listing the folder's {s['folder_items']:,} files {s['folder_s']:.2f} s; scanning the "
                  f"shards' {s['shard_items']:,} samples {s['shards_s']:.2f} s (warm file cache); "
                  f"{f['scan']['samples']:,} samples (ImageNet's train set) in {f['scan']['shards']:,} shards, "
                  f"simulated by sparse shards (real headers, images as holes): {f['scan']['seconds']:.1f} s scanned, "
                  f"{f['scan']['kept_s']:.1f} s read back from the index kept by the first scan.  ",
              f"2 gloo processes (1 decoding worker each, whole images): {g['images_per_s']:.0f} images/s together, "
              f"{g['distinct']:,} distinct of {g['total']:,} images read (each once), resident "
              f"{' / '.join(f'{m:.0f}' for m in g['rss_mb'])} MB per training process (workers apart), listing by "
              f"rank 0 handed to rank 1 in {g['listed_s']:.2f} s.", END]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

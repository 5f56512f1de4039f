"""WebDataset shards and Hugging Face datasets as --data: `spatialssl shard` writes shards from what --data
reads, in its order, so the shards stream the same pixels and labels, a run on them equals a run on the
folder streamed (resumed too), and linear-eval and finetune take them; two processes each decode their own
share; every kind of bad shard is one line naming the shard and the sample; data.skip_corrupt skips and
counts."""
import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_shape_splits
from PIL import Image
from safetensors.torch import load_file

from spatialssl.cli import main
from spatialssl.data import make_demo_images, readers, shards
from spatialssl.data.load import load_data
from spatialssl.data.stream import stream_images
from spatialssl.engine.config import load_config
from spatialssl.engine.runlog import read_metrics
from spatialssl.engine.train import pretrain
from spatialssl.errors import MissingSplit

STATISTICS = ["data.mean=[0.3,0.3,0.3]", "data.std=[0.25,0.25,0.25]"]
SMALL = ["model.backbone=resnet8", "method.patch_size=12", "train.batch_size=16", "train.epochs=2",
         "train.knn_monitor=16", "train.deterministic=true", "data.image_size=32", "data.workers=0", *STATISTICS,
         "method.name=sr", "method.num_patches=2"]
TINY = ["--no-progress", "model.backbone=resnet8", "method.name=supervised", "train.batch_size=4", "train.epochs=1",
        "train.knn_monitor=0", "data.image_size=16", "data.workers=0", *STATISTICS]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_shape_splits(tmp_path_factory.mktemp("folder") / "shapes")


@pytest.fixture(scope="module")
def sharded(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards") / "shapes"
    assert main(["shard", "--data", str(folder), "--out", str(out), "--samples-per-shard", "10", "--no-progress"]) == 0
    return out


def config(*overrides):
    return load_config(overrides=[*SMALL, *overrides])


def method_weights(run):
    return {k: v for k, v in load_file(run / "last.ckpt").items() if k.startswith("method.")}


def never_decode_whole(monkeypatch):
    monkeypatch.setattr(readers, "decode_files", lambda *a, **k: pytest.fail("decoded whole"))


def test_shard_writes_both_splits_in_the_readers_order(sharded, capsys):
    assert sorted(p.name for p in sharded.iterdir()) == [*(f"test-00000{i}.tar" for i in range(3)),
                                                         *(f"train-00000{i}.tar" for i in range(6))]
    with tarfile.open(sharded / "train-000000.tar") as tar:
        members = tar.getmembers()
    assert [m.name for m in members[:4]] == ["00000000.cls", "00000000.jpg", "00000001.cls", "00000001.jpg"]
    assert {(m.mtime, m.uid, m.gid, m.mode) for m in members} == {(0, 0, 0, 0o644)}


def test_shards_stream_the_folders_pixels_and_labels(folder, sharded):
    cfg = config()
    for split in ("train", "test"):
        ours, theirs = load_data(cfg, split, str(sharded)), stream_images(folder, split, 32, workers=0)
        assert ours.layout == "shards" and len(ours) == len(theirs)
        assert torch.equal(ours.images_at(range(len(ours))), theirs.images_at(range(len(theirs))))
        assert torch.equal(ours.labels, theirs.labels) and ours.num_classes == theirs.num_classes
    files = readers.list_image_files(folder, "train")[0]
    first = load_data(cfg, "train", str(sharded)).files
    assert first.read(3) == files.read(3)  # the file's bytes themselves
    assert first.describe(3) == f"{sharded / 'train-000000.tar'} sample 00000003"
    assert first.nbytes < 40 * len(first)  # arrays, not objects
    picked = load_data(cfg, "train", str(sharded)).subset(20, seed=1)
    assert torch.equal(picked.images_at(range(20)), stream_images(folder, "train", 32, workers=0).subset(
        20, seed=1).images_at(range(20)))


def test_an_imagenet_val_folder_shards_as_test_and_reads_back_as_either_name(folder, tmp_path):
    imagenet = tmp_path / "imagenet"
    shutil.copytree(folder / "train", imagenet / "train")
    shutil.copytree(folder / "test", imagenet / "val")
    out = tmp_path / "shards"
    assert main(["shard", "--data", str(imagenet), "--out", str(out), "--samples-per-shard", "10",
                 "--no-progress"]) == 0
    assert sorted(p.name for p in out.glob("test-*.tar")) == [f"test-00000{i}.tar" for i in range(3)]
    cfg = config()
    theirs = stream_images(folder, "test", 32, workers=0)
    assert torch.equal(stream_images(folder, "val", 32, workers=0).labels, theirs.labels)  # and folders: test/ as val
    for split in ("val", "test"):
        ours = load_data(cfg, split, str(out))
        assert torch.equal(ours.images_at(range(len(ours))), theirs.images_at(range(len(theirs))))
        assert torch.equal(ours.labels, theirs.labels)
    nested = tmp_path / "nested"
    for split, tars in (("train", "train-*.tar"), ("val", "test-*.tar")):
        (nested / split).mkdir(parents=True)
        for tar in out.glob(tars):
            (nested / split / tar.name).write_bytes(tar.read_bytes())
    assert len(load_data(cfg, "test", str(nested))) == len(theirs)
    with pytest.raises(MissingSplit, match="'unlabelled'"):
        shards.folder_shards(nested, "unlabelled")


def test_decoding_workers_read_the_shards_as_the_process_does(sharded):
    alone, workers = (load_data(config(f"data.workers={n}"), "train", str(sharded)) for n in (0, 2))
    order = torch.randperm(len(alone), generator=torch.Generator().manual_seed(0)).tolist()
    assert torch.equal(torch.cat([x for x, _ in workers.batches(order, 8, False)]), alone.images_at(order))


def test_a_single_shard_and_a_brace_pattern_are_the_train_split(sharded):
    cfg = config()
    pattern = load_data(cfg, "train", str(sharded / "train-{000000..000005}.tar"))
    whole = load_data(cfg, "train", str(sharded))
    assert torch.equal(pattern.images_at(range(len(whole))), whole.images_at(range(len(whole))))
    assert len(load_data(cfg, "train", str(sharded / "train-000001.tar"))) == 10
    assert shards.expand_braces("a{08..10}-{x,y}.tar") == ["a08-x.tar", "a08-y.tar", "a09-x.tar", "a09-y.tar",
                                                          "a10-x.tar", "a10-y.tar"]
    assert shards.expand_braces("{3..1}") == ["3", "2", "1"] and shards.expand_braces("a{b}c") == ["a{b}c"]


@pytest.fixture(scope="module")
def runs(folder, sharded, tmp_path_factory):
    """SR pretrained on the folder streamed and on its shards."""
    root = tmp_path_factory.mktemp("runs")
    made = {}
    for name, data, extra in (("folder", folder, ["data.stream=true"]), ("shards", sharded, [])):
        made[name] = pretrain(config(f"data.path={data}", *extra), root / name, progress=False).parent
    return made


def test_pretraining_on_shards_equals_pretraining_on_the_folder_streamed(runs):
    ours, theirs = method_weights(runs["shards"]), method_weights(runs["folder"])
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    monitored = [[row["knn_acc"] for row in read_metrics(runs[name])] for name in ("shards", "folder")]
    assert monitored[0] == monitored[1] and all(acc != "" for acc in monitored[0])  # the monitor reads test shards


def test_a_run_on_shards_resumed_at_an_epoch_boundary_equals_one_uninterrupted(runs, sharded, tmp_path):
    pretrain(config(f"data.path={sharded}"), tmp_path / "run", progress=False, stop_after_epoch=1)
    pretrain(config(f"data.path={sharded}"), tmp_path / "run", progress=False, resume=True)
    ours, theirs = method_weights(tmp_path / "run"), method_weights(runs["shards"])
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_linear_eval_and_finetune_take_shards(runs, folder, sharded, tmp_path, monkeypatch, capsys):
    never_decode_whole(monkeypatch)
    reports = {}
    for name, data in (("shards", sharded), ("folder", folder)):
        report = tmp_path / f"{name}.json"
        assert main(["linear-eval", "--checkpoint", str(runs[name]), "--data", str(data), "--epochs", "3",
                     "--report", str(report)]) == 0
        assert main(["finetune", "--checkpoint", str(runs[name]), "--data", str(data), "--out",
                     str(tmp_path / f"ft-{name}"), "--epochs", "1", "--no-progress", "train.batch_size=16",
                     "finetune.mixup=0", "finetune.cutmix=0"]) == 0
        reports[name] = (json.loads(report.read_text()),
                         json.loads((tmp_path / f"ft-{name}" / "finetune.json").read_text()))
    capsys.readouterr()
    (lin, tuned), (lin_folder, tuned_folder) = reports["shards"], reports["folder"]
    assert lin["linear"] == lin_folder["linear"] and lin["knn"] == lin_folder["knn"]
    assert tuned["test_acc"] == tuned_folder["test_acc"] and tuned["kappa"] == tuned_folder["kappa"]


def test_a_shard_index_is_kept_and_scanned_again_when_a_shard_or_the_kept_file_changes(folder, tmp_path,
                                                                                       monkeypatch, recwarn):
    data = tmp_path / "shards"
    assert main(["shard", "--data", str(folder), "--out", str(data), "--samples-per-shard", "10", "--no-progress"]) == 0
    scanned = []
    scan = shards.scan_shard
    monkeypatch.setattr(shards, "scan_shard", lambda path: (scanned.append(Path(path).name), scan(path))[1])
    paths = shards.folder_shards(data, "train")
    first = shards.list_shards(paths)
    assert len(scanned) == 6 and len(list((data / ".spatialssl-cache").glob("shard-index-*.npz"))) == 1
    kept = shards.list_shards(paths)
    assert len(scanned) == 6  # read back, not scanned
    for a, b in zip((first[0].shard, first[0].offset, first[0].size, first[0].keys, first[0].key_ends, first[1]),
                    (kept[0].shard, kept[0].offset, kept[0].size, kept[0].keys, kept[0].key_ends, kept[1])):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    assert kept[0].read(13) == first[0].read(13) and kept[2] == first[2]
    os.utime(paths[2], ns=(0, 0))  # a changed shard: a new key, a new scan
    shards.list_shards(paths)
    assert len(scanned) == 12
    index_file = next(f for f in (data / ".spatialssl-cache").glob("shard-index-*.npz")
                      if f.stat().st_mtime_ns == max(g.stat().st_mtime_ns for g in f.parent.glob("*.npz")))
    with open(index_file, "wb") as out:  # someone else's index under our name: shards beyond the list
        np.savez(out, shard=np.full(56, 9, np.int32), offset=np.zeros(56, np.int64), size=np.ones(56, np.uint32),
                 keys=np.zeros(56, np.uint8), key_ends=np.arange(1, 57, dtype=np.int64), labels=np.zeros(0, np.int64))
    again = shards.list_shards(paths)
    assert len(scanned) == 18 and np.array_equal(again[0].offset, first[0].offset)
    assert any("ignoring the shard index" in str(w.message) for w in recwarn)
    index_file.write_bytes(b"not a zip")
    assert np.array_equal(shards.list_shards(paths)[1], first[1]) and len(scanned) == 24
    shutil.rmtree(data / ".spatialssl-cache")
    load_data(config("data.cache=false"), "train", str(data))
    assert len(scanned) == 30 and not (data / ".spatialssl-cache").exists()


def jpeg(seed: int, size: int = 16) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def write_tar(path: Path, members: list, format=tarfile.DEFAULT_FORMAT) -> Path:
    """A tar of (name, bytes) members; bytes None: a symbolic link to /etc/passwd."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=format) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def labelled(count: int, start: int = 0) -> list:
    return [m for i in range(start, start + count) for m in ((f"s{i:03d}.cls", b"%d\n" % (i % 2)),
                                                             (f"s{i:03d}.jpg", jpeg(i)))]


def good_shard(tmp_path):
    return write_tar(tmp_path / "data" / "train-000000.tar", labelled(8))


def cut(keep):
    def shard(tmp_path):
        path = good_shard(tmp_path)
        data = path.read_bytes()
        path.write_bytes(data[:keep(data)])
        return path
    return shard


def pattern_with_a_missing_shard(tmp_path):
    good_shard(tmp_path)
    write_tar(tmp_path / "data" / "train-000001.tar", labelled(8, 8))
    return f"{tmp_path / 'data'}/train-{{000000..000003}}.tar"


def gzipped(tmp_path):
    import gzip

    path = good_shard(tmp_path)
    path.write_bytes(gzip.compress(path.read_bytes()))
    return path


LONG = "a/" + "deep-folder/" * 9  # past a plain header's 100 characters: each format has its own way


@pytest.mark.parametrize("format", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
@pytest.mark.parametrize("names", ["short", "long"])
def test_the_fast_header_scan_reads_what_tarfile_reads_and_leaves_it_the_rest(format, names, tmp_path, monkeypatch):
    prefix = LONG if names == "long" else "b/"
    members = [(prefix, b""), *((f"{prefix}{name}", data) for name, data in labelled(3)), ("c/s9.jpg", jpeg(9)),
               ("c/s9.cls", b"1"), ("README", b"no extension: no sample's")]
    path = write_tar(tmp_path / "a.tar", members, format)
    plain_members = shards._plain_members
    with open(path, "rb") as handle:
        plain = plain_members(handle.fileno(), path.stat().st_size)
    assert (plain is None) == (names == "long")  # long names: tarfile reads the extended headers
    fast = shards.scan_shard(path)
    monkeypatch.setattr(shards, "_plain_members", lambda *a: None)
    assert fast == shards.scan_shard(path)
    assert [key for key, *_ in fast] == [f"{prefix}s00{i}" for i in range(3)] + ["c/s9"]
    with tarfile.open(path) as tar:
        assert tar.extractfile(f"{prefix}s001.jpg").read() == jpeg(1)
    assert path.read_bytes()[fast[1][1]:fast[1][1] + fast[1][2]] == jpeg(1)
    damaged = bytearray(path.read_bytes())
    damaged[512 * 3 + 10] ^= 1  # a name's byte: the checksum no longer holds
    (tmp_path / "b.tar").write_bytes(damaged)
    with open(tmp_path / "b.tar", "rb") as handle:
        assert plain_members(handle.fileno(), len(damaged)) is None


SIZE_OF_LAST = len(jpeg(7))
BAD_SHARDS = {  # name: (the --data it makes, what the line says besides the shard's name)
    "a .tar that is not a tar": (lambda t: (t / "data.tar").write_bytes(b"no tar " * 200) and t / "data.tar",
                                 "is not a tar file"),
    "a gzip-compressed shard": (gzipped, "is gzip-compressed"),
    "a shard cut inside an image": (cut(lambda data: data.rfind(jpeg(7)) + 10), "is truncated: sample s007"),
    "a shard cut after its last member": (cut(lambda data: data.rfind(jpeg(7)) + SIZE_OF_LAST + 100),
                                          "is truncated after sample s007"),
    "a sample without an image": (lambda t: write_tar(t / "d" / "a.tar", [*labelled(2), ("s009.cls", b"1")]),
                                  "sample s009 has no image"),
    "mixed labels": (lambda t: write_tar(t / "d" / "a.tar", [*labelled(2), ("s005.jpg", jpeg(5))]),
                     "mix labelled and unlabelled samples"),
    "a .cls that is no number": (lambda t: write_tar(t / "d" / "a.tar", [("s0.cls", b"cat"), ("s0.jpg", jpeg(0))]),
                                 "sample s0: its .cls holds b'cat'"),
    "a missing shard in a brace pattern": (pattern_with_a_missing_shard, "train-000002.tar of --data"),
    "a symbolic link member": (lambda t: write_tar(t / "d" / "a.tar", [*labelled(2), ("s002.jpg", None)]),
                               "member s002.jpg is a symbolic link; links are never followed"),
    "shards without data.image_size": (good_shard, "needs data.image_size"),
}


@pytest.mark.parametrize("case", BAD_SHARDS)
def test_a_bad_shard_is_one_line_naming_the_shard_and_sample(case, tmp_path, capsys):
    make, says = BAD_SHARDS[case]
    data = make(tmp_path)
    options = [o for o in TINY if case != "shards without data.image_size" or not o.startswith("data.image_size")]
    capsys.readouterr()
    code = main(["pretrain", "--data", str(data), "--out", str(tmp_path / "out"), *options])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert says in err, err
    if case not in ("a missing shard in a brace pattern", "shards without data.image_size"):
        assert f"shard {data}" in err, err


def corrupt_shard(tmp_path):
    members = labelled(16)
    members[2 * 5 + 1] = ("s005.jpg", jpeg(5)[:60])  # cut inside the image: Pillow cannot decode it
    return write_tar(tmp_path / "data" / "train-000000.tar", members)


def test_a_corrupt_sample_stops_the_run_or_is_skipped_and_counted(tmp_path, capsys):
    shard = corrupt_shard(tmp_path)
    argv = lambda out: ["pretrain", "--data", str(shard.parent), "--out", str(tmp_path / out), *TINY,  # noqa: E731
                        "train.batch_size=8", "train.epochs=2"]
    capsys.readouterr()
    assert main(argv("stopped")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cannot decode image {shard} sample s005: " in err, err
    assert "data.skip_corrupt=true" in err
    assert main([*argv("skipped"), "data.skip_corrupt=true"]) == 0
    err = capsys.readouterr().err
    assert err.count(f"skipped (data.skip_corrupt): cannot decode image {shard} sample s005") == 1, err  # warned once
    assert [row["skipped"] for row in read_metrics(tmp_path / "skipped")] == ["1", "1"]  # met in each epoch


def test_a_run_stopped_by_a_corrupt_sample_may_resume_skipping_it(tmp_path, capsys):
    shard = corrupt_shard(tmp_path)
    argv = ["pretrain", "--data", str(shard.parent), "--out", str(tmp_path / "run"), *TINY, "train.batch_size=8"]
    assert main([*argv, "data.skip_corrupt=true"]) == 0
    resumed = ["pretrain", "--data", str(shard.parent), "--out", str(tmp_path / "run"), "--resume", "--no-progress",
               "train.epochs=2"]
    assert main([*resumed, "data.skip_corrupt=false"]) == 2 and "sample s005" in capsys.readouterr().err
    assert main([*resumed, "data.skip_corrupt=true"]) == 0
    assert [row["skipped"] for row in read_metrics(tmp_path / "run")] == ["1", "1"]


def test_shard_refuses_an_existing_out_unless_overwrite(folder, tmp_path, capsys):
    out = tmp_path / "shards"
    assert main(["shard", "--data", str(folder), "--out", str(out), "--split", "train", "--samples-per-shard",
                 "8", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["shard", "--data", str(folder), "--out", str(out), "--no-progress"]) == 2
    assert "--out" in capsys.readouterr().err and len(list(out.iterdir())) == 7
    assert main(["shard", "--data", str(folder), "--out", str(out), "--overwrite", "--no-progress"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["test-000000.tar", "train-000000.tar"]  # no stale shard left


def test_arrays_become_png_shards_of_the_same_pixels(tmp_path):
    demo = make_demo_images(12, seed=2)
    npz = tmp_path / "data.npz"
    np.savez(npz, images=demo.images.numpy(), labels=demo.labels.numpy())
    assert main(["shard", "--data", str(npz), "--out", str(tmp_path / "shards"), "--no-progress"]) == 0
    streamed = load_data(config("data.image_size=32"), "train", str(tmp_path / "shards"))
    assert torch.equal(streamed.images_at(range(12)), demo.images) and torch.equal(streamed.labels, demo.labels)


def test_a_saved_hugging_face_dataset_streams_and_shards(tmp_path):
    datasets = pytest.importorskip("datasets")
    demo = make_demo_images(20, seed=5)

    def png(image):
        buffer = io.BytesIO()
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, "PNG")
        return buffer.getvalue()

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list("abcdefghij"))})
    rows = {"image": [{"bytes": png(x), "path": None} for x in demo.images], "label": demo.labels.tolist()}
    whole = datasets.Dataset.from_dict(rows, features=features)
    datasets.DatasetDict({"train": whole.select(range(14)), "validation": whole.select(range(14, 20))}).save_to_disk(
        str(tmp_path / "hf"))
    cfg = config("data.image_size=32")
    train, test = load_data(cfg, "train", str(tmp_path / "hf")), load_data(cfg, "test", str(tmp_path / "hf"))
    assert train.layout == "hf-datasets" and train.classes == list("abcdefghij")
    assert torch.equal(train.images_at(range(14)), demo.images[:14]) and torch.equal(test.labels, demo.labels[14:])
    assert main(["shard", "--data", str(tmp_path / "hf"), "--out", str(tmp_path / "shards"), "--no-progress"]) == 0
    sharded = load_data(cfg, "test", str(tmp_path / "shards"))
    assert torch.equal(sharded.images_at(range(6)), demo.images[14:]) and torch.equal(sharded.labels, test.labels)
    whole.save_to_disk(str(tmp_path / "one"))  # a Dataset alone: the train split
    assert len(load_data(cfg, "train", str(tmp_path / "one"))) == 20
    with pytest.raises(MissingSplit, match="no 'test' split"):
        load_data(cfg, "test", str(tmp_path / "one"))


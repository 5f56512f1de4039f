import io
import os
import time

import numpy as np
import pytest
import torch
from conftest import random_images, write_cifar10, write_cifar100, write_class_folders, write_stl10, write_tiny_imagenet
from PIL import Image

from spatialssl.data import decode, detect_layout, load_images
from spatialssl.errors import DataError


def as_nchw(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2)


def test_cifar10_round_trip_from_parent_folder(tmp_path, images32, labels20):
    test = random_images(5, 32, seed=9)
    write_cifar10(tmp_path, images32, labels20, test, np.arange(5))
    train = load_images(tmp_path, "train")
    assert torch.equal(train.images, as_nchw(images32))
    assert train.labels.tolist() == labels20.tolist()
    assert train.classes[3] == "class3"
    assert torch.equal(load_images(tmp_path, "test").images, as_nchw(test))


def test_cifar100_fine_and_coarse_labels(tmp_path, images32):
    fine, coarse = np.arange(20) * 5, np.arange(20)
    write_cifar100(tmp_path, images32, fine, coarse)
    assert load_images(tmp_path, "train", labels="fine").labels.tolist() == fine.tolist()
    coarse_set = load_images(tmp_path, "test", labels="coarse")
    assert coarse_set.labels.tolist() == coarse.tolist() and coarse_set.num_classes == 20


def test_stl10_binary_is_transposed_back_and_labels_start_at_zero(tmp_path):
    images = random_images(4, 96, seed=1)
    write_stl10(tmp_path, images, [0, 3, 9, 2])
    train = load_images(tmp_path / "stl10_binary", "train")
    assert torch.equal(train.images, as_nchw(images))
    assert train.labels.tolist() == [0, 3, 9, 2]
    both = load_images(tmp_path, "train+unlabeled")
    assert len(both) == 8 and both.labels is None


def test_tiny_imagenet_val_annotations_give_test_labels(tmp_path):
    images = random_images(6, 16, seed=2)
    labels = [0, 1, 2, 0, 1, 2]
    write_tiny_imagenet(tmp_path, images, labels)
    test = load_images(tmp_path, "test", cache=False)
    assert torch.equal(test.images, as_nchw(images))
    assert test.labels.tolist() == labels


def test_split_and_class_and_flat_folders(tmp_path, images32, labels20):
    write_class_folders(tmp_path / "split" / "train", images32, labels20)
    write_class_folders(tmp_path / "split" / "test", images32[:10], labels20[:10])
    train = load_images(tmp_path / "split", "train")
    assert detect_layout(tmp_path / "split")[0] == "split-folder"
    assert torch.equal(train.images[train.labels == 3], as_nchw(images32[labels20 == 3]))
    assert len(load_images(tmp_path / "split", "test")) == 10
    assert detect_layout(tmp_path / "split" / "train")[0] == "class-folder"
    flat = tmp_path / "flat"
    flat.mkdir()
    for i, image in enumerate(images32[:3]):
        Image.fromarray(image).save(flat / f"{i}.png")
    unlabelled = load_images(flat)
    assert unlabelled.labels is None and torch.equal(unlabelled.images, as_nchw(images32[:3]))


def test_npz_in_both_layouts(tmp_path, images32, labels20):
    np.savez(tmp_path / "hwc.npz", images=images32, labels=labels20)
    np.savez(tmp_path / "chw.npz", train_images=images32.transpose(0, 3, 1, 2), test_images=images32[:4].transpose(0, 3, 1, 2))
    assert torch.equal(load_images(tmp_path / "hwc.npz").images, as_nchw(images32))
    assert load_images(tmp_path / "hwc.npz").labels.tolist() == labels20.tolist()
    assert len(load_images(tmp_path / "chw.npz", "test")) == 4
    with pytest.raises(DataError, match="no 'test_images'"):
        load_images(tmp_path / "hwc.npz", "test")


def test_decoded_folders_are_cached_by_name_size_and_modification_time(tmp_path, images32, labels20, monkeypatch):
    write_class_folders(tmp_path, images32, labels20)
    first = load_images(tmp_path)
    calls = []
    real = decode._decode
    monkeypatch.setattr(decode, "_decode", lambda *a: calls.append(a) or real(*a))
    again = load_images(tmp_path)
    assert calls == [] and torch.equal(first.images, again.images)
    Image.fromarray(255 - images32[0]).save(tmp_path / "class0" / "0000.png")  # same name, new content
    changed = load_images(tmp_path)
    assert len(calls) == 20 and torch.equal(changed.images[0], as_nchw(255 - images32[:1])[0])


def test_a_cached_folder_is_mapped_from_the_cache_not_copied(tmp_path, images32, labels20):
    write_class_folders(tmp_path, images32, labels20)
    load_images(tmp_path)
    (cache_file,) = _cached_files(tmp_path)
    again = load_images(tmp_path).images
    assert mapped_from(again, cache_file)  # the file's pages (copy on write), shared by every process mapping it
    assert torch.equal(again, torch.from_numpy(np.load(cache_file)))
    os.utime(tmp_path / "class0" / "0000.png", ns=(1, 1))  # same bytes, another modification time: a new key
    load_images(tmp_path)
    assert len(_cached_files(tmp_path)) == 2


def mapped_from(tensor: torch.Tensor, path) -> bool:
    """Whether ``tensor``'s memory lies in a mapping of the file ``path`` (Linux's /proc/self/maps)."""
    for line in open("/proc/self/maps"):
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].strip() == str(path):
            start, end = (int(address, 16) for address in fields[0].split("-"))
            if start <= tensor.data_ptr() < end:
                return True
    return False


def _load_and_count(folder: str, counts: str) -> None:
    real = decode._decode
    decode._decode = lambda *a: (open(counts, "a").write("x"), real(*a))[1]
    load_images(folder)


def test_processes_starting_together_decode_a_folder_once(tmp_path, images32, labels20):
    import multiprocessing

    write_class_folders(tmp_path / "data", images32, labels20)
    counts = tmp_path / "decoded"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_load_and_count, args=(str(tmp_path / "data"), str(counts))) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [worker.exitcode for worker in workers] == [0, 0, 0]
    assert len(counts.read_text()) == 20 and len(_cached_files(tmp_path / "data")) == 1  # one decoded, two mapped


def test_resize_option_makes_mixed_sizes_usable(tmp_path, images32, labels20):
    write_class_folders(tmp_path, images32[:4], labels20[:4])
    Image.fromarray(random_images(1, 40, seed=3)[0]).save(tmp_path / "class0" / "big.png")
    with pytest.raises(DataError, match=r"mixed sizes: class0/\S+ is 32x32, class0/big.png is 40x40.*data.image_size"):
        load_images(tmp_path, cache=False)
    assert load_images(tmp_path, image_size=24, cache=False).image_size == (24, 24)


@pytest.mark.parametrize("problem, message", [
    ("missing", "does not exist"),
    ("empty", "is an empty folder"),
    ("unknown", "matches no known layout"),
    ("corrupt", r"cannot decode image .*broken.png"),
    ("empty-class", r"class folder .*class9 holds no images"),
    ("text-file", "not a .npz"),
    ("truncated-cifar", r"cannot read .*data_batch_1"),
    ("empty-npz", r"data.npz:images holds no images"),
    ("float-npz", r"data.npz:images must be uint8 N x H x W x C or N x C x H x W, got float32"),
])
def test_bad_data_gives_one_clear_error_naming_the_path(tmp_path, images32, labels20, problem, message):
    path = tmp_path / "data"
    if problem == "empty":
        path.mkdir()
    elif problem == "unknown":
        (path / "notes").mkdir(parents=True)
        (path / "readme.txt").write_text("hello")
    elif problem in ("corrupt", "empty-class"):
        write_class_folders(path, images32, labels20)
        if problem == "corrupt":
            (path / "class1" / "broken.png").write_bytes(b"not a png at all")
        else:
            for f in (path / "class9").iterdir():
                f.unlink()
    elif problem == "text-file":
        path = tmp_path / "data.txt"
        path.write_text("x")
    elif problem == "truncated-cifar":
        folder = write_cifar10(path, images32, labels20, images32, labels20)
        (folder / "data_batch_1").write_bytes(b"\x80\x04garbage")
    elif problem == "empty-npz":
        path = tmp_path / "data.npz"
        np.savez(path, images=images32[:0])
    elif problem == "float-npz":  # ToTensor's floats: 0-1 values would read as near-black
        path = tmp_path / "data.npz"
        np.savez(path, images=images32.astype(np.float32) / 255)
    with pytest.raises(DataError, match=message):
        load_images(path, cache=False)


def truncated_png(images) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(images[0]).save(buffer, format="PNG")
    return buffer.getvalue()[:80]


@pytest.mark.parametrize("content, reason", [
    (b"not a png at all", "not an image format Pillow recognises, or its header is damaged"),
    (b"", "the file is empty"),
    (truncated_png, "truncated"),
])
def test_an_undecodable_image_names_the_reason_not_a_buffer(tmp_path, images32, labels20, content, reason):
    write_class_folders(tmp_path, images32[:4], labels20[:4])
    broken = tmp_path / "class1" / "broken.png"
    broken.write_bytes(content(images32) if callable(content) else content)
    with pytest.raises(DataError) as refused:
        load_images(tmp_path, cache=False)
    message = str(refused.value)
    assert f"cannot decode image {broken}: " in message and reason in message and "BytesIO" not in message


class _WritesAFile:
    """A pickle payload that, when unpickled by pickle.load, creates the file it names."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return open, (self.target, "w")


class _RunsAShellCommand:
    """A pickle payload that, when unpickled by pickle.load, runs a shell command."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        import os

        return os.system, (self.command,)


@pytest.mark.parametrize("payload", ["open", "os.system"])
def test_cifar_pickle_naming_a_callable_is_refused_without_running_it(tmp_path, images32, labels20, payload):
    import pickle

    folder = write_cifar10(tmp_path / "data", images32, labels20, images32, labels20)
    witness = tmp_path / "pwned"
    evil = _WritesAFile(witness) if payload == "open" else _RunsAShellCommand(f"touch {witness}")
    batch = folder / "data_batch_1"
    batch.write_bytes(pickle.dumps({b"data": evil, b"labels": [0]}))
    with pytest.raises(DataError, match=r"data_batch_1 is not a CIFAR batch: it names \S*(open|system)"):
        load_images(tmp_path / "data", cache=False)
    assert not witness.exists()
    with open(batch, "rb") as f:  # the payload is live: plain pickle.load runs it
        pickle.load(f)
    assert witness.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_pickles_of_every_protocol_load(tmp_path, images32, labels20, protocol):
    import pickle

    folder = write_cifar10(tmp_path, images32, labels20, images32, labels20)
    batch = {b"batch_label": b"training batch 1 of 5", b"filenames": [b"a.png"] * 4,
             b"data": images32[:4].transpose(0, 3, 1, 2).reshape(4, -1), b"labels": [int(x) for x in labels20[:4]]}
    for i in range(1, 6):
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump(batch, f, protocol=protocol)
    train = load_images(tmp_path, "train", cache=False)
    assert torch.equal(train.images[:4], as_nchw(images32[:4]))
    assert train.labels[:4].tolist() == labels20[:4].tolist()


@pytest.mark.parametrize("damage", ["truncated", "not-a-dict", "no-data", "short-rows", "float-data", "few-labels"])
def test_damaged_cifar_pickle_gives_one_data_error(tmp_path, images32, labels20, damage):
    import pickle

    folder = write_cifar10(tmp_path, images32, labels20, images32, labels20)
    batch = folder / "data_batch_2"
    rows = images32[:4].transpose(0, 3, 1, 2).reshape(4, -1)
    contents = {"not-a-dict": [1, 2, 3], "no-data": {b"labels": [0] * 4},
                "short-rows": {b"data": rows[:, :100], b"labels": [0] * 4},
                "float-data": {b"data": rows.astype(np.float32), b"labels": [0] * 4},
                "few-labels": {b"data": rows, b"labels": [0] * 3}}
    if damage == "truncated":
        batch.write_bytes(batch.read_bytes()[:200])
    else:
        batch.write_bytes(pickle.dumps(contents[damage]))
    with pytest.raises(DataError, match=r"data_batch_2"):
        load_images(tmp_path, cache=False)


def test_cifar_metadata_without_names_gives_one_data_error(tmp_path, images32, labels20):
    import pickle

    folder = write_cifar10(tmp_path, images32, labels20, images32, labels20)
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": "cat,dog"}))
    with pytest.raises(DataError, match=r"batches.meta is not CIFAR metadata"):
        load_images(tmp_path, cache=False)


def _cached_files(root):
    return sorted((root / ".spatialssl-cache").glob("images-*.npy"))


@pytest.mark.parametrize("damage", ["truncated", "foreign", "wrong_shape"])
def test_a_damaged_decode_cache_is_ignored_with_a_warning(tmp_path, images32, labels20, damage):
    from spatialssl.errors import SpatialSSLWarning

    write_class_folders(tmp_path, images32, labels20)
    first = load_images(tmp_path)
    (cache_file,) = _cached_files(tmp_path)
    if damage == "truncated":  # a full disk or a kill mid-copy
        cache_file.write_bytes(cache_file.read_bytes()[:200])
    elif damage == "foreign":
        cache_file.write_text("not a cache at all")
    else:
        with open(cache_file, "wb") as f:
            np.save(f, np.zeros((3, 8, 8), dtype=np.float32))
    with pytest.warns(SpatialSSLWarning, match=f"decode cache {cache_file}"):
        again = load_images(tmp_path)
    assert torch.equal(first.images, again.images)


def test_a_failed_cache_write_warns_and_keeps_the_decoded_images(tmp_path, images32, labels20, monkeypatch):
    import errno

    from spatialssl.errors import SpatialSSLWarning

    def disk_full(path, array):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    write_class_folders(tmp_path, images32, labels20)
    monkeypatch.setattr(decode, "save_npy_atomic", disk_full)
    with pytest.warns(SpatialSSLWarning, match="cannot write the decode cache .*No space left on device"):
        images = load_images(tmp_path)
    assert torch.equal(images.images, load_images(tmp_path, cache=False).images) and _cached_files(tmp_path) == []


def test_an_unwritable_cache_home_decodes_without_a_cache(tmp_path, images32, labels20, monkeypatch):
    from spatialssl.errors import SpatialSSLWarning

    data = write_class_folders(tmp_path / "data", images32, labels20)
    (data / ".spatialssl-cache").write_text("")  # a file in the way: the folder beside the data cannot be made
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker / "cache"))  # under a regular file: unwritable, even as root
    with pytest.warns(SpatialSSLWarning, match="no decode cache: neither .* can be written"):
        images = load_images(data)
    assert torch.equal(images.images, load_images(data, cache=False).images)


def encoded(array: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_a_16_bit_grey_image_keeps_its_top_8_bits_instead_of_clipping_to_white(tmp_path, fmt):
    ramp = np.linspace(0, 65535, 32 * 32).astype(np.uint16).reshape(32, 32)
    (tmp_path / f"ramp.{fmt.lower()}").write_bytes(encoded(ramp, fmt))
    image = load_images(tmp_path, cache=False).images[0]
    expected = torch.from_numpy((ramp >> 8).astype(np.uint8))
    assert all(torch.equal(channel, expected) for channel in image)  # grey, the whole ramp from 0 to 255
    assert expected.flatten().diff().min() >= 0 and expected.min() == 0 and expected.max() == 255


@pytest.mark.parametrize("pixels, mode", [(np.linspace(0, 1, 256, dtype=np.float32), "F"),
                                          (np.arange(256, dtype=np.int32) * 100_000, "I")])
def test_a_float_or_32_bit_image_is_refused_naming_the_file(tmp_path, images32, labels20, pixels, mode):
    write_class_folders(tmp_path, images32[:4], labels20[:4])
    wide = tmp_path / "class1" / "wide.tif"
    wide.write_bytes(encoded(pixels.reshape(16, 16), "TIFF"))
    with pytest.raises(DataError, match=f"cannot decode image {wide}: .*Pillow mode {mode}.*8- or 16-bit"):
        load_images(tmp_path, cache=False)


def stl10_labels(folder, stored: list) -> None:
    np.asarray(stored, dtype=np.uint8).tofile(folder / "train_y.bin")


@pytest.mark.parametrize("damage, message", [
    ("cifar100-coarse-20", r"cifar-100-python/train 'coarse_labels' holds the label 20, but there are 20 class names"),
    ("stl10-label-0", r"train_y.bin \(less 1: STL-10 counts labels from 1\) holds the negative label -1"),
    ("stl10-label-11", r"train_y.bin .* holds the label 10, but there are 10 class names"),
    ("stl10-few-labels", r"train_y.bin .* has shape \(3,\), not one value per image \(4\)"),
])
def test_labels_outside_their_classes_are_refused_naming_the_file(tmp_path, damage, message):
    images = random_images(4, 96 if damage.startswith("stl10") else 32, seed=0)
    if damage == "cifar100-coarse-20":
        write_cifar100(tmp_path, images, fine=[0, 1, 2, 3], coarse=[0, 1, 20, 3])
        split, labels = "train", "coarse"
    else:
        folder = write_stl10(tmp_path, images, [0, 1, 2, 3])
        stl10_labels(folder, {"stl10-label-0": [1, 0, 2, 3], "stl10-label-11": [1, 11, 2, 3],
                              "stl10-few-labels": [1, 2, 3]}[damage])
        split, labels = "train", "fine"
    with pytest.raises(DataError, match=message):
        load_images(tmp_path, split, labels=labels, cache=False)


@pytest.mark.parametrize("damage, message", [
    ("stl10 train_y.bin", r"missing file \S+/stl10_binary/train_y.bin"),
    ("stl10 class_names.txt", r"stl10_binary/class_names.txt is not UTF-8 text"),
    ("tiny wnids.txt", r"missing file \S+/tiny-imagenet-200/wnids.txt"),
    ("tiny wnids.txt binary", r"tiny-imagenet-200/wnids.txt is not UTF-8 text"),
    ("tiny train folder", r"missing folder \S+/train/n00000001/images for the class n00000001"),
    ("tiny val_annotations.txt", r"\S+/val/val_annotations.txt; tiny-ImageNet's labelled split"),
])
def test_an_incomplete_data_set_folder_names_the_file_it_lacks(tmp_path, damage, message):
    import shutil

    split = "test" if "val" in damage else "train"
    if damage.startswith("stl10"):
        folder = write_stl10(tmp_path, random_images(2, 96, seed=0), [0, 1])
    else:
        folder = write_tiny_imagenet(tmp_path, random_images(4, 8, seed=0), [0, 1, 0, 1])
    name = damage.split()[1]
    if damage == "tiny train folder":
        shutil.rmtree(folder / "train" / "n00000001")
    elif damage.endswith("binary") or name == "class_names.txt":
        (folder / name).write_bytes(b"\xff\xfe\x00\x81 not text")
    else:
        next(folder.rglob(name)).unlink()
    with pytest.raises(DataError, match=message):
        load_images(tmp_path, split, cache=False)


def test_a_decode_cache_temporary_left_by_a_killed_run_is_swept_once_stale(tmp_path, images32, labels20):
    write_class_folders(tmp_path, images32, labels20)
    cache = tmp_path / ".spatialssl-cache"
    cache.mkdir()
    # Named as atomic_write names its temporaries: ".<final name>.<8 random characters>.spatialssl-tmp".
    stale, fresh = cache / ".images-0.npz.abcd1234.spatialssl-tmp", cache / ".images-1.npz.efgh5678.spatialssl-tmp"
    for temporary in (stale, fresh):
        temporary.write_bytes(b"half a cache")
    two_hours_ago = time.time() - 2 * 3600
    os.utime(stale, (two_hours_ago, two_hours_ago))
    load_images(tmp_path)
    assert not stale.exists()
    assert fresh.exists()  # possibly a concurrent run's write in progress
    assert len(_cached_files(tmp_path)) == 1


def test_a_resize_keeps_the_aspect_by_default_and_squashes_only_when_asked(tmp_path):
    """A 2:1 image with a marked left half: short_side keeps the centre square, squash keeps everything."""
    from spatialssl.data import load_images

    wide = np.zeros((16, 32, 3), np.uint8)
    wide[:, :8] = 255  # the leftmost quarter is white
    folder = tmp_path / "images" / "only"
    folder.mkdir(parents=True)
    Image.fromarray(wide).save(folder / "wide.png")
    Image.fromarray(wide).save(folder / "wide2.png")
    cropped = load_images(tmp_path / "images", image_size=8, cache=False).images[0]
    squashed = load_images(tmp_path / "images", image_size=8, cache=False, resize="squash").images[0]
    assert cropped.shape == squashed.shape == (3, 8, 8)
    assert cropped.float().mean() < 10  # the centre square holds none of the white quarter
    assert squashed[:, :, :2].float().mean() > 200 and squashed[:, :, 3:].float().mean() < 10
    arrays = tmp_path / "wide.npz"
    np.savez(arrays, images=np.stack([wide, wide]))
    assert torch.equal(load_images(arrays, image_size=8).images[0], cropped)  # arrays are fitted the same way


def test_grey_and_multi_channel_images_keep_their_channels_through_a_run(tmp_path):
    from spatialssl.engine.config import load_config
    from spatialssl.engine.train import pretrain
    from spatialssl.errors import ConfigError

    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (16, 16, 16, 1), dtype=np.uint8)
    np.savez(tmp_path / "grey.npz", images=grey, labels=np.arange(16) % 2)
    expanded = load_images(tmp_path / "grey.npz").images  # the default: RGB, as before
    kept = load_images(tmp_path / "grey.npz", channels=1).images
    assert expanded.shape[1] == 3 and kept.shape[1] == 1 and torch.equal(kept[:, 0], expanded[:, 1])
    bands = rng.integers(0, 256, (16, 16, 16, 5), dtype=np.uint8)  # e.g. five spectral bands
    np.savez(tmp_path / "bands.npz", images=bands, labels=np.arange(16) % 2)
    assert load_images(tmp_path / "bands.npz").images.shape == (16, 5, 16, 16)
    with pytest.raises(DataError, match="have 5 channels and data.channels is 3"):
        load_images(tmp_path / "bands.npz", channels=3)
    for data, channels in (("grey.npz", "data.channels=1"), ("bands.npz", "data.channels=null")):
        cfg = load_config(overrides=["model.backbone=resnet8", "method.name=sr", "method.patch_size=6",
                                     "train.batch_size=8", "train.epochs=1", "train.knn_monitor=0",
                                     f"data.path={tmp_path / data}", channels])
        last = pretrain(cfg, tmp_path / f"run-{data}", progress=False)
        from spatialssl.engine.build import load_backbone

        backbone, run_cfg = load_backbone(last)
        assert backbone.conv1.in_channels == run_cfg.model.in_chans == (1 if "grey" in data else 5)
        assert len(run_cfg.data.mean) == run_cfg.model.in_chans  # measured per channel
    with pytest.raises(ConfigError, match="data.mean has 3 values but .*bands.npz.* has 5 channels"):
        pretrain(load_config(overrides=["model.backbone=resnet8", "method.name=rr", "train.epochs=1", "train.batch_size=8",
                                        f"data.path={tmp_path / 'bands.npz'}", "data.mean=[0.5,0.5,0.5]",
                                        "data.std=[0.2,0.2,0.2]", "train.knn_monitor=0"]), tmp_path / "x",
                 progress=False)


def test_signal_options_given_for_images_are_named_as_ignored(tmp_path, images32, labels20):
    import warnings

    from spatialssl.data.load import load_data
    from spatialssl.engine.config import load_config
    from spatialssl.errors import SpatialSSLWarning

    path = tmp_path / "d.npz"
    np.savez(path, images=images32, labels=labels20)
    cfg = load_config(overrides=[f"data.path={path}", "signal.channels=[C3-M2]", "signal.epoch_seconds=20"])
    with pytest.warns(SpatialSSLWarning, match=r"^signal.channels, signal.epoch_seconds do not apply to resnet"):
        assert len(load_data(cfg, "train")) == len(images32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # defaults say nothing
        load_data(load_config(overrides=[f"data.path={path}"]), "train")

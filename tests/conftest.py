"""Small data sets written in each on-disk format we read, with known pixels and labels."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def torchvision():
    """torchvision even where its compiled kernels cannot load (a CUDA build beside a CPU torch)."""
    from spatialssl.detection.torchvision_ops import import_torchvision

    return import_torchvision()


@pytest.fixture(scope="session")
def timm(torchvision):  # timm imports torchvision, which must come through import_torchvision first
    import timm

    return timm


def random_images(count: int, size: int, seed: int) -> np.ndarray:
    """N x H x W x 3 uint8."""
    return np.random.default_rng(seed).integers(0, 256, size=(count, size, size, 3), dtype=np.uint8)


def write_cifar10(root: Path, train: np.ndarray, train_labels, test: np.ndarray, test_labels) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rows = lambda a: a.transpose(0, 3, 1, 2).reshape(len(a), -1)  # noqa: E731
    chunks = np.array_split(np.arange(len(train)), 5)
    for i, index in enumerate(chunks, 1):
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump({b"data": rows(train[index]), b"labels": list(train_labels[index])}, f)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": rows(test), b"labels": list(test_labels)}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"class{i}".encode() for i in range(10)]}, f)
    return folder


@pytest.fixture(scope="session")
def cifar_like(tmp_path_factory):
    """A torchvision-layout CIFAR-10 folder holding demo shapes (64 train, 32 test)."""
    from spatialssl.data import make_demo_images

    root = tmp_path_factory.mktemp("cifar")
    train, test = make_demo_images(64, seed=3), make_demo_images(32, seed=4)
    hwc = lambda s: s.images.permute(0, 2, 3, 1).numpy()  # noqa: E731
    write_cifar10(root, hwc(train), train.labels.numpy(), hwc(test), test.labels.numpy())
    return root


def write_cifar100(root: Path, images: np.ndarray, fine, coarse) -> Path:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    data = {b"data": images.transpose(0, 3, 1, 2).reshape(len(images), -1),
            b"fine_labels": list(fine), b"coarse_labels": list(coarse)}
    for split in ("train", "test"):
        with open(folder / split, "wb") as f:
            pickle.dump(data, f)
    with open(folder / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": [f"f{i}".encode() for i in range(100)],
                     b"coarse_label_names": [f"c{i}".encode() for i in range(20)]}, f)
    return folder


def write_stl10(root: Path, images: np.ndarray, labels) -> Path:
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    # STL-10 stores each channel column-major: N x C x W x H.
    stored = images.transpose(0, 3, 2, 1).copy()
    for split in ("train", "test", "unlabeled"):
        stored.tofile(folder / f"{split}_X.bin")
    for split in ("train", "test"):
        (np.asarray(labels, dtype=np.uint8) + 1).tofile(folder / f"{split}_y.bin")
    return folder


def write_class_folders(root: Path, images: np.ndarray, labels, fmt: str = "png") -> Path:
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:04d}.{fmt}")
    return root


def write_shape_splits(root: Path) -> Path:
    """train/ and test/ class folders of JPEGs under ``root``: the demo's shapes, 56 and 24 images, the same 4
    classes in each split (what the streamed and sharded commands are tested on)."""
    from spatialssl.data import make_demo_images

    demo = make_demo_images(80, seed=4)
    pixels, labels = demo.images.permute(0, 2, 3, 1).numpy(), demo.labels.numpy() % 4
    write_class_folders(root / "train", pixels[:56], labels[:56], "jpg")
    write_class_folders(root / "test", pixels[56:], labels[56:], "jpg")
    assert len({*labels[56:]}) == len({*labels[:56]}) == 4
    return root


def write_tiny_imagenet(root: Path, images: np.ndarray, labels) -> Path:
    folder = root / "tiny-imagenet-200"
    wnids = [f"n{i:08d}" for i in range(int(max(labels)) + 1)]
    (folder / "val" / "images").mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(wnids) + "\n")
    lines = []
    for i, (image, label) in enumerate(zip(images, labels)):
        train_dir = folder / "train" / wnids[label] / "images"
        train_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(train_dir / f"{wnids[label]}_{i}.png")
        Image.fromarray(image).save(folder / "val" / "images" / f"val_{i}.png")
        lines.append(f"val_{i}.png\t{wnids[label]}\t0\t0\t8\t8")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture
def images32():
    return random_images(20, 32, seed=0)


@pytest.fixture
def labels20():
    return np.arange(20) % 10

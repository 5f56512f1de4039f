"""The CLI over a zoo of malformed files and options: each gets exit code 2 and one line on stderr,
"error: ..." naming what is wrong, and never a traceback. Every case fails before any training."""
import io
import json
import pickle
import zipfile

import numpy as np
import pytest
import torch
from conftest import random_images, write_cifar10, write_class_folders, write_stl10, write_tiny_imagenet
from PIL import Image
from safetensors.torch import save_file

from spatialssl.cli import main

# Options that fit the small data below, so that data read without complaint would run to exit code 0.
TINY = ["--no-progress", "model.backbone=resnet8", "method.patch_size=4", "train.batch_size=4",
        "train.epochs=0", "train.knn_monitor=0"]


class WritesAFile:
    """A pickle payload that, if unpickled by pickle.load, would create the file it names."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return open, (self.target, "w")


def images_with(tmp_path, name: str, content: bytes):
    """Class folders of good images, and one bad file among them."""
    folder = write_class_folders(tmp_path / "images", random_images(4, 16, seed=0), np.arange(4) % 2)
    (folder / "class1" / name).write_bytes(content)
    return folder


def corrupt_jpeg(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(random_images(1, 16, seed=1)[0]).save(buffer, format="JPEG")
    return images_with(tmp_path, "broken.jpg", buffer.getvalue()[:40])


def cifar_with_code(tmp_path):
    images = random_images(10, 8, seed=0)
    folder = write_cifar10(tmp_path / "cifar", images, np.arange(10), images, np.arange(10))
    (folder / "data_batch_1").write_bytes(pickle.dumps(WritesAFile(tmp_path / "pwned")))
    return folder.parent


def labelled_npz(path, train_images=None):
    images = random_images(8, 8, seed=0)
    np.savez(path, train_images=images if train_images is None else train_images, train_labels=np.arange(8) % 2,
             test_images=images, test_labels=np.arange(8) % 2)
    return path


def truncated_npz(tmp_path):
    path = labelled_npz(tmp_path / "data.npz")
    path.write_bytes(path.read_bytes()[:300])
    return path


def misshapen_npz(tmp_path):
    return labelled_npz(tmp_path / "data.npz", train_images=np.zeros((8, 5), np.uint8))


def npz_with(tmp_path, **changes):
    """A labelled .npz with some arrays replaced."""
    images = random_images(8, 8, seed=0)
    arrays = {"train_images": images, "train_labels": np.arange(8) % 2, **changes}
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return path


def npz_with_bad_crc(tmp_path):
    path = npz_with(tmp_path)
    content = bytearray(path.read_bytes())
    content[content.index(b"train_images.npy") + 200] ^= 0xFF  # flipped bits inside the stored pixels
    path.write_bytes(bytes(content))
    return path


def npz_with_a_raw_member(tmp_path):
    path = tmp_path / "data.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("train_images", b"raw bytes, not a .npy array")
    return path


def npy_named_npz(tmp_path):
    path = tmp_path / "data.npz"
    with open(path, "wb") as f:
        np.save(f, random_images(8, 8, seed=0))
    return path


def npz_of_objects(tmp_path):
    """Labels stored as a pickled object array, whose unpickling would create a file."""
    return npz_with(tmp_path, train_labels=np.array([WritesAFile(tmp_path / "pwned")] * 8, dtype=object))


def cifar_label_past_its_classes(tmp_path):
    images = random_images(10, 32, seed=0)
    labels = np.arange(10)
    labels[3] = 12  # CIFAR-10 has 10 class names
    write_cifar10(tmp_path / "cifar", images, labels, images, np.arange(10))
    return tmp_path / "cifar"


def stl10_with(name, content):
    """An STL-10 folder with ``content`` as its file ``name``; None removes the file."""
    def make(tmp_path):
        folder = write_stl10(tmp_path, random_images(2, 96, seed=0), [0, 1])
        if content is None:
            (folder / name).unlink()
        else:
            (folder / name).write_bytes(content)
        return folder
    return make


def tiny_imagenet_without(name):
    def make(tmp_path):
        folder = write_tiny_imagenet(tmp_path, random_images(4, 8, seed=0), [0, 1, 0, 1])
        (folder / name).unlink()
        return folder
    return make


def float_tiff(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)).save(buffer, format="TIFF")
    return images_with(tmp_path, "float.tif", buffer.getvalue())


def signals_npz(tmp_path, **changes):
    arrays = {"signals": np.zeros((8, 2, 3000), np.float32), "labels": np.arange(8) % 5,
              "subjects": np.arange(8) // 2, "sampling_rate": 100.0, **changes}
    path = tmp_path / "signals.npz"
    np.savez(path, **arrays)
    return path


def signals_with_nan(tmp_path):
    signals = np.zeros((8, 2, 3000), np.float32)
    signals[5, 1, 17] = np.nan
    return signals_npz(tmp_path, signals=signals)


def empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    return tmp_path / "empty"


def text_file(tmp_path):
    (tmp_path / "notes.txt").write_text("not data")
    return tmp_path / "notes.txt"


def recipe(tmp_path, content):
    path = tmp_path / "recipe.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def checkpoint_file(tmp_path, metadata=None, tensors=None):
    path = tmp_path / "run" / "last.ckpt"
    path.parent.mkdir()
    save_file(tensors or {"method.backbone.conv1.weight": torch.zeros(16, 3, 3, 3)}, path, metadata=metadata)
    return path


def not_safetensors(tmp_path):
    path = tmp_path / "last.ckpt"
    path.write_bytes(b"PK\x03\x04 a zip, not safetensors")
    return path


def pretrain(data):
    return lambda tmp_path: ["pretrain", "--data", str(data(tmp_path)), "--out", str(tmp_path / "out"), *TINY]


def streamed(data):
    return lambda tmp_path: [*pretrain(data)(tmp_path), "data.stream=true", "data.workers=1", "data.image_size=16",
                             "data.mean=[0.5,0.5,0.5]", "data.std=[0.2,0.2,0.2]", "train.epochs=1",
                             "train.batch_size=5"]  # every image in the one batch a worker decodes


def pretrain_1d(data):
    return lambda tmp_path: [*pretrain(data)(tmp_path), "model.backbone=vit1d_tiny", "model.patch_size=25",
                             "model.depth=1", "method.name=part", "part.sampling=offgrid", "part.num_tokens=12",
                             "part.num_pairs=64", "train.batch_size=4"]


def linear_eval(ckpt):
    return lambda tmp_path: ["linear-eval", "--checkpoint", str(ckpt(tmp_path)), "--data",
                             str(labelled_npz(tmp_path / "eval.npz")), "--epochs", "1"]


def with_options(*options):
    return lambda tmp_path: ["pretrain", "--data", str(labelled_npz(tmp_path / "data.npz")), "--out",
                             str(tmp_path / "out"), *TINY, *options]


def with_recipe(content):
    return lambda tmp_path: ["pretrain", "--config", str(recipe(tmp_path, content)), "--data",
                             str(labelled_npz(tmp_path / "data.npz")), "--out", str(tmp_path / "out"), *TINY]


def detect(edit=None, *options):
    """``spatialssl detect`` of a fresh ViT checkpoint on a generated COCO-style set, its train json edited by
    ``edit`` (a function of the parsed json)."""
    from spatialssl.detection import write_shapes

    def argv(tmp_path):
        data = write_shapes(tmp_path / "shapes", 4, 2, size=32, seed=0)
        if edit is not None:
            path = data / "annotations" / "instances_train.json"
            path.write_text(json.dumps(edit(json.loads(path.read_text()))))
        assert main(["pretrain", "--data", str(labelled_npz(tmp_path / "data.npz")), "--out", str(tmp_path / "vit"),
                     *TINY, "method.name=random", "model.backbone=vit_tiny", "model.depth=1"]) == 0
        return ["detect", "--checkpoint", str(tmp_path / "vit" / "last.ckpt"), "--data", str(data), "--out",
                str(tmp_path / "det"), "--no-progress", *options]
    return argv


def annotation_of_category(category: int):
    def edit(described):
        described["annotations"][0]["category_id"] = category
        return described
    return edit


CASES = {  # name: (argv from a scratch folder, what the error line says)
    "corrupt JPEG in a class folder": (pretrain(corrupt_jpeg), "cannot decode image"),
    "zero-byte PNG": (pretrain(lambda t: images_with(t, "empty.png", b"")), "the file is empty"),
    "CIFAR pickle with a code payload": (pretrain(cifar_with_code), "data_batch_1"),
    "truncated .npz": (pretrain(truncated_npz), "data.npz"),
    ".npz with wrong-shaped arrays": (pretrain(misshapen_npz), "data.npz"),
    ".npz member with a bad CRC": (pretrain(npz_with_bad_crc), "data.npz:train_images"),
    ".npz member that is not a .npy array": (pretrain(npz_with_a_raw_member), "data.npz:train_images"),
    ".npy file named .npz": (pretrain(npy_named_npz), "data.npz"),
    ".npz of pickled objects": (pretrain(npz_of_objects), "data.npz:train_labels"),
    ".npz with float labels": (pretrain(lambda t: npz_with(t, train_labels=np.full(8, 0.5))), "data.npz:train_labels"),
    ".npz with text labels": (pretrain(lambda t: npz_with(t, train_labels=np.array(["cat", "dog"] * 4))),
                              "data.npz:train_labels"),
    ".npz with fewer labels than images": (pretrain(lambda t: npz_with(t, train_labels=np.zeros(5, int))),
                                           "data.npz:train_labels"),
    ".npz with a negative label": (pretrain(lambda t: npz_with(t, train_labels=np.arange(8) - 1)),
                                   "data.npz:train_labels"),
    "CIFAR-10 label past its 10 class names": (pretrain(cifar_label_past_its_classes), "data_batch_2"),
    "STL-10 without train_X.bin": (pretrain(stl10_with("train_X.bin", None)), "train_X.bin"),
    "STL-10 with a binary class_names.txt": (pretrain(stl10_with("class_names.txt", b"\xff\xfe\x00\x81")),
                                             "class_names.txt"),
    "tiny-ImageNet without wnids.txt": (pretrain(tiny_imagenet_without("wnids.txt")), "wnids.txt"),
    "32-bit float TIFF": (pretrain(float_tiff), "float.tif"),
    "corrupt JPEG met by a streaming worker": (streamed(corrupt_jpeg), "cannot decode image"),
    "signal .npz with an array of sampling rates": (pretrain_1d(lambda t: signals_npz(t, sampling_rate=[100.0, 50.0])),
                                                    "signals.npz:sampling_rate"),
    "signal .npz with fewer labels than epochs": (pretrain_1d(lambda t: signals_npz(t, labels=np.zeros(3, int))),
                                                  "signals.npz:labels"),
    "signal .npz holding NaN": (pretrain_1d(signals_with_nan), "signals.npz:signals"),
    "--data an empty folder": (pretrain(empty_folder), "empty folder"),
    "--data a text file": (pretrain(text_file), "notes.txt"),
    "recipe that is not YAML": (with_recipe("model: {backbone: [resnet8\n"), "recipe.yaml"),
    "recipe that is a YAML list": (with_recipe("- model\n- train\n"), "recipe.yaml"),
    "recipe that is binary": (with_recipe(b"\xff\xfe\x00\x81 not text"), "recipe.yaml"),
    "unknown option": (with_options("train.epoch=3"), "unknown config key 'train.epoch'"),
    "out-of-range option": (with_options("optim.lr=-1"), "optim.lr"),
    "override that is not YAML": (with_options("augment.scale=[0.2,"), "augment.scale"),
    "missing --data path": (pretrain(lambda t: t / "no-such-data"), "no-such-data"),
    "detection annotation of an unknown category": (detect(annotation_of_category(99)), "category"),
    "detection json without annotations": (detect(lambda d: {k: v for k, v in d.items() if k != "annotations"}),
                                           "instances_train.json"),
    "detection option out of range": (detect(None, "detect.scale_range=[2,1]"), "detect.scale_range"),
    "checkpoint that is not safetensors": (linear_eval(not_safetensors), "cannot read checkpoint"),
    "checkpoint with missing metadata": (linear_eval(checkpoint_file), "is not a spatialssl checkpoint"),
    "checkpoint without a config": (linear_eval(lambda t: checkpoint_file(t, {"spatialssl": json.dumps(
        {"format": "spatialssl-checkpoint-1", "epoch": 1})})), "lacks 'config'"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_gives_exit_code_2_and_one_error_line(tmp_path, capsys, case):
    argv, says = CASES[case]
    args = argv(tmp_path)
    capsys.readouterr()
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert says in err, err
    assert not (tmp_path / "pwned").exists()  # no code ran from the data


MISTAKES = [(["pretrain", "--out", "x", "--foo"], "unrecognized arguments: --foo"),
            (["nonsense"], "invalid choice: 'nonsense'"),
            (["pretrain"], "required: --out")]


@pytest.mark.parametrize("argv, says", MISTAKES)
def test_a_command_line_mistake_is_one_line_too(capsys, argv, says):
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1 and says in err, err


def test_the_readme_counts_these_cases_as_they_are():
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    counted = re.search(r"runs the CLI over (\d+) malformed inputs: (\d+) files and options.*?and (\d+)\s+"
                        r"command-line mistakes", readme, re.S)
    assert counted, "README.md no longer says how many bad-input cases the tests run"
    assert [int(n) for n in counted.groups()] == [len(CASES) + len(MISTAKES), len(CASES), len(MISTAKES)]

"""The CLI over a zoo of malformed files and options: each gets exit code 2 and one line on stderr,
"error: ..." naming what is wrong, and never a traceback. Every case fails before any training."""
import io
import json
import pickle

import numpy as np
import pytest
import torch
from conftest import random_images, write_cifar10, write_class_folders
from PIL import Image
from safetensors.torch import save_file

from spatialssl.cli import main

TINY = ["--no-progress", "model.backbone=resnet8", "train.epochs=0", "train.knn_monitor=0"]


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


def linear_eval(ckpt):
    return lambda tmp_path: ["linear-eval", "--checkpoint", str(ckpt(tmp_path)), "--data",
                             str(labelled_npz(tmp_path / "eval.npz")), "--epochs", "1"]


def with_options(*options):
    return lambda tmp_path: ["pretrain", "--data", str(labelled_npz(tmp_path / "data.npz")), "--out",
                             str(tmp_path / "out"), *TINY, *options]


def with_recipe(content):
    return lambda tmp_path: ["pretrain", "--config", str(recipe(tmp_path, content)), "--data",
                             str(labelled_npz(tmp_path / "data.npz")), "--out", str(tmp_path / "out"), *TINY]


CASES = {  # name: (argv from a scratch folder, what the error line says)
    "corrupt JPEG in a class folder": (pretrain(corrupt_jpeg), "cannot decode image"),
    "zero-byte PNG": (pretrain(lambda t: images_with(t, "empty.png", b"")), "the file is empty"),
    "CIFAR pickle with a code payload": (pretrain(cifar_with_code), "data_batch_1"),
    "truncated .npz": (pretrain(truncated_npz), "data.npz"),
    ".npz with wrong-shaped arrays": (pretrain(misshapen_npz), "data.npz"),
    "recipe that is not YAML": (with_recipe("model: {backbone: [resnet8\n"), "recipe.yaml"),
    "recipe that is a YAML list": (with_recipe("- model\n- train\n"), "recipe.yaml"),
    "recipe that is binary": (with_recipe(b"\xff\xfe\x00\x81 not text"), "recipe.yaml"),
    "unknown option": (with_options("train.epoch=3"), "unknown config key 'train.epoch'"),
    "out-of-range option": (with_options("optim.lr=-1"), "optim.lr"),
    "override that is not YAML": (with_options("augment.scale=[0.2,"), "augment.scale"),
    "missing --data path": (pretrain(lambda t: t / "no-such-data"), "no-such-data"),
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


@pytest.mark.parametrize("argv, says", [(["pretrain", "--out", "x", "--foo"], "unrecognized arguments: --foo"),
                                        (["nonsense"], "invalid choice: 'nonsense'"),
                                        (["pretrain"], "required: --out")])
def test_a_command_line_mistake_is_one_line_too(capsys, argv, says):
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1 and says in err, err

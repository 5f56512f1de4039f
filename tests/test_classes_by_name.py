"""Labels are matched by class name across splits (issue 26): each split's folder numbers its own classes, so
train/{a,c} and test/{a,b,c} disagree on what label 1 means. Scoring renumbers by name; a class training never
saw is refused in one line naming it, never silently renumbered."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from spatialssl.cli import main
from spatialssl.data.classes import numbered_as
from spatialssl.data.imageset import ImageSet
from spatialssl.data.stream import stream_images
from spatialssl.engine.config import load_config
from spatialssl.engine.train import pretrain
from spatialssl.errors import DataError

GREY = {"a": 20, "b": 128, "c": 235}  # one plain grey level per class: any backbone's features separate them


def write_classes(root, splits: dict, per_class: int = 6):
    for split, classes in splits.items():
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                level = GREY[name] + i  # a little variety within a class
                Image.fromarray(np.full((16, 16, 3), level, dtype=np.uint8)).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    data = write_classes(tmp_path_factory.mktemp("pretrain") / "data", {"train": "abc"})
    cfg = load_config(overrides=[f"data.path={data}", "method.name=random", "model.backbone=resnet8",
                                 "train.epochs=0", "train.knn_monitor=0", "data.image_size=16"])
    return pretrain(cfg, tmp_path_factory.mktemp("run") / "run", progress=False)


def test_a_test_split_missing_a_class_is_scored_by_name(checkpoint, tmp_path):
    data = write_classes(tmp_path / "data", {"train": "abc", "test": "ac"})
    report = tmp_path / "report.json"
    assert main(["linear-eval", "--checkpoint", str(checkpoint), "--data", str(data), "--epochs", "30",
                 "--report", str(report)]) == 0
    scores = json.loads(report.read_text())["linear"]
    # numbered per split, test's c would be label 1 (train's b): half the test set scored wrong
    assert all(r["test_acc"] == pytest.approx(1.0) for r in scores.values()), scores


def test_a_test_class_unknown_to_training_is_refused(checkpoint, tmp_path, capsys):
    data = write_classes(tmp_path / "data", {"train": "ac", "test": "abc"})
    assert main(["linear-eval", "--checkpoint", str(checkpoint), "--data", str(data)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "('b')" in err[0] and "[train]" in err[0]


def test_finetuning_refuses_it_before_training(checkpoint, tmp_path, capsys):
    data = write_classes(tmp_path / "data", {"train": "ac", "test": "abc"})
    assert main(["finetune", "--checkpoint", str(checkpoint), "--data", str(data), "--out", str(tmp_path / "ft"),
                 "--no-progress"]) == 2
    assert "('b')" in capsys.readouterr().err and not (tmp_path / "ft" / "last.ckpt").exists()


def test_streams_and_joined_splits_are_renumbered_by_name(tmp_path):
    data = write_classes(tmp_path / "data", {"train": "ac", "val": "abc"})
    stream = stream_images(data, "val", 16)
    renumbered = numbered_as(stream, ["c", "a", "b", "d"], "reference", "scoring")
    assert renumbered.classes == ["c", "a", "b", "d"] and stream.classes == ["a", "b", "c"]
    assert torch.equal(renumbered.labels, torch.tensor([1] * 6 + [2] * 6 + [0] * 6))
    joined = load_config(overrides=[f"data.path={data}", "data.split=train+val", "data.image_size=16"])
    from spatialssl.data.load import load_training_data

    both = load_training_data(joined)
    assert both.classes == ["a", "b", "c"]
    means = both.images.float().mean((1, 2, 3))  # each label's images carry their class's grey level
    for label, name in enumerate(both.classes):
        assert ((means[both.labels == label] - GREY[name]).abs() < 6).all()


def test_unnamed_or_equal_classes_are_left_alone():
    images = torch.zeros(3, 1, 2, 2, dtype=torch.uint8)
    unnamed = ImageSet(images, torch.tensor([0, 1, 2]))
    assert numbered_as(unnamed, ["x", "y", "z"], "r", "p") is unnamed
    named = ImageSet(images, torch.tensor([0, 1, 0]), ["p", "q"], "s")
    assert numbered_as(named, ["p", "q"], "r", "p") is named
    with pytest.raises(DataError, match=r"s has classes r does not \('q'\)"):
        numbered_as(named, ["p"], "r", "scoring")

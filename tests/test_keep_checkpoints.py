"""The checkpoint before the last is kept (issue 26): `train.keep_checkpoints` (default 2) rotates last.ckpt to
last-1.ckpt, ... atomically, and `--resume` falls back to the newest readable one, saying what it skipped,
and continues from it exactly."""
import numpy as np
import pytest
import torch
from conftest import write_class_folders
from safetensors.torch import load_file

from spatialssl.cli import main
from spatialssl.engine import checkpoint
from spatialssl.engine.runlog import read_metrics


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    rng = np.random.default_rng(0)
    return write_class_folders(tmp_path_factory.mktemp("keep") / "data",
                               rng.integers(0, 256, (24, 16, 16, 3), dtype=np.uint8), np.arange(24) % 2)


def pretrain(out, folder, epochs, *flags, keep=None):
    return main(["pretrain", "--data", str(folder), "--out", str(out), "--no-progress", *flags, "method.name=rotation",
                 "model.backbone=resnet8", f"train.epochs={epochs}", "train.batch_size=8", "train.knn_monitor=0",
                 *([f"train.keep_checkpoints={keep}"] if keep else [])])


def epoch_of(path) -> int:
    return checkpoint.read_checkpoint(path)[1]["epoch"]


@pytest.mark.parametrize("keep", [None, 1, 3])
def test_the_checkpoints_before_the_last_are_kept_and_rotated(keep, folder, tmp_path):
    assert pretrain(tmp_path / "run", folder, 3, keep=keep) == 0
    kept = sorted(p.name for p in (tmp_path / "run").glob("last*.ckpt"))
    expected = {None: ["last-1.ckpt", "last.ckpt"], 1: ["last.ckpt"], 3: ["last-1.ckpt", "last-2.ckpt", "last.ckpt"]}
    assert kept == expected[keep]
    assert [epoch_of(tmp_path / "run" / name) for name in sorted(kept, key=len)] == [3, 2, 1][:len(kept)]
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.endswith("tmp")]


def test_resume_falls_back_to_the_previous_checkpoint_and_continues_exactly(folder, tmp_path, capsys):
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    assert pretrain(whole, folder, 4) == 0
    assert pretrain(broken, folder, 3) == 0
    last = broken / "last.ckpt"
    last.write_bytes(last.read_bytes()[:-1])  # one byte short
    capsys.readouterr()
    assert pretrain(broken, folder, 4, "--resume") == 0
    err = capsys.readouterr().err
    assert "last.ckpt skipped (cannot read checkpoint" in err and "resuming from last-1.ckpt (epoch 2)" in err
    assert (broken / "last.ckpt.unreadable").is_file() and epoch_of(last) == 4
    assert [row["epoch"] for row in read_metrics(broken)] == ["1", "2", "3", "4"]  # epoch 3 trained again
    ours, theirs = load_file(last), load_file(whole / "last.ckpt")
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_a_kill_between_two_renames_leaves_a_run_that_resumes(folder, tmp_path):
    run = tmp_path / "run"
    assert pretrain(run, folder, 2) == 0
    (run / "last-1.ckpt").unlink()
    (run / "last.ckpt").rename(run / "last-1.ckpt")  # what a file system without hard links may leave
    assert pretrain(run, folder, 3, "--resume") == 0
    assert epoch_of(run / "last.ckpt") == 3 and epoch_of(run / "last-1.ckpt") == 2


def test_no_readable_checkpoint_is_one_line(folder, tmp_path, capsys):
    run = tmp_path / "run"
    assert pretrain(run, folder, 2) == 0
    for name in ("last.ckpt", "last-1.ckpt"):
        (run / name).write_bytes(b"\0" * 10)
    capsys.readouterr()
    assert pretrain(run, folder, 3, "--resume") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: no readable checkpoint in {run}") and "last-1.ckpt" in err[0]

"""One run per folder: the lock, the sweep of killed runs' temporaries, and write failures that
come early and in one line."""
import errno
import json
import os
import signal
import stat
import subprocess
import sys

import pytest
from safetensors import SafetensorError
from safetensors.torch import load_file

from spatialssl.data import make_demo_images
from spatialssl.engine import checkpoint, runfolder
from spatialssl.engine.config import load_config
from spatialssl.engine.distributed import writes
from spatialssl.engine.runfolder import claimed, locked
from spatialssl.engine.runlog import read_metrics
from spatialssl.engine.train import pretrain
from spatialssl.errors import ConfigError, DataError

TINY = {"model": {"backbone": "resnet8"}, "method": {"patch_size": 12},
        "train": {"batch_size": 32, "epochs": 1, "knn_monitor": 0}}
needs_flock = pytest.mark.skipif(runfolder.fcntl is None, reason="no fcntl (Windows): runs are not locked")


@pytest.fixture(scope="module")
def demo_small():
    return make_demo_images(64, seed=5)


def untrained(folder, demo, **kwargs):
    """The quickest run that writes a checkpoint."""
    cfg = load_config(base=TINY, overrides=["method.name=random"])
    return pretrain(cfg, folder, train_set=demo, progress=False, **kwargs)


@needs_flock
def test_a_second_run_on_a_locked_folder_is_refused_naming_it(tmp_path, demo_small):
    tmp_path.mkdir(exist_ok=True)
    with locked(tmp_path):  # a run in progress
        with pytest.raises(ConfigError, match=f"another spatialssl run is using {tmp_path}; wait for it or choose "
                                              "another --out"):
            untrained(tmp_path, demo_small)
        assert not (tmp_path / "last.ckpt").exists()
    assert untrained(tmp_path, demo_small).is_file()  # released when the run ended


def hold_lock_in_a_process(folder):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(600)",
         str(folder / runfolder.LOCK_NAME)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


@needs_flock
def test_a_lock_left_by_a_killed_run_does_not_block(tmp_path, demo_small):
    holder = hold_lock_in_a_process(tmp_path)
    try:
        with pytest.raises(ConfigError, match="another spatialssl run is using"):
            untrained(tmp_path, demo_small)
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    assert (tmp_path / runfolder.LOCK_NAME).exists()  # the file stays; the kernel dropped the lock
    assert untrained(tmp_path, demo_small).is_file()


def test_only_the_writing_process_claims_the_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert not writes()
    with claimed(tmp_path / "run", writer=False):  # rank 1 reads what rank 0 writes
        assert not (tmp_path / "run").exists()
    monkeypatch.setenv("RANK", "0")
    assert writes()


OURS = [".last.ckpt.k2x_9abq.spatialssl-tmp", ".backbone.safetensors.0a1b2c3d.spatialssl-tmp",
        ".last.json.zzzzzzzz.spatialssl-tmp"]
NOT_OURS = ["notes.tmp", ".last.ckpt.tmp", ".last.ckpt.short.spatialssl-tmp", "last.ckpt.k2x_9abq.spatialssl-tmp",
            ".x.ABCDEFGH.spatialssl-tmp", ".notes.20240101.tmp", ".last.ckpt.k2x_9abq.tmp"]  # a user's lookalikes


@needs_flock
def test_temporaries_of_killed_runs_are_swept_and_nothing_else(tmp_path, demo_small):
    for name in OURS + NOT_OURS:
        (tmp_path / name).write_bytes(b"\0" * 64)
    with locked(tmp_path):  # a live run's temporaries stay while it holds the folder
        with pytest.raises(ConfigError):
            untrained(tmp_path, demo_small)
        assert all((tmp_path / name).exists() for name in OURS)
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.write_text("a user's file")
    (tmp_path / ".linked.abcdefgh.spatialssl-tmp").symlink_to(outside)  # a link is never ours
    untrained(tmp_path, demo_small)
    left = {p.name for p in tmp_path.iterdir()}
    assert not left & set(OURS) and set(NOT_OURS) <= left and ".linked.abcdefgh.spatialssl-tmp" in left
    assert outside.read_text() == "a user's file"


def test_an_unwritable_run_folder_is_refused_before_any_work(tmp_path, demo_small):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match=f"cannot write in the run folder {blocker / 'run'} .*choose another --out"):
        untrained(blocker / "run", demo_small)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="permissions do not bind root")
def test_a_read_only_run_folder_is_refused_before_any_work(tmp_path, demo_small):
    folder = tmp_path / "run"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(ConfigError, match=f"cannot write in the run folder {folder}"):
            untrained(folder, demo_small)
    finally:
        folder.chmod(0o700)


def test_a_full_disk_at_a_checkpoint_is_one_line_and_keeps_the_previous_one(tmp_path, demo_small, monkeypatch):
    cfg = load_config(base=TINY, overrides=["train.epochs=2"])
    pretrain(cfg, tmp_path, train_set=demo_small, progress=False, stop_after_epoch=1)
    before = load_file(tmp_path / "last.ckpt")

    def disk_full(tensors, filename, metadata=None):  # what safetensors raises on a full disk
        with open(filename, "wb") as f:
            f.write(b"\0" * 16)  # a part written, then no space
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(checkpoint, "save_file", disk_full)
    with pytest.raises(DataError) as failed:
        pretrain(cfg, tmp_path, resume=True, train_set=demo_small, progress=False)
    message = str(failed.value)
    assert message.startswith(f"cannot write {tmp_path / 'last.ckpt'} (safetensors: Error while serializing: I/O "
                              "error: No space left on device (os error 28)); the previous last.ckpt is kept")
    assert "\n" not in message
    after = checkpoint.read_checkpoint(tmp_path / "last.ckpt")
    assert after[1]["epoch"] == 1 and all(after[0][k].equal(v) for k, v in before.items())
    assert not [p for p in tmp_path.iterdir() if p.name.endswith("tmp")]


class Killed(BaseException):
    """A kill -9 between two writes, as far as the run folder can tell."""


def test_a_kill_between_the_checkpoint_and_its_backbone_is_repaired_on_resume(tmp_path, demo_small, monkeypatch):
    cfg = load_config(base=TINY, overrides=["train.epochs=2", "train.ema=0.5"])  # the backbone is the EMA's
    real = checkpoint.save_weights

    def killed_at_the_second_backbone(path, tensors, metadata=None, before_rename=None):
        if path.name == "backbone.safetensors" and (tmp_path / "metrics.csv").is_file():
            raise Killed
        real(path, tensors, metadata, before_rename)

    monkeypatch.setattr(checkpoint, "save_weights", killed_at_the_second_backbone)
    with pytest.raises(Killed):
        pretrain(cfg, tmp_path, train_set=demo_small, progress=False)
    monkeypatch.undo()
    tensors, info = checkpoint.read_checkpoint(tmp_path / "last.ckpt")
    assert info["epoch"] == 2 and json.loads((tmp_path / "last.json").read_text())["epoch"] == 1  # stale

    pretrain(cfg, tmp_path, resume=True, train_set=demo_small, progress=False)  # nothing left to train
    backbone = load_file(tmp_path / "backbone.safetensors")
    expected = checkpoint.backbone_state(tensors)
    assert backbone.keys() == expected.keys() and all(backbone[k].equal(v) for k, v in expected.items())
    assert not all(backbone[k].equal(v) for k, v in checkpoint._state(tensors, "method.backbone.").items())  # not live
    assert json.loads((tmp_path / "last.json").read_text())["epoch"] == 2
    assert [row["epoch"] for row in read_metrics(tmp_path)] == ["1", "2"]  # the lost row from the checkpoint
    assert float(read_metrics(tmp_path)[1]["loss"]) == pytest.approx(info["metrics"]["loss"], abs=1e-6)


def test_metrics_rows_after_the_checkpoint_are_dropped_on_resume(tmp_path, demo_small):
    cfg = load_config(base=TINY, overrides=["train.epochs=2"])
    pretrain(cfg, tmp_path, train_set=demo_small, progress=False, stop_after_epoch=1)
    with open(tmp_path / "metrics.csv", "a", newline="") as f:
        f.write("2,99.0,1.0,1.0\r\n3,99")  # a killed run's row after the checkpoint, and a torn line
    pretrain(cfg, tmp_path, resume=True, train_set=demo_small, progress=False)
    rows = read_metrics(tmp_path)
    assert [row["epoch"] for row in rows] == ["1", "2"] and float(rows[1]["loss"]) != 99.0


def test_a_missing_backbone_and_summary_are_rederived_from_the_checkpoint(tmp_path, demo_small):
    cfg = load_config(base=TINY, overrides=["train.epochs=1"])
    pretrain(cfg, tmp_path, train_set=demo_small, progress=False)
    expected = load_file(tmp_path / "backbone.safetensors")
    (tmp_path / "backbone.safetensors").unlink()
    (tmp_path / "last.json").write_text("{")  # torn
    pretrain(cfg, tmp_path, resume=True, train_set=demo_small, progress=False)
    backbone = load_file(tmp_path / "backbone.safetensors")
    assert all(backbone[k].equal(v) for k, v in expected.items())
    assert json.loads((tmp_path / "last.json").read_text())["epoch"] == 1


def test_atomic_write_syncs_the_file_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    from spatialssl import files

    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: events.append(("fsync", stat.S_ISDIR(os.fstat(fd).st_mode)))
                        or real_fsync(fd))
    monkeypatch.setattr(os, "replace", lambda *a: events.append(("replace",)) or real_replace(*a))
    files.atomic_write(tmp_path / "a.txt", lambda tmp: open(tmp, "w").write("whole"))
    assert events == [("fsync", False), ("replace",), ("fsync", True)]
    assert (tmp_path / "a.txt").read_text() == "whole"


def test_a_full_disk_at_the_metrics_log_is_one_line_and_resume_rebuilds_the_row(tmp_path, demo_small, monkeypatch):
    from spatialssl.engine import runlog

    append = runlog.append_csv

    def disk_full(path, row):  # when the epoch's row is written, after its checkpoint
        if path.name == "metrics.csv":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        append(path, row)

    cfg = load_config(base=TINY, overrides=["train.epochs=2"])
    with monkeypatch.context() as patched:
        patched.setattr(runlog, "append_csv", disk_full)
        with pytest.raises(DataError) as failed:
            pretrain(cfg, tmp_path, train_set=demo_small, progress=False)
    message = str(failed.value)
    assert message.startswith(f"cannot write {tmp_path / 'metrics.csv'} (No space left on device); the checkpoint "
                              "of epoch 1 is saved") and "--resume" in message and "\n" not in message
    pretrain(cfg, tmp_path, resume=True, train_set=demo_small, progress=False)
    assert [int(row["epoch"]) for row in read_metrics(tmp_path)] == [1, 2]


@needs_flock
def test_a_lock_file_that_cannot_be_opened_is_named(tmp_path, demo_small):
    (tmp_path / runfolder.LOCK_NAME).mkdir()  # unopenable as a file, even by root
    with pytest.raises(ConfigError, match=f"cannot open the lock file {tmp_path / runfolder.LOCK_NAME} "):
        untrained(tmp_path, demo_small)


def test_export_into_an_unwritable_place_or_a_full_disk_is_one_line(tmp_path, demo_small, monkeypatch):
    from spatialssl.commands.export import export

    run = untrained(tmp_path / "run", demo_small)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match=f"cannot write in the export folder {blocker}"):
        export(run, blocker / "backbone.safetensors")

    def disk_full(tensors, filename, metadata=None):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(checkpoint, "save_file", disk_full)
    with pytest.raises(DataError, match=f"cannot write {tmp_path / 'out.safetensors'} .*No space left.*export again"):
        export(run, tmp_path / "out.safetensors")
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith((".out", "out"))]


def test_overwrite_replaces_a_run_and_resume_with_overwrite_is_refused(tmp_path, demo_small):
    untrained(tmp_path, demo_small)
    (tmp_path / "linear_eval-old.json").write_text("{}")  # the replaced run's report goes with it
    with pytest.raises(ConfigError, match="already exists; pass --resume to continue it, --overwrite to replace"):
        untrained(tmp_path, demo_small)
    with pytest.raises(ConfigError, match="choose one"):
        untrained(tmp_path, demo_small, resume=True, overwrite=True)
    cfg = load_config(base=TINY, overrides=["train.epochs=2"])
    pretrain(cfg, tmp_path, train_set=demo_small, progress=False, overwrite=True)
    assert [int(r["epoch"]) for r in read_metrics(tmp_path)] == [1, 2]
    assert not (tmp_path / "linear_eval-old.json").exists()


def test_a_run_that_fails_before_its_first_checkpoint_leaves_the_folder_as_it_was(tmp_path, demo_small):
    bad = load_config(base=TINY, overrides=["method.patch_size=40"])  # larger than the 32 px images
    new = tmp_path / "new"
    with pytest.raises(ConfigError, match="patch_size"):
        pretrain(bad, new, train_set=demo_small, progress=False)
    assert not new.exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("kept")
    with pytest.raises(ConfigError, match="patch_size"):
        pretrain(bad, mine, train_set=demo_small, progress=False)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]

"""Preemption (issue 26): SIGTERM, SIGUSR1 and a first Ctrl-C let the step finish, write a checkpoint that
resumes mid-epoch, print one line and exit 75 (EX_TEMPFAIL, for a requeueing job script); `--resume` then
continues bit-exactly, as if the run had never stopped: data order, augmentation, optimiser, EMA, the metrics
of the interrupted epoch, and the labels a method made for the epoch (DeepCluster)."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import write_class_folders
from safetensors.torch import load_file

from spatialssl.cli import main
from spatialssl.engine import train
from spatialssl.engine.runlog import read_metrics

SETTINGS = ["model.backbone=resnet8", "train.batch_size=8", "train.knn_monitor=0", "train.log_every=1",
            "train.epochs=2", "train.deterministic=true"]
METHODS = {"rotation": ["method.name=rotation", "train.ema=0.9"],
           "deepcluster": ["method.name=deepcluster", "deepcluster.clusters=4", "deepcluster.pca_dim=0"]}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    rng = np.random.default_rng(0)
    return write_class_folders(tmp_path_factory.mktemp("preempt") / "data",
                               rng.integers(0, 256, (48, 16, 16, 3), dtype=np.uint8), np.arange(48) % 2)


def pretrain(out, folder, *options, flags=()):
    return main(["pretrain", "--data", str(folder), "--out", str(out), "--no-progress", *flags, *SETTINGS, *options])


def signalled_at(monkeypatch, number: int, at_step: int) -> None:
    """The process sends itself ``number`` during the ``at_step``-th optimiser step of the run."""
    real, taken = train.optimiser_step, []

    def step(run, x, y, precision):
        taken.append(1)
        if len(taken) == at_step:
            os.kill(os.getpid(), number)
        return real(run, x, y, precision)

    monkeypatch.setattr(train, "optimiser_step", step)


def same_weights(a, b) -> bool:
    ours, theirs = load_file(a / "last.ckpt"), load_file(b / "last.ckpt")
    return ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


@pytest.mark.parametrize("method, number", [("rotation", signal.SIGTERM), ("rotation", signal.SIGUSR1),
                                            ("rotation", signal.SIGINT), ("deepcluster", signal.SIGTERM)])
def test_a_stop_signal_checkpoints_mid_epoch_and_resume_is_exact(method, number, folder, tmp_path, monkeypatch,
                                                                  capsys):
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    assert pretrain(whole, folder, *METHODS[method]) == 0
    signalled_at(monkeypatch, number, at_step=8)  # epoch 2 (6 steps an epoch), its second step
    capsys.readouterr()
    assert pretrain(stopped, folder, *METHODS[method]) == 75
    err = capsys.readouterr().err.strip().splitlines()
    name = signal.Signals(number).name
    assert err == [f"stopped: stopped by {name} at epoch 2, step 2 of 6: {stopped / 'last.ckpt'} holds the run as "
                   "it was; --resume continues from that step exactly"]
    assert [row["epoch"] for row in read_metrics(stopped)] == ["1"]
    monkeypatch.undo()
    assert pretrain(stopped, folder, *METHODS[method], flags=["--resume"]) == 0
    assert same_weights(stopped, whole)
    rows = [read_metrics(run) for run in (whole, stopped)]
    assert [r["loss"] for r in rows[0]] == [r["loss"] for r in rows[1]]  # the interrupted epoch's mean too
    steps = [read_metrics(run, "steps.csv") for run in (whole, stopped)]
    assert [(r["step"], r["loss"]) for r in steps[0]] == [(r["step"], r["loss"]) for r in steps[1]]


def test_a_signal_during_the_last_step_of_an_epoch_stops_after_its_checkpoint(folder, tmp_path, monkeypatch, capsys):
    signalled_at(monkeypatch, signal.SIGTERM, at_step=6)
    assert pretrain(tmp_path / "run", folder, *METHODS["rotation"]) == 75
    assert "stopped by SIGTERM after epoch 1" in capsys.readouterr().err
    assert [row["epoch"] for row in read_metrics(tmp_path / "run")] == ["1"]


def test_a_second_ctrl_c_stops_at_once(folder, tmp_path, monkeypatch):
    real, taken = train.optimiser_step, []

    def step(run, x, y, precision):
        taken.append(1)
        if len(taken) == 2:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return real(run, x, y, precision)

    monkeypatch.setattr(train, "optimiser_step", step)
    assert pretrain(tmp_path / "run", folder, *METHODS["rotation"]) == 130
    assert not (tmp_path / "run").exists()  # stopped before its first checkpoint: nothing left behind


def test_sigterm_to_the_whole_job_with_decoding_workers(folder, tmp_path):
    """As Slurm's scancel does: the signal reaches the training process and its DataLoader workers at once."""
    out = tmp_path / "run"
    options = [*SETTINGS, *METHODS["rotation"], "data.stream=true", "data.workers=2", "data.image_size=16",
               "train.epochs=10"]
    job = subprocess.Popen([sys.executable, "-m", "spatialssl", "pretrain", "--data", str(folder), "--out", str(out),
                            "--no-progress", *options], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                           start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(read_rows(out / "steps.csv")) < 3:
        time.sleep(0.2)
    assert job.poll() is None, job.communicate()[1]  # still training
    os.killpg(job.pid, signal.SIGTERM)
    _, err = job.communicate(timeout=120)
    assert job.returncode == 75, err
    assert err.strip().splitlines()[-1].startswith("stopped: stopped by SIGTERM"), err
    assert main(["pretrain", "--out", str(out), "--resume", "--no-progress", "train.epochs=10"]) == 0


def read_rows(path):
    try:
        return path.read_text().splitlines()[1:]
    except FileNotFoundError:
        return []


DDP = ["method.name=rotation", "model.backbone=vit_tiny", "model.depth=1", "model.patch_size=8",
       "train.batch_size=16", "train.epochs=2", "train.knn_monitor=0", "train.device=cpu", "train.log_every=2"]


def _ddp_worker(rank: int, world: int, port: int, out: str, mode: str) -> None:
    from test_distributed import _join, _leave

    from spatialssl.data import make_demo_images
    from spatialssl.engine.config import load_config
    from spatialssl.errors import Interrupted

    _join(rank, world, port)
    data = make_demo_images(64, size=16, seed=4)
    if mode == "stop" and rank == 1:  # only this process is told, and not the one that writes
        real, taken = train.optimiser_step, []

        def step(run, x, y, precision):
            taken.append(1)
            if len(taken) == 6:  # epoch 2, step 2 of 4; the next logged step is its third
                os.kill(os.getpid(), signal.SIGTERM)
            return real(run, x, y, precision)

        train.optimiser_step = step
    try:
        train.pretrain(load_config(overrides=DDP), out, train_set=data, progress=False, resume=mode == "resume")
    except Interrupted as stopped:
        assert "at epoch 2, step 3 of 4" in str(stopped), stopped  # agreed at the next logged step
    _leave()


def test_one_process_of_two_told_to_stop_stops_both_and_resume_is_exact(tmp_path):
    import torch.multiprocessing as mp
    from test_distributed import _free_port

    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path / "whole"), "whole"), nprocs=2, join=True)
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path / "stopped"), "stop"), nprocs=2, join=True)
    assert [row["epoch"] for row in read_metrics(tmp_path / "stopped")] == ["1"]
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path / "stopped"), "resume"), nprocs=2, join=True)
    assert same_weights(tmp_path / "stopped", tmp_path / "whole")

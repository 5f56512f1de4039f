"""What a run reports: bars on a terminal, plain lines on a cluster, per-step scalars in steps.csv."""
import logging
import re
import subprocess
import sys

import pytest

from spatialssl.data import make_demo_images
from spatialssl.engine import progress as progress_module
from spatialssl.engine.config import load_config
from spatialssl.engine.runlog import append_csv, read_metrics
from spatialssl.engine.train import pretrain

TINY = ["model.backbone=resnet8", "method.patch_size=12", "train.batch_size=16", "train.epochs=2",
        "train.knn_monitor=0", "train.log_every=2"]


@pytest.fixture(scope="module")
def demo():
    return make_demo_images(80, seed=1)  # 5 steps an epoch


class Kept(logging.Handler):
    """The records the 'spatialssl' logger handles, whatever other tests did to logging before."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_without_a_terminal_progress_is_plain_log_lines_every_log_every_steps(tmp_path, demo, monkeypatch):
    monkeypatch.setattr(progress_module, "is_interactive", lambda: False)
    logger, kept = logging.getLogger("spatialssl"), Kept()
    monkeypatch.setattr(logger, "handlers", [kept])
    monkeypatch.setattr(logger, "propagate", False)
    logger.setLevel(logging.INFO)
    try:
        pretrain(load_config(overrides=TINY), tmp_path, train_set=demo, progress=True)
    finally:
        logger.setLevel(logging.NOTSET)
    lines = kept.lines
    steps = [line for line in lines if " step " in line]
    assert len(steps) == 2 * 3  # steps 1, 3 and the last (5) of each epoch
    assert re.fullmatch(r"epoch 1/2 step 1/5 loss \d+\.\d{4} lr [\d.e-]+ images/s \d+ eta \d+:\d\d:\d\d", steps[0])
    assert steps[-1].startswith("epoch 2/2 step 5/5") and steps[-1].endswith("eta 0:00:00")
    assert [line.split(":")[0] for line in lines if not " step " in line][-2:] == ["epoch 1/2", "epoch 2/2"]
    assert "\r" not in "".join(lines)


SCRIPT = """
import sys, spatialssl
from spatialssl.data import make_demo_images
cfg = spatialssl.load_config(overrides={overrides!r})
spatialssl.pretrain(cfg, sys.argv[1], train_set=make_demo_images(80, seed=1), progress=sys.argv[2] == "on")
"""


@pytest.mark.parametrize("progress", ["on", "off"])
def test_a_script_that_configures_no_logging_sees_the_lines_the_cli_prints(tmp_path, progress):
    script = SCRIPT.format(overrides=[*TINY, "train.epochs=1"])
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "run"), progress], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    if progress == "off":
        assert lines == []
        return
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d expected peak memory per process: .*", lines[1]), lines
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d epoch 1/1 step 1/5 loss .*", lines[2]), lines
    assert sum(" step " in line for line in lines) == 3 and lines[-1].split(" ", 2)[2].startswith("epoch 1/1: loss")


def test_the_cli_leaves_logging_as_it_found_it(tmp_path, capsys):
    from spatialssl.cli import main

    logger = logging.getLogger("spatialssl")
    before = list(logger.handlers), logger.propagate, logger.level
    assert main(["--log-level", "debug", "pretrain", "--config", "missing/recipe.yaml", "--out", str(tmp_path)]) == 2
    assert "missing/recipe.yaml does not exist" in capsys.readouterr().err
    assert (list(logger.handlers), logger.propagate, logger.level) == before


def test_logged_steps_go_to_steps_csv_and_resume_drops_the_unfinished_epochs(tmp_path, demo):
    cfg = load_config(overrides=TINY)
    pretrain(cfg, tmp_path, train_set=demo, progress=False, stop_after_epoch=1)
    append_csv(tmp_path / "steps.csv", {"epoch": 2, "step": 6, "loss": 9, "lr": 9, "images_per_s": 9})  # killed mid-epoch
    pretrain(cfg, tmp_path, train_set=demo, progress=False, resume=True)
    rows = read_metrics(tmp_path, "steps.csv")
    assert [(int(r["epoch"]), int(r["step"])) for r in rows] == [(1, 1), (1, 3), (1, 5), (2, 6), (2, 8), (2, 10)]
    assert float(rows[1]["lr"]) == cfg.optim.lr and float(rows[0]["images_per_s"]) > 0
    assert all(float(r["loss"]) != 9 for r in rows)
    assert [float(r["lr"]) for r in read_metrics(tmp_path)] == [cfg.optim.lr] * 2  # the epoch's last rate


def test_a_row_joins_the_columns_the_file_already_has(tmp_path):
    path = tmp_path / "metrics.csv"
    append_csv(path, {"epoch": 1, "loss": 0.5})  # a run started by an older version
    append_csv(path, {"epoch": 2, "loss": 0.4, "lr": 0.001})
    assert path.read_text().splitlines() == ["epoch,loss", "1,0.5", "2,0.4"]


def test_weights_and_biases_logs_offline_and_a_resume_continues_its_run(tmp_path, demo, monkeypatch):
    from spatialssl.engine import runlog

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    logged = []
    opened = runlog.open_wandb

    def spied(out_dir, config):  # the real offline run; what it is sent is noted on the way
        run = opened(out_dir, config)
        log = run.log
        monkeypatch.setattr(run, "log", lambda data, *a, **k: (logged.append(dict(data)), log(data, *a, **k))[1])
        return run

    monkeypatch.setattr(runlog, "open_wandb", spied)
    cfg = load_config(overrides=[*TINY, "train.logger=wandb"])
    pretrain(cfg, tmp_path, train_set=demo, progress=False, stop_after_epoch=1)
    run_id = (tmp_path / "wandb-id.txt").read_text()
    pretrain(cfg, tmp_path, train_set=demo, progress=False, resume=True)
    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(run.name.endswith(run_id) for run in runs)  # one W&B run, continued
    assert all((run / f"run-{run_id}.wandb").stat().st_size > 0 for run in runs)  # written, offline
    assert [d["global_step"] for d in logged if "global_step" in d] == [1, 3, 5, 6, 8, 10]
    assert [d["epoch"] for d in logged if "epoch" in d] == [1, 2] and "epoch/loss" in logged[-1]


def test_a_missing_wandb_is_named_with_its_extra(tmp_path, demo, monkeypatch):
    import sys

    from spatialssl.errors import ConfigError

    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ConfigError, match=r"pip install 'spatialssl\[wandb\]'"):
        pretrain(load_config(overrides=[*TINY, "train.logger=wandb"]), tmp_path, train_set=demo, progress=False)

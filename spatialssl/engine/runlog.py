"""Metrics to CSV and TensorBoard: per epoch (metrics.csv, TensorBoard's plain names) and at every
logged step (steps.csv with epoch, step, loss, lr, images/s; TensorBoard's ``step/*``)."""
from __future__ import annotations

import csv
import io
import os
import uuid
from pathlib import Path
from typing import Optional

from ..errors import optional_import, warn
from ..files import atomic_write, open_to_append, write_or_explain


def metrics_row(epoch: int, metrics: dict) -> dict:
    """Counts (the kNN monitor's k) stay integers; measures are rounded floats."""
    return {"epoch": epoch, **{k: v if isinstance(v, int) else round(float(v), 6) for k, v in metrics.items()}}


STEPS = "steps.csv"


class RunLog:
    def __init__(self, out_dir: Path, config: Optional[dict] = None):
        """``config`` (the run's, as a dict) chooses the loggers (``train.logger``) and is sent to W&B."""
        self.csv_path = Path(out_dir) / "metrics.csv"
        self.steps_path = Path(out_dir) / STEPS
        self.tb_dir = Path(out_dir) / "tensorboard"
        self._writer = None
        self._wandb = open_wandb(Path(out_dir), config) if (config or {}).get("train", {}).get("logger") == "wandb" else None

    def write(self, epoch: int, metrics: dict) -> None:
        """Append the epoch's row. Called after its checkpoint: a failed write loses nothing that
        ``--resume`` does not rebuild from it (``align_metrics``)."""
        advice = (f"the checkpoint of epoch {epoch} is saved; free space in (or fix the permissions of) "
                  f"{self.csv_path.parent} and continue with --resume")
        write_or_explain(self.csv_path, lambda: append_csv(self.csv_path, metrics_row(epoch, metrics)), advice)
        write_or_explain(self.tb_dir, lambda: self._add_scalars(epoch, metrics, ""), advice)
        if self._wandb is not None:
            self._wandb.log({"epoch": epoch, **{f"epoch/{k}": float(v) for k, v in metrics.items()}})

    def write_step(self, epoch: int, step: int, scalars: dict) -> None:
        """A logged step of 1-based ``epoch`` (``step`` counts from the run's start); TensorBoard gets
        ``step/<name>``. Rows after the checkpoint a run resumes from are dropped then (``align_metrics``)."""
        advice = f"free space in (or fix the permissions of) {self.steps_path.parent} and continue with --resume"
        row = {"epoch": epoch, "step": step, **{k: round(float(v), 6) for k, v in scalars.items()}}
        write_or_explain(self.steps_path, lambda: append_csv(self.steps_path, row), advice)
        write_or_explain(self.tb_dir, lambda: self._add_scalars(step, scalars, "step/"), advice)
        if self._wandb is not None:
            self._wandb.log({"global_step": step, **{f"step/{k}": float(v) for k, v in scalars.items()}})

    def _add_scalars(self, index: int, scalars: dict, prefix: str) -> None:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter  # slow import: only when logging

            self._writer = SummaryWriter(str(self.tb_dir))
        for key, value in scalars.items():
            self._writer.add_scalar(prefix + key, float(value), index)
        self._writer.flush()

    def close(self) -> None:
        if self._wandb is not None:
            self._wandb.finish()
        if self._writer is not None:
            try:
                self._writer.close()
            except OSError as err:  # in a finally: must not hide the error that ended the run
                warn(f"could not finish the TensorBoard log in {self.tb_dir} ({err.strerror or err})")


WANDB_ID = "wandb-id.txt"


def open_wandb(out_dir: Path, config: dict):
    """A Weights & Biases run for ``out_dir``: named after the folder, its files inside it, the run's
    config attached; a resumed run continues the same W&B run (its id is kept in the folder). The
    project is $WANDB_PROJECT (default "spatialssl"); $WANDB_MODE=offline logs without a network."""
    wandb = optional_import("wandb", "wandb", "train.logger=wandb")
    id_file = out_dir / WANDB_ID
    run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:8]
    atomic_write(id_file, lambda tmp: Path(tmp).write_text(run_id))
    return wandb.init(project=os.environ.get("WANDB_PROJECT", "spatialssl"), name=out_dir.name, id=run_id,
                      resume="allow", dir=str(out_dir), config=config)


def append_csv(path: Path, row: dict) -> None:
    """Append ``row`` under the file's own header (a run resumed from an older version keeps its columns;
    a value without a column is left out), or start the file with ``row``'s."""
    header = _header(path)
    with open_to_append(path) as f:
        writer = csv.DictWriter(f, fieldnames=header or list(row), extrasaction="ignore")
        if header is None:
            writer.writeheader()
        writer.writerow(row)


def _header(path: Path):
    """The column names of an existing CSV file, else None (its first line only: steps.csv grows long)."""
    try:
        with open(path, newline="") as f:
            return next(csv.reader([f.readline()]), None)
    except FileNotFoundError:
        return None


def read_metrics(out_dir: Path, name: str = "metrics.csv") -> list:
    with open(Path(out_dir) / name, newline="") as f:
        return list(csv.DictReader(f))


def align_metrics(out_dir: Path, epoch: int, metrics: dict, global_step: Optional[int] = None) -> None:
    """Make metrics.csv hold one row per epoch up to the checkpoint's ``epoch``, as a resumed run
    continues from it: rows after it (or a line torn by a kill) are dropped, and the checkpoint's own
    row, lost when a run was killed between the checkpoint and the log, is written from its ``metrics``.
    steps.csv loses its rows of the epochs after the checkpoint, which the run will train again (of a
    checkpoint written mid-epoch, the rows after its ``global_step``)."""
    _align(Path(out_dir) / "metrics.csv", epoch, metrics)
    _align(Path(out_dir) / STEPS, epoch, {}, global_step)


def _align(path: Path, epoch: int, metrics: dict, global_step: Optional[int] = None) -> None:
    text = _read_text(path)
    lines = [line for line in text.splitlines(keepends=True) if line.endswith("\n")]  # a torn last line ends without
    row = metrics_row(epoch, metrics)
    header = lines[0] if lines else _csv_line(list(row), {k: k for k in row})
    kept = (lambda line: (_column(line, 0) or 0) <= epoch) if global_step is None else (
        lambda line: (_column(line, 1) or global_step + 1) <= global_step)
    rows = [line for line in lines[1:] if kept(line)]
    if metrics and not any(_column(line, 0) == epoch for line in rows):
        rows.append(_csv_line(next(csv.reader([header])), row))
    aligned = "".join([header, *rows]) if lines or rows else text
    if aligned != text:
        atomic_write(path, lambda tmp: _write_text(tmp, aligned))


def _read_text(path: Path) -> str:
    """The file as written (the csv module's \\r\\n line ends kept); "" when there is none."""
    try:
        with open(path, newline="") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def _write_text(path, text: str) -> None:
    with open(path, "w", newline="") as f:
        f.write(text)


def _column(line: str, index: int):
    """The integer in column ``index`` of a CSV line (epoch 0, steps.csv's step 1), None when there is none."""
    try:
        return int(line.split(",")[index])
    except (ValueError, IndexError):
        return None


def _csv_line(fieldnames: list, row: dict) -> str:
    """``row`` as one CSV line of ``fieldnames``' columns (the same metrics every epoch; a missing one left empty)."""
    buffer = io.StringIO()
    csv.DictWriter(buffer, fieldnames=fieldnames, extrasaction="ignore").writerow(row)
    return buffer.getvalue()

"""Per-epoch metrics to CSV and TensorBoard."""
from __future__ import annotations

import csv
import io
from pathlib import Path

from ..errors import warn
from ..files import atomic_write, write_or_explain


def metrics_row(epoch: int, metrics: dict) -> dict:
    return {"epoch": epoch, **{k: round(float(v), 6) for k, v in metrics.items()}}


class RunLog:
    def __init__(self, out_dir: Path):
        self.csv_path = Path(out_dir) / "metrics.csv"
        self.tb_dir = Path(out_dir) / "tensorboard"
        self._writer = None

    def write(self, epoch: int, metrics: dict) -> None:
        """Append the epoch's row. Called after its checkpoint: a failed write loses nothing that
        ``--resume`` does not rebuild from it (``align_metrics``)."""
        advice = (f"the checkpoint of epoch {epoch} is saved; free space in (or fix the permissions of) "
                  f"{self.csv_path.parent} and continue with --resume")
        write_or_explain(self.csv_path, lambda: self._append_csv(metrics_row(epoch, metrics)), advice)
        write_or_explain(self.tb_dir, lambda: self._add_scalars(epoch, metrics), advice)

    def _append_csv(self, row: dict) -> None:
        exists = self.csv_path.is_file()
        with open(self.csv_path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if not exists:
                writer.writeheader()
            writer.writerow(row)

    def _add_scalars(self, epoch: int, metrics: dict) -> None:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter  # slow import: only when logging

            self._writer = SummaryWriter(str(self.tb_dir))
        for key, value in metrics.items():
            self._writer.add_scalar(key, float(value), epoch)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            except OSError as err:  # in a finally: must not hide the error that ended the run
                warn(f"could not finish the TensorBoard log in {self.tb_dir} ({err.strerror or err})")


def read_metrics(out_dir: Path) -> list:
    with open(Path(out_dir) / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def align_metrics(out_dir: Path, epoch: int, metrics: dict) -> None:
    """Make metrics.csv hold one row per epoch up to the checkpoint's ``epoch``, as a resumed run
    continues from it: rows after it (or a line torn by a kill) are dropped, and the checkpoint's own
    row, lost when a run was killed between the checkpoint and the log, is written from its ``metrics``."""
    path = Path(out_dir) / "metrics.csv"
    text = _read_text(path)
    lines = [line for line in text.splitlines(keepends=True) if line.endswith("\n")]  # a torn last line ends without
    row = metrics_row(epoch, metrics)
    header = lines[0] if lines else _csv_line(list(row), {k: k for k in row})
    rows = [line for line in lines[1:] if (_epoch_of(line) or 0) <= epoch]
    if metrics and not any(_epoch_of(line) == epoch for line in rows):
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


def _epoch_of(line: str):
    try:
        return int(line.split(",", 1)[0])
    except ValueError:
        return None


def _csv_line(fieldnames: list, row: dict) -> str:
    """``row`` as one CSV line of ``fieldnames``' columns (the same metrics every epoch; a missing one left empty)."""
    buffer = io.StringIO()
    csv.DictWriter(buffer, fieldnames=fieldnames, extrasaction="ignore").writerow(row)
    return buffer.getvalue()

"""Per-epoch metrics to CSV and TensorBoard."""
from __future__ import annotations

import csv
from pathlib import Path


class RunLog:
    def __init__(self, out_dir: Path):
        self.csv_path = Path(out_dir) / "metrics.csv"
        self.tb_dir = Path(out_dir) / "tensorboard"
        self._writer = None

    def write(self, epoch: int, metrics: dict) -> None:
        row = {"epoch": epoch, **{k: round(float(v), 6) for k, v in metrics.items()}}
        exists = self.csv_path.is_file()
        with open(self.csv_path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if not exists:
                writer.writeheader()
            writer.writerow(row)
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter  # slow import: only when logging

            self._writer = SummaryWriter(str(self.tb_dir))
        for key, value in metrics.items():
            self._writer.add_scalar(key, float(value), epoch)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def read_metrics(out_dir: Path) -> list:
    with open(Path(out_dir) / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))

"""What a run tells its user while it trains: a progress bar on a terminal; on a cluster (output to a
file) plain lines every ``train.log_every`` steps through Python logging (logger ``spatialssl``), or,
where the program configured no logging (a script calling ``spatialssl.pretrain``), on standard output
as the CLI prints them."""
from __future__ import annotations

import datetime
import logging
import sys
import time
from typing import Optional

from tqdm import tqdm

log = logging.getLogger("spatialssl")


def is_interactive() -> bool:
    """A terminal (or a notebook) shows a bar that redraws in place; a log file would fill with them."""
    return sys.stderr.isatty() or "ipykernel" in sys.modules


def report(text: str) -> None:
    """One plain line: to the ``spatialssl`` logger when anything would handle it (the CLI's handler, the
    program's logging configuration, which then decides), else printed with a time stamp, as the CLI does."""
    if log.hasHandlers():
        log.info(text)
    else:
        print(f"{datetime.datetime.now():%Y-%m-%d %H:%M:%S} {text}", flush=True)


class Progress:
    def __init__(self, enabled: bool, epochs: int, steps: int, interactive: Optional[bool] = None):
        self.enabled, self.epochs, self.steps = enabled, epochs, steps
        self.interactive = is_interactive() if interactive is None else interactive
        self._bar, self._epoch, self._started = None, 0, 0.0

    def note(self, text: str) -> None:
        if not self.enabled:
            return
        if self.interactive:
            tqdm.write(text)
        else:
            report(text)

    def start_epoch(self, epoch: int) -> None:
        self._epoch, self._started = epoch, time.perf_counter()
        if self.enabled and self.interactive:
            self._bar = tqdm(total=self.steps, desc=f"epoch {epoch + 1}/{self.epochs}", unit="step", leave=False,
                             dynamic_ncols=True)

    def step(self, step: int, scalars: Optional[dict] = None) -> None:
        """After every step; ``scalars`` (loss, lr, images_per_s) at the steps that are logged."""
        if self._bar is not None:
            self._bar.update()
            if scalars:
                self._bar.set_postfix(loss=f"{scalars['loss']:.4f}", img_s=f"{scalars['images_per_s']:.0f}")
        elif self.enabled and scalars:
            report(f"epoch {self._epoch + 1}/{self.epochs} step {step + 1}/{self.steps} loss {scalars['loss']:.4f} "
                     f"lr {scalars['lr']:.3g} images/s {scalars['images_per_s']:.0f} eta {self.eta(step)}")

    def eta(self, step: int) -> str:
        """Time left for the whole run at this epoch's pace so far."""
        per_step = (time.perf_counter() - self._started) / (step + 1)
        left = (self.steps - step - 1) + (self.epochs - self._epoch - 1) * self.steps
        return str(datetime.timedelta(seconds=round(per_step * left)))

    def end_epoch(self, summary: dict) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self.note(f"epoch {self._epoch + 1}/{self.epochs}: " + ", ".join(f"{k} {v:.4g}" for k, v in summary.items()))

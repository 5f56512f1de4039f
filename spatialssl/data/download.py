"""``--download``: fetch CIFAR-10/100 or STL-10 with torchvision's downloader (imported only here).

Under torchrun only the first process of each machine (LOCAL_RANK 0) downloads; the others wait for the
marker it writes when the data is complete, instead of all writing the same files at once."""
from __future__ import annotations

import os
import time
from pathlib import Path

from ..errors import ConfigError, DataError
from ..files import atomic_write

DOWNLOADABLE = {"cifar10": "CIFAR10", "cifar100": "CIFAR100", "stl10": "STL10"}
POLL_S = 1.0


def done_marker(dataset: str, root: Path) -> Path:
    return Path(root) / f".spatialssl-downloaded-{dataset}"


def download(dataset: str, root: Path) -> None:
    if dataset not in DOWNLOADABLE:
        raise ConfigError(f"--download needs data.dataset set to one of {', '.join(DOWNLOADABLE)}, got {dataset!r}")
    marker = done_marker(dataset, root)
    if int(os.environ.get("LOCAL_RANK", "0")) != 0:  # torchrun ends the job if the downloading process fails
        while not marker.is_file():
            time.sleep(POLL_S)
        return
    try:
        import torchvision.datasets as tvd
    except Exception as err:
        raise DataError(f"--download uses torchvision, which cannot be imported here ({err}); "
                        "install it with `pip install torchvision` or download the data by hand") from None
    root.mkdir(parents=True, exist_ok=True)
    cls = getattr(tvd, DOWNLOADABLE[dataset])
    try:
        if dataset == "stl10":
            cls(str(root), split="train+unlabeled", download=True)
        else:
            cls(str(root), train=True, download=True)
    except Exception as err:
        raise DataError(f"downloading {dataset} into {root} failed: {err}") from None
    atomic_write(marker, lambda tmp: Path(tmp).write_text(f"{dataset} downloaded by torchvision\n"))

"""``--download``: fetch CIFAR-10/100 or STL-10 with torchvision's downloader (imported only here)."""
from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError, DataError

DOWNLOADABLE = {"cifar10": "CIFAR10", "cifar100": "CIFAR100", "stl10": "STL10"}


def download(dataset: str, root: Path) -> None:
    if dataset not in DOWNLOADABLE:
        raise ConfigError(f"--download needs data.dataset set to one of {', '.join(DOWNLOADABLE)}, got {dataset!r}")
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

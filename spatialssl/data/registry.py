"""Input formats that are one registered reader class each. ``load_data`` asks the registered readers first,
in registration order, whether they read a ``--data`` path; the layouts of readers.py (CIFAR, STL-10,
tiny-ImageNet, image folders, .npz), older than the registry, keep their own detection after them.

A new format is one ``Reader`` subclass in its own module of data/, decorated with ``@register``, and that
module's import in data/__init__.py, so that it is registered whichever part of data/ is imported first."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from .stream import ImageStream, one_lists, stream_of


class Reader:
    """One input format. ``list`` finds a split's items without decoding; a streaming reader's ``load`` is then
    always the same: an ImageStream of them (data.image_size is needed)."""
    layout = ""  # its name in a checkpoint's data record and in the model card
    streams = True  # read by index through ImageStream; a reader of whole arrays overrides ``load``
    listed_by_one = True  # under torchrun one process lists the split and hands it to the others

    @classmethod
    def detects(cls, path: Path) -> bool:
        """Whether ``path`` (``--data`` as given, ~ expanded) is this format."""
        raise NotImplementedError

    @classmethod
    def list(cls, path: Path, split: str, cache: bool = True) -> tuple:
        """(ItemSource, int64 labels or None, class names, a description for messages) of ``split``, or
        MissingSplit when the data has no such split; ``cache`` (data.cache): whether a listing may be kept
        between runs."""
        raise NotImplementedError

    @classmethod
    def load(cls, path: Path, split: str, options) -> ImageStream:
        """``split`` of ``path`` read as the config's data section (``options``) says."""
        args = (path, split, options.cache)
        listing = one_lists(cls.list, *args) if cls.listed_by_one else cls.list(*args)
        return stream_of(*listing, cls.layout, options, f"--data {path} ({cls.layout}) is streamed: it needs")


READERS: list = []


def register(reader: type) -> type:
    READERS.append(reader)
    return reader


def reader_for(path) -> Optional[type]:
    """The first registered reader that detects ``path``, or None (the layouts of readers.py then)."""
    path = Path(str(path)).expanduser()
    return next((reader for reader in READERS if reader.detects(path)), None)

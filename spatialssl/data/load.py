"""The data a run reads, as its config names it: images (ImageSet, or ImageStream when streaming) or
signals (SignalSet) for 1-D backbones, and the labelled subsets of the per-epoch kNN monitor. The registered
readers (registry.py) are asked first; the layouts of readers.py after them."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from ..errors import ConfigError, DataError, MissingSplit, SpatialSSLError, warn
from ..models import modality
from .classes import numbered_as
from .imageset import ImageSet
from .readers import load_images, streams
from .registry import reader_for
from .signals import changed_options, load_signals
from .stream import stream_folder


def load_data(cfg, split: str, path=None):
    """``split`` of ``path`` (default ``data.path``): an ImageSet, or a SignalSet for 1-D backbones."""
    d = cfg.data
    path = path or d.path
    if path is None:
        raise ConfigError("no data: pass --data PATH (or data.path=PATH)")
    if modality(cfg.model.backbone) == "signals":
        return load_signals(path, split, cfg.signal)
    ignored = changed_options(cfg.signal)
    if ignored:
        warn(f"{', '.join(ignored)} do not apply to {cfg.model.backbone}: signal.* options read recordings for "
             "1-D backbones (vit1d_*); they are ignored for images")
    reader = reader_for(path)
    if reader is not None:
        return reader.load(Path(str(path)).expanduser(), split, d)
    if d.stream and streams(path):
        return stream_folder(path, split, d)
    if d.decode == "gpu":
        warn(f"data.decode=gpu decodes streamed batches; {path} is read whole, decoded once by Pillow")
    return load_images(path, split, d.labels, d.image_size, d.cache, d.resize, d.channels, d.layout)


LABELLED_SPLITS = ("give labelled train and test splits: a .npz of train_images, train_labels, test_images and "
                   "test_labels, or a folder of train/ and test/ (or val/), each with one sub-folder per class "
                   "(or of train-*.tar and test-*.tar shards with .cls labels)")


def load_labelled(cfg, splits: tuple, purpose: str, path=None) -> list:
    """The ``splits`` of ``path`` (default ``data.path``), each with labels, or one error saying that
    ``purpose`` needs labelled train and test splits and how to give them."""
    try:
        sets = [load_data(cfg, split, path) for split in splits]
    except MissingSplit as err:
        raise DataError(f"{purpose} needs labelled train and test splits, but {err.what}; {LABELLED_SPLITS}") from None
    for data in sets:
        if data.labels is None:
            raise DataError(f"{purpose} needs labelled train and test splits, but {data.source} has no labels; "
                            f"{LABELLED_SPLITS}")
    return [sets[0], *(numbered_as(data, sets[0].classes, sets[0].source, purpose) for data in sets[1:])]


def load_training_data(cfg):
    return load_data(cfg, cfg.data.split)


def load_monitor_data(cfg, train_set: ImageSet) -> Optional[tuple]:
    """(train subset, test subset) with labels for the kNN monitor, or None if unavailable; of a stream,
    streams of the subsets' files."""
    if cfg.train.knn_monitor <= 0 or train_set.labels is None or cfg.data.path is None:
        return None
    try:
        test_set = load_data(cfg, cfg.data.test_split)
    except SpatialSSLError:
        return None
    if test_set.labels is None:
        return None
    try:
        test_set = numbered_as(test_set, train_set.classes, train_set.source, "the kNN monitor")
    except DataError as err:
        warn(f"no kNN monitor: {err}")
        return None
    n = cfg.train.knn_monitor
    return train_set.subset(n, seed=1), test_set.subset(n, seed=2)


def low_label(train, test, subjects: int, seed: int = 0):
    """The epochs of ``subjects`` randomly chosen training subjects (the paper's low-label
    regime); refuses when a subject is in both splits."""
    if getattr(train, "subjects", None) is None or getattr(test, "subjects", None) is None:
        raise DataError(f"a subject-limited run needs subject ids; {train.source} has none "
                        "(store 'subjects' in the .npz, or read WFDB/EDF folders)")
    shared = set(train.subject_ids()) & set(test.subject_ids())
    if shared:
        raise DataError(f"subjects {sorted(shared)[:5]} are in both the training and the test split of "
                        f"{train.source}; a low-label evaluation must hold them out")
    ids = train.subject_ids()
    if subjects > len(ids):
        raise DataError(f"finetune.subjects={subjects} but {train.source} has only {len(ids)} training subjects")
    order = torch.randperm(len(ids), generator=torch.Generator().manual_seed(seed)).tolist()
    return train.of_subjects([ids[i] for i in order[:subjects]])

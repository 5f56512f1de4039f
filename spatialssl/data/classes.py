"""Labels matched by class name across the splits of a data set: each split's readers number its own classes
(train/{a,c} makes c label 1, test/{a,b,c} makes it 2), so a split scored against another is renumbered by
name first, and a class the other does not know is refused, never guessed."""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ..errors import DataError


def numbered_as(data, classes: list, reference: str, purpose: str):
    """``data`` (an ImageSet, ImageStream or SignalSet) with its labels numbered as ``classes`` (the class names
    of ``reference``, e.g. the training split); unchanged where it has no labels or no names. A class of
    ``data`` that ``classes`` lacks stops ``purpose`` with one error naming it."""
    own = list(data.classes)
    if data.labels is None or not own or not classes or own == list(classes):
        return data
    unknown = [name for name in own if name not in classes]
    if unknown:
        shown = ", ".join(repr(name) for name in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise DataError(f"{data.source} has classes {reference} does not ({shown}): {purpose} cannot score a class "
                        f"it never trained on; remove them from that split, or add them to {reference}")
    position = {name: i for i, name in enumerate(classes)}
    mapping = torch.tensor([position[name] for name in own], dtype=torch.int64)
    if hasattr(data, "labels_array"):  # a stream keeps its labels as a numpy array
        return dataclasses.replace(data, labels_array=mapping.numpy()[data.labels_array].astype(np.int64),
                                   classes=list(classes))
    return dataclasses.replace(data, labels=mapping[data.labels], classes=list(classes))


def joined_classes(splits: list) -> list:
    """The class names of several splits read as one (data.split=train+val): their union, sorted as class
    folders are."""
    return sorted({name for split in splits for name in split.classes})

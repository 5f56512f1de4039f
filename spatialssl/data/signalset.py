"""SignalSet: multichannel 1-D epochs (e.g. 30 s of EEG) as one float tensor, with labels
and the subject (recording) each epoch came from."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch


@dataclass
class SignalSet:
    signals: torch.Tensor  # float32, N x C x T
    labels: Optional[torch.Tensor] = None  # int64, N
    subjects: Optional[torch.Tensor] = None  # int64, N: which subject / recording
    classes: list = field(default_factory=list)
    channels: list = field(default_factory=list)
    sampling_rate: float = 0.0
    source: str = ""

    def __post_init__(self):
        # ValueError: a caller's mistake. Readers check the files first and name them in a DataError.
        if self.signals.dtype != torch.float32 or self.signals.ndim != 3:
            raise ValueError(f"SignalSet needs float32 N x C x T signals, got {self.signals.dtype} "
                             f"{tuple(self.signals.shape)}")
        for name in ("labels", "subjects"):
            value = getattr(self, name)
            if value is not None and len(value) != len(self.signals):
                raise ValueError(f"{len(value)} {name} for {len(self.signals)} epochs in {self.source}")

    def __len__(self) -> int:
        return len(self.signals)

    @property
    def tensor(self) -> torch.Tensor:
        return self.signals

    @property
    def input_size(self) -> tuple:
        return (self.signals.shape[-1],)

    @property
    def num_channels(self) -> int:
        return self.signals.shape[1]

    @property
    def num_classes(self) -> int:
        if self.classes:
            return len(self.classes)
        return int(self.labels.max()) + 1 if self.labels is not None else 0

    def select(self, index: torch.Tensor, note: str) -> "SignalSet":
        pick = lambda t: None if t is None else t[index]  # noqa: E731
        return SignalSet(self.signals[index], pick(self.labels), pick(self.subjects), self.classes, self.channels,
                         self.sampling_rate, f"{self.source} ({note})")

    def subset(self, count: int, seed: int = 0) -> "SignalSet":
        """A fixed random subset of epochs, or everything if count >= len."""
        if count >= len(self):
            return self
        index = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:count].sort().values
        return self.select(index, f"subset of {count}")

    def subject_ids(self) -> list:
        return [] if self.subjects is None else sorted(set(self.subjects.tolist()))

    def of_subjects(self, subjects) -> "SignalSet":
        """Only the epochs of the given subjects."""
        wanted = torch.tensor(sorted(subjects))
        return self.select(torch.isin(self.subjects, wanted).nonzero().squeeze(1), f"{len(wanted)} subjects")

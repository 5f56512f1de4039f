"""The embedded default for signals: generated multichannel epochs whose five classes
differ in temporal structure, from subjects that differ in amplitude and noise.

Two motifs, a slow wave burst (A, 2 Hz) and a fast spindle (B, 12 Hz), are placed in a
noisy background: 0 = A early, 1 = A late, 2 = A then B, 3 = B then A, 4 = B alone. Telling
0 from 1 and 2 from 3 needs to know *where* and *in which order* things happen. Under
everything runs a weak rhythm that speeds up from 1 to 6 Hz over the epoch (as EEG changes
over a night), so a window's content tells roughly where in the epoch it lies: PART's
pretext is learnable, as the sky-above-ground regularities of photographs are."""
from __future__ import annotations

import numpy as np
import torch

from .signals import instance_normalize
from .signalset import SignalSet

CLASSES = ["A early", "A late", "A then B", "B then A", "B alone"]
RATE, SECONDS, CHANNELS = 50, 10, 2


def _motif(kind: str, rate: int) -> np.ndarray:
    t = np.arange(int(1.5 * rate if kind == "A" else rate)) / rate
    envelope = np.sin(np.pi * t / t[-1]) ** 2
    return envelope * (2.0 * np.sin(2 * np.pi * 2 * t) if kind == "A" else 1.2 * np.sin(2 * np.pi * 12 * t))


def make_demo_signals(subjects: range, epochs_per_subject: int = 40, seed: int = 0) -> SignalSet:
    length = RATE * SECONDS
    out, labels, owners = [], [], []
    for subject in subjects:
        rng = np.random.default_rng(seed * 10_000 + subject)
        gain, noise, lag = rng.uniform(0.6, 1.4), rng.uniform(0.3, 0.7), rng.integers(2, 8)
        for _ in range(epochs_per_subject):
            label = int(rng.integers(len(CLASSES)))
            background = np.cumsum(rng.normal(0, noise, size=(CHANNELS, length)), axis=1)
            background -= np.linspace(background[:, 0], background[:, -1], length, axis=1)  # no drift
            t = np.arange(length) / RATE
            rhythm = np.sin(2 * np.pi * (t + 2.5 * t ** 2 / SECONDS) + rng.uniform(0, 2 * np.pi))
            x = 0.15 * background + rng.normal(0, noise, size=(CHANNELS, length)) + 0.8 * gain * rhythm
            early, late = rng.uniform(0.05, 0.35) * length, rng.uniform(0.6, 0.8) * length
            events = {0: [("A", early)], 1: [("A", late)], 2: [("A", early), ("B", late)],
                      3: [("B", early), ("A", late)], 4: [("B", rng.uniform(0.05, 0.8) * length)]}[label]
            for kind, start in events:
                motif = gain * _motif(kind, RATE)
                s = int(start)
                x[0, s:s + len(motif)] += motif[: length - s]
                x[1, s + lag:s + lag + len(motif)] += 0.6 * motif[: max(0, length - s - lag)]
            out.append(x)
            labels.append(label)
            owners.append(subject)
    return SignalSet(instance_normalize(torch.tensor(np.stack(out), dtype=torch.float32)), torch.tensor(labels), torch.tensor(owners),
                     list(CLASSES), ["ch1", "ch2"], float(RATE), f"demo signals (subjects {subjects.start}-{subjects.stop - 1})")


def demo_signal_splits(train_subjects: int = 16, test_subjects: int = 4, epochs_per_subject: int = 40) -> tuple:
    """Train and test epochs from disjoint subjects."""
    return (make_demo_signals(range(train_subjects), epochs_per_subject),
            make_demo_signals(range(train_subjects, train_subjects + test_subjects), epochs_per_subject))

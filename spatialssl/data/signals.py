"""Readers of multichannel recordings into a SignalSet of fixed-length epochs with labels.

Layouts (``--data``):
  npz    a ``.npz`` file with ``signals`` (N x C x T, float) [+ ``labels``, ``subjects``,
         ``sampling_rate``], or ``train_signals`` / ``test_signals`` [+ ``train_labels`` ...]
  wfdb   a folder of WFDB records (``*.hea`` + signal files), sleep stages read from an
         annotation file per record (PhysioNet 2018: ``.arousal``, stages in aux_note)
  edf    a folder of EDF/EDF+ files; stages from the file's own EDF+ annotations or from a
         hypnogram file (``*Hypnogram*.edf``, matched by the name before '-' minus its
         last character, as in Sleep-EDF: SC4001E0-PSG.edf / SC4001EC-Hypnogram.edf)

A folder's recordings are its subjects: a fixed ``test_fraction`` of them is the test
split, so no subject is in both. Each recording is band-pass filtered and resampled
(scipy) before it is cut into epochs; epochs without a sleep stage are dropped.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from fractions import Fraction
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from ..errors import ConfigError, DataError, optional_import, warn
from ..files import native_output_captured
from ..options import option
from .arrays import check_labels, check_per_item, npz_array, open_npz
from .signalset import SignalSet

SLEEP_STAGES = ["W", "N1", "N2", "N3", "R"]
NPZ_LAYOUT = ("store 'signals' (float N x C x T) with optional 'labels' and 'subjects' (one integer per epoch) and "
              "'sampling_rate' (Hz), split into train/test by subject; or your own split as 'train_signals', "
              "'train_labels', 'train_subjects' and 'test_signals', 'test_labels', 'test_subjects'")
# Options that select, filter and cut recordings: an .npz holds epochs already cut.
RECORDING_OPTIONS = ("channels", "bandpass", "sampling_rate", "epoch_seconds", "annotation")
_STAGE_NAMES = {"w": "W", "wake": "W", "sleep stage w": "W", "n1": "N1", "sleep stage 1": "N1", "sleep stage n1": "N1",
                "n2": "N2", "sleep stage 2": "N2", "sleep stage n2": "N2", "n3": "N3", "n4": "N3",
                "sleep stage 3": "N3", "sleep stage 4": "N3", "sleep stage n3": "N3", "r": "R", "rem": "R",
                "sleep stage r": "R"}


@dataclass
class SignalOptions:
    """How recordings (WFDB, EDF, npz) become epochs; used by the 1-D backbones (vit1d_*). The ``signal``
    section of a run's config."""
    sampling_rate: Optional[float] = option(100.0, "resample every recording to this rate (Hz); null keeps the files'",
                                            range="> 0")
    channels: Optional[list] = option(None, "channel names to keep, in this order; null: all")
    bandpass: Optional[list] = option([0.1, 30.0], "band-pass filter [low, high] in Hz, low < high, before "
                                                   "resampling; null: off", range=">= 0", length=2)
    epoch_seconds: float = option(30.0, "length of an epoch in seconds", range="> 0")
    expected_rate: Optional[float] = option(None, "refuse recordings recorded at another rate (Hz); null: any rate",
                                            range="> 0")
    annotation: str = option("arousal", "WFDB annotation extension holding the sleep stages")
    test_fraction: float = option(0.2, "share of recordings (subjects) held out as the test split", range="(0, 1)")
    instance_norm: bool = option(True, "normalise each epoch per channel (mean 0, std 1)")


def stage_of(text: str) -> Optional[str]:
    return _STAGE_NAMES.get(text.strip().lower())


def epoch_labels(events: list, count: int, seconds: float, source: str) -> np.ndarray:
    """Per-epoch stage index (-1 where none) from (onset s, duration s or None, stage) events,
    each lasting its duration or, without one, until the next event. An epoch takes the
    stage in effect at its midpoint."""
    events = sorted(events)
    labels = np.full(count, -1, dtype=np.int64)
    if not events:
        return labels
    for i, (onset, duration, stage) in enumerate(events):
        end = onset + duration if duration else (events[i + 1][0] if i + 1 < len(events) else count * seconds)
        first = max(0, math.ceil(onset / seconds - 0.5))
        last = min(count, math.ceil(end / seconds - 0.5))
        labels[first:last] = SLEEP_STAGES.index(stage)
    if (labels < 0).all():
        raise DataError(f"the sleep-stage annotations of {source} do not overlap its recording "
                        f"({count} epochs of {seconds:g} s); check that they belong to this record")
    return labels


def preprocess(data: np.ndarray, rate: float, options: SignalOptions, source: str) -> tuple:
    """Band-pass then resample C x T ``data``; returns (data, new rate)."""
    signal = optional_import("scipy.signal", "signals", "band-pass filtering and resampling recordings")

    target = options.sampling_rate or rate
    if options.bandpass:
        low, high = options.bandpass
        if not 0 < low < high < min(rate, target) / 2:
            raise ConfigError(f"signal.bandpass {list(options.bandpass)} Hz must lie below half of the sampling rate "
                              f"({min(rate, target):g} Hz for {source})")
        sos = signal.butter(4, [low, high], btype="bandpass", fs=rate, output="sos")
        data = signal.sosfiltfilt(sos, data, axis=-1)
    if target != rate:
        ratio = Fraction(target / rate).limit_denominator(1000)
        data = signal.resample_poly(data, ratio.numerator, ratio.denominator, axis=-1)
    return data.astype(np.float32), target


def to_epochs(data: np.ndarray, rate: float, seconds: float, source: str) -> np.ndarray:
    length = int(round(seconds * rate))
    count = data.shape[-1] // length
    if count == 0:
        raise DataError(f"{source} lasts {data.shape[-1] / rate:.1f} s, shorter than one {seconds:g} s epoch")
    return data[:, : count * length].reshape(data.shape[0], count, length).transpose(1, 0, 2)


def pick_channels(names: list, wanted: Optional[Sequence[str]], source: str) -> list:
    if wanted is None:
        return list(range(len(names)))
    missing = [c for c in wanted if c not in names]
    if missing:
        raise DataError(f"{source} has no channel {', '.join(missing)}; it has {', '.join(names)} "
                        "(set signal.channels)")
    return [names.index(c) for c in wanted]


def check_rate(rate: float, options: SignalOptions, source: str) -> None:
    if options.expected_rate and abs(rate - options.expected_rate) > 1e-6:
        raise DataError(f"{source} is sampled at {rate:g} Hz, expected {options.expected_rate:g} Hz "
                        "(set signal.expected_rate to the recordings' rate, or leave it unset)")


def read_wfdb_record(path: Path, options: SignalOptions) -> tuple:
    """(epochs N x C x T, labels N, channel names, rate) of one WFDB record."""
    wfdb = optional_import("wfdb", "signals", "reading WFDB recordings")

    source = str(path.with_suffix(".hea"))
    try:
        record = wfdb.rdrecord(str(path.with_suffix("")))
    except Exception as err:
        raise DataError(f"cannot read WFDB record {source}: {err}") from None
    check_rate(record.fs, options, source)
    names = list(record.sig_name)
    chosen = pick_channels(names, options.channels, source)
    data, rate = preprocess(record.p_signal[:, chosen].T, record.fs, options, source)
    epochs = to_epochs(data, rate, options.epoch_seconds, source)
    events = []
    annotation = path.with_suffix(f".{options.annotation}")
    if annotation.is_file():
        try:
            notes = wfdb.rdann(str(path.with_suffix("")), options.annotation)
        except Exception as err:
            raise DataError(f"cannot read annotations {annotation}: {err}") from None
        texts = notes.aux_note if any(notes.aux_note) else notes.symbol
        events = [(s / record.fs, None, stage_of(t)) for s, t in zip(notes.sample, texts) if stage_of(t)]
        if notes.sample.max(initial=0) >= record.sig_len:
            raise DataError(f"annotations {annotation} run past the end of {source} "
                            f"({notes.sample.max()} >= {record.sig_len} samples)")
    labels = epoch_labels(events, len(epochs), options.epoch_seconds, source) if events else None
    return epochs, labels, [names[i] for i in chosen], rate


def _hypnogram_for(path: Path) -> Optional[Path]:
    key = path.name.split("-")[0][:-1]
    for candidate in sorted(path.parent.glob("*.edf")):
        if "hypnogram" in candidate.name.lower() and candidate.name.split("-")[0][:-1] == key:
            return candidate
    return None


def read_edf_record(path: Path, options: SignalOptions) -> tuple:
    """(epochs, labels, channel names, rate) of one EDF/EDF+ file; channels recorded at
    different rates are each resampled to ``sampling_rate``."""
    pyedflib = optional_import("pyedflib", "signals", "reading EDF recordings")

    source = str(path)
    try:
        with native_output_captured() as printed, pyedflib.EdfReader(source) as edf:
            names = [n.strip() for n in edf.getSignalLabels()]
            chosen = pick_channels(names, options.channels, source)
            rates = [edf.getSampleFrequency(i) for i in chosen]
            if options.sampling_rate is None and len(set(rates)) > 1:
                raise DataError(f"{source} has channels at {sorted(set(rates))} Hz; set signal.sampling_rate to "
                                "resample them to one rate")
            parts = []
            for i, rate in zip(chosen, rates):
                check_rate(rate, options, f"{source} channel {names[i]}")
                data, new_rate = preprocess(edf.readSignal(i)[None], rate, options, source)
                parts.append(data[0])
            onsets, durations, texts = edf.readAnnotations()
    except DataError:
        raise
    except ConfigError:
        raise
    except Exception as err:
        said = f" (pyedflib said: {printed[0]})" if printed else ""
        raise DataError(f"cannot read EDF file {source}: {err}{said}") from None
    length = min(len(p) for p in parts)
    epochs = to_epochs(np.stack([p[:length] for p in parts]), new_rate, options.epoch_seconds, source)
    events = [(o, d if d > 0 else None, stage_of(t)) for o, d, t in zip(onsets, durations, texts) if stage_of(t)]
    hypnogram = _hypnogram_for(path) if not events else None
    if hypnogram is not None:
        try:
            with native_output_captured() as printed, pyedflib.EdfReader(str(hypnogram)) as edf:
                onsets, durations, texts = edf.readAnnotations()
        except Exception as err:
            said = f" (pyedflib said: {printed[0]})" if printed else ""
            raise DataError(f"cannot read hypnogram {hypnogram}: {err}{said}") from None
        events = [(o, d if d > 0 else None, stage_of(t)) for o, d, t in zip(onsets, durations, texts) if stage_of(t)]
    labels = epoch_labels(events, len(epochs), options.epoch_seconds, source) if events else None
    return epochs, labels, [names[i] for i in chosen], new_rate


def read_records(folder: Path, options: SignalOptions) -> SignalSet:
    """Every recording of a WFDB or EDF folder; subject id = recording index (sorted names)."""
    records = sorted(folder.glob("*.hea"))
    reader = read_wfdb_record
    if not records:
        records = [p for p in sorted(folder.glob("*.edf")) if "hypnogram" not in p.name.lower()]
        reader = read_edf_record
    if not records:
        raise DataError(f"--data {folder} holds no WFDB (*.hea) or EDF (*.edf) recordings")
    signals, labels, subjects, channels, rate = [], [], [], None, None
    for subject, path in enumerate(records):
        epochs, stages, names, rate_here = reader(path, options)
        if channels is not None and names != channels:
            raise DataError(f"{path} has channels {names}, the first recording {channels}; set signal.channels")
        channels, rate = names, rate_here
        if stages is not None:
            keep = stages >= 0
            epochs, stages = epochs[keep], stages[keep]
        signals.append(epochs)
        labels.append(stages)
        subjects.append(np.full(len(epochs), subject))
    labelled = [x is not None for x in labels]
    if any(labelled) and not all(labelled):
        missing = [str(records[i]) for i, x in enumerate(labelled) if not x]
        raise DataError(f"no sleep-stage annotations found for {', '.join(missing[:3])} while others have them")
    return SignalSet(torch.from_numpy(np.concatenate(signals)),
                     torch.from_numpy(np.concatenate(labels)) if all(labelled) else None,
                     torch.from_numpy(np.concatenate(subjects)), SLEEP_STAGES if all(labelled) else [],
                     channels, float(rate), str(folder))


def read_signal_npz(path: Path, split: str, test_fraction: float) -> SignalSet:
    """``{split}_signals`` as stored, or ``split`` of ``signals`` by subject."""
    arrays = open_npz(path)
    keys = set(arrays.files)
    key = f"{split}_signals" if f"{split}_signals" in keys else "signals" if "signals" in keys else None
    if key is None:
        raise DataError(f"{path} has no '{split}_signals' or 'signals' array (it has {sorted(keys)}); {NPZ_LAYOUT}")
    signals = npz_array(arrays, key, path)
    if signals.ndim != 3 or signals.dtype.kind not in "iuf":
        raise DataError(f"{path}:{key} must be a real-valued N x C x T array, got {signals.dtype} {signals.shape}")
    if not len(signals):
        raise DataError(f"{path}:{key} holds no epochs")
    _check_finite(signals, f"{path}:{key}")
    prefix = key[: -len("signals")]
    labels = subjects = None
    if prefix + "labels" in keys:
        labels = check_labels(npz_array(arrays, prefix + "labels", path), len(signals), [], f"{path}:{prefix}labels",
                              item="epoch")
    if prefix + "subjects" in keys:
        subjects = check_per_item(npz_array(arrays, prefix + "subjects", path), len(signals),
                                  f"{path}:{prefix}subjects", "epoch", "store one integer subject id per epoch")
    data = SignalSet(torch.from_numpy(signals.astype(np.float32)), _tensor(labels), _tensor(subjects),
                     source=f"{path}:{key}", sampling_rate=_sampling_rate(arrays, path))
    if key == f"{split}_signals":
        return data
    if data.subjects is not None:
        return split_by_subject(data, split, test_fraction)
    if split not in ("train", "all"):
        raise DataError(f"{path} has no '{split}_signals' and no 'subjects' to split by; store "
                        f"'{split}_signals' or 'subjects'")
    return data


def _tensor(values: Optional[np.ndarray]) -> Optional[torch.Tensor]:
    return None if values is None else torch.from_numpy(values)


def _check_finite(signals: np.ndarray, where: str) -> None:
    """NaN or infinity in one sample spreads through filtering and training and ends a run with a NaN loss."""
    finite = np.isfinite(signals)
    if not finite.all():
        epoch, channel, sample = np.argwhere(~finite)[0]
        raise DataError(f"{where} holds {finite.size - finite.sum()} NaN or infinite values (the first in epoch "
                        f"{epoch}, channel {channel}, sample {sample}); repair or drop those epochs")


def _sampling_rate(arrays, path: Path) -> float:
    """The stored sampling rate in Hz; 0.0 (unknown) when none is stored."""
    if "sampling_rate" not in arrays.files:
        return 0.0
    rate = npz_array(arrays, "sampling_rate", path)
    if rate.size != 1 or rate.dtype.kind not in "iuf" or not np.isfinite(rate).all() or rate.item() <= 0:
        raise DataError(f"{path}:sampling_rate must be one positive number of Hz, got {rate.dtype} {rate.shape} "
                        f"{rate.ravel()[:3].tolist()}{' ...' if rate.size > 3 else ''}")
    return float(rate.item())


def split_by_subject(data: SignalSet, split: str, test_fraction: float) -> SignalSet:
    """The fixed train/test partition of subjects (seeded shuffle; at least one test subject)."""
    if split == "all":
        return data
    ids = data.subject_ids()
    if len(ids) < 2:
        raise DataError(f"{data.source} has {len(ids)} subject(s); a train/test split needs at least 2 "
                        "(or store train_signals/test_signals in an .npz)")
    order = [ids[i] for i in torch.randperm(len(ids), generator=torch.Generator().manual_seed(0)).tolist()]
    held = max(1, round(test_fraction * len(ids)))
    chosen = order[:held] if split == "test" else order[held:]
    if split not in ("train", "test"):
        raise DataError(f"unknown split '{split}' for {data.source}; use train, test or all")
    return data.of_subjects(chosen)


def load_signals(path, split: str = "train", options: Optional[SignalOptions] = None) -> SignalSet:
    """Read ``path`` (see the module's layouts) and return the epochs of ``split``."""
    path = Path(path).expanduser()
    options = options or SignalOptions()
    if not path.exists():
        raise DataError(f"--data {path} does not exist")
    if not (path.is_file() or path.is_dir()):
        raise DataError(f"--data {path} is not a regular file or a folder; pass the data's file or folder")
    if path.is_file():
        if path.suffix != ".npz":
            raise DataError(f"--data {path}: signals are read from an .npz file or a folder of WFDB/EDF records")
        data = read_signal_npz(path, split, options.test_fraction)
        _apply_to_epochs(data, options, path)
    else:
        data = split_by_subject(read_records(path, options), split, options.test_fraction)
    if options.instance_norm:
        data.signals = instance_normalize(data.signals)
    return data


def changed_options(options: SignalOptions, names: Optional[Sequence[str]] = None) -> list:
    """``signal.<name>`` of each option (of ``names``, default all) set away from its default."""
    defaults = SignalOptions()
    names = names or [f.name for f in fields(SignalOptions)]
    return [f"signal.{name}" for name in names if getattr(options, name) != getattr(defaults, name)]


def _apply_to_epochs(data: SignalSet, options: SignalOptions, path: Path) -> None:
    """An .npz's epochs are used as stored: the recording options set away from their defaults are named
    as ignored rather than dropped in silence; an expected rate is checked against a stored one."""
    ignored = changed_options(options, RECORDING_OPTIONS)
    if options.expected_rate is not None:
        if not data.sampling_rate:
            ignored.append("signal.expected_rate")
        elif data.sampling_rate != options.expected_rate:
            raise DataError(f"{path} is sampled at {data.sampling_rate:g} Hz (its sampling_rate), expected "
                            f"{options.expected_rate:g} Hz (signal.expected_rate); resample it or change the option")
    if ignored:
        warn(f"{', '.join(ignored)} do not apply to {path}: an .npz holds epochs already cut, used as stored "
             "(these options select, filter, resample and cut WFDB/EDF recordings; expected_rate needs a stored "
             "sampling_rate)")


def instance_normalize(signals: torch.Tensor) -> torch.Tensor:
    """Each epoch and channel to mean 0, std 1 (the paper's pre-processing before tokenising)."""
    mean = signals.mean(-1, keepdim=True)
    return (signals - mean) / signals.std(-1, keepdim=True).clamp_min(1e-6)

"""PART for signals: windows, targets, readers (npz, WFDB, EDF), the 1-D ViT, metrics,
low-label splits, a tiny pretraining and a finetuning on generated signals."""
import warnings

import numpy as np
import pytest
import torch

from spatialssl.data import SignalSet, load_signals
from spatialssl.data.demo_signals import demo_signal_splits
from spatialssl.data.load import low_label
from spatialssl.data.signals import SignalOptions
from spatialssl.engine.config import load_config
from spatialssl.engine.runlog import read_metrics
from spatialssl.engine.train import pretrain
from spatialssl.errors import DataError, SpatialSSLWarning
from spatialssl.metrics import classification_report, cohen_kappa, confusion_matrix, macro_f1
from spatialssl.models import create_backbone
from spatialssl.samplers.boxes import relative_targets, sample_pairs
from spatialssl.samplers.windows import check_window_geometry, cut_windows, sample_windows

STAGES = ["W", "N1", "N2", "N3", "R"]


def test_time_shift_targets():
    windows = torch.tensor([[[10.0, 20.0], [50.0, 20.0]]])  # centres 20 and 60, length 20
    assert relative_targets(windows, torch.tensor([[[0, 1], [1, 0]]])).tolist() == [[[2.0], [-2.0]]]
    scaled = torch.tensor([[[0.0, 10.0], [20.0, 40.0]]])  # centres 5 and 40
    assert relative_targets(scaled, torch.tensor([[[0, 1]]]), predict_scale=True).tolist() == [[[3.5, 4.0]]]


@pytest.mark.parametrize("mode", ["offgrid", "scale", "grid"])
def test_windows_lie_inside_the_signal(mode):
    windows = sample_windows(32, 12, 300, mode, 25, torch.Generator().manual_seed(0), "cpu", sort=True)
    start, size = windows.unbind(-1)
    assert (start >= 0).all() and (start + size <= 300 + 1e-4).all()
    assert (start[:, 1:] >= start[:, :-1]).all()  # sorted by time
    if mode == "scale":
        assert (size >= 12.5).all() and (size <= 50).all() and size.std() > 1
    else:
        assert (size == 25).all()
    if mode == "grid":
        assert (start % 25 == 0).all()
    if mode == "offgrid":
        assert (start % 25 != 0).any() and (start == start.floor()).all()


def test_cut_windows_copies_integer_windows_and_averages_double_ones():
    signals = torch.randn(2, 3, 100)
    fixed = torch.tensor([[[7.0, 10.0], [60.0, 10.0]]] * 2)
    assert torch.equal(cut_windows(signals, fixed, 10)[:, 0], signals[:, :, 7:17])  # gathered exactly
    windows = torch.tensor([[[7.0, 10.0], [40.0, 20.0]]] * 2)
    cut = cut_windows(signals, windows, 10)
    assert cut.shape == (2, 2, 3, 10)
    assert torch.allclose(cut[:, 0], signals[:, :, 7:17], atol=1e-4)  # through grid_sample
    assert torch.allclose(cut[:, 1], signals[:, :, 40:60].view(2, 3, 10, 2).mean(-1), atol=1e-4)


def test_window_geometry_errors():
    with pytest.raises(ValueError, match="window 200 exceeds the 100 samples"):
        check_window_geometry("offgrid", 100, 200, 4)
    with pytest.raises(ValueError, match="num_tokens 5 exceeds the 4 grid windows"):
        check_window_geometry("grid", 100, 25, 5)
    with pytest.raises(ValueError, match="mode 'stratified' is not available for signals"):
        check_window_geometry("stratified", 100, 25, 4)


def test_vit1d_resamples_and_drops_position_embeddings():
    model = create_backbone("vit1d_tiny", input_size=[200], patch_size=20, in_chans=3, depth=1, pos_embed=True,
                            num_tokens=12).eval()
    windows = torch.randn(2, 12, 3, 20)
    drop_none = model.patch_tokens(windows, torch.zeros(2, 12, dtype=torch.bool))
    assert torch.allclose(drop_none, model.patch_tokens(windows), atol=1e-6)
    dropped = model.patch_tokens(windows, torch.ones(2, 12, dtype=torch.bool))
    model.pos_embed.data.zero_()
    assert torch.allclose(dropped, model.patch_tokens(windows), atol=1e-6)  # as if there were none
    assert model.forward_features(torch.randn(2, 3, 200)).shape == (2, 10, 192)  # 10 grid tokens, resampled


def test_kappa_and_f1_against_hand_computed_values():
    truth = torch.tensor([0, 0, 0, 1, 1, 2])
    predicted = torch.tensor([0, 0, 1, 1, 2, 2])
    matrix = confusion_matrix(predicted, truth, 3)
    assert matrix.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    # p_o = 4/6; p_e = (3*2 + 2*2 + 1*2) / 36 = 12/36
    assert cohen_kappa(matrix) == pytest.approx((4 / 6 - 12 / 36) / (1 - 12 / 36))
    # F1: class 0: 2*2/(2+3) = 0.8; class 1: 2*1/(2+2) = 0.5; class 2: 2*1/(2+1) = 2/3
    assert macro_f1(matrix) == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert classification_report(truth, truth, 3) == {"accuracy": 1.0, "macro_f1": 1.0, "kappa": 1.0}


def stage_signals(seconds: int, rate: int, channels: int, seed: int) -> np.ndarray:
    t = np.arange(seconds * rate) / rate
    rng = np.random.default_rng(seed)
    return np.stack([np.sin(2 * np.pi * (3 + c) * t) * 40 + rng.normal(0, 5, len(t)) for c in range(channels)])


def write_wfdb(folder, name, rate=200, seconds=150, stages=("W", "N2", "R"), stage_starts=(0, 60, 120),
               channels=("C3-M2", "C4-M1")):
    import wfdb

    data = stage_signals(seconds, rate, len(channels), seed=len(name))
    wfdb.wrsamp(name, fs=rate, units=["uV"] * len(channels), sig_name=list(channels), p_signal=data.T,
                fmt=["16"] * len(channels), write_dir=str(folder))
    samples = np.array([max(1, s * rate) for s in stage_starts])  # WFDB cannot store an annotation at sample 0
    wfdb.wrann(name, "arousal", samples, symbol=['"'] * len(stages),
               aux_note=list(stages), write_dir=str(folder))


def test_wfdb_records_become_labelled_epochs_split_by_subject(tmp_path):
    for i in range(5):
        write_wfdb(tmp_path, f"tr0{i}")
    options = SignalOptions(sampling_rate=100, epoch_seconds=30, bandpass=[0.3, 30.0], test_fraction=0.2)
    train = load_signals(tmp_path, "train", options)
    test = load_signals(tmp_path, "test", options)
    assert train.signals.shape[1:] == (2, 3000) and len(train) == 4 * 5 and len(test) == 5  # 150 s: 5 epochs
    assert train.labels[:5].tolist() == [0, 0, 2, 2, 4]  # W from 0 s, N2 from 60 s, R from 120 s
    assert not set(train.subject_ids()) & set(test.subject_ids())
    assert train.channels == ["C3-M2", "C4-M1"] and train.sampling_rate == 100
    assert torch.allclose(train.signals.mean(-1), torch.zeros(20, 2), atol=1e-4)  # instance-normalised
    assert torch.allclose(train.signals.std(-1), torch.ones(20, 2), atol=1e-3)
    one = load_signals(tmp_path, "all", SignalOptions(channels=["C4-M1"], bandpass=None, sampling_rate=None))
    assert one.signals.shape[1:] == (1, 6000)


def test_wfdb_errors_name_the_file(tmp_path):
    write_wfdb(tmp_path, "rec1")
    with pytest.raises(DataError, match=r"rec1.hea has no channel O1-M2; it has C3-M2, C4-M1"):
        load_signals(tmp_path, "all", SignalOptions(channels=["O1-M2"]))
    with pytest.raises(DataError, match=r"rec1.hea is sampled at 200 Hz, expected 100 Hz"):
        load_signals(tmp_path, "all", SignalOptions(expected_rate=100))
    short = tmp_path / "short"
    short.mkdir()
    write_wfdb(short, "tiny", seconds=20, stage_starts=(0,), stages=("W",))
    with pytest.raises(DataError, match="tiny.hea lasts 20.0 s, shorter than one 30 s epoch"):
        load_signals(short, "all")
    late = tmp_path / "late"
    late.mkdir()
    write_wfdb(late, "shifted", stage_starts=(0, 60, 400))
    with pytest.raises(DataError, match="run past the end of .*shifted.hea"):
        load_signals(late, "all")


def write_edf(path, rate=128, seconds=120, annotations=((0, 30, "Sleep stage W"), (30, 60, "Sleep stage 2"),
                                                        (90, 30, "Sleep stage R"))):
    import pyedflib

    data = stage_signals(seconds, rate, 2, seed=1)
    headers = [pyedflib.highlevel.make_signal_header(name, sample_frequency=rate, physical_min=-100,
                                                     physical_max=100) for name in ("Fpz-Cz", "Pz-Oz")]
    header = pyedflib.highlevel.make_header()
    header["annotations"] = [list(a) for a in annotations]
    pyedflib.highlevel.write_edf(str(path), data, headers, header)


def test_edf_with_annotations_is_resampled_and_labelled(tmp_path):
    write_edf(tmp_path / "SC4001E0-PSG.edf")
    data = load_signals(tmp_path, "all", SignalOptions(sampling_rate=100, bandpass=[0.3, 30.0]))
    assert data.signals.shape == (4, 2, 3000) and data.labels.tolist() == [0, 2, 2, 4]
    assert data.classes == STAGES


def test_edf_without_matching_annotations_is_refused(tmp_path):
    write_edf(tmp_path / "rec-PSG.edf", annotations=((500, 30, "Sleep stage W"),))
    with pytest.raises(DataError, match="do not overlap its recording"):
        load_signals(tmp_path, "all")


def test_npz_signals_round_trip_and_subject_split(tmp_path):
    signals = np.random.default_rng(0).normal(size=(30, 3, 200)).astype(np.float32)
    path = tmp_path / "eeg.npz"
    np.savez(path, signals=signals, labels=np.arange(30) % 5, subjects=np.arange(30) // 3)
    train, test = load_signals(path, "train"), load_signals(path, "test")
    assert len(train) + len(test) == 30 and len(test) == 6  # 2 of 10 subjects held out
    assert not set(train.subject_ids()) & set(test.subject_ids())
    raw = load_signals(path, "all", SignalOptions(instance_norm=False))
    assert torch.equal(raw.signals, torch.from_numpy(signals)) and raw.labels.tolist() == list(np.arange(30) % 5)
    np.savez(tmp_path / "bad.npz", signals=np.zeros((3, 200)))
    with pytest.raises(DataError, match="N x C x T"):
        load_signals(tmp_path / "bad.npz")


def test_npz_without_signals_names_both_layouts(tmp_path):
    np.savez(tmp_path / "eeg.npz", eeg=np.zeros((3, 2, 200), np.float32))
    with pytest.raises(DataError) as caught:
        load_signals(tmp_path / "eeg.npz")
    for key in ("'signals'", "'labels'", "'subjects'", "'sampling_rate'", "'train_signals'", "'test_labels'",
                "'test_subjects'", "['eeg']"):
        assert key in str(caught.value), key


def test_recording_options_on_an_npz_are_named_as_ignored_and_a_stored_rate_is_checked(tmp_path):
    path = tmp_path / "eeg.npz"
    np.savez(path, signals=np.ones((6, 2, 100), np.float32), subjects=np.arange(6) // 2, sampling_rate=100.0)
    with pytest.warns(SpatialSSLWarning) as caught:
        load_signals(path, "train", SignalOptions(channels=["C3-M2"], bandpass=None, expected_rate=100.0))
    message = str(caught[0].message)
    assert "signal.channels, signal.bandpass do not apply" in message and "expected_rate," not in message
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the defaults and a matching rate: nothing to say
        load_signals(path, "train", SignalOptions(expected_rate=100.0))
    with pytest.raises(DataError, match=r"sampled at 100 Hz \(its sampling_rate\), expected 128 Hz"):
        load_signals(path, "train", SignalOptions(expected_rate=128.0))
    np.savez(path, signals=np.ones((6, 2, 100), np.float32), subjects=np.arange(6) // 2)
    with pytest.warns(SpatialSSLWarning, match="^signal.expected_rate do not apply"):
        load_signals(path, "train", SignalOptions(expected_rate=128.0))


def with_one_inf(signals: np.ndarray) -> np.ndarray:
    signals = signals.copy()
    signals[7, 2, 150] = np.inf
    return signals


@pytest.mark.parametrize("change, message", [
    ({"labels": np.arange(30) * 0.5}, r"eeg.npz:labels holds float64 values, not integers"),
    ({"labels": np.arange(30) - 1}, r"eeg.npz:labels holds the negative label -1"),
    ({"subjects": np.arange(5)}, r"eeg.npz:subjects has shape \(5,\), not one value per epoch \(30\)"),
    ({"subjects": np.arange(30) / 3}, r"eeg.npz:subjects holds float64 values"),
    ({"sampling_rate": "fast"}, r"eeg.npz:sampling_rate must be one positive number of Hz"),
    ({"sampling_rate": 0.0}, r"eeg.npz:sampling_rate must be one positive number of Hz"),
    ({"signals": with_one_inf}, r"eeg.npz:signals holds 1 NaN or infinite values \(the first in epoch 7, channel 2"),
    ({"signals": lambda s: s + 1j}, r"eeg.npz:signals must be a real-valued N x C x T array"),
    ({"signals": lambda s: s[:0], "labels": np.zeros(0, int), "subjects": np.zeros(0, int)},
     r"eeg.npz:signals holds no epochs"),
    ({"train_signals": lambda s: s, "train_labels": np.zeros(3, int)}, r"eeg.npz:train_labels has shape \(3,\)"),
])
def test_a_bad_signal_npz_gives_one_data_error_naming_the_array(tmp_path, change, message):
    signals = np.random.default_rng(0).normal(size=(30, 3, 200)).astype(np.float32)
    arrays = {"signals": signals, "labels": np.arange(30) % 5, "subjects": np.arange(30) // 3, "sampling_rate": 100}
    if "train_signals" in change:
        arrays = {}
    arrays.update({key: value(signals) if callable(value) else value for key, value in change.items()})
    np.savez(tmp_path / "eeg.npz", **arrays)
    with pytest.raises(DataError, match=message):
        load_signals(tmp_path / "eeg.npz", "train")


def test_low_label_picks_whole_subjects_and_refuses_shared_ones():
    train, test = demo_signal_splits(8, 2, 5)
    few = low_label(train, test, 3, seed=0)
    assert len(few.subject_ids()) == 3 and len(few) == 15
    with pytest.raises(DataError, match="in both the training and the test split"):
        low_label(train, train, 3)
    with pytest.raises(DataError, match="only 8 training subjects"):
        low_label(train, test, 9)


TINY_1D = ["method.name=part", "model.backbone=vit1d_tiny", "model.depth=1", "model.patch_size=25",
           "part.sampling=offgrid", "part.num_tokens=12", "part.num_pairs=64", "train.batch_size=32",
           "train.epochs=6", "optim.name=adamw", "optim.lr=0.001", "train.knn_monitor=0"]


def test_tiny_1d_pretraining_loss_falls(tmp_path):
    train, _ = demo_signal_splits(8, 2, 16)
    pretrain(load_config(overrides=TINY_1D), tmp_path / "run", train_set=train, progress=False)
    losses = [float(r["loss"]) for r in read_metrics(tmp_path / "run")]
    windows = sample_windows(128, 12, 500, "offgrid", 25, torch.Generator().manual_seed(0), "cpu")
    targets = relative_targets(windows, sample_pairs(128, 12, 64, torch.Generator().manual_seed(1), "cpu"))
    mean_predictor = (targets - targets.mean()).pow(2).mean().item()
    assert losses[-1] < 0.5 * mean_predictor, (losses, mean_predictor)


def test_finetuning_a_1d_checkpoint_reports_kappa(tmp_path):
    from spatialssl.commands.finetune import finetune

    train, test = demo_signal_splits(6, 2, 8)
    path = tmp_path / "demo.npz"
    np.savez(path, train_signals=train.signals.numpy(), train_labels=train.labels.numpy(),
             train_subjects=train.subjects.numpy(), test_signals=test.signals.numpy(),
             test_labels=test.labels.numpy(), test_subjects=test.subjects.numpy())
    cfg = load_config(overrides=[*TINY_1D, f"data.path={path}", "train.epochs=1", "model.pos_embed=true",
                                 "part.pos_embed_mask=0.2", "model.num_tokens=12", "train.batch_size=16"])
    last = pretrain(cfg, tmp_path / "pre", progress=False)
    report = finetune(last, str(path), tmp_path / "ft", ["train.epochs=1", "finetune.subjects=3", "train.batch_size=8"],
                      progress=False)
    assert report["train_subjects"] == 3 and -1 <= report["kappa"] <= 1 and 0 <= report["macro_f1"] <= 1
    assert report["test_acc"] >= 0


def test_signal_set_checks_its_shape():
    with pytest.raises(ValueError, match="N x C x T"):
        SignalSet(torch.zeros(3, 100))


def test_exported_1d_vit_rebuilds_from_its_description(tmp_path):
    from safetensors.torch import load_file

    from spatialssl.commands.export import export
    from spatialssl.models import VisionTransformer1D

    train, _ = demo_signal_splits(2, 1, 8)
    cfg = load_config(overrides=[*TINY_1D, "train.epochs=0", "train.batch_size=8"])
    last = pretrain(cfg, tmp_path / "run", train_set=train, progress=False)
    described = export(last, tmp_path / "vit1d.safetensors")
    rebuilt = VisionTransformer1D(**described["kwargs"])
    rebuilt.load_state_dict(load_file(tmp_path / "vit1d.safetensors"), strict=True)
    assert described["kwargs"]["in_chans"] == 2


def test_an_edf_shorter_than_its_header_says_is_one_line_with_pyedflib_s_own_words(tmp_path):
    """pyedflib's C code prints to the process's stdout without a newline; our error line must stand alone."""
    import subprocess
    import sys

    write_edf(tmp_path / "SC4001E0-PSG.edf")
    edf = tmp_path / "SC4001E0-PSG.edf"
    edf.write_bytes(edf.read_bytes()[: edf.stat().st_size // 2])
    done = subprocess.run([sys.executable, "-m", "spatialssl", "pretrain", "--data", str(tmp_path), "--out",
                           str(tmp_path / "run"), "model.backbone=vit1d_tiny", "method.name=part"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    err = done.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: cannot read EDF file {edf}") and "pyedflib said:" in err[0]

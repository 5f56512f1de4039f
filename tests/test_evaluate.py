import torch

from spatialssl.evaluate import extract_features, knn_accuracy, standardizer, train_linear_probe
from spatialssl.models import create_backbone


def clusters(n_per_class: int, classes: int, dim: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(0)) * 3
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    return centres[labels] + torch.randn(len(labels), dim, generator=g), labels


def test_knn_and_linear_probe_separate_clusters():
    train, train_labels = clusters(50, 5, 16, seed=1)
    test, test_labels = clusters(20, 5, 16, seed=2)
    assert knn_accuracy(train, train_labels, test, test_labels, k=10) > 0.9
    result = train_linear_probe([train], train_labels, test, test_labels, 5, epochs=300)
    assert result.test_acc > 0.9 and result.train_acc > 0.9
    shuffled = train_labels[torch.randperm(len(train_labels), generator=torch.Generator().manual_seed(3))]
    assert knn_accuracy(train, shuffled, test, test_labels, k=10) < 0.5  # no signal, no accuracy


def test_features_are_image_then_grid_patches_in_eval_mode():
    backbone = create_backbone("resnet8")
    backbone.train()
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    features = extract_features(backbone, images, (0.5,) * 3, (0.25,) * 3, num_patches=3, patch_size=16, batch_size=4)
    assert features.shape == (6, 4, 64) and backbone.training  # mode restored
    again = extract_features(backbone, images[:2], (0.5,) * 3, (0.25,) * 3, num_patches=1, patch_size=16)
    assert torch.allclose(features[:2, :2], again, atol=1e-5)  # eval mode: no batch dependence


def test_standardizer_uses_the_training_statistics_for_every_split():
    train, test = torch.randn(200, 8) * 5 + 3, torch.randn(50, 8)
    scale = standardizer([train])
    standardized = scale(train)
    torch.testing.assert_close(standardized.mean(0), torch.zeros(8), atol=1e-5, rtol=0)
    torch.testing.assert_close(standardized.var(0, unbiased=False), torch.ones(8), atol=1e-4, rtol=0)
    expected = (test - train.mean(0)) / (train.var(0, unbiased=False) + 1e-6).sqrt()
    torch.testing.assert_close(scale(test), expected)


def test_standardized_probe_fits_features_whose_scale_defeats_the_raw_probe():
    """Small class differences on a large common offset (as pooled features can be): the raw
    probe does not fit them in 100 epochs; the same probe on standardised features does."""
    train, train_labels = clusters(50, 5, 16, seed=1)
    test, test_labels = clusters(20, 5, 16, seed=2)
    squash = lambda f: f * 0.01 + 20.0  # noqa: E731
    raw = train_linear_probe([squash(train)], train_labels, squash(test), test_labels, 5, standardize=False)
    standardized = train_linear_probe([squash(train)], train_labels, squash(test), test_labels, 5)
    assert standardized.test_acc > 0.9 and standardized.train_acc > 0.9
    assert raw.train_acc < 0.5


def test_knn_k_is_chosen_from_the_training_set_unless_given():
    from spatialssl.commands.linear_eval import format_results
    from spatialssl.evaluate import knn_neighbours

    assert [knn_neighbours(n) for n in (50_000, 2000, 64, 1)] == [200, 45, 8, 1]
    assert (knn_neighbours(64, 10), knn_neighbours(64, 500)) == (10, 64)
    row = {"knn": 0.5, "knn_k": 45, "linear": {}}
    assert format_results({"m": row}).splitlines()[2].split() == ["m", "50.00", "45"]


def test_the_table_shows_each_probes_training_accuracy_under_its_test_accuracy():
    from spatialssl.commands.linear_eval import format_results
    from spatialssl.evaluate import ProbeResult

    row = {"knn": 0.5, "knn_k": 45, "linear": {0: ProbeResult(0.40, 0.75), 9: ProbeResult(0.45, 0.90)}}
    model, fitted = format_results({"m": row}).splitlines()[2:4]
    assert model.split() == ["m", "50.00", "45", "40.00", "45.00"]
    assert fitted.split() == ["(probe", "train", "acc.)", "75.00", "90.00"]


def test_a_constant_feature_dimension_is_dropped_not_amplified():
    train = torch.randn(100, 4)
    train[:, 2] = 7.0
    test = torch.randn(10, 4)
    scaled = standardizer([train])(test)
    assert torch.equal(scaled[:, 2], torch.zeros(10)) and scaled.abs().max() < 100


def test_float_images_are_refused_by_the_evaluators_not_read_as_signals():
    """4-D float images (ToTensor's [0, 1]) would become near-black features without an error."""
    import pytest

    from spatialssl.engine.config import load_config
    from spatialssl.methods.finetune import Finetune

    backbone = create_backbone("resnet8")
    floats = torch.rand(4, 3, 32, 32)
    with pytest.raises(ValueError, match="extract_features takes uint8 images"):
        extract_features(backbone, floats, (0.5,) * 3, (0.2,) * 3)
    cfg = load_config(overrides=["model.backbone=resnet8", "method.name=finetune", "model.init_from=x"])
    method = Finetune.from_config(cfg, create_backbone("resnet8", num_classes=2), (0.5,) * 3, (0.2,) * 3, 2)
    with pytest.raises(ValueError, match="Finetune.augment takes uint8 images"):
        method.training_step(floats, torch.tensor([0, 1, 0, 1]), torch.Generator())
    loss, _ = method.training_step((floats * 255).to(torch.uint8), torch.tensor([0, 1, 0, 1]), torch.Generator())
    assert loss.isfinite()


def test_a_1d_checkpoint_on_signals_with_other_channels_is_refused_before_work(tmp_path):
    import numpy as np
    import pytest

    from spatialssl.commands.finetune import finetune
    from spatialssl.commands.linear_eval import evaluate_checkpoint
    from spatialssl.data.demo_signals import demo_signal_splits
    from spatialssl.engine.config import load_config
    from spatialssl.engine.train import pretrain
    from spatialssl.errors import DataError

    train, _ = demo_signal_splits(2, 1, 8)  # 2 channels
    cfg = load_config(overrides=["method.name=part", "model.backbone=vit1d_tiny", "model.depth=1",
                                 "model.patch_size=25", "part.num_tokens=12", "part.num_pairs=64", "train.epochs=0",
                                 "train.batch_size=8", "train.knn_monitor=0"])
    last = pretrain(cfg, tmp_path / "run", train_set=train, progress=False)
    signals = np.random.default_rng(0).normal(size=(20, 3, 500)).astype(np.float32)
    data = tmp_path / "three.npz"
    np.savez(data, signals=signals, labels=np.arange(20) % 2, subjects=np.arange(20) // 2)
    with pytest.raises(DataError, match="takes 2-channel inputs; .*three.npz.* has 3 channels"):
        evaluate_checkpoint(last, str(data), ["signal.sampling_rate=null", "signal.bandpass=null"])
    with pytest.raises(DataError, match=r"takes 2-channel inputs \(model.in_chans, from its checkpoint\); .*three.npz"):
        finetune(last, str(data), tmp_path / "ft", ["train.epochs=1", "train.batch_size=4"], progress=False)

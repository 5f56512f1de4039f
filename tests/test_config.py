import pytest

from spatialssl.config import load_config, parse_overrides
from spatialssl.errors import ConfigError


def test_overrides_are_typed_and_nested():
    assert parse_overrides(["method.num_patches=3", "augment.scale=[0.2, 1.0]", "data.mean="]) == {
        "method": {"num_patches": 3}, "augment": {"scale": [0.2, 1.0]}, "data": {"mean": None}}
    cfg = load_config("recipes/sr_cifar10.yaml", ["method.num_patches=3", "optim.lr=1e-4", "train.epochs=7"])
    assert (cfg.method.num_patches, cfg.optim.lr, cfg.train.epochs) == (3, 1e-4, 7)
    assert cfg.data.mean == [0.491, 0.482, 0.447]  # from the recipe


@pytest.mark.parametrize("override, message", [
    ("train.batch_size=1", "batch_size must be >= 2"),
    ("augment.scale=[0.5, 0.1]", "augment.scale"),
    ("eval.patches=[0, 2]", "may hold 0, 1, 3, 5, 7 or 9"),
    ("data.labels=medium", "'fine' or 'coarse'"),
    ("data.mean=[0.5]", "needs 3 values"),
    ("method=3", "is a section"),
    ("nonsense", "not of the form"),
    ("method.focal=maybe", "expects bool"),
])
def test_invalid_options_are_refused_with_their_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[override])


def test_knn_k_and_determinism_options():
    assert load_config().eval.knn_k is None and load_config().train.deterministic is False
    assert load_config(overrides=["train.deterministic=true", "eval.knn_k=20"]).eval.knn_k == 20
    with pytest.raises(ConfigError, match="eval.knn_k must be positive"):
        load_config(overrides=["eval.knn_k=0"])

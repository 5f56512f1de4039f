import pytest

from spatialssl.config import Config, load_config, parse_overrides
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
    ("method.additive_placement=elsewhere", "method.additive_placement 'elsewhere' is unknown"),
    ("method.position_weight=-1", "method.position_weight must be >= 0"),
    ("part.encoder=transformer", "part.encoder 'transformer' is unknown"),
])
def test_invalid_options_are_refused_with_their_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[override])


def test_knn_k_and_determinism_options():
    assert load_config().eval.knn_k is None and load_config().train.deterministic is False
    assert load_config(overrides=["train.deterministic=true", "eval.knn_k=20"]).eval.knn_k == 20
    with pytest.raises(ConfigError, match="eval.knn_k must be positive"):
        load_config(overrides=["eval.knn_k=0"])


def test_cross_attention_heads_must_divide_the_vit_width():
    part = ["method.name=part", "model.backbone=vit_tiny"]
    with pytest.raises(ConfigError, match="part.encoder_heads 5 must divide the 192-wide embeddings of vit_tiny"):
        load_config(overrides=[*part, "part.encoder_heads=5"])
    assert load_config(overrides=[*part, "part.encoder_heads=3"]).part.encoder_heads == 3
    assert load_config(overrides=part).part.sampling == "offgrid"  # the paper's method is the default


def test_configs_of_older_checkpoints_keep_the_method_they_were_trained_with():
    from spatialssl.checkpoint import migrate_config

    old = Config().to_dict()
    del old["method"]["additive_placement"], old["part"]["encoder_heads"]
    migrated = load_config(base=migrate_config(old))
    assert migrated.method.additive_placement == "same" and migrated.part.encoder == "cross_attention_block"
    assert load_config(base=migrate_config(Config().to_dict())) == Config()  # today's configs pass unchanged

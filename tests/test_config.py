import pytest

from spatialssl.engine.config import BUNDLED_RECIPES, Config, load_config, parse_overrides
from spatialssl.errors import ConfigError


def test_overrides_are_typed_and_nested():
    assert parse_overrides(["method.num_patches=3", "augment.scale=[0.2, 1.0]", "data.mean="]) == {
        "method": {"num_patches": 3}, "augment": {"scale": [0.2, 1.0]}, "data": {"mean": None}}
    cfg = load_config("recipes/sr_cifar10.yaml", ["method.num_patches=3", "optim.lr=1e-4", "train.epochs=7"])
    assert (cfg.method.num_patches, cfg.optim.lr, cfg.train.epochs) == (3, 1e-4, 7)
    assert cfg.data.mean == [0.491, 0.482, 0.447]  # from the recipe


@pytest.mark.parametrize("override, message", [
    ("train.batch_size=1", r"batch_size must be in \[2, 1048576\]"),
    ("augment.scale=[0.5, 0.1]", "augment.scale"),
    ("eval.patches=[0, 2]", "may hold 0, 1, 3, 5, 7, 9"),
    ("data.labels=medium", "data.labels 'medium' is unknown; choose one of fine, coarse"),
    ("data.channels=0", "data.channels must be >= 1"),
    ("method=3", "is a section"),
    ("nonsense", "not of the form"),
    ("method.focal=maybe", "expects bool"),
    ("method.additive_placement=elsewhere", "method.additive_placement 'elsewhere' is unknown"),
    ("method.position_weight=-1", "method.position_weight must be a finite number >= 0"),
    ("part.encoder=transformer", "part.encoder 'transformer' is unknown"),
])
def test_invalid_options_are_refused_with_their_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[override])


@pytest.mark.parametrize("override, key", [
    ("optim.lr=0", "optim.lr"),
    ("optim.lr=-1e-3", "optim.lr"),
    ("optim.lr=.nan", "optim.lr"),
    ("optim.lr=.inf", "optim.lr"),
    ("optim.weight_decay=-0.1", "optim.weight_decay"),
    ("optim.warmup_epochs=-1", "optim.warmup_epochs"),
    ("train.log_every=0", "train.log_every"),
    ("train.knn_monitor=-5", "train.knn_monitor"),
    ("train.device=gpu", "train.device"),
    ("train.device=cuda:x", "train.device"),
    ("method.head_hidden=0", "method.head_hidden"),
    ("part.num_tokens=0", "part.num_tokens"),
    ("eval.epochs=0", "eval.epochs"),
    ("augment.scale=[0.5]", "augment.scale"),
    ("augment.ratio=[0.75, 1.0, 1.3]", "augment.ratio"),
    ("part.box_scale=[1.0]", "part.box_scale"),
    ("augment.jitter=[0.4, 0.4, 0.4]", "augment.jitter"),
    ("augment.jitter=[a, b, c, d]", "augment.jitter"),
    ("augment.flip_p=1.5", "augment.flip_p"),
    ("augment.jitter_p=-0.1", "augment.jitter_p"),
    ("augment.gray_p=2", "augment.gray_p"),
    ("finetune.mix_prob=1.1", "finetune.mix_prob"),
    ("finetune.switch_prob=-1", "finetune.switch_prob"),
    ("finetune.random_erasing=3", "finetune.random_erasing"),
    ("finetune.mixup=-0.8", "finetune.mixup"),
    ("finetune.cutmix=-1", "finetune.cutmix"),
    ("augment.jitter=[.nan, 0.4, 0.4, 0.1]", "augment.jitter"),
    ("data.image_size=0", "data.image_size"),
    ("data.workers=-1", "data.workers"),
    ("data.std=[0.2, 0.0, 0.2]", "data.std"),
    ("data.mean=[.nan, 0.5, 0.5]", "data.mean"),
    ("signal.sampling_rate=0", "signal.sampling_rate"),
    ("signal.expected_rate=-100", "signal.expected_rate"),
    ("signal.epoch_seconds=0", "signal.epoch_seconds"),
    ("signal.test_fraction=1", "signal.test_fraction"),
    ("signal.test_fraction=0", "signal.test_fraction"),
    ("signal.channels=[]", "signal.channels"),
    ("signal.bandpass=[30]", "signal.bandpass"),
    ("signal.bandpass=[30, 0.3]", "signal.bandpass"),
    ("model.drop_path=1", "model.drop_path"),
    ("model.depth=0", "model.depth"),
    ("model.input_size=[0, 32]", "model.input_size"),
    ("part.box_size=0", "part.box_size"),
    ("part.mlp_hidden=-1", "part.mlp_hidden"),
    ("eval.lr=0", "eval.lr"),
    ("eval.batch_size=0", "eval.batch_size"),
    ("eval.augment_copies=0", "eval.augment_copies"),
    ("finetune.label_smoothing=1", "finetune.label_smoothing"),
    ("finetune.randaugment_ops=-1", "finetune.randaugment_ops"),
    ("finetune.subjects=0", "finetune.subjects"),
    ("optim.min_lr=-1e-5", "optim.min_lr"),
    ("optim.betas=[0.9]", "optim.betas"),
    ("optim.betas=[0.9, 1.0]", "optim.betas"),
    ("optim.betas=[.nan, 0.9]", "optim.betas"),
    ("augment.scale=[0.5", "augment.scale=[0.5"),  # a YAML error names the override
    ("train.device={cpu", "train.device={cpu"),
])
def test_every_value_out_of_range_is_refused_naming_its_key(override, key):
    with pytest.raises(ConfigError) as refused:
        load_config(overrides=[override])
    message = str(refused.value)
    assert key in message and "\n" not in message


@pytest.mark.parametrize("override", ["train.device=cuda:1", "train.device=mps", "part.num_tokens=null",
                                      "optim.lr=1e-4", "augment.flip_p=0", "finetune.mixup=0", "signal.bandpass=null",
                                      "signal.bandpass=[0, 30]", "signal.sampling_rate=null", "model.drop_path=0.99",
                                      "optim.betas=[0, 0.95]"])
def test_values_at_the_edge_of_their_range_are_accepted(override):
    load_config(overrides=[override])


def test_knn_k_and_determinism_options():
    assert load_config().eval.knn_k is None and load_config().train.deterministic is False
    assert load_config(overrides=["train.deterministic=true", "eval.knn_k=20"]).eval.knn_k == 20
    with pytest.raises(ConfigError, match="eval.knn_k must be >= 1"):
        load_config(overrides=["eval.knn_k=0"])


def test_cross_attention_heads_must_divide_the_vit_width():
    part = ["method.name=part", "model.backbone=vit_tiny"]
    with pytest.raises(ConfigError, match="part.encoder_heads 5 must divide the 192-wide embeddings of vit_tiny"):
        load_config(overrides=[*part, "part.encoder_heads=5"])
    assert load_config(overrides=[*part, "part.encoder_heads=3"]).part.encoder_heads == 3
    assert load_config(overrides=part).part.sampling == "offgrid"  # the paper's method is the default


def test_configs_of_older_checkpoints_keep_the_method_they_were_trained_with():
    from spatialssl.engine.checkpoint import migrate_config

    old = Config().to_dict()
    del old["method"]["additive_placement"], old["part"]["encoder_heads"]
    migrated = load_config(base=migrate_config(old))
    assert migrated.method.additive_placement == "same" and migrated.part.encoder == "cross_attention_block"
    assert load_config(base=migrate_config(Config().to_dict())) == Config()  # today's configs pass unchanged


@pytest.mark.parametrize("spelling", ["recipes/rr_cifar10.yaml", "rr_cifar10.yaml", "rr_cifar10"])
def test_bare_names_and_the_documented_recipes_folder_mean_a_bundled_recipe(tmp_path, monkeypatch, spelling):
    monkeypatch.chdir(tmp_path)  # no recipes/ here: as after pip install
    assert load_config(spelling) == load_config(BUNDLED_RECIPES / "rr_cifar10.yaml")


@pytest.mark.parametrize("spelling, message", [
    ("some/dir/rr_cifar10.yaml", r"recipe some/dir/rr_cifar10.yaml does not exist; only a bare name"),
    ("other/recipes/rr_cifar10.yaml", r"recipe other/recipes/rr_cifar10.yaml does not exist; only a bare name"),
    ("recipes/rr_cifar11.yaml", r"recipe recipes/rr_cifar11.yaml does not exist and no bundled recipe is named "
                                r"rr_cifar11.yaml"),
    ("rr_cifar11", r"no bundled recipe is named rr_cifar11.yaml"),
])
def test_a_missing_recipe_path_is_refused_not_replaced(tmp_path, monkeypatch, spelling, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=message):
        load_config(spelling)


def test_a_local_recipe_wins_over_the_bundled_one_of_the_same_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "rr_cifar10.yaml").write_text("train:\n  epochs: 3\n")
    assert load_config("recipes/rr_cifar10.yaml").train.epochs == 3


FILE_SUFFIXES = {"json", "yaml", "csv", "py", "ckpt", "safetensors", "npz", "txt", "md"}  # finetune.json is a file
# Not ours: detectron2's LazyConfig keys (export --format detectron2) and a checkpoint's state-dict key.
FOREIGN = {"train.init_checkpoint", "model.pixel_mean", "model.pixel_std", "method.roi_heads"}


def _string_literals(path):
    """Every string literal of a source file, f-strings with their fields as '{}' (so a token is never
    glued together across a field)."""
    import ast

    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.JoinedStr):
            yield "{}".join(part.value if isinstance(part, ast.Constant) else "{}" for part in node.values)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.value


def test_every_option_named_in_the_source_is_a_real_option():
    """Errors, warnings and docstrings tell users which option to set; each section.key they name
    must exist (signals' errors once said data.bandpass for signal.bandpass)."""
    import dataclasses
    import re
    from pathlib import Path

    import spatialssl

    sections = {f.name: f.default_factory() for f in dataclasses.fields(Config)}
    options = {f"{name}.{f.name}" for name, section in sections.items() for f in dataclasses.fields(section)}
    token = re.compile(rf"(?<![\w.])(?:{'|'.join(sections)})\.([A-Za-z_]\w*)")
    named, unknown = 0, []
    for path in sorted(Path(spatialssl.__file__).parent.rglob("*.py")):
        for text in _string_literals(path):
            for match in token.finditer(text):
                if match.group(1) in FILE_SUFFIXES or match.group(0) in FOREIGN:
                    continue
                named += 1
                if match.group(0) not in options:
                    unknown.append(f"{path.name}: {match.group(0)}")
    assert named > 100  # the scan sees the messages
    assert not unknown


def test_a_recipe_path_that_is_a_folder_is_named_as_one(tmp_path):
    (tmp_path / "rr_cifar10").mkdir()
    with pytest.raises(ConfigError, match="is a folder; pass a YAML file"):
        load_config(tmp_path / "rr_cifar10")


def test_statistics_need_a_value_per_channel_when_the_channels_are_given():
    with pytest.raises(ConfigError, match=r"data.mean needs 1 values \(one per channel: data.channels\)"):
        load_config(overrides=["data.channels=1", "data.mean=[0.5, 0.5, 0.5]"])
    assert load_config(overrides=["data.channels=1", "data.mean=[0.5]", "data.std=[0.2]"]).data.mean == [0.5]


def test_betas_reach_both_adams_and_sgd_refuses_them():
    from torch import nn

    from spatialssl.engine.optim import build_optimizer

    for name in ("adam", "adamw"):
        optimizer = build_optimizer(load_config(overrides=[f"optim.name={name}", "optim.betas=[0.8, 0.95]"]).optim,
                                    nn.Linear(2, 2))
        assert {tuple(group["betas"]) for group in optimizer.param_groups} == {(0.8, 0.95)}
    with pytest.raises(ConfigError, match="optim.betas must be left at its default with optim.name=sgd"):
        load_config(overrides=["optim.name=sgd", "optim.betas=[0.8, 0.95]"])


def test_finetuning_and_detection_overlays_do_not_inherit_maes_betas():
    from spatialssl.engine.config import overlay, read_recipe

    mae = load_config("mae_cifar10")
    assert mae.optim.betas == [0.9, 0.95]
    for name in ("finetune.yaml", "detect.yaml"):
        tuned = load_config(base=overlay(mae.to_dict(), read_recipe(BUNDLED_RECIPES / "overlays" / name)),
                            overrides=["finetune.scratch=true"])
        assert tuned.optim.betas == [0.9, 0.999], name

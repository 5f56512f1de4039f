"""A generated zoo of bad input (issue 26): the families the hostile probe found, generated over everything they
apply to, so a regression in any member shows. Each ends in one ConfigError or DataError naming the culprit
(the CLI's exit 2 and one `error:` line: tests/test_recipe_yaml.py, test_no_links.py, test_checkpoint.py)."""
import dataclasses
import json
import math
import typing

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from spatialssl.data import make_demo_images
from spatialssl.engine import build
from spatialssl.engine.config import BUNDLED_RECIPES, MAX_INTEGER, Config, load_config, read_recipe, sections
from spatialssl.engine.train import pretrain
from spatialssl.errors import ConfigError, DataError
from spatialssl.options import declared


def integer_options() -> list:
    """(key, a value past its ceiling) of every integer option the config declares."""
    found = []
    for name, section in sections(Config()).items():
        if not dataclasses.is_dataclass(section):
            continue
        hints = typing.get_type_hints(type(section))
        for field in dataclasses.fields(section):
            if int not in (hints[field.name], *typing.get_args(hints[field.name])):
                continue
            bound = declared(field).range
            ceiling = bound.high if bound is not None and bound.high != math.inf else MAX_INTEGER
            found.append((f"{name}.{field.name}", int(ceiling) + 1))
    return found


@pytest.mark.parametrize("key, value", integer_options())
def test_every_integer_option_past_its_ceiling_is_refused_naming_it(key, value):
    with pytest.raises(ConfigError, match=f"^{key} "):
        load_config(overrides=[f"{key}={value}"])


def test_the_zoo_covers_the_counts_that_allocate():
    keys = {key for key, _ in integer_options()}
    assert {"train.epochs", "train.batch_size", "method.num_patches", "method.augmentations", "part.num_pairs",
            "data.image_size", "model.depth", "data.workers"} <= keys


RECIPES = sorted(p.stem for p in BUNDLED_RECIPES.glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES)
def test_a_key_written_twice_in_any_bundled_recipe_is_refused(recipe, tmp_path):
    """Each recipe with its first section's first key repeated at the end of that section."""
    text = (BUNDLED_RECIPES / f"{recipe}.yaml").read_text()
    section, values = next(iter(read_recipe(recipe).items()))
    key, value = next(iter(values.items()))
    doubled = tmp_path / "doubled.yaml"
    doubled.write_text(text + f"\n{section}:\n  {key}: {json.dumps(value)}\n")
    with pytest.raises(ConfigError, match=f"duplicate key '{section}'"):
        load_config(doubled)
    assert load_config(recipe) is not None  # the recipe itself reads


@pytest.mark.parametrize("width, depth", [(10, 6), (100, 3), (400, 2), (2, 18)])
def test_alias_bombs_of_every_shape_are_refused(width, depth, tmp_path):
    lines = [f"a0: &a0 [{', '.join(['1'] * width)}]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, depth)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + f"\ntrain:\n  epochs: *a{depth - 1}\n")
    with pytest.raises(ConfigError, match="aliases expand"):
        load_config(bomb)


@pytest.fixture(scope="module")
def checkpoint_file(tmp_path_factory):
    cfg = load_config(base={"method": {"name": "random"}, "model": {"backbone": "resnet8"},
                            "train": {"knn_monitor": 0}})
    return pretrain(cfg, tmp_path_factory.mktemp("zoo") / "run", train_set=make_demo_images(8, size=16, seed=0),
                    progress=False)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.float16, torch.bfloat16, torch.float64,
                                   torch.bool, torch.uint8])
@pytest.mark.parametrize("key", ["method.backbone.conv1.weight", "method.backbone.bn1.running_var"])
def test_a_weight_of_any_other_dtype_is_refused(checkpoint_file, tmp_path, dtype, key):
    with safe_open(str(checkpoint_file), framework="pt") as f:
        tensors, metadata = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    tensors[key] = tensors[key].to(dtype)
    damaged = tmp_path / "last.ckpt"
    save_file(tensors, damaged, metadata=metadata)
    with pytest.raises(DataError, match=f"dtype: {key.split('.', 2)[2]} {str(dtype).split('.')[1]} vs float32"):
        build.load_backbone(damaged)


@pytest.mark.parametrize("depth", [1_000, 100_000])
@pytest.mark.parametrize("where", ["metrics", "config"])
def test_metadata_nested_deep_anywhere_is_one_line(checkpoint_file, tmp_path, depth, where):
    with safe_open(str(checkpoint_file), framework="pt") as f:
        tensors, info = {k: f.get_tensor(k) for k in f.keys()}, json.loads(f.metadata()["spatialssl"])
    del info[where]
    text = json.dumps(info)[:-1] + f', "{where}": ' + '{"a": ' * depth + "1" + "}" * (depth + 1)
    damaged = tmp_path / "last.ckpt"
    save_file(tensors, damaged, metadata={"spatialssl": text})
    with pytest.raises(DataError) as refused:
        build.load_backbone(damaged)
    assert str(damaged) in str(refused.value) and "\n" not in str(refused.value) and len(str(refused.value)) < 400

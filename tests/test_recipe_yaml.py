"""Recipes and overrides read strictly (issue 26): a duplicate key, an alias bomb, nesting too deep, a huge file
or one that is not a regular file each stop with exit 2 and one short `error:` line, before any data is read."""
import os
import time

import pytest

from spatialssl.cli import main
from spatialssl.engine.config import load_config
from spatialssl.engine.strict_yaml import MAX_NODES, expanded_size, load_yaml
from spatialssl.errors import ConfigError

BOMB = "\n".join(["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"] +
                 [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)] +
                 ["train:", "  epochs: *a8"])  # 10^9 values once expanded


def refused(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and len(err[0]) < 400, err
    return err[0]


def pretrain_with(recipe, tmp_path, capsys, *overrides) -> str:
    return refused(["pretrain", "--config", str(recipe), "--out", str(tmp_path / "run"), "--data",
                    str(tmp_path / "no-data"), *overrides], capsys)


def test_a_duplicate_key_is_refused_naming_it_and_its_lines(tmp_path, capsys):
    recipe = tmp_path / "dup.yaml"
    recipe.write_text("train:\n  epochs: 1\n  batch_size: 8\n  epochs: 5\n")
    err = pretrain_with(recipe, tmp_path, capsys)
    assert "duplicate key 'epochs' (first given at line 2)" in err and "line 4" in err
    twice = tmp_path / "sections.yaml"
    twice.write_text("train:\n  epochs: 1\nmodel:\n  depth: 2\ntrain:\n  batch_size: 8\n")
    assert "duplicate key 'train' (first given at line 1)" in pretrain_with(twice, tmp_path, capsys)


def test_merge_keys_may_be_overridden_beside_them():
    assert load_yaml("base: &b {epochs: 1, seed: 0}\ntrain:\n  <<: *b\n  epochs: 5\n")["train"] == {
        "epochs": 5, "seed": 0}


def test_an_alias_bomb_is_refused_before_it_is_built(tmp_path, capsys):
    recipe = tmp_path / "bomb.yaml"
    recipe.write_text(BOMB)
    started = time.perf_counter()
    err = pretrain_with(recipe, tmp_path, capsys)
    assert f"aliases expand to more than {MAX_NODES:,} values" in err and time.perf_counter() - started < 5


def test_an_alias_bomb_in_an_override_and_a_self_referring_alias():
    wide = "[" + ", ".join(["&x [" + ", ".join(["1"] * 400) + "]"] + ["*x"] * 400) + "]"  # 160,000 values
    with pytest.raises(ConfigError, match="aliases expand"):
        load_config(overrides=[f"augment.scale={wide}"])
    with pytest.raises(ConfigError, match="refers to the value that contains it"):
        load_config(overrides=["augment.scale=&a [1, *a]"])


def test_counting_expands_each_use_of_an_alias():
    import yaml

    node = yaml.compose("a: &a [1, 2]\nb: [*a, *a]\n")
    # mapping 1 + keys 2 + a's list 3 + b's list (1 + 2 x 3)
    assert expanded_size(node) == 1 + 2 + 3 + 7


def test_nesting_too_deep_is_one_line(tmp_path, capsys):
    recipe = tmp_path / "deep.yaml"
    recipe.write_text("train: " + "[" * 100_000 + "]" * 100_000 + "\n")
    assert "nested too deeply" in pretrain_with(recipe, tmp_path, capsys)


def test_a_huge_value_is_quoted_short(tmp_path, capsys):
    err = refused(["pretrain", "--out", str(tmp_path / "run"), "--data", str(tmp_path / "x"),
                   "train.epochs=[" + ", ".join(["123456789"] * 50_000) + "]"], capsys)
    assert "train.epochs" in err and "..." in err


def test_a_file_too_large_or_not_regular_is_said_to_be_so(tmp_path, capsys):
    large = tmp_path / "large.yaml"
    large.write_text("# padding\n" * 200_000)
    assert "too large for a recipe" in pretrain_with(large, tmp_path, capsys)
    assert "/dev/zero is not a regular file" in pretrain_with("/dev/zero", tmp_path, capsys)
    if hasattr(os, "mkfifo"):
        fifo = tmp_path / "fifo.yaml"
        os.mkfifo(fifo)
        assert "is not a regular file" in pretrain_with(fifo, tmp_path, capsys)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_as_checkpoint_or_data_is_said_not_to_be_a_regular_file(tmp_path, capsys):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert "checkpoint " + str(fifo) + " is not a regular file" in refused(
        ["linear-eval", "--checkpoint", str(fifo), "--data", str(tmp_path)], capsys)
    assert f"--data {fifo} is not a regular file or a folder" in refused(
        ["pretrain", "--data", str(fifo), "--out", str(tmp_path / "run")], capsys)


@pytest.mark.parametrize("override, said", [
    ("train.epochs=99999999999999999999999", "train.epochs must be in [0, 1000000]"),
    ("method.num_patches=100000000", "method.num_patches must be in [1, 1024]"),
    ("part.num_pairs=100000000000", "part.num_pairs must be in [1, 1000000]"),
    ("train.batch_size=100000000", "train.batch_size must be in [2, 1048576]"),
    ("data.image_size=1000000", "data.image_size must be in [1, 16384]"),
    ("train.seed=99999999999", "train.seed must be at most 2,147,483,647 in size"),
])
def test_numbers_that_would_overflow_or_allocate_the_impossible_are_refused_before_the_data(override, said, tmp_path,
                                                                                               capsys):
    started = time.perf_counter()
    err = refused(["pretrain", "--out", str(tmp_path / "run"), "--data", str(tmp_path / "none"), override], capsys)
    assert said in err and time.perf_counter() - started < 5

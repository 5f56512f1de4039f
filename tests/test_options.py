"""Option declarations: every option documented, every declared range, length and choice enforced by
load_config, and `spatialssl options` and each command's --help showing them."""
import argparse
import dataclasses
import json
import math
from typing import get_args, get_type_hints

import pytest

from spatialssl.cli import build_parser, main
from spatialssl.engine.config import Config, load_config, sections
from spatialssl.errors import ConfigError
from spatialssl.options import Range, declared, option

DEFAULTS = sections(Config())
OPTIONS = {f"{title}.{f.name}": (f, get_type_hints(type(section))[f.name], getattr(section, f.name))
           for title, section in DEFAULTS.items() for f in dataclasses.fields(section)}
COMMANDS = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices


def test_every_option_of_every_section_has_a_one_line_doc():
    assert {"optim.lr", "signal.test_fraction", "detect.image_size"} <= set(OPTIONS)
    for key, (f, _, _) in OPTIONS.items():
        doc = declared(f).doc
        assert doc.strip() and "\n" not in doc, key
    for title, section in DEFAULTS.items():  # a dataclass without a docstring gets its signature as one
        assert not type(section).__doc__.startswith(f"{type(section).__name__}("), title


def _number(value: float):
    """An integral bound as an int, so an int option is given an int."""
    return int(value) if float(value).is_integer() else value


def _violations():
    """(key, value, words the error must hold) for each declared rule, generated from the declarations:
    a declaration that load_config does not enforce fails its case."""
    for key, (f, hint, default) in OPTIONS.items():
        declaration = declared(f)
        rule, count = declaration.range, declaration.length or 1
        listed = list in (hint, *get_args(hint))
        bad = []
        if rule is not None:
            bad.append(rule.low - 1 if rule.low_closed else rule.low)
            if rule.high != math.inf:
                bad.append(rule.high + 1 if rule.high_closed else rule.high)
        for value in bad:
            yield key, [_number(value)] * count if listed else _number(value), str(rule)
        if declaration.length is not None:
            yield key, default + default[:1], f"a list of {declaration.length} numbers"
        if declaration.choices is not None:
            numeric = all(isinstance(c, int) for c in declaration.choices)
            outside = max(declaration.choices) + 1 if numeric else "no_such_choice"
            yield key, [outside] if listed else outside, "may hold" if listed else "is unknown; choose one of"


VIOLATIONS = list(_violations())


def test_the_declarations_give_many_rules_to_check():
    assert len(VIOLATIONS) > 100
    assert {key for key, _, _ in VIOLATIONS} >= {"optim.lr", "optim.betas", "signal.bandpass", "eval.patches",
                                                 "method.name", "train.precision"}


@pytest.mark.parametrize("key, value, words", VIOLATIONS, ids=[f"{k}={json.dumps(v)}" for k, v, _ in VIOLATIONS])
def test_every_declared_rule_is_enforced_naming_its_key(key, value, words):
    with pytest.raises(ConfigError) as refused:
        load_config(overrides=[f"{key}={json.dumps(value)}"])
    message = str(refused.value)
    assert message.startswith(key) and words in message and "\n" not in message


def test_ranges_are_read_as_written():
    assert [Range.parse("[0, 1)").holds(v) for v in (0, 0.5, 1, float("nan"), True)] == [True, True, False,
                                                                                           False, False]
    assert Range.parse("> 0").holds(1e-9) and not Range.parse("> 0").holds(0)
    assert Range.parse("(0, 10]").holds(10) and not Range.parse("(0, 10]").holds(0)
    assert str(Range.parse("[0,1)")) == "[0, 1)" and Range.parse(">= 1").phrase == ">= 1"
    with pytest.raises(ValueError, match="neither"):
        option(1, "a doc", range="positive")


def test_options_lists_every_section_with_defaults_and_ranges(capsys):
    assert main(["options"]) == 0
    out = capsys.readouterr().out
    assert "  optim.lr = 0.001  (float, > 0)  " in out
    assert "  optim.betas = [0.9, 0.999]  (list of 2, each in [0, 1))  " in out
    assert "  method.name = sr  (str: rr | sr | part" in out
    assert all(f"\n{title}: " in f"\n{out}" for title in DEFAULTS)
    assert all(f"  {key} = " in out for key in OPTIONS)


def test_options_of_one_section(capsys):
    assert main(["options", "signal"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("signal: How recordings")
    assert "  signal.test_fraction = 0.2  (float, in (0, 1))  share of recordings" in out
    assert "optim." not in out


def test_options_of_one_key_says_its_rule_as_the_error_does(capsys):
    assert main(["options", "optim.lr"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("optim.lr: the learning rate")
    assert "  default  0.001\n" in out and "  type     float\n" in out and "  must be  a finite number > 0\n" in out
    with pytest.raises(ConfigError, match="optim.lr must be a finite number > 0"):
        load_config(overrides=["optim.lr=0"])


@pytest.mark.parametrize("name, suggestion", [("optim.lrr", "did you mean optim.lr"),
                                              ("lr", "did you mean optim.lr or eval.lr?"),
                                              ("optm", "did you mean optim"),
                                              ("nothing_like_it", "no config section or option 'nothing_like_it';")])
def test_an_unknown_name_is_one_error_line_with_the_sections(capsys, name, suggestion):
    assert main(["options", name]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: no config section or option '{name}'") and err.count("\n") == 1
    assert suggestion in err and "the sections are data, signal, model," in err


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_help_is_short_and_shows_its_own_examples(capsys, monkeypatch, command):
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = capsys.readouterr().out
    assert len(out.splitlines()) <= 40
    examples = out.split("\nexamples:\n")[1].splitlines()
    assert 1 <= len(examples) <= 3
    assert all(line.startswith(f"  spatialssl {command}") for line in examples), examples


def test_the_top_level_help_keeps_a_short_list_of_examples(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit):
        main(["--help"])
    examples = capsys.readouterr().out.split("\nexamples:\n")[1].split("\n\n")[0].splitlines()
    assert 2 <= len(examples) <= 5 and "  spatialssl options optim" in examples


def test_overrides_point_at_the_options_listing(capsys):
    for command in ("pretrain", "finetune"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "section.key=value (see `spatialssl options`)" in " ".join(capsys.readouterr().out.split())

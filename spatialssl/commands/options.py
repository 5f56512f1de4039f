"""``spatialssl options``: every config option with its default, type, range or choices and meaning, read
from the sections' declarations (``spatialssl.options.option``), the ones ``load_config`` enforces."""
from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Optional, Union, get_args, get_origin, get_type_hints

from ..engine.config import Config, declared_rule, sections
from ..errors import ConfigError
from ..options import Option, declared


def describe(name: Optional[str] = None) -> str:
    """Every section (``None``), one section (``optim``) or one option (``optim.lr``), as text."""
    found = sections(Config())
    if name is None:
        return "\n\n".join(_section(title, section) for title, section in found.items())
    if name in found:
        return _section(name, found[name])
    title, _, key = name.partition(".")
    fields = {f.name: f for f in dataclasses.fields(found[title])} if title in found else {}
    if key not in fields:
        raise ConfigError(_unknown(name, found))
    return _option(title, found[title], fields[key])


def _section(title: str, section: Any) -> str:
    hints = get_type_hints(type(section))
    lines = [f"{title}: {_about(section)}"]
    for f in dataclasses.fields(section):
        declaration = declared(f)
        lines.append(f"  {title}.{f.name} = {_shown(getattr(section, f.name))}  ({_rules(declaration, hints[f.name])})"
                     f"  {declaration.doc}")
    return "\n".join(lines)


def _option(title: str, section: Any, f: dataclasses.Field) -> str:
    declaration, hint, default = declared(f), get_type_hints(type(section))[f.name], getattr(section, f.name)
    lines = [f"{title}.{f.name}: {declaration.doc}", f"  default  {_shown(default)}", f"  type     {_type(hint)}"]
    if declaration.range is not None or declaration.length is not None:
        lines.append(f"  must be  {declared_rule(declaration, hint)}")
    if declaration.choices is not None:
        each = " (each item)" if isinstance(default, list) else ""
        lines.append(f"  one of   {' | '.join(map(str, declaration.choices))}{each}")
    lines.append(f"  set it   {title}.{f.name}={_shown(default, ',')} after a command's options, or under {title}: "
                 f"in a recipe")
    lines.append(f"  section  {title}: {_about(section)}")
    return "\n".join(lines)


def _rules(declaration: Option, hint: Any) -> str:
    """The type and what the value must keep to, e.g. ``float, > 0`` or ``list of 2, each in [0, 1)``."""
    listed = list in (hint, *get_args(hint))
    rules = [_type(hint).replace(" or null", "")]
    if declaration.length is not None:
        rules[0] += f" of {declaration.length}"
    if declaration.range is not None:
        rules.append(("each " if listed else "") + declaration.range.phrase)
    if declaration.choices is not None:
        rules[0] += (", each one of " if listed else ": ") + " | ".join(map(str, declaration.choices))
    if type(None) in get_args(hint):
        rules.append("or null")
    return ", ".join(rules)


def _type(hint: Any) -> str:
    if get_origin(hint) is Union:
        return " or ".join("null" if h is type(None) else h.__name__ for h in get_args(hint))
    return hint.__name__


def _shown(value: Any, comma: str = ", ") -> str:
    """A value as it is written in a recipe or, with ``comma=","``, in an override (YAML)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return f"[{comma.join(_shown(v) for v in value)}]"
    return str(value)


def _about(section: Any) -> str:
    """A section's docstring as one line."""
    return " ".join(type(section).__doc__.split()).replace("``", "`")


def _unknown(name: str, found: dict) -> str:
    keys = [f"{title}.{f.name}" for title, section in found.items() for f in dataclasses.fields(section)]
    same_name = [key for key in keys if key.rpartition(".")[2] == name]  # "lr" for optim.lr, eval.lr
    close = same_name or difflib.get_close_matches(name, [*found, *keys], n=3)
    hint = f"; did you mean {_either(close)}?" if close else ";"
    return f"no config section or option '{name}'{hint} the sections are {', '.join(found)}"


def _either(names: list) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"

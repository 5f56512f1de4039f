"""How a config section declares its options: each field's meaning, and the range, length or choices
its value must keep to.

``option()`` builds the dataclass field; the config's checks (``engine/config.validate``) and
``spatialssl options`` both read what it declares, so the listing cannot promise a rule that is
not enforced.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any, Optional

_ONE_SIDED = re.compile(r"(>=?)\s*([\d.]+)")
_INTERVAL = re.compile(r"([\[(])\s*([\d.]+)\s*,\s*([\d.]+)\s*([\])])")


def _number(value: float) -> str:
    """A bound as written: whole numbers in full (1000000, not 1e+06)."""
    return str(int(value)) if value.is_integer() else f"{value:g}"


@dataclass(frozen=True)
class Range:
    """Where a number must lie: from ``low`` (included when ``low_closed``) to ``high``."""
    low: float
    high: float = math.inf
    low_closed: bool = True
    high_closed: bool = False

    @classmethod
    def parse(cls, text: str) -> "Range":
        """A range written as a user reads it: ``>= 1``, ``> 0``, ``[0, 1)``, ``(0, 1)``, ``[0, 10]``."""
        one_sided, interval = _ONE_SIDED.fullmatch(text), _INTERVAL.fullmatch(text)
        if one_sided:
            return cls(float(one_sided[2]), low_closed=one_sided[1] == ">=")
        if interval:
            return cls(float(interval[2]), float(interval[3]), interval[1] == "[", interval[4] == "]")
        raise ValueError(f"range {text!r} is neither '>= x', '> x' nor an interval such as '[0, 1)'")

    def holds(self, value: Any) -> bool:
        """Only finite numbers hold: NaN passes no comparison, and a bool is no number here."""
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        above = value >= self.low if self.low_closed else value > self.low
        below = value <= self.high if self.high_closed else value < self.high
        return above and below

    def __str__(self) -> str:
        if self.high == math.inf:
            return f"{'>=' if self.low_closed else '>'} {_number(self.low)}"
        return (f"{'[' if self.low_closed else '('}{_number(self.low)}, {_number(self.high)}"
                f"{']' if self.high_closed else ')'}")

    @property
    def phrase(self) -> str:
        """What a value must be, after "must be": ``>= 1`` or ``in [0, 1)``."""
        return str(self) if self.high == math.inf else f"in {self}"


@dataclass(frozen=True)
class Option:
    """A field's declaration: ``doc`` is one line of meaning; a list option's ``range`` and ``choices``
    apply to each of its items."""
    doc: str
    range: Optional[Range] = None
    choices: Optional[tuple] = None
    length: Optional[int] = None


_KEY = "spatialssl.option"


def option(default: Any, doc: str, *, range: Optional[str] = None, choices: Any = None,
           length: Optional[int] = None) -> Any:
    """A dataclass field with its declaration; a list default is copied for every instance. (Typed Any as
    ``dataclasses.field`` is, so that it stands where the field's value is declared.)"""
    declaration = Option(doc, Range.parse(range) if range else None,
                         tuple(choices) if choices is not None else None, length)
    metadata = {_KEY: declaration}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def declared(field: dataclasses.Field) -> Option:
    """The declaration of a field built by ``option()``."""
    if _KEY not in field.metadata:
        raise TypeError(f"the option {field.name} was not declared with spatialssl.options.option()")
    return field.metadata[_KEY]

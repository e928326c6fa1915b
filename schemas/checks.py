"""Field checks the broker-config and scenario schemas share: each refuses a wrong type, not coerces it.

Each factory returns a ``BeforeValidator`` function whose error says what is allowed, in the
words of the format (``must be a positive number, got '10'``); ``true`` is no number, ``"10"`` no
seconds, ``500.5`` no integer. A number's range is also stated as pydantic constraints
(``Ranged``, ``within``), so the JSON Schema carries it (``minimum``, ``exclusiveMinimum``, ...):
the check runs first and says what is wrong in the format's words, the constraints then hold by
construction.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Any

from annotated_types import Ge, GroupedMetadata, Gt, Le, Lt
from pydantic import BeforeValidator


def _real(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def number(
    say: str,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    integer: bool = False,
) -> Callable[[object], object]:
    """A number (an integer with ``integer``) within ``low``..``high``, each end open if asked."""

    def check(value: object) -> object:
        ok = _real(value) and (not integer or isinstance(value, int))
        if ok and low is not None:
            ok = value > low if low_open else value >= low  # type: ignore[operator]
        if ok and high is not None:
            ok = value < high if high_open else value <= high  # type: ignore[operator]
        if not ok:
            raise ValueError(f"{say}, got {value!r}")
        return value if integer else float(value)  # type: ignore[arg-type]

    return check


@dataclass(frozen=True)
class Ranged(GroupedMetadata):
    """A field's range as constraints (in the model and its JSON Schema), checked first by ``check``.

    ``Annotated[float, Ranged(check, gt=0)]``: ``check`` (a ``BeforeValidator`` function) refuses
    what is out of range in the format's own words; the constraints say the range to the schema.
    """

    check: Callable[[object], object]
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None

    def __iter__(self) -> Iterator[Any]:
        for kind, bound in ((Gt, self.gt), (Ge, self.ge), (Lt, self.lt), (Le, self.le)):
            if bound is not None:
                yield kind(bound)
        yield BeforeValidator(self.check)


def within(
    say: str,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    integer: bool = False,
    check: Callable[[Callable[[object], object]], Callable[[object], object]] | None = None,
) -> Ranged:
    """``number(...)`` with its range as constraints too; ``check`` wraps the check (``optional``)."""
    plain = number(say, low, high, low_open=low_open, high_open=high_open, integer=integer)
    return Ranged(
        check(plain) if check is not None else plain,
        gt=low if low_open else None,
        ge=None if low_open else low,
        lt=high if high_open else None,
        le=None if high_open else high,
    )


def text(say: str, *, empty: bool = False) -> Callable[[object], object]:
    """A string, non-empty unless ``empty``."""

    def check(value: object) -> object:
        if not isinstance(value, str) or (not empty and not value.strip()):
            raise ValueError(f"{say}, got {value!r}")
        return value

    return check


def one_of(choices: Collection[str], what: str = "") -> Callable[[object], object]:
    """One of ``choices``; the error lists them."""

    def check(value: object) -> object:
        if not isinstance(value, str) or value not in choices:
            raise ValueError(f"{what or 'unknown value'} {value!r} (known: {', '.join(choices)})")
        return value

    return check


def host_port(*, empty: bool) -> Callable[[object], object]:
    """``HOST:PORT`` (or empty text when ``empty``)."""

    def check(value: object) -> object:
        if not isinstance(value, str) or (not (empty and value == "") and ":" not in value):
            raise ValueError(f"expected HOST:PORT, got {value!r}")
        return value

    return check


def flag(value: object) -> object:
    """``true`` or ``false``, not ``"yes"`` or ``1``."""
    if not isinstance(value, bool):
        raise ValueError(f"true or false, got {value!r}")
    return value


def listed(say: str, *, nonempty: bool = False) -> Callable[[object], object]:
    """A list, non-empty if asked (its items are checked by their own type, each at its index)."""

    def check(value: object) -> object:
        if not isinstance(value, list) or (nonempty and not value):
            raise ValueError(f"{say}, got {value!r}")
        return value

    return check


__all__ = ["Ranged", "flag", "host_port", "listed", "number", "one_of", "text", "within"]

"""pydantic's errors said as this project says them: ``path: what is wrong``, the path in the file's own terms.

Every schema here reads a parsed YAML mapping with a strict model (``STRICT``: types checked, not
coerced; unknown fields refused). ``problems`` turns a ``ValidationError`` into one line per
problem: ``border_ports[2].label_ranges[0]: 5000-4000 is empty``. A validator that finds problems
below its own place raises a ``ValueError`` whose lines are ``relative.path: message`` (see
``Below``), and each line lands at its own path.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import ConfigDict, ValidationError

STRICT = ConfigDict(strict=True, extra="forbid", frozen=True)

#: Parts of pydantic's locations that name the union member or the validator it tried, not the data.
_NOT_DATA = ("function-", "constrained-", "lax-or-strict", "json-or-python", "tagged-union")


def join(path: str, part: str | int) -> str:
    """``path`` one step down: ``a[0]`` for an index, ``a.b`` for a field."""
    if isinstance(part, int):
        return f"{path}[{part}]"
    return f"{path}.{part}" if path else part


class Below(ValueError):
    """Problems a validator found below its own place, each ``relative.path: message`` on its line."""

    def __init__(self, items: Iterable[str]) -> None:
        super().__init__("\n".join(items))


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _say(error: Any) -> str:
    kind, got = error["type"], error.get("input")
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        return "unknown field"
    if kind in ("model_type", "dict_type", "model_attributes_type", "dataclass_type"):
        return "must be a mapping"
    if kind in ("list_type", "tuple_type"):
        return "must be a list"
    if kind == "string_type":
        return f"{_shown(got)} must be text"
    if kind == "bool_type":
        return f"{_shown(got)} must be true or false"
    if kind in ("int_type", "int_from_float", "int_parsing"):
        return f"{_shown(got)} must be an integer"
    if kind in ("float_type", "float_parsing"):
        return f"{_shown(got)} must be a number"
    if kind in ("too_long", "too_short"):
        return f"{error['msg'][0].lower()}{error['msg'][1:]}"
    message = str(error["msg"]).removeprefix("Value error, ")
    return message if kind == "value_error" else f"{message[0].lower()}{message[1:]}, got {_shown(got)}"


def _where(path: str, loc: Sequence[int | str]) -> str:
    out = path
    for part in loc:
        if isinstance(part, str) and (part.startswith(_NOT_DATA) or part in ("int", "str", "float", "bool")):
            continue
        out = join(out, part)
    return out


def problems(exc: ValidationError, path: str = "") -> list[str]:
    """Every problem of ``exc`` as ``path: message``, in the order found, each said once."""
    out: list[str] = []
    for error in exc.errors():
        where = _where(path, tuple(error["loc"]))
        said = _say(error)
        lines = said.split("\n") if error["type"] == "value_error" else [said]
        for line in lines:
            rel, sep, message = line.partition(": ")
            # A ``Below`` line names its own place under ``where``; any other line is about ``where``.
            if sep and rel and " " not in rel:
                item = f"{where}.{rel}" if where and not rel.startswith("[") else f"{where}{rel}"
                item = f"{item}: {message}"
            else:
                item = f"{where}: {line}" if where else line
            if item not in out:
                out.append(item)
    return out


__all__ = ["STRICT", "Below", "join", "problems"]

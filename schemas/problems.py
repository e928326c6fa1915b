"""pydantic's errors said as this project says them: ``path: what is wrong``, the path in the file's own terms.

Every schema here reads a parsed YAML mapping with a strict model (``STRICT``: types checked, not
coerced; unknown fields refused). ``problems`` turns a ``ValidationError`` into one line per
problem: ``border_ports[2].label_ranges[0]: 5000-4000 is empty``. A validator that finds problems
below its own place raises a ``ValueError`` whose lines are ``relative.path: message`` (see
``Below``), and each line lands at its own path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, get_args

from pydantic import BaseModel, ConfigDict, ValidationError

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


def _model_in(annotation: object) -> type[BaseModel] | None:
    """The model class an annotation holds (through Optional, list, dict and Annotated), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _known_at(root: type[BaseModel] | None, loc: Sequence[int | str]) -> list[str]:
    """The fields of the model at ``loc`` (the place of an unknown key), for saying which keys there are."""
    model = root
    for part in loc:
        if model is None:
            return []
        if isinstance(part, str) and part in _keys(model):
            model = _model_in(_keys(model)[part].annotation)
    return list(_keys(model)) if model is not None else []


def _keys(model: type[BaseModel]) -> dict[str, Any]:
    """A model's fields by the key a file writes (``as`` for a field ``as_`` with that alias)."""
    return {f.alias or name: f for name, f in model.model_fields.items()}


def _where(path: str, loc: Sequence[int | str]) -> str:
    out = path
    for part in loc:
        if isinstance(part, str) and (part.startswith(_NOT_DATA) or part in ("int", "str", "float", "bool")):
            continue
        out = join(out, part)
    return out


def problems(
    exc: ValidationError,
    path: str = "",
    *,
    root: type[BaseModel] | None = None,
    allowed: Mapping[str, str] | None = None,
) -> list[str]:
    """Every problem of ``exc`` as ``path: message``, in the order found, each said once.

    With ``root`` (the model validated) an unknown key is told the known ones; with ``allowed`` a
    missing field is told what it takes (``required, a positive integer``).
    """
    out: list[str] = []
    # An unknown key first: it is often a misspelt one, which then also shows up as a missing field.
    errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
    for error in errors:
        loc = tuple(error["loc"])
        where = _where(path, loc)
        said = _say(error)
        if error["type"] == "extra_forbidden" and root is not None:
            known = _known_at(root, loc[:-1])
            said = f"unknown key (known: {', '.join(known)})" if known else said
        elif error["type"] == "missing" and allowed and isinstance(loc[-1], str) and loc[-1] in allowed:
            said = f"required, {allowed[loc[-1]]}"
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

"""What the CLI prints: the consoles, typed JSON of replies, errors as JSON, times with their zone.

``--json`` output is one stable, typed form for every command:

* numbers are JSON numbers (protobuf's JSON mapping writes 64-bit integers as strings; this does not);
* enum values are named as the tables print them (``ACTIVE``, not ``SLICE_STATE_ACTIVE``);
* timestamps are ISO 8601 in UTC with their zone (``2026-11-25T11:50:03.120000+00:00``), unset ones ``null``;
* an optional field that is not set is ``null``; every other field is present, with its default;
* an error is ``{"error": {"code": ..., "message": ..., "field": ...}}`` on stdout, and the exit status
  is not 0 (``code`` is a gRPC status name, or ``INVALID_ARGUMENT`` for a bad file or option).

Tables are laid out for the terminal's width, and when stdout is not a terminal (a pipe, a file) they
are not cut at 80 columns.
"""

from __future__ import annotations

import base64
import json
import re
import sys
from datetime import UTC, datetime
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from rich.console import Console

#: The width of tables that go to a pipe or file: wide enough that no row of ours is cut.
PIPE_WIDTH = 400


out = Console(width=None if sys.stdout.isatty() else PIPE_WIDTH)
err = Console(stderr=True, width=None if sys.stderr.isatty() else PIPE_WIDTH)

_INT_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED32,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED32,
        FieldDescriptor.TYPE_SFIXED64,
    }
)


def _enum_prefix(enum: Any) -> str:
    # SliceState → SLICE_STATE_, the prefix every value of the enum carries by the style guide.
    return re.sub(r"(?<!^)(?=[A-Z])", "_", enum.name).upper() + "_"


def enum_name(enum: Any, number: int) -> str:
    """An enum value as the tables print it: ``SLICE_STATE_HELD`` → ``HELD`` (an unknown number as itself)."""
    value = enum.values_by_number.get(number)
    if value is None:
        return str(number)
    return str(value.name).removeprefix(_enum_prefix(enum))


def timestamp_text(ts: Timestamp, *, sep: str = "T", timespec: str = "auto") -> str:
    """A timestamp in ISO 8601 with its zone, in UTC (``2026-11-25T11:50:03+00:00``)."""
    return datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, tz=UTC).isoformat(sep=sep, timespec=timespec)


def table_time(ts: Timestamp) -> str:
    """A timestamp as the tables print it: seconds, UTC, with the zone (``2026-11-25 11:50:03+00:00``)."""
    return timestamp_text(ts, sep=" ", timespec="seconds") if ts.seconds or ts.nanos else "-"


def _scalar(field: Any, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_ENUM:
        return enum_name(field.enum_type, value)
    if field.type == FieldDescriptor.TYPE_BYTES:
        return base64.b64encode(value).decode()
    if field.type in _INT_TYPES:
        return int(value)
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return float(value)
    return value


def _value(field: Any, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return message_json(value)
    return _scalar(field, value)


def _is_map(field: Any) -> bool:
    entry = field.message_type
    return field.type == FieldDescriptor.TYPE_MESSAGE and entry is not None and entry.GetOptions().map_entry


def message_json(msg: Message) -> Any:
    """A protobuf message as typed JSON data (see the module docstring for the form)."""
    desc = msg.DESCRIPTOR
    if desc.full_name == "google.protobuf.Timestamp":
        assert isinstance(msg, Timestamp)
        return timestamp_text(msg) if msg.seconds or msg.nanos else None
    data: dict[str, Any] = {}
    for field in desc.fields:
        value = getattr(msg, field.name)
        entry = field.message_type
        if entry is not None and _is_map(field):
            value_field = entry.fields_by_name["value"]
            data[field.name] = {k: _value(value_field, v) for k, v in sorted(value.items())}
        elif field.is_repeated:
            data[field.name] = [_value(field, v) for v in value]
        elif field.has_presence and not msg.HasField(field.name):
            data[field.name] = None
        else:
            data[field.name] = _value(field, value)
    return data


def print_json(data: Any) -> None:
    """One JSON document on stdout."""
    print(json.dumps(data, indent=2, ensure_ascii=False))


def error_json(code: str, message: str, field: str = "") -> dict[str, Any]:
    """The JSON form of an error: ``{"error": {"code", "message", "field"}}``."""
    return {"error": {"code": code, "message": message, "field": field}}


__all__ = [
    "PIPE_WIDTH",
    "enum_name",
    "err",
    "error_json",
    "message_json",
    "out",
    "print_json",
    "table_time",
    "timestamp_text",
]

"""The log of ``fedbroker serve``: text for people, or JSON lines with the ids as fields.

``--log-format json`` writes one JSON object per line on stderr::

    {"time": "2026-11-25T11:50:03.120+00:00", "level": "INFO", "logger": "broker.core.lifecycle",
     "sp_id": "L1", "message": "slice s-… -> HELD", "slice_id": "s-…", "request_id": "r-7", "caller": "T"}

``slice_id``, ``request_id`` and ``caller`` are there when known: set around each call by the servicers
(``broker.core.log_fields``), given by the code that logs, or, for the lifecycle's "slice ID: …"
lines, read from the message's first argument. An exception is one more field, ``exc``, never a
line of its own.

gRPC's C core writes its own log straight to stderr, around Python's logging; it would break the
lines (and repeat, in its words, what the broker says better). The console script turns it off
before gRPC loads, unless the environment sets ``GRPC_VERBOSITY`` or ``GRPC_TRACE``
(``broker/console.py``).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from broker.core.log_fields import FIELDS, FieldsFilter

FORMATS = ("text", "json")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with the SP id and the call's ids as fields."""

    def __init__(self, sp_id: str) -> None:
        super().__init__()
        self._sp_id = sp_id

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "sp_id": self._sp_id,
            "message": record.getMessage(),
        }
        for key in FIELDS:
            value = getattr(record, key, "")
            if value:
                line[key] = str(value)
        if "slice_id" not in line and isinstance(record.msg, str) and record.msg.startswith("slice %s"):
            args = record.args if isinstance(record.args, tuple) else ()
            if args:
                line["slice_id"] = str(args[0])
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def configure(level: str, log_format: str, sp_id: str) -> None:
    """The process's logging: one stderr handler, in ``log_format``, at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(FieldsFilter())
    if log_format == "json":
        handler.setFormatter(JsonFormatter(sp_id))
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s {sp_id} %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.captureWarnings(True)


__all__ = ["FORMATS", "JsonFormatter", "configure"]

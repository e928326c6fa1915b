"""The ids a log line carries as fields: set around one call, read by the process's log formatter.

A servicer sets ``slice_id`` and ``request_id`` (and who calls) for the duration of a call; everything
logged while it runs, in tasks it starts too (asyncio copies the context), carries them. The
formatter of ``serve --log-format json`` writes them as JSON fields; the text format ignores them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType

#: The fields a log record may carry (beside the SP id, which the process adds).
FIELDS = ("slice_id", "request_id", "caller")

_CURRENT: ContextVar[Mapping[str, str]] = ContextVar("fedbroker_log_fields", default=MappingProxyType({}))


@contextmanager
def log_fields(**fields: str) -> Iterator[None]:
    """Log lines inside the block carry ``fields`` (empty values are left out; inner blocks add to outer)."""
    token = _CURRENT.set({**_CURRENT.get(), **{k: v for k, v in fields.items() if v}})
    try:
        yield
    finally:
        _CURRENT.reset(token)


def current() -> Mapping[str, str]:
    """The fields set around the running code."""
    return _CURRENT.get()


class FieldsFilter(logging.Filter):
    """Copies the current fields onto each record, unless the call that logged gave its own (``extra=``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _CURRENT.get().items():
            if not getattr(record, key, ""):
                setattr(record, key, value)
        return True


__all__ = ["FIELDS", "FieldsFilter", "current", "log_fields"]

"""The REST API's event log: every event numbered and kept in the store, so a client can resume after a gap.

Each slice event (``SliceManager.tap``: called as it is emitted, so none is dropped) becomes the
REST events it makes (``broker.api.rest_events``), each numbered by the store in the order they
happened and kept with the slice's requester, for tenancy. Both the SSE stream and the hub read
this log through a cursor (the number of the last event they sent): live and replayed events come
the same way, so a client that reconnects with ``Last-Event-ID`` gets exactly the events after it
that it may see, in order, with no gap and none twice, across a broker restart too.

The newest ``keep`` events are kept; a cursor older than that (or newer than any event: a log that
started afresh) cannot be resumed, and the stream says so (``event: reset``) instead of leaving a
silent gap.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from broker.core.events import SliceEvent
from broker.core.storage import SliceStore
from broker.security.accounts import Role
from broker.security.auth import Principal
from slicing.errors import FedError

log = logging.getLogger(__name__)
#: The most events one read of the log returns.
BATCH = 100
#: What an event becomes in the log: (key, requester, slice id, body, body as an SP above reads it or '').
Row = tuple[str, str, str, str, str]


class EventLog:
    """The numbered events of one broker, in its store, and a wake-up for the readers waiting for more."""

    def __init__(self, store: SliceStore, encode: Callable[[SliceEvent], Sequence[Row]], *, keep: int) -> None:
        self._store = store
        self._encode = encode
        self._keep = keep
        self._head = store.event_bounds()[1]
        self._grown = asyncio.Event()
        self._closed = False

    @property
    def head(self) -> int:
        """The number of the newest event this process knows of (0: none yet)."""
        return self._head

    def record(self, event: SliceEvent) -> None:
        """Number and keep the REST events ``event`` makes, and wake the readers."""
        rows = self._encode(event)
        if not rows:
            return
        try:
            numbers = self._store.append_events(rows, keep=self._keep)
        except FedError as exc:  # the store is away: a client resuming across this event will miss it
            log.warning("slice %s: event not kept, not told to REST clients (%s)", event.slice_id, exc)
            return
        self._head = max(self._head, *numbers)
        self._grown.set()
        self._grown = asyncio.Event()

    def resume(self, last: int | None) -> tuple[int, str]:
        """Where a reader that last got event ``last`` (None: a new reader) starts, and why it must reload if so.

        The reason is empty when the events after ``last`` are all kept; otherwise the reader starts
        at the newest event and the reason says what was lost.
        """
        if last is None:
            return self._head, ""
        oldest, newest = self._store.event_bounds()
        newest = max(newest, self._head)
        if last > newest:
            why = f"event {last} is newer than any event of this broker ({newest}): its event log started afresh"
        elif oldest and last < oldest - 1:
            why = (
                f"the events after {last} are no longer kept (the oldest kept is {oldest}; the broker keeps the "
                f"newest {self._keep}, retention.events_max)"
            )
        else:
            return last, ""
        return newest, f"{why}; read the current state again (GET the services and orders), then follow from here"

    def after(self, seq: int, principal: Principal, slice_id: str = "") -> list[tuple[int, dict[str, Any]]]:
        """The events after ``seq`` that ``principal`` may see (of one slice if given), oldest first, at most BATCH."""
        requester = None if principal.sees_all else principal.id
        rows = self._store.events_after(seq, requester=requester, limit=BATCH, slice_id=slice_id)
        out: list[tuple[int, dict[str, Any]]] = []
        for number, body, above in rows:
            event = json.loads(above if above and principal.role is Role.PEER_SP else body)
            event["eventId"] = str(number)
            out.append((number, event))
        return out

    async def grown(self, seen: int, timeout_s: float) -> bool:
        """Wait until there is an event after ``seen`` (True), ``timeout_s`` passed or the log closed (False)."""
        if self._closed:
            return False
        if self._head > seen:
            return True
        grown = self._grown
        try:
            async with asyncio.timeout(timeout_s):
                await grown.wait()
        except TimeoutError:
            return False
        return not self._closed

    def close(self) -> None:
        """Wake every waiting reader for the last time (at shutdown)."""
        self._closed = True
        self._grown.set()


__all__ = ["BATCH", "EventLog", "Row"]

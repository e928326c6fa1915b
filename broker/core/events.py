"""Slice events: every state change a broker makes, fanned out to whoever watches."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from broker.core.monitoring import Alert
from slicing.model import SliceState

log = logging.getLogger("broker.core.lifecycle")
T = TypeVar("T")
S = SliceState
#: States an operation passes through; where a slice settles is worth a log line at INFO, these at DEBUG.
IN_FLIGHT = frozenset({S.RESERVING, S.COMMITTING, S.ACTIVATING, S.DEACTIVATING, S.ABORTING, S.TERMINATING})


@dataclass(frozen=True)
class SliceEvent:
    """A slice changed state, or (``alert`` set) one of its SLA alerts fired or resolved."""

    slice_id: str
    state: SliceState
    at: float
    detail: str = ""
    alert: Alert | None = None


class SliceEvents:
    """Fan-out of slice events to watchers; a watcher that does not read loses its oldest event, never blocks."""

    def __init__(self, queue_size: int = 1024) -> None:
        self._queue_size = queue_size
        # Each watcher's queue with what it asked for (one slice or "", some states or None for all):
        # an event goes only into the queues that want it, so a watcher of one slice, or of the
        # settled states only, is not woken for every event of the broker.
        self._watchers: dict[asyncio.Queue[SliceEvent], tuple[str, frozenset[SliceState] | None]] = {}
        self._taps: list[Callable[[SliceEvent], None]] = []

    def tap(self, listener: Callable[[SliceEvent], None]) -> Callable[[], None]:
        """Call ``listener`` with every event as it is emitted, before any watcher can read it; the untap.

        For a listener that must not lose an event (a watcher's queue drops its oldest when full): it
        runs inside ``emit``, so it must be quick, and what it raises is logged, never the emitter's.
        """
        self._taps.append(listener)
        return lambda: self._taps.remove(listener) if listener in self._taps else None

    def emit(self, event: SliceEvent) -> None:
        """Log the change and hand it to every watcher."""
        level = logging.DEBUG if event.state in IN_FLIGHT else logging.INFO
        if event.alert is not None:
            a = event.alert
            log.warning(
                "slice %s alert %s %s: %s %g (threshold %g, %s) from %s",
                event.slice_id,
                a.cause,
                a.status,
                a.metric,
                a.value,
                a.threshold,
                a.severity,
                a.source_sp,
                extra={"slice_id": event.slice_id},
            )
        elif log.isEnabledFor(level):
            fields = {"slice_id": event.slice_id}
            log.log(level, "slice %s -> %s %s", event.slice_id, event.state, event.detail, extra=fields)
        for listener in list(self._taps):
            try:
                listener(event)
            except Exception:  # a listener's bug must not break the state change that emitted
                log.exception("slice %s: an event listener failed", event.slice_id)
        for q, (slice_id, states) in list(self._watchers.items()):
            if slice_id and event.slice_id != slice_id:
                continue
            if states is not None and event.alert is None and event.state not in states:
                continue
            if q.full():
                q.get_nowait()
            q.put_nowait(event)

    async def follow(
        self, slice_id: str = "", first: Iterable[SliceEvent] = (), states: Iterable[SliceState] | None = None
    ) -> AsyncIterator[SliceEvent]:
        """``first``, then the events of one slice (or all) until the caller stops iterating.

        With ``states``, only changes into those states (alerts always); ``first`` is the caller's to choose.
        """
        q: asyncio.Queue[SliceEvent] = asyncio.Queue(maxsize=self._queue_size)
        self._watchers[q] = (slice_id, frozenset(states) if states is not None else None)
        try:
            for event in first:
                yield event
            while True:
                yield await q.get()
        finally:
            self._watchers.pop(q, None)


async def until_set(source: AsyncIterator[T], stop: asyncio.Event) -> AsyncIterator[T]:
    """The items of ``source`` until it ends or ``stop`` is set (then at once, not at its next item).

    ``source`` is closed either way, also when the caller stops iterating: a follower's queue is
    never left registered behind a stream that ended.
    """
    stopping = asyncio.ensure_future(stop.wait())
    item: asyncio.Future[T] | None = None
    try:
        while not stop.is_set():
            item = asyncio.ensure_future(anext(source))
            await asyncio.wait((item, stopping), return_when=asyncio.FIRST_COMPLETED)
            if not item.done():
                return
            try:
                value = item.result()
            except StopAsyncIteration:
                return
            item = None
            yield value
    finally:
        stopping.cancel()
        if item is not None and not item.done():  # stopping, or the caller went away meanwhile
            item.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await item
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            await aclose()


__all__ = ["IN_FLIGHT", "SliceEvent", "SliceEvents", "until_set"]

"""The reconciler: drives every slice some SP below has not confirmed yet to its end, and expires holds.

One background loop per broker. Each pass

* expires held slices whose hold time passed (``SliceManager.expire_due``);
* re-sends Commit for COMMITTING slices (the decision is durable; it completes, or the slice is
  released everywhere once a child lost its hold or the hold time is over);
* re-sends the release of ABORTING and TERMINATING slices until every child confirmed;
* re-sends Activate for ACTIVATING slices (activation rolls forward like a commit), and Deactivate for
  DEACTIVATING ones (a customer's deactivation, or the compensation of a refused activation);
* releases RESERVING slices no operation in this process owns (their task died) after ``stale_after_s``.

A slice that failed again waits before its next try, doubling up to ``MAX_BACKOFF_INTERVALS`` intervals; slices are
driven concurrently, at most ``CONCURRENCY`` at once, so one dead child does not hold up the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable

from broker.core.lifecycle import SliceManager
from broker.core.operations import IN_FLIGHT
from broker.core.records import SliceRecord
from slicing.errors import FedError
from slicing.model import SliceState

log = logging.getLogger(__name__)
S = SliceState

#: The longest wait between two tries of one slice, in reconcile intervals.
MAX_BACKOFF_INTERVALS = 10
CONCURRENCY = 16


class Reconciler:
    """Retries, with back-off, what an operation could not finish because an SP below did not answer."""

    def __init__(
        self,
        manager: SliceManager,
        clock: Callable[[], float],
        *,
        interval_s: float = 2.0,
        stale_after_s: float | None = None,
        entropy_every: int = 15,
    ) -> None:
        self._m = manager
        self._clock = clock
        self.interval_s = interval_s
        # An operation in flight ends within a few child timeouts (every child call is bounded).
        self.stale_after_s = stale_after_s if stale_after_s is not None else 6 * manager.child_timeout_s
        self._next_try: dict[str, float] = {}
        self._failures: dict[str, int] = {}
        self._kick = asyncio.Event()
        # Holdings are compared with every child every ``entropy_every`` intervals, and at once after a
        # child came back (``compare_soon``). By the clock, not by passes: a kick (a child's slice moved)
        # runs a pass at once, and under load there are many; each comparison lists every holding below.
        self.entropy_every = entropy_every
        self._entropy_due = clock() + entropy_every * interval_s
        self._compare: set[str] = set(manager.children)  # everyone, at the first pass after a start

    def kick(self) -> None:
        """Run a pass now rather than at the next interval."""
        self._kick.set()

    def compare_soon(self, domain: str) -> None:
        """Compare holdings with ``domain`` at the next pass (it reconnected, say), and run that pass now."""
        self._compare.add(domain)
        self._next_try.clear()
        self.kick()

    def retry_now(self, domain: str) -> None:
        """Something changed at ``domain`` (it came back, one of our slices there moved): what waits on it
        is retried at once instead of after its back-off. With nothing waiting, no pass: every slice event
        below calls this, and a pass per event cost a loaded broker half its CPU."""
        if self._next_try:
            self._next_try.clear()
            self.kick()

    async def compare_holdings(self, domains: Iterable[str]) -> dict[str, list[str]]:
        """Anti-entropy with each of ``domains``; returns the order keys released at each."""
        out: dict[str, list[str]] = {}

        async def one(domain: str) -> None:
            try:
                out[domain] = await self._m.anti_entropy(domain)
            except FedError as exc:
                log.info("comparing holdings with %s: %s (retried later)", domain, exc)
                self._compare.add(domain)

        await asyncio.gather(*(one(d) for d in domains))
        return out

    def _due(self, rec: SliceRecord, now: float) -> bool:
        return not self._m.busy(rec.id) and self._next_try.get(rec.id, 0.0) <= now

    async def pass_once(self) -> dict[str, SliceState]:
        """One pass; returns the slices it drove and the state each is in afterwards."""
        try:
            await self._m.expire_due()
        except FedError as exc:
            log.error("hold expiry pass failed: %s", exc)
        now = self._clock()
        todo = [
            r
            for r in self._m.slices(
                [S.COMMITTING, S.ABORTING, S.TERMINATING, S.RESERVING, S.ACTIVATING, S.DEACTIVATING]
            )
            if self._due(r, now) and (r.state is not S.RESERVING or now - r.updated_at >= self.stale_after_s)
        ]
        gate = asyncio.Semaphore(CONCURRENCY)
        after: dict[str, SliceState] = {}

        async def one(rec: SliceRecord) -> None:
            async with gate:
                after[rec.id] = await self._drive(rec.id)

        await asyncio.gather(*(one(r) for r in todo))
        if self._clock() >= self._entropy_due:
            self._entropy_due = self._clock() + self.entropy_every * self.interval_s
            self._compare.update(self._m.children)
        if self._compare:
            domains, self._compare = self._compare, set()
            await self.compare_holdings(domains)
        return after

    async def _drive(self, slice_id: str) -> SliceState:
        m = self._m
        try:
            async with m.slice_lock(slice_id):
                rec = m.get(slice_id)
                if rec.state is S.COMMITTING:
                    rec = await m.drive_commit(rec)
                elif rec.state in (S.ABORTING, S.TERMINATING):
                    rec = await m.drive_release(rec)
                elif rec.state is S.RESERVING:
                    log.warning("slice %s: RESERVING with no operation running; releasing it", rec.id)
                    rec = await m.abandon_reservation(rec, "the reservation was interrupted")
                elif rec.state is S.ACTIVATING:
                    rec = await m.drive_activate(rec)
                elif rec.state is S.DEACTIVATING:
                    rec = await m.drive_deactivate(rec)
        except FedError as exc:
            n = self._failures[slice_id] = self._failures.get(slice_id, 0) + 1
            wait = self.interval_s * min(MAX_BACKOFF_INTERVALS, 2 ** min(n - 1, 8))
            self._next_try[slice_id] = self._clock() + wait
            log.info("slice %s: not settled yet (%s); next try in %.1f s", slice_id, exc, wait)
            return m.get(slice_id).state
        self._failures.pop(slice_id, None)
        self._next_try.pop(slice_id, None)
        if rec.state not in IN_FLIGHT:
            log.info("slice %s settled: %s", slice_id, rec.state)
        return rec.state

    async def run(self, stop: asyncio.Event) -> None:
        """Background loop until ``stop``: a pass at once (after a restart), then one per interval or kick."""
        while not stop.is_set():
            try:
                await self.pass_once()
            except FedError as exc:
                log.error("reconcile pass failed: %s", exc)
            nxt = self._m.next_hold_expiry()
            delay = self.interval_s if nxt is None else min(self.interval_s, max(0.02, nxt - self._clock()))
            self._kick.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_first(stop, self._kick), timeout=delay)


async def _first(*events: asyncio.Event) -> None:
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


__all__ = ["Reconciler"]

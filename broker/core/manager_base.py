"""What every part of ``SliceManager`` stands on: its children, store, clock, locks and events.

``SliceManager`` (``broker.core.lifecycle``) is assembled from parts, one per kind of operation:
``Reserving`` (``broker.core.reservation``: plan and hold), the two-phase end of a reservation and
release in ``lifecycle`` itself, ``Provisioning`` (``broker.core.provisioning``: activate,
deactivate) and ``FollowingChildren`` (``broker.core.children``: what lower SPs do on their own, and
anti-entropy with them). Each part inherits this base: the helpers every operation uses (the one
state-changing write ``_transition``, the operation tasks the manager owns, child time that shrinks
with depth) live here once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from broker.core.events import SliceEvent, SliceEvents
from broker.core.faults import NO_FAULTS, Faults
from broker.core.operations import Operation
from broker.core.records import SegmentRecord, SliceRecord
from broker.core.storage import SliceStore
from broker.core.workflow import TaskStatus
from capability_catalog.model import CapabilityNote, SpId
from domain_agents.base import DomainAgent
from slicing.errors import DeadlineExceeded, FailedPrecondition, FedError, InvalidArgument, NotFound
from slicing.model import SliceState, can_transition
from wim.base import WimDriver

#: The parts log as the lifecycle they make up, so an operator filters one logger.
log = logging.getLogger("broker.core.lifecycle")
T = TypeVar("T")

#: A child gets this share of the time the caller left us (the rest pays for compensation and answer).
CHILD_TIME_SHARE = 0.7
#: An activation not confirmed everywhere within this many child calls' time is undone (``activation_timeout_s``).
ACTIVATION_TIMEOUT_CHILD_CALLS = 10


class KeyLock:
    """The lock an operation holds on a key (a slice, a request id): this process's and every replica's.

    First this process's asyncio lock (operations here queue in order), then the store's lock on the
    key, which other broker processes sharing the store see (``SliceStore.try_lock``; always free
    for a store one process uses), polled with a growing pause while another process holds it.
    """

    POLL_S = (0.005, 0.1)

    def __init__(self, key: str, store: SliceStore, forget: Callable[[str, KeyLock], None]) -> None:
        self._key = key
        self._store = store
        self._local = asyncio.Lock()
        self._users = 0  # holding it or waiting for it
        self._forget = forget

    def locked(self) -> bool:
        """Whether an operation in this process holds or is taking it."""
        return self._local.locked()

    async def __aenter__(self) -> None:
        self._users += 1
        try:
            await self._local.acquire()
        except BaseException:
            self._left()
            raise
        try:
            pause, longest = self.POLL_S
            while not self._store.try_lock(self._key):
                await asyncio.sleep(pause)
                pause = min(pause * 2, longest)
        except BaseException:
            self._local.release()
            self._left()
            raise

    async def __aexit__(self, *exc: object) -> None:
        try:
            self._store.unlock(self._key)
        finally:
            self._local.release()
            self._left()

    def _left(self) -> None:
        self._users -= 1
        if self._users == 0:  # no one holds or awaits it: the manager keeps no lock per slice ever seen
            self._forget(self._key, self)


class ManagerBase:
    """The state and helpers of ``SliceManager`` that all its operations share."""

    def __init__(
        self,
        *,
        sp_id: str,
        store: SliceStore,
        agents: Mapping[str, DomainAgent],
        local_domains: Iterable[str],
        wim: WimDriver,
        notes: Callable[[], Mapping[SpId, CapabilityNote]],
        clock: Callable[[], float],
        default_hold_s: float = 120.0,
        faults: Faults = NO_FAULTS,
        child_timeout_s: float = 10.0,
        activation_timeout_s: float | None = None,
        heard: Callable[[], Iterable[str]] | None = None,
    ) -> None:
        self.sp_id = sp_id
        # The children that sent a note since this process started, expired ones included (None: take
        # every child as heard): a terminal no note names is refused as unknown once all of them spoke.
        self._heard: Callable[[], Iterable[str]] = heard or (lambda: agents.keys())
        self._store = store
        self._agents = dict(agents)
        self._local = frozenset(local_domains)
        self._wim = wim
        self._notes = notes
        self._clock = clock
        self._default_hold_s = default_hold_s
        self._faults = faults
        self.child_timeout_s = child_timeout_s
        self._activation_timeout_s = activation_timeout_s
        self._locks: dict[str, KeyLock] = {}
        self._events = SliceEvents()
        # Inside ``_batch``: the events its saves made, told once the batch has committed.
        self._held_events: list[SliceEvent] | None = None
        self._running: set[asyncio.Task[Any]] = set()

    @property
    def activation_timeout_s(self) -> float:
        """How long an activation may roll forward before it is undone (back to COMMITTED).

        Rolling forward for ever would leave a slice half in service with nobody told; by default ten
        child calls' time (``ACTIVATION_TIMEOUT_CHILD_CALLS``), so it shrinks with depth as they do.
        """
        if self._activation_timeout_s is not None:
            return self._activation_timeout_s
        return ACTIVATION_TIMEOUT_CHILD_CALLS * self.child_timeout_s

    # --- helpers ------------------------------------------------------------------------------

    def _lock(self, key: str) -> KeyLock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = KeyLock(key, self._store, self._forget_lock)
        return lock

    def _forget_lock(self, key: str, lock: KeyLock) -> None:
        if self._locks.get(key) is lock:
            del self._locks[key]

    def slice_lock(self, slice_id: str) -> KeyLock:
        """The lock every operation on the slice holds while it runs (in every process sharing the store)."""
        return self._lock(slice_id)

    def busy(self, slice_id: str) -> bool:
        """Whether an operation on the slice is running now, in this process or another sharing the store."""
        lock = self._locks.get(slice_id)
        return (lock is not None and lock.locked()) or self._store.locked_elsewhere(slice_id)

    def _agent(self, domain: str) -> DomainAgent:
        agent = self._agents.get(domain)
        if agent is None:
            raise NotFound(f"no child domain or lower-SP '{domain}' is configured", domain=domain)
        return agent

    def _save(self, rec: SliceRecord, detail: str = "") -> SliceRecord:
        """Persist ``rec`` and tell watchers when its state changed (inside ``_batch``: once it commits)."""
        rec = replace(rec, updated_at=self._clock())
        old_state = self._store.save(rec)
        if old_state != rec.state:
            event = SliceEvent(rec.id, rec.state, rec.updated_at, detail or rec.reason)
            if self._held_events is not None:
                self._held_events.append(event)
            else:
                self._events.emit(event)
        return rec

    @contextmanager
    def _batch(self) -> Iterator[None]:
        """The writes of one step (its task log, segments, new state) as one store transaction.

        Watchers hear the step's state changes only after it committed, and none if it rolled back.
        No await inside: nothing leaves the broker before the commit.
        """
        if self._held_events is not None:
            yield
            return
        held: list[SliceEvent] = []
        self._held_events = held
        try:
            with self._store.batch():
                yield
        finally:
            self._held_events = None
        for event in held:
            self._events.emit(event)

    def changed_elsewhere(self, slice_id: str, state: SliceState, at: float, detail: str = "") -> None:
        """Another broker process sharing the store changed a slice's state: tell this process's watchers."""
        self._events.emit(SliceEvent(slice_id, state, at, detail))

    def _transition(self, rec: SliceRecord, state: SliceState, **changes: Any) -> SliceRecord:
        """The one way a slice changes state: checked against the transition table, then persisted."""
        if rec.state is not state and not can_transition(rec.state, state):
            raise FailedPrecondition(f"slice {rec.id} is {rec.state}; cannot become {state}")
        return self._save(replace(rec, state=state, **changes))

    def _log(self, slice_id: str, operation: str, entries: Iterable[TaskStatus]) -> None:
        self._store.log_tasks(slice_id, operation, list(entries), self._clock())

    async def _detached(self, work: Coroutine[Any, Any, T]) -> T:
        """Run ``work`` as a task the manager owns: the caller may give up, the operation goes on."""
        task = asyncio.get_running_loop().create_task(work)
        self._running.add(task)
        task.add_done_callback(self._finished)
        return await asyncio.shield(task)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._running.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            if not isinstance(exc, FedError):
                log.error("an operation failed unexpectedly", exc_info=exc)

    async def drain(self) -> None:
        """Wait for every operation in flight (used at shutdown and in tests)."""
        while self._running:
            await asyncio.gather(*list(self._running), return_exceptions=True)

    async def cancel_running(self) -> None:
        """Stop every operation in flight, as a crash would: what they leave in flight is the reconciler's."""
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*list(self._running), return_exceptions=True)

    def _child_time(self, deadline: float | None) -> float:
        """How long a child may take: our own limit, or a share of what the caller left us."""
        if deadline is None:
            return self.child_timeout_s
        left = deadline - self._clock()
        return max(0.05, min(self.child_timeout_s, left * CHILD_TIME_SHARE))

    async def _bounded(self, work: Awaitable[T], limit_s: float, domain: str) -> T:
        try:
            return await asyncio.wait_for(work, limit_s)
        except TimeoutError:
            raise DeadlineExceeded(f"{domain} did not answer within {limit_s:.3g} s", domain=domain) from None

    def get(self, slice_id: str) -> SliceRecord:
        """The slice, or ``NotFound``."""
        rec = self._store.get(slice_id)
        if rec is None:
            raise NotFound(f"slice '{slice_id}' does not exist")
        return rec

    def find(self, requester: str, slice_id: str = "", request_id: str = "") -> SliceRecord:
        """A slice by id, or by the request id its requester reserved it with."""
        if slice_id:
            return self.get(slice_id)
        if request_id:
            rec = self._store.find_by_request(requester, request_id)
            if rec is None:
                raise NotFound(f"no slice was reserved with request_id '{request_id}'")
            return rec
        raise InvalidArgument("slice_id", "give a slice_id or a request_id")

    def slices(self, states: Iterable[SliceState] = ()) -> list[SliceRecord]:
        """Every slice, or those in ``states``."""
        return self._store.slices(states)

    def get_or_none(self, slice_id: str) -> SliceRecord | None:
        """The slice, or None."""
        return self._store.get(slice_id)

    def find_segment(self, domain: str, handle: str) -> SliceRecord | None:
        """The slice one of whose segments ``domain`` holds under ``handle`` (its slice id at a lower SP)."""
        return self._store.find_by_segment(domain, handle)

    def emit(self, event: SliceEvent) -> None:
        """Hand an event that is not a state change (an SLA alert) to every watcher."""
        self._events.emit(event)

    def tap(self, listener: Callable[[SliceEvent], None]) -> Callable[[], None]:
        """Have ``listener`` called with every event as it is emitted (``SliceEvents.tap``); the untap."""
        return self._events.tap(listener)

    def watch(
        self, slice_id: str = "", initial: bool = False, states: Iterable[SliceState] | None = None
    ) -> AsyncIterator[SliceEvent]:
        """State changes of one slice (or all) until the caller stops iterating; with ``states``, only
        changes into those (and, with ``initial``, only the slices now in one of them), alerts always."""
        wanted = frozenset(states) if states is not None else None
        if not initial:
            return self._events.follow(slice_id, states=wanted)
        recs = [self.get(slice_id)] if slice_id else self.slices()
        first = [SliceEvent(r.id, r.state, r.updated_at, r.reason) for r in recs if wanted is None or r.state in wanted]
        return self._events.follow(slice_id, first, wanted)

    def _require(self, rec: SliceRecord, op: Operation) -> None:
        if rec.state not in op.accepts:
            need = " or ".join(s.value for s in sorted(op.accepts))
            raise FailedPrecondition(f"slice {rec.id} is {rec.state}; {op.name} needs {need}")

    def _described(self, segments: Iterable[SegmentRecord], state: SliceState) -> tuple[SegmentRecord, ...]:
        out = []
        for s in segments:
            detail = self._agents[s.domain].describe(s.handle) if s.domain in self._agents else ()
            out.append(replace(s, state=state, detail=tuple(detail) or s.detail))
        return tuple(out)

    @property
    def children(self) -> tuple[str, ...]:
        """The ids of every child domain and lower SP."""
        return tuple(self._agents)

    if TYPE_CHECKING:  # the release path, which every operation ends in (``SliceManager``)

        async def terminate(self, slice_id: str) -> SliceRecord: ...
        async def _carry_out_order(self, rec: SliceRecord) -> SliceRecord: ...
        async def drive_commit(self, rec: SliceRecord, limit_s: float | None = None) -> SliceRecord: ...
        async def drive_activate(
            self, rec: SliceRecord, limit_s: float | None = None, done_point: str = "activate.done"
        ) -> SliceRecord: ...
        async def drive_release(self, rec: SliceRecord, limit_s: float | None = None) -> SliceRecord: ...
        async def _release_all(
            self, rec: SliceRecord, limit_s: float, operation: str
        ) -> tuple[SliceRecord, list[tuple[str, FedError]]]: ...

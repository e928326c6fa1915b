"""The slice lifecycle at one broker: two-phase reservation over its children, then provisioning.

Children are ``DomainAgent``s: local domains or lower-SP brokers; this module cannot tell them apart.
What it promises, whatever fails (a child that does not answer, a crash of this broker at any point):

* **Decisions are durable.** COMMITTING is written before any child is told to commit; a crash before
  it aborts (presumed abort), after it rolls forward: Commit is re-sent until every child confirmed or
  one definitively refused (its hold is gone), and then everything is released and the slice FAILED.
* **Release by the child's real state.** Every release goes through ``DomainAgent.release`` (at a lower
  SP: Terminate, which works in every state, by slice id or, when none came back, by the order key).
* **No answer without the truth.** An operation some SP below did not confirm leaves the slice in its
  in-flight state naming the SPs (``… [pending: M1]``) and the caller gets UNAVAILABLE saying so; the
  reconciler (``broker.core.reconciler``) drives it on and the final state appears on Watch.
* **Cancellation never cuts an operation in half.** Each operation runs as a task the manager owns; a
  caller that gives up ends its call, not the operation. Children get less time than the caller gave.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, NoReturn, TypeVar

from broker.core.events import SliceEvent, SliceEvents
from broker.core.faults import NO_FAULTS, Faults
from broker.core.operations import (
    OPERATIONS,
    RELEASED,
    Operation,
    activation_timeout_reason,
    compensation_reason,
    lost_hold,
    outcome_unknown,
    segment_end_state,
    settle_state,
    with_pending,
    without_pending,
)
from broker.core.records import LinkRecord, SegmentRecord, SliceRecord, slice_of_order_key
from broker.core.reservation import CANCELLED, Reserving, _as_error, _task
from broker.core.storage import SliceStore
from broker.core.workflow import TaskStatus
from capability_catalog.model import CapabilityNote, SpId
from domain_agents.base import DomainAgent, DomainUsage, SegmentEvent
from slicing.errors import (
    DeadlineExceeded,
    ErrorCode,
    FailedPrecondition,
    FedError,
    InvalidArgument,
    NotFound,
    Unavailable,
    error_for_code,
)
from slicing.model import FINAL_STATES, HOLDING_STATES, SliceState, can_transition
from wim.base import ConnectionPoint, ConnectivitySpec, WimDriver, WimUsage

log = logging.getLogger(__name__)
S = SliceState
T = TypeVar("T")

#: A child gets this share of the time the caller left us (the rest pays for compensation and answer).
CHILD_TIME_SHARE = 0.7
#: An activation not confirmed everywhere within this many child calls' time is undone (``activation_timeout_s``).
ACTIVATION_TIMEOUT_CHILD_CALLS = 10


@dataclass(frozen=True)
class Usage:
    """What the broker holds now."""

    holding_slices: int
    domains: tuple[DomainUsage, ...]
    wim: WimUsage


class SliceManager(Reserving):
    """Reserve, commit, abort, activate, terminate slices over this broker's children."""

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
    ) -> None:
        self.sp_id = sp_id
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
        self._locks: dict[str, asyncio.Lock] = {}
        self._events = SliceEvents()
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

    def _lock(self, key: str) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    def slice_lock(self, slice_id: str) -> asyncio.Lock:
        """The lock every operation on the slice holds while it runs."""
        return self._lock(slice_id)

    def busy(self, slice_id: str) -> bool:
        """Whether an operation on the slice is running in this process now."""
        lock = self._locks.get(slice_id)
        return lock is not None and lock.locked()

    def _agent(self, domain: str) -> DomainAgent:
        agent = self._agents.get(domain)
        if agent is None:
            raise NotFound(f"no child domain or lower-SP '{domain}' is configured", domain=domain)
        return agent

    def _save(self, rec: SliceRecord, detail: str = "") -> SliceRecord:
        """Persist ``rec`` and tell watchers when its state changed."""
        rec = replace(rec, updated_at=self._clock())
        old_state = self._store.save(rec)
        if old_state != rec.state:
            self._events.emit(SliceEvent(rec.id, rec.state, rec.updated_at, detail or rec.reason))
        return rec

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

    def watch(self, slice_id: str = "", initial: bool = False) -> AsyncIterator[SliceEvent]:
        """State changes of one slice (or all) until the caller stops iterating."""
        if not initial:
            return self._events.follow(slice_id)
        recs = [self.get(slice_id)] if slice_id else self.slices()
        return self._events.follow(slice_id, [SliceEvent(r.id, r.state, r.updated_at, r.reason) for r in recs])

    # --- commit / abort / activate / terminate --------------------------------------------------

    def _require(self, rec: SliceRecord, op: Operation) -> None:
        if rec.state not in op.accepts:
            need = " or ".join(s.value for s in sorted(op.accepts))
            raise FailedPrecondition(f"slice {rec.id} is {rec.state}; {op.name} needs {need}")

    async def commit(self, slice_id: str) -> SliceRecord:
        """Make a held slice permanent in every child; once decided, it completes or is released everywhere."""
        return await self._detached(self._commit(slice_id))

    async def _commit(self, slice_id: str) -> SliceRecord:
        op = OPERATIONS["Commit"]
        async with self._lock(slice_id):
            rec = self.get(slice_id)
            if rec.state in op.done:
                return rec  # a repeated commit is answered, not refused
            if rec.state is S.COMMITTING:
                return await self.drive_commit(rec)
            self._require(rec, op)
            if self._clock() >= rec.hold_expires_at:
                await self._expire(rec)
                raise FailedPrecondition(f"slice {rec.id}: the hold expired before the commit arrived")
            await self._faults.hit("commit.start", rec.id)
            rec = self._transition(rec, S.COMMITTING, reason="")  # the decision, durable before any child hears
            await self._faults.hit("commit.decided", rec.id)
            return await self.drive_commit(rec)

    async def drive_commit(self, rec: SliceRecord, limit_s: float | None = None) -> SliceRecord:
        """Send Commit to every child that has not confirmed it; the caller holds the slice's lock.

        All confirmed: COMMITTED. One lost its hold: everything is released and the slice ends FAILED
        naming it. Some did not answer: the slice stays COMMITTING naming them and ``Unavailable`` is
        raised (the reconciler retries) — until the hold time is over, when their holds are gone too.
        """
        timeout = limit_s or self.child_timeout_s
        todo = [s for s in rec.segments if s.state is not S.COMMITTED]

        async def one(seg: SegmentRecord) -> None:
            await self._faults.hit("commit.task.before", rec.id, seg.domain)
            await self._bounded(self._agent(seg.domain).commit(seg.handle), timeout, seg.domain)
            await self._faults.hit("commit.task.after", rec.id, seg.domain)

        results = await asyncio.gather(*(one(s) for s in todo), return_exceptions=True)
        done = {s.index for s, r in zip(todo, results, strict=True) if r is None}
        failed = [(s, _as_error(r, s.domain)) for s, r in zip(todo, results, strict=True) if r is not None]
        errors = [e for _, e in failed]
        self._log(
            rec.id,
            "commit",
            [TaskStatus(0, _task("commit", s), "done" if s.index in done else "failed") for s in todo],
        )
        segments = tuple(replace(s, state=S.COMMITTED) if s.index in done else s for s in rec.segments)
        rec = self._save(replace(rec, segments=segments))
        lost = [(sg, e) for sg, e in failed if lost_hold(e)]
        overdue = bool(failed) and self._clock() >= rec.hold_expires_at
        if lost or overdue:
            why = [e for _, e in lost or failed]
            names = ", ".join(sorted({sg.domain for sg, _ in lost or failed}))
            lost_at = {sg.index for sg, _ in lost}
            reason = (
                f"commit failed: {names} lost the hold ({why[0]}); everything else is released"
                if lost
                else f"commit failed: {names} did not confirm within the hold time ({why[0]}); released everywhere"
            )
            log.warning("slice %s: %s", rec.id, reason)
            rec = self._transition(
                rec,
                S.TERMINATING,
                reason=reason,
                error_code=why[0].code.value,
                settle_to=S.FAILED,
                segments=tuple(replace(s, state=S.EXPIRED) if s.index in lost_at else s for s in rec.segments),
            )
            rec = await self.drive_release(rec)
            raise error_for_code(ErrorCode(rec.error_code), reason, causes=why)
        if failed:
            waiting = [sg.domain for sg, _ in failed]
            rec = self._save(replace(rec, reason=with_pending("commit decided; waiting for confirmation", waiting)))
            raise Unavailable(
                f"slice {rec.id}: the commit is decided and goes on: {', '.join(sorted(waiting))} did not confirm yet "
                f"({errors[0]}); watch the slice for COMMITTED",
                causes=errors,
            )
        rec = self._transition(rec, S.COMMITTED, reason="", segments=self._described(rec.segments, S.COMMITTED))
        await self._faults.hit("commit.done", rec.id)
        return rec

    async def abort(self, slice_id: str) -> SliceRecord:
        """Release a held slice everywhere."""
        return await self._detached(self._release_op(OPERATIONS["Abort"], slice_id))

    async def terminate(self, slice_id: str) -> SliceRecord:
        """Release a slice in any state everywhere: WIM stitches first, then the children."""
        return await self._detached(self._release_op(OPERATIONS["Terminate"], slice_id))

    async def _release_op(self, op: Operation, slice_id: str) -> SliceRecord:
        point = op.name.lower()
        async with self._lock(slice_id):
            rec = self.get(slice_id)
            if rec.state in op.done:
                return rec
            if rec.state in op.resumes:
                return await self.drive_release(rec)
            self._require(rec, op)
            await self._faults.hit(f"{point}.start", rec.id)
            # A terminate after a failure keeps its reason; a customer's own release needs none.
            rec = self._transition(rec, op.in_flight, settle_to=op.settle_to, error_code="", reason="")
            rec = await self.drive_release(rec)
            await self._faults.hit(f"{point}.done", rec.id)
            return rec

    async def drive_release(self, rec: SliceRecord, limit_s: float | None = None) -> SliceRecord:
        """Release everything the slice may still hold; the caller holds the slice's lock.

        Every confirmed: the slice ends where ``settle_to`` says. Some did not confirm: it stays in
        flight naming them and ``Unavailable`` is raised (the reconciler retries).
        """
        rec, failures = await self._release_all(rec, limit_s or self.child_timeout_s, _operation_of(rec))
        if failures:
            names = [name for name, _ in failures]
            rec = self._save(replace(rec, reason=with_pending(rec.reason or f"{rec.state.lower()}", names)))
            raise Unavailable(
                f"slice {rec.id} is {rec.state}: {', '.join(sorted(set(names)))} did not confirm the release yet "
                f"({failures[0][1]}); the broker retries until they do",
                causes=[e for _, e in failures],
            )
        final = settle_state(rec.state, rec.settle_to, rec.error_code)
        reason = without_pending(rec.reason) if final is S.FAILED or final is S.EXPIRED else ""
        return self._transition(rec, final, reason=reason, links=tuple(replace(ln, wim_handle="") for ln in rec.links))

    async def _release_all(
        self, rec: SliceRecord, limit_s: float, operation: str
    ) -> tuple[SliceRecord, list[tuple[str, FedError]]]:
        """Unstitch, then release every segment not yet released, by its real state at the child.

        Returns the slice with each confirmation recorded, and (child, error) for each not confirmed.
        """
        point = operation if operation in ("abort", "terminate") else ""
        failures: list[tuple[str, FedError]] = []
        links = list(rec.links)
        for i, ln in enumerate(links):
            if not ln.wim_handle:
                continue
            try:
                await self._bounded(self._wim.delete(ln.wim_handle), limit_s, self.sp_id)
            except FedError as exc:
                failures.append((f"{self.sp_id} (WIM)", exc.in_domain(self.sp_id)))
            else:
                links[i] = replace(ln, wim_handle="")
        todo = [s for s in rec.segments if s.state not in RELEASED]

        async def one(seg: SegmentRecord) -> None:
            if point:
                await self._faults.hit(f"{point}.task.before", rec.id, seg.domain)
            await self._bounded(self._agent(seg.domain).release(seg.order_key, seg.handle), limit_s, seg.domain)
            if point:
                await self._faults.hit(f"{point}.task.after", rec.id, seg.domain)

        results = await asyncio.gather(*(one(s) for s in todo), return_exceptions=True)
        released = {s.index for s, r in zip(todo, results, strict=True) if r is None}
        failures.extend((s.domain, _as_error(r, s.domain)) for s, r in zip(todo, results, strict=True) if r is not None)
        self._log(
            rec.id,
            operation,
            [TaskStatus(0, _task("release", s), "done" if s.index in released else "failed") for s in todo],
        )
        end = segment_end_state(settle_state(rec.state, rec.settle_to, rec.error_code))
        segments = tuple(replace(s, state=end) if s.index in released else s for s in rec.segments)
        return self._save(replace(rec, segments=segments, links=tuple(links))), failures

    async def _expire(self, rec: SliceRecord, limit_s: float | None = None) -> SliceRecord:
        """The hold time passed without a commit: release everywhere (the caller holds the lock)."""
        rec = self._transition(
            rec, S.ABORTING, settle_to=S.EXPIRED, reason=f"hold time of {rec.hold_time_s:g} s passed without a commit"
        )
        try:
            return await self.drive_release(rec, limit_s)
        except FedError as exc:
            log.warning("slice %s: expiry pending: %s", rec.id, exc)
            return self.get(rec.id)

    async def expire_due(self, limit_s: float | None = None) -> list[str]:
        """Release every held slice whose hold time has passed; return their ids (``limit_s``: per child call)."""
        expired = []
        for slice_id in self._store.expired_holds(self._clock()):
            async with self._lock(slice_id):
                rec = self.get(slice_id)
                if rec.state is S.HELD and self._clock() >= rec.hold_expires_at:
                    await self._expire(rec, limit_s)
                    expired.append(slice_id)
        return expired

    def next_hold_expiry(self) -> float | None:
        """When the next hold expires, if any slice is held."""
        return self._store.next_hold_expiry()

    def _described(self, segments: Iterable[SegmentRecord], state: SliceState) -> tuple[SegmentRecord, ...]:
        out = []
        for s in segments:
            detail = self._agents[s.domain].describe(s.handle) if s.domain in self._agents else ()
            out.append(replace(s, state=state, detail=tuple(detail) or s.detail))
        return tuple(out)

    async def activate(self, slice_id: str) -> SliceRecord:
        """Bring a committed slice into service: children realise their segments, the WIM stitches."""
        return await self._detached(self._activate(slice_id))

    async def _activate(self, slice_id: str) -> SliceRecord:
        op = OPERATIONS["Activate"]
        async with self._lock(slice_id):
            rec = self.get(slice_id)
            if rec.state in op.done:
                return rec
            if rec.state in op.resumes:
                return await self.drive_activate(rec)
            self._require(rec, op)
            await self._faults.hit("activate.start", rec.id)
            # Decided: from here it rolls forward (or, refused, is compensated back to COMMITTED).
            deadline = self._clock() + self.activation_timeout_s
            rec = self._transition(rec, S.ACTIVATING, reason="", error_code="", deadline_at=deadline)
            return await self.drive_activate(rec)

    async def drive_activate(self, rec: SliceRecord, limit_s: float | None = None) -> SliceRecord:
        """Activate every child not yet active, then stitch every link not yet stitched (lock held).

        Activation rolls forward like a commit: children that did not answer leave the slice
        ACTIVATING naming them (``Unavailable``; the reconciler retries), so no level ends ACTIVE
        while another stays merely committed. A child that refuses outright is compensated: what is
        active is deactivated and the slice ends COMMITTED (its reservation kept) naming the child, and
        its refusal is raised (``_compensate_activation``).
        """
        timeout = limit_s or self.child_timeout_s
        todo = [s for s in rec.segments if s.state is not S.ACTIVE]
        if rec.deadline_at and self._clock() >= rec.deadline_at:
            pending = sorted({s.domain for s in todo}) or [f"{self.sp_id} (WIM)"]
            reason = activation_timeout_reason(self.activation_timeout_s, pending)
            await self._compensate_activation(rec, reason, ErrorCode.DEADLINE_EXCEEDED, [], limit_s)

        async def activate_one(seg: SegmentRecord) -> None:
            await self._faults.hit("activate.task.before", rec.id, seg.domain)
            await self._bounded(self._agent(seg.domain).activate(seg.handle), timeout, seg.domain)
            await self._faults.hit("activate.task.after", rec.id, seg.domain)

        results = await asyncio.gather(*(activate_one(s) for s in todo), return_exceptions=True)
        done = {s.index for s, r in zip(todo, results, strict=True) if r is None}
        failed = [(s.domain, _as_error(r, s.domain)) for s, r in zip(todo, results, strict=True) if r is not None]
        segments = tuple(replace(s, state=S.ACTIVE) if s.index in done else s for s in rec.segments)
        rec = self._save(replace(rec, segments=segments))
        links = list(rec.links)
        if not failed:
            for i, ln in enumerate(links):
                if ln.wim_handle:
                    continue  # stitched by an earlier try
                spec = ConnectivitySpec(
                    key=f"{rec.id}:{ln.a_port}:{ln.b_port}",
                    points=(
                        ConnectionPoint(ln.a_port, ln.label_type, ln.label_a or 0),
                        ConnectionPoint(ln.b_port, ln.label_type, ln.label_b or 0),
                    ),
                    bandwidth_mbps=rec.request.bandwidth_mbps,
                )
                try:
                    handle = await self._bounded(self._wim.create(spec), timeout, self.sp_id)
                except FedError as exc:
                    failed.append((f"{self.sp_id} (WIM)", exc.in_domain(self.sp_id)))
                    break
                links[i] = replace(ln, wim_handle=handle)
                # Each stitch is persisted as it is made, so a release after a crash finds it.
                rec = self._save(replace(rec, links=tuple(links)))
        self._log(rec.id, "activate", [TaskStatus(0, "activate", "failed" if failed else "done")])
        if failed:
            names = sorted({name for name, _ in failed})
            errors = [e for _, e in failed]
            refusals = [(name, e) for name, e in failed if not outcome_unknown(e)]
            if refusals:
                reason = compensation_reason(refusals)
                await self._compensate_activation(rec, reason, refusals[0][1].code, errors, limit_s)
            rec = self._save(replace(rec, reason=with_pending("activation decided; waiting for confirmation", names)))
            raise Unavailable(
                f"slice {rec.id}: the activation is decided and goes on: {', '.join(names)} did not confirm yet "
                f"({errors[0]}); watch the slice for ACTIVE",
                causes=errors,
            )
        rec = self._transition(
            rec,
            S.ACTIVE,
            links=tuple(links),
            reason="",
            deadline_at=0.0,
            segments=self._described(rec.segments, S.ACTIVE),
        )
        await self._faults.hit("activate.done", rec.id)
        return rec

    async def _compensate_activation(
        self,
        rec: SliceRecord,
        reason: str,
        code: ErrorCode,
        errors: list[FedError],
        limit_s: float | None,
    ) -> NoReturn:
        """A child refused Activate (or it timed out): deactivate every child and stitch, end COMMITTED, raise.

        Every segment is deactivated, not only those confirmed active: one that did not answer may be
        active all the same, and Deactivate is idempotent. A compensation some SP below has not
        confirmed yet stays DEACTIVATING naming it (the reconciler finishes it); the refusal is raised
        either way, since where the slice ends is decided: COMMITTED.
        """
        log.warning("slice %s: %s", rec.id, reason)
        rec = self._transition(
            rec,
            S.DEACTIVATING,
            reason=reason,
            error_code=code.value,
            deadline_at=0.0,
            settle_to=S.COMMITTED,
            segments=tuple(replace(s, state=S.DEACTIVATING) for s in rec.segments),
        )
        try:
            rec = await self.drive_deactivate(rec, limit_s)
        except Unavailable as exc:
            log.warning("slice %s: compensation pending: %s", rec.id, exc)
            reason = self.get(rec.id).reason
        raise error_for_code(code, reason, causes=errors)

    async def deactivate(self, slice_id: str) -> SliceRecord:
        """Take an active slice out of service everywhere and keep its reservation (NSI's provisioning release)."""
        return await self._detached(self._deactivate(slice_id))

    async def _deactivate(self, slice_id: str) -> SliceRecord:
        op = OPERATIONS["Deactivate"]
        async with self._lock(slice_id):
            rec = self.get(slice_id)
            if rec.state in op.done:
                return rec
            if rec.state in op.resumes:
                return await self.drive_deactivate(rec)
            self._require(rec, op)
            await self._faults.hit("deactivate.start", rec.id)
            # Every segment, not only those confirmed active: an activation in flight may have reached any.
            rec = self._transition(
                rec,
                op.in_flight,
                reason="",
                error_code="",
                settle_to=op.settle_to,
                segments=tuple(replace(s, state=S.DEACTIVATING) for s in rec.segments),
            )
            return await self.drive_deactivate(rec)

    async def drive_deactivate(self, rec: SliceRecord, limit_s: float | None = None) -> SliceRecord:
        """Unstitch every link, then deactivate every child not yet confirmed committed (lock held).

        Rolls forward like an activation: children that did not answer leave the slice DEACTIVATING
        naming them (``Unavailable``; the reconciler retries). All confirmed: COMMITTED. A child that
        refuses definitively no longer holds its segment (``lost_hold``): the slice cannot stay
        committed, so everything is released and it ends FAILED naming the child.
        """
        timeout = limit_s or self.child_timeout_s
        failed: list[tuple[str, FedError]] = []
        links = list(rec.links)
        for i, ln in enumerate(links):
            if not ln.wim_handle:
                continue
            try:
                await self._bounded(self._wim.delete(ln.wim_handle), timeout, self.sp_id)
            except FedError as exc:
                failed.append((f"{self.sp_id} (WIM)", exc.in_domain(self.sp_id)))
                continue
            links[i] = replace(ln, wim_handle="")
            rec = self._save(replace(rec, links=tuple(links)))  # each unstitch persisted as it is undone
        todo = [s for s in rec.segments if s.state is not S.COMMITTED]

        async def deactivate_one(seg: SegmentRecord) -> None:
            await self._faults.hit("deactivate.task.before", rec.id, seg.domain)
            await self._bounded(self._agent(seg.domain).deactivate(seg.handle), timeout, seg.domain)
            await self._faults.hit("deactivate.task.after", rec.id, seg.domain)

        results = await asyncio.gather(*(deactivate_one(s) for s in todo), return_exceptions=True)
        done = {s.index for s, r in zip(todo, results, strict=True) if r is None}
        refused = [(s, _as_error(r, s.domain)) for s, r in zip(todo, results, strict=True) if r is not None]
        failed.extend((s.domain, e) for s, e in refused)
        self._log(
            rec.id,
            "deactivate",
            [TaskStatus(0, _task("deactivate", s), "done" if s.index in done else "failed") for s in todo],
        )
        segments = tuple(replace(s, state=S.COMMITTED) if s.index in done else s for s in rec.segments)
        rec = self._save(replace(rec, segments=segments))
        lost = [(s, e) for s, e in refused if lost_hold(e)]
        if lost:
            who = ", ".join(sorted({s.domain for s, _ in lost}))
            lost_at = {s.index for s, _ in lost}
            reason = f"deactivation failed: {who} no longer holds its segment ({lost[0][1]}); released everywhere"
            log.warning("slice %s: %s", rec.id, reason)
            rec = self._transition(
                rec,
                S.TERMINATING,
                reason=reason,
                error_code=lost[0][1].code.value,
                settle_to=S.FAILED,
                segments=tuple(replace(s, state=S.EXPIRED) if s.index in lost_at else s for s in rec.segments),
            )
            rec = await self.drive_release(rec)
            raise error_for_code(lost[0][1].code, reason, causes=[e for _, e in failed])
        if failed:
            names = sorted({name for name, _ in failed})
            rec = self._save(replace(rec, reason=with_pending(rec.reason or "deactivating", names)))
            raise Unavailable(
                f"slice {rec.id}: the deactivation is decided and goes on: {', '.join(names)} did not confirm yet "
                f"({failed[0][1]}); watch the slice for COMMITTED",
                causes=[e for _, e in failed],
            )
        rec = self._transition(
            rec,
            S.COMMITTED,
            # A compensation keeps its story (who refused the activation); a customer's deactivation needs none.
            reason=without_pending(rec.reason) if rec.error_code else "",
            settle_to=None,
            segments=self._described(rec.segments, S.COMMITTED),
        )
        await self._faults.hit("deactivate.done", rec.id)
        return rec

    # --- restart, usage -----------------------------------------------------------------------

    async def recover(self) -> None:
        """After a restart: re-apply local holdings, hand interrupted operations to the reconciler.

        RESERVING is presumed aborted; COMMITTING, ACTIVATING and DEACTIVATING roll forward; ABORTING
        and TERMINATING go on releasing.
        """
        for domain, handle, state in self._store.local_holdings():
            if domain in self._agents:
                await self._agents[domain].restore(handle, committed=state is not S.HELD)
        for wim_handle in self._store.wim_handles():
            await self._wim.restore(wim_handle)
        for rec in self._store.slices([S.RESERVING]):
            log.warning("slice %s was %s when the broker stopped; releasing it", rec.id, rec.state)
            self._transition(
                rec,
                S.ABORTING,
                reason=f"broker {self.sp_id} restarted during the reservation",
                error_code=ErrorCode.UNAVAILABLE.value,
                settle_to=S.FAILED,
            )
        # Holds that lapsed while the broker was down; a child that does not answer at once is the
        # reconciler's, so a dead child cannot hold up the start.
        expired = await self.expire_due(limit_s=1.0)
        if expired:
            log.info("released %d holds that expired while the broker was down", len(expired))

    async def anti_entropy(self, domain: str) -> list[str]:
        """Compare what ``domain`` holds for this broker with what this broker knows; release the rest.

        A child's segment is an orphan when its order key names no slice here, an attempt this
        slice no longer uses, a segment already released, or a slice that ended. Slices with an
        operation running are left alone (their operation settles them). Returns the keys released.
        """
        agent = self._agent(domain)
        held = await self._bounded(agent.holdings(), self.child_timeout_s, domain)
        orphans = []
        for key, handle in held:
            slice_id = slice_of_order_key(key)
            if slice_id and self.busy(slice_id):
                continue
            rec = self._store.get(slice_id) if slice_id else None
            seg = next((s for s in rec.segments if s.order_key == key), None) if rec else None
            if rec is not None and rec.state not in FINAL_STATES and seg is not None and seg.state not in RELEASED:
                continue
            orphans.append((key, handle))
        released = []
        for key, handle in orphans:
            log.warning("%s holds %s for %s, which no slice here holds: releasing it", domain, key, self.sp_id)
            try:
                await self._bounded(agent.release(key, handle), self.child_timeout_s, domain)
            except FedError as exc:
                log.warning("releasing orphan %s at %s failed: %s (next pass retries)", key, domain, exc)
                continue
            released.append(key)
        return released

    async def follow_child(
        self,
        domain: str,
        on_connect: Callable[[str], None] = lambda _: None,
        on_change: Callable[[str], None] = lambda _: None,
        on_alert: Callable[[str, SegmentEvent], None] = lambda _d, _e: None,
    ) -> None:
        """React at once to what ``domain`` does to segments on its own, until cancelled.

        A child whose hold expired or that ended a segment makes the slice unable to keep its
        promise: a held slice is released everywhere as EXPIRED, a committed one as FAILED, and this
        broker's own Watch carries the news one level further up. ``on_connect`` hears each time the
        child's stream (re)connects (to compare holdings with a child that was away), ``on_change`` each
        time one of this broker's slices there changes (what waits on the child may go on now),
        ``on_alert`` each SLA alert the child sends about a segment (the monitoring's relay).
        """
        async for ev in self._agent(domain).segment_events():
            if not ev.handle:
                on_connect(domain)
                continue
            if ev.alert is not None:
                on_alert(domain, ev)
                continue
            on_change(domain)
            if ev.state not in RELEASED and ev.state is not S.ACTIVE:
                continue
            rec = self._store.find_by_segment(domain, ev.handle)
            if rec is None or rec.state in FINAL_STATES or self.busy(rec.id):
                continue
            try:
                if ev.state is S.ACTIVE:
                    await self._detached(self._child_activated(rec.id, domain, ev.handle))
                else:
                    await self._detached(self._child_ended(rec.id, domain, ev.handle, ev.state, ev.detail))
            except FedError as exc:
                log.warning("slice %s: after %s's segment became %s: %s", rec.id, domain, ev.state, exc)

    async def _child_activated(self, slice_id: str, domain: str, handle: str) -> None:
        """A child put a segment in service that this broker's slice has out of service (COMMITTED).

        An Activate that reached the child after the compensating Deactivate (a message delayed, a
        child that resumed after a stop) would leave it carrying traffic nobody ordered: deactivate it.
        """
        async with self._lock(slice_id):
            rec = self.get(slice_id)
            seg = next((s for s in rec.segments if s.domain == domain and s.handle == handle), None)
            if seg is None or rec.state is not S.COMMITTED or seg.state is not S.COMMITTED:
                return
            log.warning("slice %s is COMMITTED but %s put its segment in service: deactivating it", rec.id, domain)
            await self._bounded(self._agent(domain).deactivate(handle), self.child_timeout_s, domain)

    async def _child_ended(self, slice_id: str, domain: str, handle: str, state: SliceState, detail: str) -> None:
        async with self._lock(slice_id):
            rec = self.get(slice_id)
            seg = next((s for s in rec.segments if s.domain == domain and s.handle == handle), None)
            if seg is None or seg.state in RELEASED or rec.state in FINAL_STATES:
                return
            log.warning("slice %s: %s ended its segment on its own (%s: %s)", rec.id, domain, state, detail)
            segments = tuple(replace(s, state=S.EXPIRED) if s is seg else s for s in rec.segments)
            rec = self._save(replace(rec, segments=segments))
            why = f"{domain} ended its segment ({state}{': ' + detail if detail else ''})"
            if rec.state is S.HELD:
                rec = self._transition(rec, S.ABORTING, settle_to=S.EXPIRED, reason=f"hold lost: {why}")
            elif rec.state in (S.COMMITTING, S.COMMITTED, S.ACTIVE, S.DEACTIVATING):
                rec = self._transition(
                    rec, S.TERMINATING, settle_to=S.FAILED, error_code=ErrorCode.FAILED_PRECONDITION.value, reason=why
                )
            else:
                return  # a release is in flight already: the segment is one fewer to confirm
            await self.drive_release(rec)

    @property
    def children(self) -> tuple[str, ...]:
        """The ids of every child domain and lower SP."""
        return tuple(self._agents)

    async def abandon_reservation(self, rec: SliceRecord, why: str) -> SliceRecord:
        """Release a RESERVING slice no operation owns any more (the caller holds its lock)."""
        rec = self._transition(rec, S.ABORTING, reason=why, error_code=ErrorCode.UNAVAILABLE.value, settle_to=S.FAILED)
        return await self.drive_release(rec)

    def usage(self) -> Usage:
        """What the broker holds now."""
        holding = self._store.count_holding()
        domains = tuple(self._agents[d].usage() for d in sorted(self._local) if d in self._agents)
        return Usage(holding_slices=holding, domains=domains, wim=self._wim.usage())


def _operation_of(rec: SliceRecord) -> str:
    return "abort" if rec.state is S.ABORTING else "terminate"


__all__ = ["CANCELLED", "HOLDING_STATES", "LinkRecord", "SliceEvent", "SliceManager", "Usage"]

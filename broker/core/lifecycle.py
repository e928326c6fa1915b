"""The slice lifecycle at one broker: two-phase reservation over its children, then provisioning.

Children are ``DomainAgent``s: local domains or lower-SP brokers; this module cannot tell them apart.
Every operation is a schedule of tasks (``broker.core.workflow``) and every state change is persisted
before the next step, so a crash leaves a state the broker can recover from on restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from broker.core.events import SliceEvent, SliceEvents
from broker.core.faults import NO_FAULTS, Faults
from broker.core.records import (
    LinkRecord,
    SegmentRecord,
    SliceRecord,
    label_at,
    records_for_plan,
    request_hash,
    with_state,
)
from broker.core.storage import SliceStore
from broker.core.workflow import Schedule, Task, TaskStatus, run_schedule
from capability_catalog.model import CapabilityNote, SpId
from domain_agents.base import DomainAgent, DomainUsage, SegmentGrant, SegmentOrder
from slicing import planner
from slicing.errors import (
    AlreadyExists,
    Constraint,
    ErrorCode,
    FailedPrecondition,
    FanoutError,
    FedError,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    error_for_code,
)
from slicing.model import FINAL_STATES, HOLDING_STATES, Plan, SliceRequest, SliceState, can_transition
from wim.base import ConnectionPoint, ConnectivitySpec, WimDriver, WimUsage

log = logging.getLogger(__name__)
S = SliceState

#: Plans tried per Reserve: the first and the crankbacks after lower-SP refusals or label disagreements.
MAX_PLAN_ATTEMPTS = 4
MAX_HOLD_TIME_S = 3600.0


@dataclass(frozen=True)
class Usage:
    """What the broker holds now."""

    holding_slices: int
    domains: tuple[DomainUsage, ...]
    wim: WimUsage


class SliceManager:
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
        self._locks: dict[str, asyncio.Lock] = {}
        self._events = SliceEvents()

    # --- helpers ------------------------------------------------------------------------------

    def _lock(self, key: str) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

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

    def _transition(self, rec: SliceRecord, state: SliceState, **changes: object) -> SliceRecord:
        if not can_transition(rec.state, state):
            raise FailedPrecondition(f"slice {rec.id} is {rec.state}; cannot become {state}")
        return self._save(replace(rec, state=state, **changes))  # type: ignore[arg-type]

    def _record(self, slice_id: str, operation: str) -> Callable[[Sequence[TaskStatus]], None]:
        def record(entries: Sequence[TaskStatus]) -> None:
            self._store.log_tasks(slice_id, operation, entries, self._clock())

        return record

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

    # --- watch --------------------------------------------------------------------------------

    def watch(self, slice_id: str = "", initial: bool = False) -> AsyncIterator[SliceEvent]:
        """State changes of one slice (or all) until the caller stops iterating."""
        if not initial:
            return self._events.follow(slice_id)
        recs = [self.get(slice_id)] if slice_id else self.slices()
        return self._events.follow(slice_id, [SliceEvent(r.id, r.state, r.updated_at, r.reason) for r in recs])

    # --- reserve ------------------------------------------------------------------------------

    async def reserve(
        self, requester: str, request_id: str, request: SliceRequest, hold_time_s: float = 0.0
    ) -> SliceRecord:
        """Hold a slice in every child the plan involves, or hold nothing at all."""
        self._check_loop(request)
        if not request_id:
            raise InvalidArgument("request_id", "must not be empty")
        if hold_time_s < 0 or hold_time_s > MAX_HOLD_TIME_S:
            raise InvalidArgument("hold_time_s", f"must be between 0 (default) and {MAX_HOLD_TIME_S:.0f}")
        hold = hold_time_s or self._default_hold_s
        digest = request_hash(request, hold)
        async with self._lock(f"request:{requester}:{request_id}"):
            existing = self._store.find_by_request(requester, request_id)
            if existing is not None:
                if existing.request_hash != digest:
                    raise AlreadyExists(
                        f"request_id '{request_id}' was already used with a different request (slice {existing.id})"
                    )
                if existing.state is S.FAILED and existing.error_code:
                    raise error_for_code(ErrorCode(existing.error_code), existing.reason)
                return existing
            now = self._clock()
            rec = SliceRecord(
                id=f"{self.sp_id}-{uuid.uuid4().hex[:12]}",
                requester=requester,
                request_id=request_id,
                request_hash=digest,
                request=request,
                hold_time_s=hold,
                state=S.RESERVING,
                created_at=now,
                updated_at=now,
            )
            rec = self._save(rec)
            async with self._lock(rec.id):
                try:
                    return await self._reserve_with_crankback(rec)
                except FedError as exc:
                    failed = self._store.get(rec.id) or rec
                    self._save(replace(failed, state=S.FAILED, reason=str(exc), error_code=exc.code.value))
                    raise

    def _check_loop(self, request: SliceRequest) -> None:
        """Refuse a request that already passed through this SP (loop safety)."""
        if self.sp_id in request.trace:
            raise FailedPrecondition(
                f"loop: the request already passed through {self.sp_id} (trace {' → '.join(request.trace)})",
                constraint=Constraint.LOOP,
            )

    def dry_run(self, request: SliceRequest) -> Plan:
        """The plan a Reserve would try first, holding and recording nothing."""
        self._check_loop(request)
        return self._plan(request, {}, ())

    def _plan(
        self, request: SliceRequest, exclude: Mapping[tuple[str, str], set[int]], avoid: Iterable[planner.Run]
    ) -> Plan:
        notes = self._notes()
        usable = {sp: n for sp, n in notes.items() if sp in self._agents}
        if not usable:
            raise ResourceExhausted("no capability notes from any child yet; nothing to decompose over")
        # Sub-requests carry the trace with this SP on it; an include naming this SP is met already.
        mine = replace(
            request,
            trace=(*request.trace, self.sp_id),
            include_sps=tuple(sp for sp in request.include_sps if sp != self.sp_id),
        )
        return planner.plan(
            mine,
            usable,
            used_labels=self._store.used_link_labels(),
            exclude_labels=exclude,
            avoid_runs=tuple(avoid),
        )

    async def _reserve_with_crankback(self, rec: SliceRecord) -> SliceRecord:
        """Plan, reserve everywhere; on a refusal or a label disagreement release all and re-plan around it.

        A child refusing with RESOURCE_EXHAUSTED (no capacity, a label taken meanwhile), or with
        FAILED_PRECONDITION naming a planning constraint (an excluded SP below it that this level
        cannot see, a function off every route it has), has its run
        avoided in the next plan; labels that disagreed are excluded. Other errors (a child that
        does not answer, a bad request) end the reservation at once. Every try releases what it
        held before the next starts, and after ``MAX_PLAN_ATTEMPTS`` the whole request fails.
        """
        exclude: dict[tuple[str, str], set[int]] = {}
        avoid: list[planner.Run] = []
        refusals: list[FedError] = []
        for attempt in range(MAX_PLAN_ATTEMPTS):
            try:
                plan = self._plan(rec.request, exclude, avoid)
            except FedError as exc:
                if not refusals:
                    raise
                raise error_for_code(
                    exc.code,
                    f"{exc.message} (after crankback around {len(refusals)} refusal(s): "
                    + "; ".join(str(r) for r in refusals)
                    + ")",
                    constraint=_named_below(exc.constraint, refusals),
                    causes=refusals,
                ) from None
            segments, links = records_for_plan(rec, plan, attempt, self._notes(), self._local, self.sp_id)
            rec = self._save(replace(rec, segments=segments, links=links))
            refused: dict[int, FedError] = {}
            try:
                grants = await self._reserve_segments(rec, refused)
            except FedError as exc:
                causes = exc.causes if isinstance(exc, FanoutError) else (exc,)
                if not refused or not all(_replannable(c) for c in causes):
                    raise
                for index, err in sorted(refused.items()):
                    seg = rec.segments[index]
                    avoid.append(planner.Run(SpId(seg.domain), seg.request.src, seg.request.dst))
                    refusals.append(err.in_domain(seg.domain))
                log.warning("slice %s: attempt %d refused (%s); re-planning around it", rec.id, attempt + 1, exc)
                continue
            segments = tuple(
                replace(
                    s,
                    state=S.HELD,
                    handle=grants[s.index].handle,
                    labels={str(k): v for k, v in grants[s.index].labels.items()},
                    addresses={str(k): v for k, v in grants[s.index].addresses.items()},
                    detail=grants[s.index].detail,
                )
                for s in rec.segments
            )
            links = tuple(
                replace(ln, label_a=label_at(segments, ln.a_port), label_b=label_at(segments, ln.b_port))
                for ln in rec.links
            )
            rec = replace(rec, segments=segments, links=links)
            disagree = [ln for ln in links if not ln.labels_agree()]
            if not disagree:
                now = self._clock()
                own_labels = {t: lab for t in (rec.request.src, rec.request.dst) if (lab := label_at(segments, t))}
                addresses = {e: a for s in segments for e, a in s.addresses.items()}
                return self._transition(
                    rec, S.HELD, hold_expires_at=now + rec.hold_time_s, labels=own_labels, addresses=addresses
                )
            # Crankback: both sides of a link must carry the same label unless one can swap.
            names = ", ".join(f"{ln.a_port}={ln.label_a} vs {ln.b_port}={ln.label_b}" for ln in disagree)
            log.warning("slice %s: labels disagree (%s); releasing and retrying", rec.id, names)
            rec = self._save(rec)
            await self._release_segments(rec, "crankback")
            rec = self._save(replace(rec, segments=with_state(rec.segments, S.ABORTED)))
            for ln in disagree:
                key = planner.link_key(ln.a_port, ln.b_port)
                exclude.setdefault(key, set()).update(x for x in (ln.label_a, ln.label_b) if x is not None)
            refusals.append(
                ResourceExhausted(f"labels disagree on {names}", constraint=Constraint.LABELS, domain=self.sp_id)
            )
        if all(r.constraint == Constraint.LABELS and r.domain == self.sp_id for r in refusals):
            message = f"labels on the inter-domain links did not agree after {MAX_PLAN_ATTEMPTS} attempts"
        else:
            message = f"{MAX_PLAN_ATTEMPTS} plans were refused below: " + "; ".join(str(r) for r in refusals)
        raise ResourceExhausted(f"crankback: {message}", constraint=Constraint.CRANKBACK, causes=refusals)

    async def _reserve_segments(self, rec: SliceRecord, refused: dict[int, FedError]) -> dict[int, SegmentGrant]:
        """Reserve every segment at once; on failure all held are released and ``refused`` names who said no."""
        grants: dict[int, SegmentGrant] = {}

        def reserve_task(seg: SegmentRecord) -> Task:
            agent = self._agent(seg.domain)

            async def run() -> None:
                try:
                    grants[seg.index] = await agent.reserve(
                        SegmentOrder(
                            key=seg.order_key,
                            request=seg.request,
                            hold_time_s=rec.hold_time_s,
                            on_behalf_of=rec.requester,
                        )
                    )
                except FedError as exc:
                    refused[seg.index] = exc
                    raise

            async def undo() -> None:
                await agent.abort(grants[seg.index].handle)

            return Task(f"reserve {seg.domain}#{seg.index}", run, undo, domain=seg.domain)

        schedule = Schedule("reserve").add_step([reserve_task(s) for s in rec.segments])
        await run_schedule(schedule, self._record(rec.id, "reserve"))
        return grants

    async def _release_segments(self, rec: SliceRecord, operation: str) -> list[FedError]:
        """Abort held and terminate committed segments, best effort; return what failed."""

        def release_task(seg: SegmentRecord) -> Task:
            agent = self._agent(seg.domain)

            async def run() -> None:
                if seg.state in (S.HELD, S.RESERVING):
                    await agent.abort(seg.handle)
                else:
                    await agent.terminate(seg.handle)

            return Task(f"release {seg.domain}#{seg.index}", run, domain=seg.domain)

        holding = [s for s in rec.segments if s.handle and s.state not in FINAL_STATES]
        schedule = Schedule(operation, best_effort=True).add_step([release_task(s) for s in holding])
        try:
            await run_schedule(schedule, self._record(rec.id, operation))
        except FedError as exc:
            return list(getattr(exc, "causes", (exc,)))
        return []

    # --- commit / abort -----------------------------------------------------------------------

    def _require(self, rec: SliceRecord, allowed: Iterable[SliceState], operation: str) -> None:
        allowed = tuple(allowed)
        if rec.state not in allowed:
            need = " or ".join(s.value for s in allowed)
            raise FailedPrecondition(f"slice {rec.id} is {rec.state}; {operation} needs {need}")

    async def commit(self, slice_id: str) -> SliceRecord:
        """Make a held slice permanent in every child, or release it everywhere."""
        async with self._lock(slice_id):
            rec = self.get(slice_id)
            if rec.state in (S.COMMITTED, S.ACTIVE):
                return rec  # a repeated commit is answered, not refused
            self._require(rec, [S.HELD], "Commit")
            if self._clock() >= rec.hold_expires_at:
                await self._expire(rec)
                raise FailedPrecondition(f"slice {rec.id}: the hold expired before the commit arrived")
            rec = self._transition(rec, S.COMMITTING)
            committed: set[int] = set()

            def commit_task(seg: SegmentRecord) -> Task:
                agent = self._agent(seg.domain)

                async def run() -> None:
                    await agent.commit(seg.handle)
                    committed.add(seg.index)

                async def undo() -> None:
                    await agent.terminate(seg.handle)

                return Task(f"commit {seg.domain}#{seg.index}", run, undo, domain=seg.domain)

            schedule = Schedule("commit").add_step([commit_task(s) for s in rec.segments])
            try:
                await run_schedule(schedule, self._record(rec.id, "commit"))
            except FedError as exc:
                # Committed ones were terminated by compensation; release the rest too.
                rest = replace(rec, segments=tuple(s for s in rec.segments if s.index not in committed))
                await self._release_segments(rest, "commit-failed")
                self._save(
                    replace(
                        rec,
                        state=S.FAILED,
                        reason=f"commit failed: {exc}",
                        error_code=exc.code.value,
                        segments=with_state(rec.segments, S.TERMINATED),
                    )
                )
                raise
            return self._transition(rec, S.COMMITTED, segments=self._described(rec.segments, S.COMMITTED))

    async def abort(self, slice_id: str) -> SliceRecord:
        """Release a held slice everywhere."""
        async with self._lock(slice_id):
            rec = self.get(slice_id)
            if rec.state in (S.ABORTED, S.EXPIRED):
                return rec
            self._require(rec, [S.HELD], "Abort")
            rec = self._transition(rec, S.ABORTING)
            failures = await self._release_segments(rec, "abort")
            reason = "; ".join(str(f) for f in failures)
            return self._transition(
                rec,
                S.ABORTED,
                segments=with_state(rec.segments, S.ABORTED),
                reason=f"some children did not confirm (their holds expire on their own): {reason}" if reason else "",
            )

    async def _expire(self, rec: SliceRecord) -> SliceRecord:
        failures = await self._release_segments(rec, "expire")
        note = f"; not confirmed by: {', '.join(f.domain or '?' for f in failures)}" if failures else ""
        return self._transition(
            rec,
            S.EXPIRED,
            segments=with_state(rec.segments, S.EXPIRED),
            reason=f"hold time of {rec.hold_time_s:g} s passed without a commit{note}",
        )

    async def expire_due(self) -> list[str]:
        """Release every held slice whose hold time has passed; return their ids."""
        expired = []
        for slice_id in self._store.expired_holds(self._clock()):
            async with self._lock(slice_id):
                rec = self.get(slice_id)
                if rec.state is S.HELD and self._clock() >= rec.hold_expires_at:
                    await self._expire(rec)
                    expired.append(slice_id)
        return expired

    async def run_expiry(self, stop: asyncio.Event) -> None:
        """Background loop: release expired holds as their time comes."""
        while not stop.is_set():
            try:
                await self.expire_due()
            except FedError as exc:
                log.error("hold expiry pass failed: %s", exc)
            nxt = self._store.next_hold_expiry()
            delay = 1.0 if nxt is None else min(1.0, max(0.02, nxt - self._clock()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)

    # --- activate / terminate -----------------------------------------------------------------

    def _described(self, segments: Iterable[SegmentRecord], state: SliceState) -> tuple[SegmentRecord, ...]:
        out = []
        for s in segments:
            detail = self._agents[s.domain].describe(s.handle) if s.domain in self._agents else ()
            out.append(replace(s, state=state, detail=tuple(detail) or s.detail))
        return tuple(out)

    async def activate(self, slice_id: str) -> SliceRecord:
        """Bring a committed slice into service: children realise their segments, the WIM stitches."""
        async with self._lock(slice_id):
            rec = self.get(slice_id)
            if rec.state is S.ACTIVE:
                return rec
            self._require(rec, [S.COMMITTED], "Activate")
            rec = self._transition(rec, S.ACTIVATING)
            handles: dict[tuple[str, str], str] = {}

            def activate_task(seg: SegmentRecord) -> Task:
                agent = self._agent(seg.domain)
                return Task(
                    f"activate {seg.domain}#{seg.index}",
                    lambda: agent.activate(seg.handle),
                    domain=seg.domain,
                )

            def stitch_task(ln: LinkRecord) -> Task:
                spec = ConnectivitySpec(
                    key=f"{rec.id}:{ln.a_port}:{ln.b_port}",
                    points=(
                        ConnectionPoint(ln.a_port, ln.label_type, ln.label_a or 0),
                        ConnectionPoint(ln.b_port, ln.label_type, ln.label_b or 0),
                    ),
                    bandwidth_mbps=rec.request.bandwidth_mbps,
                )

                async def run() -> None:
                    handles[(ln.a_port, ln.b_port)] = await self._wim.create(spec)

                async def undo() -> None:
                    await self._wim.delete(handles[(ln.a_port, ln.b_port)])

                return Task(f"stitch {ln.a_port}~{ln.b_port}", run, undo, domain=self.sp_id)

            schedule = (
                Schedule("activate")
                .add_step([activate_task(s) for s in rec.segments])
                .add_step([stitch_task(ln) for ln in rec.links])
            )
            try:
                await run_schedule(schedule, self._record(rec.id, "activate"))
            except FedError as exc:
                self._save(replace(rec, state=S.COMMITTED, reason=f"activation failed: {exc}"))
                raise
            links = tuple(replace(ln, wim_handle=handles.get((ln.a_port, ln.b_port), "")) for ln in rec.links)
            return self._transition(
                rec, S.ACTIVE, links=links, reason="", segments=self._described(rec.segments, S.ACTIVE)
            )

    async def terminate(self, slice_id: str) -> SliceRecord:
        """Release a slice in any holding state everywhere: WIM stitches first, then the children."""
        async with self._lock(slice_id):
            rec = self.get(slice_id)
            if rec.state is S.TERMINATED:
                return rec
            self._require(rec, [S.HELD, S.COMMITTED, S.ACTIVE, S.FAILED], "Terminate")
            return await self._terminate(rec)

    async def _terminate(self, rec: SliceRecord) -> SliceRecord:
        rec = self._transition(rec, S.TERMINATING)

        def unstitch_task(ln: LinkRecord) -> Task:
            return Task(
                f"unstitch {ln.a_port}~{ln.b_port}",
                lambda: self._wim.delete(ln.wim_handle),
                domain=self.sp_id,
            )

        schedule = Schedule("terminate", best_effort=True).add_step(
            [unstitch_task(ln) for ln in rec.links if ln.wim_handle]
        )
        failures: list[FedError] = []
        try:
            await run_schedule(schedule, self._record(rec.id, "terminate"))
        except FedError as exc:
            failures.extend(getattr(exc, "causes", (exc,)))
        failures.extend(await self._release_segments(rec, "terminate"))
        if failures:
            reason = "terminate incomplete, retry Terminate: " + "; ".join(str(f) for f in failures)
            self._save(replace(rec, state=S.FAILED, reason=reason, error_code=failures[0].code.value))
            raise failures[0] if len(failures) == 1 else FailedPrecondition(reason)
        links = tuple(replace(ln, wim_handle="") for ln in rec.links)
        return self._transition(rec, S.TERMINATED, links=links, segments=with_state(rec.segments, S.TERMINATED))

    # --- restart, usage -----------------------------------------------------------------------

    async def recover(self) -> None:
        """After a restart: re-apply local holdings, settle interrupted operations, expire old holds."""
        for domain, handle, state in self._store.local_holdings():
            if domain in self._agents:
                await self._agents[domain].restore(handle, committed=state is not S.HELD)
        for wim_handle in self._store.wim_handles():
            await self._wim.restore(wim_handle)
        for rec in self._store.slices([S.RESERVING, S.ABORTING, S.COMMITTING, S.ACTIVATING, S.TERMINATING]):
            log.warning("slice %s was %s when the broker stopped; settling it", rec.id, rec.state)
            if rec.state in (S.RESERVING, S.ABORTING):
                await self._release_segments(rec, "recover")
                final = S.FAILED if rec.state is S.RESERVING else S.ABORTED
                self._save(
                    replace(
                        rec,
                        state=final,
                        reason=f"broker restarted during {rec.state}",
                        error_code=ErrorCode.UNAVAILABLE.value,
                        segments=with_state(rec.segments, S.ABORTED),
                    )
                )
            elif rec.state is S.ACTIVATING:
                self._save(replace(rec, state=S.COMMITTED, reason="broker restarted during activation"))
            elif rec.state is S.TERMINATING:
                try:
                    await self._terminate(replace(rec, state=S.FAILED))
                except FedError as exc:
                    log.error("slice %s: terminate after restart incomplete: %s", rec.id, exc)
            else:  # COMMITTING: children may be half committed; release everything.
                try:
                    await self._terminate(replace(rec, state=S.FAILED))
                except FedError as exc:
                    log.error("slice %s: release after interrupted commit incomplete: %s", rec.id, exc)
        expired = await self.expire_due()
        if expired:
            log.info("released %d holds that expired while the broker was down", len(expired))

    def usage(self) -> Usage:
        """What the broker holds now."""
        holding = self._store.count_holding()
        domains = tuple(self._agents[d].usage() for d in sorted(self._local) if d in self._agents)
        return Usage(holding_slices=holding, domains=domains, wim=self._wim.usage())


__all__ = ["HOLDING_STATES", "SliceEvent", "SliceManager", "Usage"]


#: Constraints a child's planner names that another plan at this level might avoid.
_PLANNING_CONSTRAINTS = frozenset(
    {
        Constraint.EXCLUDE,
        Constraint.INCLUDE,
        Constraint.TRANSIT_POLICY,
        Constraint.ISOLATION,
        Constraint.QOS,
        Constraint.CHAIN,
        Constraint.LATENCY,
        Constraint.PRICE,
        Constraint.CRANKBACK,
    }
)


def _named_below(constraint: str, refusals: list[FedError]) -> str:
    """When only the crankback is left and every refusal below named one constraint, that one is the reason."""
    named = {r.constraint for r in refusals}
    return named.pop() if constraint == Constraint.CRANKBACK and len(named) == 1 and "" not in named else constraint


def _replannable(err: FedError) -> bool:
    """A child's refusal that another plan might avoid: no capacity, or a planning constraint it could not meet."""
    if err.code is ErrorCode.RESOURCE_EXHAUSTED:
        return True
    return err.code is ErrorCode.FAILED_PRECONDITION and err.constraint in _PLANNING_CONSTRAINTS

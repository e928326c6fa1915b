"""Reserving a slice: plan over the children's notes, hold everywhere or nothing, crank back around refusals.

A part of ``SliceManager`` (``broker.core.lifecycle``), kept apart because it is the one operation that
plans: it decides the segments, asks every child at once, releases an attempt before the next, and
hands a failed reservation to the release path (ABORTING until every child confirmed).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import TypeVar

from broker.core.manager_base import ManagerBase
from broker.core.operations import (
    labels_to_skip,
    named_below,
    outcome_unknown,
    without_pending,
    worth_crankback,
)
from broker.core.records import SegmentRecord, SliceRecord, Then, label_at, records_for_plan, request_hash
from broker.core.workflow import TaskStatus
from capability_catalog.model import SpId
from domain_agents.base import SegmentGrant, SegmentOrder
from slicing import planner
from slicing.errors import (
    AlreadyExists,
    Constraint,
    ErrorCode,
    FailedPrecondition,
    FanoutError,
    FedError,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
    crankback_refusal,
    error_for_code,
)
from slicing.model import Plan, SliceRequest, SliceState

log = logging.getLogger(__name__)
S = SliceState
T = TypeVar("T")

#: The lock planning holds from reading which labels are taken to saving its own picks.
PLAN_LOCK = "plan:labels"
#: Plans tried per Reserve: the first and the crankbacks after lower-SP refusals or label disagreements.
MAX_PLAN_ATTEMPTS = 4
MAX_HOLD_TIME_S = 3600.0
#: How long a Reserve refused for capacity waits for a newer note (a release climbing up) before it gives up.
NOTE_SETTLE_S = 0.3
#: How long a Reserve refused while a child has sent no note since this broker started (it just started,
#: or the child just came up) waits for that child's first note before it answers UNAVAILABLE.
FIRST_NOTE_WAIT_S = 5.0
#: The request hash of a request id cancelled before its Reserve arrived.
CANCELLED = "cancelled-before-arrival"


class Reserving(ManagerBase):
    """The Reserve operation of ``SliceManager`` (shared helpers in ``broker.core.manager_base``)."""

    # --- reserve ------------------------------------------------------------------------------

    async def reserve(
        self,
        requester: str,
        request_id: str,
        request: SliceRequest,
        hold_time_s: float = 0.0,
        deadline: float | None = None,
        then: Then = Then.HOLD,
    ) -> SliceRecord:
        """Hold a slice in every child the plan involves, or hold nothing at all (``deadline``: the caller's).

        ``then`` makes it a one-call order: once held everywhere the slice is committed (and activated)
        under the same lock, and the answer is the slice COMMITTED (ACTIVE) or the error of the step
        that failed, as Commit (Activate) would have raised it. A repeat of an order answers where the
        order got to: it waits for one in flight, drives one an SP below did not confirm yet, and
        raises the error a refused one raised.
        """
        self._check_loop(request)
        if not request_id:
            raise InvalidArgument("request_id", "must not be empty")
        if hold_time_s < 0 or hold_time_s > MAX_HOLD_TIME_S:
            raise InvalidArgument("hold_time_s", f"must be between 0 (default) and {MAX_HOLD_TIME_S:.0f}")
        return await self._detached(self._reserve(requester, request_id, request, hold_time_s, deadline, then))

    async def _reserve(
        self,
        requester: str,
        request_id: str,
        request: SliceRequest,
        hold_time_s: float,
        deadline: float | None,
        then: Then,
    ) -> SliceRecord:
        hold = hold_time_s or self._default_hold_s
        digest = request_hash(request, hold, then)
        async with self._lock(f"request:{requester}:{request_id}"):
            existing = self._store.find_by_request(requester, request_id)
            if existing is not None:
                if existing.request_hash == CANCELLED:
                    raise FailedPrecondition(
                        f"request_id '{request_id}' was cancelled by its requester before this Reserve arrived"
                    )
                if existing.request_hash != digest:
                    raise AlreadyExists(
                        f"request_id '{request_id}' was already used with a different request (slice {existing.id})"
                    )
                if existing.state is S.RESERVING:
                    existing = await self._settle_orphaned_reservation(existing, deadline)
                if existing.state in (S.FAILED, S.ABORTING) and existing.error_code:
                    raise error_for_code(ErrorCode(existing.error_code), without_pending(existing.reason))
                if existing.then is not Then.HOLD:
                    return await self._repeated_order(existing.id)
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
                then=then,
            )
            rec = self._save(rec)
            async with self._lock(rec.id):
                try:
                    await self._faults.hit("reserve.start", rec.id)
                    held = await self._reserve_with_crankback(rec, deadline)
                    await self._faults.hit("reserve.done", rec.id)
                except FedError as exc:
                    await self._fail_reserve(rec.id, exc, deadline)
                    raise
                if then is Then.HOLD:
                    return held
                # An order: the two-phase protocol goes on here, under the same locks, so a repeat
                # of the request waits for it and nothing else can step in between hold and commit.
                return await self._carry_out_order(held)

    async def _repeated_order(self, slice_id: str) -> SliceRecord:
        """A repeat of a one-call order (the request's lock held): answer where the order got to.

        Under the request's lock the order itself is over (it ran to its end, or its process died):
        what is left in flight is driven on as the reconciler would, a hold no decision followed (a
        replica died between them) is committed as the order asked, and an activation that was refused
        and compensated raises what the order raised.
        """
        async with self._lock(slice_id):
            rec = self.get(slice_id)
            if rec.state is S.HELD:
                return await self._carry_out_order(rec)
            if rec.state is S.COMMITTING:
                return await self.drive_commit(rec)
            if rec.state is S.ACTIVATING:
                return await self.drive_activate(rec)
            if rec.state in (S.COMMITTED, S.DEACTIVATING) and rec.error_code and rec.then is Then.ACTIVATE:
                raise error_for_code(ErrorCode(rec.error_code), without_pending(rec.reason))
            return rec

    async def _settle_orphaned_reservation(self, rec: SliceRecord, deadline: float | None) -> SliceRecord:
        """A repeated Reserve found its reservation RESERVING, under the request's lock: no one runs it.

        In one process the lock is held for the whole reservation, so this is another broker process
        of this SP (a replica sharing the store) that died in the middle of it. Presumed abort, as a
        restart decides: what a child may hold is released, and the request fails UNAVAILABLE.
        """
        async with self._lock(rec.id):
            rec = self.get(rec.id)
            if rec.state is S.RESERVING:
                log.warning("slice %s: RESERVING and no process runs it (a replica stopped); releasing it", rec.id)
                why = Unavailable(
                    "the reservation was interrupted: the broker process running it stopped; "
                    "send the request again under a new request_id"
                )
                await self._fail_reserve(rec.id, why, deadline)
                rec = self.get(rec.id)
        return rec

    async def cancel_request(self, requester: str, request_id: str) -> SliceRecord:
        """Release whatever ``request_id`` holds, or remember it as cancelled when its Reserve never arrived.

        An upper SP that got no answer to a Reserve releases by the order key; should the Reserve
        arrive later (it was queued behind a stopped process, say), it is refused, not held.
        """
        async with self._lock(f"request:{requester}:{request_id}"):
            existing = self._store.find_by_request(requester, request_id)
            if existing is None:
                now = self._clock()
                return self._save(
                    SliceRecord(
                        id=f"{self.sp_id}-{uuid.uuid4().hex[:12]}",
                        requester=requester,
                        request_id=request_id,
                        request_hash=CANCELLED,
                        request=SliceRequest(src="-", dst="-", bandwidth_mbps=0),  # type: ignore[arg-type]
                        hold_time_s=0.0,
                        state=S.ABORTED,
                        created_at=now,
                        updated_at=now,
                        reason="cancelled by its requester before the Reserve arrived",
                    )
                )
        return await self.terminate(existing.id)

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
            if silent := self._silent(notes):
                raise Unavailable(
                    f"no capability notes from any child yet; {', '.join(silent)} sent this broker no note yet "
                    "(it may have just started): retry in a few seconds"
                )
            raise ResourceExhausted("no capability notes from any child yet; nothing to decompose over")
        # Sub-requests carry the trace with this SP on it; an include naming this SP is met already.
        mine = replace(
            request,
            trace=(*request.trace, self.sp_id),
            include_sps=tuple(sp for sp in request.include_sps if sp != self.sp_id),
        )
        try:
            return planner.plan(
                mine,
                usable,
                used_labels=self._store.used_link_labels(),
                exclude_labels=exclude,
                avoid_runs=tuple(avoid),
            )
        except InvalidArgument as exc:
            # A terminal no note names is the customer's mistake only once every child has spoken:
            # a broker that just started (a replica back from a crash) may not have all notes yet.
            silent = self._silent(notes)
            if exc.field not in ("request.src", "request.dst") or not silent:
                raise
            raise Unavailable(
                f"{exc.message}; {', '.join(silent)} sent this broker no note yet (it may have just started): "
                "retry in a few seconds"
            ) from None

    def _silent(self, notes: Mapping[SpId, object] | None = None) -> list[str]:
        """Children that sent no note since this process started (taken or refused), and hold none here."""
        held = self._notes() if notes is None else notes
        heard = set(self._heard())
        return sorted(sp for sp in self._agents if sp not in heard and sp not in held)

    async def _first_notes(self, silent: list[str], deadline: float | None) -> bool:
        """Wait up to ``FIRST_NOTE_WAIT_S`` (half the caller's time at most) for a silent child to speak."""
        wait_s = FIRST_NOTE_WAIT_S if deadline is None else min(FIRST_NOTE_WAIT_S, (deadline - self._clock()) * 0.5)
        for _ in range(max(0, int(wait_s / 0.05))):
            if len(self._silent()) < len(silent):
                return True
            await asyncio.sleep(0.05)
        return len(self._silent()) < len(silent)

    async def _reserve_with_crankback(self, rec: SliceRecord, deadline: float | None) -> SliceRecord:
        """Plan, reserve everywhere; on a refusal or a label disagreement release all and re-plan around it.

        A child refusing with RESOURCE_EXHAUSTED, or with FAILED_PRECONDITION naming a planning
        constraint (``operations.replannable``), has its run avoided in the next plan; labels that
        disagreed are skipped (with every label below them that a side passed over). Other errors end
        the reservation at once. Every try releases what it held before the next starts (confirmed by
        every child, else the reservation fails here), and after ``MAX_PLAN_ATTEMPTS`` it fails.
        """
        exclude: dict[tuple[str, str], set[int]] = {}
        avoid: list[planner.Run] = []
        refusals: list[FedError] = []
        waited_for_notes = waited_for_first = False
        for attempt in range(MAX_PLAN_ATTEMPTS):
            seen = self._note_versions()
            refused: FedError | None = None
            # Planning picks each link's preferred label among those no holding slice uses; the pick is
            # saved before the lock is let go, so no other reservation (in this process or another
            # replica sharing the store) plans on the same label meanwhile.
            async with self._lock(PLAN_LOCK):
                try:
                    plan = self._plan(rec.request, exclude, avoid)
                except FedError as exc:
                    refused = exc
                else:
                    segments, links = records_for_plan(rec, plan, attempt, self._notes(), self._local, self.sp_id)
                    with self._batch():  # the picks and the tasks about to run, in one commit
                        rec = self._save(replace(rec, segments=segments, links=links))
                        running = (TaskStatus(0, _task("reserve", s), "running") for s in rec.segments)
                        self._log(rec.id, "reserve", running)
            if refused is not None:
                # A broker that just started plans on the notes it has heard so far: a child still silent
                # may hold the path. Wait (once, bounded) for its first note and plan again on it.
                silent = self._silent()
                retry_codes = (ErrorCode.UNAVAILABLE, ErrorCode.RESOURCE_EXHAUSTED)
                if silent and not waited_for_first and refused.code in retry_codes:
                    waited_for_first = True
                    log.info("slice %s: refused while %s sent no note yet; waiting for it", rec.id, ", ".join(silent))
                    if await self._first_notes(silent, deadline):
                        continue
                # A refusal for capacity may only mean a release below has not climbed up yet: wait
                # (briefly, once) for a newer note and plan again on it.
                if refused.code is ErrorCode.RESOURCE_EXHAUSTED and not waited_for_notes:
                    waited_for_notes = True
                    if await self._newer_notes(seen, deadline):
                        log.info("slice %s: refused on notes that changed meanwhile; planning again", rec.id)
                        continue
                if not refusals:
                    raise refused
                raise crankback_refusal(
                    refused.code, refused.message, refusals, constraint=named_below(refused.constraint, refusals)
                ) from None
            planned = {planner.link_key(ln.a_port, ln.b_port): ln.label_a for ln in links}
            rec, failed, statuses = await self._reserve_segments(rec, deadline)
            if failed:
                rec = self._record_answers(rec, statuses)
                errors = [e for _, e in failed]
                rec = await self._release_attempt(rec, deadline, errors)
                if not worth_crankback(errors):
                    raise errors[0] if len(errors) == 1 else FanoutError(errors)
                now_seen = self._note_versions()
                for seg, err in failed:
                    if now_seen.get(seg.domain) != seen.get(seg.domain) and not waited_for_notes:
                        # The child's note changed while we planned on the old one: try it again, once.
                        waited_for_notes = True
                        continue
                    refusals.append(err)
                    avoid.append(planner.Run(SpId(seg.domain), seg.request.src, seg.request.dst))
                log.warning("slice %s: attempt %d refused (%s); re-planning around it", rec.id, attempt + 1, errors[0])
                continue
            links = tuple(
                replace(ln, label_a=label_at(rec.segments, ln.a_port), label_b=label_at(rec.segments, ln.b_port))
                for ln in rec.links
            )
            rec = replace(rec, links=links)
            disagree = [ln for ln in links if not ln.labels_agree()]
            if not disagree:
                now = self._clock()
                own = {t: lab for t in (rec.request.src, rec.request.dst) if (lab := label_at(rec.segments, t))}
                addresses = {e: a for s in rec.segments for e, a in s.addresses.items()}
                with self._batch():  # the answers, the labels they agree on and HELD: one write, one commit
                    self._log(rec.id, "reserve", statuses)
                    return self._transition(
                        rec, S.HELD, hold_expires_at=now + rec.hold_time_s, labels=own, addresses=addresses
                    )
            rec = self._record_answers(rec, statuses)
            names = ", ".join(f"{ln.a_port}={ln.label_a} vs {ln.b_port}={ln.label_b}" for ln in disagree)
            log.warning("slice %s: labels disagree (%s); releasing and retrying", rec.id, names)
            rec = await self._release_attempt(rec, deadline, [])
            for ln in disagree:
                key = planner.link_key(ln.a_port, ln.b_port)
                exclude.setdefault(key, set()).update(labels_to_skip(planned.get(key), ln.label_a, ln.label_b))
            refusals.append(
                ResourceExhausted(f"labels disagree on {names}", constraint=Constraint.LABELS, domain=self.sp_id)
            )
        if all(r.constraint == Constraint.LABELS and r.domain == self.sp_id for r in refusals):
            tried = f"crankback: labels on the inter-domain links did not agree after {MAX_PLAN_ATTEMPTS} attempts"
        else:
            tried = f"crankback: {MAX_PLAN_ATTEMPTS} plans were refused below"
        raise crankback_refusal(ErrorCode.RESOURCE_EXHAUSTED, tried, refusals, constraint=Constraint.CRANKBACK)

    def _record_answers(self, rec: SliceRecord, statuses: list[TaskStatus]) -> SliceRecord:
        """Keep the children's answers (in ``rec``'s segments) and their task statuses, in one commit."""
        with self._batch():
            self._log(rec.id, "reserve", statuses)
            return self._save(rec)

    def _note_versions(self) -> dict[str, int]:
        return {sp: n.version for sp, n in self._notes().items()}

    async def _newer_notes(self, seen: Mapping[str, int], deadline: float | None) -> bool:
        """Wait up to ``NOTE_SETTLE_S`` (and within the caller's deadline) for a child's note to change."""
        wait_s = NOTE_SETTLE_S if deadline is None else min(NOTE_SETTLE_S, (deadline - self._clock()) * 0.25)
        for _ in range(max(0, int(wait_s / 0.02))):
            if self._note_versions() != dict(seen):
                return True
            await asyncio.sleep(0.02)
        return self._note_versions() != dict(seen)

    async def _reserve_segments(
        self, rec: SliceRecord, deadline: float | None
    ) -> tuple[SliceRecord, list[tuple[SegmentRecord, FedError]], list[TaskStatus]]:
        """Ask every child at once; return the slice with each answer in its segments (not yet saved:
        the caller saves it with what follows), the errors, and the task statuses to log with it.

        A child that answered with an error holds nothing (by the protocol, it releases on its own
        what it could not confirm); one whose answer never came is left RESERVING, to be released by
        its order key.
        """
        timeout = self._child_time(deadline)

        async def one(seg: SegmentRecord) -> SegmentGrant:
            await self._faults.hit("reserve.task.before", rec.id, seg.domain)
            order = SegmentOrder(
                key=seg.order_key,
                request=seg.request,
                hold_time_s=rec.hold_time_s,
                on_behalf_of=rec.requester,
                timeout_s=timeout,
            )
            grant = await self._bounded(self._agent(seg.domain).reserve(order), timeout + 0.5, seg.domain)
            await self._faults.hit("reserve.task.after", rec.id, seg.domain)
            return grant

        results = await asyncio.gather(*(one(s) for s in rec.segments), return_exceptions=True)
        segments: list[SegmentRecord] = []
        failed: list[tuple[SegmentRecord, FedError]] = []
        statuses: list[TaskStatus] = []
        for seg, res in zip(rec.segments, results, strict=True):
            if isinstance(res, SegmentGrant):
                segments.append(
                    replace(
                        seg,
                        state=S.HELD,
                        handle=res.handle,
                        labels={str(k): v for k, v in res.labels.items()},
                        addresses={str(k): v for k, v in res.addresses.items()},
                        detail=res.detail,
                    )
                )
                statuses.append(TaskStatus(0, _task("reserve", seg), "done"))
                continue
            err = _as_error(res, seg.domain)
            segments.append(seg if outcome_unknown(err) else replace(seg, state=S.ABORTED))
            failed.append((seg, err))
            statuses.append(TaskStatus(0, _task("reserve", seg), "failed", str(err)))
        return replace(rec, segments=tuple(segments)), failed, statuses

    async def _release_attempt(self, rec: SliceRecord, deadline: float | None, errors: list[FedError]) -> SliceRecord:
        """Release one reservation attempt before the next; fail the Reserve when a child cannot confirm."""
        rec, failures = await self._release_all(rec, self._child_time(deadline), "crankback")
        if failures:
            raise errors[0] if errors else failures[0][1]
        return rec

    async def _fail_reserve(self, slice_id: str, exc: FedError, deadline: float | None) -> None:
        """A Reserve failed: release what any child may hold; FAILED once all confirmed, else ABORTING."""
        rec = self.get(slice_id)
        rec = self._transition(
            rec, S.ABORTING, reason=str(exc), error_code=exc.code.value, settle_to=S.FAILED, hold_expires_at=0.0
        )
        # One short try now; what a child does not confirm is the reconciler's from here on.
        with_time = max(0.2, min(self.child_timeout_s, self._child_time(deadline)) * 0.5)
        try:
            await self.drive_release(rec, limit_s=with_time)
        except FedError as pending:
            log.warning("slice %s: reserve failed and %s; the reconciler goes on", rec.id, pending)


def _task(kind: str, seg: SegmentRecord) -> str:
    return f"{kind} {seg.domain}#{seg.index}"


def _as_error(res: BaseException | object, domain: str) -> FedError:
    """A child's failure as a ``FedError`` naming it; cancellation and non-errors are not swallowed."""
    if isinstance(res, asyncio.CancelledError):
        raise res
    if isinstance(res, FedError):
        return res.in_domain(domain)
    if isinstance(res, Exception):
        log.error("a task at %s raised an unexpected error", domain, exc_info=res)
        return error_for_code(ErrorCode.INTERNAL, f"{domain}: {type(res).__name__}: {res}", domain=domain)
    if isinstance(res, BaseException):
        raise res
    raise TypeError(f"not an error: {res!r}")

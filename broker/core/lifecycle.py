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
from dataclasses import dataclass, replace

from broker.core.children import FollowingChildren
from broker.core.events import SliceEvent
from broker.core.operations import (
    OPERATIONS,
    RELEASED,
    Operation,
    compensation_reason,
    lost_hold,
    outcome_unknown,
    segment_end_state,
    settle_state,
    with_pending,
    without_pending,
)
from broker.core.provisioning import Provisioning
from broker.core.records import LinkRecord, SegmentRecord, SliceRecord, Then
from broker.core.reservation import CANCELLED, Reserving, _as_error, _task
from broker.core.workflow import TaskStatus
from domain_agents.base import CommitsAndActivates, DomainUsage, NotActivated
from slicing.errors import (
    ErrorCode,
    FailedPrecondition,
    FedError,
    Unavailable,
    error_for_code,
)
from slicing.model import HOLDING_STATES, SliceState
from wim.base import WimUsage

log = logging.getLogger(__name__)
S = SliceState


@dataclass(frozen=True)
class Usage:
    """What the broker holds now."""

    holding_slices: int
    domains: tuple[DomainUsage, ...]
    wim: WimUsage


class SliceManager(Reserving, Provisioning, FollowingChildren):
    """Reserve, commit, abort, activate, terminate slices over this broker's children."""

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
            return await self._decide_commit(rec, activate=False)

    async def _decide_commit(self, rec: SliceRecord, *, activate: bool) -> SliceRecord:
        """Commit a HELD slice (the caller holds its lock): the decision is durable before any child hears.

        With ``activate`` the decision is also to activate (a one-call order, a CommitAndActivate): the
        intent is written in the same record, so a crash after it rolls forward to ACTIVE.
        """
        point = "order" if activate else "commit"
        if self._clock() >= rec.hold_expires_at:
            await self._expire(rec)
            raise FailedPrecondition(f"slice {rec.id}: the hold expired before the commit arrived")
        await self._faults.hit(f"{point}.start", rec.id)
        then = Then.ACTIVATE if activate else rec.then
        rec = self._transition(rec, S.COMMITTING, reason="", then=then)  # the decision, durable before any child hears
        await self._faults.hit(f"{point}.decided", rec.id)
        return await self.drive_commit(rec)

    async def _carry_out_order(self, rec: SliceRecord) -> SliceRecord:
        """A one-call order held everywhere (the caller holds the slice's lock): commit, and activate if asked."""
        return await self._decide_commit(rec, activate=rec.then is Then.ACTIVATE)

    async def commit_and_activate(self, slice_id: str) -> SliceRecord:
        """Commit a slice and activate it, each child told both in one step: Commit followed by Activate.

        Raises what Commit would when the slice did not commit; once it committed, what Activate would
        have raised comes as ``NotActivated`` (the slice COMMITTED again after a refusal, or ACTIVATING
        when an SP below did not confirm yet).
        """
        return await self._detached(self._commit_and_activate(slice_id))

    async def _commit_and_activate(self, slice_id: str) -> SliceRecord:
        async with self._lock(slice_id):
            rec = self.get(slice_id)
            try:
                return await self._on_to_active(rec)
            except FedError as exc:
                after = self.get_or_none(slice_id)
                if after is not None and after.state in _COMMIT_HELD:
                    raise NotActivated(exc) from exc
                raise

    async def _on_to_active(self, rec: SliceRecord) -> SliceRecord:
        """Drive a slice toward ACTIVE from wherever Commit then Activate would go on (lock held)."""
        if rec.state is S.ACTIVE:
            return rec
        if rec.state is S.HELD:
            return await self._decide_commit(rec, activate=True)
        if rec.state is S.COMMITTING:
            if rec.then is not Then.ACTIVATE:
                rec = self._save(replace(rec, then=Then.ACTIVATE))
            return await self.drive_commit(rec)
        if rec.state is S.COMMITTED:
            return await self._start_activation(rec)
        if rec.state is S.ACTIVATING:
            return await self.drive_activate(rec)
        raise FailedPrecondition(
            f"slice {rec.id} is {rec.state}; CommitAndActivate needs HELD, COMMITTING, COMMITTED or ACTIVATING"
        )

    async def drive_commit(self, rec: SliceRecord, limit_s: float | None = None) -> SliceRecord:
        """Send Commit to every child that has not confirmed it; the caller holds the slice's lock.

        All confirmed: COMMITTED. One lost its hold: everything is released and the slice ends FAILED
        naming it. Some did not answer: the slice stays COMMITTING naming them and ``Unavailable`` is
        raised (the reconciler retries) — until the hold time is over, when their holds are gone too.
        A commit decided with the activation (``Then.ACTIVATE``) goes on as ``_drive_commit_and_activate``.
        """
        if rec.then is Then.ACTIVATE:
            return await self._drive_commit_and_activate(rec, limit_s)
        timeout = limit_s or self.child_timeout_s
        todo = [s for s in rec.segments if s.state is not S.COMMITTED]

        async def one(seg: SegmentRecord) -> None:
            await self._faults.hit("commit.task.before", rec.id, seg.domain)
            await self._bounded(self._agent(seg.domain).commit(seg.handle), timeout, seg.domain)
            await self._faults.hit("commit.task.after", rec.id, seg.domain)

        results = await asyncio.gather(*(one(s) for s in todo), return_exceptions=True)
        done = {s.index for s, r in zip(todo, results, strict=True) if r is None}
        failed = [(s, _as_error(r, s.domain)) for s, r in zip(todo, results, strict=True) if r is not None]
        statuses = [TaskStatus(0, _task("commit", s), "done" if s.index in done else "failed") for s in todo]
        segments = tuple(replace(s, state=S.COMMITTED) if s.index in done else s for s in rec.segments)
        if failed:
            with self._batch():
                self._log(rec.id, "commit", statuses)
                rec = self._save(replace(rec, segments=segments))
            await self._commit_refused(rec, failed)
        with self._batch():  # every child confirmed: the log and COMMITTED, one write and one commit
            self._log(rec.id, "commit", statuses)
            rec = self._transition(rec, S.COMMITTED, reason="", segments=self._described(segments, S.COMMITTED))
        await self._faults.hit("commit.done", rec.id)
        return rec

    async def _commit_refused(self, rec: SliceRecord, failed: list[tuple[SegmentRecord, FedError]]) -> None:
        """Raise when a child did not confirm its commit: released everywhere (a hold lost, the hold time
        over) or still COMMITTING naming the children that did not answer (the reconciler goes on)."""
        errors = [e for _, e in failed]
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

    async def _drive_commit_and_activate(self, rec: SliceRecord, limit_s: float | None) -> SliceRecord:
        """Commit and activate every child not yet active, one step per child; the caller holds the lock.

        The commit half is decided as ``drive_commit`` decides it (a lost hold releases everything, a
        child that did not answer keeps the slice COMMITTING). Once every child committed, the slice is
        ACTIVATING in that same write, and the activation half goes as ``drive_activate`` would: a child
        that refused its activation is compensated (everything deactivated, COMMITTED again), one that
        did not confirm it keeps the slice ACTIVATING naming it (the reconciler sends it Activate),
        and with every child active the WIM stitches the borders and the slice is ACTIVE.
        """
        timeout = limit_s or self.child_timeout_s
        todo = [s for s in rec.segments if s.state is not S.ACTIVE]

        async def one(seg: SegmentRecord) -> NotActivated | None:
            await self._faults.hit("order.task.before", rec.id, seg.domain)
            try:
                await self._commit_then_activate(seg, timeout)
                outcome = None
            except NotActivated as exc:
                outcome = exc
            try:
                await self._faults.hit("order.task.after", rec.id, seg.domain)
            except FedError as exc:
                # The child answered, so its commit held: what fails after its answer fails the activation.
                outcome = NotActivated(exc)
            return outcome

        results = await asyncio.gather(*(one(s) for s in todo), return_exceptions=True)
        answered = {s.index: r for s, r in zip(todo, results, strict=True) if r is None or isinstance(r, NotActivated)}
        failed = [(s, _as_error(r, s.domain)) for s, r in zip(todo, results, strict=True) if s.index not in answered]
        not_active = [
            (s.domain, na.error.in_domain(s.domain))
            for s in todo
            if isinstance(na := answered.get(s.index), NotActivated)
        ]
        self._log(
            rec.id,
            "order",
            [TaskStatus(0, _task("commit+activate", s), _order_status(answered, s)) for s in todo],
        )
        segments = tuple(
            replace(s, state=S.ACTIVE if answered[s.index] is None else S.COMMITTED) if s.index in answered else s
            for s in rec.segments
        )
        rec = self._save(replace(rec, segments=segments))
        await self._commit_refused(rec, failed)
        # Every child committed: the slice is committed and its activation under way, in one write.
        deadline = self._clock() + self.activation_timeout_s
        rec = self._transition(rec, S.ACTIVATING, reason="", error_code="", deadline_at=deadline)
        errors = [e for _, e in not_active]
        refusals = [(name, e) for name, e in not_active if not outcome_unknown(e)]
        if refusals:
            await self._compensate_activation(rec, compensation_reason(refusals), refusals[0][1].code, errors, limit_s)
        if not_active:
            names = sorted({name for name, _ in not_active})
            rec = self._save(replace(rec, reason=with_pending("activation decided; waiting for confirmation", names)))
            raise Unavailable(
                f"slice {rec.id}: committed, and the activation is decided and goes on: {', '.join(names)} did "
                f"not confirm yet ({errors[0]}); watch the slice for ACTIVE",
                causes=errors,
            )
        return await self.drive_activate(rec, limit_s, done_point="order.done")

    async def _commit_then_activate(self, seg: SegmentRecord, limit_s: float) -> None:
        """One child's commit and activation: one call to a child that takes both, else Commit then Activate."""
        agent = self._agent(seg.domain)
        if isinstance(agent, CommitsAndActivates):
            await self._bounded(agent.commit_and_activate(seg.handle), limit_s, seg.domain)
            return
        if seg.state is not S.COMMITTED:
            await self._bounded(agent.commit(seg.handle), limit_s, seg.domain)
        try:
            await self._bounded(agent.activate(seg.handle), limit_s, seg.domain)
        except FedError as exc:
            raise NotActivated(exc.in_domain(seg.domain)) from exc

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

    async def recover(self) -> None:
        """After a restart: re-apply local holdings, hand interrupted operations to the reconciler.

        RESERVING (and a one-call order held but not committed) is presumed aborted; COMMITTING,
        ACTIVATING and DEACTIVATING roll forward; ABORTING and TERMINATING go on releasing.
        """
        for domain, handle, state in self._store.local_holdings():
            if domain in self._agents:
                await self._agents[domain].restore(handle, committed=state is not S.HELD)
        # What was in service goes back in service: a restored segment is only held or committed at
        # its agent, which would neither measure it (monitoring) nor rebuild a data plane that is gone.
        for domain, handle in sorted(self._store.in_service_local()):
            if domain in self._agents:
                try:
                    await self._agents[domain].activate(handle)
                except FedError as exc:
                    log.warning("%s: segment restored but not back in service: %s (terminate or activate again)",
                                domain, exc)  # fmt: skip
        for wim_handle in self._store.wim_handles():
            await self._wim.restore(wim_handle)
        for found in self._store.slices([S.RESERVING, S.HELD]):
            # Another process sharing the store may be reserving (ordering) it right now: its own operation
            # settles it (and, should that process die, the reconciler here). Otherwise, under the slice's
            # lock, a reservation still RESERVING, or an order held but not committed, has no one left to
            # finish it: presumed abort (a plain hold waits for its Commit, or expires).
            if _left_by_a_restart(found) is None or self.busy(found.id):
                continue
            async with self._lock(found.id):
                rec = self._store.get(found.id)
                why = _left_by_a_restart(rec) if rec is not None else None
                if rec is None or why is None:
                    continue
                log.warning("slice %s was %s when the broker stopped; releasing it", rec.id, rec.state)
                self._transition(
                    rec,
                    S.ABORTING,
                    reason=f"broker {self.sp_id} restarted {why}",
                    error_code=ErrorCode.UNAVAILABLE.value,
                    settle_to=S.FAILED,
                )
        # Holds that lapsed while the broker was down; a child that does not answer at once is the
        # reconciler's, so a dead child cannot hold up the start.
        expired = await self.expire_due(limit_s=1.0)
        if expired:
            log.info("released %d holds that expired while the broker was down", len(expired))

    async def abandon_reservation(self, rec: SliceRecord, why: str) -> SliceRecord:
        """Release a RESERVING slice no operation owns any more (the caller holds its lock)."""
        rec = self._transition(rec, S.ABORTING, reason=why, error_code=ErrorCode.UNAVAILABLE.value, settle_to=S.FAILED)
        return await self.drive_release(rec)

    def usage(self) -> Usage:
        """What the broker holds now."""
        holding = self._store.count_holding()
        domains = tuple(self._agents[d].usage() for d in sorted(self._local) if d in self._agents)
        return Usage(holding_slices=holding, domains=domains, wim=self._wim.usage())


def _left_by_a_restart(rec: SliceRecord) -> str | None:
    """Why a slice found at a restart has no operation left to finish it (None: it has, or needs none)."""
    if rec.state is S.RESERVING:
        return "during the reservation"
    if rec.state is S.HELD and rec.then is not Then.HOLD:
        return "before the order's commit decision"
    return None


#: States in which a slice's commit held, whatever its activation did.
_COMMIT_HELD = frozenset({S.COMMITTED, S.ACTIVATING, S.ACTIVE, S.DEACTIVATING})


def _order_status(answered: dict[int, NotActivated | None], seg: SegmentRecord) -> str:
    if seg.index not in answered:
        return "failed"
    return "done" if answered[seg.index] is None else "committed"


def _operation_of(rec: SliceRecord) -> str:
    return "abort" if rec.state is S.ABORTING else "terminate"


__all__ = ["CANCELLED", "HOLDING_STATES", "LinkRecord", "SliceEvent", "SliceManager", "Usage"]

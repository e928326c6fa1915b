"""Provisioning a committed slice: Activate brings it into service, Deactivate takes it out again.

A part of ``SliceManager`` (``broker.core.lifecycle``; shared helpers in ``broker.core.manager_base``).
Both roll forward like a commit once decided: children that did not answer leave the slice in flight
naming them and the reconciler retries. An activation a child refuses, or one not confirmed within
``activation_timeout_s``, is compensated back to COMMITTED (its reservation kept); a deactivation a
child refuses because it no longer holds its segment releases the slice everywhere (FAILED).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import NoReturn

from broker.core.manager_base import ManagerBase
from broker.core.operations import (
    OPERATIONS,
    activation_timeout_reason,
    compensation_reason,
    lost_hold,
    outcome_unknown,
    with_pending,
    without_pending,
)
from broker.core.records import SegmentRecord, SliceRecord
from broker.core.reservation import _as_error, _task
from broker.core.workflow import TaskStatus
from slicing.errors import ErrorCode, FedError, Unavailable, error_for_code
from slicing.model import SliceState
from wim.base import ConnectionPoint, ConnectivitySpec

#: The parts log as the lifecycle they make up, so an operator filters one logger.
log = logging.getLogger("broker.core.lifecycle")
S = SliceState


class Provisioning(ManagerBase):
    """Activate and Deactivate of ``SliceManager``."""

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
            return await self._start_activation(rec)

    async def _start_activation(self, rec: SliceRecord) -> SliceRecord:
        """Activate a COMMITTED slice (the caller holds its lock)."""
        await self._faults.hit("activate.start", rec.id)
        # Decided: from here it rolls forward (or, refused, is compensated back to COMMITTED).
        deadline = self._clock() + self.activation_timeout_s
        rec = self._transition(rec, S.ACTIVATING, reason="", error_code="", deadline_at=deadline)
        return await self.drive_activate(rec)

    async def drive_activate(
        self, rec: SliceRecord, limit_s: float | None = None, done_point: str = "activate.done"
    ) -> SliceRecord:
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
        links = list(rec.links)
        if failed or any(not ln.wim_handle for ln in links):
            rec = self._save(replace(rec, segments=segments))  # before any stitch: a restart knows who confirmed
        else:
            rec = replace(rec, segments=segments)  # nothing to stitch: saved with ACTIVE below, in one write
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
        if failed:
            self._log(rec.id, "activate", [TaskStatus(0, "activate", "failed")])
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
        with self._batch():  # the log and ACTIVE (with the segments' states when nothing was stitched): one commit
            self._log(rec.id, "activate", [TaskStatus(0, "activate", "done")])
            rec = self._transition(
                rec,
                S.ACTIVE,
                links=tuple(links),
                reason="",
                deadline_at=0.0,
                segments=self._described(rec.segments, S.ACTIVE),
            )
        await self._faults.hit(done_point, rec.id)
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

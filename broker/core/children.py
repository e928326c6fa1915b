"""What lower SPs do on their own, and anti-entropy with them.

A part of ``SliceManager`` (``broker.core.lifecycle``; shared helpers in ``broker.core.manager_base``).
A child that ends or expires a segment makes the slice unable to keep its promise: it is released
everywhere. A child that puts a segment in service the slice has out of service is told to take it
out again. And what a child holds that no slice here knows (an orphan left by a crash or a lost
answer) is released by ``anti_entropy``, called when a child reconnects and periodically.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

from broker.core.manager_base import ManagerBase
from broker.core.operations import RELEASED
from broker.core.records import slice_of_order_key
from domain_agents.base import SegmentEvent
from slicing.errors import ErrorCode, FedError
from slicing.model import FINAL_STATES, SliceState

#: The parts log as the lifecycle they make up, so an operator filters one logger.
log = logging.getLogger("broker.core.lifecycle")
S = SliceState


class FollowingChildren(ManagerBase):
    """``follow_child`` and ``anti_entropy`` of ``SliceManager``."""

    async def anti_entropy(self, domain: str) -> list[str]:
        """Compare what ``domain`` holds for this broker with what this broker knows; release the rest.

        A child's segment is an orphan when its order key names no slice here, an attempt this
        slice no longer uses, a segment already released, or a slice that ended. Slices with an
        operation running are left alone (their operation settles them). A segment this broker
        knows but that a lower SP holds in another provisioning state than the slice's settled one
        is brought back to it (``_realign``). Returns the keys released.
        """
        agent = self._agent(domain)
        asked_at = self._clock()
        held = await self._bounded(agent.holdings(), self.child_timeout_s, domain)
        known = self._store.segments_at(domain)  # one read for every holding, not one per slice
        orphans = []
        drifted: list[tuple[str, str, SliceState]] = []
        for key, handle, state in held:
            found = known.get(key)
            slice_id = slice_of_order_key(key)
            # A local domain's state is this broker's own word, not a report from below.
            fix = found is not None and domain not in self._local and _fix_for(found[0], found[1], state) is not None
            if found is not None and found[1] not in RELEASED and not fix:
                continue  # agrees: most of them, decided without a lock read
            if slice_id and self.busy(slice_id):
                continue  # an operation runs on it: it settles it, not anti-entropy
            if found is not None and found[1] not in RELEASED:
                drifted.append((slice_id, key, state))
            else:
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
        for slice_id, key, state in drifted:
            try:
                await self._detached(self._realign(slice_id, domain, key, state, asked_at))
            except FedError as exc:
                log.warning("slice %s: bringing %s's segment back from %s failed: %s (next pass retries)",
                            slice_id, domain, state, exc)  # fmt: skip
        return released

    async def _realign(self, slice_id: str, domain: str, key: str, seen: SliceState, asked_at: float) -> None:
        """Bring a child's segment (seen in ``seen`` there) back to where this broker's settled slice has it.

        The slice's decision stands, as after a crash: a child that took a segment out of service
        behind it (an operator, a Deactivate that crossed an Activate) is activated again, one that
        put it in service while the slice is out of service is deactivated, and one that still holds
        a segment the slice committed is told Commit again (its refusal, a hold that is gone, is then
        handled as any child that ended its segment). A slice that changed after the child was asked
        (``asked_at``: a commit that reached the child meanwhile) is left to the next comparison.
        """
        async with self._lock(slice_id):
            rec = self.get(slice_id)
            seg = next((s for s in rec.segments if s.order_key == key and s.domain == domain), None)
            if seg is None or rec.state in FINAL_STATES or rec.updated_at > asked_at:
                return
            fix = _fix_for(rec.state, seg.state, seen)
            if fix is None:
                return
            log.warning(
                "slice %s is %s but %s holds its segment %s: %s it", rec.id, rec.state, domain, seen, fix.lower()
            )
            agent = self._agent(domain)
            call = {"Activate": agent.activate, "Deactivate": agent.deactivate, "Commit": agent.commit}[fix]
            await self._bounded(call(seg.handle), self.child_timeout_s, domain)

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


def _fix_for(slice_state: SliceState, segment_state: SliceState, at_child: SliceState) -> str | None:
    """The call that brings a child's segment from ``at_child`` back to the settled slice's state, if any.

    Only settled slices (COMMITTED, ACTIVE) whose segment here agrees with them are judged; a child
    in flight (its own operation running) is left to finish.
    """
    if slice_state is not segment_state or slice_state not in (S.COMMITTED, S.ACTIVE):
        return None
    if at_child is S.HELD:
        return "Commit"
    if slice_state is S.ACTIVE and at_child is S.COMMITTED:
        return "Activate"
    if slice_state is S.COMMITTED and at_child is S.ACTIVE:
        return "Deactivate"
    return None

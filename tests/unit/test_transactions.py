"""Transaction safety at one broker, with children that fail the ways real ones do (issue 19).

Each test breaks one guarantee as hard as it can and then reads the state at the broker AND at
every child: all committed, or nothing held anywhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from broker.core.operations import OPERATIONS, labels_to_skip, outcome_unknown, with_pending, without_pending
from broker.core.reconciler import Reconciler
from capability_catalog.model import SpId
from domain_agents.base import SegmentEvent, SegmentGrant, SegmentOrder
from domain_agents.emulated import EmulatedDomainAgent
from slicing.errors import (
    DeadlineExceeded,
    ErrorCode,
    FailedPrecondition,
    FedError,
    ResourceExhausted,
    Unavailable,
)
from slicing.model import SliceState
from tests.unit.test_lifecycle import Clock, World, configs, make_world, req

S = SliceState


class Flaky:
    """A real emulated agent behind switches: ``down`` (every call UNAVAILABLE), ``hang`` (calls block
    until released), ``lose_hold`` (commit refused: the hold is gone), ``late`` (a Reserve is carried
    out after the caller gave up, as a stopped process does when it resumes)."""

    def __init__(self, inner: EmulatedDomainAgent) -> None:
        self.inner = inner
        self.down = False
        self.hang = asyncio.Event()
        self.hang.set()
        self.lose_hold = False
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    @property
    def domain_id(self) -> SpId:
        return self.inner.domain_id

    async def _gate(self, what: str) -> None:
        self.calls.append(what)
        await self.hang.wait()
        if self.down:
            raise Unavailable(f"{self.domain_id} is down", domain=self.domain_id)

    async def reserve(self, order: SegmentOrder) -> SegmentGrant:
        self.calls.append("reserve")
        if self.down:
            raise Unavailable(f"{self.domain_id} is down", domain=self.domain_id)
        if not self.hang.is_set():
            # The order reached the child, which holds it, but the answer never makes it back in time.
            grant = await self.inner.reserve(order)
            await self.hang.wait()
            return grant
        return await self.inner.reserve(order)

    async def commit(self, handle: str) -> None:
        await self._gate("commit")
        if self.lose_hold:
            await self.inner.abort(handle)
            raise FailedPrecondition(f"the hold at {self.domain_id} expired")
        await self.inner.commit(handle)

    async def release(self, key: str, handle: str) -> None:
        await self._gate("release")
        await self.inner.release(key, handle)

    async def activate(self, handle: str) -> None:
        await self._gate("activate")
        await self.inner.activate(handle)


async def flaky_world(tmp_path: Path, flaky: str = "L3", **kw: float) -> tuple[World, Flaky]:
    clock = Clock()
    agents: dict[str, object] = {c.id: EmulatedDomainAgent(c, clock) for c in configs()}
    f = Flaky(agents[flaky])  # type: ignore[arg-type]
    agents[flaky] = f
    w = await make_world(tmp_path, agents=agents, clock=clock)  # type: ignore[arg-type]
    w.manager.child_timeout_s = kw.get("child_timeout_s", 0.3)
    return w, f


def held_anywhere(w: World) -> dict[str, int]:
    """Bandwidth each child holds now, read at the child itself."""
    agents = {d: (a.inner if isinstance(a, Flaky) else a) for d, a in w.agents.items()}
    return {d: a.usage().bandwidth_mbps for d, a in agents.items() if a.usage().bandwidth_mbps}


# --- pure decisions ---------------------------------------------------------------------------------


def test_operation_table_names_every_state_an_operation_starts_from_or_answers() -> None:
    assert OPERATIONS["Terminate"].accepts >= {S.HELD, S.COMMITTED, S.ACTIVE, S.COMMITTING, S.FAILED}
    assert OPERATIONS["Terminate"].done == {S.TERMINATED, S.ABORTED, S.EXPIRED}
    assert OPERATIONS["Commit"].in_flight is S.COMMITTING
    for op in OPERATIONS.values():
        assert not op.accepts & op.done, op.name


def test_unknown_outcomes_are_the_answers_that_never_came() -> None:
    assert outcome_unknown(Unavailable("x")) and outcome_unknown(DeadlineExceeded("x"))
    assert not outcome_unknown(ResourceExhausted("x")) and not outcome_unknown(FailedPrecondition("x"))


def test_labels_to_skip_jump_past_every_label_either_side_passed_over() -> None:
    assert labels_to_skip(1000, 1000, 1050) == set(range(1000, 1050))
    assert labels_to_skip(1000, 1003, 1001) == {1000, 1001, 1002}
    assert labels_to_skip(None, 7, 7) == {7}
    assert labels_to_skip(1000, None, None) == set()


def test_pending_lists_are_replaced_not_piled_up() -> None:
    r = with_pending(with_pending("commit decided", ["M1", "L3"]), ["L3"])
    assert r == "commit decided [pending: L3]" and without_pending(r) == "commit decided"


# --- commit: the decision is durable ----------------------------------------------------------------


async def test_commit_with_a_child_down_past_the_hold_time_ends_released_everywhere(tmp_path: Path) -> None:
    w, l3 = await flaky_world(tmp_path)
    rec = await w.manager.reserve("alice", "r1", req())
    l3.down = True
    with pytest.raises(Unavailable, match="L3 did not confirm yet"):
        await w.manager.commit(rec.id)
    assert w.manager.get(rec.id).state is S.COMMITTING
    rc = Reconciler(w.manager, w.clock, interval_s=0.01)
    assert (await rc.pass_once())[rec.id] is S.COMMITTING  # still down, still within the hold time
    w.clock.now += 60  # the hold time is over while L3 is still down: its hold is gone
    assert (await rc.pass_once())[rec.id] is S.TERMINATING  # releasing; L3 cannot confirm yet
    assert held_anywhere(w) == {"L3": 100}
    l3.down = False
    w.clock.now += 60
    assert (await rc.pass_once())[rec.id] is S.FAILED
    assert w.idle() and held_anywhere(w) == {}


async def test_commit_completes_when_the_child_returns_within_the_hold_time(tmp_path: Path) -> None:
    w, l3 = await flaky_world(tmp_path)
    rec = await w.manager.reserve("alice", "r1", req())
    l3.down = True
    seen: list[SliceState] = []

    async def follow() -> None:
        async for event in w.manager.watch(rec.id):
            seen.append(event.state)
            if event.state is S.COMMITTED:
                return

    watcher = asyncio.ensure_future(follow())
    await asyncio.sleep(0)  # the watcher is subscribed before anything happens
    with pytest.raises(Unavailable):
        await w.manager.commit(rec.id)
    l3.down = False
    w.clock.now += 1
    rc = Reconciler(w.manager, w.clock, interval_s=0.01)
    w.clock.now += 5  # past the first back-off
    assert (await rc.pass_once())[rec.id] is S.COMMITTED
    assert held_anywhere(w) == {"L1": 100, "L2": 100, "L3": 100}
    await asyncio.wait_for(watcher, 5)
    assert seen == [S.COMMITTING, S.COMMITTED]  # the final state reaches Watch
    await w.manager.terminate(rec.id)
    assert w.idle() and held_anywhere(w) == {}


async def test_a_child_that_lost_its_hold_fails_the_commit_and_nothing_stays_held(tmp_path: Path) -> None:
    w, l3 = await flaky_world(tmp_path)
    rec = await w.manager.reserve("alice", "r1", req())
    l3.lose_hold = True
    with pytest.raises(FailedPrecondition, match="L3 lost the hold"):
        await w.manager.commit(rec.id)
    final = w.manager.get(rec.id)
    assert final.state is S.FAILED and "L3" in final.reason
    assert w.idle() and held_anywhere(w) == {}


async def test_a_crash_after_the_decision_rolls_forward_on_restart(tmp_path: Path) -> None:
    w, l3 = await flaky_world(tmp_path)
    rec = await w.manager.reserve("alice", "r1", req())
    l3.hang.clear()  # the commit reaches L1 and L2; L3 does not answer before we "crash"
    task = asyncio.ensure_future(w.manager.commit(rec.id))
    await asyncio.sleep(0.05)
    assert w.manager.get(rec.id).state is S.COMMITTING
    await w.manager.cancel_running()  # the process dies mid-operation
    task.cancel()
    l3.hang.set()
    await w.manager.recover()
    assert w.manager.get(rec.id).state is S.COMMITTING  # not released: the decision was commit
    assert (await Reconciler(w.manager, w.clock).pass_once())[rec.id] is S.COMMITTED
    assert held_anywhere(w) == {"L1": 100, "L2": 100, "L3": 100}


# --- releases: by the child's real state, never reported before confirmed ----------------------------


async def test_terminate_with_a_child_down_is_not_reported_done_until_it_confirms(tmp_path: Path) -> None:
    w, l3 = await flaky_world(tmp_path)
    rec = await w.manager.reserve("alice", "r1", req())
    await w.manager.commit(rec.id)
    await w.manager.activate(rec.id)
    l3.down = True
    with pytest.raises(Unavailable, match="L3 did not confirm the release yet"):
        await w.manager.terminate(rec.id)
    pending = w.manager.get(rec.id)
    assert pending.state is S.TERMINATING and pending.reason.endswith("[pending: L3]")
    assert held_anywhere(w) == {"L3": 100}  # the others released; L3 still holds — and the top says so
    with pytest.raises(Unavailable):  # a repeated Terminate drives it on, and still tells the truth
        await w.manager.terminate(rec.id)
    l3.down = False
    w.clock.now += 60
    assert (await Reconciler(w.manager, w.clock).pass_once())[rec.id] is S.TERMINATED
    assert w.idle() and held_anywhere(w) == {}


async def test_every_failed_release_is_named_none_is_dropped(tmp_path: Path) -> None:
    clock = Clock()
    agents = {c.id: Flaky(EmulatedDomainAgent(c, clock)) for c in configs()}
    w = await make_world(tmp_path, agents=agents, clock=clock)  # type: ignore[arg-type]
    w.manager.child_timeout_s = 0.3
    rec = await w.manager.reserve("alice", "r1", req())
    agents["L1"].down = agents["L3"].down = True
    with pytest.raises(Unavailable) as info:
        await w.manager.abort(rec.id)
    assert "L1, L3 did not confirm" in str(info.value) and len(info.value.causes) == 2
    assert w.manager.get(rec.id).state is S.ABORTING


async def test_a_repeated_release_of_an_ended_slice_answers_its_state(tmp_path: Path) -> None:
    w, _ = await flaky_world(tmp_path)
    rec = await w.manager.reserve("alice", "r1", req())
    aborted = await w.manager.abort(rec.id)
    assert aborted.state is S.ABORTED
    assert (await w.manager.terminate(rec.id)).state is S.ABORTED  # nothing held: not an error
    assert (await w.manager.abort(rec.id)).state is S.ABORTED


async def test_a_release_by_order_key_before_the_reserve_arrived_makes_the_late_reserve_fail(tmp_path: Path) -> None:
    w, _ = await flaky_world(tmp_path)
    tomb = await w.manager.cancel_request("M1", "T-x.0.0")
    assert tomb.state is S.ABORTED
    with pytest.raises(FailedPrecondition, match="cancelled by its requester"):
        await w.manager.reserve("M1", "T-x.0.0", req())
    assert w.idle() and held_anywhere(w) == {}


# --- reserve: a child that does not answer -------------------------------------------------------------


async def test_a_child_that_holds_but_answers_too_late_is_released_by_the_order_key(tmp_path: Path) -> None:
    w, l3 = await flaky_world(tmp_path)
    l3.hang.clear()
    with pytest.raises(DeadlineExceeded, match="L3 did not answer"):
        await w.manager.reserve("alice", "r1", req())
    rec = w.manager.slices()[0]
    # L3 holds (it reserved, then hung); the release by key cannot reach it while it hangs.
    assert rec.state is S.ABORTING and held_anywhere(w) == {"L3": 100}
    l3.hang.set()
    w.clock.now += 60
    assert (await Reconciler(w.manager, w.clock).pass_once())[rec.id] is S.FAILED
    assert w.idle() and held_anywhere(w) == {}
    with pytest.raises(FedError) as again:  # replaying the request id gives the same error, holds nothing
        await w.manager.reserve("alice", "r1", req())
    assert again.value.code is ErrorCode.DEADLINE_EXCEEDED and held_anywhere(w) == {}


async def test_a_caller_that_gives_up_does_not_cut_the_reservation_in_half(tmp_path: Path) -> None:
    w, l3 = await flaky_world(tmp_path, child_timeout_s=2.0)
    l3.hang.clear()
    call = asyncio.ensure_future(w.manager.reserve("alice", "r1", req()))
    await asyncio.sleep(0.05)
    call.cancel()  # the customer's deadline or disconnect
    with pytest.raises(asyncio.CancelledError):
        await call
    l3.hang.set()
    await w.manager.drain()
    rec = w.manager.slices()[0]
    assert rec.state is S.HELD  # the operation ran to its end on its own
    assert held_anywhere(w) == {"L1": 100, "L2": 100, "L3": 100}
    await w.manager.abort(rec.id)
    assert w.idle()


async def test_children_get_less_time_than_the_caller_left(tmp_path: Path) -> None:
    w, l3 = await flaky_world(tmp_path, child_timeout_s=10.0)
    seen: list[float | None] = []
    inner_reserve = l3.reserve

    async def spy(order: SegmentOrder) -> SegmentGrant:
        seen.append(order.timeout_s)
        return await inner_reserve(order)

    l3.reserve = spy  # type: ignore[method-assign]
    await w.manager.reserve("alice", "r1", req(), deadline=w.clock.now + 2.0)
    assert seen and seen[0] is not None and 0 < seen[0] <= 2.0 * 0.7 + 1e-9


async def test_a_reservation_orphaned_in_flight_is_released_by_the_reconciler(tmp_path: Path) -> None:
    w, _ = await flaky_world(tmp_path)
    rec = await w.manager.reserve("alice", "r1", req())
    # As if the operation's task died between two writes: RESERVING, nothing running.
    stuck = w.manager._transition(rec, S.ABORTING, settle_to=S.FAILED, error_code="UNAVAILABLE")
    w.store.save(replace(stuck, state=S.RESERVING))
    rc = Reconciler(w.manager, w.clock, stale_after_s=5)
    assert rec.id not in await rc.pass_once()  # young: maybe still running elsewhere
    w.clock.now += 6
    assert (await rc.pass_once())[rec.id] is S.FAILED
    assert w.idle() and held_anywhere(w) == {}


# --- labels that cannot run out by mistake ----------------------------------------------------------


async def test_leaked_labels_at_one_side_do_not_exhaust_the_crankback(tmp_path: Path) -> None:
    w, l3 = await flaky_world(tmp_path)
    # 50 of L3's labels on the L2 link are held by someone the top knows nothing of.
    for i in range(50):
        l3.inner._books.labels.setdefault("L3.to-L2", {})[1500 + 2 * i] = f"leak{i}"
    done = []
    for i in range(20):
        rec = await w.manager.reserve("alice", f"r{i}", req(10))
        assert all(ln.label_a == ln.label_b for ln in rec.links)
        done.append(rec)
    assert len({ln.label_a for r in done for ln in r.links if "L3" in ln.b_port}) == 20


# --- anti-entropy ---------------------------------------------------------------------------------


async def test_anti_entropy_releases_what_a_child_holds_for_slices_this_broker_ended_or_never_knew(
    tmp_path: Path,
) -> None:
    w, l3 = await flaky_world(tmp_path)
    kept = await w.manager.reserve("alice", "kept", req(10))
    ended = await w.manager.reserve("alice", "ended", req(20))
    await w.manager.abort(ended.id)
    # Orphans at L3 no upper record explains: an order of an ended slice (as if its release was lost),
    # and one of a slice this broker never knew (its database was restored from an old backup).
    ended_key = ended.segments[2].order_key
    await l3.inner.reserve(SegmentOrder(ended_key, ended.segments[2].request, 30))
    await l3.inner.reserve(SegmentOrder("T-ghost.2.0", kept.segments[2].request, 30))
    assert held_anywhere(w)["L3"] == 10 + 20 + 10
    released = await Reconciler(w.manager, w.clock).compare_holdings(["L1", "L2", "L3"])
    assert sorted(released["L3"]) == sorted([ended_key, "T-ghost.2.0"]) and released["L1"] == []
    assert held_anywhere(w) == {"L1": 10, "L2": 10, "L3": 10}  # what the live slice holds stays
    await w.manager.abort(kept.id)
    assert w.idle() and held_anywhere(w) == {}


async def test_holdings_are_compared_by_the_clock_however_many_passes_kicks_run(tmp_path: Path) -> None:
    """Every slice event below kicks a pass; comparing holdings lists everything a child holds, so it runs
    every ``entropy_every`` intervals of time (and after a child came back), never once per N kicks."""
    w, _ = await flaky_world(tmp_path)
    compared: list[str] = []
    real = w.manager.anti_entropy

    async def counting(domain: str) -> list[str]:
        compared.append(domain)
        return await real(domain)

    w.manager.anti_entropy = counting  # type: ignore[method-assign]
    rc = Reconciler(w.manager, w.clock, interval_s=2.0, entropy_every=15)
    await rc.pass_once()
    assert sorted(compared) == ["L1", "L2", "L3"]  # everyone at the first pass after a start
    for _ in range(60):  # a burst of slice events below, all within one interval
        rc.retry_now("L3")
        await rc.pass_once()
    assert len(compared) == 3
    w.clock.now += 15 * 2.0
    await rc.pass_once()
    assert sorted(compared[3:]) == ["L1", "L2", "L3"]
    rc.compare_soon("L2")  # a child came back: compared at the next pass, whatever the clock says
    await rc.pass_once()
    assert compared[6:] == ["L2"]


async def test_a_slice_event_below_kicks_a_pass_only_when_something_waits_in_back_off(tmp_path: Path) -> None:
    w, l3 = await flaky_world(tmp_path)
    rc = Reconciler(w.manager, w.clock, interval_s=2.0)
    rc.retry_now("L3")
    assert not rc._kick.is_set()  # nothing waits: no pass for an event
    held = await w.manager.reserve("alice", "r1", req(10))
    l3.down = True
    with pytest.raises(FedError):
        await w.manager.commit(held.id)
    assert (await rc.pass_once())[held.id] is S.COMMITTING  # tried, failed: it waits in back-off now
    l3.down = False
    rc.retry_now("L3")  # one of our slices at L3 moved: what waits there is tried at once
    assert rc._kick.is_set()
    assert (await rc.pass_once())[held.id] is S.COMMITTED


# --- a child that ends a segment on its own tells its upper SP at once ----------------------------------


class Telling(Flaky):
    """A Flaky child that also streams the events of its segments, as a lower broker's Watch does."""

    def __init__(self, inner: EmulatedDomainAgent) -> None:
        super().__init__(inner)
        self.events: asyncio.Queue[SegmentEvent] = asyncio.Queue()

    async def segment_events(self) -> AsyncIterator[SegmentEvent]:
        yield SegmentEvent("")
        while True:
            yield await self.events.get()


@pytest.mark.parametrize(("committed", "final"), [(False, S.EXPIRED), (True, S.FAILED)])
async def test_a_child_that_ends_its_segment_makes_the_slice_end_everywhere(
    tmp_path: Path, committed: bool, final: SliceState
) -> None:
    clock = Clock()
    agents: dict[str, object] = {c.id: EmulatedDomainAgent(c, clock) for c in configs()}
    l3 = Telling(agents["L3"])  # type: ignore[arg-type]
    agents["L3"] = l3
    w = await make_world(tmp_path, agents=agents, clock=clock)  # type: ignore[arg-type]
    connected: list[str] = []
    follower = asyncio.ensure_future(w.manager.follow_child("L3", on_connect=connected.append))
    try:
        rec = await w.manager.reserve("alice", "r1", req())
        if committed:
            await w.manager.commit(rec.id)
        seg = rec.segments[2]
        await l3.inner.release(seg.order_key, seg.handle)  # L3's own hold timer fired, say
        await l3.events.put(SegmentEvent(seg.handle, S.EXPIRED, "hold time passed"))
        for _ in range(100):
            if w.manager.get(rec.id).state is final:
                break
            await asyncio.sleep(0.01)
        ended = w.manager.get(rec.id)
        assert ended.state is final and "L3 ended its segment" in ended.reason
        assert connected == ["L3"] and w.idle() and held_anywhere(w) == {}
    finally:
        follower.cancel()


# --- a refusal on stale notes is planned again on the newer one (issue 13, item 5) ----------------------


async def test_a_refusal_for_capacity_on_a_note_that_changes_meanwhile_is_planned_again(tmp_path: Path) -> None:
    w, _ = await flaky_world(tmp_path)
    big = await w.manager.reserve("alice", "big", req(9_950))
    full = {d: a.note for d, a in w.agents.items()}  # what the notes say while the big slice holds
    free = dict(w.notes)
    w.notes.update(full)
    await w.manager.abort(big.id)

    async def release_climbs_up() -> None:
        await asyncio.sleep(0.05)  # the release reaches this level a little later, as notes coalesce
        w.notes.update({d: replace(n, version=full[d].version + 1) for d, n in free.items()})

    climbing = asyncio.ensure_future(release_climbs_up())
    rec = await w.manager.reserve("alice", "after", req(500))
    await climbing
    assert rec.state is S.HELD
    w.notes.update(full)  # and when nothing changes, the refusal stands
    with pytest.raises(ResourceExhausted):
        await w.manager.reserve("alice", "stale", req(500))


def test_an_order_key_names_its_slice_and_anything_else_names_none() -> None:
    from broker.core.records import order_key, slice_of_order_key

    assert slice_of_order_key(order_key("T-abc.def", 2, 1)) == "T-abc.def"
    for foreign in ("", "leak-1500", "a.b", "x.y.z", "T-1.2"):
        assert slice_of_order_key(foreign) == ""

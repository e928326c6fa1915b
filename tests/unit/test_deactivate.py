"""Deactivate, and the compensation of a refused activation (issue 19, the last design lead).

Each test reads the state at the broker AND at every child (the emulated agents' own marks, their
usage, the WIM's services): a refused activation ends COMMITTED everywhere with nothing active, the
reservation kept, never released.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from broker.core.operations import OPERATIONS, compensation_reason, lost_hold, outcome_unknown
from broker.core.reconciler import Reconciler
from domain_agents.base import SegmentEvent
from domain_agents.emulated import EmulatedDomainAgent
from slicing.errors import FailedPrecondition, NotFound, ResourceExhausted, Unavailable
from slicing.model import HOLDING_STATES, TRANSITIONS, SliceState
from tests.unit.test_lifecycle import Clock, World, configs, make_world, req
from tests.unit.test_transactions import Flaky

S = SliceState


class Refusing(Flaky):
    """A Flaky child that can also refuse Activate outright, or not answer Deactivate."""

    def __init__(self, inner: EmulatedDomainAgent) -> None:
        super().__init__(inner)
        self.refuse_activate = False
        self.activate_down = False
        self.deactivate_down = False

    async def activate(self, handle: str) -> None:
        if self.refuse_activate:
            self.calls.append("activate")
            raise FailedPrecondition(f"port of {self.domain_id} is not wired", domain=self.domain_id)
        if self.activate_down:
            self.calls.append("activate")
            raise Unavailable(f"{self.domain_id} is down", domain=self.domain_id)
        await super().activate(handle)

    async def deactivate(self, handle: str) -> None:
        await self._gate("deactivate")
        if self.deactivate_down:
            raise Unavailable(f"{self.domain_id} is down", domain=self.domain_id)
        await self.inner.deactivate(handle)


async def refusing_world(tmp_path: Path) -> tuple[World, dict[str, Refusing]]:
    clock = Clock()
    agents = {c.id: Refusing(EmulatedDomainAgent(c, clock)) for c in configs()}
    w = await make_world(tmp_path, agents=agents, clock=clock)  # type: ignore[arg-type]
    w.manager.child_timeout_s = 0.3
    return w, agents


def child_states(w: World, slice_id: str) -> dict[str, SliceState]:
    """Each child's own state for the slice's segment (read at the child, not the broker's record)."""
    rec = w.manager.get(slice_id)
    out = {}
    for seg in rec.segments:
        agent = w.agents[seg.domain]
        inner = agent.inner if isinstance(agent, Flaky) else agent
        assert isinstance(inner, EmulatedDomainAgent)
        out[seg.domain] = inner.state_of(seg.handle)
    return out


def bandwidth(w: World) -> dict[str, int]:
    return {d.domain: d.bandwidth_mbps for d in w.manager.usage().domains}


# --- pure decisions ---------------------------------------------------------------------------------


def test_deactivate_is_in_the_operation_table_and_the_transition_table() -> None:
    op = OPERATIONS["Deactivate"]
    assert op.accepts == {S.ACTIVE, S.ACTIVATING} and op.in_flight is S.DEACTIVATING
    assert op.done == {S.COMMITTED} and op.resumes == {S.DEACTIVATING} and op.settle_to is S.COMMITTED
    assert S.DEACTIVATING in TRANSITIONS[S.ACTIVE] and S.DEACTIVATING in TRANSITIONS[S.ACTIVATING]
    assert TRANSITIONS[S.DEACTIVATING] == {S.COMMITTED, S.TERMINATING, S.FAILED}
    assert S.DEACTIVATING in OPERATIONS["Terminate"].accepts  # Terminate still works in every state
    assert S.DEACTIVATING in OPERATIONS["Commit"].done  # a repeated Commit is answered, not refused
    assert S.DEACTIVATING in HOLDING_STATES  # a deactivating slice keeps its reservation


def test_a_refusal_of_deactivate_means_the_child_lost_its_segment_only_when_it_said_so() -> None:
    assert lost_hold(FailedPrecondition("slice is TERMINATED")) and lost_hold(NotFound("gone"))
    assert not lost_hold(Unavailable("down")) and not lost_hold(ResourceExhausted("x"))


def test_the_compensation_reason_names_who_refused_what_it_said_and_what_the_customer_may_do() -> None:
    why = compensation_reason([("L3", FailedPrecondition("port not wired [pending: L9]"))])
    assert why.startswith("activation failed: L3 refused (port not wired)")
    assert "COMMITTED" in why and "activate it again or terminate it" in why
    assert "L1, L3 refused" in compensation_reason([("L3", NotFound("x")), ("L1", NotFound("y"))])
    below = compensation_reason([("L2", FailedPrecondition("injected"))])
    nested = compensation_reason([("M1", FailedPrecondition(below))])
    assert nested.count("activate it again or terminate it") == 1 and "M1 refused" in nested and "L2" in nested


# --- Deactivate -----------------------------------------------------------------------------------


async def test_deactivate_then_activate_round_trip_keeps_the_reservation(tmp_path: Path) -> None:
    w, _ = await refusing_world(tmp_path)
    rec = await w.manager.reserve("alice", "r1", req())
    await w.manager.commit(rec.id)
    active = await w.manager.activate(rec.id)
    assert w.wim.usage().services == len(active.links) > 0
    held = bandwidth(w)
    seen: list[SliceState] = []

    async def follow() -> None:
        async for ev in w.manager.watch(rec.id):
            seen.append(ev.state)
            if ev.state is S.COMMITTED:
                return

    watcher = asyncio.ensure_future(follow())
    await asyncio.sleep(0)
    back = await w.manager.deactivate(rec.id)
    await asyncio.wait_for(watcher, 5)
    assert seen == [S.DEACTIVATING, S.COMMITTED]
    assert back.state is S.COMMITTED and back.reason == "" and all(s.state is S.COMMITTED for s in back.segments)
    assert child_states(w, rec.id) == {"L1": S.COMMITTED, "L2": S.COMMITTED, "L3": S.COMMITTED}
    assert w.wim.usage().services == 0 and all(not ln.wim_handle for ln in back.links)  # unstitched
    assert bandwidth(w) == held and w.manager.usage().holding_slices == 1  # the reservation is kept
    assert (await w.manager.deactivate(rec.id)).state is S.COMMITTED  # idempotent
    again = await w.manager.activate(rec.id)
    assert again.state is S.ACTIVE and w.wim.usage().services == len(again.links)
    assert child_states(w, rec.id) == {"L1": S.ACTIVE, "L2": S.ACTIVE, "L3": S.ACTIVE}
    await w.manager.terminate(rec.id)
    assert w.idle()
    logged = [(t["name"], t["status"]) for t in w.store.tasks(rec.id) if t["operation"] == "deactivate"]
    assert {name for name, status in logged if status == "done"} >= {
        "deactivate L1#0",
        "deactivate L2#1",
        "deactivate L3#2",
    }


async def test_deactivate_of_a_held_slice_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    w, _ = await refusing_world(tmp_path)
    rec = await w.manager.reserve("alice", "r1", req())
    with pytest.raises(FailedPrecondition, match="Deactivate needs"):
        await w.manager.deactivate(rec.id)
    assert w.manager.get(rec.id).state is S.HELD
    await w.manager.abort(rec.id)
    assert w.idle()


async def test_deactivate_with_a_child_down_stays_pending_naming_it_then_rolls_forward(tmp_path: Path) -> None:
    w, agents = await refusing_world(tmp_path)
    rec = await w.manager.reserve("alice", "r1", req())
    await w.manager.commit(rec.id)
    await w.manager.activate(rec.id)
    agents["L2"].deactivate_down = True
    with pytest.raises(Unavailable, match="L2 did not confirm yet"):
        await w.manager.deactivate(rec.id)
    pending = w.manager.get(rec.id)
    assert pending.state is S.DEACTIVATING and pending.reason.endswith("[pending: L2]")
    assert child_states(w, rec.id) == {"L1": S.COMMITTED, "L2": S.ACTIVE, "L3": S.COMMITTED}
    rc = Reconciler(w.manager, w.clock, interval_s=0.01)
    assert (await rc.pass_once())[rec.id] is S.DEACTIVATING  # still down: still saying so
    agents["L2"].deactivate_down = False
    w.clock.now += 60
    assert (await rc.pass_once())[rec.id] is S.COMMITTED
    assert child_states(w, rec.id) == {"L1": S.COMMITTED, "L2": S.COMMITTED, "L3": S.COMMITTED}
    assert w.manager.get(rec.id).reason == ""


async def test_a_crash_during_deactivate_rolls_forward_after_restart(tmp_path: Path) -> None:
    w, agents = await refusing_world(tmp_path)
    rec = await w.manager.reserve("alice", "r1", req())
    await w.manager.commit(rec.id)
    await w.manager.activate(rec.id)
    agents["L3"].hang.clear()  # L1 and L2 deactivate; L3 does not answer before the "crash"
    task = asyncio.ensure_future(w.manager.deactivate(rec.id))
    await asyncio.sleep(0.05)
    await w.manager.cancel_running()
    task.cancel()
    agents["L3"].hang.set()
    await w.manager.recover()
    assert w.manager.get(rec.id).state is S.DEACTIVATING  # not released, not back to ACTIVE
    assert (await Reconciler(w.manager, w.clock).pass_once())[rec.id] is S.COMMITTED
    assert child_states(w, rec.id) == {"L1": S.COMMITTED, "L2": S.COMMITTED, "L3": S.COMMITTED}
    assert w.wim.usage().services == 0


async def test_terminate_of_a_deactivating_slice_releases_everything(tmp_path: Path) -> None:
    w, agents = await refusing_world(tmp_path)
    rec = await w.manager.reserve("alice", "r1", req())
    await w.manager.commit(rec.id)
    await w.manager.activate(rec.id)
    agents["L1"].deactivate_down = True
    with pytest.raises(Unavailable):
        await w.manager.deactivate(rec.id)
    assert w.manager.get(rec.id).state is S.DEACTIVATING
    assert (await w.manager.terminate(rec.id)).state is S.TERMINATED
    assert w.idle() and w.wim.usage().services == 0


# --- a refused activation is compensated, not released -------------------------------------------


async def test_a_child_refusing_activate_leaves_the_slice_committed_everywhere_with_nothing_active(
    tmp_path: Path,
) -> None:
    w, agents = await refusing_world(tmp_path)
    rec = await w.manager.reserve("alice", "r1", req())
    await w.manager.commit(rec.id)
    held = bandwidth(w)
    agents["L3"].refuse_activate = True
    with pytest.raises(FailedPrecondition) as info:
        await w.manager.activate(rec.id)
    assert "activation failed: L3 refused" in str(info.value) and "port of L3 is not wired" in str(info.value)
    after = w.manager.get(rec.id)
    assert after.state is S.COMMITTED and after.reason == str(info.value)
    assert "activate it again or terminate it" in after.reason
    assert child_states(w, rec.id) == {"L1": S.COMMITTED, "L2": S.COMMITTED, "L3": S.COMMITTED}
    assert agents["L1"].calls[-1] == "deactivate" and agents["L2"].calls[-1] == "deactivate"
    assert w.wim.usage().services == 0 and bandwidth(w) == held  # nothing stitched, nothing released
    agents["L3"].refuse_activate = False
    again = await w.manager.activate(rec.id)  # activated again, it works
    assert again.state is S.ACTIVE and again.reason == "" and again.error_code == ""
    assert child_states(w, rec.id) == {"L1": S.ACTIVE, "L2": S.ACTIVE, "L3": S.ACTIVE}
    await w.manager.terminate(rec.id)
    assert w.idle()


async def test_a_refused_activation_whose_compensation_is_not_confirmed_says_so_then_ends_committed(
    tmp_path: Path,
) -> None:
    w, agents = await refusing_world(tmp_path)
    rec = await w.manager.reserve("alice", "r1", req())
    await w.manager.commit(rec.id)
    agents["L3"].refuse_activate = True
    agents["L1"].deactivate_down = True
    with pytest.raises(FailedPrecondition, match="L3 refused") as info:
        await w.manager.activate(rec.id)
    assert not outcome_unknown(info.value)  # the upper hears the refusal itself, not "try again"
    pending = w.manager.get(rec.id)
    assert pending.state is S.DEACTIVATING and pending.reason.endswith("[pending: L1]")
    assert child_states(w, rec.id)["L1"] is S.ACTIVE  # what the broker says it waits for is really there
    agents["L1"].deactivate_down = False
    w.clock.now += 60
    assert (await Reconciler(w.manager, w.clock).pass_once())[rec.id] is S.COMMITTED
    final = w.manager.get(rec.id)
    assert "L3 refused" in final.reason and "pending" not in final.reason
    assert child_states(w, rec.id) == {"L1": S.COMMITTED, "L2": S.COMMITTED, "L3": S.COMMITTED}


async def test_a_child_that_does_not_answer_activate_still_rolls_forward(tmp_path: Path) -> None:
    w, agents = await refusing_world(tmp_path)
    rec = await w.manager.reserve("alice", "r1", req())
    await w.manager.commit(rec.id)
    agents["L3"].down = True
    with pytest.raises(Unavailable, match="the activation is decided and goes on"):
        await w.manager.activate(rec.id)
    assert w.manager.get(rec.id).state is S.ACTIVATING  # not compensated: L3 may be active
    agents["L3"].down = False
    w.clock.now += 1  # well within the activation's deadline (3 s here)
    assert (await Reconciler(w.manager, w.clock).pass_once())[rec.id] is S.ACTIVE
    assert child_states(w, rec.id) == {"L1": S.ACTIVE, "L2": S.ACTIVE, "L3": S.ACTIVE}


async def test_a_refusal_met_by_the_reconciler_is_compensated_too(tmp_path: Path) -> None:
    """L3 first does not answer (the slice rolls forward), then refuses when Activate is re-sent."""
    w, agents = await refusing_world(tmp_path)
    rec = await w.manager.reserve("alice", "r1", req())
    await w.manager.commit(rec.id)
    agents["L3"].down = True
    with pytest.raises(Unavailable):
        await w.manager.activate(rec.id)
    agents["L3"].down = False
    agents["L3"].refuse_activate = True
    w.clock.now += 1  # within the deadline: what ends it is the refusal
    assert (await Reconciler(w.manager, w.clock).pass_once())[rec.id] is S.COMMITTED
    assert child_states(w, rec.id) == {"L1": S.COMMITTED, "L2": S.COMMITTED, "L3": S.COMMITTED}
    assert "L3 refused" in w.manager.get(rec.id).reason


async def test_a_crash_during_the_compensation_rolls_forward_to_committed(tmp_path: Path) -> None:
    w, agents = await refusing_world(tmp_path)
    rec = await w.manager.reserve("alice", "r1", req())
    await w.manager.commit(rec.id)
    agents["L3"].refuse_activate = True
    # L2 activates, then its deactivation hangs: the broker dies meanwhile.
    original = agents["L2"].deactivate

    async def hang_then(handle: str) -> None:
        agents["L2"].hang.clear()
        await original(handle)

    agents["L2"].deactivate = hang_then  # type: ignore[method-assign]
    task = asyncio.ensure_future(w.manager.activate(rec.id))
    await asyncio.sleep(0.05)
    assert w.manager.get(rec.id).state is S.DEACTIVATING
    await w.manager.cancel_running()
    task.cancel()
    agents["L2"].deactivate = original  # type: ignore[method-assign]
    agents["L2"].hang.set()
    await w.manager.recover()
    assert w.manager.get(rec.id).state is S.DEACTIVATING
    assert (await Reconciler(w.manager, w.clock).pass_once())[rec.id] is S.COMMITTED
    assert child_states(w, rec.id) == {"L1": S.COMMITTED, "L2": S.COMMITTED, "L3": S.COMMITTED}
    assert "L3 refused" in w.manager.get(rec.id).reason


async def test_terminate_of_an_activating_slice_releases_everything(tmp_path: Path) -> None:
    w, agents = await refusing_world(tmp_path)
    rec = await w.manager.reserve("alice", "r1", req())
    await w.manager.commit(rec.id)
    agents["L3"].down = True
    with pytest.raises(Unavailable):
        await w.manager.activate(rec.id)
    assert w.manager.get(rec.id).state is S.ACTIVATING
    agents["L3"].down = False
    assert (await w.manager.terminate(rec.id)).state is S.TERMINATED
    assert w.idle() and w.wim.usage().services == 0


async def test_deactivate_of_a_slice_still_activating_undoes_whatever_the_activation_reached(tmp_path: Path) -> None:
    """An upper SP compensating sends Deactivate to a child whose own activation is still rolling forward."""
    w, agents = await refusing_world(tmp_path)
    rec = await w.manager.reserve("alice", "r1", req())
    await w.manager.commit(rec.id)
    agents["L3"].down = True
    with pytest.raises(Unavailable):
        await w.manager.activate(rec.id)
    assert child_states(w, rec.id) == {"L1": S.ACTIVE, "L2": S.ACTIVE, "L3": S.COMMITTED}
    with pytest.raises(Unavailable, match="L3 did not confirm yet"):
        await w.manager.deactivate(rec.id)  # accepted in ACTIVATING; L3 still cannot answer
    assert w.manager.get(rec.id).state is S.DEACTIVATING
    assert child_states(w, rec.id) == {"L1": S.COMMITTED, "L2": S.COMMITTED, "L3": S.COMMITTED}
    agents["L3"].down = False
    w.clock.now += 60
    # The reconciler finishes the deactivation; it does not resume the activation it replaced.
    assert (await Reconciler(w.manager, w.clock).pass_once())[rec.id] is S.COMMITTED
    assert child_states(w, rec.id) == {"L1": S.COMMITTED, "L2": S.COMMITTED, "L3": S.COMMITTED}
    assert w.wim.usage().services == 0


@pytest.mark.parametrize("compensating", [False, True])
async def test_a_child_that_lost_its_segment_is_not_reported_committed_everything_is_released(
    tmp_path: Path, compensating: bool
) -> None:
    """L2 no longer holds its segment (it ended it on its own): neither a Deactivate nor the compensation
    of a refused Activate may answer COMMITTED over it; the slice fails and nothing stays held anywhere."""
    w, agents = await refusing_world(tmp_path)
    rec = await w.manager.reserve("alice", "r1", req())
    await w.manager.commit(rec.id)
    if compensating:
        agents["L3"].refuse_activate = True
    else:
        await w.manager.activate(rec.id)
    seg = rec.segments[1]
    await agents["L2"].inner.release(seg.order_key, seg.handle)  # gone at L2, nobody told yet
    with pytest.raises(NotFound, match="L2 no longer holds its segment"):
        await (w.manager.activate(rec.id) if compensating else w.manager.deactivate(rec.id))
    final = w.manager.get(rec.id)
    assert final.state is S.FAILED and "L2" in final.reason
    assert w.idle() and w.wim.usage().services == 0
    assert all(a.inner.usage().bandwidth_mbps == 0 for a in agents.values())


# --- the activation deadline ----------------------------------------------------------------------


async def test_an_activation_not_confirmed_before_its_deadline_is_undone_and_the_reservation_kept(
    tmp_path: Path,
) -> None:
    """A child that never answers Activate must not leave the slice ACTIVATING for ever, half in service:
    past ``activation_timeout_s`` the reconciler undoes it (back to COMMITTED, every child deactivated)."""
    w, agents = await refusing_world(tmp_path)
    assert w.manager.activation_timeout_s == pytest.approx(10 * 0.3)  # ten child calls' time by default
    rec = await w.manager.reserve("alice", "r1", req())
    await w.manager.commit(rec.id)
    held = bandwidth(w)
    agents["L2"].activate_down = True
    started = w.clock.now
    with pytest.raises(Unavailable, match="L2 did not confirm yet"):
        await w.manager.activate(rec.id)
    pending = w.manager.get(rec.id)
    assert pending.state is S.ACTIVATING and pending.deadline_at == pytest.approx(started + 3.0)
    assert child_states(w, rec.id) == {"L1": S.ACTIVE, "L2": S.COMMITTED, "L3": S.ACTIVE}
    rc = Reconciler(w.manager, w.clock, interval_s=0.01)
    w.clock.now += 2.9
    assert (await rc.pass_once())[rec.id] is S.ACTIVATING  # before the deadline: still rolling forward
    w.clock.now += 60  # past it (and past the back-off)
    assert (await rc.pass_once())[rec.id] is S.COMMITTED
    done = w.manager.get(rec.id)
    assert done.reason.startswith("activation timed out: L2 did not confirm within 3 s"), done.reason
    assert "activate it again or terminate it" in done.reason and done.error_code == "DEADLINE_EXCEEDED"
    assert child_states(w, rec.id) == {"L1": S.COMMITTED, "L2": S.COMMITTED, "L3": S.COMMITTED}
    assert w.wim.usage().services == 0 and bandwidth(w) == held  # nothing in service, the reservation kept
    agents["L2"].activate_down = False
    again = await w.manager.activate(rec.id)  # a fresh activation gets a fresh deadline, and succeeds
    assert again.state is S.ACTIVE and again.reason == "" and again.deadline_at == 0.0
    assert child_states(w, rec.id) == {"L1": S.ACTIVE, "L2": S.ACTIVE, "L3": S.ACTIVE}
    await w.manager.terminate(rec.id)
    assert w.idle()


async def test_an_activation_deadline_with_the_child_still_down_stays_deactivating_naming_it(tmp_path: Path) -> None:
    w, agents = await refusing_world(tmp_path)
    rec = await w.manager.reserve("alice", "r1", req())
    await w.manager.commit(rec.id)
    agents["L3"].activate_down = agents["L3"].deactivate_down = True
    with pytest.raises(Unavailable):
        await w.manager.activate(rec.id)
    w.clock.now += 60
    rc = Reconciler(w.manager, w.clock, interval_s=0.01)
    assert (await rc.pass_once())[rec.id] is S.DEACTIVATING  # undone where it could be; L3 named
    stuck = w.manager.get(rec.id)
    assert "activation timed out: L3" in stuck.reason and stuck.reason.endswith("[pending: L3]"), stuck.reason
    assert child_states(w, rec.id) == {"L1": S.COMMITTED, "L2": S.COMMITTED, "L3": S.COMMITTED}
    agents["L3"].activate_down = agents["L3"].deactivate_down = False
    w.clock.now += 60
    assert (await rc.pass_once())[rec.id] is S.COMMITTED
    assert "activation timed out: L3" in w.manager.get(rec.id).reason


async def test_the_activation_deadline_survives_a_restart(tmp_path: Path) -> None:
    from broker.store.sqlite import SqliteStore

    w, agents = await refusing_world(tmp_path)
    rec = await w.manager.reserve("alice", "r1", req())
    await w.manager.commit(rec.id)
    agents["L1"].activate_down = True
    with pytest.raises(Unavailable):
        await w.manager.activate(rec.id)
    deadline = w.manager.get(rec.id).deadline_at
    assert deadline > w.clock.now
    again = SqliteStore(tmp_path / "state.db")  # what make_world opened: read back, not from a cache
    try:
        assert again.get(rec.id).deadline_at == deadline
    finally:
        again.close()


async def test_a_child_that_puts_a_segment_in_service_after_the_compensation_is_deactivated_again(
    tmp_path: Path,
) -> None:
    """An Activate that reaches a child after the compensating Deactivate (delayed, or a child resumed
    after a stop) leaves it ACTIVE under a COMMITTED slice: the child's own event has it deactivated."""
    from tests.unit.test_transactions import Telling

    w, agents = await refusing_world(tmp_path)
    l1 = Telling(agents["L1"].inner)
    w.manager._agents["L1"] = l1
    follower = asyncio.ensure_future(w.manager.follow_child("L1"))
    try:
        rec = await w.manager.reserve("alice", "r1", req())
        await w.manager.commit(rec.id)
        agents["L3"].refuse_activate = True
        with pytest.raises(FailedPrecondition, match="L3 refused"):
            await w.manager.activate(rec.id)
        assert child_states(w, rec.id)["L1"] is S.COMMITTED
        seg = next(s for s in w.manager.get(rec.id).segments if s.domain == "L1")
        await l1.inner.activate(seg.handle)  # the late Activate, carried out at the child
        await l1.events.put(SegmentEvent(seg.handle, S.ACTIVE))
        for _ in range(200):  # bounded: 2 s
            if child_states(w, rec.id)["L1"] is S.COMMITTED:
                break
            await asyncio.sleep(0.01)
        assert child_states(w, rec.id) == {"L1": S.COMMITTED, "L2": S.COMMITTED, "L3": S.COMMITTED}
        assert w.manager.get(rec.id).state is S.COMMITTED
        # A stale ACTIVE event about an active slice changes nothing.
        agents["L3"].refuse_activate = False
        assert (await w.manager.activate(rec.id)).state is S.ACTIVE
        await l1.events.put(SegmentEvent(seg.handle, S.ACTIVE))
        await asyncio.sleep(0.05)
        assert child_states(w, rec.id)["L1"] is S.ACTIVE
    finally:
        follower.cancel()

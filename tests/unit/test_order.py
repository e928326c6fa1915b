"""The one-call order (issue 17): a Reserve that commits and activates once held everywhere.

Each test tries to break one promise of the order — durability of the decision, the replay rules of
its request id, the compensation of a refused activation, an operation that outlives its caller — and
then reads the state at the broker and at every child.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from broker.core.faults import Faults
from broker.core.reconciler import Reconciler
from broker.core.records import Then
from domain_agents.base import NotActivated
from domain_agents.emulated import EmulatedDomainAgent
from slicing.errors import AlreadyExists, ErrorCode, FailedPrecondition, FedError, Unavailable
from slicing.model import SliceState
from tests.unit.test_lifecycle import World, req
from tests.unit.test_transactions import Flaky, flaky_world, held_anywhere

S = SliceState


class Crashed(BaseException):
    """What an injected crash does here: the operation stops where it is, as the process would."""


def crash_at(w: World, tmp_path: Path, point: str, occurrence: int = 1) -> None:
    """Arm a one-shot crash at the ``occurrence``-th hit of ``point`` in the world's manager."""
    path = tmp_path / "faults.json"
    rule = {"id": "c1", "point": point, "action": "crash", "occurrence": occurrence}
    path.write_text(json.dumps({"rules": [rule]}))

    def die(_status: int) -> None:
        raise Crashed

    w.manager._faults = Faults(path, exit=die)


async def until_committing(w: World) -> None:
    """Wait (bounded) until the order's commit is decided: the one slice is COMMITTING."""
    for _ in range(400):
        if w.manager.slices() and w.manager.slices()[0].state is S.COMMITTING:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"never COMMITTING: {[r.state for r in w.manager.slices()]}")


def states_at_children(w: World) -> dict[str, str]:
    """The state of the one segment each child holds, read at the child."""
    out = {}
    for d, a in w.agents.items():
        inner = a.inner if isinstance(a, Flaky) else a
        assert isinstance(inner, EmulatedDomainAgent)
        held = [s for s in inner._segments.values()]
        if held:
            out[d] = "/".join(sorted(str(s.state) for s in held))
    return out


class RefusesActivation(Flaky):
    """A child that commits but refuses to activate, definitively (``FAILED_PRECONDITION``)."""

    refuse = True

    async def activate(self, handle: str) -> None:
        self.calls.append("activate")
        if self.refuse:
            raise FailedPrecondition(f"{self.domain_id} cannot bring the segment into service")
        await self.inner.activate(handle)


async def refusing_world(tmp_path: Path) -> tuple[World, RefusesActivation]:
    w, l3 = await flaky_world(tmp_path)
    r = RefusesActivation(l3.inner)
    w.manager._agents["L3"] = r
    w.agents["L3"] = r  # type: ignore[assignment]
    return w, r


async def test_an_order_answers_the_slice_active_and_every_child_and_the_wim_hold_it_active(tmp_path: Path) -> None:
    w, _ = await flaky_world(tmp_path)
    rec = await w.manager.reserve("alice", "o1", req(), then=Then.ACTIVATE)
    assert rec.state is S.ACTIVE and rec.then is Then.ACTIVATE
    assert states_at_children(w) == {"L1": "ACTIVE", "L2": "ACTIVE", "L3": "ACTIVE"}
    assert w.wim.usage().services == 2
    assert w.store.get(rec.id) == rec  # the intent is persisted with the slice
    ops = {t["operation"] for t in w.store.tasks(rec.id)}
    assert {"reserve", "order", "activate"} <= ops and "commit" not in ops


async def test_a_commit_only_order_answers_committed(tmp_path: Path) -> None:
    w, _ = await flaky_world(tmp_path)
    rec = await w.manager.reserve("alice", "o1", req(), then=Then.COMMIT)
    assert rec.state is S.COMMITTED
    assert states_at_children(w) == {"L1": "COMMITTED", "L2": "COMMITTED", "L3": "COMMITTED"}


async def test_a_repeated_order_answers_the_same_slice_and_another_body_or_intent_is_refused(tmp_path: Path) -> None:
    w, _ = await flaky_world(tmp_path)
    first = await w.manager.reserve("alice", "o1", req(), then=Then.ACTIVATE)
    again = await w.manager.reserve("alice", "o1", req(), then=Then.ACTIVATE)
    assert again.id == first.id and again.state is S.ACTIVE
    for then in (Then.HOLD, Then.COMMIT):  # the intent is part of the request
        with pytest.raises(AlreadyExists, match="different request"):
            await w.manager.reserve("alice", "o1", req(), then=then)
    with pytest.raises(AlreadyExists):
        await w.manager.reserve("alice", "o1", req(mbps=5), then=Then.ACTIVATE)
    plain = await w.manager.reserve("alice", "r1", req(mbps=5))  # a plain Reserve's digest did not change
    with pytest.raises(AlreadyExists):
        await w.manager.reserve("alice", "r1", req(mbps=5), then=Then.ACTIVATE)
    assert plain.state is S.HELD and len(w.manager.slices()) == 2


async def test_a_repeat_while_the_order_is_in_flight_waits_and_answers_the_same_active_slice(tmp_path: Path) -> None:
    w, l3 = await flaky_world(tmp_path, child_timeout_s=5.0)
    l3.reserve = l3.inner.reserve  # type: ignore[method-assign]
    l3.hang.clear()  # L3 holds the commit-and-activate step up
    first = asyncio.ensure_future(w.manager.reserve("alice", "o1", req(), then=Then.ACTIVATE))
    await until_committing(w)
    repeat = asyncio.ensure_future(w.manager.reserve("alice", "o1", req(), then=Then.ACTIVATE))
    await asyncio.sleep(0.05)
    assert not repeat.done()  # it waits for the order, it does not answer a state in flight
    l3.hang.set()
    a, b = await first, await repeat
    assert a.id == b.id and a.state is S.ACTIVE and b.state is S.ACTIVE
    assert len(w.manager.slices()) == 1 and l3.calls.count("commit") == 1


async def test_a_crash_between_held_everywhere_and_the_commit_decision_releases_everything(tmp_path: Path) -> None:
    w, _ = await flaky_world(tmp_path)
    crash_at(w, tmp_path, "order.start")
    with pytest.raises(Crashed):
        await w.manager.reserve("alice", "o1", req(), then=Then.ACTIVATE)
    rec = w.manager.slices()[0]
    assert rec.state is S.HELD and held_anywhere(w) == {"L1": 100, "L2": 100, "L3": 100}
    await w.manager.recover()  # the restart: no one will decide this order, so it is presumed aborted
    assert w.manager.get(rec.id).state is S.ABORTING
    assert (await Reconciler(w.manager, w.clock).pass_once())[rec.id] is S.FAILED
    assert held_anywhere(w) == {} and w.idle()
    with pytest.raises(FedError) as again:  # the repeat tells why, and holds nothing
        await w.manager.reserve("alice", "o1", req(), then=Then.ACTIVATE)
    assert again.value.code is ErrorCode.UNAVAILABLE and "restarted" in str(again.value)
    assert held_anywhere(w) == {}


async def test_a_plain_hold_survives_a_restart_as_before(tmp_path: Path) -> None:
    w, _ = await flaky_world(tmp_path)
    rec = await w.manager.reserve("alice", "r1", req())
    await w.manager.recover()
    assert w.manager.get(rec.id).state is S.HELD


async def test_a_crash_after_the_decision_rolls_forward_to_active_on_restart(tmp_path: Path) -> None:
    w, _ = await flaky_world(tmp_path)
    crash_at(w, tmp_path, "order.decided")
    with pytest.raises(Crashed):
        await w.manager.reserve("alice", "o1", req(), then=Then.ACTIVATE)
    rec = w.manager.slices()[0]
    assert rec.state is S.COMMITTING and rec.then is Then.ACTIVATE
    await w.manager.recover()
    assert w.manager.get(rec.id).state is S.COMMITTING  # not released: the decision was commit and activate
    assert (await Reconciler(w.manager, w.clock).pass_once())[rec.id] is S.ACTIVE
    assert states_at_children(w) == {"L1": "ACTIVE", "L2": "ACTIVE", "L3": "ACTIVE"}
    again = await w.manager.reserve("alice", "o1", req(), then=Then.ACTIVATE)
    assert again.id == rec.id and again.state is S.ACTIVE


async def test_a_crash_after_one_child_answered_rolls_forward_and_telling_it_again_is_harmless(tmp_path: Path) -> None:
    w, _ = await flaky_world(tmp_path)
    crash_at(w, tmp_path, "order.task.after")
    with pytest.raises(Crashed):
        await w.manager.reserve("alice", "o1", req(), then=Then.ACTIVATE)
    await w.manager.cancel_running()
    await w.manager.recover()
    rec = w.manager.slices()[0]
    assert (await Reconciler(w.manager, w.clock).pass_once())[rec.id] is S.ACTIVE
    assert states_at_children(w) == {"L1": "ACTIVE", "L2": "ACTIVE", "L3": "ACTIVE"}


async def test_a_child_refusing_activation_leaves_the_order_committed_everywhere_and_says_who(tmp_path: Path) -> None:
    w, l3 = await refusing_world(tmp_path)
    with pytest.raises(FailedPrecondition, match="activation failed: L3 refused") as refused:
        await w.manager.reserve("alice", "o1", req(), then=Then.ACTIVATE)
    rec = w.manager.slices()[0]
    assert rec.state is S.COMMITTED and rec.error_code == "FAILED_PRECONDITION"
    # Compensated, as a refused Activate is: nothing in service anywhere, every reservation kept.
    assert states_at_children(w) == {"L1": "COMMITTED", "L2": "COMMITTED", "L3": "COMMITTED"}
    assert w.wim.usage().services == 0 and held_anywhere(w) == {"L1": 100, "L2": 100, "L3": 100}
    with pytest.raises(FailedPrecondition) as again:  # the repeat answers what the order answered
        await w.manager.reserve("alice", "o1", req(), then=Then.ACTIVATE)
    assert str(again.value) == str(refused.value)
    l3.refuse = False
    assert (await w.manager.activate(rec.id)).state is S.ACTIVE  # the customer may activate it again


async def test_commit_and_activate_reports_a_refused_activation_apart_from_the_commit(tmp_path: Path) -> None:
    w, l3 = await refusing_world(tmp_path)
    rec = await w.manager.reserve("alice", "r1", req())
    with pytest.raises(NotActivated) as not_active:
        await w.manager.commit_and_activate(rec.id)
    assert not_active.value.error.code is ErrorCode.FAILED_PRECONDITION
    assert w.manager.get(rec.id).state is S.COMMITTED
    l3.refuse = False
    assert (await w.manager.commit_and_activate(rec.id)).state is S.ACTIVE  # a retry activates, as Activate would


async def test_commit_and_activate_raises_a_lost_hold_as_commit_does_and_releases_everything(tmp_path: Path) -> None:
    w, l3 = await flaky_world(tmp_path)
    rec = await w.manager.reserve("alice", "r1", req())
    l3.lose_hold = True
    with pytest.raises(FailedPrecondition, match="L3 lost the hold"):
        await w.manager.commit_and_activate(rec.id)
    assert w.manager.get(rec.id).state is S.FAILED and held_anywhere(w) == {} and w.idle()


async def test_an_activation_a_child_does_not_confirm_rolls_forward_through_the_reconciler(tmp_path: Path) -> None:
    w, l3 = await refusing_world(tmp_path)
    real = l3.activate

    async def unanswered(handle: str) -> None:
        raise Unavailable("L3 did not answer", domain="L3")

    l3.activate = unanswered  # type: ignore[method-assign]
    with pytest.raises(Unavailable, match="activation is decided and goes on"):
        await w.manager.reserve("alice", "o1", req(), then=Then.ACTIVATE)
    rec = w.manager.slices()[0]
    assert rec.state is S.ACTIVATING and "[pending: L3]" in rec.reason
    l3.activate = real  # type: ignore[method-assign]
    l3.refuse = False
    assert (await Reconciler(w.manager, w.clock).pass_once())[rec.id] is S.ACTIVE
    assert states_at_children(w) == {"L1": "ACTIVE", "L2": "ACTIVE", "L3": "ACTIVE"}


async def test_a_commit_a_child_does_not_confirm_keeps_the_order_committing_then_goes_on_to_active(
    tmp_path: Path,
) -> None:
    w, l3 = await flaky_world(tmp_path)
    l3.reserve = l3.inner.reserve  # type: ignore[method-assign]
    l3.down = True  # L3 holds, then answers nothing more
    with pytest.raises(Unavailable, match="commit is decided"):
        await w.manager.reserve("alice", "o1", req(), then=Then.ACTIVATE)
    rec = w.manager.slices()[0]
    assert rec.state is S.COMMITTING
    assert states_at_children(w) == {"L1": "ACTIVE", "L2": "ACTIVE", "L3": "HELD"}
    l3.down = False
    assert (await Reconciler(w.manager, w.clock).pass_once())[rec.id] is S.ACTIVE
    assert states_at_children(w) == {"L1": "ACTIVE", "L2": "ACTIVE", "L3": "ACTIVE"}


async def test_a_cancelled_order_runs_to_its_end_and_leaves_nothing_in_flight(tmp_path: Path) -> None:
    w, l3 = await flaky_world(tmp_path, child_timeout_s=5.0)
    l3.reserve = l3.inner.reserve  # type: ignore[method-assign]
    l3.hang.clear()  # the commit-and-activate step at L3 waits
    call = asyncio.ensure_future(w.manager.reserve("alice", "o1", req(), then=Then.ACTIVATE))
    await until_committing(w)
    call.cancel()  # the customer goes away mid-order
    with pytest.raises(asyncio.CancelledError):
        await call
    l3.hang.set()
    await w.manager.drain()
    rec = w.manager.slices()[0]
    assert rec.state is S.ACTIVE
    assert states_at_children(w) == {"L1": "ACTIVE", "L2": "ACTIVE", "L3": "ACTIVE"}
    await w.manager.terminate(rec.id)
    assert w.idle()


async def test_an_order_a_child_never_confirms_is_released_everywhere_once_the_hold_time_is_over(
    tmp_path: Path,
) -> None:
    w, l3 = await flaky_world(tmp_path)
    l3.reserve = l3.inner.reserve  # type: ignore[method-assign]
    l3.down = True  # L3 holds, then answers nothing more
    with pytest.raises(Unavailable):
        await w.manager.reserve("alice", "o1", req(), then=Then.ACTIVATE)
    rec = w.manager.slices()[0]
    w.clock.now = rec.hold_expires_at + 1  # the hold time is over with L3 still silent
    assert (await Reconciler(w.manager, w.clock).pass_once())[rec.id] is S.TERMINATING
    assert held_anywhere(w) == {"L3": 100}  # what was active elsewhere is released already
    l3.down = False  # L3's release is confirmed once it answers again
    assert (await Reconciler(w.manager, w.clock).pass_once())[rec.id] is S.FAILED
    assert held_anywhere(w) == {} and w.idle()


CRASH_POINTS = [
    ("order.start", 1),
    ("order.decided", 1),
    *((p, n) for p in ("order.task.before", "order.task.after") for n in (1, 2, 3)),
    ("order.done", 1),
]


@pytest.mark.parametrize(("point", "occurrence"), CRASH_POINTS)
async def test_a_crash_at_any_point_of_the_order_ends_all_active_or_all_released(
    tmp_path: Path, point: str, occurrence: int
) -> None:
    w, _ = await flaky_world(tmp_path)
    crash_at(w, tmp_path, point, occurrence)
    with pytest.raises(Crashed):
        await w.manager.reserve("alice", "o1", req(), then=Then.ACTIVATE)
    await w.manager.cancel_running()  # whatever else was in flight dies with the process
    await w.manager.recover()
    rec = w.manager.slices()[0]
    reconciler = Reconciler(w.manager, w.clock)
    for _ in range(5):
        if w.manager.get(rec.id).state in (S.ACTIVE, S.FAILED):
            break
        await reconciler.pass_once()
    final = w.manager.get(rec.id)
    at_children = states_at_children(w)
    if point == "order.start":  # before the decision: presumed abort
        assert final.state is S.FAILED and at_children == {} and w.idle()
    else:  # after it: rolled forward, every child active and the borders stitched
        assert final.state is S.ACTIVE and at_children == {"L1": "ACTIVE", "L2": "ACTIVE", "L3": "ACTIVE"}
        assert w.wim.usage().services == 2
    again = await w.manager.reserve("alice", "o1", req(), then=Then.ACTIVATE) if final.state is S.ACTIVE else None
    assert again is None or (again.id == rec.id and again.state is S.ACTIVE)


@pytest.mark.parametrize("occurrence", [1, 2, 3])
async def test_a_refusal_after_any_child_answered_compensates_the_order_to_committed_everywhere(
    tmp_path: Path, occurrence: int
) -> None:
    w, _ = await flaky_world(tmp_path)
    path = tmp_path / "faults.json"
    rule = {"id": "f", "point": "order.task.after", "action": "fail", "code": "FAILED_PRECONDITION"}
    path.write_text(json.dumps({"rules": [rule | {"occurrence": occurrence}]}))
    w.manager._faults = Faults(path)
    with pytest.raises(FailedPrecondition, match="activation failed"):
        await w.manager.reserve("alice", "o1", req(), then=Then.ACTIVATE)
    rec = w.manager.slices()[0]
    assert rec.state is S.COMMITTED and w.wim.usage().services == 0
    assert states_at_children(w) == {"L1": "COMMITTED", "L2": "COMMITTED", "L3": "COMMITTED"}

"""Service orders in the core: placed by Reserve, carried on by the slice's events, read from the slice."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from broker.core.orders import ENDED, TARGET, OrderDesk, OrderState, order_state
from broker.core.records import OrderRecord, SliceRecord
from slicing.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from slicing.model import SliceState
from tests.unit.test_lifecycle import World, make_world, req

S = SliceState


def _order(**changes: object) -> OrderRecord:
    return replace(OrderRecord("o1", "alice", "k1", 1.0), **changes)  # type: ignore[arg-type]


def _slice(state: SliceState, reason: str = "") -> SliceRecord:
    return SliceRecord("T-1", "alice", "k1", "h", req(), 30.0, state, 1.0, 2.0, reason=reason)


@pytest.mark.parametrize("state", list(SliceState))
@pytest.mark.parametrize("hold_only", [False, True])
def test_every_slice_state_reads_as_one_order_state(state: SliceState, hold_only: bool) -> None:
    got, reason = order_state(_order(hold_only=hold_only), _slice(state, "why"))
    if state in TARGET[hold_only]:
        assert got is OrderState.COMPLETED
    elif state is S.RESERVING:
        assert got is OrderState.ACKNOWLEDGED
    elif state in ENDED:
        assert (got, reason) == (OrderState.FAILED, "why")
    else:
        assert got is OrderState.IN_PROGRESS


@pytest.mark.parametrize("state", list(SliceState))
def test_a_cancelled_order_is_pending_until_its_slice_ended_and_a_completed_one_stays_completed(
    state: SliceState,
) -> None:
    cancelled, _ = order_state(_order(cancelled_at=5.0), _slice(state))
    assert cancelled is (OrderState.CANCELLED if state in ENDED else OrderState.PENDING_CANCELLATION)
    assert order_state(_order(completed_at=5.0), _slice(state))[0] is OrderState.COMPLETED


def test_an_order_without_a_slice_is_acknowledged_and_says_how_to_go_on() -> None:
    state, reason = order_state(_order(), None)
    assert state is OrderState.ACKNOWLEDGED and "externalId" in reason


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[tuple[World, OrderDesk, asyncio.Event]]:
    w = await make_world(tmp_path)
    desk = OrderDesk(w.manager, w.store, w.clock)
    stop = asyncio.Event()
    runner = asyncio.ensure_future(desk.run(stop))
    await asyncio.sleep(0)
    try:
        yield w, desk, stop
    finally:
        stop.set()
        await asyncio.wait_for(runner, 5)
        await w.manager.drain()
        w.store.close()


async def settled(desk: OrderDesk, order_id: str, requester: str | None = "alice") -> OrderState:
    for _ in range(200):
        view = desk.get(order_id, requester)
        if view.state in (OrderState.COMPLETED, OrderState.FAILED, OrderState.CANCELLED):
            return view.state
        await asyncio.sleep(0.01)
    return desk.get(order_id, requester).state


async def test_an_order_is_committed_and_activated_and_stays_completed_after_termination(
    world: tuple[World, OrderDesk, asyncio.Event],
) -> None:
    w, desk, _ = world
    view = await desk.place("alice", "k1", req())
    assert view.slice is not None and view.slice.state is S.HELD
    assert await settled(desk, view.order.id) is OrderState.COMPLETED
    stored = w.store.order(view.order.id)
    assert stored is not None and stored.completed_at > 0
    rec = await w.manager.terminate(view.slice.id)
    assert rec.state is S.TERMINATED
    assert desk.get(view.order.id, "alice").state is OrderState.COMPLETED


async def test_a_hold_only_order_is_never_committed(world: tuple[World, OrderDesk, asyncio.Event]) -> None:
    w, desk, _ = world
    view = await desk.place("alice", "k1", req(), hold_only=True)
    assert view.state is OrderState.COMPLETED
    await asyncio.sleep(0.05)
    assert view.slice is not None and w.manager.get(view.slice.id).state is S.HELD


async def test_the_external_id_replays_the_order_and_refuses_a_different_request(
    world: tuple[World, OrderDesk, asyncio.Event],
) -> None:
    w, desk, _ = world
    first = await desk.place("alice", "k1", req())
    again = await desk.place("alice", "k1", req())
    assert again.order.id == first.order.id
    with pytest.raises(AlreadyExists, match="k1"):
        await desk.place("alice", "k1", req(200))
    with pytest.raises(AlreadyExists, match="k1"):
        await desk.place("alice", "k1", req(), hold_only=True)
    assert [o.id for o in w.store.orders()] == [first.order.id]
    other = await desk.place("bob", "k1", req())  # a key is the requester's own
    assert other.order.id != first.order.id


async def test_a_reserve_refused_after_the_slice_was_recorded_is_a_failed_order_with_its_reason(
    world: tuple[World, OrderDesk, asyncio.Event],
) -> None:
    _, desk, _ = world
    view = await desk.place("alice", "big", req(10**6))
    assert view.state is OrderState.FAILED and view.reason
    assert view.slice is not None and view.slice.error_code == "RESOURCE_EXHAUSTED"
    assert (await desk.place("alice", "big", req(10**6))).order.id == view.order.id  # and replays as such


async def test_a_reserve_refused_before_any_slice_leaves_no_order(
    world: tuple[World, OrderDesk, asyncio.Event],
) -> None:
    w, desk, _ = world
    with pytest.raises(InvalidArgument, match="hold_time_s"):
        await desk.place("alice", "k2", req(), hold_time_s=10**6)
    with pytest.raises(InvalidArgument, match="externalId"):
        await desk.place("alice", "", req())
    assert w.store.orders() == []


async def test_another_requesters_order_does_not_exist_in_the_same_words(
    world: tuple[World, OrderDesk, asyncio.Event],
) -> None:
    _, desk, _ = world
    view = await desk.place("alice", "k1", req(), hold_only=True)
    with pytest.raises(NotFound) as theirs:
        desk.get(view.order.id, "bob")
    with pytest.raises(NotFound) as missing:
        desk.get("nope", "bob")
    assert str(theirs.value).replace(view.order.id, "X") == str(missing.value).replace("nope", "X")
    assert desk.get(view.order.id, None).order.id == view.order.id  # an operator sees it
    assert desk.page("bob") == [] and [v.order.id for v in desk.page(None)] == [view.order.id]


async def test_an_open_order_is_cancelled_and_its_slice_released_but_a_completed_one_is_not(
    tmp_path: Path,
) -> None:
    w = await make_world(tmp_path)
    desk = OrderDesk(w.manager, w.store, w.clock)  # not run: the order stays HELD, in progress
    view = await desk.place("alice", "k1", req())
    assert view.state is OrderState.IN_PROGRESS
    done = await desk.cancel(view.order.id, "alice")
    assert done.state is OrderState.CANCELLED and done.slice is not None and done.slice.state is S.TERMINATED
    assert w.idle()
    with pytest.raises(FailedPrecondition, match="cancelled"):
        await desk.cancel(view.order.id, "alice")
    held = await desk.place("alice", "k2", req(), hold_only=True)
    with pytest.raises(FailedPrecondition, match="completed"):
        await desk.cancel(held.order.id, "alice")
    await w.manager.drain()
    w.store.close()


async def test_a_restarted_desk_carries_on_the_orders_it_finds(tmp_path: Path) -> None:
    w = await make_world(tmp_path)
    first = OrderDesk(w.manager, w.store, w.clock)
    view = await first.place("alice", "k1", req())  # HELD; the desk "stopped" before its next step
    assert view.state is OrderState.IN_PROGRESS
    second = OrderDesk(w.manager, w.store, w.clock)
    stop = asyncio.Event()
    runner = asyncio.ensure_future(second.run(stop))
    try:
        assert await settled(second, view.order.id) is OrderState.COMPLETED
    finally:
        stop.set()
        await asyncio.wait_for(runner, 5)
        await w.manager.drain()
        w.store.close()


async def test_pages_filter_by_state_and_skip_and_limit(world: tuple[World, OrderDesk, asyncio.Event]) -> None:
    _, desk, _ = world
    ids = [(await desk.place("alice", f"k{i}", req(), hold_only=True)).order.id for i in range(4)]
    failed = (await desk.place("alice", "big", req(10**6))).order.id
    assert [v.order.id for v in desk.page("alice", states=[OrderState.FAILED])] == [failed]
    newest_first = [v.order.id for v in desk.page("alice", states=[OrderState.COMPLETED])]
    assert newest_first == ids[::-1]
    assert [v.order.id for v in desk.page("alice", states=[OrderState.COMPLETED], offset=1, limit=2)] == ids[::-1][1:3]
    assert [v.order.id for v in desk.page("alice", external_id="k2")] == [ids[2]]

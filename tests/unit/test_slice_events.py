"""The fan-out of slice events: a watcher gets what it asked for, and nothing it did not ask for
takes room in its queue (a watcher that does not read loses its oldest event)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from broker.core.events import IN_FLIGHT, SliceEvent, SliceEvents
from broker.core.monitoring import Alert, AlertStatus, Metric, Severity
from slicing.model import SliceState

S = SliceState
SETTLED = [s for s in SliceState if s not in IN_FLIGHT]


async def started(follow: AsyncIterator[SliceEvent]) -> asyncio.Future[SliceEvent]:
    """The watcher's first event to come, once it is registered."""
    first = asyncio.ensure_future(anext(follow))
    await asyncio.sleep(0)
    return first


async def test_a_watcher_of_some_states_is_not_flooded_out_by_the_states_it_did_not_ask_for() -> None:
    events = SliceEvents(queue_size=4)
    follow = events.follow(states=SETTLED)
    first = await started(follow)  # the watcher is registered
    for i in range(1000):  # in-flight changes of many slices, more than its queue holds
        events.emit(SliceEvent(f"s{i}", S.COMMITTING, float(i)))
    events.emit(SliceEvent("kept", S.COMMITTED, 1000.0))
    events.emit(SliceEvent("kept", S.ACTIVATING, 1001.0))
    events.emit(SliceEvent("kept", S.ACTIVE, 1002.0))
    got = [await asyncio.wait_for(first, 1), await asyncio.wait_for(follow.__anext__(), 1)]
    assert [(e.slice_id, e.state) for e in got] == [("kept", S.COMMITTED), ("kept", S.ACTIVE)]
    await follow.aclose()


async def test_an_alert_reaches_a_watcher_of_some_states_whatever_the_state_it_carries() -> None:
    events = SliceEvents()
    follow = events.follow(states=[S.TERMINATED])
    nxt = await started(follow)
    alert = Alert(
        slice_id="s1",
        cause="latency",
        metric=Metric.LATENCY_MS,
        value=12.0,
        threshold=10.0,
        severity=Severity.WARNING,
        status=AlertStatus.FIRING,
        source_sp="L1",
        at=1.0,
    )
    events.emit(SliceEvent("s1", S.ACTIVE, 1.0, alert=alert))
    got = await asyncio.wait_for(nxt, 1)
    assert got.alert == alert
    await follow.aclose()


async def test_a_watcher_of_one_slice_gets_only_it_and_every_state_of_it() -> None:
    events = SliceEvents(queue_size=2)
    follow = events.follow("mine")
    nxt = await started(follow)
    events.emit(SliceEvent("mine", S.RESERVING, 0.0))
    for i in range(50):  # other slices' events, far more than its queue holds, take no room in it
        events.emit(SliceEvent(f"other{i}", S.HELD, float(i)))
    events.emit(SliceEvent("mine", S.HELD, 60.0))
    got = [await asyncio.wait_for(nxt, 1), await asyncio.wait_for(follow.__anext__(), 1)]
    assert [(e.slice_id, e.state) for e in got] == [("mine", S.RESERVING), ("mine", S.HELD)]
    await follow.aclose()


async def test_a_watcher_that_stops_is_no_longer_fed() -> None:
    events = SliceEvents()
    follow = events.follow(states=SETTLED)
    nxt = await started(follow)
    events.emit(SliceEvent("s1", S.HELD, 1.0))
    await asyncio.wait_for(nxt, 1)
    await follow.aclose()
    assert not events._watchers

"""The memory WIM driver: the WimDriver contract, its handle, capacity accounting and knobs."""

from __future__ import annotations

import asyncio
import json

import pytest

from capability_catalog.model import LabelType
from slicing.errors import InvalidArgument, ResourceExhausted, Unavailable
from tests.unit.contract_wim import DriverMaker, WimDriverContract
from wim.base import ConnectionPoint, ConnectivitySpec, WimDriver, WimUsage
from wim.memory import MemoryWimDriver, decode_handle

VNI = LabelType.VXLAN_VNI


def point(port: str, label: int, label_type: LabelType = VNI) -> ConnectionPoint:
    return ConnectionPoint(port, label_type, label)


def spec(key: str = "s1", *points: ConnectionPoint, mbps: int = 10) -> ConnectivitySpec:
    return ConnectivitySpec(key, points or (point("L1.to-L2", 1000), point("L2.to-L1", 1000)), mbps)


class TestMemoryWimContract(WimDriverContract):
    @pytest.fixture
    def make_driver(self) -> DriverMaker:
        def build() -> WimDriver:
            return MemoryWimDriver({"L1.to-L2": 100})

        return DriverMaker(build=build, port_a="L1.to-L2", port_b="L2.to-L1", capacity_mbps=100)


async def test_handle_is_canonical_json_of_the_spec() -> None:
    handle = await MemoryWimDriver().create(spec(mbps=7))
    assert json.loads(handle) == {
        "v": 1,
        "key": "s1",
        "bandwidth_mbps": 7,
        "points": [
            {"port": "L1.to-L2", "label_type": "vxlan-vni", "label": 1000},
            {"port": "L2.to-L1", "label_type": "vxlan-vni", "label": 1000},
        ],
    }
    assert decode_handle(handle) == spec(mbps=7)


async def test_two_points_on_one_port_count_its_bandwidth_twice() -> None:
    wim = MemoryWimDriver({"hub": 100})
    with pytest.raises(ResourceExhausted, match="port hub: 100 of 100 Mbit/s free, 120 Mbit/s asked"):
        await wim.create(spec("s1", point("hub", 10), point("hub", 11), mbps=60))
    await wim.create(spec("s2", point("hub", 10), point("hub", 11), mbps=50))
    assert wim.usage() == WimUsage(services=1, labels=2, bandwidth_mbps=50)


async def test_ports_without_a_known_capacity_are_not_limited() -> None:
    wim = MemoryWimDriver()
    await wim.create(spec(mbps=1_000_000))
    assert wim.usage().bandwidth_mbps == 1_000_000


async def test_the_same_label_on_different_ports_is_no_clash() -> None:
    wim = MemoryWimDriver()
    await wim.create(spec("s1", point("a", 5), point("b", 5)))
    await wim.create(spec("s2", point("c", 5), point("d", 5)))
    assert wim.usage().services == 2


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (spec("s1", point("a", 5), point("a", 5)), "points[1]"),
        (spec("s1", point("a", 5), point("", 5)), "points[1].port"),
        (spec("s1", point("a", 5), point("b", 15, LabelType.MPLS)), "points[1].label"),
        (spec("s1", mbps=0), "bandwidth_mbps"),
        (spec(""), "key"),
    ],
)
async def test_malformed_spec_is_invalid_argument_naming_the_field(bad: ConnectivitySpec, field: str) -> None:
    wim = MemoryWimDriver()
    with pytest.raises(InvalidArgument) as info:
        await wim.create(bad)
    assert info.value.field == field
    assert wim.usage().services == 0


async def test_edit_cannot_change_the_key() -> None:
    wim = MemoryWimDriver()
    handle = await wim.create(spec("s1"))
    with pytest.raises(InvalidArgument, match="keeps the service's key 's1'") as info:
        await wim.edit(handle, spec("s2"))
    assert info.value.field == "key"


async def test_handle_stays_valid_after_an_edit_but_restore_applies_the_created_spec() -> None:
    wim = MemoryWimDriver()
    handle = await wim.create(spec(mbps=10))
    await wim.edit(handle, spec(mbps=30))
    assert await wim.list() == [handle] and wim.usage().bandwidth_mbps == 30
    fresh = MemoryWimDriver()
    await fresh.restore(handle)
    assert fresh.usage().bandwidth_mbps == 10


async def test_restore_ignores_a_shrunk_capacity_but_refuses_a_label_clash() -> None:
    big = await MemoryWimDriver().create(spec("s1", mbps=500))
    clash = await MemoryWimDriver().create(spec("s2", mbps=1))
    fresh = MemoryWimDriver({"L1.to-L2": 100})
    await fresh.restore(big)
    assert fresh.usage().bandwidth_mbps == 500
    with pytest.raises(ResourceExhausted, match=r"label 1000 on port L1\.to-L2 is already used by service 's1'"):
        await fresh.restore(clash)
    assert fresh.usage().services == 1


async def test_restore_of_garbage_is_invalid_argument_on_handle() -> None:
    with pytest.raises(InvalidArgument, match="not a memory-WIM handle") as info:
        await MemoryWimDriver().restore('{"key": "s1"}')
    assert info.value.field == "handle"


async def test_latency_knob_delays_operations() -> None:
    wim = MemoryWimDriver(latency_s=0.02)
    loop = asyncio.get_running_loop()
    start = loop.time()
    handle = await wim.create(spec())
    await wim.delete(handle)
    assert loop.time() - start >= 0.035


async def test_fail_at_create_is_unavailable_and_creates_nothing() -> None:
    wim = MemoryWimDriver(fail_at="create")
    with pytest.raises(Unavailable, match="injected failure at create"):
        await wim.create(spec())
    assert wim.usage().services == 0 and await wim.list() == []


async def test_fail_at_delete_keeps_the_service() -> None:
    wim = MemoryWimDriver(fail_at="delete")
    handle = await wim.create(spec())
    with pytest.raises(Unavailable):
        await wim.delete(handle)
    assert await wim.list() == [handle]


def test_unknown_fail_step_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="fail_at"):
        MemoryWimDriver(fail_at="status")

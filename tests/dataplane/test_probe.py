"""Proof by traffic on two leaf domains stitched by the linux WIM: reachability, order, isolation, shaping.

Two slices share one customer subnet: ``fw`` runs A.ams → B.ham through a firewall in A and a dpi in
B; ``plain`` runs A.ams → B.fra with no function. Both cross the A–B border as VXLANs.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest

from capability_catalog.model import LabelSet, LabelType, TerminalId
from domain_agents import probe
from domain_agents.base import SegmentOrder
from domain_agents.netns import LocalSegment, NetnsDomainAgent, parse_netns_domain, slice_view
from slicing.model import PortConstraint, SliceRequest
from tests.conftest import require_dataplane
from wim import netlink
from wim.base import ConnectionPoint, ConnectivitySpec
from wim.linux import LinuxWimDriver
from wim.memory import decode_handle

pytestmark = pytest.mark.dataplane

LEAF_A = {
    "id": "A",
    "pops": ["ams", "utr"],
    "links": [{"a": "ams", "b": "utr", "bandwidth_mbps": 1000, "latency_ms": 1.0}],
    "endpoints": [{"id": "A.ams", "pop": "ams", "capacity_mbps": 1000}],
    "ports": [
        {
            "id": "A.to-B",
            "pop": "utr",
            "peer_sp": "B",
            "peer_port": "B.to-A",
            "labels": ["2000-2099"],
            "capacity_mbps": 1000,
        }
    ],
    "functions": [{"pop": "utr", "type": "firewall", "slots": 2}],
}
LEAF_B = {
    "id": "B",
    "pops": ["fra", "ham"],
    "links": [{"a": "fra", "b": "ham", "bandwidth_mbps": 1000, "latency_ms": 1.0}],
    "endpoints": [
        {"id": "B.ham", "pop": "ham", "capacity_mbps": 1000},
        {"id": "B.fra", "pop": "fra", "capacity_mbps": 1000},
    ],
    "ports": [
        {
            "id": "B.to-A",
            "pop": "fra",
            "peer_sp": "A",
            "peer_port": "A.to-B",
            "labels": ["2000-2099"],
            "capacity_mbps": 1000,
        }
    ],
    "functions": [{"pop": "fra", "type": "dpi", "slots": 2}],
}
SUBNET_A, SUBNET_B = "10.9.0.0/25", "10.9.0.128/25"  # the planner's two pieces of 10.9.0.0/24


def request(src: str, dst: str, mbps: int, chain: tuple[str, ...], subnet: str, port: str, label: int) -> SliceRequest:
    return SliceRequest(
        src=TerminalId(src),
        dst=TerminalId(dst),
        bandwidth_mbps=mbps,
        chain=chain,
        subnet=subnet,
        port_constraints=(PortConstraint(TerminalId(port), LabelSet.single(label), label),),
    )


@dataclass(frozen=True)
class Built:
    views: list[probe.SliceView]
    wim: LinuxWimDriver
    handles: dict[str, str]


async def build(prefix: str) -> Built:
    a = NetnsDomainAgent(parse_netns_domain(LEAF_A, "a"), time.time, prefix=prefix)
    b = NetnsDomainAgent(parse_netns_domain(LEAF_B, "b"), time.time, prefix=prefix)
    wim = LinuxWimDriver(prefix)
    views = []
    handles: dict[str, str] = {}
    for name, dst, mbps, chain_a, chain_b, label in (
        ("fw", "B.ham", 20, ("firewall",), ("dpi",), 2001),
        ("plain", "B.fra", 40, (), (), 2002),
    ):
        ga = await a.reserve(
            SegmentOrder(f"{name}.0", request("A.ams", "A.to-B", mbps, chain_a, SUBNET_A, "A.to-B", label), 30)
        )
        gb = await b.reserve(
            SegmentOrder(f"{name}.1", request("B.to-A", dst, mbps, chain_b, SUBNET_B, "B.to-A", label), 30)
        )
        for agent, grant in ((a, ga), (b, gb)):
            await agent.commit(grant.handle)
            await agent.activate(grant.handle)
        handles[name] = await wim.create(
            ConnectivitySpec(
                f"{name}:A.to-B:B.to-A",
                (
                    ConnectionPoint("A.to-B", LabelType.VXLAN_VNI, label),
                    ConnectionPoint("B.to-A", LabelType.VXLAN_VNI, label),
                ),
                mbps,
            )
        )
        addresses = {**ga.addresses, **gb.addresses}
        segments = [
            LocalSegment("A", f"{name}.0", "A.ams", "A.to-B", chain_a),
            LocalSegment("B", f"{name}.1", "B.to-A", dst, chain_b),
        ]
        views.append(slice_view(netlink.Names(prefix), name, segments, addresses, mbps))
    return Built(views, wim, handles)


@pytest.fixture(scope="module")
def built() -> Iterator[Built]:
    require_dataplane()
    prefix = f"fb{secrets.token_hex(2)}"
    try:
        yield asyncio.run(build(prefix))
    finally:
        netlink.clean(prefix)


@pytest.fixture
def slices(built: Built) -> list[probe.SliceView]:
    return built.views


def by_name(views: list[probe.SliceView], name: str) -> probe.SliceView:
    return next(v for v in views if v.name == name)


async def test_both_slices_reach_both_ways_with_addresses_from_one_customer_subnet(
    slices: list[probe.SliceView],
) -> None:
    for view in slices:
        result = await probe.reachability(view)
        assert result.passed, result.detail
        assert view.src.address.startswith("10.9.0.") and view.dst.address.startswith("10.9.0.")


async def test_packets_pass_the_firewall_then_the_dpi(slices: list[probe.SliceView]) -> None:
    view = by_name(slices, "fw")
    assert [f.type for f in view.functions] == ["firewall", "dpi"]
    result = await probe.order(view)
    assert result.passed, result.detail


async def test_order_check_fails_when_the_functions_are_listed_the_wrong_way_round(
    slices: list[probe.SliceView],
) -> None:
    view = by_name(slices, "fw")
    swapped = probe.SliceView(view.name, view.src, view.dst, tuple(reversed(view.functions)), view.bandwidth_mbps)
    result = await probe.order(swapped)
    assert not result.passed, result.detail


async def test_slices_on_the_same_subnet_cannot_reach_each_other(slices: list[probe.SliceView]) -> None:
    fw, plain = by_name(slices, "fw"), by_name(slices, "plain")
    assert fw.src.netns != plain.src.netns  # one endpoint, one namespace per slice
    result = await probe.isolation(fw, plain)
    assert result.passed, result.detail


async def test_throughput_is_the_asked_rate_within_20_percent(slices: list[probe.SliceView]) -> None:
    for view in slices:
        result = await probe.shaping(view)
        assert result.passed, result.detail


async def test_the_shaping_check_fails_when_the_border_carries_another_rate(built: Built) -> None:
    view = by_name(built.views, "plain")
    handle = built.handles["plain"]
    spec = decode_handle(handle)
    await built.wim.edit(handle, replace(spec, bandwidth_mbps=10))  # the border now shapes to 10 Mbit/s
    try:
        result = await probe.shaping(view)
    finally:
        await built.wim.edit(handle, spec)
    assert not result.passed, result.detail
    assert result.value is not None and abs(result.value - 10) <= 2, result.detail

"""The linux WIM driver passes the WIM contract on real namespaces, and builds what it claims."""

from __future__ import annotations

import asyncio

import pytest

from capability_catalog.model import LabelType
from slicing.errors import FailedPrecondition
from tests.unit.contract_wim import DriverMaker, WimDriverContract
from wim import netlink
from wim.base import ConnectionPoint, ConnectivitySpec, WimDriver
from wim.linux import LinuxWimDriver

pytestmark = pytest.mark.dataplane

PORT_A, PORT_B = "L1.to-L2", "L2.to-L1"
LABELS = range(1000, 1010)


def border(prefix: str) -> None:
    """What the leaves' netns agents make at a border: a namespace per port, a bridge per slice label."""
    names = netlink.Names(prefix)
    for port in (PORT_A, PORT_B):
        netlink.ensure_ns(names.port_ns(port))
        for label in LABELS:
            netlink.ensure_bridge(names.port_ns(port), names.port_bridge(port, label))


def spec(key: str, label: int, mbps: int = 10) -> ConnectivitySpec:
    return ConnectivitySpec(
        key,
        (ConnectionPoint(PORT_A, LabelType.VXLAN_VNI, label), ConnectionPoint(PORT_B, LabelType.VXLAN_VNI, label)),
        mbps,
    )


class TestLinuxWimContract(WimDriverContract):
    @pytest.fixture
    def make_driver(self, prefix: str) -> DriverMaker:
        border(prefix)

        def build() -> WimDriver:
            return LinuxWimDriver(prefix, {PORT_A: 100})

        return DriverMaker(build=build, port_a=PORT_A, port_b=PORT_B, capacity_mbps=100)


async def test_a_service_is_a_vxlan_with_its_vni_on_the_slice_bridge_of_each_side_over_one_underlay(
    prefix: str,
) -> None:
    await asyncio.to_thread(border, prefix)
    names = netlink.Names(prefix)
    wim = LinuxWimDriver(prefix)
    h1 = await wim.create(spec("s1", 1003, mbps=25))
    h2 = await wim.create(spec("s2", 1004))
    await asyncio.to_thread(check_built, names)
    await wim.delete(h1)
    assert await asyncio.to_thread(netlink.link_exists, names.port_ns(PORT_A), names.ifname("underlay", PORT_A))
    await wim.delete(h2)
    for port in (PORT_A, PORT_B):
        assert not await asyncio.to_thread(netlink.link_exists, names.port_ns(port), names.ifname("underlay", port))
        assert not await asyncio.to_thread(netlink.link_exists, names.port_ns(port), names.ifname("vxlan", port, 1004))


def check_built(names: netlink.Names) -> None:
    for port in (PORT_A, PORT_B):
        ns = names.port_ns(port)
        with netlink.in_ns(ns) as ipr:
            vx = ipr.get_links(ifname=names.ifname("vxlan", port, 1003))[0]
            info = vx.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_DATA")
            assert info.get_attr("IFLA_VXLAN_ID") == 1003
            assert vx.get_attr("IFLA_MASTER") == ipr.link_lookup(ifname=names.port_bridge(port, 1003))[0]
            kinds = [q.get_attr("TCA_KIND") for q in ipr.get_qdiscs(index=vx["index"])]
            assert "tbf" in kinds
            assert len(ipr.link_lookup(ifname=names.ifname("underlay", port))) == 1


async def test_a_border_the_leaf_has_not_built_is_refused_and_nothing_stays(prefix: str) -> None:
    names = netlink.Names(prefix)
    await asyncio.to_thread(netlink.ensure_ns, names.port_ns(PORT_A))
    await asyncio.to_thread(netlink.ensure_bridge, names.port_ns(PORT_A), names.port_bridge(PORT_A, 1000))
    wim = LinuxWimDriver(prefix)
    with pytest.raises(FailedPrecondition, match=PORT_B):
        await wim.create(spec("s1", 1000))
    assert wim.usage().services == 0 and await wim.list() == []
    assert await asyncio.to_thread(link_names, names.port_ns(PORT_A)) == {"lo", names.port_bridge(PORT_A, 1000)}


def link_names(ns: str) -> set[str]:
    with netlink.in_ns(ns) as ipr:
        return {str(x.get_attr("IFLA_IFNAME")) for x in ipr.get_links()}

"""The netns domain agent passes the domain-agent contract and builds (and removes) real namespaces."""

from __future__ import annotations

import asyncio
import time

import pytest

from capability_catalog.model import LabelRange, LabelSet, TerminalId
from domain_agents.base import DomainAgent, SegmentOrder
from domain_agents.netns import NetnsDomainAgent, any_realised, parse_netns_domain
from slicing.model import SliceRequest
from tests.unit.contract_domain_agent import AgentMaker, DomainAgentContract
from wim import netlink

pytestmark = pytest.mark.dataplane

DOMAIN = {
    "id": "N1",
    "type": "netns",
    "pops": ["a", "b", "c"],
    "links": [
        {"a": "a", "b": "b", "bandwidth_mbps": 1000, "latency_ms": 1.0},
        {"a": "b", "b": "c", "bandwidth_mbps": 1000, "latency_ms": 1.0},
    ],
    "endpoints": [
        {"id": "N1.ep", "pop": "a", "capacity_mbps": 100},
        {"id": "N1.far", "pop": "c", "capacity_mbps": 100},
    ],
    "ports": [
        {
            "id": "N1.to-X",
            "pop": "b",
            "peer_sp": "X",
            "peer_port": "X.to-N1",
            "labels": ["1000-1009"],
            "capacity_mbps": 100,
        }
    ],
    "functions": [{"pop": "b", "type": "firewall", "slots": 2}, {"pop": "c", "type": "dpi", "slots": 1}],
}


def agent_for(prefix: str) -> NetnsDomainAgent:
    return NetnsDomainAgent(parse_netns_domain(DOMAIN, "domains[0]"), time.time, prefix=prefix)


class TestNetnsAgentContract(DomainAgentContract):
    async def in_service(self, agent: DomainAgent, handle: str) -> bool | None:
        """Whether the kernel holds the segment's namespaces and links (not only the agent's own mark)."""
        assert isinstance(agent, NetnsDomainAgent)
        lay = agent._layout_of(handle)
        assert lay is not None
        built = await netlink.call(any_realised, agent.names, lay)
        assert built is (lay.key in agent.realised()), "the agent's mark and the kernel disagree"
        if not built and not agent.realised():  # nothing else is built: nothing at all may be left
            assert await asyncio.to_thread(netlink.leftovers, agent.names.prefix) == []
        return built

    @pytest.fixture
    def make_agent(self, prefix: str) -> AgentMaker:
        return AgentMaker(
            build=lambda: agent_for(prefix),
            endpoint=TerminalId("N1.ep"),
            port=TerminalId("N1.to-X"),
            port_labels=LabelSet.of([LabelRange(1000, 1009)]),
            max_mbps=100,
        )


def order(key: str, src: str, dst: str, chain: tuple[str, ...] = ()) -> SegmentOrder:
    request = SliceRequest(
        src=TerminalId(src), dst=TerminalId(dst), bandwidth_mbps=10, chain=chain, subnet="10.8.0.0/24"
    )
    return SegmentOrder(key=key, request=request, hold_time_s=30)


async def test_activate_builds_pops_functions_endpoint_and_border_and_terminate_removes_them(prefix: str) -> None:
    agent = agent_for(prefix)
    names = agent.names
    grant = await agent.reserve(order("k1", "N1.ep", "N1.to-X", ("firewall", "dpi")))
    await agent.commit(grant.handle)
    assert await asyncio.to_thread(netlink.leftovers, prefix) == []  # nothing is built before activate
    await agent.activate(grant.handle)
    made = {x.name for x in await asyncio.to_thread(netlink.leftovers, prefix)}
    label = grant.labels[TerminalId("N1.to-X")]
    assert {
        names.pop_ns("N1", "a"),
        names.pop_ns("N1", "b"),
        names.pop_ns("N1", "c"),  # the dpi sits off the path to the port: visited and come back
        names.port_ns("N1.to-X"),
        names.endpoint_ns("N1", "k1", "N1.ep"),
        names.function_ns("N1", "k1", 0),
        names.function_ns("N1", "k1", 1),
        names.probe_ns("N1", "k1", "a"),  # the probe ends on the first and the last stage
        names.probe_ns("N1", "k1", "b"),
    } == made
    assert await asyncio.to_thread(netlink.link_exists, names.port_ns("N1.to-X"), names.port_bridge("N1.to-X", label))
    await agent.terminate(grant.handle)
    assert await asyncio.to_thread(netlink.leftovers, prefix) == []


async def test_shared_pops_stay_until_the_last_segment_goes(prefix: str) -> None:
    agent = agent_for(prefix)
    one = await agent.reserve(order("k1", "N1.ep", "N1.far"))
    two = await agent.reserve(order("k2", "N1.ep", "N1.to-X"))
    for g in (one, two):
        await agent.commit(g.handle)
        await agent.activate(g.handle)
    await agent.terminate(one.handle)
    left = {x.name for x in await asyncio.to_thread(netlink.leftovers, prefix)}
    assert agent.names.pop_ns("N1", "a") in left and agent.names.pop_ns("N1", "c") not in left
    await agent.abort(two.handle)  # a release of an active segment by abort also removes it
    assert await asyncio.to_thread(netlink.leftovers, prefix) == []


async def test_restore_after_restart_re_finds_an_active_segment_and_its_terminate_cleans_up(prefix: str) -> None:
    agent = agent_for(prefix)
    grant = await agent.reserve(order("k1", "N1.ep", "N1.far", ("firewall",)))
    await agent.commit(grant.handle)
    await agent.activate(grant.handle)
    names = agent.names
    # A partial loss while the broker was down: the function namespace vanished.
    await asyncio.to_thread(netlink.remove_ns, names.function_ns("N1", "k1", 0))
    fresh = agent_for(prefix)
    await fresh.restore(grant.handle, committed=True)
    assert fresh.realised() == ["k1"]
    assert await asyncio.to_thread(netlink.ns_exists, names.function_ns("N1", "k1", 0))
    await fresh.terminate(grant.handle)
    assert await asyncio.to_thread(netlink.leftovers, prefix) == []


async def test_a_committed_segment_never_activated_is_not_built_on_restore(prefix: str) -> None:
    agent = agent_for(prefix)
    grant = await agent.reserve(order("k1", "N1.ep", "N1.far"))
    await agent.commit(grant.handle)
    fresh = agent_for(prefix)
    await fresh.restore(grant.handle, committed=True)
    assert fresh.realised() == [] and await asyncio.to_thread(netlink.leftovers, prefix) == []
    await fresh.activate(grant.handle)
    assert fresh.realised() == ["k1"]
    await fresh.terminate(grant.handle)


async def test_two_installations_build_the_same_domain_and_key_side_by_side(prefix: str) -> None:
    other = f"{prefix[:2]}{'z' if prefix[2] != 'z' else 'y'}{prefix[3:]}"  # another prefix, same length
    try:
        one, two = agent_for(prefix), agent_for(other)
        grants = []
        for agent in (one, two):
            grant = await agent.reserve(order("k1", "N1.ep", "N1.to-X", ("firewall",)))
            await agent.commit(grant.handle)
            await agent.activate(grant.handle)
            grants.append(grant)
        mine = {x.name for x in await asyncio.to_thread(netlink.leftovers, prefix)}
        theirs = {x.name for x in await asyncio.to_thread(netlink.leftovers, other)}
        assert len(mine) == len(theirs) == 7 and not mine & theirs  # pops a, b; port; endpoint; firewall; 2 probe ends
        await one.terminate(grants[0].handle)
        assert await asyncio.to_thread(netlink.leftovers, prefix) == []
        assert {x.name for x in await asyncio.to_thread(netlink.leftovers, other)} == theirs
        await two.terminate(grants[1].handle)
    finally:
        await asyncio.to_thread(netlink.clean, other)


async def test_deactivate_removes_one_segment_from_the_kernel_keeps_the_other_and_survives_a_restart(
    prefix: str,
) -> None:
    agent = agent_for(prefix)
    names = agent.names
    one = await agent.reserve(order("k1", "N1.ep", "N1.far", ("firewall",)))
    two = await agent.reserve(order("k2", "N1.ep", "N1.to-X"))
    for g in (one, two):
        await agent.commit(g.handle)
        await agent.activate(g.handle)
    reserved = agent.usage()
    await agent.deactivate(one.handle)
    left = {x.name for x in await asyncio.to_thread(netlink.leftovers, prefix)}
    assert names.function_ns("N1", "k1", 0) not in left and names.endpoint_ns("N1", "k1", "N1.ep") not in left
    assert names.pop_ns("N1", "c") not in left  # only k1 used pop c
    assert {names.pop_ns("N1", "a"), names.endpoint_ns("N1", "k2", "N1.ep")} <= left  # k2 still in service
    # k1's ends in the pops k2 keeps are gone at once, not when the kernel gets round to the removed namespaces.
    for pop, end in (("b", names.ifname("fn-a", "N1", "k1", 0)), ("a", names.ifname("ep-outer", "N1", "k1", "N1.ep"))):
        assert not await asyncio.to_thread(netlink.link_exists, names.pop_ns("N1", pop), end), end
    assert agent.realised() == ["k2"] and agent.usage() == reserved
    # A restart after the deactivation: the committed segment is not rebuilt, the active one is re-found.
    fresh = agent_for(prefix)
    await fresh.restore(one.handle, committed=True)
    await fresh.restore(two.handle, committed=True)
    assert fresh.realised() == ["k2"] and fresh.usage() == reserved
    await fresh.activate(one.handle)  # and activated again, it is built again
    assert await asyncio.to_thread(netlink.ns_exists, names.function_ns("N1", "k1", 0))
    await fresh.terminate(one.handle)
    await fresh.terminate(two.handle)
    assert await asyncio.to_thread(netlink.leftovers, prefix) == []


async def test_a_veth_end_whose_peer_is_not_where_it_should_be_is_made_again(prefix: str) -> None:
    """A pop end that outlived its peer's namespace (the kernel removes a namespace's interfaces
    later, on its own) must not pass for the pair: ``ensure_veth`` deletes it and makes the pair anew."""
    names = netlink.Names(prefix)
    a, b, stray = names.netns("t", "a"), names.netns("t", "b"), names.netns("t", "x")
    for ns in (a, b, stray):
        await asyncio.to_thread(netlink.ensure_ns, ns)
    end_a, end_b = names.ifname("t", "a"), names.ifname("t", "b")
    await asyncio.to_thread(netlink.ensure_veth, a, end_a, stray, end_b)  # the peer in the wrong namespace
    assert not await asyncio.to_thread(netlink.link_exists, b, end_b)
    await asyncio.to_thread(netlink.ensure_veth, a, end_a, b, end_b)
    assert await asyncio.to_thread(netlink.link_exists, b, end_b)
    assert not await asyncio.to_thread(netlink.link_exists, stray, end_b)  # the old pair went as one
    await asyncio.to_thread(netlink.ensure_veth, a, end_a, b, end_b)  # a complete pair is kept as it is
    assert await asyncio.to_thread(netlink.is_up, b, end_b)

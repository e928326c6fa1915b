"""The OpenStack domain agent against real Keystone, Placement and Neutron on loopback.

Every test builds its own domain (own resource providers, own VNI block), and asserts on
Placement allocations and Neutron networks directly through an admin connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openstack.connection
import pytest

from broker.core.lifecycle import SliceManager
from broker.store.sqlite import SqliteStore
from capability_catalog.model import LabelRange, LabelSet, SpId, TerminalId
from domain_agents.base import DomainAgent, HealthSample
from domain_agents.openstack import OpenStackDomainAgent, consumer_id
from domain_agents.openstack_model import (
    BANDWIDTH,
    COMMITTED_TAG,
    FUNCTION_SLOTS,
    Made,
    reservation_tag,
)
from scenarios.openstack_services import CloudInfo
from slicing.errors import FedError, InvalidArgument, ResourceExhausted, Unauthenticated, Unavailable
from slicing.model import SliceRequest, SliceState
from tests.openstack.helpers import (
    PLACEMENT,
    Clock,
    allocations,
    assert_nothing_left,
    config_of,
    domain_spec,
    networks,
    only,
    order,
    placement,
    ports,
    provider_uuid,
    usages,
)
from tests.unit.contract_domain_agent import AgentMaker, DomainAgentContract
from wim.memory import MemoryWimDriver

pytestmark = pytest.mark.openstack


@pytest.fixture
async def agent(spec: dict[str, Any]) -> AsyncIterator[OpenStackDomainAgent]:
    a = OpenStackDomainAgent(config_of(spec))
    yield a
    await a.close()


# --- the contract --------------------------------------------------------------------------------


class TestOpenStackAgentContract(DomainAgentContract):
    _admin: openstack.connection.Connection | None = None

    async def in_service(self, agent: DomainAgent, handle: str) -> bool | None:
        """Whether Neutron has the segment's network up (a network that is gone is not in service)."""
        if self._admin is None:
            return None
        net = await asyncio.to_thread(self._admin.network.find_network, Made.from_handle(handle).network_id)
        return bool(net is not None and net.is_admin_state_up)

    @pytest.fixture
    def make_agent(self, spec: dict[str, Any], vni_block: int, admin: openstack.connection.Connection) -> AgentMaker:
        self._admin = admin
        cfg = config_of(spec)

        def build() -> DomainAgent:
            return OpenStackDomainAgent(cfg)

        return AgentMaker(
            build=build,
            endpoint=TerminalId(f"{cfg.id}.ep"),
            port=TerminalId(f"{cfg.id}.to-X"),
            port_labels=LabelSet.of([LabelRange(vni_block, vni_block + 49)]),
            max_mbps=1000,  # the PoPs' CUSTOM_FED_BANDWIDTH_MBPS inventory
        )


# --- capacity ------------------------------------------------------------------------------------


async def test_note_is_built_from_placement_inventories_and_follows_their_changes(
    agent: OpenStackDomainAgent, admin: openstack.connection.Connection, sp: str
) -> None:
    stream = agent.notes()
    first = await anext(stream)
    transit = {frozenset((str(t.a), str(t.b))): t for t in first.transit if not t.functions}
    assert transit[frozenset((f"{sp}.ep", f"{sp}.to-X"))].bandwidth_mbps == 1000
    assert transit[frozenset((f"{sp}.ep", f"{sp}.to-X"))].latency_ms == 2.0
    assert [(f.type, f.site, f.slots) for f in first.functions] == [("firewall", "core", 2)]

    grant = await agent.reserve(order(sp, mbps=300, chain=("firewall",)))
    second = await asyncio.wait_for(anext(stream), timeout=10)
    transit = {frozenset((str(t.a), str(t.b))): t for t in second.transit if not t.functions}
    assert second.version > first.version
    assert transit[frozenset((f"{sp}.ep", f"{sp}.to-X"))].bandwidth_mbps == 700
    assert [f.slots for f in second.functions] == [1]
    port = second.port(f"{sp}.to-X")
    assert port is not None and grant.labels[TerminalId(f"{sp}.to-X")] not in port.labels

    # The operator shrinks the core PoP's VCPU behind the broker's back: the note follows on its own.
    rp = provider_uuid(admin, f"{sp}-core")
    inv = placement(admin, f"/resource_providers/{rp}/inventories")
    body = {
        "resource_provider_generation": inv["resource_provider_generation"],
        "inventories": {**inv["inventories"], "VCPU": {"total": 2}},
    }
    resp = admin.session.put(
        f"/resource_providers/{rp}/inventories", json=body, endpoint_filter=PLACEMENT, microversion="1.38"
    )
    assert resp.status_code == 200
    third = await asyncio.wait_for(anext(stream), timeout=10)
    assert [f.slots for f in third.functions] == [0]  # 2 VCPU, all held by the firewall
    await stream.aclose()  # type: ignore[attr-defined]
    await agent.terminate(grant.handle)


async def test_a_chain_is_routed_through_its_function_pop_costed_so_and_published_as_reserved(
    agent: OpenStackDomainAgent, admin: openstack.connection.Connection, sp: str
) -> None:
    # ep2 and the port both sit at edge (0 ms apart); the firewall is at core, 2 ms away: through it, 4 ms.
    note = await anext(agent.notes())
    routed = [t for t in note.transit if {str(t.a), str(t.b)} == {f"{sp}.ep2", f"{sp}.to-X"} and t.functions]
    assert {t.functions: t.latency_ms for t in routed} == {("firewall",): 4.0, ("firewall", "firewall"): 4.0}
    assert all(f.routed for f in note.functions)
    with pytest.raises(ResourceExhausted, match="takes 4 ms, over the budget of 3 ms"):
        await agent.reserve(order(sp, "tight", src=f"{sp}.ep2", chain=("firewall",), latency_budget_ms=3.0))
    grant = await agent.reserve(order(sp, "fits", src=f"{sp}.ep2", chain=("firewall",), latency_budget_ms=4.0))
    consumer = consumer_id(sp, "fits")
    held = {rp: res for rp, res in placement(admin, f"/allocations/{consumer}")["allocations"].items()}
    assert provider_uuid(admin, f"{sp}-core") in held  # the walk passed core, where the firewall runs
    assert held[provider_uuid(admin, f"{sp}-core")]["resources"][FUNCTION_SLOTS] == 1
    await agent.terminate(grant.handle)


# --- reserve, commit, activate, abort, terminate ------------------------------------------------------


async def test_reserve_makes_tagged_network_subnet_ports_and_one_consumer_of_allocations(
    agent: OpenStackDomainAgent, admin: openstack.connection.Connection, sp: str, vni_block: int
) -> None:
    grant = await agent.reserve(order(sp, mbps=100, chain=("firewall",), constraints=only(sp, vni_block + 7)))
    assert grant.labels == {f"{sp}.to-X": vni_block + 7}
    consumer = consumer_id(sp, "k1")

    (net,) = networks(admin, sp)
    assert net.provider_network_type == "vxlan" and net.provider_segmentation_id == vni_block + 7
    assert reservation_tag(consumer) in net.tags and COMMITTED_TAG not in net.tags
    assert net.is_admin_state_up is False
    (subnet,) = admin.network.subnets(network_id=net.id)
    assert subnet.cidr == "10.77.0.0/24" and subnet.gateway_ip is None
    by_name = {p.name.rsplit(":", 1)[1]: p for p in ports(admin, sp)}
    assert set(by_name) == {f"{sp}.ep", f"{sp}.to-X"}
    assert [ip["ip_address"] for ip in by_name[f"{sp}.ep"].fixed_ips] == [grant.addresses[f"{sp}.ep"].split("/")[0]]
    assert by_name[f"{sp}.to-X"].fixed_ips == []

    allocs = allocations(admin, consumer)
    core, edge = provider_uuid(admin, f"{sp}-core"), provider_uuid(admin, f"{sp}-edge")
    assert allocs[core]["resources"] == {BANDWIDTH: 100, FUNCTION_SLOTS: 1, "VCPU": 2, "MEMORY_MB": 1024}
    assert allocs[edge]["resources"] == {BANDWIDTH: 100}

    await agent.commit(grant.handle)
    assert COMMITTED_TAG in admin.network.get_network(net.id).tags
    await agent.activate(grant.handle)
    assert admin.network.get_network(net.id).is_admin_state_up is True
    await agent.terminate(grant.handle)
    assert_nothing_left(admin, sp)
    assert allocations(admin, consumer) == {}


async def test_abort_of_a_held_segment_deletes_everything_tagged_and_its_allocations(
    agent: OpenStackDomainAgent, admin: openstack.connection.Connection, sp: str
) -> None:
    grant = await agent.reserve(order(sp, src=f"{sp}.ep", dst=f"{sp}.ep2"))
    assert len(networks(admin, sp)) == 1 and usages(admin, sp)["core"] == {BANDWIDTH: 10}
    await agent.abort(grant.handle)
    assert_nothing_left(admin, sp)


async def test_hold_expiry_in_the_broker_core_leaves_nothing_in_openstack(
    spec: dict[str, Any], admin: openstack.connection.Connection, sp: str, tmp_path: Path
) -> None:
    clock = Clock()
    agent = OpenStackDomainAgent(config_of(spec), clock)
    notes = {SpId(sp): await anext(agent.notes())}
    manager = SliceManager(
        sp_id="P",
        store=SqliteStore(tmp_path / "state.db"),
        agents={sp: agent},
        local_domains=[sp],
        wim=MemoryWimDriver(),
        notes=lambda: notes,
        clock=clock,
        default_hold_s=30,
    )
    request = SliceRequest(src=TerminalId(f"{sp}.ep"), dst=TerminalId(f"{sp}.to-X"), bandwidth_mbps=50)
    rec = await manager.reserve("tester", "r1", request, hold_time_s=30)
    assert rec.state is SliceState.HELD
    assert len(networks(admin, sp)) == 1 and usages(admin, sp)["edge"] == {BANDWIDTH: 50}
    clock.now += 31
    assert await manager.expire_due() == [rec.id]
    assert manager.get(rec.id).state is SliceState.EXPIRED
    assert_nothing_left(admin, sp)
    assert agent.usage().bandwidth_mbps == 0
    await agent.close()


async def test_restore_after_a_restart_finds_the_network_by_tag_and_terminate_deletes_it(
    spec: dict[str, Any], admin: openstack.connection.Connection, sp: str
) -> None:
    first = OpenStackDomainAgent(config_of(spec))
    grant = await first.reserve(order(sp))
    await first.close()  # the broker stops; OpenStack keeps the holding

    second = OpenStackDomainAgent(config_of(spec))
    await second.restore(grant.handle, committed=True)  # it was committed before the restart
    (net,) = networks(admin, sp)
    assert COMMITTED_TAG in net.tags  # the commit that the restart interrupted is completed
    assert second.state_of(grant.handle) is SliceState.COMMITTED and second.usage().bandwidth_mbps == 10
    await second.terminate(grant.handle)
    assert_nothing_left(admin, sp)
    await second.close()


# --- conflicts -----------------------------------------------------------------------------------


async def test_placement_capacity_exhausted_is_resource_exhausted_and_leaves_no_network(
    agent: OpenStackDomainAgent, admin: openstack.connection.Connection, sp: str
) -> None:
    await agent.reserve(order(sp, "a", mbps=600))
    with pytest.raises(ResourceExhausted) as info:
        await agent.reserve(order(sp, "b", mbps=600))
    assert info.value.domain == sp
    assert "Placement" in str(info.value) and BANDWIDTH in str(info.value)
    assert len(networks(admin, sp)) == 1  # only a's
    assert allocations(admin, consumer_id(sp, "b")) == {}
    assert usages(admin, sp)["edge"] == {BANDWIDTH: 600}


async def test_function_capacity_exhausted_in_placement_is_resource_exhausted(
    agent: OpenStackDomainAgent, admin: openstack.connection.Connection, sp: str
) -> None:
    await agent.reserve(order(sp, "a", chain=("firewall", "firewall")))
    with pytest.raises(ResourceExhausted, match="no free 'firewall' function slot"):
        await agent.reserve(order(sp, "b", chain=("firewall",)))
    assert len(networks(admin, sp)) == 1
    assert usages(admin, sp)["core"][FUNCTION_SLOTS] == 2


async def test_a_vni_taken_in_neutron_since_the_last_scan_is_skipped_or_refused_naming_it(
    agent: OpenStackDomainAgent, admin: openstack.connection.Connection, sp: str, vni_block: int
) -> None:
    await anext(agent.notes())  # the agent has scanned Neutron's VNIs
    taken = vni_block + 3
    foreign = admin.network.create_network(
        name="someone-else", provider_network_type="vxlan", provider_segmentation_id=taken
    )
    try:
        with pytest.raises(ResourceExhausted) as info:
            await agent.reserve(order(sp, "a", constraints=only(sp, taken)))
        assert f"VNI {taken} is in use in Neutron" in str(info.value) and info.value.domain == sp
        assert networks(admin, sp) == [] and allocations(admin, consumer_id(sp, "a")) == {}

        grant = await agent.reserve(order(sp, "b", constraints=only(sp, taken, taken + 1, preferred=taken)))
        assert grant.labels == {f"{sp}.to-X": taken + 1}
        (net,) = networks(admin, sp)
        assert net.provider_segmentation_id == taken + 1
    finally:
        admin.network.delete_network(foreign)


async def test_ip_pool_exhausted_is_resource_exhausted_naming_the_subnet_and_leaves_nothing(
    agent: OpenStackDomainAgent, admin: openstack.connection.Connection, sp: str
) -> None:
    # A /32 holds one address; a segment between two endpoints needs two.
    with pytest.raises(ResourceExhausted, match=r"no free address left in subnet 10\.9\.9\.9/32") as info:
        await agent.reserve(order(sp, src=f"{sp}.ep", dst=f"{sp}.ep2", subnet="10.9.9.9/32"))
    assert info.value.domain == sp
    assert_nothing_left(admin, sp)


async def test_placement_generation_conflict_is_retryable_and_leaves_the_other_writer_alone(
    agent: OpenStackDomainAgent, admin: openstack.connection.Connection, sp: str
) -> None:
    await anext(agent.notes())
    consumer = consumer_id(sp, "k1")
    edge = provider_uuid(admin, f"{sp}-edge")
    body = {
        "allocations": {edge: {"resources": {BANDWIDTH: 1}}},
        "project_id": admin.current_project_id,
        "user_id": admin.current_user_id,
        "consumer_generation": None,
        "consumer_type": "OTHER",
    }
    resp = admin.session.put(f"/allocations/{consumer}", json=body, endpoint_filter=PLACEMENT, microversion="1.38")
    assert resp.status_code == 204  # another writer got to the consumer first
    with pytest.raises(Unavailable, match="generation conflict") as info:
        await agent.reserve(order(sp))
    assert info.value.retryable and info.value.domain == sp
    assert networks(admin, sp) == [] and ports(admin, sp) == []
    assert {rp: a["resources"] for rp, a in allocations(admin, consumer).items()} == {edge: {BANDWIDTH: 1}}


# --- credentials ---------------------------------------------------------------------------------


async def test_a_wrong_password_is_unauthenticated_naming_the_setting(
    loopback_cloud: CloudInfo, sp: str, vni_block: int
) -> None:
    auth = {**loopback_cloud.auth(), "password": "wrong"}
    spec = domain_spec(loopback_cloud, sp, vni_block)
    del spec["cloud"], spec["clouds_file"]
    bad = OpenStackDomainAgent(config_of({**spec, "auth": auth}))
    with pytest.raises(Unauthenticated) as info:
        await bad.connect()
    assert info.value.field == "domains[0].auth" and "Keystone refused" in str(info.value)


async def test_password_auth_inline_works(loopback_cloud: CloudInfo, sp: str, vni_block: int) -> None:
    spec = domain_spec(loopback_cloud, sp, vni_block)
    del spec["cloud"], spec["clouds_file"]
    good = OpenStackDomainAgent(config_of({**spec, "auth": loopback_cloud.auth()}))
    note = await anext(good.notes())
    assert note.sp_id == sp
    await good.close()


async def test_an_unknown_cloud_name_is_invalid_argument_naming_the_setting(
    loopback_cloud: CloudInfo, sp: str, vni_block: int
) -> None:
    spec = domain_spec(loopback_cloud, sp, vni_block, cloud="no-such-cloud")
    with pytest.raises(InvalidArgument) as info:
        await OpenStackDomainAgent(config_of(spec)).connect()
    assert info.value.field == "domains[0].cloud"


async def test_a_pop_without_a_provider_is_not_found_naming_the_pop(
    loopback_cloud: CloudInfo, sp: str, vni_block: int
) -> None:
    spec = domain_spec(loopback_cloud, sp, vni_block)
    spec["pops"][1] = {"name": "edge", "resource_provider": f"{sp}-missing"}
    with pytest.raises(FedError, match=r"domains\[0\]\.pops\[1\]\.resource_provider") as info:
        await OpenStackDomainAgent(config_of(spec)).connect()
    assert info.value.code.value == "NOT_FOUND"


async def test_sweep_removes_an_uncommitted_reservation_nobody_holds_once_its_hold_is_long_past(
    spec: dict[str, Any], admin: openstack.connection.Connection, sp: str
) -> None:
    crashed = OpenStackDomainAgent(config_of(spec))
    orphan = await crashed.reserve(order(sp, "orphan"))  # the broker dies before persisting the handle
    kept = await crashed.reserve(order(sp, "kept"))
    await crashed.commit(kept.handle)
    await crashed.close()

    clock = Clock()
    later = OpenStackDomainAgent(config_of(spec), clock)
    assert await later.sweep() == []  # within its hold: it may still be persisted and restored
    clock.now += 30 + 61
    assert await later.sweep() == [consumer_id(sp, "orphan")]
    (net,) = networks(admin, sp)
    assert reservation_tag(consumer_id(sp, "kept")) in net.tags  # committed: never swept
    assert allocations(admin, consumer_id(sp, "orphan")) == {}
    assert orphan.handle != kept.handle
    await later.terminate(kept.handle)
    assert_nothing_left(admin, sp)
    await later.close()


async def test_the_same_order_twice_at_once_makes_one_segment_and_gives_one_grant(
    agent: OpenStackDomainAgent, admin: openstack.connection.Connection, sp: str
) -> None:
    first, second = await asyncio.gather(agent.reserve(order(sp)), agent.reserve(order(sp)))
    assert first == second
    assert len(networks(admin, sp)) == 1 and len(allocations(admin, consumer_id(sp, "k1"))) == 2
    await agent.abort(first.handle)
    assert_nothing_left(admin, sp)


# --- health (issue 14) ---------------------------------------------------------------------------


async def test_neutron_network_and_port_status_reach_health_as_link_state_when_it_changes(
    spec: dict[str, Any], admin: openstack.connection.Connection, sp: str
) -> None:
    """A network set admin down out of band, then a terminal's port deleted: link_up 0 each time, and 1 when
    the network is back; a healthy segment says nothing (presumed up)."""
    agent = OpenStackDomainAgent(config_of(spec), health_interval_s=0.2)
    seen: list[HealthSample] = []

    async def read() -> None:
        async for s in agent.health():
            seen.append(s)

    async def next_link(up: float, within_s: float = 10.0) -> HealthSample:
        for _ in range(int(within_s / 0.05)):
            if seen and seen[-1].metric == "link_up" and seen[-1].value == up:
                return seen[-1]
            await asyncio.sleep(0.05)
        raise AssertionError(f"no link_up {up} within {within_s} s: {seen}")

    reader = asyncio.get_running_loop().create_task(read())
    try:
        grant = await agent.reserve(order(sp))
        await agent.commit(grant.handle)
        await agent.activate(grant.handle)
        await asyncio.sleep(1.0)  # a few healthy rounds
        assert seen == []
        (net,) = networks(admin, sp)
        await asyncio.to_thread(admin.network.update_network, net.id, admin_state_up=False)
        down = await next_link(0.0)
        assert down.handle == grant.handle
        await asyncio.to_thread(admin.network.update_network, net.id, admin_state_up=True)
        await next_link(1.0)
        (ep,) = [p for p in ports(admin, sp) if p.name.endswith(f":{sp}.ep")]
        await asyncio.to_thread(admin.network.delete_port, ep)
        await next_link(0.0)
        assert [s.value for s in seen] == [0.0, 1.0, 0.0]  # one sample per change
        await agent.terminate(grant.handle)
        assert_nothing_left(admin, sp)
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        await agent.close()

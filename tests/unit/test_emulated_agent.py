"""The emulated domain agent: the DomainAgent contract, config validation, routing, slots, addresses, knobs."""

from __future__ import annotations

import asyncio
import copy
import ipaddress
import json
import random
import re
import time
from typing import Any

import pytest

from capability_catalog.model import LabelRange, LabelSet, LabelType, TerminalId, Transit
from domain_agents.base import DomainAgent, SegmentOrder
from domain_agents.emulated import EmulatedDomainAgent, EmulatedDomainConfig
from domain_agents.emulated_books import Allocation, Books, host_span
from slicing.errors import AlreadyExists, InvalidArgument, NotFound, ResourceExhausted, Unavailable
from slicing.model import PortConstraint, SliceRequest, SliceState
from tests.unit.contract_domain_agent import AgentMaker, DomainAgentContract


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def triangle() -> dict[str, Any]:
    """ams–fra direct (5 ms, 100 Mbit/s) or around through par (10 + 10 ms, 1000 Mbit/s)."""
    return {
        "id": "L1",
        "type": "emulated",
        "note_ttl_s": 600,
        "pops": ["ams", "fra", "par"],
        "links": [
            {"a": "ams", "b": "fra", "bandwidth_mbps": 100, "latency_ms": 5},
            {"a": "ams", "b": "par", "bandwidth_mbps": 1000, "latency_ms": 10},
            {"a": "par", "b": "fra", "bandwidth_mbps": 1000, "latency_ms": 10},
        ],
        "endpoints": [
            {"id": "L1.ams", "pop": "ams", "region": "nl", "capacity_mbps": 10_000},
            {"id": "L1.ams2", "pop": "ams", "capacity_mbps": 40},
            {"id": "L1.par", "pop": "par", "capacity_mbps": 1000},
        ],
        "ports": [
            {
                "id": "L1.to-L2",
                "pop": "fra",
                "peer_sp": "L2",
                "peer_port": "L2.to-L1",
                "label_type": "vxlan-vni",
                "labels": ["1000-1999", 2500],
                "can_swap": False,
                "capacity_mbps": 800,
            }
        ],
        "functions": [
            {"pop": "fra", "type": "firewall", "slots": 1},
            {"pop": "par", "type": "firewall", "slots": 1},
            {"pop": "par", "type": "dpi", "slots": 1},
        ],
    }


def config(d: dict[str, Any] | None = None) -> EmulatedDomainConfig:
    return EmulatedDomainConfig.from_dict(d or triangle(), "domains[0]")


def agent(clock: Clock | None = None, **knobs: Any) -> EmulatedDomainAgent:
    return EmulatedDomainAgent(config(), clock or Clock(), **knobs)


def order(
    key: str = "k1",
    src: str = "L1.ams",
    dst: str = "L1.to-L2",
    mbps: int = 10,
    *,
    chain: tuple[str, ...] = (),
    subnet: str = "10.1.0.0/24",
    latency_budget_ms: float | None = None,
    constraints: tuple[PortConstraint, ...] = (),
    hold_time_s: float = 30,
) -> SegmentOrder:
    request = SliceRequest(
        src=TerminalId(src),
        dst=TerminalId(dst),
        bandwidth_mbps=mbps,
        chain=chain,
        subnet=subnet,
        latency_budget_ms=latency_budget_ms,
        port_constraints=constraints,
    )
    return SegmentOrder(key=key, request=request, hold_time_s=hold_time_s)


def held(handle: str) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(handle)
    return parsed


class TestEmulatedAgentContract(DomainAgentContract):
    async def in_service(self, agent: DomainAgent, handle: str) -> bool | None:
        assert isinstance(agent, EmulatedDomainAgent)
        try:
            return agent.state_of(handle) is SliceState.ACTIVE
        except NotFound:
            return False

    @pytest.fixture
    def make_agent(self) -> AgentMaker:
        cfg = config()
        clock = Clock()

        def build() -> DomainAgent:
            return EmulatedDomainAgent(cfg, clock)

        return AgentMaker(
            build=build,
            endpoint=TerminalId("L1.ams"),
            port=TerminalId("L1.to-L2"),
            port_labels=LabelSet.of([LabelRange(1000, 1999), LabelRange(2500, 2500)]),
            max_mbps=800,
        )


# --- configuration -----------------------------------------------------------------------------


def test_config_reads_every_documented_field() -> None:
    cfg = config()
    assert cfg.id == "L1" and cfg.pops == ("ams", "fra", "par") and cfg.note_ttl_s == 600
    assert cfg.links[0].key == ("ams", "fra") and cfg.links[0].latency_ms == 5
    assert cfg.endpoints[0].endpoint.region == "nl" and cfg.endpoints[1].endpoint.region == ""
    port = cfg.ports[0]
    assert port.pop == "fra" and port.port.label_type is LabelType.VXLAN_VNI and not port.port.can_swap
    assert port.port.labels == LabelSet.of([LabelRange(1000, 1999), LabelRange(2500, 2500)])
    assert cfg.pop_of("L1.to-L2") == "fra" and cfg.pop_of("nowhere") is None


def test_config_defaults_note_ttl_label_type_and_optional_lists() -> None:
    d = {"id": "X", "pops": ["p"], "ports": [copy.deepcopy(triangle()["ports"][0])]}
    d["ports"][0]["pop"] = "p"
    del d["ports"][0]["label_type"]
    del d["ports"][0]["can_swap"]
    cfg = EmulatedDomainConfig.from_dict(d, "")
    assert cfg.note_ttl_s == 3600 and cfg.links == () and cfg.functions == ()
    assert cfg.ports[0].port.label_type is LabelType.VXLAN_VNI


def _set(d: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    for step in path[:-1]:
        d = d[step]
    if value is _DELETE:
        del d[path[-1]]
    else:
        d[path[-1]] = value


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "field", "reason"),
    [
        (("links", 2, "bandwidth_mbps"), 0, "domains[0].links[2].bandwidth_mbps", "positive integer"),
        (("links", 2, "bandwidth_mbps"), True, "domains[0].links[2].bandwidth_mbps", "positive integer"),
        (("links", 1, "latency_ms"), -1, "domains[0].links[1].latency_ms", "non-negative"),
        (("links", 0, "b"), "ams", "domains[0].links[0].b", "two different pops"),
        (
            ("links", 2),
            {"a": "fra", "b": "ams", "bandwidth_mbps": 1, "latency_ms": 1},
            "domains[0].links[2]",
            "duplicates links[0]",
        ),
        (("links", 0, "colour"), "red", "domains[0].links[0].colour", "unknown key"),
        (("endpoints", 0, "pop"), "ber", "domains[0].endpoints[0].pop", "unknown pop 'ber'"),
        (("endpoints", 1, "capacity_mbps"), _DELETE, "domains[0].endpoints[1].capacity_mbps", "positive integer"),
        (("endpoints", 2, "id"), "L1.to-L2", "domains[0].ports[0].id", "used twice"),
        (("ports", 0, "labels"), ["1000-1999", 0], "domains[0].ports[0].labels[1]", "within 1-16777215"),
        (("ports", 0, "labels"), ["1999-1000"], "domains[0].ports[0].labels[0]", "ends before it starts"),
        (("ports", 0, "labels"), ["ten"], "domains[0].ports[0].labels[0]", "'first-last' range"),
        (("ports", 0, "labels"), [], "domains[0].ports[0].labels", "non-empty list"),
        (("ports", 0, "labels"), [20_000_000], "domains[0].ports[0].labels[0]", "vxlan-vni labels must lie within"),
        (("ports", 0, "label_type"), "qinq", "domains[0].ports[0].label_type", "unknown label type"),
        (("ports", 0, "can_swap"), "yes", "domains[0].ports[0].can_swap", "true or false"),
        (("ports", 0, "peer_sp"), _DELETE, "domains[0].ports[0].peer_sp", "non-empty string"),
        (("functions", 0, "slots"), 0, "domains[0].functions[0].slots", "positive integer"),
        (("functions", 2, "type"), "firewall", "domains[0].functions[2]", "duplicates functions[1]"),
        (("pops",), ["ams", "fra", "ams"], "domains[0].pops[2]", "listed twice"),
        (("pops",), [], "domains[0].pops", "non-empty list"),
        (("type",), "netns", "domains[0].type", "must be 'emulated'"),
        (("note_ttl_s",), 0, "domains[0].note_ttl_s", "positive number"),
        (("id",), "", "domains[0].id", "non-empty string"),
        (("links",), "ams-fra", "domains[0].links", "must be a list"),
        (("extra",), 1, "domains[0].extra", "unknown key"),
    ],
)
def test_config_error_names_the_exact_field_path(path: tuple[Any, ...], value: Any, field: str, reason: str) -> None:
    d = triangle()
    _set(d, path, value)
    with pytest.raises(InvalidArgument, match=re.escape(reason)) as info:
        EmulatedDomainConfig.from_dict(d, "domains[0]")
    assert info.value.field == field


def test_config_checks_labels_against_the_limits_of_the_port_label_type() -> None:
    d = triangle()
    d["ports"][0].update(label_type="vlan", labels=[100, "4000-4095"])
    with pytest.raises(InvalidArgument, match=re.escape("vlan labels must lie within 1-4094")) as info:
        EmulatedDomainConfig.from_dict(d, "domains[0]")
    assert info.value.field == "domains[0].ports[0].labels[1]"


def test_config_that_is_not_a_mapping_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="must be a mapping") as info:
        EmulatedDomainConfig.from_dict(["id", "L1"], "domains[3]")  # type: ignore[arg-type]
    assert info.value.field == "domains[3]"


# --- notes -------------------------------------------------------------------------------------


def test_note_transit_takes_min_latency_paths_capped_by_links_and_terminals() -> None:
    clock = Clock()
    note = agent(clock).note
    assert note.sp_id == "L1" and note.version == int(clock.now * 1000)
    assert note.issued_at == clock.now and note.expires_at == clock.now + 600
    transit: dict[frozenset[str], Transit] = {
        frozenset((str(t.a), str(t.b))): t for t in note.transit if not t.functions
    }
    assert len(transit) == 6  # every unordered pair of 4 terminals
    to_port = transit[frozenset(("L1.ams", "L1.to-L2"))]
    assert (to_port.latency_ms, to_port.bandwidth_mbps) == (5.0, 100)  # the direct link is the bottleneck
    par_port = transit[frozenset(("L1.par", "L1.to-L2"))]
    assert (par_port.latency_ms, par_port.bandwidth_mbps) == (10.0, 800)  # capped by the port
    same_pop = transit[frozenset(("L1.ams", "L1.ams2"))]
    assert (same_pop.latency_ms, same_pop.bandwidth_mbps) == (0.0, 40)
    assert {(f.type, f.site, f.slots) for f in note.functions} == {
        ("firewall", "fra", 1),
        ("firewall", "par", 1),
        ("dpi", "par", 1),
    }


def test_note_leaves_out_transit_between_disconnected_pops() -> None:
    d = triangle()
    d["pops"].append("island")
    d["endpoints"].append({"id": "L1.island", "pop": "island", "capacity_mbps": 10})
    note = EmulatedDomainAgent(config(d), Clock()).note
    assert not any("L1.island" in (t.a, t.b) for t in note.transit)
    assert "L1.island" in note.terminals()


async def test_notes_yields_a_new_version_on_republish_and_stops_when_cancelled() -> None:
    clock = Clock()
    a = agent(clock)
    seen: list[int] = []
    got_two = asyncio.Event()

    async def follow() -> None:
        async for note in a.notes():
            seen.append(note.version)
            if len(seen) == 2:
                got_two.set()

    task = asyncio.create_task(follow())
    await asyncio.sleep(0)
    assert seen == [a.note.version]
    republished = a.republish()  # same clock reading: the version still goes up
    await asyncio.wait_for(got_two.wait(), 1)
    assert seen == [seen[0], seen[0] + 1] and republished.version == seen[1]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_notes_subscriber_that_lags_gets_the_latest_note() -> None:
    a = agent()
    stream = a.notes()
    first = await anext(stream)
    a.republish()
    latest = a.republish()
    assert await anext(stream) == latest and latest.version > first.version
    await stream.aclose()  # type: ignore[attr-defined]


# --- reserving -----------------------------------------------------------------------------------


async def test_reserve_takes_the_min_latency_path_and_routes_around_a_full_link() -> None:
    a = agent()
    direct = await a.reserve(order("a", mbps=80))
    around = await a.reserve(order("b", mbps=50))  # only 20 Mbit/s left on ams–fra
    assert [(x["a"], x["b"]) for x in held(direct.handle)["links"]] == [("ams", "fra")]
    assert {(x["a"], x["b"]) for x in held(around.handle)["links"]} == {("ams", "par"), ("fra", "par")}
    assert a.usage().bandwidth_mbps == 130


async def test_reserve_with_no_path_of_enough_free_bandwidth_is_refused_naming_domain_and_bandwidth() -> None:
    a = agent()
    await a.reserve(order("a", dst="L1.par", mbps=950))  # ams–par keeps 50 Mbit/s
    await a.reserve(order("b", mbps=90))  # ams–fra keeps 10 Mbit/s
    before = a.usage()
    with pytest.raises(
        ResourceExhausted, match=r"no path from L1\.ams \(ams\) .* in domain L1 with 60 Mbit/s free"
    ) as info:
        await a.reserve(order("c", mbps=60))
    assert info.value.domain == "L1" and a.usage() == before


async def test_reserve_refuses_a_detour_over_the_latency_budget() -> None:
    a = agent()
    await a.reserve(order("a", mbps=90))
    with pytest.raises(ResourceExhausted, match="takes 20 ms, over the budget of 8 ms"):
        await a.reserve(order("b", mbps=50, latency_budget_ms=8))
    within = await a.reserve(order("c", mbps=50, latency_budget_ms=20))
    assert len(held(within.handle)["links"]) == 2


async def test_reserve_beyond_a_terminal_capacity_is_refused_naming_the_terminal() -> None:
    a = agent()
    await a.reserve(order("a", src="L1.ams2", dst="L1.par", mbps=30))
    with pytest.raises(ResourceExhausted, match=r"L1\.ams2: 10 of 40 Mbit/s free, 11 Mbit/s asked"):
        await a.reserve(order("b", src="L1.ams2", dst="L1.to-L2", mbps=11))


async def test_terminals_at_the_same_pop_hold_no_link() -> None:
    a = agent()
    grant = await a.reserve(order(src="L1.ams", dst="L1.ams2", mbps=40))
    assert held(grant.handle)["links"] == []
    assert held(grant.handle)["terminals"] == {"L1.ams": 40, "L1.ams2": 40}


async def test_functions_go_to_the_first_pop_on_the_path_with_a_free_slot_else_anywhere() -> None:
    a = agent()
    first = await a.reserve(order("a", chain=("firewall",)))  # path ams–fra: fra has one
    second = await a.reserve(order("b", chain=("firewall", "dpi")))  # fra is full: par, off the path
    assert held(first.handle)["slots"] == [{"pop": "fra", "type": "firewall"}]
    assert held(second.handle)["slots"] == [{"pop": "par", "type": "firewall"}, {"pop": "par", "type": "dpi"}]
    assert a.usage().function_slots == 3


async def test_function_slot_exhaustion_is_refused_naming_the_type_and_holds_nothing() -> None:
    a = agent()
    await a.reserve(order("a", chain=("firewall", "firewall")))
    before = a.usage()
    with pytest.raises(ResourceExhausted, match="no free 'firewall' function slot in domain L1"):
        await a.reserve(order("b", chain=("dpi", "firewall")))
    with pytest.raises(ResourceExhausted, match="no free 'nat' function slot"):
        await a.reserve(order("c", chain=("nat",)))
    assert a.usage() == before
    assert (await a.reserve(order("d", chain=("dpi",)))).handle


async def test_addresses_are_the_next_free_hosts_of_the_subnet_and_come_back_on_release() -> None:
    a = agent()
    both = await a.reserve(order("a", src="L1.ams", dst="L1.par", subnet="10.5.0.0/29"))
    assert both.addresses == {"L1.ams": "10.5.0.1/29", "L1.par": "10.5.0.2/29"}
    other = await a.reserve(order("b", subnet="10.5.0.0/29"))
    assert other.addresses == {"L1.ams": "10.5.0.3/29"}
    await a.abort(both.handle)
    again = await a.reserve(order("c", subnet="10.5.0.0/29"))
    assert again.addresses == {"L1.ams": "10.5.0.1/29"}
    assert a.usage().addresses == 2


async def test_a_subnet_without_free_hosts_is_refused() -> None:
    a = agent()
    await a.reserve(order("a", src="L1.ams", dst="L1.par", subnet="10.6.0.0/30"))
    with pytest.raises(ResourceExhausted, match=r"no free address left in subnet 10\.6\.0\.0/30"):
        await a.reserve(order("b", subnet="10.6.0.0/30"))


async def test_port_terminal_without_constraint_gets_the_lowest_free_label() -> None:
    a = agent()
    grants = [await a.reserve(order(f"k{i}")) for i in range(3)]
    assert [g.labels[TerminalId("L1.to-L2")] for g in grants] == [1000, 1001, 1002]
    assert a.usage().labels == 3


async def test_constraint_that_misses_the_port_labels_is_refused_naming_the_port_and_sets() -> None:
    a = agent()
    far = PortConstraint(TerminalId("L1.to-L2"), LabelSet.single(3000), preferred=3000)
    with pytest.raises(ResourceExhausted, match=r"no free label on port L1\.to-L2 within \{\} \(port 1000-1999,2500"):
        await a.reserve(order(constraints=(far,)))
    assert a.usage().labels == 0


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"src": "L9.ep"}, "request.src"),
        ({"dst": "L9.ep"}, "request.dst"),
        ({"dst": "L1.ams"}, "request.dst"),
        ({"mbps": 0}, "request.bandwidth_mbps"),
        ({"subnet": "10.0.0.1/24"}, "request.subnet"),
        ({"hold_time_s": 0}, "hold_time_s"),
        ({"hold_time_s": -5}, "hold_time_s"),
    ],
)
async def test_malformed_order_is_invalid_argument_naming_the_field(changes: dict[str, Any], field: str) -> None:
    a = agent()
    with pytest.raises(InvalidArgument) as info:
        await a.reserve(order(**changes))
    assert info.value.field == field and info.value.domain == "L1"
    assert a.usage().bandwidth_mbps == 0


async def test_same_key_with_a_different_request_is_already_exists() -> None:
    a = agent()
    await a.reserve(order("k", mbps=10))
    with pytest.raises(AlreadyExists, match="order key 'k'"):
        await a.reserve(order("k", mbps=20))


async def test_handle_is_json_of_the_allocation() -> None:
    a = agent()
    grant = await a.reserve(order("s1.0.0", src="L1.par", chain=("dpi",), subnet="10.0.0.0/24"))
    assert held(grant.handle) == {
        "v": 1,
        "domain": "L1",
        "key": "s1.0.0",
        "bandwidth_mbps": 10,
        "links": [{"a": "fra", "b": "par", "mbps": 10}],
        "terminals": {"L1.par": 10, "L1.to-L2": 10},
        "slots": [{"pop": "par", "type": "dpi"}],
        "labels": {"L1.to-L2": 1000},
        "addresses": {"L1.par": "10.0.0.1/24"},
    }


async def test_commit_and_activate_record_state_and_need_a_held_handle() -> None:
    a = agent()
    grant = await a.reserve(order())
    assert a.state_of(grant.handle) is SliceState.HELD
    await a.commit(grant.handle)
    assert a.state_of(grant.handle) is SliceState.COMMITTED
    await a.activate(grant.handle)
    assert a.state_of(grant.handle) is SliceState.ACTIVE
    await a.terminate(grant.handle)
    with pytest.raises(NotFound):
        await a.activate(grant.handle)


async def test_restore_refuses_a_handle_of_another_domain_or_garbage() -> None:
    a = agent()
    grant = await a.reserve(order())
    foreign = json.dumps({**held(grant.handle), "domain": "L7"})
    fresh = agent()
    with pytest.raises(InvalidArgument, match="belongs to domain L7") as info:
        await fresh.restore(foreign, committed=True)
    assert info.value.field == "handle"
    with pytest.raises(InvalidArgument, match="not an emulated-domain handle"):
        await fresh.restore("{not json", committed=True)
    assert fresh.usage().bandwidth_mbps == 0


async def test_restore_twice_is_idempotent_and_sets_the_state() -> None:
    grant = await agent().reserve(order())
    fresh = agent()
    await fresh.restore(grant.handle, committed=False)
    await fresh.restore(grant.handle, committed=True)
    assert fresh.usage().bandwidth_mbps == 10 and fresh.state_of(grant.handle) is SliceState.COMMITTED


# --- knobs -------------------------------------------------------------------------------------


async def test_latency_knob_delays_every_operation() -> None:
    a = agent(latency_s=0.02)
    loop = asyncio.get_running_loop()
    start = loop.time()
    grant = await a.reserve(order())
    await a.commit(grant.handle)
    assert loop.time() - start >= 0.035


async def test_fail_at_reserve_refuses_and_holds_nothing() -> None:
    a = agent(fail_at="reserve")
    with pytest.raises(ResourceExhausted, match="injected failure at reserve") as info:
        await a.reserve(order())
    assert info.value.domain == "L1" and a.usage().bandwidth_mbps == 0


@pytest.mark.parametrize("step", ["commit", "activate"])
async def test_fail_at_commit_or_activate_is_unavailable_and_keeps_the_hold(step: str) -> None:
    a = agent(fail_at=step)
    grant = await a.reserve(order())
    if step == "activate":
        await a.commit(grant.handle)
    with pytest.raises(Unavailable, match=f"injected failure at {step}"):
        await getattr(a, step)(grant.handle)
    assert a.usage().bandwidth_mbps == 10
    await a.abort(grant.handle)
    assert a.usage().bandwidth_mbps == 0


def test_unknown_fail_step_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="fail_at"):
        agent(fail_at="terminate")


async def test_reserve_after_restore_with_the_same_key_returns_the_restored_grant() -> None:
    grant = await agent().reserve(order("k"))
    fresh = agent()
    await fresh.restore(grant.handle, committed=False)
    again = await fresh.reserve(order("k"))
    assert again.handle == grant.handle and again.labels == grant.labels and again.addresses == grant.addresses
    assert fresh.usage().bandwidth_mbps == 10


async def test_notes_are_reissued_before_they_expire() -> None:
    from domain_agents.emulated import EmulatedDomainAgent, EmulatedDomainConfig
    from tests.topology import leaf_domain

    spec = {**leaf_domain("R1", {"R2": "10-20"}), "note_ttl_s": 0.2}
    agent = EmulatedDomainAgent(EmulatedDomainConfig.from_dict(spec, "domains[0]"), time.time)
    stream = agent.notes()
    first = await anext(stream)
    second = await asyncio.wait_for(anext(stream), timeout=2)
    await stream.aclose()
    assert second.version > first.version
    assert second.issued_at < first.expires_at  # re-issued while the first was still valid


async def test_restoring_many_handles_publishes_one_note_that_shows_them_all() -> None:
    clock = Clock()
    source = agent(clock)
    grants = [
        await source.reserve(order(f"k{i}", "L1.ams", "L1.par", 100, chain=("dpi",) if i == 0 else ()))
        for i in range(3)
    ]
    fresh = agent(clock)
    before = fresh.note
    stream = fresh.notes()
    assert await anext(stream) == before
    for g in grants:
        await fresh.restore(g.handle, committed=True)
    after = await asyncio.wait_for(anext(stream), timeout=1)
    await stream.aclose()  # type: ignore[attr-defined]
    # One new version for all three restores (the clock stands still), showing what they hold.
    assert after.version == before.version + 1 and fresh.note is after
    assert {(f.site, f.type): f.slots for f in after.functions}[("par", "dpi")] == 0
    ams_par = next(t for t in after.transit if {t.a, t.b} == {"L1.ams", "L1.par"})
    assert ams_par.bandwidth_mbps == 1000 - 300


async def test_reservations_made_before_a_subscriber_reads_are_covered_by_one_note() -> None:
    clock = Clock()
    a = agent(clock)
    stream = a.notes()
    first = await anext(stream)
    grants = [await a.reserve(order(f"k{i}", "L1.ams", "L1.par", 100)) for i in range(2)]
    second = await asyncio.wait_for(anext(stream), timeout=1)
    assert second.version == first.version + 1  # one note for both, the clock standing still
    ams_par = next(t for t in second.transit if {t.a, t.b} == {"L1.ams", "L1.par"})
    assert ams_par.bandwidth_mbps == 1000 - 200
    await a.abort(grants[0].handle)
    third = await asyncio.wait_for(anext(stream), timeout=1)
    await stream.aclose()  # type: ignore[attr-defined]
    assert next(t for t in third.transit if {t.a, t.b} == {"L1.ams", "L1.par"}).bandwidth_mbps == 900


# --- routes through functions (issue 13) ------------------------------------------------------------


def line() -> dict[str, Any]:
    """ams–par direct (5.5 ms); the firewall sits at fra, 5 ms from ams and 5.5 ms from par."""
    d = triangle()
    d["links"] = [
        {"a": "ams", "b": "par", "bandwidth_mbps": 1000, "latency_ms": 5.5},
        {"a": "ams", "b": "fra", "bandwidth_mbps": 1000, "latency_ms": 5},
        {"a": "fra", "b": "par", "bandwidth_mbps": 1000, "latency_ms": 5.5},
    ]
    d["functions"] = [{"pop": "fra", "type": "firewall", "slots": 2}]
    return d


def test_note_costs_a_function_on_the_route_through_its_pop_and_marks_it_routed() -> None:
    note = EmulatedDomainAgent(config(line()), Clock()).note
    entries = {t.functions: t.latency_ms for t in note.transit if {t.a, t.b} == {"L1.ams", "L1.par"}}

    assert entries[()] == 5.5
    assert entries[("firewall",)] == 10.5  # through fra, not the direct 5.5 ms link
    assert entries[("firewall", "firewall")] == 10.5
    assert all(f.routed for f in note.functions)


async def test_reserve_routes_through_the_function_pop_and_refuses_a_budget_only_the_direct_link_meets() -> None:
    a = EmulatedDomainAgent(config(line()), Clock())
    with pytest.raises(ResourceExhausted, match="over the budget"):
        await a.reserve(order("k1", "L1.ams", "L1.par", latency_budget_ms=6.0, chain=("firewall",)))

    grant = await a.reserve(order("k2", "L1.ams", "L1.par", latency_budget_ms=10.5, chain=("firewall",)))

    held = json.loads(grant.handle)
    assert held["slots"] == [{"pop": "fra", "type": "firewall"}]
    assert sorted((x["a"], x["b"]) for x in held["links"]) == [("ams", "fra"), ("fra", "par")]


async def test_what_the_note_promises_through_a_function_is_what_a_reservation_gets() -> None:
    a = EmulatedDomainAgent(config(triangle()), Clock())
    for entry in [t for t in a.note.transit if t.functions and t.bandwidth_mbps >= 10]:
        chain = entry.functions
        k = f"{entry.a}-{entry.b}-{'-'.join(chain)}"
        grant = await a.reserve(order(k, entry.a, entry.b, mbps=10, latency_budget_ms=entry.latency_ms, chain=chain))
        await a.abort(grant.handle)
        with pytest.raises(ResourceExhausted):
            await a.reserve(
                order(k + "x", entry.a, entry.b, mbps=10, latency_budget_ms=entry.latency_ms - 0.01, chain=chain)
            )


def test_a_port_states_the_latency_of_its_link_and_the_note_carries_it() -> None:
    d = triangle()
    d["ports"][0]["latency_ms"] = 3.5
    assert EmulatedDomainAgent(config(d), Clock()).note.ports[0].latency_ms == 3.5
    for bad in (-1, float("nan"), "3"):
        d["ports"][0]["latency_ms"] = bad
        with pytest.raises(InvalidArgument, match=r"ports\[0\]\.latency_ms"):
            config(d)


@pytest.mark.parametrize(
    "subnet",
    [
        "10.0.0.0/24",
        "10.0.0.0/29",
        "10.0.0.0/30",
        "10.0.0.4/31",
        "10.0.0.7/32",
        "fd00::/120",
        "fd00::/127",
        "fd00::5/128",
    ],
)
def test_the_host_span_of_a_subnet_is_what_its_hosts_are(subnet: str) -> None:
    net = ipaddress.ip_network(subnet)
    first, end = host_span(net)
    assert [type(net.network_address)(n) for n in range(first, end)] == list(net.hosts())


@pytest.mark.parametrize("subnet", ["10.9.0.0/26", "fd00:9::/122", "10.9.0.0/30"])
def test_the_free_host_is_always_the_lowest_one_not_held_whatever_was_held_and_let_go(subnet: str) -> None:
    """Against the plain rule (the first of ``hosts()`` not held) after random holds and releases."""
    net = ipaddress.ip_network(subnet)
    rng = random.Random(subnet)
    books = Books()
    held: dict[str, Allocation] = {}
    for step in range(1500):
        skip = {str(h) for h in net.hosts() if rng.random() < 0.02}
        expected = next((str(h) for h in net.hosts() if str(h) not in books.addresses and str(h) not in skip), None)
        assert books.free_host(net, skip) == expected, step
        if held and (expected is None or rng.random() < 0.45):
            books.release(held.pop(rng.choice(sorted(held))))
        elif expected is not None:
            alloc = Allocation(
                domain="L1", key=f"k{step}", bandwidth_mbps=1, addresses=((TerminalId("L1.ep"), expected),)
            )
            books.apply(alloc)
            held[alloc.key] = alloc

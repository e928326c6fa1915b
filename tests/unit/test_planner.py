"""The planner: one request decomposed over children's notes into segments, links, labels, subnets."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from capability_catalog.model import (
    BorderPort,
    CapabilityNote,
    Endpoint,
    FunctionOffer,
    Isolation,
    LabelRange,
    LabelSet,
    QosClass,
    SpId,
    TerminalId,
    Transit,
)
from slicing.errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from slicing.model import FunctionPlacement, PortConstraint, SliceRequest
from slicing.planner import Run, link_key, plan

T = TerminalId


def labels(first: int, last: int) -> LabelSet:
    return LabelSet.of([LabelRange(first, last)])


def port(pid: str, peer: str, lab: LabelSet, *, can_swap: bool = False, mbps: int = 10_000) -> BorderPort:
    return BorderPort(T(pid), SpId(peer.split(".")[0]), T(peer), labels=lab, can_swap=can_swap, capacity_mbps=mbps)


def note(
    sp: str,
    *,
    endpoints: tuple[str, ...] = (),
    ports: tuple[BorderPort, ...] = (),
    transit: tuple[tuple[str, str, float, int], ...] = (),
    functions: tuple[tuple[str, int], ...] = (),
) -> CapabilityNote:
    return CapabilityNote(
        sp_id=SpId(sp),
        version=1,
        issued_at=0.0,
        expires_at=1e9,
        endpoints=tuple(Endpoint(T(e)) for e in endpoints),
        ports=ports,
        transit=tuple(Transit(T(a), T(b), lat, bw) for a, b, lat, bw in transit),
        functions=tuple(FunctionOffer(t, f"{sp}-site", n) for t, n in functions),
    )


def chain3(
    *,
    a_labels: LabelSet | None = None,
    b_labels: LabelSet | None = None,
    b_swap: bool = False,
    a_functions: tuple[tuple[str, int], ...] = (("fw", 1),),
    b_functions: tuple[tuple[str, int], ...] = (("nat", 1),),
    c_functions: tuple[tuple[str, int], ...] = (),
) -> dict[SpId, CapabilityNote]:
    """A.ep -2ms- A.p == B.pa -5ms- B.pc == C.p -3ms- C.ep, plus A.up, a port leaving the subtree."""
    notes = [
        note(
            "A",
            endpoints=("A.ep",),
            ports=(
                port("A.p", "B.pa", a_labels if a_labels is not None else labels(100, 199)),
                port("A.up", "U.down", labels(10, 20)),
            ),
            transit=(("A.ep", "A.p", 2.0, 1000), ("A.up", "A.p", 1.0, 1000)),
            functions=a_functions,
        ),
        note(
            "B",
            ports=(
                port("B.pa", "A.p", b_labels if b_labels is not None else labels(150, 250), can_swap=b_swap),
                port("B.pc", "C.p", labels(300, 399)),
            ),
            transit=(("B.pa", "B.pc", 5.0, 1000),),
            functions=b_functions,
        ),
        note(
            "C",
            endpoints=("C.ep",),
            ports=(port("C.p", "B.pc", labels(350, 450)),),
            transit=(("C.p", "C.ep", 3.0, 1000),),
            functions=c_functions,
        ),
    ]
    return {n.sp_id: n for n in notes}


def req(src: str = "A.ep", dst: str = "C.ep", **kw: object) -> SliceRequest:
    kw.setdefault("bandwidth_mbps", 100)
    kw.setdefault("subnet", "10.1.0.0/24")
    return SliceRequest(src=T(src), dst=T(dst), **kw)  # type: ignore[arg-type]


def test_plan_splits_three_domain_chain_into_segments_links_labels_subnets_and_shares() -> None:
    p = plan(req(name="s", latency_budget_ms=20.0, chain=("fw", "nat")), chain3())

    assert p.path == ("A.ep", "A.p", "B.pa", "B.pc", "C.p", "C.ep")
    assert p.total_latency_ms == 10.0
    assert p.domains() == ["A", "B", "C"]
    a, b, c = p.segments
    assert [(s.request.src, s.request.dst) for s in p.segments] == [("A.ep", "A.p"), ("B.pa", "B.pc"), ("C.p", "C.ep")]
    assert [s.transit_latency_ms for s in p.segments] == [2.0, 5.0, 3.0]
    # slack of 10 ms shared in proportion to each segment's latency
    assert [s.latency_share_ms for s in p.segments] == [4.0, 10.0, 6.0]
    assert [s.request.latency_budget_ms for s in p.segments] == [4.0, 10.0, 6.0]
    assert [s.request.subnet for s in p.segments] == ["10.1.0.0/26", "10.1.0.64/26", "10.1.0.128/26"]
    assert [s.request.name for s in p.segments] == ["s/0", "s/1", "s/2"]
    assert [s.request.chain for s in p.segments] == [("fw",), ("nat",), ()]
    assert all(s.request.bandwidth_mbps == 100 for s in p.segments)

    first, second = p.links
    assert (first.a_port, first.b_port, first.a_domain, first.b_domain) == ("A.p", "B.pa", "A", "B")
    assert first.candidates == labels(150, 199)
    assert first.preferred == 150
    assert (second.a_port, second.b_port) == ("B.pc", "C.p")
    assert second.candidates == labels(350, 399)
    assert second.preferred == 350

    assert a.request.port_constraints == (PortConstraint(T("A.p"), labels(150, 199), 150),)
    assert b.request.port_constraints == (
        PortConstraint(T("B.pa"), labels(150, 199), 150),
        PortConstraint(T("B.pc"), labels(350, 399), 350),
    )
    assert c.request.port_constraints == (PortConstraint(T("C.p"), labels(350, 399), 350),)


def test_plan_orients_links_along_the_path_when_travelling_backwards() -> None:
    p = plan(req("C.ep", "A.ep"), chain3())

    assert p.domains() == ["C", "B", "A"]
    assert [(ln.a_port, ln.b_port) for ln in p.links] == [("C.p", "B.pc"), ("B.pa", "A.p")]
    assert [(s.request.src, s.request.dst) for s in p.segments] == [("C.ep", "C.p"), ("B.pc", "B.pa"), ("A.p", "A.ep")]


def test_plan_gives_no_budget_below_when_the_request_has_none() -> None:
    p = plan(req(), chain3())

    assert [s.latency_share_ms for s in p.segments] == [0.0, 0.0, 0.0]
    assert [s.request.latency_budget_ms for s in p.segments] == [None, None, None]


def test_a_zero_budget_is_a_budget_not_the_absence_of_one() -> None:
    with pytest.raises(ResourceExhausted, match="latency"):
        plan(req(latency_budget_ms=0.0), chain3())


def test_plan_accepts_budget_equal_to_path_latency_and_shares_exactly_transit() -> None:
    p = plan(req(latency_budget_ms=10.0), chain3())

    assert [s.latency_share_ms for s in p.segments] == [2.0, 5.0, 3.0]


def test_plan_shares_never_sum_above_budget_with_awkward_floats() -> None:
    notes = {
        SpId("A"): note(
            "A", endpoints=("A.ep",), ports=(port("A.p", "B.p", labels(1, 9)),), transit=(("A.ep", "A.p", 0.1, 100),)
        ),
        SpId("B"): note(
            "B", endpoints=("B.ep",), ports=(port("B.p", "A.p", labels(1, 9)),), transit=(("B.p", "B.ep", 0.2, 100),)
        ),
    }
    budget = 1.0 / 3.0
    p = plan(req("A.ep", "B.ep", bandwidth_mbps=10, latency_budget_ms=budget), notes)

    shares = [s.latency_share_ms for s in p.segments]
    assert math.fsum(shares) <= budget
    assert all(s.latency_share_ms >= s.transit_latency_ms - 1e-6 for s in p.segments)
    assert all(round(x * 1e6) == pytest.approx(x * 1e6) for x in shares)


def test_plan_splits_slack_equally_when_path_has_zero_latency() -> None:
    notes = {
        SpId("A"): note(
            "A", endpoints=("A.ep",), ports=(port("A.p", "B.p", labels(1, 9)),), transit=(("A.ep", "A.p", 0.0, 100),)
        ),
        SpId("B"): note(
            "B", endpoints=("B.ep",), ports=(port("B.p", "A.p", labels(1, 9)),), transit=(("B.p", "B.ep", 0.0, 100),)
        ),
    }
    p = plan(req("A.ep", "B.ep", bandwidth_mbps=10, latency_budget_ms=3.0), notes)

    assert [s.latency_share_ms for s in p.segments] == [1.5, 1.5]


def test_plan_takes_longer_path_when_short_one_lacks_bandwidth() -> None:
    # A.ep -> C.ep via B (fast, 100 Mb/s) or via D (slow, 10 Gb/s)
    notes = {
        SpId("A"): note(
            "A",
            endpoints=("A.ep",),
            ports=(port("A.b", "B.a", labels(1, 9)), port("A.d", "D.a", labels(1, 9))),
            transit=(("A.ep", "A.b", 1.0, 10_000), ("A.ep", "A.d", 1.0, 10_000)),
        ),
        SpId("B"): note(
            "B",
            ports=(port("B.a", "A.b", labels(1, 9)), port("B.c", "C.b", labels(1, 9))),
            transit=(("B.a", "B.c", 2.0, 100),),
        ),
        SpId("D"): note(
            "D",
            ports=(port("D.a", "A.d", labels(1, 9)), port("D.c", "C.d", labels(1, 9))),
            transit=(("D.a", "D.c", 20.0, 10_000),),
        ),
        SpId("C"): note(
            "C",
            endpoints=("C.ep",),
            ports=(port("C.b", "B.c", labels(1, 9)), port("C.d", "D.c", labels(1, 9))),
            transit=(("C.b", "C.ep", 1.0, 10_000), ("C.d", "C.ep", 1.0, 10_000)),
        ),
    }

    assert plan(req(bandwidth_mbps=50), notes).domains() == ["A", "B", "C"]
    wide = plan(req(bandwidth_mbps=500), notes)
    assert wide.domains() == ["A", "D", "C"]
    assert wide.total_latency_ms == 22.0


def test_plan_skips_link_whose_port_capacity_is_below_bandwidth() -> None:
    notes = chain3()
    notes[SpId("B")] = note(
        "B",
        ports=(port("B.pa", "A.p", labels(150, 250), mbps=50), port("B.pc", "C.p", labels(300, 399))),
        transit=(("B.pa", "B.pc", 5.0, 1000),),
    )

    with pytest.raises(ResourceExhausted, match="100 Mb/s"):
        plan(req(bandwidth_mbps=100), notes)
    assert plan(req(bandwidth_mbps=50), notes).domains() == ["A", "B", "C"]


def test_plan_refuses_when_fastest_path_exceeds_latency_budget() -> None:
    with pytest.raises(ResourceExhausted) as err:
        plan(req(latency_budget_ms=9.0), chain3())

    assert "10 ms" in err.value.message
    assert "9 ms" in err.value.message


def test_plan_refuses_when_no_path_and_names_bandwidth() -> None:
    with pytest.raises(
        ResourceExhausted, match=r"^bandwidth: no route with 5000 Mb/s on every edge from A\.ep to C\.ep"
    ):
        plan(req(bandwidth_mbps=5000), chain3())


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"src": T("Z.ep")}, "request.src"),
        ({"dst": T("Z.ep")}, "request.dst"),
        ({"src": T("")}, "request.src"),
        ({"dst": T("A.ep")}, "request.dst"),
        ({"bandwidth_mbps": 0}, "request.bandwidth_mbps"),
        ({"latency_budget_ms": -1.0}, "request.latency_budget_ms"),
        ({"latency_budget_ms": math.nan}, "request.latency_budget_ms"),
        ({"subnet": "10.1.0.1/24"}, "request.subnet"),
        ({"subnet": "not-a-net"}, "request.subnet"),
        ({"subnet": "10.1.0.0"}, "request.subnet"),
        ({"chain": ("fw", "")}, "request.chain[1]"),
        ({"port_constraints": (PortConstraint(T("B.pa"), labels(1, 2)),)}, "request.port_constraints[0].port"),
    ],
)
def test_plan_refuses_malformed_request_naming_the_field(kwargs: dict[str, object], field: str) -> None:
    base = {"src": T("A.ep"), "dst": T("C.ep"), "bandwidth_mbps": 100, "subnet": "10.1.0.0/24"}
    request = SliceRequest(**{**base, **kwargs})  # type: ignore[arg-type]

    with pytest.raises(InvalidArgument) as err:
        plan(request, chain3())

    assert err.value.field == field


def test_plan_unknown_src_gives_invalid_argument_naming_request_src_and_terminal() -> None:
    with pytest.raises(InvalidArgument) as err:
        plan(req(src="Z.nowhere"), chain3())

    assert err.value.field == "request.src"
    assert "unknown terminal 'Z.nowhere'" in err.value.message


def test_plan_refuses_internal_port_as_terminal() -> None:
    with pytest.raises(InvalidArgument) as err:
        plan(req(src="A.p"), chain3())

    assert err.value.field == "request.src"
    assert "B.pa" in err.value.message


def test_plan_avoids_used_labels_and_prefers_lowest_free() -> None:
    used = {link_key("B.pa", "A.p"): {150, 151, 153}}

    p = plan(req(), chain3(), used_labels=used)

    link = p.links[0]
    assert link.preferred == 152
    assert 150 not in link.candidates and 153 not in link.candidates
    assert len(link.candidates) == 50 - 3
    assert p.segments[0].request.port_constraints[0].preferred == 152


def test_plan_refuses_when_labels_exhausted_by_used_and_excluded() -> None:
    key = link_key("A.p", "B.pa")
    used = {key: set(range(150, 180))}
    exclude = {key: set(range(180, 200))}

    assert plan(req(), chain3(), used_labels=used).links[0].preferred == 180
    with pytest.raises(ResourceExhausted, match="free label"):
        plan(req(), chain3(), used_labels=used, exclude_labels=exclude)


def test_plan_accepts_label_maps_keyed_in_either_order() -> None:
    p = plan(req(), chain3(), exclude_labels={("B.pa", "A.p"): {150}})

    assert p.links[0].preferred == 151


def test_link_key_is_order_free() -> None:
    assert link_key("b", "a") == link_key("a", "b") == ("a", "b")


def test_plan_refuses_when_no_common_label_and_no_swap() -> None:
    with pytest.raises(ResourceExhausted, match=r"^labels: no route with a free label on every inter-domain link"):
        plan(req(), chain3(b_labels=labels(500, 599)))


def test_plan_lets_swapping_side_use_its_own_labels_when_sets_are_disjoint() -> None:
    p = plan(req(), chain3(b_labels=labels(500, 599), b_swap=True))

    link = p.links[0]
    assert link.b_can_swap and not link.a_can_swap
    assert link.candidates == labels(100, 199)  # the wire carries the non-swapping side's labels
    assert link.preferred == 100
    assert p.segments[0].request.port_constraints == (PortConstraint(T("A.p"), labels(100, 199), 100),)
    assert p.segments[1].request.port_constraints[0] == PortConstraint(T("B.pa"), labels(500, 599), 500)


def test_plan_refuses_swap_link_when_swapping_side_has_no_free_label() -> None:
    notes = chain3(b_labels=labels(500, 501), b_swap=True)

    with pytest.raises(ResourceExhausted):
        plan(req(), notes, used_labels={link_key("A.p", "B.pa"): {500, 501}})


def test_plan_places_functions_in_chain_order_in_earliest_offering_segment() -> None:
    notes = chain3(a_functions=(("fw", 1),), b_functions=(("nat", 1), ("fw", 1)), c_functions=(("dpi", 2),))

    p = plan(req(chain=("fw", "fw", "dpi", "dpi")), notes)

    assert [s.request.chain for s in p.segments] == [("fw",), ("fw",), ("dpi", "dpi")]


def test_plan_refuses_function_only_offered_before_previous_placement() -> None:
    # fw is only in A, nat only in B: "nat then fw" would need to go backwards
    with pytest.raises(ResourceExhausted) as err:
        plan(req(chain=("nat", "fw")), chain3())

    assert "request.chain[1]" in err.value.message
    assert "'fw'" in err.value.message


def test_plan_refuses_function_when_slots_run_out() -> None:
    with pytest.raises(ResourceExhausted, match=r"request\.chain\[1\].*'fw'"):
        plan(req(chain=("fw", "fw")), chain3())


def test_plan_ignores_offers_with_zero_slots() -> None:
    with pytest.raises(ResourceExhausted, match=r"request\.chain\[0\]"):
        plan(req(chain=("fw",)), chain3(a_functions=(("fw", 0),)))


def test_plan_counts_function_slots_per_domain_when_domain_repeats() -> None:
    # A.ep1 -> A.x == B.x -> B.y == A.y -> A.ep2: A appears twice on the path, with one fw slot.
    notes = {
        SpId("A"): note(
            "A",
            endpoints=("A.ep1", "A.ep2"),
            ports=(port("A.x", "B.x", labels(1, 9)), port("A.y", "B.y", labels(1, 9))),
            transit=(("A.ep1", "A.x", 1.0, 100), ("A.y", "A.ep2", 1.0, 100)),
            functions=(("fw", 1),),
        ),
        SpId("B"): note(
            "B",
            ports=(port("B.x", "A.x", labels(1, 9)), port("B.y", "A.y", labels(1, 9))),
            transit=(("B.x", "B.y", 1.0, 100),),
        ),
    }
    p = plan(req("A.ep1", "A.ep2", bandwidth_mbps=10, chain=("fw",)), notes)
    assert p.domains() == ["A", "B", "A"]
    assert [s.request.chain for s in p.segments] == [("fw",), (), ()]

    with pytest.raises(ResourceExhausted, match=r"request\.chain\[1\]"):
        plan(req("A.ep1", "A.ep2", bandwidth_mbps=10, chain=("fw", "fw")), notes)


def test_plan_refuses_subnet_too_small_for_segments() -> None:
    with pytest.raises(InvalidArgument) as err:
        plan(req(subnet="10.1.0.0/29"), chain3())

    assert err.value.field == "request.subnet"
    assert "too small for 3 segments" in err.value.message


def test_plan_carves_slash_30_pieces_from_smallest_subnet_that_fits() -> None:
    p = plan(req(subnet="10.1.0.0/28"), chain3())

    assert [s.request.subnet for s in p.segments] == ["10.1.0.0/30", "10.1.0.4/30", "10.1.0.8/30"]


def test_plan_gives_single_segment_the_whole_subnet() -> None:
    notes = chain3()
    # A run is one transit edge a note declares: it does not hairpin through another border port.
    a = notes[SpId("A")]
    notes[SpId("A")] = replace(a, transit=(*a.transit, Transit(T("A.up"), T("A.ep"), 1.5, 1000)))
    p = plan(req("A.up", "A.ep", subnet="10.9.0.0/30"), notes)

    assert p.domains() == ["A"]
    assert p.links == ()
    assert p.segments[0].request.subnet == "10.9.0.0/30"


def test_plan_passes_own_port_constraint_narrowed_to_port_labels() -> None:
    constraint = PortConstraint(T("A.up"), labels(15, 30), preferred=17)

    p = plan(req("A.up", "C.ep", port_constraints=(constraint,)), chain3())

    first = p.segments[0].request
    assert first.src == "A.up"
    assert first.port_constraints[0] == PortConstraint(T("A.up"), labels(15, 20), 17)
    assert all(c.port != "A.up" for s in p.segments[1:] for c in s.request.port_constraints)


def test_plan_drops_preferred_label_outside_the_port_labels() -> None:
    constraint = PortConstraint(T("A.up"), labels(15, 30), preferred=30)

    p = plan(req("A.up", "C.ep", port_constraints=(constraint,)), chain3())

    assert p.segments[0].request.port_constraints[0] == PortConstraint(T("A.up"), labels(15, 20), None)


def test_plan_refuses_port_constraint_disjoint_from_port_labels() -> None:
    constraint = PortConstraint(T("A.up"), labels(50, 60))

    with pytest.raises(ResourceExhausted, match=r"request\.port_constraints\[0\]"):
        plan(req("A.up", "C.ep", port_constraints=(constraint,)), chain3())


def test_plan_over_long_chain_of_domains_stays_fast() -> None:
    n = 400
    notes: dict[SpId, CapabilityNote] = {}
    for i in range(n):
        ports = []
        if i > 0:
            ports.append(port(f"D{i}.w", f"D{i - 1}.e", labels(1, 4000)))
        if i < n - 1:
            ports.append(port(f"D{i}.e", f"D{i + 1}.w", labels(1, 4000)))
        ends = [f"D{i}.w" if i > 0 else f"D{i}.ep", f"D{i}.e" if i < n - 1 else f"D{i}.ep"]
        notes[SpId(f"D{i}")] = note(
            f"D{i}", endpoints=(f"D{i}.ep",), ports=tuple(ports), transit=((ends[0], ends[1], 1.0, 1000),)
        )

    p = plan(req("D0.ep", f"D{n - 1}.ep", subnet="10.0.0.0/8", latency_budget_ms=1000.0), notes)

    assert len(p.segments) == n
    assert len(p.links) == n - 1
    assert p.total_latency_ms == float(n)


# --- cost, constraints and explanations (issue 4) -------------------------------------------------


def diamond(
    *, b_price: float | None = 0.01, d_price: float | None = 0.05, **b_extra: object
) -> dict[SpId, CapabilityNote]:
    """A.ep → C.ep via B (cheap, 20 ms) or via D (dear, 4 ms)."""
    notes = {
        SpId("A"): note(
            "A",
            endpoints=("A.ep",),
            ports=(port("A.b", "B.a", labels(1, 9)), port("A.d", "D.a", labels(1, 9))),
            transit=(("A.ep", "A.b", 1.0, 10_000), ("A.ep", "A.d", 1.0, 10_000)),
        ),
        SpId("B"): replace(
            note(
                "B",
                ports=(port("B.a", "A.b", labels(1, 9)), port("B.c", "C.b", labels(1, 9))),
                transit=(("B.a", "B.c", 20.0, 10_000),),
            ),
            price_per_mbps_hour=b_price,
            **b_extra,  # type: ignore[arg-type]
        ),
        SpId("D"): replace(
            note(
                "D",
                ports=(port("D.a", "A.d", labels(1, 9)), port("D.c", "C.d", labels(1, 9))),
                transit=(("D.a", "D.c", 4.0, 10_000),),
            ),
            price_per_mbps_hour=d_price,
        ),
        SpId("C"): note(
            "C",
            endpoints=("C.ep",),
            ports=(port("C.b", "B.c", labels(1, 9)), port("C.d", "D.c", labels(1, 9))),
            transit=(("C.b", "C.ep", 1.0, 10_000), ("C.d", "C.ep", 1.0, 10_000)),
        ),
    }
    return notes


def test_plan_takes_the_cheapest_path_and_prices_both_directions() -> None:
    p = plan(req(bandwidth_mbps=100, reverse_bandwidth_mbps=50), diamond())

    assert p.domains() == ["A", "B", "C"]
    assert p.cost.money_per_hour == pytest.approx(0.01 * 150)
    assert p.cost.latency_ms == 22.0 and p.cost.hops == 3
    assert [s.price_per_hour for s in p.segments] == pytest.approx([0.0, 1.5, 0.0])


def test_plan_takes_the_costlier_path_when_only_it_fits_the_latency_budget() -> None:
    p = plan(req(latency_budget_ms=10.0), diamond())

    assert p.domains() == ["A", "D", "C"]
    assert p.total_latency_ms == 6.0
    assert p.cost.money_per_hour == pytest.approx(0.05 * 200)


def test_plan_without_prices_minimises_latency() -> None:
    assert plan(req(), diamond(b_price=None, d_price=None)).domains() == ["A", "D", "C"]


def test_latency_refusal_names_best_path_and_budget() -> None:
    with pytest.raises(ResourceExhausted) as err:
        plan(req(latency_budget_ms=5.0), diamond())

    assert err.value.constraint == "latency"
    assert err.value.message == "latency: best path 6 ms via A→D→C exceeds budget 5 ms"


def test_price_ceiling_refuses_with_the_cheapest_cost_named() -> None:
    with pytest.raises(FailedPrecondition, match=r"^price: cheapest plan costs 10 per hour via A→D→C") as err:
        plan(req(latency_budget_ms=10.0, max_price_per_hour=5.0), diamond())
    assert err.value.constraint == "price"
    assert plan(req(max_price_per_hour=5.0), diamond()).domains() == ["A", "B", "C"]


def test_excluded_sp_is_avoided_and_excluding_every_route_is_explained() -> None:
    assert plan(req(exclude_sps=("B",)), diamond()).domains() == ["A", "D", "C"]
    with pytest.raises(FailedPrecondition, match=r"^exclude: no route avoids the excluded SPs B, D"):
        plan(req(exclude_sps=("B", "D")), diamond())


def test_included_sp_is_crossed_even_when_dearer() -> None:
    assert plan(req(include_sps=("D",)), diamond()).domains() == ["A", "D", "C"]


def test_include_of_an_sp_not_visible_here_is_refused_naming_it() -> None:
    with pytest.raises(FailedPrecondition, match="include: SP 'L9' is not among") as err:
        plan(req(include_sps=("L9",)), diamond())
    assert err.value.field == "request.include_sps[0]"


def test_isolation_and_qos_are_required_of_every_sp_on_the_path() -> None:
    notes = diamond()
    qos = (QosClass("gold", (("dscp", "46"),)),)
    for sp in ("A", "C", "D"):
        notes[SpId(sp)] = replace(notes[SpId(sp)], qos_classes=qos, isolation=(Isolation.VXLAN, Isolation.VRF))
    notes[SpId("B")] = replace(notes[SpId("B")], qos_classes=(), isolation=(Isolation.VXLAN,))

    p = plan(req(qos_class="gold"), notes)
    assert p.domains() == ["A", "D", "C"]
    assert all(s.qos_native == (("dscp", "46"),) for s in p.segments)
    assert all(s.request.qos_class == "gold" for s in p.segments)

    p = plan(req(isolation=Isolation.VLAN), notes)  # VRF is stronger than VLAN: it qualifies
    assert p.domains() == ["A", "D", "C"]
    assert {s.isolation for s in p.segments} == {Isolation.VRF}

    with pytest.raises(FailedPrecondition, match=r"^isolation: no route whose every SP offers isolation physical"):
        plan(req(isolation=Isolation.PHYSICAL), notes)
    with pytest.raises(FailedPrecondition, match=r"^qos: no route whose every SP offers QoS class 'platinum'"):
        plan(req(qos_class="platinum"), notes)


def test_transit_policy_keeps_traffic_off_sps_that_do_not_carry_between_those_peers() -> None:
    notes = diamond(transit_policy=(("X", "Y"),))
    assert plan(req(), notes).domains() == ["A", "D", "C"]
    notes[SpId("D")] = replace(notes[SpId("D")], transit_policy=(("A", "C"),))
    assert plan(req(), notes).domains() == ["A", "D", "C"]
    notes[SpId("D")] = replace(notes[SpId("D")], transit_policy=(("A", "B"),))
    with pytest.raises(FailedPrecondition, match=r"^transit-policy: "):
        plan(req(), notes)


def test_chain_function_needs_an_offer_with_enough_throughput() -> None:
    notes = chain3(a_functions=(), b_functions=())
    notes[SpId("B")] = replace(notes[SpId("B")], functions=(FunctionOffer("fw", "B-site", 1, 200),))
    p = plan(req(chain=("fw",), chain_throughput_mbps=(150,)), notes)
    assert p.placements == (FunctionPlacement(0, "fw", SpId("B"), "B-site"),)
    assert p.segments[1].request.chain_throughput_mbps == (150,)
    with pytest.raises(ResourceExhausted, match=r"^chain: request\.chain\[0\] 'fw' \(300 Mb/s\)"):
        plan(req(chain=("fw",), chain_throughput_mbps=(300,)), notes)


def test_reverse_bandwidth_counts_on_every_edge() -> None:
    with pytest.raises(ResourceExhausted, match=r"^bandwidth: no route with 2000 Mb/s"):
        plan(req(bandwidth_mbps=10, reverse_bandwidth_mbps=2000), chain3())


def test_crankback_runs_are_avoided_in_either_direction() -> None:
    p = plan(req(), diamond(), avoid_runs=(Run(SpId("B"), T("B.c"), T("B.a")),))
    assert p.domains() == ["A", "D", "C"]
    with pytest.raises(ResourceExhausted):
        plan(req(), diamond(), avoid_runs=(Run(SpId("B"), T("B.a"), T("B.c")), Run(SpId("D"), T("D.a"), T("D.c"))))


def test_sub_requests_carry_the_trace_exclusions_and_qos_down() -> None:
    p = plan(req(trace=("T", "M1"), exclude_sps=("Z",), qos_class=""), chain3())
    assert all(s.request.trace == ("T", "M1") and s.request.exclude_sps == ("Z",) for s in p.segments)
    assert all(s.request.include_sps == () for s in p.segments)


def test_shares_are_never_below_transit_latency_off_the_rounding_grid() -> None:
    notes = chain3()
    notes[SpId("B")] = replace(notes[SpId("B")], transit=(Transit(T("B.pa"), T("B.pc"), 0.1234567, 1000),))
    p = plan(req(latency_budget_ms=7.0), notes)
    assert all(s.latency_share_ms >= s.transit_latency_ms for s in p.segments)
    assert math.fsum(s.latency_share_ms for s in p.segments) <= 7.0


@pytest.mark.parametrize(("budget", "ceiling"), [(1e303, 0.0), (1e308, 0.0), (None, 1e308), (1e303, 1e308)])
def test_plan_survives_budgets_and_ceilings_near_the_float_maximum(budget: float | None, ceiling: float) -> None:
    # The codec refuses these at the edge; the pure planner must not overflow on them either.
    p = plan(req(latency_budget_ms=budget, max_price_per_hour=ceiling), diamond())
    assert p.domains() == ["A", "B", "C"]
    shares = [s.latency_share_ms for s in p.segments]
    assert all(math.isfinite(x) for x in shares)
    if budget is not None:
        assert math.fsum(shares) <= budget
        assert all(s.latency_share_ms >= s.transit_latency_ms for s in p.segments)


def test_an_unknown_function_type_is_invalid_argument_listing_the_offered_ones() -> None:
    # Issue 18 item 8: a typo once read as capacity ("no SP with a free slot").
    with pytest.raises(InvalidArgument, match=r"no SP here offers function type 'firewal' \(offered: fw, nat\)") as err:
        plan(req(chain=("fw", "firewal")), chain3())
    assert err.value.field == "request.chain[1]"

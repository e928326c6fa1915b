"""Budgets at every level, functions on their route, latency on inter-domain links (issue 13)."""

from __future__ import annotations

import math

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from capability_catalog.aggregate import aggregate
from capability_catalog.canonical import normalised, note_to_canonical
from capability_catalog.model import (
    BorderPort,
    CapabilityNote,
    Endpoint,
    FunctionOffer,
    LabelRange,
    LabelSet,
    SpId,
    TerminalId,
    Transit,
)
from schemas.note import parse_note
from slicing.errors import FedError
from slicing.hierarchy import Subtree, plan_through
from slicing.model import SliceRequest
from slicing.planner import plan, shares_of

T = TerminalId
LAB = LabelSet.of([LabelRange(1, 100)])


def port(pid: str, peer: str, *, latency: float = 0.0, mbps: int = 10_000) -> BorderPort:
    return BorderPort(T(pid), SpId(peer.split(".")[0]), T(peer), labels=LAB, capacity_mbps=mbps, latency_ms=latency)


def note(
    sp: str,
    *,
    endpoints: tuple[str, ...] = (),
    ports: tuple[BorderPort, ...] = (),
    transit: tuple[Transit, ...] = (),
    functions: tuple[FunctionOffer, ...] = (),
    price: float | None = None,
) -> CapabilityNote:
    return CapabilityNote(
        SpId(sp),
        1,
        0.0,
        1e9,
        endpoints=tuple(Endpoint(T(e)) for e in endpoints),
        ports=ports,
        transit=transit,
        functions=functions,
        price_per_mbps_hour=price,
    )


def tr(a: str, b: str, ms: float, mbps: int = 10_000) -> Transit:
    return Transit(T(a), T(b), ms, mbps)


# --- the budget split ---------------------------------------------------------------------------


def test_a_zero_ms_segment_gets_a_positive_share() -> None:
    shares = shares_of([0.0, 4.0, 0.0], 10.0)

    assert all(s > 0 for s in shares)
    assert shares[1] >= 4.0
    assert math.fsum(shares) <= 10.0


def test_no_budget_gives_no_shares_and_an_exact_budget_gives_exactly_the_transit() -> None:
    assert shares_of([1.0, 2.0], None) == [0.0, 0.0]
    assert shares_of([1.0, 2.0], 3.0) == [1.0, 2.0]


@settings(max_examples=300, deadline=None)
@given(
    latencies=st.lists(
        st.one_of(st.just(0.0), st.floats(0, 1e3), st.floats(0, 1e308, allow_infinity=False)), min_size=1, max_size=8
    ),
    budget=st.one_of(st.floats(0, 1e4), st.floats(0, 1e308, allow_infinity=False), st.just(1e308)),
)
@example(latencies=[0.0, 5e-324], budget=1.0)  # the mean of the latencies underflows to 0
def test_shares_keep_every_promise_for_any_finite_values(latencies: list[float], budget: float) -> None:
    shares = shares_of(latencies, budget)  # never raises, not even at 1e308

    assert all(s >= lat for s, lat in zip(shares, latencies, strict=True))
    total = sum(latencies)
    if total <= budget:
        assert sum(shares) <= budget * (1 + 1e-15)
    if math.isfinite(total) and budget - total >= 1e-3 * len(latencies) and budget < 1e300:
        assert all(s > 0 for s in shares)


def test_plan_survives_1e308_budgets_prices_and_ceilings() -> None:
    a = note("A", endpoints=("A.ep",), ports=(port("A.p", "B.q"),), transit=(tr("A.ep", "A.p", 1e308),), price=1e308)
    b = note("B", endpoints=("B.ep",), ports=(port("B.q", "A.p"),), transit=(tr("B.q", "B.ep", 1.0),), price=1e308)
    notes = {a.sp_id: a, b.sp_id: b}

    p = plan(SliceRequest(T("A.ep"), T("B.ep"), 1000, latency_budget_ms=1.7e308, max_price_per_hour=0.0), notes)
    assert p.cost.money_per_hour == math.inf or p.cost.money_per_hour > 1e308
    with pytest.raises(FedError) as refused:
        plan(SliceRequest(T("A.ep"), T("B.ep"), 1000, latency_budget_ms=1.0, max_price_per_hour=1e308), notes)
    assert refused.value.constraint == "latency"


def test_a_leaf_segment_of_0_ms_is_given_a_budget_it_can_keep_a_level_below() -> None:
    # T over {M, O}; M's ep and port sit on one PoP (0 ms). With the old split M got 0 ms = "no budget".
    m = note("M", endpoints=("M.ep",), ports=(port("M.p", "O.q"),), transit=(tr("M.ep", "M.p", 0.0),))
    o = note("O", endpoints=("O.ep",), ports=(port("O.q", "M.p"),), transit=(tr("O.q", "O.ep", 6.0),))

    p = plan(SliceRequest(T("M.ep"), T("O.ep"), 100, latency_budget_ms=10.0), {m.sp_id: m, o.sp_id: o})

    shares = {s.domain: s.latency_share_ms for s in p.segments}
    assert shares["M"] > 0 and shares["O"] >= 6.0
    assert math.fsum(shares.values()) <= 10.0
    assert all(s.request.latency_budget_ms == s.latency_share_ms for s in p.segments)


# --- latency on inter-domain links ----------------------------------------------------------------


def two_with_link(a_side: float, b_side: float) -> dict[SpId, CapabilityNote]:
    a = note("A", endpoints=("A.ep",), ports=(port("A.p", "B.q", latency=a_side),), transit=(tr("A.ep", "A.p", 1.0),))
    b = note("B", endpoints=("B.ep",), ports=(port("B.q", "A.p", latency=b_side),), transit=(tr("B.q", "B.ep", 2.0),))
    return {a.sp_id: a, b.sp_id: b}


def test_link_latency_is_counted_once_at_the_larger_side_and_taken_off_the_budget() -> None:
    p = plan(SliceRequest(T("A.ep"), T("B.ep"), 100, latency_budget_ms=10.0), two_with_link(3.0, 2.5))

    assert p.total_latency_ms == pytest.approx(6.0)  # 1 + 3 (the link, once) + 2
    assert p.links[0].latency_ms == 3.0
    assert math.fsum(s.latency_share_ms for s in p.segments) <= 10.0 - 3.0


def test_a_budget_the_link_latency_breaks_is_refused_as_latency() -> None:
    with pytest.raises(FedError) as refused:
        plan(SliceRequest(T("A.ep"), T("B.ep"), 100, latency_budget_ms=5.9), two_with_link(3.0, 0.0))
    assert refused.value.constraint == "latency"


def test_port_latency_is_authored_checked_and_signed() -> None:
    doc = {
        "sp_id": "A",
        "endpoints": [{"id": "A.ep", "capacity_mbps": 10}],
        "border_ports": [
            {
                "id": "A.p",
                "peer_sp": "B",
                "peer_port": "B.q",
                "label_type": "vlan",
                "label_ranges": ["10-20"],
                "capacity_mbps": 100,
                "latency_ms": 4.25,
            }
        ],
    }
    parsed, problems = parse_note(doc, 0.0)
    assert problems == [] and parsed is not None
    assert parsed.ports[0].latency_ms == 4.25
    assert normalised(parsed).ports[0].latency_ms == 4.25
    assert b'"latency_us":4250' in note_to_canonical(parsed)
    for bad in (-1, float("nan"), float("inf")):
        doc["border_ports"][0]["latency_ms"] = bad  # type: ignore[index]
        assert any("border_ports[0].latency_ms" in p for p in parse_note(doc, 0.0)[1])


def test_notes_without_the_new_fields_keep_their_canonical_bytes() -> None:
    plain = two_with_link(0.0, 0.0)[SpId("A")]
    payload = note_to_canonical(plain)

    assert b'latency_us":0' not in payload.split(b'"transit"')[0]
    assert b"routed" not in payload and b'"functions":[]' in payload and b"price_micro" not in payload


# --- functions on their route, through a mid-level SP ---------------------------------------------


def off_route() -> tuple[Subtree, dict[SpId, CapabilityNote]]:
    """X.ep -1- X.p == Y.q -1- Y.ep is fastest; the firewall is in Z, a 10 ms detour X.r == Z.s, Z.t == Y.u."""
    x = note(
        "X",
        endpoints=("X.ep",),
        ports=(port("X.p", "Y.q"), port("X.r", "Z.s")),
        transit=(tr("X.ep", "X.p", 1.0), tr("X.ep", "X.r", 1.0)),
    )
    y = note(
        "Y",
        endpoints=("Y.ep",),
        ports=(port("Y.q", "X.p"), port("Y.u", "Z.t")),
        transit=(tr("Y.q", "Y.ep", 1.0), tr("Y.u", "Y.ep", 1.0)),
    )
    z = note(
        "Z",
        ports=(port("Z.s", "X.r"), port("Z.t", "Y.u")),
        transit=(tr("Z.s", "Z.t", 10.0),),
        functions=(FunctionOffer("fw", "Z-site", 1), FunctionOffer("nat", "Z-site", 1)),
    )
    leaves = {n.sp_id: n for n in (x, y, z)}
    return Subtree(SpId("T"), (Subtree(SpId("M"), (x, y, z)),)), leaves


def test_an_abstract_note_costs_a_function_on_the_route_that_reaches_it() -> None:
    tree, leaves = off_route()
    view = aggregate(SpId("M"), list(leaves.values()), version=1, issued_at=0.0, expires_at=1e9)

    entries = {t.functions: t.latency_ms for t in view.transit if (t.a, t.b) == ("X.ep", "Y.ep")}
    assert entries[()] == 2.0
    assert entries[("fw",)] == 12.0  # the detour through Z, not the fastest path
    assert all(f.routed for f in view.functions)
    with pytest.raises(FedError) as refused:
        plan_through(SliceRequest(T("X.ep"), T("Y.ep"), 100, latency_budget_ms=6.0, chain=("fw",)), tree)
    assert refused.value.constraint == "latency"
    p = plan_through(SliceRequest(T("X.ep"), T("Y.ep"), 100, latency_budget_ms=13.0, chain=("fw",)), tree)
    assert p.latency_ms == 12.0
    assert [sp for sp, _, _ in p.leaf_runs] == ["X", "Z", "Y"]


def test_route_functions_are_read_in_the_direction_traffic_flows() -> None:
    x = note("X", endpoints=("X.ep",), ports=(port("X.p", "Y.q"),), transit=(tr("X.ep", "X.p", 1.0),))
    x = CapabilityNote(**{**x.__dict__, "functions": (FunctionOffer("fw", "X-site", 1),)})
    y = note(
        "Y",
        endpoints=("Y.ep",),
        ports=(port("Y.q", "X.p"),),
        transit=(tr("Y.q", "Y.ep", 1.0),),
        functions=(FunctionOffer("nat", "Y-site", 1),),
    )
    tree = Subtree(SpId("T"), (Subtree(SpId("M"), (x, y)), note("W", endpoints=("W.ep",))))

    # X hosts fw, Y hosts nat: from X.ep fw comes first; from Y.ep nat does
    assert plan_through(SliceRequest(T("X.ep"), T("Y.ep"), 100, chain=("fw", "nat")), tree).latency_ms == 2.0
    assert plan_through(SliceRequest(T("Y.ep"), T("X.ep"), 100, chain=("nat", "fw")), tree).latency_ms == 2.0
    for src, dst in (("X.ep", "Y.ep"), ("Y.ep", "X.ep")):
        chain = ("nat", "fw") if src == "X.ep" else ("fw", "nat")
        with pytest.raises(FedError) as refused:
            plan_through(SliceRequest(T(src), T(dst), 100, chain=chain), tree)
        assert refused.value.constraint == "chain"


def test_the_view_keeps_a_wider_slower_path_the_hierarchy_then_uses() -> None:
    # IE -> NL at 5 Gb/s: the direct path is fast but 2.5 Gb/s wide, IE-BE-NL is wider and within budget
    ie = note(
        "IE",
        endpoints=("IE.ep",),
        ports=(port("IE.nl", "NL.ie", mbps=2500), port("IE.be", "BE.ie")),
        transit=(tr("IE.ep", "IE.nl", 0.0), tr("IE.ep", "IE.be", 0.0)),
    )
    be = note("BE", ports=(port("BE.ie", "IE.be"), port("BE.nl", "NL.be")), transit=(tr("BE.ie", "BE.nl", 4.9),))
    nl = note(
        "NL",
        endpoints=("NL.ep",),
        ports=(port("NL.ie", "IE.nl", mbps=2500), port("NL.be", "BE.nl")),
        transit=(tr("NL.ie", "NL.ep", 2.0), tr("NL.be", "NL.ep", 0.0)),
    )
    tree = Subtree(SpId("T"), (Subtree(SpId("M"), (ie, be, nl)), note("W", endpoints=("W.ep",))))
    req = SliceRequest(T("IE.ep"), T("NL.ep"), 5000, latency_budget_ms=5.0)

    assert plan_through(req, tree).latency_ms == pytest.approx(4.9)
    assert plan(req, {n.sp_id: n for n in (ie, be, nl)}).total_latency_ms == pytest.approx(4.9)

"""Aggregation: the abstract note a broker publishes upward for its whole subtree."""

from __future__ import annotations

import pytest

from capability_catalog.aggregate import aggregate
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

T = TerminalId


def labels(first: int, last: int) -> LabelSet:
    return LabelSet.of([LabelRange(first, last)])


def port(pid: str, peer: str, lab: LabelSet | None = None, *, mbps: int = 10_000, can_swap: bool = False) -> BorderPort:
    return BorderPort(
        T(pid),
        SpId(peer.split(".")[0]),
        T(peer),
        labels=lab if lab is not None else labels(1, 100),
        can_swap=can_swap,
        capacity_mbps=mbps,
    )


def note(
    sp: str,
    *,
    endpoints: tuple[str, ...] = (),
    ports: tuple[BorderPort, ...] = (),
    transit: tuple[tuple[str, str, float, int], ...] = (),
    functions: tuple[FunctionOffer, ...] = (),
) -> CapabilityNote:
    return CapabilityNote(
        sp_id=SpId(sp),
        version=1,
        issued_at=0.0,
        expires_at=100.0,
        endpoints=tuple(Endpoint(T(e)) for e in endpoints),
        ports=ports,
        transit=tuple(Transit(T(a), T(b), lat, bw) for a, b, lat, bw in transit),
        functions=functions,
    )


def two_children(
    *, x_p: BorderPort | None = None, y_q: BorderPort | None = None
) -> tuple[CapabilityNote, CapabilityNote]:
    """X: X.ep, X.up (leaves the subtree), X.p == Y.q; Y: Y.ep."""
    x = note(
        "X",
        endpoints=("X.ep",),
        ports=(x_p or port("X.p", "Y.q", mbps=500), port("X.up", "P.down", labels(7, 9))),
        transit=(("X.ep", "X.p", 2.0, 1000), ("X.up", "X.p", 1.0, 400), ("X.ep", "X.up", 10.0, 10_000)),
        functions=(FunctionOffer("fw", "s1", 2), FunctionOffer("nat", "s2", 1)),
    )
    y = note(
        "Y",
        endpoints=("Y.ep",),
        ports=(y_q or port("Y.q", "X.p", mbps=600),),
        transit=(("Y.q", "Y.ep", 3.0, 800),),
        functions=(FunctionOffer("fw", "s1", 3),),
    )
    return x, y


def agg(*notes: CapabilityNote) -> CapabilityNote:
    return aggregate(SpId("M"), notes, version=7, issued_at=1.0, expires_at=50.0)


def test_aggregate_hides_internal_ports_and_keeps_ports_leaving_subtree() -> None:
    out = agg(*two_children())

    assert out.sp_id == "M"
    assert (out.version, out.issued_at, out.expires_at) == (7, 1.0, 50.0)
    assert [e.id for e in out.endpoints] == ["X.ep", "Y.ep"]
    assert [p.id for p in out.ports] == ["X.up"]
    assert out.ports[0].labels == labels(7, 9)


def plain(out: CapabilityNote) -> list[tuple[str, str, float, int]]:
    """The entries without route functions, as (a, b, latency, bandwidth)."""
    return [(t.a, t.b, t.latency_ms, t.bandwidth_mbps) for t in out.transit if not t.functions]


def test_aggregate_summarises_paths_as_the_planner_walks_them_runs_and_links() -> None:
    out = agg(*two_children())

    assert plain(out) == [
        # one run X.ep -> X.up; X.ep -> X.p -> X.up would turn back at a port inside X, which no
        # plan does (a run leaves its SP through the port it ends at), so the view does not either
        ("X.ep", "X.up", 10.0, 10_000),
        # X.ep -2ms/1000- X.p =link min(500, 600)= Y.q -3ms/800- Y.ep
        ("X.ep", "Y.ep", 5.0, 500),
        ("X.up", "Y.ep", 4.0, 400),
    ]


def test_aggregate_keeps_the_fast_narrow_and_the_slow_wide_path_of_a_pair() -> None:
    x = note(
        "X",
        endpoints=("X.ep",),
        ports=(port("X.p", "Y.q", mbps=10_000), port("X.r", "Y.s", mbps=10_000)),
        transit=(("X.ep", "X.p", 1.0, 400), ("X.ep", "X.r", 4.0, 10_000)),
    )
    y = note(
        "Y",
        endpoints=("Y.ep",),
        ports=(port("Y.q", "X.p", mbps=10_000), port("Y.s", "X.r", mbps=10_000)),
        transit=(("Y.q", "Y.ep", 1.0, 10_000), ("Y.s", "Y.ep", 4.0, 10_000)),
    )

    out = agg(x, y)

    # the fastest path alone would hide that 10 Gb/s fit between X.ep and Y.ep
    assert plain(out) == [("X.ep", "Y.ep", 2.0, 400), ("X.ep", "Y.ep", 8.0, 10_000)]


def test_aggregate_prefers_wider_path_among_equally_fast_ones() -> None:
    x = note(
        "X",
        endpoints=("X.ep",),
        ports=(port("X.p", "Y.q"), port("X.r", "Y.s")),
        transit=(("X.ep", "X.p", 1.0, 100), ("X.ep", "X.r", 1.0, 900)),
    )
    y = note(
        "Y",
        endpoints=("Y.ep",),
        ports=(port("Y.q", "X.p"), port("Y.s", "X.r")),
        transit=(("Y.q", "Y.ep", 1.0, 100), ("Y.s", "Y.ep", 1.0, 900)),
    )

    out = agg(x, y)

    # the narrow path is as fast and no cheaper: dominated, so dropped
    assert plain(out) == [("X.ep", "Y.ep", 2.0, 900)]


def test_aggregate_ignores_one_sided_link_declaration() -> None:
    x, y = two_children(x_p=port("X.p", "Z.r"))

    out = agg(x, y)

    # Y.q names X.p (a port in the subtree) so it is hidden; X.p names a port outside, so it stays
    assert [p.id for p in out.ports] == ["X.p", "X.up"]
    assert not [t for t in out.transit if "Y.ep" in (t.a, t.b)]


def test_aggregate_drops_link_with_disjoint_labels_and_no_swap() -> None:
    x, y = two_children(y_q=port("Y.q", "X.p", labels(200, 300)))

    out = agg(x, y)

    assert not [t for t in out.transit if "Y.ep" in (t.a, t.b)]
    assert [p.id for p in out.ports] == ["X.up"]


def test_aggregate_keeps_link_with_disjoint_labels_when_a_side_swaps() -> None:
    x, y = two_children(y_q=port("Y.q", "X.p", labels(200, 300), mbps=600, can_swap=True))

    out = agg(x, y)

    assert ("X.ep", "Y.ep", 5.0, 500) in plain(out)


def test_aggregate_sums_function_slots_per_type_and_site() -> None:
    out = agg(*two_children())

    assert out.functions == (FunctionOffer("fw", "s1", 5, routed=True), FunctionOffer("nat", "s2", 1, routed=True))


def test_aggregate_omits_pairs_without_path() -> None:
    lone = note("Z", endpoints=("Z.ep",))

    out = agg(*two_children(), lone)

    assert [e.id for e in out.endpoints] == ["X.ep", "Y.ep", "Z.ep"]
    assert not [t for t in out.transit if "Z.ep" in (t.a, t.b)]


def test_aggregate_is_independent_of_child_order() -> None:
    x, y = two_children()

    assert agg(x, y) == agg(y, x)


def test_aggregate_refuses_duplicate_terminal_across_children() -> None:
    x, y = two_children()
    clash = note("W", endpoints=("X.ep",))

    with pytest.raises(ValueError, match=r"X\.ep"):
        agg(x, y, clash)


def test_aggregate_refuses_two_notes_from_one_child() -> None:
    x, _ = two_children()

    with pytest.raises(ValueError, match="'X'"):
        agg(x, x)

"""Planning through the hierarchy over real broker processes (issue 13): budgets, routes, exclusion."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from broker.api.codec import leaf_sps
from fedbroker.v1 import northsouth_pb2 as pb
from tests.integration.federation import Federation, op, reserve, slice_request

pytestmark = pytest.mark.integration


def domain(
    sp: str,
    pops: list[str],
    links: list[tuple[str, str, float]],
    *,
    endpoints: dict[str, str] | None = None,
    ports: dict[str, str] | None = None,
    price: float | None = None,
    functions: dict[str, tuple[str, int]] | None = None,
) -> dict[str, Any]:
    """An emulated domain; ``ports`` maps peer SP to the pop the port sits at, ``endpoints`` id to pop."""
    out: dict[str, Any] = {
        "id": sp,
        "type": "emulated",
        "pops": pops,
        "links": [{"a": a, "b": b, "bandwidth_mbps": 10_000, "latency_ms": ms} for a, b, ms in links],
        "endpoints": [{"id": e, "pop": p, "capacity_mbps": 10_000} for e, p in (endpoints or {}).items()],
        "ports": [
            {
                "id": f"{sp}.to-{peer}",
                "pop": pop,
                "peer_sp": peer,
                "peer_port": f"{peer}.to-{sp}",
                "label_type": "vxlan-vni",
                "labels": ["1000-1999"],
                "capacity_mbps": 10_000,
            }
            for peer, pop in (ports or {}).items()
        ],
        "functions": [{"pop": p, "type": t, "slots": n} for t, (p, n) in (functions or {}).items()],
    }
    if price is not None:
        out["offer"] = {"price_per_mbps_hour": price}
    return out


async def test_a_zero_ms_segment_gets_a_share_and_the_sp_below_keeps_the_budget(fed: Federation) -> None:
    # T over {O, M}; M over L1..L4. L1 and L4 put every terminal on one pop (0 ms transit). Inside M
    # the cheap way is L3 (30 ms), the fast one L2 (1 ms). A 10 ms request must be held via L2: with
    # the old split M got 0 ms, read as "no budget", and held it on the cheap 35 ms path.
    await fed.start(
        "O", domains=[domain("O", ["a", "b"], [("a", "b", 5.0)], endpoints={"O.ep": "a"}, ports={"L1": "b"})]
    )
    await fed.start("L1", domains=[domain("L1", ["p"], [], ports={"O": "p", "L2": "p", "L3": "p"}, price=0.01)])
    await fed.start(
        "L2", domains=[domain("L2", ["a", "b"], [("a", "b", 1.0)], ports={"L1": "a", "L4": "b"}, price=1.0)]
    )
    await fed.start(
        "L3", domains=[domain("L3", ["a", "b"], [("a", "b", 30.0)], ports={"L1": "a", "L4": "b"}, price=0.01)]
    )
    await fed.start(
        "L4", domains=[domain("L4", ["p"], [], endpoints={"L4.ep": "p"}, ports={"L2": "p", "L3": "p"}, price=0.01)]
    )
    await fed.start("M", lowers=["L1", "L2", "L3", "L4"])
    top = await fed.start("T", lowers=["O", "M"])
    await fed.wait_terminals("T", ["O.ep", "L4.ep"])

    held = await reserve(top, "zero-share", slice_request("O.ep", "L4.ep", 100, latency_budget_ms=10.0))

    assert "L2" in leaf_sps(held.segments) and "L3" not in leaf_sps(held.segments)
    m = next(s for s in held.segments if s.sp_id == "M")
    assert m.latency_share_ms > 0
    cheap = await reserve(top, "no-budget", slice_request("O.ep", "L4.ep", 100))  # no budget: money decides
    assert "L3" in leaf_sps(cheap.segments)
    for s in (held, cheap):
        await op(top, "Abort", s.id)
    await fed.assert_idle()


async def test_a_function_off_the_fast_route_is_costed_on_the_route_through_it(fed: Federation) -> None:
    # L1: ams–par direct 5.5 ms, the firewall at fra (ams–fra 5 ms, fra–par 5.5 ms). Through the
    # firewall ams→par takes 10.5 ms, so a 6 ms budget is refused and an 11 ms one held via fra.
    l1 = domain(
        "L1",
        ["ams", "fra", "par"],
        [("ams", "par", 5.5), ("ams", "fra", 5.0), ("fra", "par", 5.5)],
        endpoints={"L1.ams": "ams"},
        ports={"L2": "par"},
        functions={"firewall": ("fra", 2)},
    )
    await fed.start("L1", domains=[l1])
    await fed.start("L2", domains=[domain("L2", ["p"], [], endpoints={"L2.ep": "p"}, ports={"L1": "p"})])
    await fed.start("M", lowers=["L1", "L2"])
    top = await fed.start("T", lowers=["M"])
    await fed.wait_terminals("T", ["L1.ams", "L2.ep"])

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await reserve(top, "tight", slice_request("L1.ams", "L2.ep", 100, latency_budget_ms=6.0, chain=["firewall"]))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "latency" in (info.value.details() or "")

    held = await reserve(top, "ok", slice_request("L1.ams", "L2.ep", 100, latency_budget_ms=11.0, chain=["firewall"]))
    assert held.state == pb.SLICE_STATE_HELD
    await op(top, "Abort", held.id)
    await fed.assert_idle()


async def test_excluding_a_leaf_below_a_mid_level_sp_finds_the_way_around_it(fed: Federation) -> None:
    # T over M1 {L1, L2} and M2 {L3, L4, L5, L6}: L2–L1–L4 is the short way, L2–L3–L4 the long one.
    # Excluding L1 (which T cannot see) must still be held, over L3, by crankback on M1's refusal.
    def leaf(sp: str, peers: list[str], ep: bool = False) -> dict[str, Any]:
        return domain(sp, ["p"], [], endpoints={f"{sp}.ep": "p"} if ep else None, ports=dict.fromkeys(peers, "p"))

    await fed.start("L1", domains=[leaf("L1", ["L2", "L4"])])
    await fed.start("L2", domains=[leaf("L2", ["L1", "L3"], ep=True)])
    l3 = domain("L3", ["a", "b"], [("a", "b", 9.0)], ports={"L2": "a", "L4": "b"})
    await fed.start("L3", domains=[l3])
    await fed.start("L4", domains=[leaf("L4", ["L1", "L3"], ep=True)])
    await fed.start("M1", lowers=["L1", "L2"])
    await fed.start("M2", lowers=["L3", "L4"])
    top = await fed.start("T", lowers=["M1", "M2"])
    await fed.wait_terminals("T", ["L2.ep", "L4.ep"])

    held = await reserve(top, "avoid-L1", slice_request("L2.ep", "L4.ep", 100, exclude_sps=["L1"]))

    assert leaf_sps(held.segments) == ["L2", "L3", "L4"]
    await op(top, "Abort", held.id)
    await fed.assert_idle()

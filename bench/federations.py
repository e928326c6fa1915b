"""The federations the benchmarks run on, started as separate broker processes through the Fleet.

* ``hop``: SP ``B`` with one lower-SP ``L`` (a leaf SP with one emulated domain);
* ``three_levels``: ``T`` over ``M1`` and ``M2``, each over ``per_mid`` leaf SPs; the leaves form one
  line ``L1 – L2 – … – L2n`` whose only link between the two subtrees is the middle one;
* ``big_leaf``: one leaf SP ``X`` on its own, for the 10,000-slice figures.

Every leaf has two PoPs, endpoints ``<sp>.ep`` and ``<sp>.ep2``, one border port per neighbour with
VNIs 1000–9999 on both sides, and capacity far above what the benchmarks take (each slice asks
1 Mb/s), so no figure is bounded by running out of bandwidth, labels or addresses.
"""

from __future__ import annotations

from typing import Any

from bench.rpcs import METRICS
from scenarios.processes import Fleet

CAPACITY_MBPS = 1_000_000
LABELS = "1000-9999"


def leaf_domain(sp: str, peers: tuple[str, ...] = ()) -> dict[str, Any]:
    """An emulated domain for leaf SP ``sp`` with a border port toward each of ``peers``."""
    return {
        "id": sp,
        "type": "emulated",
        "pops": ["core", "edge"],
        "links": [{"a": "core", "b": "edge", "bandwidth_mbps": CAPACITY_MBPS, "latency_ms": 1.0}],
        "endpoints": [
            {"id": f"{sp}.ep", "pop": "core", "region": sp.lower(), "capacity_mbps": CAPACITY_MBPS},
            {"id": f"{sp}.ep2", "pop": "edge", "region": sp.lower(), "capacity_mbps": CAPACITY_MBPS},
        ],
        "ports": [
            {
                "id": f"{sp}.to-{peer}",
                "pop": "edge",
                "peer_sp": peer,
                "peer_port": f"{peer}.to-{sp}",
                "label_type": "vxlan-vni",
                "labels": [LABELS],
                "can_swap": False,
                "capacity_mbps": CAPACITY_MBPS,
            }
            for peer in peers
        ],
        "functions": [],
    }


async def start_leaf(
    fleet: Fleet, sp: str, peers: tuple[str, ...] = (), settings: dict[str, Any] | None = None
) -> None:
    """Start leaf SP ``sp``."""
    await fleet.start(sp, {"domains": [leaf_domain(sp, peers)], **(settings or {})})


async def hop(fleet: Fleet) -> tuple[str, str]:
    """Start ``L`` and ``B`` over it; returns (upper, leaf) once B publishes L's endpoints."""
    await start_leaf(fleet, "L")
    await fleet.start("B", lowers=["L"])
    await fleet.wait_terminals("B", ["L.ep", "L.ep2"])
    return "B", "L"


async def three_levels(fleet: Fleet, per_mid: int) -> list[str]:
    """Start the three-level federation; returns the leaf ids once the top publishes all their endpoints.

    Every broker serves ``/metrics``, so the round trips of a set-up are counted (``bench.rpcs``).
    """
    leaves = [f"L{i + 1}" for i in range(2 * per_mid)]
    for i, sp in enumerate(leaves):
        peers = tuple(leaves[j] for j in (i - 1, i + 1) if 0 <= j < len(leaves))
        await start_leaf(fleet, sp, peers, METRICS)
    await fleet.start("M1", METRICS, lowers=leaves[:per_mid])
    await fleet.start("M2", METRICS, lowers=leaves[per_mid:])
    await fleet.start("T", METRICS, lowers=["M1", "M2"])
    await fleet.wait_terminals("T", [f"{sp}.ep" for sp in leaves], timeout_s=60)
    return leaves


async def big_leaf(fleet: Fleet) -> str:
    """Start leaf SP ``X`` alone."""
    await start_leaf(fleet, "X")
    return "X"

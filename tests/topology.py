"""Small federation topologies shared by unit and integration tests."""

from __future__ import annotations

from typing import Any


def leaf_domain(
    sp: str,
    peers: dict[str, str] | None = None,
    *,
    functions: dict[str, int] | None = None,
    link_mbps: int = 10_000,
    port_mbps: int = 10_000,
    can_swap: bool = False,
) -> dict[str, Any]:
    """An emulated domain with two PoPs, endpoint ``<sp>.ep`` and a port ``<sp>.to-<peer>`` per peer.

    ``peers`` maps peer SP id to this side's label range, e.g. ``{"L2": "1000-1999"}``.
    """
    ports = [
        {
            "id": f"{sp}.to-{peer}",
            "pop": "edge",
            "peer_sp": peer,
            "peer_port": f"{peer}.to-{sp}",
            "label_type": "vxlan-vni",
            "labels": [labels],
            "can_swap": can_swap,
            "capacity_mbps": port_mbps,
        }
        for peer, labels in (peers or {}).items()
    ]
    return {
        "id": sp,
        "type": "emulated",
        "pops": ["core", "edge"],
        "links": [{"a": "core", "b": "edge", "bandwidth_mbps": link_mbps, "latency_ms": 2}],
        "endpoints": [{"id": f"{sp}.ep", "pop": "core", "region": sp.lower(), "capacity_mbps": 10_000}],
        "ports": ports,
        "functions": [{"pop": "core", "type": t, "slots": n} for t, n in (functions or {}).items()],
    }

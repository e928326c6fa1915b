"""Aggregation: one abstract note for a whole subtree, as a mid-level SP re-publishes it upward.

The view hides the subtree's internals: links between children disappear, only endpoints and the
border ports that leave the subtree stay, and transit between them is summarised, per pair and
per route sequence of function types, as the Pareto frontier of internal paths over latency,
bandwidth and price (``capability_catalog.frontier``; each entry states its own price). Function
offers are summed per (type, site) and marked ``routed``: above, a function of the subtree is
placed only on an entry whose route visits it, with the per-instance throughput the children state
(the weakest, where several host one type at one site).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Final

from capability_catalog.frontier import FRONTIER_CAP, MAX_VIA, cap_frontier, frontiers, route_sequences
from capability_catalog.graph import check_unique_terminals
from capability_catalog.model import CapabilityNote, FunctionOffer, Isolation, QosClass, SpId, Transit

_MICRO: Final = 1_000_000


def aggregate(
    sp_id: SpId,
    notes: Iterable[CapabilityNote],
    *,
    version: int,
    issued_at: float,
    expires_at: float,
    cap: int = FRONTIER_CAP,
    max_via: int = MAX_VIA,
) -> CapabilityNote:
    """The abstract note of ``sp_id`` over its children's ``notes``."""
    children: dict[SpId, CapabilityNote] = {}
    for note in notes:
        if note.sp_id in children:
            raise ValueError(f"two notes from child '{note.sp_id}'")
        children[note.sp_id] = note
    check_unique_terminals(children.values())
    port_owner = {p.id: n.sp_id for n in children.values() for p in n.ports}
    endpoints = tuple(sorted((e for n in children.values() for e in n.endpoints), key=lambda e: e.id))
    # A port whose peer is another child's port is an internal link (or a broken one): hidden either way.
    ports = tuple(
        sorted(
            (p for n in children.values() for p in n.ports if port_owner.get(p.peer_port, n.sp_id) == n.sp_id),
            key=lambda p: p.id,
        )
    )
    exposed = sorted({e.id for e in endpoints} | {p.id for p in ports})
    slots: dict[tuple[str, str], int] = {}
    throughput: dict[tuple[str, str], int] = {}
    for n in children.values():
        for f in n.functions:
            # A function whose slots are all taken stays on the note with 0 free: its type is still
            # sold here (a request for it is short of capacity, not asking for something unknown).
            slots[(f.type, f.site)] = slots.get((f.type, f.site), 0) + max(0, f.slots)
            if f.throughput_mbps > 0:  # per instance: the weakest of the children that state one
                key = (f.type, f.site)
                throughput[key] = min(throughput.get(key, f.throughput_mbps), f.throughput_mbps)
    # Every function below is placed only on the entries that route through it: the view says
    # which pairs can reach which function types and at what extra latency.
    functions = tuple(
        FunctionOffer(t, s, k, throughput.get((t, s), 0), routed=True) for (t, s), k in sorted(slots.items())
    )
    sequences = route_sequences({t for t, _ in slots}, max_via)
    transit: list[Transit] = []
    for (a, b, seq), front in sorted(frontiers(children, exposed, sequences).items()):
        for c in cap_frontier(front, cap):
            transit.append(Transit(a, b, _ceil_us(c.latency_ms), int(c.bandwidth_mbps), c.price_micro / _MICRO, seq))
    selling = [n for n in children.values() if n.endpoints or n.ports]
    return CapabilityNote(
        sp_id=sp_id,
        version=version,
        issued_at=issued_at,
        expires_at=expires_at,
        endpoints=endpoints,
        ports=ports,
        transit=tuple(transit),
        functions=functions,
        qos_classes=_common_qos(selling),
        isolation=_common_isolation(selling),
        address_pools=tuple(sorted({p for n in selling for p in n.address_pools})),
        price_per_mbps_hour=max(
            (n.price_per_mbps_hour for n in selling if n.price_per_mbps_hour is not None), default=None
        ),
    )


def _common_qos(notes: list[CapabilityNote]) -> tuple[QosClass, ...]:
    """Classes every child sells, each at its weakest guarantee: any path below can honour it.

    The native mapping is each child's own business; the abstract class carries none.
    """
    if not notes:
        return ()
    names = set.intersection(*({q.name for q in n.qos_classes} for n in notes))
    out = []
    for name in sorted(names):
        classes = [q for n in notes if (q := n.qos_class(name)) is not None]
        out.append(QosClass(name, (), max(q.delay_ms for q in classes), max(q.loss for q in classes)))
    return tuple(out)


def _common_isolation(notes: list[CapabilityNote]) -> tuple[Isolation, ...]:
    """Isolation mechanisms every child offers."""
    if not notes:
        return ()
    return tuple(sorted(set.intersection(*(set(n.isolation) for n in notes))))


def _ceil_us(latency_ms: float) -> float:
    """Latency rounded up to the note's microsecond grid (summation noise below 1 ns is not a step up).

    Rounding up keeps the view on the safe side: a path above never is faster than the path below.
    """
    if not math.isfinite(latency_ms) or latency_ms > 1e15:
        return latency_ms
    return math.ceil(round(latency_ms * 1000, 6)) / 1000

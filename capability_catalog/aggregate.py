"""Aggregation: one abstract note for a whole subtree, as a mid-level SP re-publishes it upward.

The view hides the subtree's internals: links between children disappear, only endpoints and the
border ports that leave the subtree stay, and transit between them is summarised as the
lowest-latency path's latency and bottleneck bandwidth (among equally fast paths, the widest).
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Iterable

import networkx as nx

from capability_catalog.graph import build_graph, check_unique_terminals
from capability_catalog.model import CapabilityNote, FunctionOffer, Isolation, QosClass, SpId, TerminalId, Transit

# Path latencies are compared at this many decimals, so float summation order cannot pick the path.
_LATENCY_DIGITS = 9


def aggregate(
    sp_id: SpId,
    notes: Iterable[CapabilityNote],
    *,
    version: int,
    issued_at: float,
    expires_at: float,
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
    exposed_set = set(exposed)
    graph = build_graph(children)
    transit: list[Transit] = []
    for src in exposed:
        if src not in graph:
            continue
        for dst, (latency, bandwidth) in _best_paths(graph, src).items():
            if dst > src and dst in exposed_set:
                transit.append(Transit(TerminalId(src), TerminalId(dst), round(latency, 6), int(bandwidth)))
    transit.sort(key=lambda t: (t.a, t.b))
    slots: dict[tuple[str, str], int] = {}
    for n in children.values():
        for f in n.functions:
            slots[(f.type, f.site)] = slots.get((f.type, f.site), 0) + f.slots
    functions = tuple(FunctionOffer(t, s, k) for (t, s), k in sorted(slots.items()))
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


def _best_paths(graph: nx.Graph, src: str) -> dict[str, tuple[float, float]]:
    """(latency, bottleneck) of the best path from ``src`` to every reachable node.

    Dijkstra on the order (lower latency, then higher bottleneck), which is isotone, so it is exact.
    """
    best: dict[str, tuple[float, float]] = {src: (0.0, math.inf)}
    tie = itertools.count()
    heap: list[tuple[float, float, int, str]] = [(0.0, -math.inf, next(tie), src)]
    done: set[str] = set()
    while heap:
        latency, neg_bw, _, node = heapq.heappop(heap)
        if node in done:
            continue
        done.add(node)
        for nxt, edge in graph.adj[node].items():
            if nxt in done:
                continue
            cand = (round(latency + edge["latency"], _LATENCY_DIGITS), min(-neg_bw, edge["bandwidth"]))
            old = best.get(nxt)
            if old is None or (cand[0], -cand[1]) < (old[0], -old[1]):
                best[nxt] = cand
                heapq.heappush(heap, (cand[0], -cand[1], next(tie), nxt))
    return best

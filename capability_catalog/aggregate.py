"""Aggregation: one abstract note for a whole subtree, as a mid-level SP re-publishes it upward.

The view hides the subtree's internals: links between children disappear, only endpoints and the
border ports that leave the subtree stay, and transit between them is summarised as the
lowest-latency path's latency and bottleneck bandwidth.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import networkx as nx

from capability_catalog.graph import build_graph, check_unique_terminals, inter_links
from capability_catalog.model import CapabilityNote, FunctionOffer, SpId, TerminalId, Transit


def aggregate(
    sp_id: SpId,
    notes: Iterable[CapabilityNote],
    *,
    version: int,
    issued_at: float,
    expires_at: float,
) -> CapabilityNote:
    """The abstract note of ``sp_id`` over its children's ``notes``."""
    children = {n.sp_id: n for n in notes}
    check_unique_terminals(children.values())
    internal = {p.id for link in inter_links(children) for p in (link.a, link.b)}
    endpoints = tuple(sorted((e for n in children.values() for e in n.endpoints), key=lambda e: e.id))
    ports = tuple(sorted((p for n in children.values() for p in n.ports if p.id not in internal), key=lambda p: p.id))
    exposed = sorted({e.id for e in endpoints} | {p.id for p in ports})
    graph = build_graph(children)
    transit: list[Transit] = []
    exposed_set = set(exposed)
    for src in exposed:
        if src not in graph:
            continue
        _, paths = nx.single_source_dijkstra(graph, src, weight="latency")
        for dst, path in paths.items():
            if dst <= src or dst not in exposed_set:
                continue
            edges = [graph.edges[a, b] for a, b in itertools.pairwise(path)]
            transit.append(
                Transit(
                    TerminalId(src),
                    TerminalId(dst),
                    round(sum(e["latency"] for e in edges), 6),
                    min(e["bandwidth"] for e in edges),
                )
            )
    slots: dict[tuple[str, str], int] = {}
    for n in children.values():
        for f in n.functions:
            slots[(f.type, f.site)] = slots.get((f.type, f.site), 0) + f.slots
    functions = tuple(FunctionOffer(t, s, k) for (t, s), k in sorted(slots.items()))
    return CapabilityNote(
        sp_id=sp_id,
        version=version,
        issued_at=issued_at,
        expires_at=expires_at,
        endpoints=endpoints,
        ports=ports,
        transit=tuple(sorted(transit, key=lambda t: (t.a, t.b))),
        functions=functions,
    )

"""Planning through a two-level hierarchy over a real topology, in process (issue 13).

GÉANT 2012 (``scenarios/data/topologyzoo``, CC BY 4.0): one leaf SP per node, grouped west to east
into three mid-level SPs under one top SP. ``plan_ms_p50_hier`` is the median wall time of
``slicing.hierarchy.plan_through`` (the top plans over the three abstract notes, each mid-level SP
its piece over its leaves); the abstract notes are built before timing, as brokers build them when
notes arrive, not per request. ``note_bytes_mid`` is the largest mid-level note's canonical bytes.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import networkx as nx

from bench.sizes import Sizes
from bench.stats import median
from capability_catalog.canonical import normalised, note_to_canonical
from capability_catalog.model import SpId
from slicing.errors import FedError
from slicing.hierarchy import Subtree, group, plan_through
from slicing.model import SliceRequest
from slicing.synthetic import regional_groups, topology_notes

TOPOLOGY = Path(__file__).resolve().parents[1] / "scenarios" / "data" / "topologyzoo" / "Geant2012.graphml"
MIDS = 3


def geant_tree(seed: int = 1) -> Subtree:
    """GÉANT's leaves under three regional mid-level SPs under T."""
    graph = nx.read_graphml(TOPOLOGY)
    leaves = [normalised(n) for n in topology_notes(graph, seed).values()]
    names = [SpId(f"M{i}") for i in range(MIDS)]
    return group(SpId("T"), leaves, regional_groups(graph, MIDS), names)


def hierarchy_figures(sizes: Sizes) -> dict[str, float]:
    """``plan_ms_p50_hier`` and ``note_bytes_mid`` (with ``plan_refused_hier``, the refusals among the samples)."""
    tree = geant_tree()
    mids = [m for m in tree.children if isinstance(m, Subtree)]
    note_bytes = max(len(note_to_canonical(m.note)) for m in mids)
    rng = random.Random(13)
    endpoints = sorted(e.id for m in mids for leaf in m.children for e in leaf.endpoints)  # type: ignore[union-attr]
    samples: list[float] = []
    refused = 0
    for _ in range(sizes.hier_requests):
        src, dst = rng.sample(endpoints, 2)
        req = SliceRequest(src, dst, 100, latency_budget_ms=rng.choice((None, 30.0)), chain=rng.choice(((), ("fw",))))
        start = time.perf_counter()
        try:
            plan_through(req, tree)
        except FedError:
            refused += 1  # timed all the same
        samples.append(time.perf_counter() - start)
    return {
        "plan_ms_p50_hier": round(median(samples) * 1000, 4),
        "plan_refused_hier": float(refused),
        "note_bytes_mid": float(note_bytes),
    }

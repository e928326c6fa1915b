"""The Pareto frontier of a subtree's internal paths between its exposed terminals. Pure, no I/O.

A path alternates *runs* (one transit entry of one child) and internal links between children, as
the planner walks them (``slicing.search``). Its cost has three criteria: latency (summed, runs
and links), bottleneck bandwidth (runs and links) and price (the children's price per Mb/s and
hour, summed over runs; an unpriced child adds nothing). A path *dominates* another when it is no
slower, no narrower and no dearer. Per pair of exposed terminals, and per *route sequence* of
function types (none, or up to ``MAX_VIA`` types that the path must host in that order, with the
rule of ``capability_catalog.placement``), ``frontiers`` returns every path no other dominates,
found by a multi-criteria label-setting search (labels popped by latency, a label dropped when
one settled at the same state is no dearer and no narrower): exact, before the cap.

**The cap.** A frontier longer than ``FRONTIER_CAP`` keeps the fastest, the cheapest and the
widest path and then paths spread evenly along the latency order. Measured on GÉANT 2012,
NORDUnet 2010 and Internet2 grouped into three to five mid-level SPs and on synthetic federations
(``tests/unit/test_frontier_size.py`` records the figures), no frontier held more than the cap, so
below that size the abstract view hides nothing a planner above could use.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from capability_catalog.graph import inter_links
from capability_catalog.model import CapabilityNote, SpId, TerminalId
from capability_catalog.placement import advance

__all__ = ["FRONTIER_CAP", "MAX_VIA", "PathCost", "cap_frontier", "frontiers", "route_sequences"]

#: At most this many entries per pair and route sequence (see the module docstring).
FRONTIER_CAP: Final = 8
#: Route sequences name at most this many functions: a run through a mid-level SP hosts at most
#: this many consecutive chain functions.
MAX_VIA: Final = 2
_MICRO: Final = 1_000_000


@dataclass(frozen=True, order=True)
class PathCost:
    """One internal path's latency (ms), bottleneck (Mb/s) and price (micro-units per Mb/s and hour)."""

    latency_ms: float
    bandwidth_mbps: float
    price_micro: int


@dataclass(frozen=True)
class _Run:
    to: TerminalId
    latency: float
    bandwidth: float
    price: int
    via: tuple[str, ...]


def _micro(price: float | None) -> int:
    if price is None:
        return 0
    return round(price * _MICRO) if abs(price) < 1e290 else int(price) * _MICRO


def route_sequences(types: Iterable[str], max_len: int = MAX_VIA) -> list[tuple[str, ...]]:
    """The empty sequence, then every sequence of ``types`` of length 1..``max_len``."""
    kinds = sorted(set(types))
    out: list[tuple[str, ...]] = [()]
    for n in range(1, max_len + 1):
        out.extend(itertools.product(kinds, repeat=n))
    return out


def frontiers(
    children: Mapping[SpId, CapabilityNote],
    exposed: Sequence[TerminalId],
    sequences: Sequence[tuple[str, ...]],
) -> dict[tuple[TerminalId, TerminalId, tuple[str, ...]], list[PathCost]]:
    """Per (a, b, sequence) with ``a < b``, the exact Pareto frontier of paths from a to b placing it."""
    owner: dict[TerminalId, SpId] = {t: sp for sp, n in children.items() for t in n.terminals()}
    runs: dict[TerminalId, list[_Run]] = {}
    for sp, note in children.items():
        unit = note.price_per_mbps_hour
        for t in note.transit:
            if t.a == t.b or owner.get(t.a) != sp or owner.get(t.b) != sp:
                continue
            price = _micro(t.price_per_mbps_hour if t.price_per_mbps_hour is not None else unit)
            for u, v in ((t.a, t.b), (t.b, t.a)):
                runs.setdefault(u, []).append(_Run(v, t.latency_ms, t.bandwidth_mbps, price, t.functions_from(u)))
    links: dict[TerminalId, tuple[TerminalId, float, float]] = {}
    for link in inter_links(children):
        if not link.candidate_labels():
            continue
        links[link.a.id] = (link.b.id, link.latency_ms, link.capacity_mbps)
        links[link.b.id] = (link.a.id, link.latency_ms, link.capacity_mbps)
    routed = {sp: n.routed_types() for sp, n in children.items()}
    exposed_set = set(exposed)
    out: dict[tuple[TerminalId, TerminalId, tuple[str, ...]], list[PathCost]] = {}
    for src in exposed:
        if src not in owner:
            continue
        for seq in sequences:
            found = _search(src, seq, runs, links, owner, children, routed, exposed_set)
            for dst, costs in found.items():
                if dst > src:
                    out[(src, dst, seq)] = costs
    return out


def _search(
    src: TerminalId,
    seq: tuple[str, ...],
    runs: Mapping[TerminalId, list[_Run]],
    links: Mapping[TerminalId, tuple[TerminalId, float, float]],
    owner: Mapping[TerminalId, SpId],
    children: Mapping[SpId, CapabilityNote],
    routed: Mapping[SpId, frozenset[str]],
    exposed: set[TerminalId],
) -> dict[TerminalId, list[PathCost]]:
    chain = [(kind, 0) for kind in seq]
    goal = len(seq)
    settled: dict[tuple[TerminalId, int], list[tuple[int, float]]] = {}
    results: dict[TerminalId, list[PathCost]] = {}
    tie = itertools.count()
    heap: list[tuple[float, int, float, int, TerminalId, int]] = [(0.0, 0, -math.inf, next(tie), src, 0)]
    adv_cache: dict[tuple[SpId, tuple[str, ...], int], int | None] = {}

    def dominated(state: tuple[TerminalId, int], price: int, bw: float) -> bool:
        return any(p <= price and b >= bw for p, b in settled.get(state, ()))

    while heap:
        lat, price, neg_bw, _, u, stage = heapq.heappop(heap)
        bw = -neg_bw
        if dominated((u, stage), price, bw):
            continue
        settled.setdefault((u, stage), []).append((price, bw))
        sp = owner[u]
        for run in runs.get(u, ()):
            if run.to == src:
                continue
            key = (sp, run.via, stage)
            if key not in adv_cache:
                adv_cache[key] = advance(children[sp].functions, routed[sp], chain, stage, run.via)
            nstage = adv_cache[key]
            if nstage is None:
                continue
            nlat, nprice, nbw = lat + run.latency, price + run.price, min(bw, run.bandwidth)
            if run.to in exposed:
                if nstage == goal:
                    results.setdefault(run.to, []).append(PathCost(nlat, nbw, nprice))
                continue
            link = links.get(run.to)
            if link is None:
                continue
            peer, link_lat, cap = link
            nlat, nbw = nlat + link_lat, min(nbw, cap)
            if not dominated((peer, nstage), nprice, nbw):
                heapq.heappush(heap, (nlat, nprice, -nbw, next(tie), peer, nstage))
    return {dst: pareto(costs) for dst, costs in results.items()}


def pareto(costs: Iterable[PathCost]) -> list[PathCost]:
    """The costs no other dominates (one of equal ones), fastest first."""
    front: list[PathCost] = []
    for c in sorted(costs, key=lambda c: (c.latency_ms, c.price_micro, -c.bandwidth_mbps)):
        if not any(f.price_micro <= c.price_micro and f.bandwidth_mbps >= c.bandwidth_mbps for f in front):
            front.append(c)
    return front


def cap_frontier(front: Sequence[PathCost], cap: int = FRONTIER_CAP) -> list[PathCost]:
    """At most ``cap`` entries: the fastest, the cheapest, the widest, then evenly spread by latency."""
    if len(front) <= cap:
        return list(front)
    keep = {0, min(range(len(front)), key=lambda i: (front[i].price_micro, front[i].latency_ms))}
    keep.add(max(range(len(front)), key=lambda i: (front[i].bandwidth_mbps, -front[i].latency_ms)))
    rest = [i for i in range(len(front)) if i not in keep]
    room = cap - len(keep)
    if room > 0 and rest:
        step = len(rest) / room
        keep.update(rest[min(len(rest) - 1, int(k * step))] for k in range(room))
    return [front[i] for i in sorted(keep)]

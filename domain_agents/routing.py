"""Routes through a domain's functions: the walk that visits, in order, a pop hosting each chain function.

One rule for what a leaf publishes and what it reserves: ``walk_through`` is a Dijkstra over
states (pop, functions placed so far), where a pop with a free slot for the next function may
place it at no cost, so the walk found is the least-latency one that really passes each function's
pop in order (it may go out and back along a link to reach a pop off the shortest path).
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise

import networkx as nx

__all__ = ["Walk", "walk_through"]


@dataclass(frozen=True)
class Walk:
    """A walk over pops (a pop may repeat), its latency, and the pop each chain function sits at."""

    latency_ms: float
    pops: tuple[str, ...]
    placements: tuple[tuple[str, str], ...]  # (pop, function type), in chain order

    def link_uses(self) -> Counter[tuple[str, str]]:
        """How often the walk crosses each link (order-free key)."""
        return Counter((min(u, v), max(u, v)) for u, v in pairwise(self.pops))


def walk_through(
    graph: nx.Graph,
    src: str,
    dst: str,
    chain: Sequence[str],
    free: Callable[[str, str], int],
) -> Walk | None:
    """The least-latency walk from ``src`` to ``dst`` placing ``chain`` in order at pops with free slots, or None.

    States carry the placements made so far, so one pop's slots are never counted twice.
    """
    goal = len(chain)
    _State = tuple[str, tuple[tuple[str, str], ...]]
    tie = itertools.count()
    start: _State = (src, ())
    heap: list[tuple[float, int, _State]] = [(0.0, next(tie), start)]
    parent: dict[_State, _State | None] = {start: None}
    best: dict[_State, float] = {start: 0.0}
    done: set[_State] = set()
    while heap:
        dist, _, state = heapq.heappop(heap)
        if state in done:
            continue
        done.add(state)
        pop, placed = state
        if pop == dst and len(placed) == goal:
            return _walk(parent, state, dist)
        steps: list[tuple[_State, float]] = []
        if len(placed) < goal:
            kind = chain[len(placed)]
            if free(pop, kind) - placed.count((pop, kind)) > 0:
                steps.append(((pop, (*placed, (pop, kind))), 0.0))
        for nxt, edge in graph.adj[pop].items():
            steps.append(((nxt, placed), float(edge["latency_ms"])))
        for nstate, cost in steps:
            nd = dist + cost
            if nstate not in done and nd < best.get(nstate, float("inf")):
                best[nstate] = nd
                parent[nstate] = state
                heapq.heappush(heap, (nd, next(tie), nstate))
    return None


def _walk(
    parent: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[str, tuple[tuple[str, str], ...]] | None],
    end: tuple[str, tuple[tuple[str, str], ...]],
    dist: float,
) -> Walk:
    pops: list[str] = []
    cur = parent[end]
    pops.append(end[0])
    prev = end
    while cur is not None:
        if cur[0] != prev[0]:
            pops.append(cur[0])
        prev, cur = cur, parent[cur]
    pops.reverse()
    return Walk(dist, tuple(pops), end[1])

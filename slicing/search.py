"""The path search of the planner: states, constraints, and the searches over them. Pure, no I/O.

**Search space.** A path alternates *runs* (one transit entry inside one child, from the terminal
where it enters the child to the terminal where it leaves) and *inter-domain links* (two ports
that declare each other as peers; a link adds its latency, the larger one its two sides state).
The search walks states ``(entry terminal, chain stage, include mask)``: the stage counts the chain
functions placed so far (a layered graph over the chain), the mask the ``include_sps`` crossed.
A pair of terminals may have several entries (an abstract note's frontier over latency, bandwidth
and price, each entry with its own price); each entry that carries the bandwidth and that no other
entry of the same route beats on both latency and money is a separate run. Which chain functions a
run places is ``capability_catalog.placement.advance``: functions an SP places anywhere greedily
(a state further along the chain dominates one behind it at equal cost, so greedy loses nothing),
and functions an SP routes only on the entries that name them, in the order traffic meets them.

**Feasibility.** Every run and link carries the request's larger direction of bandwidth (notes
state capacity per direction); every child on the path is not excluded, offers the QoS class and an
isolation mechanism at least as strong as asked; its transit policy carries traffic between the
peers on both sides of the run; each inter-domain link has a usable label (``slicing.labels``);
runs a child refused (crankback) are avoided.

**Cost** (``PlanCost``): money first (sum over runs of the entry's price, else the child's
``price_per_mbps_hour``, times the bandwidth of both directions, in integer micro-units so huge
prices neither overflow nor round; unpriced children add nothing), then latency (runs and links),
then the number of runs. ``search`` is a bidirectional Dijkstra over that lexicographic cost (or latency first);
``search_within`` an exact label-setting search over (money, latency) Pareto labels, pruned by a
latency lower bound to the destination and by an incumbent's money, for the cheapest path within a
latency budget.

The index over a set of notes (``slicing.search_index``) is cached (notes change far less often
than requests) and builds each SP's part the first time a search touches it, so a search costs
what it explores.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final, NamedTuple

from capability_catalog.graph import InterLink, link_key
from capability_catalog.model import CapabilityNote, FunctionOffer, Isolation, SpId, TerminalId
from capability_catalog.placement import advance
from slicing.errors import Constraint
from slicing.labels import link_labels
from slicing.model import ChainFunction, SliceRequest
from slicing.search_index import MICRO, Entry, Index, build_index, index_for, micro, total_ms

__all__ = [
    "EXPLAIN_ORDER",
    "MICRO",
    "Checks",
    "Found",
    "Hop",
    "Index",
    "Query",
    "Run",
    "build_index",
    "hosts",
    "index_for",
    "isolation_for",
    "micro",
    "search",
    "search_within",
    "total_ms",
]

_ISOLATION_ORDER: Final = {iso: i for i, iso in enumerate(Isolation)}
_DST: Final = TerminalId("\x00dst")  # the goal state's terminal; no real terminal id has a NUL


@dataclass(frozen=True)
class Run:
    """A run the planner must avoid: child ``domain`` between ``ingress`` and ``egress`` (either way)."""

    domain: SpId
    ingress: TerminalId
    egress: TerminalId


# --- one query ----------------------------------------------------------------------------------


class Hop(NamedTuple):
    """One run through ``domain`` from ``ingress`` to ``egress``, then ``link`` out of it (None at dst).

    ``latency`` is the run's, ``link_ms`` the link's after it; ``money`` what the run costs per hour
    (micro-units, both directions); ``via`` the functions its route hosts, in order. A named tuple:
    searches make one per run they look at, and that is their hot path.
    """

    domain: SpId
    ingress: TerminalId
    egress: TerminalId
    latency: float
    link: InterLink | None
    nxt: TerminalId
    money: int = 0
    via: tuple[str, ...] = ()
    link_ms: float = 0.0

    @property
    def cost_ms(self) -> float:
        """The run's latency plus the link's."""
        return self.latency + self.link_ms


@dataclass(frozen=True)
class Checks:
    """Which constraints a search applies (explanations switch them on one at a time)."""

    avoid: bool = True
    exclude: bool = True
    include: bool = True
    policy: bool = True
    isolation: bool = True
    qos: bool = True
    bandwidth: bool = True
    labels: bool = True
    chain: bool = True

    def upto(self, last: Constraint) -> Checks:
        """Only the constraints up to ``last`` in the explanation order."""
        names = [c.value for c in EXPLAIN_ORDER]
        on = set(names[: names.index(last.value) + 1])
        return Checks(
            avoid=Constraint.CRANKBACK in on,
            exclude=Constraint.EXCLUDE in on,
            include=Constraint.INCLUDE in on,
            policy=Constraint.TRANSIT_POLICY in on,
            isolation=Constraint.ISOLATION in on,
            qos=Constraint.QOS in on,
            bandwidth=Constraint.BANDWIDTH in on,
            labels=Constraint.LABELS in on,
            chain=Constraint.CHAIN in on,
        )


EXPLAIN_ORDER: Final = (
    Constraint.PATH,
    Constraint.EXCLUDE,
    Constraint.INCLUDE,
    Constraint.TRANSIT_POLICY,
    Constraint.ISOLATION,
    Constraint.QOS,
    Constraint.BANDWIDTH,
    Constraint.LABELS,
    Constraint.CHAIN,
    # Last: when the request's own constraints leave candidates, a refusal below cut the last one.
    Constraint.CRANKBACK,
)


@dataclass
class Found:
    """A path a search found: its runs, the chain stage after each, its money (micro-units) and latency."""

    hops: list[Hop]
    stages: list[int]  # chain stage after each hop
    money: int
    latency: float


@dataclass
class Query:
    """One request against an index, with the constraints applied and per-query caches."""

    idx: Index
    request: SliceRequest
    taken: dict[tuple[str, str], set[int]]
    avoid: frozenset[tuple[SpId, TerminalId, TerminalId]]
    checks: Checks = field(default_factory=Checks)
    functions: tuple[ChainFunction, ...] = ()
    include_bit: dict[SpId, int] = field(default_factory=dict)
    _adj: dict[TerminalId, list[Hop]] = field(default_factory=dict)
    _rev: dict[TerminalId, list[Hop]] = field(default_factory=dict)
    _sp_ok: dict[SpId, bool] = field(default_factory=dict)
    _link_ok: dict[tuple[str, str], bool] = field(default_factory=dict)
    _adv: dict[tuple[SpId, tuple[str, ...]], list[int | None]] = field(default_factory=dict)

    def with_checks(self, checks: Checks) -> Query:
        """A fresh query (empty caches) applying ``checks``."""
        return Query(self.idx, self.request, self.taken, self.avoid, checks, self.functions, self.include_bit)

    @property
    def stages(self) -> int:
        """The chain stage of the goal (0 when the chain is not checked)."""
        return len(self.functions) if self.checks.chain else 0

    @property
    def full_mask(self) -> int:
        """The include mask of the goal."""
        return (1 << len(self.include_bit)) - 1 if self.checks.include else 0

    def sp_ok(self, sp: SpId) -> bool:
        """Whether ``sp`` may be on the path at all (exclusion, isolation, QoS)."""
        ok = self._sp_ok.get(sp)
        if ok is None:
            ok = self._sp_ok[sp] = self._judge_sp(sp)
        return ok

    def _judge_sp(self, sp: SpId) -> bool:
        req, note = self.request, self.idx.notes[sp]
        if self.checks.exclude and sp in req.exclude_sps:
            return False
        if self.checks.isolation and req.isolation is not None and isolation_for(note, req.isolation) is None:
            return False
        return not (self.checks.qos and req.qos_class and note.qos_class(req.qos_class) is None)

    def link_ok(self, link: InterLink) -> bool:
        """Whether ``link`` carries the bandwidth and has a usable label."""
        key = link_key(link.a.id, link.b.id)
        ok = self._link_ok.get(key)
        if ok is None:
            thin = self.checks.bandwidth and link.capacity_mbps < self.request.edge_mbps
            ok = not thin and not (self.checks.labels and link_labels(link, self.taken.get(key, set())) is None)
            self._link_ok[key] = ok
        return ok

    def advance(self, sp: SpId, via: tuple[str, ...], stage: int) -> int | None:
        """The chain stage after a run through ``sp`` whose route hosts ``via``, from ``stage`` (None: unusable)."""
        if not self.checks.chain or not self.functions:
            return stage
        return self._advances(sp, via)[stage]

    def _advances(self, sp: SpId, via: tuple[str, ...]) -> list[int | None]:
        adv = self._adv.get((sp, via))
        if adv is None:
            note = self.idx.notes[sp]
            chain = [(f.type, f.throughput_mbps) for f in self.functions]
            routed = note.routed_types()
            adv = [advance(note.functions, routed, chain, k, via) for k in range(len(chain) + 1)]
            self._adv[(sp, via)] = adv
        return adv

    def _runs(
        self, sp: SpId, u: TerminalId, v: TerminalId, entries: list[Entry], peer_out: str | None, *, flip: bool
    ) -> list[tuple[float, int, tuple[str, ...]]]:
        """(latency, money, route) of the runs ``u``→``v`` in ``sp`` that bandwidth, crankback and policy allow.

        ``entries`` are oriented from ``u``, or from ``v`` when ``flip`` (their routes are then read backwards).

        Per route, only entries no other is both faster and cheaper than (Pareto over latency, money).
        """
        if self.avoid and self.checks.avoid and (sp, u, v) in self.avoid:
            return []
        note = self.idx.notes[sp]
        if self.checks.policy and note.transit_policy:
            peer_in = self.idx.peer_sp(u)
            if peer_in is not None and peer_out is not None and not note.carries(peer_in, peer_out):
                return []
        need = self.request.edge_mbps if self.checks.bandwidth else 0
        both = self.request.bandwidth_mbps + self.request.reverse_mbps
        chain = self.checks.chain and bool(self.functions)
        if len(entries) == 1:  # the common case (a leaf's note): nothing to compare
            e = entries[0]
            if e.bandwidth < need:
                return []
            return [(e.latency, e.unit_micro * both, (e.via[::-1] if flip else e.via) if chain else ())]
        best: dict[tuple[str, ...], list[tuple[float, int]]] = {}
        for e in entries:
            if e.bandwidth < need:
                continue
            via = (e.via[::-1] if flip else e.via) if chain else ()
            front = best.setdefault(via, [])
            money = e.unit_micro * both
            if any(lat <= e.latency and m <= money for lat, m in front):
                continue
            front[:] = [(lat, m) for lat, m in front if not (e.latency <= lat and money <= m)]
            front.append((e.latency, money))
        return [(lat, m, via) for via, front in best.items() for lat, m in front]

    def hops(self, u: TerminalId) -> list[Hop]:
        """The runs leaving entry terminal ``u`` that every applied constraint allows (cached)."""
        out = self._adj.get(u)
        if out is not None:
            return out
        out = []
        idx, req = self.idx, self.request
        sp = idx.owner[u]
        if self.sp_ok(sp):
            for v, entries in idx.transit(u):
                link: InterLink | None = None
                if v == req.dst:
                    nxt, peer_out = _DST, idx.peer_sp(v)
                else:
                    link = idx.link_of(v)
                    if link is None or not self.sp_ok(link.b_domain) or not self.link_ok(link):
                        continue
                    nxt, peer_out = link.b.id, link.b_domain
                link_ms = link.latency_ms if link is not None else 0.0
                for lat, money, via in self._runs(sp, u, v, entries, peer_out, flip=False):
                    out.append(Hop(sp, u, v, lat, link, nxt, money, via, link_ms))
        self._adj[u] = out
        return out

    def into(self, w: TerminalId) -> list[Hop]:
        """The runs that every applied constraint allows and that end by entering ``w`` (cached)."""
        out = self._rev.get(w)
        if out is not None:
            return out
        out = []
        idx, req = self.idx, self.request
        if w == _DST:
            v, link, sp, entered = req.dst, None, idx.owner[req.dst], None
        else:
            back = idx.link_of(w)
            if back is None:
                self._rev[w] = out
                return out
            v, link, sp, entered = back.b.id, idx.link_of(back.b.id), back.b_domain, back.a_domain
        if self.sp_ok(sp) and (link is None or (self.sp_ok(link.b_domain) and self.link_ok(link))):
            peer_out = idx.peer_sp(v) if entered is None else entered
            link_ms = link.latency_ms if link is not None else 0.0
            for u, entries in idx.transit(v):
                for lat, money, via in self._runs(sp, u, v, entries, peer_out, flip=True):
                    out.append(Hop(sp, u, v, lat, link, w, money, via, link_ms))
        self._rev[w] = out
        return out

    def forward(self, state: tuple[TerminalId, int, int]) -> Iterator[tuple[tuple[TerminalId, int, int], Hop]]:
        """The states one run after ``state``."""
        u, stage, mask = state
        goal_stage, goal_mask = self.stages, self.full_mask
        for hop in self.hops(u):
            nstage, nmask = self.step(hop, stage, mask)
            if nstage is None or (hop.nxt == _DST and (nstage != goal_stage or nmask != goal_mask)):
                continue
            yield (hop.nxt, nstage, nmask), hop

    def backward(self, state: tuple[TerminalId, int, int]) -> Iterator[tuple[tuple[TerminalId, int, int], Hop]]:
        """The states one run before ``state``."""
        w, stage, mask = state
        for hop in self.into(w):
            bit = self.include_bit.get(hop.domain, 0) if self.checks.include else 0
            if bit and not mask & bit:
                continue
            masks = (mask, mask ^ bit) if bit else (mask,)
            for k in self.before(hop.domain, hop.via, stage):
                for m in masks:
                    yield (hop.ingress, k, m), hop

    def before(self, sp: SpId, via: tuple[str, ...], stage: int) -> list[int]:
        """The stages from which a run through ``sp`` with route ``via`` reaches ``stage``."""
        if not self.checks.chain or not self.functions:
            return [stage]
        adv = self._advances(sp, via)
        return [k for k in range(stage + 1) if adv[k] == stage]

    def step(self, hop: Hop, stage: int, mask: int) -> tuple[int | None, int]:
        """The (stage, mask) after ``hop``; the stage is None when the hop's route does not fit the chain here."""
        if self.checks.include:
            mask |= self.include_bit.get(hop.domain, 0)
        return self.advance(hop.domain, hop.via, stage), mask


def hosts(offer: FunctionOffer, fn: ChainFunction) -> bool:
    """An offer hosts a function of its type when it states no throughput or enough of it."""
    return offer.type == fn.type and (offer.throughput_mbps == 0 or offer.throughput_mbps >= fn.throughput_mbps)


def isolation_for(note: CapabilityNote, asked: Isolation) -> Isolation | None:
    """The weakest mechanism the note offers that is at least as strong as ``asked``."""
    fits = [i for i in note.isolation if _ISOLATION_ORDER[i] >= _ISOLATION_ORDER[asked]]
    return min(fits, key=_ISOLATION_ORDER.__getitem__) if fits else None


# --- searches -----------------------------------------------------------------------------------

_State = tuple[TerminalId, int, int]
_Cost = tuple[float, float, int]


def search(q: Query, *, latency_first: bool) -> Found | None:
    """Bidirectional Dijkstra over states with the cost (money, latency, hops), or latency first.

    Costs add componentwise and compare lexicographically, an ordered monoid, so the usual rule
    holds: stop once the two queues' minima add up to no less than the best meeting found.
    """
    start: _State = (q.request.src, 0, 0)
    goal: _State = (_DST, q.stages, q.full_mask)

    def key(money: float, lat: float, hops: int) -> _Cost:
        return (lat, money, hops) if latency_first else (money, lat, hops)

    dist: tuple[dict[_State, tuple[int, float, int]], dict[_State, tuple[int, float, int]]] = (
        {start: (0, 0.0, 0)},
        {goal: (0, 0.0, 0)},
    )
    parent: tuple[dict[_State, tuple[_State, Hop]], dict[_State, tuple[_State, Hop]]] = ({}, {})
    done: tuple[set[_State], set[_State]] = (set(), set())
    tie = itertools.count()
    heaps: tuple[list[tuple[float, float, int, int, _State]], ...] = (
        # Integer zeros: money may outgrow floats (1e308 prices), and int + float would then overflow.
        [(0, 0, 0, next(tie), start)],
        [(0, 0, 0, next(tie), goal)],
    )
    best: _Cost | None = None
    meet: _State | None = None
    while heaps[0] and heaps[1]:
        if best is not None:
            f, b = heaps[0][0], heaps[1][0]
            if (f[0] + b[0], f[1] + b[1], f[2] + b[2]) >= best:
                break
        side = 0 if len(heaps[0]) <= len(heaps[1]) else 1
        _, _, _, _, state = heapq.heappop(heaps[side])
        if state in done[side]:
            continue
        done[side].add(state)
        money, lat, hops = dist[side][state]
        other = dist[1 - side]
        for nxt, hop in q.forward(state) if side == 0 else q.backward(state):
            if nxt in done[side]:
                continue
            cand = (money + hop.money, lat + hop.cost_ms, hops + 1)
            old = dist[side].get(nxt)
            if old is None or key(*cand) < key(*old):
                dist[side][nxt] = cand
                parent[side][nxt] = (state, hop)
                heapq.heappush(heaps[side], (*key(*cand)[:2], cand[2], next(tie), nxt))
            theirs = other.get(nxt)
            if theirs is not None:
                mine = dist[side][nxt]
                total = key(mine[0] + theirs[0], mine[1] + theirs[1], mine[2] + theirs[2])
                if best is None or total < best:
                    best, meet = total, nxt
    if meet is None:
        return None
    steps: list[tuple[Hop, _State]] = []
    state = meet
    while state in parent[0]:
        prev, hop = parent[0][state]
        steps.append((hop, state))
        state = prev
    steps.reverse()
    state = meet
    while state in parent[1]:
        nxt, hop = parent[1][state]
        steps.append((hop, nxt))
        state = nxt
    hops_list = [h for h, _ in steps]
    money = dist[0][meet][0] + dist[1][meet][0]
    return Found(hops_list, [st[1] for _, st in steps], money, total_ms(h.cost_ms for h in hops_list))


def _reverse_costs(
    q: Query, weight: Callable[[Hop], float], keep: Callable[[TerminalId, float], bool]
) -> dict[TerminalId, float]:
    """Dijkstra from dst backwards over ``weight``, ignoring chain and include; only terminals ``keep`` allows."""
    costs: dict[TerminalId, float] = {}
    heap: list[tuple[float, str]] = [(0, _DST)]  # an int start keeps money sums exact integers
    while heap:
        d, v = heapq.heappop(heap)
        if v in costs:
            continue
        costs[TerminalId(v)] = d
        for hop in q.into(TerminalId(v)):
            nd = d + weight(hop)
            if hop.ingress not in costs and keep(hop.ingress, nd):
                heapq.heappush(heap, (nd, hop.ingress))
    return costs


def search_within(q: Query, budget: float, incumbent: Found) -> Found:
    """The cheapest path within ``budget``: A* label-setting over (money, latency) Pareto labels.

    Labels are popped by money plus the least money still to pay (so per state in money order),
    pruned when even the fastest way on cannot meet the budget or the cheapest cannot beat the
    incumbent, and dropped when an earlier label at the same state was no slower.
    """
    # The least latency to dst (terminals farther than the budget are of no use), then among those
    # terminals the least money still to pay: a consistent A* heuristic.
    bound = _reverse_costs(q, lambda h: h.cost_ms, lambda _, d: d <= budget)
    to_pay = _reverse_costs(q, lambda h: h.money, lambda t, _: t in bound)
    goal_stage, goal_mask = q.stages, q.full_mask
    start: _State = (q.request.src, 0, 0)
    labels: list[tuple[int, Hop | None, _State]] = [(-1, None, start)]  # (parent label, hop, state)
    settled: dict[_State, float] = {}  # the lowest latency of a label popped at each state
    tie = itertools.count()
    heap: list[tuple[float, float, int, int, int, int]] = [(to_pay.get(start[0], 0), 0.0, 0, next(tie), 0, 0)]
    limit = incumbent.money
    while heap:
        _, lat, hops, _, money, label = heapq.heappop(heap)
        state = labels[label][2]
        if settled.get(state, math.inf) <= lat:
            continue  # dominated: an earlier label here was no dearer and no slower
        settled[state] = lat
        u, stage, mask = state
        if u == _DST:
            return _trace_labels(labels, label, money)
        for hop in q.hops(u):
            nstage, nmask = q.step(hop, stage, mask)
            if nstage is None or (hop.nxt == _DST and (nstage < goal_stage or nmask != goal_mask)):
                continue
            nlat = lat + hop.cost_ms
            rest = bound.get(hop.nxt)
            if rest is None or nlat + rest > budget:
                continue
            nmoney = money + hop.money
            f = nmoney + to_pay[hop.nxt]
            if f > limit:
                continue
            nxt: _State = (hop.nxt, nstage, nmask)
            if settled.get(nxt, math.inf) <= nlat:
                continue
            labels.append((label, hop, nxt))
            heapq.heappush(heap, (f, nlat, hops + 1, next(tie), nmoney, len(labels) - 1))
    return incumbent  # the incumbent is feasible, so the search cannot come back empty-handed


def _trace_labels(labels: Sequence[tuple[int, Hop | None, _State]], label: int, money: int) -> Found:
    hops: list[Hop] = []
    stages: list[int] = []
    while labels[label][1] is not None:
        parent, hop, state = labels[label]
        assert hop is not None
        hops.append(hop)
        stages.append(state[1])
        label = parent
    hops.reverse()
    stages.reverse()
    return Found(hops, stages, money, total_ms(h.cost_ms for h in hops))

"""Decomposition: one request between two terminals, split into per-child segments. Pure, no I/O.

**Search space.** A path alternates *runs* (one transit edge inside one child, from the terminal
where it enters the child to the terminal where it leaves) and *inter-domain links* (two ports
that declare each other as peers). The search walks states ``(entry terminal, chain stage,
include mask)``: the stage counts the chain functions placed so far (a layered graph over the
chain), the mask the ``include_sps`` crossed. A run through child X at stage k places, greedily,
as many of the next functions as X offers with free slots and enough throughput; a state further
along the chain dominates one behind it at equal cost, so greedy placement loses nothing.

**Feasibility.** Every run and link carries the request's larger direction of bandwidth (notes
state capacity per direction); every child on the path is not excluded, offers the QoS class and an
isolation mechanism at least as strong as asked; its transit policy carries traffic between the
peers on both sides of the run; each inter-domain link has a usable label; the chain is placed in
order; the path's latency is within the budget and its price under the ceiling.

**Cost** (``PlanCost``): money first (sum over runs of the child's ``price_per_mbps_hour`` times
the bandwidth of both directions; unpriced children add nothing), then latency, then the number of
segments. Without a latency budget that is one Dijkstra over the lexicographic cost. With one, the
cheapest path is tried first; when it is too slow and the fastest path fits, an exact label-setting
search over (money, latency) Pareto labels, pruned by a latency lower bound to the destination and
by the fastest path's money, finds the cheapest path within the budget.

**Explanations.** When nothing fits, the constraints are applied one at a time in a fixed order
(exclude, include, transit policy, isolation, QoS, bandwidth, labels, chain, runs refused in
crankback, latency, price) and the
first one after which no candidate is left is named, with the best path found just before it.

Label rule per inter-child link (ports ``a`` and ``b``; ``used`` = used and excluded labels of the
link key): when ``a.labels & b.labels - used`` is non-empty, both sides must use one of those.
Otherwise, when a side can swap, each side picks from its own labels minus ``used``; the link's
candidates are then the non-swapping side's free labels (the path-first side's when both swap),
and it is usable only if every side has a free label. Otherwise the link is unusable.

**Budget split.** Each segment gets its transit latency plus a share of the slack proportional to
it (equal shares when the path has no latency), rounded down to 1e-6 ms: shares sum to at most the
budget and none is below the segment's transit latency.
"""

from __future__ import annotations

import heapq
import ipaddress
import itertools
import math
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Final

from capability_catalog.graph import InterLink, link_key
from capability_catalog.model import (
    BorderPort,
    CapabilityNote,
    FunctionOffer,
    Isolation,
    LabelRange,
    LabelSet,
    SpId,
    TerminalId,
)
from slicing.errors import Constraint, FailedPrecondition, FedError, InvalidArgument, ResourceExhausted
from slicing.model import (
    ChainFunction,
    FunctionPlacement,
    LinkPlan,
    Plan,
    PlanCost,
    PortConstraint,
    SegmentPlan,
    SliceRequest,
)

__all__ = ["MAX_INCLUDE_SPS", "Run", "iter_runs", "link_key", "plan"]

LabelMap = Mapping[tuple[str, str], set[int]]

#: Money is summed in micro-units as integers so equal prices compare equal whatever the order.
_MICRO: Final = 1_000_000
_MAX_SEGMENT_PREFIX = 30
#: Each included SP doubles the search space (the include mask); beyond this, refuse.
MAX_INCLUDE_SPS: Final = 4
_ISOLATION_ORDER: Final = {iso: i for i, iso in enumerate(Isolation)}
_DST: Final = TerminalId("\x00dst")  # the goal state's terminal; no real terminal id has a NUL


@dataclass(frozen=True)
class Run:
    """A run the planner must avoid: child ``domain`` between ``ingress`` and ``egress`` (either way)."""

    domain: SpId
    ingress: TerminalId
    egress: TerminalId


# --- the static index over a set of notes (cached: notes change far less often than requests) ----


@dataclass
class _Index:
    """What the search needs from a set of notes; per-SP parts are built the first time a search touches them."""

    notes: Mapping[SpId, CapabilityNote]
    owner: dict[TerminalId, SpId]
    ports: dict[TerminalId, tuple[SpId, BorderPort]]
    _transit: dict[SpId, dict[TerminalId, list[tuple[TerminalId, list[tuple[float, int]]]]]] = field(
        default_factory=dict
    )
    _links: dict[TerminalId, InterLink | None] = field(default_factory=dict)

    def transit(self, u: TerminalId) -> list[tuple[TerminalId, list[tuple[float, int]]]]:
        """The other terminals of ``u``'s SP and the (latency, bandwidth) Pareto front of transit to each."""
        sp = self.owner[u]
        adj = self._transit.get(sp)
        if adj is None:
            adj = self._transit[sp] = _transit_of(sp, self.notes[sp], self.owner)
        return adj.get(u, [])

    def link_of(self, pid: TerminalId) -> InterLink | None:
        """The link leaving through port ``pid``, oriented with ``a`` = that port, when both sides declare it."""
        if pid in self._links:
            return self._links[pid]
        link = None
        mine = self.ports.get(pid)
        if mine is not None:
            sp, port = mine
            peer = self.ports.get(port.peer_port)
            # As in capability_catalog.graph.inter_links: both sides declare each other, two SPs.
            if peer is not None and peer[1].peer_port == pid and peer[0] != sp:
                link = InterLink(port, peer[1], sp, peer[0])
        self._links[pid] = link
        return link

    def peer_sp(self, t: TerminalId) -> SpId | None:
        """The peer SP a port declares (None for an endpoint)."""
        mine = self.ports.get(t)
        return mine[1].peer_sp if mine is not None else None


def _transit_of(
    sp: SpId, note: CapabilityNote, owner: Mapping[TerminalId, SpId]
) -> dict[TerminalId, list[tuple[TerminalId, list[tuple[float, int]]]]]:
    pairs: dict[tuple[TerminalId, TerminalId], list[tuple[float, int]]] = {}
    for t in note.transit:
        a, b = t.a, t.b
        if a == b or owner.get(a) != sp or owner.get(b) != sp:
            continue
        entry = (float(t.latency_ms), int(t.bandwidth_mbps))
        found = pairs.get((a, b)) or pairs.get((b, a))
        if found is None:
            pairs[(a, b)] = [entry]
        else:
            found.append(entry)
    adj: dict[TerminalId, list[tuple[TerminalId, list[tuple[float, int]]]]] = {}
    for (a, b), entries in pairs.items():
        front = entries
        if len(entries) > 1:
            entries.sort(key=lambda e: (e[0], -e[1]))
            front = []
            for lat, bw in entries:  # keep the Pareto front: each later entry must be wider
                if not front or bw > front[-1][1]:
                    front.append((lat, bw))
        adj.setdefault(a, []).append((b, front))
        adj.setdefault(b, []).append((a, front))
    return adj


_CACHE: dict[tuple[tuple[str, int, int], ...], _Index] = {}
_CACHE_SIZE: Final = 4


def _index(notes: Mapping[SpId, CapabilityNote]) -> _Index:
    key = tuple((sp, n.version, id(n)) for sp, n in notes.items())
    idx = _CACHE.get(key)
    if idx is not None and all(idx.notes.get(sp) is n for sp, n in notes.items()):
        return idx
    idx = _build_index(dict(notes))
    if len(_CACHE) >= _CACHE_SIZE:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = idx  # the index keeps the notes alive, so their ids cannot be reused meanwhile
    return idx


def _build_index(notes: Mapping[SpId, CapabilityNote]) -> _Index:
    owner: dict[TerminalId, SpId] = {}
    ports: dict[TerminalId, tuple[SpId, BorderPort]] = {}
    for sp, note in notes.items():
        for e in note.endpoints:
            owner[e.id] = sp
        for p in note.ports:
            owner[p.id] = sp
            ports[p.id] = (sp, p)
    return _Index(notes, owner, ports)


# --- one query ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Hop:
    """One run through ``domain`` from ``ingress`` to ``egress``, then ``link`` out of it (None at dst)."""

    domain: SpId
    ingress: TerminalId
    egress: TerminalId
    latency: float
    link: InterLink | None
    nxt: TerminalId


@dataclass(frozen=True)
class _Checks:
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

    def upto(self, last: Constraint) -> _Checks:
        """Only the constraints up to ``last`` in the explanation order."""
        names = [c.value for c in _ORDER]
        on = set(names[: names.index(last.value) + 1])
        return _Checks(
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


_ORDER: Final = (
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
class _Found:
    hops: list[_Hop]
    stages: list[int]  # chain stage after each hop
    money: int
    latency: float


@dataclass
class _Query:
    idx: _Index
    request: SliceRequest
    taken: dict[tuple[str, str], set[int]]
    avoid: frozenset[tuple[SpId, TerminalId, TerminalId]]
    checks: _Checks = field(default_factory=_Checks)
    functions: tuple[ChainFunction, ...] = ()
    include_bit: dict[SpId, int] = field(default_factory=dict)
    _adj: dict[TerminalId, list[_Hop]] = field(default_factory=dict)
    _rev: dict[TerminalId, list[_Hop]] = field(default_factory=dict)
    _sp_ok: dict[SpId, bool] = field(default_factory=dict)
    _link_ok: dict[tuple[str, str], bool] = field(default_factory=dict)
    _adv: dict[SpId, list[int]] = field(default_factory=dict)
    _price: dict[SpId, int] = field(default_factory=dict)

    def with_checks(self, checks: _Checks) -> _Query:
        """A fresh query (empty caches) applying ``checks``."""
        return _Query(self.idx, self.request, self.taken, self.avoid, checks, self.functions, self.include_bit)

    @property
    def stages(self) -> int:
        return len(self.functions) if self.checks.chain else 0

    @property
    def full_mask(self) -> int:
        return (1 << len(self.include_bit)) - 1 if self.checks.include else 0

    def sp_ok(self, sp: SpId) -> bool:
        ok = self._sp_ok.get(sp)
        if ok is None:
            ok = self._sp_ok[sp] = self._judge_sp(sp)
        return ok

    def _judge_sp(self, sp: SpId) -> bool:
        req, note = self.request, self.idx.notes[sp]
        if self.checks.exclude and sp in req.exclude_sps:
            return False
        if self.checks.isolation and req.isolation is not None and _isolation_for(note, req.isolation) is None:
            return False
        return not (self.checks.qos and req.qos_class and note.qos_class(req.qos_class) is None)

    def link_ok(self, link: InterLink) -> bool:
        key = link_key(link.a.id, link.b.id)
        ok = self._link_ok.get(key)
        if ok is None:
            thin = self.checks.bandwidth and link.capacity_mbps < self.request.edge_mbps
            ok = not thin and not (self.checks.labels and _link_labels(link, self.taken.get(key, set())) is None)
            self._link_ok[key] = ok
        return ok

    def price(self, sp: SpId) -> int:
        """Micro-money per hour of one run through ``sp``."""
        p = self._price.get(sp)
        if p is None:
            unit = self.idx.notes[sp].price_per_mbps_hour or 0.0
            p = self._price[sp] = round(unit * _MICRO) * (self.request.bandwidth_mbps + self.request.reverse_mbps)
        return p

    def advance(self, sp: SpId, stage: int) -> int:
        """How many chain functions from ``stage`` on a run through ``sp`` places (greedy, in order)."""
        if not self.checks.chain or not self.functions:
            return 0
        adv = self._adv.get(sp)
        if adv is None:
            adv = self._adv[sp] = _advances(self.idx.notes[sp].functions, self.functions)
        return adv[stage]

    def hops(self, u: TerminalId) -> list[_Hop]:
        """The runs leaving entry terminal ``u`` that every applied constraint allows (cached)."""
        out = self._adj.get(u)
        if out is not None:
            return out
        out = []
        idx, req = self.idx, self.request
        sp = idx.owner[u]
        if self.sp_ok(sp):
            need = req.edge_mbps if self.checks.bandwidth else 0
            note = idx.notes[sp]
            policy = self.checks.policy and bool(note.transit_policy)
            peer_in = idx.peer_sp(u)
            for v, front in idx.transit(u):
                lat = next((lat for lat, bw in front if bw >= need), None)
                if lat is None or (self.checks.avoid and (sp, u, v) in self.avoid):
                    continue
                if v == req.dst:
                    peer_out = idx.peer_sp(v)
                    if policy and peer_in is not None and peer_out is not None and not note.carries(peer_in, peer_out):
                        continue
                    out.append(_Hop(sp, u, v, lat, None, _DST))
                    continue
                link = idx.link_of(v)
                if link is None or not self.sp_ok(link.b_domain) or not self.link_ok(link):
                    continue
                if policy and peer_in is not None and not note.carries(peer_in, link.b_domain):
                    continue
                out.append(_Hop(sp, u, v, lat, link, link.b.id))
        self._adj[u] = out
        return out

    def into(self, w: TerminalId) -> list[_Hop]:
        """The runs that every applied constraint allows and that end by entering ``w`` (cached)."""
        out = self._rev.get(w)
        if out is not None:
            return out
        out = []
        idx, req = self.idx, self.request
        need = req.edge_mbps if self.checks.bandwidth else 0
        if w == _DST:
            v, link, sp, entered = req.dst, None, idx.owner[req.dst], None
        else:
            back = idx.link_of(w)
            if back is None:
                self._rev[w] = out
                return out
            v, link, sp, entered = back.b.id, idx.link_of(back.b.id), back.b_domain, back.a_domain
        if self.sp_ok(sp) and (link is None or (self.sp_ok(link.b_domain) and self.link_ok(link))):
            note = idx.notes[sp]
            policy = self.checks.policy and bool(note.transit_policy)
            peer_out = idx.peer_sp(v) if entered is None else entered
            for u, front in idx.transit(v):
                lat = next((lat for lat, bw in front if bw >= need), None)
                if lat is None or (self.checks.avoid and (sp, u, v) in self.avoid):
                    continue
                peer_in = idx.peer_sp(u)
                if policy and peer_in is not None and peer_out is not None and not note.carries(peer_in, peer_out):
                    continue
                out.append(_Hop(sp, u, v, lat, link, w))
        self._rev[w] = out
        return out

    def forward(self, state: tuple[TerminalId, int, int]) -> Iterator[tuple[tuple[TerminalId, int, int], _Hop]]:
        """The states one run after ``state``."""
        u, stage, mask = state
        goal_stage, goal_mask = self.stages, self.full_mask
        for hop in self.hops(u):
            nstage, nmask = self.step(hop, stage, mask)
            if hop.nxt == _DST and (nstage != goal_stage or nmask != goal_mask):
                continue
            yield (hop.nxt, nstage, nmask), hop

    def backward(self, state: tuple[TerminalId, int, int]) -> Iterator[tuple[tuple[TerminalId, int, int], _Hop]]:
        """The states one run before ``state``."""
        w, stage, mask = state
        for hop in self.into(w):
            bit = self.include_bit.get(hop.domain, 0) if self.checks.include else 0
            if bit and not mask & bit:
                continue
            masks = (mask, mask ^ bit) if bit else (mask,)
            for k in self.before(hop.domain, stage):
                for m in masks:
                    yield (hop.ingress, k, m), hop

    def before(self, sp: SpId, stage: int) -> list[int]:
        """The stages from which a run through ``sp`` reaches ``stage``."""
        if not self.checks.chain or not self.functions:
            return [stage]
        self.advance(sp, 0)
        adv = self._adv[sp]
        return [k for k in range(stage + 1) if k + adv[k] == stage]

    def step(self, hop: _Hop, stage: int, mask: int) -> tuple[int, int]:
        """The (stage, mask) after ``hop``."""
        if self.checks.include:
            mask |= self.include_bit.get(hop.domain, 0)
        return stage + self.advance(hop.domain, stage), mask


def _advances(offers: Sequence[FunctionOffer], chain: Sequence[ChainFunction]) -> list[int]:
    out = []
    for k in range(len(chain) + 1):
        free = {i: o.slots for i, o in enumerate(offers) if o.slots > 0}
        j = k
        while j < len(chain):
            fn = chain[j]
            pick = next((i for i, o in enumerate(offers) if free.get(i, 0) > 0 and _hosts(o, fn)), None)
            if pick is None:
                break
            free[pick] -= 1
            j += 1
        out.append(j - k)
    return out


def _hosts(offer: FunctionOffer, fn: ChainFunction) -> bool:
    """An offer hosts a function of its type when it states no throughput or enough of it."""
    return offer.type == fn.type and (offer.throughput_mbps == 0 or offer.throughput_mbps >= fn.throughput_mbps)


def _isolation_for(note: CapabilityNote, asked: Isolation) -> Isolation | None:
    """The weakest mechanism the note offers that is at least as strong as ``asked``."""
    fits = [i for i in note.isolation if _ISOLATION_ORDER[i] >= _ISOLATION_ORDER[asked]]
    return min(fits, key=_ISOLATION_ORDER.__getitem__) if fits else None


# --- searches -----------------------------------------------------------------------------------

_State = tuple[TerminalId, int, int]
_Cost = tuple[float, float, int]


def _search(q: _Query, *, latency_first: bool) -> _Found | None:
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
    parent: tuple[dict[_State, tuple[_State, _Hop]], dict[_State, tuple[_State, _Hop]]] = ({}, {})
    done: tuple[set[_State], set[_State]] = (set(), set())
    tie = itertools.count()
    heaps: tuple[list[tuple[float, float, int, int, _State]], ...] = (
        [(0, 0.0, 0, next(tie), start)],
        [(0, 0.0, 0, next(tie), goal)],
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
            cand = (money + q.price(hop.domain), lat + hop.latency, hops + 1)
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
    steps: list[tuple[_Hop, _State]] = []
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
    return _Found(hops_list, [st[1] for _, st in steps], money, math.fsum(h.latency for h in hops_list))


def _latency_bound(q: _Query) -> dict[TerminalId, float]:
    """A lower bound on the latency from each entry terminal to dst (ignoring chain and include)."""
    bound: dict[TerminalId, float] = {}
    heap: list[tuple[float, str]] = [(0.0, _DST)]
    while heap:
        d, v = heapq.heappop(heap)
        if v in bound:
            continue
        bound[TerminalId(v)] = d
        for hop in q.into(TerminalId(v)):
            if hop.ingress not in bound:
                heapq.heappush(heap, (d + hop.latency, hop.ingress))
    return bound


def _search_within(q: _Query, budget: float, incumbent: _Found) -> _Found:
    """The cheapest path within ``budget``: label-setting over (money, latency) Pareto labels."""
    bound = _latency_bound(q)
    goal_stage, goal_mask = q.stages, q.full_mask
    start: _State = (q.request.src, 0, 0)
    labels: list[tuple[int, _Hop | None, _State]] = [(-1, None, start)]  # (parent label, hop, state)
    settled: dict[_State, float] = {}  # the lowest latency of a label popped at each state
    tie = itertools.count()
    heap: list[tuple[int, float, int, int, int]] = [(0, 0.0, 0, next(tie), 0)]
    limit = incumbent.money
    while heap:
        money, lat, hops, _, label = heapq.heappop(heap)
        state = labels[label][2]
        if settled.get(state, math.inf) <= lat:
            continue  # dominated: an earlier label here was no dearer and no slower
        settled[state] = lat
        u, stage, mask = state
        if u == _DST:
            return _trace_labels(labels, label, money)
        for hop in q.hops(u):
            nstage, nmask = q.step(hop, stage, mask)
            if hop.nxt == _DST and (nstage < goal_stage or nmask != goal_mask):
                continue
            nlat = lat + hop.latency
            rest = bound.get(hop.nxt)
            if rest is None or nlat + rest > budget:
                continue
            nmoney = money + q.price(hop.domain)
            if nmoney > limit:
                continue
            nxt: _State = (hop.nxt, nstage, nmask)
            if settled.get(nxt, math.inf) <= nlat:
                continue
            labels.append((label, hop, nxt))
            heapq.heappush(heap, (nmoney, nlat, hops + 1, next(tie), len(labels) - 1))
    return incumbent  # the incumbent is feasible, so the search cannot come back empty-handed


def _trace_labels(labels: Sequence[tuple[int, _Hop | None, _State]], label: int, money: int) -> _Found:
    hops: list[_Hop] = []
    stages: list[int] = []
    while labels[label][1] is not None:
        parent, hop, state = labels[label]
        assert hop is not None
        hops.append(hop)
        stages.append(state[1])
        label = parent
    hops.reverse()
    stages.reverse()
    return _Found(hops, stages, money, math.fsum(h.latency for h in hops))


# --- the entry point ----------------------------------------------------------------------------


def plan(
    request: SliceRequest,
    notes: Mapping[SpId, CapabilityNote],
    *,
    used_labels: LabelMap | None = None,
    exclude_labels: LabelMap | None = None,
    avoid_runs: Collection[Run] = (),
) -> Plan:
    """Decompose ``request`` over the children's ``notes`` at the least cost, or raise why it cannot be done.

    ``used_labels`` are labels held on inter-child links now, ``exclude_labels`` labels to avoid
    (crankback after a disagreement), ``avoid_runs`` runs a child refused (crankback after a refusal).
    """
    idx = _index(notes)
    _validate(request, notes, idx.owner)
    taken: dict[tuple[str, str], set[int]] = {}
    for source in (used_labels or {}, exclude_labels or {}):
        for (a, b), values in source.items():
            taken.setdefault(link_key(a, b), set()).update(values)
    own_constraints = _own_constraints(request, notes, idx.owner)
    visible = set(notes)
    include = [sp for sp in dict.fromkeys(request.include_sps)]
    for i, sp in enumerate(include):
        if sp not in visible:
            raise FailedPrecondition(
                f"include: SP '{sp}' is not among the SPs this level buys from ({', '.join(sorted(visible))})",
                field=f"request.include_sps[{i}]",
                constraint=Constraint.INCLUDE,
            )
    avoid = frozenset(
        key for r in avoid_runs for key in ((r.domain, r.ingress, r.egress), (r.domain, r.egress, r.ingress))
    )
    q = _Query(
        idx,
        request,
        taken,
        avoid,
        functions=request.functions(),
        include_bit={SpId(sp): 1 << i for i, sp in enumerate(include)},
    )
    found = _best(q)
    if found is None:
        raise _explain(q)
    return _assemble(q, found, own_constraints)


def _best(q: _Query) -> _Found | None:
    """The cheapest feasible path under every constraint, or None."""
    req = q.request
    budget = req.latency_budget_ms
    cheapest = _search(q, latency_first=False)
    if cheapest is None:
        return None
    if budget > 0 and cheapest.latency > budget:
        fastest = _search(q, latency_first=True)
        if fastest is None or fastest.latency > budget:
            return None
        cheapest = _search_within(q, budget, fastest)
    ceiling = req.max_price_per_hour
    if ceiling > 0 and cheapest.money > round(ceiling * _MICRO):
        return None
    return cheapest


def _via(q: _Query, found: _Found) -> str:
    doms = [h.domain for h in found.hops]
    return "→".join(doms)


def _explain(q: _Query) -> FedError:
    """The error naming the constraint that cut off the last candidate."""
    req = q.request
    route = f"from {req.src} to {req.dst}"
    previous: _Found | None = None
    for constraint in _ORDER:
        found = _search(q.with_checks(q.checks.upto(constraint)), latency_first=True)
        if found is not None:
            previous = found
            continue
        via = f"; without it the best path runs via {_via(q, previous)}" if previous is not None else ""
        reason = _chain_reason(q) if constraint is Constraint.CHAIN else _REASONS[constraint](q)
        cls = ResourceExhausted if constraint in _CAPACITY else FailedPrecondition
        return cls(f"{constraint}: {reason} {route}{via}", constraint=constraint)
    assert previous is not None
    budget, ceiling = req.latency_budget_ms, req.max_price_per_hour
    if budget > 0 and previous.latency > budget:
        return ResourceExhausted(
            f"latency: best path {previous.latency:.6g} ms via {_via(q, previous)} exceeds budget {budget:g} ms",
            constraint=Constraint.LATENCY,
        )
    within = _search_within(q, budget, previous) if budget > 0 else _search(q, latency_first=False)
    assert within is not None
    return FailedPrecondition(
        f"price: cheapest plan costs {within.money / _MICRO:.6g} per hour via {_via(q, within)}, "
        f"over the ceiling of {ceiling:g} per hour",
        constraint=Constraint.PRICE,
    )


_CAPACITY: Final = frozenset(
    {Constraint.PATH, Constraint.CRANKBACK, Constraint.BANDWIDTH, Constraint.LABELS, Constraint.CHAIN}
)
_REASONS: Final[dict[Constraint, Callable[[_Query], str]]] = {
    Constraint.PATH: lambda q: "no route at all in the notes held",
    Constraint.CRANKBACK: lambda q: (
        "no route avoids the runs lower SPs refused ("
        + ", ".join(sorted({f"{d} {a}–{b}" for d, a, b in q.avoid if a < b}))
        + ")"
    ),
    Constraint.EXCLUDE: lambda q: f"no route avoids the excluded SPs {', '.join(q.request.exclude_sps)}",
    Constraint.INCLUDE: lambda q: f"no route crosses every included SP {', '.join(q.request.include_sps)}",
    Constraint.TRANSIT_POLICY: lambda q: "no route that every SP's transit policy allows",
    Constraint.ISOLATION: lambda q: f"no route whose every SP offers isolation {q.request.isolation} or stronger",
    Constraint.QOS: lambda q: f"no route whose every SP offers QoS class '{q.request.qos_class}'",
    Constraint.BANDWIDTH: lambda q: f"no route with {q.request.edge_mbps} Mb/s on every edge",
    Constraint.LABELS: lambda q: "no route with a free label on every inter-domain link",
}


def _chain_reason(q: _Query) -> str:
    """Name the first chain function that no route can host after the ones before it."""
    k = 0
    while k < len(q.functions):
        prefix = replace(q.with_checks(q.checks), functions=q.functions[: k + 1])
        if _search(prefix, latency_first=True) is None:
            break
        k += 1
    fn = q.functions[min(k, len(q.functions) - 1)]
    after = " after the functions before it" if k else ""
    return (
        f"request.chain[{k}] '{fn.type}' ({fn.throughput_mbps} Mb/s): no SP with a free slot for it{after} on any route"
    )


# --- from a path to a plan ----------------------------------------------------------------------


def _assemble(q: _Query, found: _Found, own_constraints: dict[TerminalId, PortConstraint]) -> Plan:
    req, notes = q.request, q.idx.notes
    hops = found.hops
    placements = _place(q, found)
    shares = _shares([h.latency for h in hops], req.latency_budget_ms)
    subnets = _subnets(req.subnet, len(hops))

    constraints: dict[TerminalId, PortConstraint] = dict(own_constraints)
    link_plans: list[LinkPlan] = []
    for hop in hops:
        if hop.link is None:
            continue
        link = hop.link
        labels = _link_labels(link, q.taken.get(link_key(link.a.id, link.b.id), set()))
        assert labels is not None  # links without a usable label were never expanded
        preferred = _lowest(labels.candidates)
        link_plans.append(
            LinkPlan(
                a_port=link.a.id,
                b_port=link.b.id,
                a_domain=link.a_domain,
                b_domain=link.b_domain,
                candidates=labels.candidates,
                preferred=preferred,
                a_can_swap=link.a.can_swap,
                b_can_swap=link.b.can_swap,
            )
        )
        for port_id, allowed in labels.per_port.items():
            own_preferred = preferred if preferred in allowed else _lowest(allowed)
            constraints[port_id] = PortConstraint(port_id, allowed, own_preferred)

    segments = []
    for i, hop in enumerate(hops):
        note = notes[hop.domain]
        placed = [p for p in placements if p.segment == i]
        qos = note.qos_class(req.qos_class) if req.qos_class else None
        sub = SliceRequest(
            src=hop.ingress,
            dst=hop.egress,
            bandwidth_mbps=req.bandwidth_mbps,
            reverse_bandwidth_mbps=req.reverse_bandwidth_mbps,
            name=f"{req.name}/{i}",
            latency_budget_ms=shares[i],
            chain=tuple(p.fn.type for p in placed),
            chain_throughput_mbps=tuple(p.fn.throughput_mbps for p in placed) if placed else (),
            subnet=subnets[i],
            port_constraints=tuple(constraints[t] for t in (hop.ingress, hop.egress) if t in constraints),
            qos_class=req.qos_class,
            isolation=req.isolation,
            exclude_sps=req.exclude_sps,
            trace=req.trace,
        )
        segments.append(
            SegmentPlan(
                index=i,
                domain=hop.domain,
                request=sub,
                transit_latency_ms=hop.latency,
                latency_share_ms=shares[i],
                qos_native=qos.native if qos is not None else (),
                price_per_hour=q.price(hop.domain) / _MICRO,
                isolation=_isolation_for(note, req.isolation) if req.isolation is not None else None,
            )
        )
    path: list[TerminalId] = [req.src]
    for hop in hops:
        path.append(hop.egress)
        if hop.link is not None:
            path.append(hop.link.b.id)
    return Plan(
        segments=tuple(segments),
        links=tuple(link_plans),
        total_latency_ms=found.latency,
        path=tuple(path),
        placements=tuple(FunctionPlacement(p.index, p.fn.type, hops[p.segment].domain, p.site) for p in placements),
        cost=PlanCost(found.money / _MICRO, found.latency, len(hops)),
    )


@dataclass(frozen=True)
class _Placed:
    index: int
    fn: ChainFunction
    segment: int
    site: str


def _place(q: _Query, found: _Found) -> list[_Placed]:
    """Each function at a site of the run the search placed it in; slots counted over the whole path."""
    used: dict[tuple[SpId, int], int] = {}
    out: list[_Placed] = []
    stage = 0
    for i, (hop, after) in enumerate(zip(found.hops, found.stages, strict=True)):
        offers = q.idx.notes[hop.domain].functions
        for k in range(stage, after):
            fn = q.functions[k]
            pick = next(
                (j for j, o in enumerate(offers) if _hosts(o, fn) and o.slots - used.get((hop.domain, j), 0) > 0),
                None,
            )
            if pick is None:  # only when a path crosses one SP twice and both runs want its slots
                raise ResourceExhausted(
                    f"chain: request.chain[{k}] '{fn.type}' has no free slot left in {hop.domain} "
                    f"for the path via {_via(q, found)}",
                    constraint=Constraint.CHAIN,
                )
            used[(hop.domain, pick)] = used.get((hop.domain, pick), 0) + 1
            out.append(_Placed(k, fn, i, offers[pick].site))
        stage = after
    return out


# --- validation ---------------------------------------------------------------------------------


def _validate(request: SliceRequest, notes: Mapping[SpId, CapabilityNote], owner: Mapping[TerminalId, SpId]) -> None:
    for name in ("src", "dst"):
        value: str = getattr(request, name)
        if not value:
            raise InvalidArgument(f"request.{name}", "must not be empty")
        if value not in owner:
            raise InvalidArgument(f"request.{name}", f"unknown terminal '{value}' (not in any note held)")
        peer = _internal_peer(TerminalId(value), notes, owner)
        if peer is not None:
            raise InvalidArgument(
                f"request.{name}", f"'{value}' is linked to '{peer}' inside this subtree, so it is not a terminal here"
            )
    if request.src == request.dst:
        raise InvalidArgument("request.dst", "must differ from src")
    if request.bandwidth_mbps <= 0:
        raise InvalidArgument("request.bandwidth_mbps", "must be positive")
    if request.reverse_bandwidth_mbps < 0:
        raise InvalidArgument("request.reverse_bandwidth_mbps", "must be zero (same as forward) or positive")
    if not math.isfinite(request.latency_budget_ms) or request.latency_budget_ms < 0:
        raise InvalidArgument("request.latency_budget_ms", "must be zero (unbounded) or a positive number")
    if not math.isfinite(request.max_price_per_hour) or request.max_price_per_hour < 0:
        raise InvalidArgument("request.max_price_per_hour", "must be zero (no ceiling) or a positive number")
    if "/" not in request.subnet:
        raise InvalidArgument("request.subnet", f"'{request.subnet}' is not in CIDR notation (a.b.c.d/len)")
    try:
        ipaddress.IPv4Network(request.subnet, strict=True)
    except ValueError as exc:
        raise InvalidArgument("request.subnet", f"not an IPv4 CIDR network: {exc}") from None
    seen: set[str] = set()
    for i, c in enumerate(request.port_constraints):
        if c.port not in (request.src, request.dst):
            raise InvalidArgument(f"request.port_constraints[{i}].port", f"'{c.port}' is neither src nor dst")
        if c.port in seen:
            raise InvalidArgument(f"request.port_constraints[{i}].port", f"second constraint on '{c.port}'")
        seen.add(c.port)
    for i, fn in enumerate(request.chain):
        if not isinstance(fn, str) or not fn:
            raise InvalidArgument(f"request.chain[{i}]", "must be a non-empty function type")
    if len(request.chain_throughput_mbps) > len(request.chain):
        raise InvalidArgument("request.chain_throughput_mbps", "has more entries than the chain has functions")
    for i, mbps in enumerate(request.chain_throughput_mbps):
        if mbps < 0:
            raise InvalidArgument(f"request.chain_throughput_mbps[{i}]", "must be zero (the slice's) or positive")
    if len(set(request.include_sps)) > MAX_INCLUDE_SPS:
        raise InvalidArgument("request.include_sps", f"at most {MAX_INCLUDE_SPS} SPs")
    both = set(request.include_sps) & set(request.exclude_sps)
    if both:
        raise InvalidArgument("request.exclude_sps", f"{', '.join(sorted(both))} is also in include_sps")


def _internal_peer(
    terminal: TerminalId, notes: Mapping[SpId, CapabilityNote], owner: Mapping[TerminalId, SpId]
) -> TerminalId | None:
    """The peer port when ``terminal`` is one end of a link between two children, else None."""
    sp = owner[terminal]
    port = notes[sp].port(terminal)
    if port is None:
        return None
    peer_sp = owner.get(port.peer_port)
    if peer_sp is None or peer_sp == sp:
        return None
    peer = notes[peer_sp].port(port.peer_port)
    return port.peer_port if peer is not None and peer.peer_port == terminal else None


def _own_constraints(
    request: SliceRequest, notes: Mapping[SpId, CapabilityNote], owner: Mapping[TerminalId, SpId]
) -> dict[TerminalId, PortConstraint]:
    """The request's constraints on its src/dst ports, narrowed to the labels each port offers."""
    out: dict[TerminalId, PortConstraint] = {}
    for i, c in enumerate(request.port_constraints):
        port = notes[owner[c.port]].port(c.port)
        if port is None:  # an endpoint: no label set of ours to narrow by
            out[c.port] = c
            continue
        allowed = c.labels.intersect(port.labels)
        if not allowed:
            raise ResourceExhausted(
                f"request.port_constraints[{i}].labels: none of them is offered on port {c.port}",
                constraint=Constraint.LABELS,
            )
        preferred = c.preferred if c.preferred is not None and c.preferred in allowed else None
        out[c.port] = PortConstraint(c.port, allowed, preferred)
    return out


# --- labels, shares, subnets --------------------------------------------------------------------


@dataclass(frozen=True)
class _LinkLabels:
    candidates: LabelSet
    per_port: dict[TerminalId, LabelSet]


def _link_labels(link: InterLink, used: set[int]) -> _LinkLabels | None:
    """The labels a link can still carry under the module's label rule; None when it cannot."""
    common = _subtract(link.a.labels.intersect(link.b.labels), used)
    if common:
        return _LinkLabels(common, {link.a.id: common, link.b.id: common})
    if not (link.a.can_swap or link.b.can_swap):
        return None
    free_a, free_b = _subtract(link.a.labels, used), _subtract(link.b.labels, used)
    if not free_a or not free_b:
        return None
    # The wire carries the non-swapping side's labels; when both swap, the path-first side's.
    candidates = free_b if link.a.can_swap and not link.b.can_swap else free_a
    return _LinkLabels(candidates, {link.a.id: free_a, link.b.id: free_b})


def _shares(latencies: Sequence[float], budget: float) -> list[float]:
    """Each run's latency plus a share of the slack proportional to it (slack part rounded down to 1e-6)."""
    if budget <= 0:
        return [0.0] * len(latencies)
    total = math.fsum(latencies)
    slack = max(0.0, budget - total)
    if total > 0:
        extra = [math.floor(slack * (lat / total) * 1e6) / 1e6 for lat in latencies]
    else:
        extra = [math.floor(slack / len(latencies) * 1e6) / 1e6] * len(latencies)
    shares = [lat + x for lat, x in zip(latencies, extra, strict=True)]
    while math.fsum(shares) > budget and any(extra):  # float error only; a step or two at most
        i = max(range(len(extra)), key=extra.__getitem__)
        extra[i] = max(0.0, math.floor(extra[i] * 1e6 - 1) / 1e6)
        shares[i] = latencies[i] + extra[i]
    return shares


def _subnets(subnet: str, count: int) -> list[str]:
    """``count`` equal, disjoint pieces of ``subnet``, split into the smallest power of two >= ``count``."""
    net = ipaddress.IPv4Network(subnet)
    extra = (count - 1).bit_length()
    if net.prefixlen + extra > _MAX_SEGMENT_PREFIX:
        raise InvalidArgument(
            "request.subnet", f"{subnet} is too small for {count} segments (each needs at least a /30)"
        )
    return [str(p) for p in itertools.islice(net.subnets(prefixlen_diff=extra), count)]


def _lowest(labels: LabelSet) -> int:
    return labels.ranges[0].first


def _subtract(labels: LabelSet, used: set[int]) -> LabelSet:
    """``labels`` minus ``used``, in one sweep over both sorted."""
    if not used or not labels:
        return labels
    cuts = sorted(used)
    out: list[LabelRange] = []
    j = 0
    for r in labels.ranges:
        lo = r.first
        while j < len(cuts) and cuts[j] < lo:
            j += 1
        while j < len(cuts) and cuts[j] <= r.last:
            if cuts[j] > lo:
                out.append(LabelRange(lo, cuts[j] - 1))
            lo = cuts[j] + 1
            j += 1
        if lo <= r.last:
            out.append(LabelRange(lo, r.last))
    return LabelSet(tuple(out))


def iter_runs(p: Plan) -> Iterator[Run]:
    """The runs of a plan, as crankback names them."""
    for s in p.segments:
        yield Run(s.domain, s.request.src, s.request.dst)

"""Decomposition: one request between two terminals, split into per-child segments. Pure, no I/O.

``plan`` validates the request, finds the cheapest feasible path (``slicing.search``: cost is money,
then latency, then segments; an exact budget-constrained search when the cheapest path is too slow)
and turns it into segments: each child's sub-request with its latency share, QoS mapping, labels
per border port (``slicing.labels``), chain functions and a disjoint piece of the slice's subnet.

**Explanations.** When nothing fits, the constraints are applied one at a time in a fixed order
(exclude, include, transit policy, isolation, QoS, bandwidth, labels, chain, runs refused in
crankback, latency, price) and the first one after which no candidate is left is named, with the
best path found just before it.

**Budget split.** The links' latency is taken off the budget first (each link counted once, at
the larger latency its two sides state). Each segment then gets its transit latency plus a share
of the slack proportional to it, a 0 ms segment weighing as much as the mean segment (equal shares
when the path has no latency), rounded down to 1e-6 ms: shares sum to at most the budget, none is
below the segment's transit latency, and every segment's share is positive whenever the budget is
not exactly used up. Budgets are met to within 1 ns (``within_budget``) so that the same path,
summed in another order a level below, meets the share it was given.
"""

from __future__ import annotations

import ipaddress
import itertools
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Final

from capability_catalog.graph import link_key
from capability_catalog.model import CapabilityNote, SpId, TerminalId
from slicing.errors import Constraint, FailedPrecondition, FedError, InvalidArgument, ResourceExhausted
from slicing.labels import link_labels, lowest
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
from slicing.search import (
    EXPLAIN_ORDER,
    MICRO,
    Found,
    Query,
    Run,
    hosts,
    index_for,
    isolation_for,
    micro,
    search,
    search_within,
    total_ms,
)

__all__ = ["MAX_INCLUDE_SPS", "Run", "link_key", "plan"]

LabelMap = Mapping[tuple[str, str], set[int]]

_MAX_SEGMENT_PREFIX = 30
#: Each included SP doubles the search space (the include mask); beyond this, refuse.
MAX_INCLUDE_SPS: Final = 4


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
    idx = index_for(notes)
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
    q = Query(
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


def budget_of(req: SliceRequest) -> float | None:
    """The request's latency budget in ms, None when it has none."""
    return req.latency_budget_ms


def within_budget(latency: float, budget: float | None) -> bool:
    """Whether ``latency`` meets ``budget``, to within 1 ns (float summation noise is not a miss)."""
    return budget is None or latency <= _limit(budget)


def _limit(budget: float) -> float:
    return budget + max(1e-6, abs(budget) * 1e-12)


def _over_ceiling(money: int, ceiling: float) -> bool:
    return ceiling > 0 and money > micro(ceiling)


def _best(q: Query) -> Found | None:
    """The cheapest feasible path under every constraint, or None."""
    req = q.request
    budget = budget_of(req)
    cheapest = search(q, latency_first=False)
    if cheapest is None:
        return None
    if budget is not None and not within_budget(cheapest.latency, budget):
        fastest = search(q, latency_first=True)
        if fastest is None or not within_budget(fastest.latency, budget):
            return None
        cheapest = search_within(q, _limit(budget), fastest)
    if _over_ceiling(cheapest.money, req.max_price_per_hour):
        return None
    return cheapest


def _units(money: int) -> float:
    """Micro-units as units (infinite beyond the float range)."""
    try:
        return money / MICRO
    except OverflowError:
        return math.inf


def _via(q: Query, found: Found) -> str:
    doms = [h.domain for h in found.hops]
    return "→".join(doms)


def _explain(q: Query) -> FedError:
    """The error naming the constraint that cut off the last candidate."""
    req = q.request
    route = f"from {req.src} to {req.dst}"
    previous: Found | None = None
    for constraint in EXPLAIN_ORDER:
        found = search(q.with_checks(q.checks.upto(constraint)), latency_first=True)
        if found is not None:
            previous = found
            continue
        via = f"; without it the best path runs via {_via(q, previous)}" if previous is not None else ""
        reason = _chain_reason(q) if constraint is Constraint.CHAIN else _REASONS[constraint](q)
        cls = ResourceExhausted if constraint in _CAPACITY else FailedPrecondition
        return cls(f"{constraint}: {reason} {route}{via}", constraint=constraint)
    assert previous is not None
    budget, ceiling = budget_of(req), req.max_price_per_hour
    if budget is not None and not within_budget(previous.latency, budget):
        return ResourceExhausted(
            f"latency: best path {previous.latency:.6g} ms via {_via(q, previous)} exceeds budget {budget:g} ms",
            constraint=Constraint.LATENCY,
        )
    within = search_within(q, _limit(budget), previous) if budget is not None else search(q, latency_first=False)
    assert within is not None
    return FailedPrecondition(
        f"price: cheapest plan costs {_units(within.money):.6g} per hour via {_via(q, within)}, "
        f"over the ceiling of {ceiling:g} per hour",
        constraint=Constraint.PRICE,
    )


_CAPACITY: Final = frozenset(
    {Constraint.PATH, Constraint.CRANKBACK, Constraint.BANDWIDTH, Constraint.LABELS, Constraint.CHAIN}
)
_REASONS: Final[dict[Constraint, Callable[[Query], str]]] = {
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


def _chain_reason(q: Query) -> str:
    """Name the first chain function that no route can host after the ones before it."""
    k = 0
    while k < len(q.functions):
        prefix = replace(q.with_checks(q.checks), functions=q.functions[: k + 1])
        if search(prefix, latency_first=True) is None:
            break
        k += 1
    fn = q.functions[min(k, len(q.functions) - 1)]
    after = " after the functions before it" if k else ""
    return (
        f"request.chain[{k}] '{fn.type}' ({fn.throughput_mbps} Mb/s): no SP with a free slot for it{after} on any route"
    )


# --- from a path to a plan ----------------------------------------------------------------------


def _assemble(q: Query, found: Found, own_constraints: dict[TerminalId, PortConstraint]) -> Plan:
    req, notes = q.request, q.idx.notes
    hops = found.hops
    placements = _place(q, found)
    budget = budget_of(req)
    links_ms = total_ms(h.link_ms for h in hops)
    shares = shares_of([h.latency for h in hops], None if budget is None else max(0.0, budget - links_ms))
    subnets = _subnets(req.subnet, len(hops))

    constraints: dict[TerminalId, PortConstraint] = dict(own_constraints)
    link_plans: list[LinkPlan] = []
    for hop in hops:
        if hop.link is None:
            continue
        link = hop.link
        labels = link_labels(link, q.taken.get(link_key(link.a.id, link.b.id), set()))
        assert labels is not None  # links without a usable label were never expanded
        preferred = lowest(labels.candidates)
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
                latency_ms=link.latency_ms,
            )
        )
        for port_id, allowed in labels.per_port.items():
            own_preferred = preferred if preferred in allowed else lowest(allowed)
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
            latency_budget_ms=shares[i] if budget is not None else None,
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
                latency_share_ms=shares[i] if budget is not None else 0.0,
                qos_native=qos.native if qos is not None else (),
                price_per_hour=_units(hop.money),
                isolation=isolation_for(note, req.isolation) if req.isolation is not None else None,
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
        cost=PlanCost(_units(found.money), found.latency, len(hops)),
    )


@dataclass(frozen=True)
class _Placed:
    index: int
    fn: ChainFunction
    segment: int
    site: str


def _place(q: Query, found: Found) -> list[_Placed]:
    """Each function at a site of the run the search placed it in; slots counted over the whole path."""
    used: dict[tuple[SpId, int], int] = {}
    out: list[_Placed] = []
    stage = 0
    for i, (hop, after) in enumerate(zip(found.hops, found.stages, strict=True)):
        offers = q.idx.notes[hop.domain].functions
        for k in range(stage, after):
            fn = q.functions[k]
            pick = next(
                (j for j, o in enumerate(offers) if hosts(o, fn) and o.slots - used.get((hop.domain, j), 0) > 0),
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
    budget = request.latency_budget_ms
    if budget is not None and (not math.isfinite(budget) or budget < 0):
        raise InvalidArgument("request.latency_budget_ms", "must be absent (no budget) or a number >= 0")
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
    offered = {f.type for n in notes.values() for f in n.functions}
    for i, fn in enumerate(request.chain):
        if not isinstance(fn, str) or not fn:
            raise InvalidArgument(f"request.chain[{i}]", "must be a non-empty function type")
        if fn not in offered:  # a typo is not a capacity problem: say so, with what there is
            known = ", ".join(sorted(offered)) or "none"
            raise InvalidArgument(f"request.chain[{i}]", f"no SP here offers function type '{fn}' (offered: {known})")
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


# --- shares, subnets ----------------------------------------------------------------------------


def shares_of(latencies: Sequence[float], budget: float | None) -> list[float]:
    """Each run's latency plus a share of the slack ``budget - sum(latencies)`` (see the module docstring).

    None (no budget) gives no shares. Every share is at least its run's latency, positive whenever
    there is slack, on the 1e-6 ms grid below 1e9 ms, and the shares sum to at most ``budget``, for
    any finite values up to the float limit.
    """
    n = len(latencies)
    if budget is None or n == 0:
        return [0.0] * n
    total = total_ms(latencies)
    slack = budget - total if math.isfinite(total) and budget > total else 0.0
    mean = total / n if math.isfinite(total) else 0.0
    if not mean > 0:  # no latency at all, or so little that its mean underflows to 0 (5e-324 / 2)
        mean = 1.0
    # A 0 ms run (an endpoint and a port on one PoP) weighs as much as the mean run, so it gets slack too.
    weights = [lat if lat > 0 else mean for lat in latencies]
    wsum = total_ms(weights)
    extra = [_down(slack * (w / wsum)) if math.isfinite(wsum) and wsum > 0 else 0.0 for w in weights]
    shares = [lat + x for lat, x in zip(latencies, extra, strict=True)]
    for _ in range(64):  # float error only: each pass trims the largest extra a little
        if total_ms(shares) <= budget or not any(extra):
            break
        i = max(range(n), key=extra.__getitem__)
        extra[i] = _down(extra[i] * (1 - 1e-9) - 1e-6) if extra[i] > 1e-6 else 0.0
        shares[i] = latencies[i] + extra[i]
    return shares


def _down(x: float) -> float:
    """``x`` rounded down to 1e-6 ms, where that grid is finer than the float's own."""
    if x <= 0:
        return 0.0
    if x >= 1e9:
        return x
    return math.floor(x * 1e6) / 1e6


def _subnets(subnet: str, count: int) -> list[str]:
    """``count`` equal, disjoint pieces of ``subnet``, split into the smallest power of two >= ``count``."""
    net = ipaddress.IPv4Network(subnet)
    extra = (count - 1).bit_length()
    if net.prefixlen + extra > _MAX_SEGMENT_PREFIX:
        raise InvalidArgument(
            "request.subnet", f"{subnet} is too small for {count} segments (each needs at least a /30)"
        )
    return [str(p) for p in itertools.islice(net.subnets(prefixlen_diff=extra), count)]

"""Decomposition: one request between two terminals, split into per-child segments. Pure, no I/O.

The lowest-latency path with enough bandwidth on every edge and a usable label on every
inter-child link; consecutive edges of one child form its segment; each segment gets a latency
share, the functions placed in it, a subnet carved from the request's, and the labels allowed at
its border ports.

Label rule per inter-child link (ports ``a`` and ``b``; ``used`` = used and excluded labels of the
link key): when ``a.labels & b.labels - used`` is non-empty, both sides must use one of those.
Otherwise, when a side can swap, each side picks from its own labels minus ``used``; the link's
candidates are then the non-swapping side's free labels (the path-first side's when both swap),
and it is usable only if every side has a free label. Otherwise the link is unusable.
"""

from __future__ import annotations

import ipaddress
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import networkx as nx

from capability_catalog.graph import InterLink, build_graph, link_key, terminal_owner
from capability_catalog.model import CapabilityNote, LabelRange, LabelSet, SpId, TerminalId
from slicing.errors import InvalidArgument, ResourceExhausted
from slicing.model import LinkPlan, Plan, PortConstraint, SegmentPlan, SliceRequest

__all__ = ["link_key", "plan"]

LabelMap = Mapping[tuple[str, str], set[int]]

#: Latencies are compared on the grid the shares are rounded to (1e-6 ms), so rounding never refuses.
_LATENCY_EPS = 1e-6
_MAX_SEGMENT_PREFIX = 30


@dataclass(frozen=True)
class _Run:
    domain: SpId
    ingress: TerminalId
    egress: TerminalId
    latency_ms: float


@dataclass(frozen=True)
class _LinkLabels:
    candidates: LabelSet
    per_port: dict[TerminalId, LabelSet]


def plan(
    request: SliceRequest,
    notes: Mapping[SpId, CapabilityNote],
    *,
    used_labels: LabelMap | None = None,
    exclude_labels: LabelMap | None = None,
) -> Plan:
    """Decompose ``request`` over the children's ``notes``, or raise why it cannot be done."""
    owner = terminal_owner(notes)
    _validate(request, notes, owner)
    taken: dict[tuple[str, str], set[int]] = {}
    for source in (used_labels or {}, exclude_labels or {}):
        for (a, b), values in source.items():
            taken.setdefault(link_key(a, b), set()).update(values)
    own_constraints = _own_constraints(request, notes, owner)

    graph = build_graph(notes, min_bandwidth_mbps=request.bandwidth_mbps)
    for a, b, data in list(graph.edges(data=True)):
        link: InterLink | None = data["link"]
        if link is not None and _link_labels(link, taken.get(link_key(a, b), set())) is None:
            graph.remove_edge(a, b)
    try:
        latency, path = nx.single_source_dijkstra(graph, request.src, request.dst, weight="latency")
    except (nx.NetworkXNoPath, nx.NodeNotFound):
        raise ResourceExhausted(
            f"no path from {request.src} to {request.dst} with {request.bandwidth_mbps} Mb/s "
            f"and a free label on every inter-domain link"
        ) from None
    budget = request.latency_budget_ms
    if budget > 0 and latency > budget + _LATENCY_EPS:
        raise ResourceExhausted(
            f"the fastest path from {request.src} to {request.dst} with {request.bandwidth_mbps} Mb/s "
            f"takes {latency:g} ms, over the latency budget of {budget:g} ms"
        )
    runs, links = _runs(graph, path)
    functions = _place_functions(request, runs, notes)
    shares = _shares(runs, budget)
    subnets = _subnets(request.subnet, len(runs))

    constraints: dict[TerminalId, PortConstraint] = dict(own_constraints)
    link_plans: list[LinkPlan] = []
    for link in links:
        found = _link_labels(link, taken.get(link_key(link.a.id, link.b.id), set()))
        assert found is not None  # links without a usable label were removed from the graph
        preferred = _lowest(found.candidates)
        link_plans.append(
            LinkPlan(
                a_port=link.a.id,
                b_port=link.b.id,
                a_domain=link.a_domain,
                b_domain=link.b_domain,
                candidates=found.candidates,
                preferred=preferred,
                a_can_swap=link.a.can_swap,
                b_can_swap=link.b.can_swap,
            )
        )
        for port_id, allowed in found.per_port.items():
            own_preferred = preferred if preferred in allowed else _lowest(allowed)
            constraints[port_id] = PortConstraint(port_id, allowed, own_preferred)

    segments = tuple(
        SegmentPlan(
            index=i,
            domain=run.domain,
            request=SliceRequest(
                src=run.ingress,
                dst=run.egress,
                bandwidth_mbps=request.bandwidth_mbps,
                name=f"{request.name}/{i}",
                latency_budget_ms=shares[i],
                chain=tuple(functions[i]),
                subnet=subnets[i],
                port_constraints=tuple(constraints[t] for t in (run.ingress, run.egress) if t in constraints),
            ),
            transit_latency_ms=run.latency_ms,
            latency_share_ms=shares[i],
        )
        for i, run in enumerate(runs)
    )
    return Plan(segments=segments, links=tuple(link_plans), total_latency_ms=float(latency), path=tuple(path))


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
    if not math.isfinite(request.latency_budget_ms) or request.latency_budget_ms < 0:
        raise InvalidArgument("request.latency_budget_ms", "must be zero (unbounded) or a positive number")
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
            raise ResourceExhausted(f"request.port_constraints[{i}].labels: none of them is offered on port {c.port}")
        preferred = c.preferred if c.preferred is not None and c.preferred in allowed else None
        out[c.port] = PortConstraint(c.port, allowed, preferred)
    return out


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


def _runs(graph: nx.Graph, path: Sequence[TerminalId]) -> tuple[list[_Run], list[InterLink]]:
    """Split the path into per-child runs of transit edges and the links between them."""
    runs: list[_Run] = []
    links: list[InterLink] = []
    start: TerminalId | None = None
    domain: SpId | None = None
    latency = 0.0
    for a, b in itertools.pairwise(path):
        edge = graph.edges[a, b]
        link: InterLink | None = edge["link"]
        if (link is not None or edge["domain"] != domain) and domain is not None and start is not None:
            runs.append(_Run(domain, start, a, latency))
            start, domain, latency = None, None, 0.0
        if link is not None:
            links.append(link if link.a.id == a else InterLink(link.b, link.a, link.b_domain, link.a_domain))
            continue
        if start is None:
            start, domain = a, edge["domain"]
        latency += edge["latency"]
    if domain is not None and start is not None:
        runs.append(_Run(domain, start, path[-1], latency))
    return runs, links


def _shares(runs: Sequence[_Run], budget: float) -> list[float]:
    """Each run's transit latency plus a share of the slack proportional to it, rounded down to 1e-6."""
    if budget <= 0:
        return [0.0] * len(runs)
    total = sum(r.latency_ms for r in runs)
    slack = max(0.0, budget - total)
    if total > 0:
        raw = [r.latency_ms + slack * (r.latency_ms / total) for r in runs]
    else:
        raw = [slack / len(runs)] * len(runs)
    shares = [math.floor(x * 1e6) / 1e6 for x in raw]
    while math.fsum(shares) > budget:  # float error only; takes a step or two at most
        i = max(range(len(shares)), key=shares.__getitem__)
        shares[i] = max(0.0, math.floor(shares[i] * 1e6 - 1) / 1e6)
    return shares


def _place_functions(
    request: SliceRequest, runs: Sequence[_Run], notes: Mapping[SpId, CapabilityNote]
) -> list[list[str]]:
    """Each chain function in the earliest run, at or after the previous one, with a free slot."""
    placed: list[list[str]] = [[] for _ in runs]
    wanted = set(request.chain)
    free: dict[SpId, dict[str, int]] = {}
    for run in runs:
        if run.domain not in free:
            slots = {t: 0 for t in wanted}
            for f in notes[run.domain].functions:
                if f.type in slots and f.slots > 0:
                    slots[f.type] += f.slots
            free[run.domain] = slots
    at = 0
    for i, fn in enumerate(request.chain):
        while at < len(runs) and free[runs[at].domain][fn] <= 0:
            at += 1
        if at == len(runs):
            raise ResourceExhausted(
                f"request.chain[{i}]: no SP on the path from {request.src} to {request.dst} "
                f"(at or after the earlier functions) has a free '{fn}' slot"
            )
        placed[at].append(fn)
        free[runs[at].domain][fn] -= 1
    return placed


def _subnets(subnet: str, count: int) -> list[str]:
    """``count`` equal pieces of ``subnet``, split into the smallest power of two >= ``count``."""
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

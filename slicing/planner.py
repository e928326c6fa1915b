"""Decomposition: one request between two terminals, split into per-child segments. Pure, no I/O.

The first decomposition (issue 2): lowest-latency path with enough bandwidth on every edge and a
usable label on every inter-child link; consecutive edges of one child form its segment; each
segment gets a latency share, the functions placed in it, a subnet carved from the request's, and
the labels allowed at its border ports. The decomposition issue deepens placement and crankback.
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


@dataclass(frozen=True)
class _Run:
    domain: SpId
    ingress: TerminalId
    egress: TerminalId
    latency_ms: float


def _validate(request: SliceRequest, owner: Mapping[TerminalId, SpId]) -> None:
    for name in ("src", "dst"):
        value = getattr(request, name)
        if not value:
            raise InvalidArgument(f"request.{name}", "must not be empty")
        if value not in owner:
            raise InvalidArgument(f"request.{name}", f"unknown terminal '{value}' (not in any note held)")
    if request.src == request.dst:
        raise InvalidArgument("request.dst", "must differ from src")
    if request.bandwidth_mbps <= 0:
        raise InvalidArgument("request.bandwidth_mbps", "must be positive")
    if request.latency_budget_ms < 0:
        raise InvalidArgument("request.latency_budget_ms", "must be zero (unbounded) or positive")
    for i, fn in enumerate(request.chain):
        if not fn:
            raise InvalidArgument(f"request.chain[{i}]", "must not be empty")
    try:
        ipaddress.IPv4Network(request.subnet, strict=True)
    except ValueError as exc:
        raise InvalidArgument("request.subnet", f"not an IPv4 CIDR network: {exc}") from None
    for i, c in enumerate(request.port_constraints):
        if c.port not in (request.src, request.dst):
            raise InvalidArgument(f"request.port_constraints[{i}].port", f"'{c.port}' is neither src nor dst")


def _runs(graph: nx.Graph, path: Sequence[TerminalId]) -> tuple[list[_Run], list[InterLink]]:
    runs: list[_Run] = []
    links: list[InterLink] = []
    start: TerminalId | None = None
    domain: SpId | None = None
    latency = 0.0
    for a, b in itertools.pairwise(path):
        edge = graph.edges[a, b]
        if edge["link"] is not None:
            if domain is not None and start is not None:
                runs.append(_Run(domain, start, a, latency))
            link: InterLink = edge["link"]
            links.append(link if link.a.id == a else InterLink(link.b, link.a, link.b_domain, link.a_domain))
            start, domain, latency = None, None, 0.0
            continue
        if domain is not None and edge["domain"] != domain and start is not None:
            runs.append(_Run(domain, start, a, latency))
            start, latency = None, 0.0
        if start is None:
            start = a
        domain = edge["domain"]
        latency += edge["latency"]
    if domain is not None and start is not None:
        runs.append(_Run(domain, start, path[-1], latency))
    return runs, links


def _shares(runs: Sequence[_Run], budget: float) -> list[float]:
    if budget <= 0:
        return [0.0] * len(runs)
    total = sum(r.latency_ms for r in runs)
    slack = max(0.0, budget - total)
    if total > 0:
        raw = [r.latency_ms + slack * (r.latency_ms / total) for r in runs]
    else:
        raw = [slack / len(runs)] * len(runs)
    return [math.floor(x * 1e6) / 1e6 for x in raw]  # round down: the shares never exceed the budget


def _place_functions(
    request: SliceRequest, runs: Sequence[_Run], notes: Mapping[SpId, CapabilityNote]
) -> list[list[str]]:
    placed: list[list[str]] = [[] for _ in runs]
    free = [
        {t: sum(f.slots for f in notes[r.domain].functions if f.type == t) for t in set(request.chain)} for r in runs
    ]
    at = 0
    for i, fn in enumerate(request.chain):
        while at < len(runs) and free[at].get(fn, 0) <= 0:
            at += 1
        if at == len(runs):
            raise ResourceExhausted(
                f"request.chain[{i}]: no SP on the path from {request.src} to {request.dst} "
                f"(after the earlier functions) offers a free '{fn}'"
            )
        placed[at].append(fn)
        free[at][fn] -= 1
    return placed


def _subnets(subnet: str, count: int) -> list[str]:
    net = ipaddress.IPv4Network(subnet)
    extra = max(0, math.ceil(math.log2(count))) if count > 1 else 0
    if net.prefixlen + extra > 30:
        raise InvalidArgument("request.subnet", f"{subnet} is too small for {count} segments (each needs a /30)")
    pieces = list(net.subnets(prefixlen_diff=extra)) if extra else [net]
    return [str(p) for p in pieces[:count]]


def plan(
    request: SliceRequest,
    notes: Mapping[SpId, CapabilityNote],
    *,
    used_labels: LabelMap | None = None,
    exclude_labels: LabelMap | None = None,
) -> Plan:
    """Decompose ``request`` over the children's ``notes``, or raise why it cannot be done."""
    owner = terminal_owner(notes)
    _validate(request, owner)
    used = {k: set(v) for k, v in (used_labels or {}).items()}
    for k, v in (exclude_labels or {}).items():
        used.setdefault(k, set()).update(v)

    graph = build_graph(notes, min_bandwidth_mbps=request.bandwidth_mbps)
    # Drop links with no label left, and src/dst ports whose constraint does not meet their labels.
    for a, b, data in list(graph.edges(data=True)):
        link: InterLink | None = data["link"]
        if link is not None:
            free = _free(link.candidate_labels(), used.get(link_key(a, b), set()))
            if not free:
                graph.remove_edge(a, b)
    for i, c in enumerate(request.port_constraints):
        port = notes[owner[c.port]].port(c.port)
        if port is not None and not port.can_swap and not port.labels.intersect(c.labels):
            raise ResourceExhausted(f"request.port_constraints[{i}].labels: none of them is offered on port {c.port}")
    try:
        latency, path = nx.single_source_dijkstra(graph, request.src, request.dst, weight="latency")
    except (nx.NetworkXNoPath, nx.NodeNotFound):
        raise ResourceExhausted(
            f"no path from {request.src} to {request.dst} with {request.bandwidth_mbps} Mb/s "
            f"and a free label on every inter-domain link"
        ) from None
    if request.latency_budget_ms > 0 and latency > request.latency_budget_ms:
        raise ResourceExhausted(
            f"the fastest path from {request.src} to {request.dst} takes {latency:g} ms, "
            f"over the latency budget of {request.latency_budget_ms:g} ms"
        )
    runs, links = _runs(graph, path)
    functions = _place_functions(request, runs, notes)
    shares = _shares(runs, request.latency_budget_ms)
    subnets = _subnets(request.subnet, len(runs))

    link_plans: list[LinkPlan] = []
    constraints: dict[TerminalId, PortConstraint] = {}
    for link in links:
        candidates = link.candidate_labels()
        free_set = _free(candidates, used.get(link_key(link.a.id, link.b.id), set()))
        preferred = candidates.first_free(used.get(link_key(link.a.id, link.b.id), set()))
        assert preferred is not None  # edges without a free label were removed above
        link_plans.append(
            LinkPlan(
                a_port=link.a.id,
                b_port=link.b.id,
                a_domain=link.a_domain,
                b_domain=link.b_domain,
                candidates=free_set,
                preferred=preferred,
                a_can_swap=link.a.can_swap,
                b_can_swap=link.b.can_swap,
            )
        )
        for port in (link.a, link.b):
            own = free_set.intersect(port.labels)
            if own:
                constraints[port.id] = PortConstraint(port.id, own, preferred if preferred in own else None)
            else:  # a swapping side with no label in common picks among its own
                mine = _free(port.labels, used.get(link_key(link.a.id, link.b.id), set()))
                constraints[port.id] = PortConstraint(port.id, mine, None)
    for c in request.port_constraints:
        port = notes[owner[c.port]].port(c.port)
        allowed = c.labels.intersect(port.labels) if port is not None and not port.can_swap else c.labels
        constraints[c.port] = PortConstraint(c.port, allowed, c.preferred)

    segments = tuple(
        SegmentPlan(
            index=i,
            domain=run.domain,
            request=SliceRequest(
                src=run.ingress,
                dst=run.egress,
                bandwidth_mbps=request.bandwidth_mbps,
                name=f"{request.name}/{i}" if request.name else str(i),
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


def _free(labels: LabelSet, used: set[int]) -> LabelSet:
    """``labels`` minus ``used`` (used sets are small: the slices on one link)."""
    if not used:
        return labels
    out = labels
    for label in sorted(used):
        if label in out:
            out = _without(out, label)
    return out


def _without(labels: LabelSet, label: int) -> LabelSet:
    ranges: list[LabelRange] = []
    for r in labels.ranges:
        if label not in r:
            ranges.append(r)
            continue
        if r.first < label:
            ranges.append(LabelRange(r.first, label - 1))
        if label < r.last:
            ranges.append(LabelRange(label + 1, r.last))
    return LabelSet(tuple(ranges))

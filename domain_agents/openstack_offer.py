"""What an OpenStack leaf offers: its note, built from its config and what OpenStack last said is free.

``OpenStackOffer`` holds the domain's graph and terminal capacities (from the config) and the
``View`` (free Placement capacity per PoP, VNIs in use in Neutron). The agent
(``domain_agents.openstack``) refreshes the view from OpenStack and accounts its own changes in it;
this module turns it into the published note: free labels per border port, free function slots,
and transit per terminal pair and per chain of function types, on the same least-latency walks a
reservation takes. No OpenStack call is made here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from itertools import combinations

import networkx as nx

from capability_catalog.frontier import route_sequences
from capability_catalog.model import (
    BorderPort,
    CapabilityNote,
    FunctionOffer,
    LabelRange,
    LabelSet,
    Transit,
)
from domain_agents.authored import live_header
from domain_agents.local import check_request
from domain_agents.openstack_config import FunctionSpec, OpenStackDomainConfig
from domain_agents.openstack_model import BANDWIDTH, FUNCTION_SLOTS, Made
from domain_agents.routing import walk_through
from slicing.errors import ResourceExhausted
from slicing.model import SliceRequest


@dataclass
class View:
    """What OpenStack last said: free capacity per PoP and the VNIs in use."""

    free: dict[str, dict[str, int]] = field(default_factory=dict)
    used_vnis: set[int] = field(default_factory=set)


class OpenStackOffer:
    """The domain's fixed shape (config) and its free capacity (``view``): the note and the request checks."""

    def __init__(self, config: OpenStackDomainConfig) -> None:
        self.config = config
        self.graph = nx.Graph()
        self.graph.add_nodes_from(p.name for p in config.pops)
        for link in config.links:
            self.graph.add_edge(link.a, link.b, latency_ms=link.latency_ms)
        self.capacity: dict[str, int] = {e.endpoint.id: e.endpoint.capacity_mbps for e in config.endpoints}
        self.capacity.update({p.port.id: p.port.capacity_mbps for p in config.ports})
        self.functions: dict[tuple[str, str], FunctionSpec] = {(f.pop, f.type): f for f in config.functions}
        self.view = View()

    def account(self, made: Made, sign: int) -> None:
        """Count a segment made (+1) or released (-1) in the view, without asking OpenStack."""
        for pop, res in made.resources.items():
            free = self.view.free.setdefault(pop, {})
            for cls, amount in res.items():
                free[cls] = free.get(cls, 0) - sign * amount
        vnis = {v for _, v in made.labels}
        if sign > 0:
            self.view.used_vnis |= vnis
        else:
            self.view.used_vnis -= vnis

    def free_slots_at(self, pop: str, function_type: str, view: View | None = None) -> int:
        """Free slots of ``function_type`` at ``pop`` in ``view`` or as last seen (0 when the PoP offers none)."""
        spec = self.functions.get((pop, function_type))
        return 0 if spec is None else self.free_slots(spec, self.view if view is None else view)

    def note(self, now: float, previous: CapabilityNote | None, view: View | None = None) -> CapabilityNote:
        """The note of what is free at ``now`` (its version above ``previous``'s), in ``view`` or as last seen.

        With a note file, this is what the authored note is served over (``capability_catalog.served``):
        its offer policy, its version as a floor, and its ``expires_at`` as a cap (``domain_agents.authored``).
        """
        v = self.view if view is None else view
        cfg = self.config
        header = live_header(
            cfg.id,
            cfg.offer,
            now,
            ttl_s=cfg.note_ttl_s,
            until=cfg.note_expires_at,
            previous=previous,
            authored=cfg.authored,
        )
        return replace(
            header,
            endpoints=tuple(e.endpoint for e in cfg.endpoints),
            ports=tuple(replace(p.port, labels=self.free_labels(p.port, v)) for p in cfg.ports),
            transit=self.transit(v),
            # Routed: an SP above places a function only on the transit entries that pass its PoP.
            functions=tuple(FunctionOffer(f.type, f.pop, self.free_slots(f, v), routed=True) for f in cfg.functions),
        )

    def unheld(self, holdings: Iterable[Made]) -> View:
        """The view with ``holdings`` (what this agent holds) given back and every VNI free (an authored whole)."""
        full = View({pop: dict(free) for pop, free in self.view.free.items()}, set())
        for made in holdings:
            for pop, res in made.resources.items():
                for cls, amount in res.items():
                    full.free.setdefault(pop, {})[cls] = full.free.get(pop, {}).get(cls, 0) + amount
        return full

    def free_labels(self, port: BorderPort, view: View) -> LabelSet:
        used = view.used_vnis
        if not any(v in port.labels for v in used):
            return port.labels
        free = [v for v in port.labels if v not in used]
        return LabelSet.of(LabelRange(v, v) for v in free)

    def free_slots(self, f: FunctionSpec, view: View) -> int:
        free = view.free.get(f.pop, {})
        limits = [free.get(FUNCTION_SLOTS, 0)]
        if f.vcpu:
            limits.append(free.get("VCPU", 0) // f.vcpu)
        if f.memory_mb:
            limits.append(free.get("MEMORY_MB", 0) // f.memory_mb)
        return max(0, min(limits))

    def transit(self, view: View) -> tuple[Transit, ...]:
        terminals = [(e.endpoint.id, e.pop) for e in self.config.endpoints]
        terminals += [(p.port.id, p.pop) for p in self.config.ports]
        routes = dict(nx.all_pairs_dijkstra(self.graph, weight="latency_ms"))
        kinds = {f.type for f in self.config.functions if self.free_slots(f, view) > 0}
        out: list[Transit] = []
        for (ta, pa), (tb, pb) in combinations(terminals, 2):
            dist, path_to = routes[pa]
            if pb not in dist:
                continue
            cap = min(self.capacity[ta], self.capacity[tb])
            bw = max(0, min(view.free.get(p, {}).get(BANDWIDTH, 0) for p in path_to[pb]))
            out.append(Transit(ta, tb, float(dist[pb]), min(cap, bw)))
            # Per sequence of function types, the walk a reservation of that chain would take.
            for seq in route_sequences(kinds)[1:]:
                walk = walk_through(self.graph, pa, pb, seq, lambda pop, kind: self.free_slots_at(pop, kind, view))
                if walk is None:
                    continue
                free = max(0, min(view.free.get(p, {}).get(BANDWIDTH, 0) for p in walk.pops))
                out.append(Transit(ta, tb, walk.latency_ms, min(cap, free), functions=seq))
        return tuple(out)

    def validate(self, req: SliceRequest) -> None:
        """Refuse what this domain cannot serve whatever is free: unknown terminals, bad values, too wide."""
        check_request(req, self.config.pop_of, self.config.id)
        bw = req.bandwidth_mbps
        for t in (req.src, req.dst):
            if bw > self.capacity[t]:
                raise ResourceExhausted(f"{t}: {self.capacity[t]} Mbit/s at most, {bw} Mbit/s asked")

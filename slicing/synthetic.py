"""Random multi-domain note sets for benchmarks and property tests. Pure, deterministic per seed.

Each SP has one endpoint and one border port per neighbour; every SP-level link is declared by
both sides. The SP graph is connected (a ring) and then filled up with random chords until every
SP has ``degree`` neighbours (3 or 4 by default). Transit between every pair of an SP's terminals
has a random latency and bandwidth; some SPs host the chain's function types; prices, QoS classes,
isolation mechanisms and swapping ports vary. The benchmark of planning calls::

    notes = synthetic_notes(10_000, seed=1)
    request = synthetic_request(notes, seed=2)
    plan(request, notes)
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from itertools import combinations

import networkx as nx

from capability_catalog.model import (
    BorderPort,
    CapabilityNote,
    Endpoint,
    FunctionOffer,
    Isolation,
    LabelRange,
    LabelSet,
    QosClass,
    SpId,
    TerminalId,
    Transit,
)
from slicing.model import SliceRequest

__all__ = ["regional_groups", "synthetic_notes", "synthetic_request", "topology_notes"]

DEFAULT_FUNCTIONS: tuple[str, ...] = ("fw", "nat")


def _sp(i: int) -> SpId:
    return SpId(f"S{i}")


def _sp_graph(n: int, rng: random.Random, degree: tuple[int, int]) -> list[set[int]]:
    """A connected graph on ``n`` nodes with every degree in ``degree`` where the random fill allows."""
    adj: list[set[int]] = [set() for _ in range(n)]
    if n < 2:
        return adj
    for i in range(n):  # a ring keeps it connected
        j = (i + 1) % n
        if j != i:
            adj[i].add(j)
            adj[j].add(i)
    want = [rng.randint(*degree) for _ in range(n)]
    open_nodes = [i for i in range(n) if len(adj[i]) < want[i]]
    tries = 0
    while len(open_nodes) > 1 and tries < 20 * n:
        tries += 1
        a, b = rng.sample(open_nodes, 2)
        if b in adj[a]:
            continue
        adj[a].add(b)
        adj[b].add(a)
        open_nodes = [x for x in open_nodes if len(adj[x]) < want[x]] if tries % 64 == 0 else open_nodes
        for x in (a, b):
            if len(adj[x]) >= want[x] and x in open_nodes:
                open_nodes.remove(x)
    return adj


def synthetic_notes(
    n_sps: int,
    seed: int,
    *,
    degree: tuple[int, int] = (3, 4),
    function_types: Sequence[str] = DEFAULT_FUNCTIONS,
    function_share: float = 0.3,
    priced_share: float = 0.9,
    swap_share: float = 0.2,
) -> dict[SpId, CapabilityNote]:
    """``n_sps`` notes of a random federation, the same for the same arguments."""
    if n_sps < 1:
        raise ValueError("n_sps must be at least 1")
    rng = random.Random(seed)
    adj = _sp_graph(n_sps, rng, degree)
    # Each SP-level link gets a label block both sides offer in part, so most links have common labels.
    blocks: dict[tuple[int, int], int] = {}
    for i in range(n_sps):
        for j in adj[i]:
            if i < j:
                blocks[(i, j)] = 1000 + 100 * rng.randrange(50)
    notes: dict[SpId, CapabilityNote] = {}
    for i in range(n_sps):
        sp = _sp(i)
        ports = []
        for j in sorted(adj[i]):
            base = blocks[(min(i, j), max(i, j))]
            lo = base + (0 if i < j else rng.randrange(0, 60))
            ports.append(
                BorderPort(
                    id=TerminalId(f"{sp}.to-{_sp(j)}"),
                    peer_sp=_sp(j),
                    peer_port=TerminalId(f"{_sp(j)}.to-{sp}"),
                    labels=LabelSet((LabelRange(lo, lo + 59),)),
                    can_swap=rng.random() < swap_share,
                    capacity_mbps=rng.choice((1000, 10_000)),
                )
            )
        endpoint = Endpoint(TerminalId(f"{sp}.ep"), region=f"r{i % 17}", capacity_mbps=10_000)
        terminals = [endpoint.id, *(p.id for p in ports)]
        transit = tuple(
            Transit(a, b, round(rng.uniform(0.5, 5.0), 3), rng.choice((500, 1000, 10_000)))
            for a, b in combinations(terminals, 2)
        )
        functions = tuple(
            FunctionOffer(t, f"{sp}-pop{rng.randrange(3)}", rng.randint(1, 4))
            for t in function_types
            if rng.random() < function_share
        )
        qos = [QosClass("best-effort", (("dscp", "0"),))]
        if rng.random() < 0.8:
            qos.append(QosClass("gold", (("dscp", "46"),), delay_ms=5.0))
        isolation = [Isolation.SHARED, Isolation.VXLAN]
        if rng.random() < 0.5:
            isolation.append(Isolation.VLAN)
        notes[sp] = CapabilityNote(
            sp_id=sp,
            version=1,
            issued_at=0.0,
            expires_at=1e12,
            endpoints=(endpoint,),
            ports=tuple(ports),
            transit=transit,
            functions=functions,
            qos_classes=tuple(qos),
            isolation=tuple(isolation),
            price_per_mbps_hour=round(rng.uniform(0.01, 0.1), 4) if rng.random() < priced_share else None,
        )
    return notes


def synthetic_request(
    notes: Mapping[SpId, CapabilityNote],
    seed: int,
    *,
    chain: Sequence[str] = DEFAULT_FUNCTIONS,
    bandwidth_mbps: int = 100,
    latency_budget_ms: float | None = None,
    qos_class: str = "",
) -> SliceRequest:
    """A request between two random endpoints of ``notes`` through ``chain``."""
    rng = random.Random(seed)
    endpoints = sorted(e.id for n in notes.values() for e in n.endpoints)
    src, dst = rng.sample(endpoints, 2)
    return SliceRequest(
        src=src,
        dst=dst,
        bandwidth_mbps=bandwidth_mbps,
        name=f"synthetic-{seed}",
        latency_budget_ms=latency_budget_ms,
        chain=tuple(chain),
        subnet="10.0.0.0/8",
        qos_class=qos_class,
    )


def topology_notes(
    graph: nx.Graph,
    seed: int,
    *,
    function_types: Sequence[str] = DEFAULT_FUNCTIONS,
    function_share: float = 0.3,
    priced_share: float = 0.9,
) -> dict[SpId, CapabilityNote]:
    """One leaf SP per node of a real topology (e.g. an Internet Topology Zoo graph), the same per seed.

    Each SP is one PoP: its endpoint and its border ports (one per neighbour) are joined by 0 ms
    transit, so every latency is on the inter-domain links, stated on both border ports: the
    great-circle distance between the nodes' ``Latitude``/``Longitude`` at 5 µs per km, or a random
    1–10 ms for a node without coordinates. A link's capacity is its ``LinkSpeedRaw`` (bit/s) when
    stated, else a random 1, 2.5 or 10 Gb/s. Functions and prices are drawn as in ``synthetic_notes``.
    """
    rng = random.Random(seed)
    nodes = sorted(graph.nodes, key=str)
    name = {n: SpId(f"N{i}") for i, n in enumerate(nodes)}
    latency: dict[tuple[str, str], float] = {}
    capacity: dict[tuple[str, str], int] = {}
    for a, b, data in sorted(graph.edges(data=True), key=lambda e: (str(e[0]), str(e[1]))):
        if a == b:
            continue
        key = (min(name[a], name[b]), max(name[a], name[b]))
        latency[key] = _link_ms(graph.nodes[a], graph.nodes[b], rng)
        raw = data.get("LinkSpeedRaw")
        capacity[key] = int(float(raw) / 1e6) if raw else rng.choice((1000, 2500, 10_000))
    notes: dict[SpId, CapabilityNote] = {}
    for n in nodes:
        sp = name[n]
        peers = sorted({name[m] for m in graph.neighbors(n) if m != n})
        ports = []
        for peer in peers:
            key = (min(sp, peer), max(sp, peer))
            ports.append(
                BorderPort(
                    id=TerminalId(f"{sp}.to-{peer}"),
                    peer_sp=peer,
                    peer_port=TerminalId(f"{peer}.to-{sp}"),
                    labels=LabelSet((LabelRange(1000, 1999),)),
                    capacity_mbps=capacity[key],
                    latency_ms=latency[key],
                )
            )
        endpoint = Endpoint(TerminalId(f"{sp}.ep"), region=str(graph.nodes[n].get("label", sp)), capacity_mbps=100_000)
        terminals = [endpoint.id, *(p.id for p in ports)]
        transit = tuple(Transit(a, b, 0.0, 100_000) for a, b in combinations(terminals, 2))
        functions = tuple(
            FunctionOffer(t, f"{sp}-pop", rng.randint(1, 4)) for t in function_types if rng.random() < function_share
        )
        notes[sp] = CapabilityNote(
            sp_id=sp,
            version=1,
            issued_at=0.0,
            expires_at=1e12,
            endpoints=(endpoint,),
            ports=tuple(ports),
            transit=transit,
            functions=functions,
            qos_classes=(QosClass("best-effort", (("dscp", "0"),)),),
            isolation=(Isolation.SHARED, Isolation.VXLAN),
            price_per_mbps_hour=round(rng.uniform(0.01, 0.1), 4) if rng.random() < priced_share else None,
        )
    return notes


def _link_ms(a: Mapping[str, object], b: Mapping[str, object], rng: random.Random) -> float:
    """Fibre latency between two nodes from their coordinates (5 µs per km), on the microsecond grid."""
    coords = [a.get("Latitude"), a.get("Longitude"), b.get("Latitude"), b.get("Longitude")]
    if not all(isinstance(c, int | float) for c in coords):
        return round(rng.uniform(1.0, 10.0), 3)
    lat1, lon1, lat2, lon2 = (math.radians(float(c)) for c in coords)  # type: ignore[arg-type]
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    km = 2 * 6371.0 * math.asin(min(1.0, math.sqrt(h)))
    return max(0.001, round(km * 0.005, 3))


def regional_groups(graph: nx.Graph, groups: int) -> list[int]:
    """A group per node, in ``topology_notes`` order: ``groups`` bands of equal size by longitude (west to east).

    A node without coordinates joins the band of its first neighbour that has them (else the first band).
    """
    nodes = sorted(graph.nodes, key=str)

    def lon(n: object) -> float | None:
        value = graph.nodes[n].get("Longitude")
        return float(value) if isinstance(value, int | float) else None

    placed = sorted((n for n in nodes if lon(n) is not None), key=lambda n: (lon(n), str(n)))
    band = {n: min(groups - 1, i * groups // max(1, len(placed))) for i, n in enumerate(placed)}
    for n in nodes:
        if n not in band:
            band[n] = next((band[m] for m in sorted(graph.neighbors(n), key=str) if m in band), 0)
    return [band[n] for n in nodes]

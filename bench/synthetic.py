"""Synthetic multi-domain catalogs for the planner benchmark, generated in-process.

The planner benchmark reaches its input only through ``synthetic_catalog`` (see ``bench.measures``),
so another generator with the same signature can replace this one without touching the harness.

The federation: ``n_sps`` SPs on a connected random graph where every SP has 3 or 4 neighbours
(a random 3-regular graph plus a random matching over half of the SPs). Each SP publishes one
endpoint, one border port per neighbour (VXLAN VNI ranges that overlap partly with the peer's),
transit between every pair of its terminals (0.5–5 ms, 1 or 10 Gb/s), and with probability 0.7
each a ``fw`` and a ``nat`` function site. Requests join two random endpoints through ``fw`` then
``nat`` at 100 Mb/s.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Mapping
from dataclasses import dataclass

import networkx as nx

from capability_catalog.model import (
    BorderPort,
    CapabilityNote,
    Endpoint,
    FunctionOffer,
    LabelRange,
    LabelSet,
    SpId,
    TerminalId,
    Transit,
)
from slicing.model import SliceRequest

CHAIN = ("fw", "nat")
FUNCTION_PROBABILITY = 0.7
_MAX_GRAPH_TRIES = 20


@dataclass(frozen=True)
class SyntheticCase:
    """Notes of every child SP, and requests to plan over them."""

    notes: Mapping[SpId, CapabilityNote]
    requests: tuple[SliceRequest, ...]


def sp_graph(n_sps: int, rng: random.Random) -> nx.Graph:
    """A connected graph of ``n_sps`` nodes, each of degree 3 or 4."""
    if n_sps < 6 or n_sps % 2:
        raise ValueError(f"n_sps must be even and at least 6, got {n_sps}")
    for _ in range(_MAX_GRAPH_TRIES):
        graph = nx.random_regular_graph(3, n_sps, seed=rng.randrange(2**31))
        if nx.is_connected(graph):
            break
    else:
        raise RuntimeError(f"no connected 3-regular graph of {n_sps} nodes after {_MAX_GRAPH_TRIES} tries")
    half = rng.sample(range(n_sps), n_sps // 2)
    for a, b in zip(half[::2], half[1::2], strict=True):
        if not graph.has_edge(a, b):
            graph.add_edge(a, b)
    return graph


def _sp(i: int) -> SpId:
    return SpId(f"S{i:05d}")


def _note(i: int, neighbours: list[int], rng: random.Random) -> CapabilityNote:
    sp = _sp(i)
    endpoint = Endpoint(TerminalId(f"{sp}.ep"), region=f"r{i}", capacity_mbps=10_000)
    ports = tuple(
        BorderPort(
            TerminalId(f"{sp}.to-{_sp(j)}"),
            _sp(j),
            TerminalId(f"{_sp(j)}.to-{sp}"),
            # The lower-numbered side offers 1000-1999, the other 1500-2999: 500 labels in common.
            labels=LabelSet((LabelRange(1000, 1999) if i < j else LabelRange(1500, 2999),)),
            capacity_mbps=10_000,
        )
        for j in neighbours
    )
    terminals = [endpoint.id, *(p.id for p in ports)]
    transit = tuple(
        Transit(a, b, round(rng.uniform(0.5, 5.0), 3), rng.choice((1_000, 10_000)))
        for a, b in itertools.combinations(terminals, 2)
    )
    functions = tuple(FunctionOffer(fn, f"{sp}-site", 4) for fn in CHAIN if rng.random() < FUNCTION_PROBABILITY)
    return CapabilityNote(
        sp_id=sp,
        version=1,
        issued_at=0.0,
        expires_at=1e12,
        endpoints=(endpoint,),
        ports=ports,
        transit=transit,
        functions=functions,
    )


def synthetic_catalog(n_sps: int, *, seed: int, requests: int) -> SyntheticCase:
    """``n_sps`` child notes on a degree 3–4 graph and ``requests`` two-function requests over them."""
    rng = random.Random(seed)
    graph = sp_graph(n_sps, rng)
    notes = {_sp(i): _note(i, sorted(graph.neighbors(i)), rng) for i in range(n_sps)}
    reqs = []
    for k in range(requests):
        a, b = rng.sample(range(n_sps), 2)
        reqs.append(
            SliceRequest(
                src=TerminalId(f"{_sp(a)}.ep"),
                dst=TerminalId(f"{_sp(b)}.ep"),
                bandwidth_mbps=100,
                name=f"synthetic-{k}",
                chain=CHAIN,
                subnet="10.0.0.0/16",
            )
        )
    return SyntheticCase(notes=notes, requests=tuple(reqs))

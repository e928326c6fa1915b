"""The planner's static index over a set of notes: who owns each terminal, transit per SP, links.

Notes change far less often than requests arrive, so the index is cached (``index_for``) and builds
each SP's transit the first time a search touches it (``Index.transit``): a search costs what it
explores. Transit entries of one route that another entry beats on latency, bandwidth and price
are pruned here once. Pure, no I/O; the searches over it are ``slicing.search``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from capability_catalog.graph import InterLink
from capability_catalog.model import BorderPort, CapabilityNote, SpId, TerminalId

#: Money is summed in micro-units as integers so equal prices compare equal whatever the order.
MICRO: Final = 1_000_000


@dataclass
class Index:
    """What the search needs from a set of notes; per-SP parts are built the first time a search touches them."""

    notes: Mapping[SpId, CapabilityNote]
    owner: dict[TerminalId, SpId]
    ports: dict[TerminalId, tuple[SpId, BorderPort]]
    _transit: dict[SpId, dict[TerminalId, list[tuple[TerminalId, list[Entry]]]]] = field(default_factory=dict)
    _links: dict[TerminalId, InterLink | None] = field(default_factory=dict)

    def transit(self, u: TerminalId) -> list[tuple[TerminalId, list[Entry]]]:
        """The other terminals of ``u``'s SP and the transit entries to each, oriented from ``u``."""
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


@dataclass(frozen=True)
class Entry:
    """One transit entry as seen from the terminal it is entered at."""

    latency: float
    bandwidth: int
    unit_micro: int  # price per Mb/s and hour, micro-units (the entry's, else the note's, else 0)
    via: tuple[str, ...]  # route functions in the order traffic meets them


def micro(amount: float) -> int:
    """``amount`` in micro-units, exact for huge values (no overflow)."""
    return round(amount * MICRO) if abs(amount) < 1e290 else int(amount) * MICRO


def _transit_of(
    sp: SpId, note: CapabilityNote, owner: Mapping[TerminalId, SpId]
) -> dict[TerminalId, list[tuple[TerminalId, list[Entry]]]]:
    pairs: dict[tuple[TerminalId, TerminalId], list[Entry]] = {}
    unit = note.price_per_mbps_hour or 0.0
    for t in note.transit:
        a, b = t.a, t.b
        if a == b or owner.get(a) != sp or owner.get(b) != sp:
            continue
        price = micro(t.price_per_mbps_hour if t.price_per_mbps_hour is not None else unit)
        lat, bw = float(t.latency_ms), int(t.bandwidth_mbps)
        pairs.setdefault((a, b), []).append(Entry(lat, bw, price, t.functions))
        pairs.setdefault((b, a), []).append(Entry(lat, bw, price, t.functions[::-1]))
    adj: dict[TerminalId, list[tuple[TerminalId, list[Entry]]]] = {}
    for (a, b), entries in pairs.items():
        entries.sort(key=lambda e: (e.via, e.latency, e.unit_micro, -e.bandwidth))
        adj.setdefault(a, []).append((b, _prune(entries)))
    return adj


def _prune(entries: list[Entry]) -> list[Entry]:
    """Drop entries another entry of the same route dominates (sorted by route, latency, price)."""
    out: list[Entry] = []
    for e in entries:
        if not any(
            o.via == e.via and o.unit_micro <= e.unit_micro and o.bandwidth >= e.bandwidth and o.latency <= e.latency
            for o in out
        ):
            out.append(e)
    return out


def total_ms(values: Iterable[float]) -> float:
    """An exact float sum that is infinite instead of raising on overflow."""
    vals = list(values)
    try:
        return math.fsum(vals)
    except OverflowError:
        return math.inf


_CACHE: dict[tuple[tuple[str, int, int], ...], Index] = {}
_CACHE_SIZE: Final = 4


def index_for(notes: Mapping[SpId, CapabilityNote]) -> Index:
    """The index of ``notes``, from the cache when the same note objects were indexed before."""
    key = tuple((sp, n.version, id(n)) for sp, n in notes.items())
    idx = _CACHE.get(key)
    if idx is not None and all(idx.notes.get(sp) is n for sp, n in notes.items()):
        return idx
    idx = build_index(dict(notes))
    if len(_CACHE) >= _CACHE_SIZE:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = idx  # the index keeps the notes alive, so their ids cannot be reused meanwhile
    return idx


def build_index(notes: Mapping[SpId, CapabilityNote]) -> Index:
    """A fresh index: who owns each terminal and each port (the rest is built on first use)."""
    owner: dict[TerminalId, SpId] = {}
    ports: dict[TerminalId, tuple[SpId, BorderPort]] = {}
    for sp, note in notes.items():
        for e in note.endpoints:
            owner[e.id] = sp
        for p in note.ports:
            owner[p.id] = sp
            ports[p.id] = (sp, p)
    return Index(notes, owner, ports)

"""The multi-domain graph over capability notes: terminals as nodes, transit and links as edges.

Shared by aggregation (an abstract view of a subtree) and planning (paths across children).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from capability_catalog.model import BorderPort, CapabilityNote, LabelSet, SpId, TerminalId


@dataclass(frozen=True)
class InterLink:
    """An inter-domain link between two children, declared by both sides."""

    a: BorderPort
    b: BorderPort
    a_domain: SpId
    b_domain: SpId

    @property
    def capacity_mbps(self) -> int:
        """The link carries what the thinner side carries."""
        return min(self.a.capacity_mbps, self.b.capacity_mbps)

    @property
    def latency_ms(self) -> float:
        """The link's latency, counted once: the larger of what the two sides state."""
        return max(self.a.latency_ms, self.b.latency_ms)

    def common_labels(self) -> LabelSet:
        """Labels both sides offer."""
        return self.a.labels.intersect(self.b.labels)

    def candidate_labels(self) -> LabelSet:
        """Labels usable on the link: the common ones; with a swapping side, the other side's set."""
        common = self.common_labels()
        if common:
            return common
        if self.a.can_swap and self.b.can_swap:
            return self.a.labels
        if self.a.can_swap:
            return self.b.labels
        if self.b.can_swap:
            return self.a.labels
        return common


def link_key(a: str, b: str) -> tuple[str, str]:
    """The canonical key of a link between ports ``a`` and ``b`` (order-free)."""
    return (a, b) if a <= b else (b, a)


def inter_links(notes: Mapping[SpId, CapabilityNote]) -> list[InterLink]:
    """Links between children: port p and q declare each other as peers (one-sided is no link)."""
    owner: dict[str, tuple[SpId, BorderPort]] = {}
    for sp, note in notes.items():
        for port in note.ports:
            owner[port.id] = (sp, port)
    links = []
    for port_id, (sp, port) in sorted(owner.items()):
        peer = owner.get(port.peer_port)
        if peer is None or port_id >= port.peer_port:
            continue
        peer_sp, peer_port = peer
        if peer_port.peer_port == port_id and peer_sp != sp:
            links.append(InterLink(port, peer_port, sp, peer_sp))
    return links


def check_unique_terminals(notes: Iterable[CapabilityNote]) -> None:
    """Refuse two children declaring the same terminal id (``ValueError`` naming it)."""
    seen: dict[str, str] = {}
    for note in notes:
        for tid in sorted(note.terminals()):
            if tid in seen and seen[tid] != note.sp_id:
                raise ValueError(f"terminal id '{tid}' is declared by both {seen[tid]} and {note.sp_id}")
            seen[tid] = note.sp_id


def terminal_owner(notes: Mapping[SpId, CapabilityNote]) -> dict[TerminalId, SpId]:
    """Which child declares each terminal."""
    return {tid: sp for sp, note in notes.items() for tid in note.terminals()}

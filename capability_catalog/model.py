"""The capability note model: frozen dataclasses, no I/O.

Terminal ids (endpoints and border ports) are global strings, by convention ``"<sp-id>.<name>"``;
they keep their id when a note is re-published upward as part of an abstract subtree view.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NewType

SpId = NewType("SpId", str)
TerminalId = NewType("TerminalId", str)


class LabelType(StrEnum):
    """Kinds of label that separate slices on an inter-domain link."""

    VXLAN_VNI = "vxlan-vni"
    VLAN = "vlan"
    MPLS = "mpls"


LABEL_LIMITS: dict[LabelType, tuple[int, int]] = {
    LabelType.VXLAN_VNI: (1, 16_777_215),
    LabelType.VLAN: (1, 4094),
    LabelType.MPLS: (16, 1_048_575),
}


@dataclass(frozen=True, order=True)
class LabelRange:
    """An inclusive range of labels ``[first, last]``."""

    first: int
    last: int

    def __post_init__(self) -> None:
        if self.first < 0 or self.last < self.first:
            raise ValueError(f"bad label range {self.first}-{self.last}")

    def __contains__(self, label: object) -> bool:
        return isinstance(label, int) and self.first <= label <= self.last

    def __len__(self) -> int:
        return self.last - self.first + 1


@dataclass(frozen=True)
class LabelSet:
    """A normalised (sorted, merged, disjoint) set of label ranges."""

    ranges: tuple[LabelRange, ...] = ()

    @classmethod
    def of(cls, ranges: Iterable[LabelRange]) -> LabelSet:
        """Normalise any ranges into a set."""
        merged: list[LabelRange] = []
        for r in sorted(ranges):
            if merged and r.first <= merged[-1].last + 1:
                last = merged[-1]
                merged[-1] = LabelRange(last.first, max(last.last, r.last))
            else:
                merged.append(r)
        return cls(tuple(merged))

    @classmethod
    def single(cls, label: int) -> LabelSet:
        """The set holding one label."""
        return cls((LabelRange(label, label),))

    def __contains__(self, label: object) -> bool:
        return any(label in r for r in self.ranges)

    def __len__(self) -> int:
        return sum(len(r) for r in self.ranges)

    def __bool__(self) -> bool:
        return bool(self.ranges)

    def __iter__(self) -> Iterator[int]:
        for r in self.ranges:
            yield from range(r.first, r.last + 1)

    def intersect(self, other: LabelSet) -> LabelSet:
        """Labels in both sets."""
        out: list[LabelRange] = []
        i = j = 0
        a, b = self.ranges, other.ranges
        while i < len(a) and j < len(b):
            lo, hi = max(a[i].first, b[j].first), min(a[i].last, b[j].last)
            if lo <= hi:
                out.append(LabelRange(lo, hi))
            if a[i].last < b[j].last:
                i += 1
            else:
                j += 1
        return LabelSet(tuple(out))

    def first_free(self, used: Iterable[int] | set[int], prefer: int | None = None) -> int | None:
        """``prefer`` when it is in the set and not used, else the lowest label not used, else None."""
        used_set = used if isinstance(used, set) else set(used)
        if prefer is not None and prefer in self and prefer not in used_set:
            return prefer
        for r in self.ranges:
            label = r.first
            while label <= r.last:
                if label not in used_set:
                    return label
                label += 1
        return None


@dataclass(frozen=True)
class Endpoint:
    """A place where customer traffic enters or leaves the federation."""

    id: TerminalId
    region: str = ""
    capacity_mbps: int = 0
    location: str = ""


@dataclass(frozen=True)
class BorderPort:
    """One side of an inter-domain link, declared by the SP that owns it."""

    id: TerminalId
    peer_sp: SpId
    peer_port: TerminalId
    label_type: LabelType = LabelType.VXLAN_VNI
    labels: LabelSet = field(default_factory=LabelSet)
    can_swap: bool = False
    capacity_mbps: int = 0
    # Labels kept for the SP's local services on this port: never offered to the federation.
    local_labels: LabelSet = field(default_factory=LabelSet)
    # One-way latency of the link to the peer port (fibre between the two SPs); both sides may state
    # it and the planner counts the link once, at the larger of the two.
    latency_ms: float = 0.0


@dataclass(frozen=True)
class Transit:
    """Abstract transit between two terminals of one SP (undirected).

    A pair may have several entries (a Pareto frontier over latency, bandwidth and price). An entry
    with ``functions`` is a route from ``a`` to ``b`` that visits a site hosting each of those
    function types, in that order (read from ``a`` to ``b``, or reversed from ``b`` to ``a``), with
    the latency of that route. ``price_per_mbps_hour`` is the price of this route; None means the
    note's price.
    """

    a: TerminalId
    b: TerminalId
    latency_ms: float
    bandwidth_mbps: int
    price_per_mbps_hour: float | None = None
    functions: tuple[str, ...] = ()

    def functions_from(self, start: str) -> tuple[str, ...]:
        """The functions in the order traffic entering at ``start`` meets them."""
        return self.functions if start == self.a else self.functions[::-1]


@dataclass(frozen=True)
class FunctionOffer:
    """Network functions of one type an SP can host at one site."""

    type: str
    site: str
    slots: int
    throughput_mbps: int = 0
    # True: the function is reachable only on transit entries that name its type (a route through
    # its site, costed). False (the original meaning): the SP places it on any of its transit at no
    # extra latency.
    routed: bool = False


class Isolation(StrEnum):
    """Isolation mechanisms an SP offers, from weakest to strongest."""

    SHARED = "shared"
    VXLAN = "vxlan"
    VLAN = "vlan"
    VRF = "vrf"
    DEDICATED_POP = "dedicated-pop"
    PHYSICAL = "physical"


@dataclass(frozen=True)
class QosClass:
    """A QoS class an SP offers: its native mapping (e.g. ``dscp: "46"``) and what it guarantees."""

    name: str
    native: tuple[tuple[str, str], ...] = ()
    delay_ms: float = 0.0
    loss: float = 0.0


@dataclass(frozen=True)
class CapabilityNote:
    """What one SP (or one local domain) sells, as of ``version``."""

    sp_id: SpId
    version: int
    issued_at: float
    expires_at: float
    endpoints: tuple[Endpoint, ...] = ()
    ports: tuple[BorderPort, ...] = ()
    transit: tuple[Transit, ...] = ()
    functions: tuple[FunctionOffer, ...] = ()
    qos_classes: tuple[QosClass, ...] = ()
    isolation: tuple[Isolation, ...] = ()
    # Prefixes (CIDR) the SP takes federation addresses from.
    address_pools: tuple[str, ...] = ()
    # Pairs of peer SPs the SP carries traffic between; empty means any.
    transit_policy: tuple[tuple[str, str], ...] = ()
    price_per_mbps_hour: float | None = None
    # For an aggregated note: (digest, version) of each note it was derived from; names no SP.
    provenance: tuple[tuple[str, int], ...] = ()

    def terminals(self) -> set[TerminalId]:
        """Ids of every endpoint and port in the note."""
        return {e.id for e in self.endpoints} | {p.id for p in self.ports}

    def port(self, port_id: str) -> BorderPort | None:
        """The border port with that id, if the note has it."""
        return next((p for p in self.ports if p.id == port_id), None)

    def function_types(self) -> set[str]:
        """Function types with at least one slot."""
        return {f.type for f in self.functions if f.slots > 0}

    def routed_types(self) -> frozenset[str]:
        """Function types placed only on the transit entries that name them."""
        return frozenset({f.type for f in self.functions if f.routed} | {x for t in self.transit for x in t.functions})

    def qos_class(self, name: str) -> QosClass | None:
        """The QoS class of that name, if offered."""
        return next((q for q in self.qos_classes if q.name == name), None)

    def carries(self, a: str, b: str) -> bool:
        """Whether the transit policy lets traffic pass between peers ``a`` and ``b``."""
        if not self.transit_policy:
            return True
        return (a, b) in self.transit_policy or (b, a) in self.transit_policy

    def is_expired(self, now: float) -> bool:
        """True once ``now`` is past the note's expiry."""
        return now >= self.expires_at

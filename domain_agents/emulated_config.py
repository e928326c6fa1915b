"""An emulated domain's configuration: pops, links, endpoints, border ports, function slots, fault knobs.

Parsed from the ``domains[i]`` mapping of a broker config; every error names the path of the bad field.
The netns and OpenStack domain configs reuse the parser's pieces.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from capability_catalog.authoring import OfferPolicy
from capability_catalog.model import (
    LABEL_LIMITS,
    BorderPort,
    CapabilityNote,
    Endpoint,
    Isolation,
    LabelRange,
    LabelSet,
    LabelType,
    QosClass,
    SpId,
    TerminalId,
)
from schemas.note import parse_policy
from slicing.errors import (
    InvalidArgument,
)

DEFAULT_NOTE_TTL_S = 3600.0
#: Steps at which the ``fail_at`` knob can inject a failure.
FAIL_STEPS: frozenset[str] = frozenset({"reserve", "commit", "activate"})
_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")
_SINGLE = re.compile(r"^\s*(\d+)\s*$")
#: What a domain offers when its config states no ``offer``: best effort, shared or VXLAN-separated.
DEFAULT_OFFER = OfferPolicy(
    qos_classes=(QosClass("best-effort", (("dscp", "0"),), 0.0, 0.0),),
    isolation=(Isolation.SHARED, Isolation.VXLAN),
)


# --- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PopLink:
    """An undirected internal link between two pops."""

    a: str
    b: str
    bandwidth_mbps: int
    latency_ms: float

    @property
    def key(self) -> tuple[str, str]:
        """The order-free key of the link."""
        return _pair(self.a, self.b)


@dataclass(frozen=True)
class PlacedEndpoint:
    """A service endpoint and the pop it sits at."""

    endpoint: Endpoint
    pop: str


@dataclass(frozen=True)
class PlacedPort:
    """A border port and the pop it sits at."""

    port: BorderPort
    pop: str


@dataclass(frozen=True)
class FunctionSlots:
    """How many functions of one type a pop can host."""

    pop: str
    type: str
    slots: int


@dataclass(frozen=True)
class Faults:
    """Fault injection for tests and scenarios: fail at one step, answer slowly."""

    fail_at: str | None = None
    latency_s: float = 0.0


@dataclass(frozen=True)
class EmulatedDomainConfig:
    """One emulated domain as declared in a broker config (validated by ``from_dict``)."""

    id: SpId
    pops: tuple[str, ...]
    links: tuple[PopLink, ...] = ()
    endpoints: tuple[PlacedEndpoint, ...] = ()
    ports: tuple[PlacedPort, ...] = ()
    functions: tuple[FunctionSlots, ...] = ()
    note_ttl_s: float = DEFAULT_NOTE_TTL_S
    offer: OfferPolicy = DEFAULT_OFFER
    faults: Faults = Faults()
    #: ``note_file`` as written in the config: a note in the authoring format that this domain serves.
    note_file: str | None = None
    #: Where ``note_file`` is set (``domains[0].note_file``), for errors about the file.
    note_field: str = ""
    #: The note read from ``note_file`` (``with_authored``, when the broker starts).
    authored: CapabilityNote | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, object], path: str) -> EmulatedDomainConfig:
        """Validate an already-parsed config mapping; errors are ``InvalidArgument`` naming the field path."""
        return _Parser(path).domain(d)

    def pop_of(self, terminal: str) -> str | None:
        """The pop a terminal sits at, or None when the domain has no such terminal."""
        return terminal_pop(self.endpoints, self.ports, terminal)


def with_authored(cfg: EmulatedDomainConfig, note: CapabilityNote) -> EmulatedDomainConfig:
    """``cfg`` serving ``note`` (read from its ``note_file``): the note's offer and validity become the domain's."""
    offer = OfferPolicy(
        qos_classes=note.qos_classes,
        isolation=note.isolation,
        address_pools=note.address_pools,
        transit_policy=note.transit_policy,
        price_per_mbps_hour=note.price_per_mbps_hour,
    )
    return replace(cfg, authored=note, offer=offer, note_ttl_s=note.expires_at - note.issued_at)


def terminal_pop(endpoints: Iterable[PlacedEndpoint], ports: Iterable[PlacedPort], terminal: str) -> str | None:
    """The pop an endpoint or border port sits at, or None when none of them is ``terminal``."""
    for e in endpoints:
        if e.endpoint.id == terminal:
            return e.pop
    for p in ports:
        if p.port.id == terminal:
            return p.pop
    return None


def _pair(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a <= b else (b, a)


def _at(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


class _Parser:
    """Turns a parsed mapping into an ``EmulatedDomainConfig``; every error names its path."""

    _DOMAIN = (
        "id",
        "type",
        "note_ttl_s",
        "note_file",
        "pops",
        "links",
        "endpoints",
        "ports",
        "functions",
        "offer",
        "faults",
    )
    _LINK = ("a", "b", "bandwidth_mbps", "latency_ms")
    _ENDPOINT = ("id", "pop", "region", "capacity_mbps")
    _PORT = ("id", "pop", "peer_sp", "peer_port", "label_type", "labels", "can_swap", "capacity_mbps", "latency_ms")
    _FUNCTION = ("pop", "type", "slots")

    def __init__(self, path: str) -> None:
        self.path = path

    def domain(self, d: object) -> EmulatedDomainConfig:
        m = self._mapping(d, self.path, self._DOMAIN)
        at = self.path
        sp_id = self._str(m, "id", at)
        kind = m.get("type", "emulated")
        if kind != "emulated":
            raise InvalidArgument(_at(at, "type"), f"must be 'emulated', got {kind!r}")
        ttl = m.get("note_ttl_s", DEFAULT_NOTE_TTL_S)
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl <= 0:
            raise InvalidArgument(_at(at, "note_ttl_s"), f"must be a positive number, got {ttl!r}")
        pops = self._pops(m, at)
        links = tuple(self._link(x, _at(_at(at, "links"), i), pops) for i, x in self._items(m, "links", at))
        seen_links: dict[tuple[str, str], int] = {}
        for i, link in enumerate(links):
            if link.key in seen_links:
                raise InvalidArgument(
                    _at(_at(at, "links"), i), f"duplicates links[{seen_links[link.key]}] ({link.a}–{link.b})"
                )
            seen_links[link.key] = i
        endpoints = tuple(
            self._endpoint(x, _at(_at(at, "endpoints"), i), pops) for i, x in self._items(m, "endpoints", at)
        )
        ports = tuple(self._port(x, _at(_at(at, "ports"), i), pops) for i, x in self._items(m, "ports", at))
        seen_ids: dict[str, str] = {}
        for i, e in enumerate(endpoints):
            self._unique(seen_ids, e.endpoint.id, _at(_at(_at(at, "endpoints"), i), "id"))
        for i, p in enumerate(ports):
            self._unique(seen_ids, p.port.id, _at(_at(_at(at, "ports"), i), "id"))
        functions = tuple(
            self._function(x, _at(_at(at, "functions"), i), pops) for i, x in self._items(m, "functions", at)
        )
        seen_fn: dict[tuple[str, str], int] = {}
        for i, f in enumerate(functions):
            if (f.pop, f.type) in seen_fn:
                raise InvalidArgument(
                    _at(_at(at, "functions"), i),
                    f"duplicates functions[{seen_fn[(f.pop, f.type)]}] ({f.type} at {f.pop})",
                )
            seen_fn[(f.pop, f.type)] = i
        offer = DEFAULT_OFFER
        if m.get("offer") is not None:
            offer, problems = parse_policy(m["offer"], _at(at, "offer"))
            if problems:
                where, _, why = problems[0].partition(": ")
                raise InvalidArgument(where, why)
        faults = self._faults(m.get("faults"), _at(at, "faults"))
        note_file = m.get("note_file")
        if note_file is not None:
            if not isinstance(note_file, str) or not note_file.strip():
                raise InvalidArgument(_at(at, "note_file"), f"must be the path of a note file (got {note_file!r})")
            # The file is what the operator validated: its offer and validity are the ones served.
            for key, what in (("offer", "qos_classes, isolation, address_pools, …"), ("note_ttl_s", "valid_for_s")):
                if key in m:
                    raise InvalidArgument(
                        _at(at, key), f"the note file states this ({what}); give it there, not also here"
                    )
        return EmulatedDomainConfig(
            id=SpId(sp_id),
            pops=pops,
            links=links,
            endpoints=endpoints,
            ports=ports,
            functions=functions,
            note_ttl_s=float(ttl),
            offer=offer,
            faults=faults,
            note_file=note_file,
            note_field=_at(at, "note_file"),
        )

    def _faults(self, raw: object, at: str) -> Faults:
        if raw is None:
            return Faults()
        m = self._mapping(raw, at, ("fail_at", "latency_s"))
        fail_at = m.get("fail_at")
        if fail_at is not None and fail_at not in FAIL_STEPS:
            raise InvalidArgument(
                _at(at, "fail_at"), f"must be one of {', '.join(sorted(FAIL_STEPS))}, got {fail_at!r}"
            )
        latency = m.get("latency_s", 0.0)
        if isinstance(latency, bool) or not isinstance(latency, int | float) or latency < 0:
            raise InvalidArgument(_at(at, "latency_s"), f"must be a number >= 0, got {latency!r}")
        return Faults(None if fail_at is None else str(fail_at), float(latency))

    @staticmethod
    def _unique(seen: dict[str, str], ident: str, where: str) -> None:
        if ident in seen:
            raise InvalidArgument(where, f"'{ident}' is used twice (also at {seen[ident]})")
        seen[ident] = where

    @staticmethod
    def _mapping(d: object, at: str, known: Sequence[str]) -> Mapping[str, object]:
        if not isinstance(d, Mapping):
            raise InvalidArgument(at or "config", "must be a mapping")
        for key in d:
            if key not in known:
                raise InvalidArgument(_at(at, str(key)), f"unknown key (known: {', '.join(known)})")
        return d

    @staticmethod
    def _items(m: Mapping[str, object], key: str, at: str) -> Iterable[tuple[int, object]]:
        value = m.get(key, [])
        if value is None:
            return []
        if not isinstance(value, list | tuple):
            raise InvalidArgument(_at(at, key), "must be a list")
        return enumerate(value)

    @staticmethod
    def _str(m: Mapping[str, object], key: str, at: str, default: str | None = None) -> str:
        value = m.get(key, default)
        if not isinstance(value, str) or (default is None and not value.strip()):
            raise InvalidArgument(_at(at, key), f"required, a non-empty string (got {value!r})")
        return value

    @staticmethod
    def _int(m: Mapping[str, object], key: str, at: str) -> int:
        value = m.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise InvalidArgument(_at(at, key), f"must be a positive integer (got {value!r})")
        return value

    @staticmethod
    def _pop(m: Mapping[str, object], key: str, at: str, pops: tuple[str, ...]) -> str:
        pop = _Parser._str(m, key, at)
        if pop not in pops:
            raise InvalidArgument(_at(at, key), f"unknown pop '{pop}' (pops: {', '.join(pops)})")
        return pop

    def _pops(self, m: Mapping[str, object], at: str) -> tuple[str, ...]:
        raw = m.get("pops")
        if not isinstance(raw, list | tuple) or not raw:
            raise InvalidArgument(_at(at, "pops"), "required, a non-empty list of pop names")
        pops: list[str] = []
        for i, pop in enumerate(raw):
            where = _at(_at(at, "pops"), i)
            if not isinstance(pop, str) or not pop.strip():
                raise InvalidArgument(where, f"must be a non-empty string (got {pop!r})")
            if pop in pops:
                raise InvalidArgument(where, f"pop '{pop}' is listed twice")
            pops.append(pop)
        return tuple(pops)

    def _link(self, x: object, at: str, pops: tuple[str, ...]) -> PopLink:
        m = self._mapping(x, at, self._LINK)
        a, b = self._pop(m, "a", at, pops), self._pop(m, "b", at, pops)
        if a == b:
            raise InvalidArgument(_at(at, "b"), f"a link must join two different pops (both are '{a}')")
        latency = m.get("latency_ms")
        if isinstance(latency, bool) or not isinstance(latency, int | float) or latency < 0:
            raise InvalidArgument(_at(at, "latency_ms"), f"must be a non-negative number (got {latency!r})")
        return PopLink(a, b, self._int(m, "bandwidth_mbps", at), float(latency))

    def _endpoint(self, x: object, at: str, pops: tuple[str, ...]) -> PlacedEndpoint:
        m = self._mapping(x, at, self._ENDPOINT)
        ep = Endpoint(
            id=TerminalId(self._str(m, "id", at)),
            region=self._str(m, "region", at, default=""),
            capacity_mbps=self._int(m, "capacity_mbps", at),
        )
        return PlacedEndpoint(ep, self._pop(m, "pop", at, pops))

    def _port(self, x: object, at: str, pops: tuple[str, ...]) -> PlacedPort:
        m = self._mapping(x, at, self._PORT)
        port_id = self._str(m, "id", at)
        pop = self._pop(m, "pop", at, pops)
        raw_type = m.get("label_type", LabelType.VXLAN_VNI.value)
        try:
            label_type = LabelType(str(raw_type))
        except ValueError:
            known = ", ".join(t.value for t in LabelType)
            raise InvalidArgument(_at(at, "label_type"), f"unknown label type {raw_type!r} (known: {known})") from None
        can_swap = m.get("can_swap", False)
        if not isinstance(can_swap, bool):
            raise InvalidArgument(_at(at, "can_swap"), f"must be true or false (got {can_swap!r})")
        port = BorderPort(
            id=TerminalId(port_id),
            peer_sp=SpId(self._str(m, "peer_sp", at)),
            peer_port=TerminalId(self._str(m, "peer_port", at)),
            label_type=label_type,
            labels=self._labels(m.get("labels"), _at(at, "labels"), label_type),
            can_swap=can_swap,
            capacity_mbps=self._int(m, "capacity_mbps", at),
            latency_ms=self._port_latency(m, at),
        )
        return PlacedPort(port, pop)

    @staticmethod
    def _port_latency(m: Mapping[str, object], at: str) -> float:
        """The latency of the link to the peer port (default 0), a finite number >= 0."""
        latency = m.get("latency_ms", 0.0)
        if isinstance(latency, bool) or not isinstance(latency, int | float) or not 0 <= latency < math.inf:
            raise InvalidArgument(_at(at, "latency_ms"), f"must be a non-negative number (got {latency!r})")
        return float(latency)

    @staticmethod
    def _labels(raw: object, at: str, label_type: LabelType) -> LabelSet:
        if not isinstance(raw, list | tuple) or not raw:
            raise InvalidArgument(at, "required, a non-empty list of labels and 'first-last' ranges")
        lo, hi = LABEL_LIMITS[label_type]
        ranges: list[LabelRange] = []
        for i, item in enumerate(raw):
            where = _at(at, i)
            first: int
            last: int
            if isinstance(item, int) and not isinstance(item, bool):
                first = last = item
            elif isinstance(item, str) and (match := _RANGE.match(item)):
                first, last = int(match.group(1)), int(match.group(2))
            elif isinstance(item, str) and (match := _SINGLE.match(item)):
                first = last = int(match.group(1))
            else:
                raise InvalidArgument(where, f"must be a label or a 'first-last' range (got {item!r})")
            if last < first:
                raise InvalidArgument(where, f"range {first}-{last} ends before it starts")
            if first < lo or last > hi:
                raise InvalidArgument(where, f"{label_type.value} labels must lie within {lo}-{hi} (got {item!r})")
            ranges.append(LabelRange(first, last))
        return LabelSet.of(ranges)

    def _function(self, x: object, at: str, pops: tuple[str, ...]) -> FunctionSlots:
        m = self._mapping(x, at, self._FUNCTION)
        return FunctionSlots(self._pop(m, "pop", at, pops), self._str(m, "type", at), self._int(m, "slots", at))

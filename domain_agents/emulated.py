"""An emulated domain: pops, internal links, terminals and function slots, all accounting in memory.

It is the fake behind the ``DomainAgent`` port: unit tests, scenarios and demos run whole
federations on it. Its knobs (``latency_s``, ``fail_at``) let tests slow it down or make it fail at
one step. The handle it returns is the allocation itself as JSON, so ``restore`` can rebuild the
holdings after a broker restart without any state of its own::

    {"v": 1, "domain": "L1", "key": "s1.0.0", "bandwidth_mbps": 100,
     "links": [{"a": "core", "b": "edge", "mbps": 100}], "terminals": {"L1.ep": 100, "L1.to-L2": 100},
     "slots": [{"pop": "core", "type": "firewall"}], "labels": {"L1.to-L2": 1000},
     "addresses": {"L1.ep": "10.0.0.1/24"}}
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import combinations, pairwise

import networkx as nx

from capability_catalog.authoring import OfferPolicy, parse_policy
from capability_catalog.model import (
    LABEL_LIMITS,
    BorderPort,
    CapabilityNote,
    Endpoint,
    FunctionOffer,
    Isolation,
    LabelRange,
    LabelSet,
    LabelType,
    QosClass,
    SpId,
    TerminalId,
    Transit,
)
from domain_agents.base import DomainUsage, SegmentGrant, SegmentOrder
from slicing.errors import (
    AlreadyExists,
    FedError,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from slicing.model import SliceRequest, SliceState

HANDLE_VERSION = 1
DEFAULT_NOTE_TTL_S = 3600.0
#: Steps at which the ``fail_at`` knob can inject a failure.
FAIL_STEPS: frozenset[str] = frozenset({"reserve", "commit", "activate"})
# Path latency may equal the budget; the slack absorbs float sums done in another order.
_LATENCY_SLACK_MS = 1e-9
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

    @classmethod
    def from_dict(cls, d: Mapping[str, object], path: str) -> EmulatedDomainConfig:
        """Validate an already-parsed config mapping; errors are ``InvalidArgument`` naming the field path."""
        return _Parser(path).domain(d)

    def pop_of(self, terminal: str) -> str | None:
        """The pop a terminal sits at, or None when the domain has no such terminal."""
        return terminal_pop(self.endpoints, self.ports, terminal)


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

    _DOMAIN = ("id", "type", "note_ttl_s", "pops", "links", "endpoints", "ports", "functions", "offer", "faults")
    _LINK = ("a", "b", "bandwidth_mbps", "latency_ms")
    _ENDPOINT = ("id", "pop", "region", "capacity_mbps")
    _PORT = ("id", "pop", "peer_sp", "peer_port", "label_type", "labels", "can_swap", "capacity_mbps")
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
        )
        return PlacedPort(port, pop)

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


# --- allocations and their handle ------------------------------------------------------------


@dataclass(frozen=True)
class _Allocation:
    """What one segment holds; its JSON form is the handle."""

    domain: str
    key: str
    bandwidth_mbps: int
    links: tuple[tuple[str, str], ...] = ()
    terminals: tuple[TerminalId, ...] = ()
    slots: tuple[tuple[str, str], ...] = ()  # (pop, function type), one per function
    labels: tuple[tuple[TerminalId, int], ...] = ()
    addresses: tuple[tuple[TerminalId, str], ...] = ()

    def to_handle(self) -> str:
        bw = self.bandwidth_mbps
        return json.dumps(
            {
                "v": HANDLE_VERSION,
                "domain": self.domain,
                "key": self.key,
                "bandwidth_mbps": bw,
                "links": [{"a": a, "b": b, "mbps": bw} for a, b in self.links],
                "terminals": {t: bw for t in self.terminals},
                "slots": [{"pop": p, "type": t} for p, t in self.slots],
                "labels": dict(self.labels),
                "addresses": dict(self.addresses),
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_handle(cls, handle: str) -> _Allocation:
        """Parse a handle; ``InvalidArgument("handle", ...)`` when it is not one of ours."""
        try:
            raw = json.loads(handle)
            if not isinstance(raw, dict) or raw.get("v") != HANDLE_VERSION:
                raise TypeError("not a version-1 emulated-domain handle")
            bw = raw["bandwidth_mbps"]
            if not isinstance(bw, int) or isinstance(bw, bool):
                raise TypeError("bandwidth_mbps")
            return cls(
                domain=str(raw["domain"]),
                key=str(raw["key"]),
                bandwidth_mbps=bw,
                links=tuple(_pair(str(x["a"]), str(x["b"])) for x in raw["links"]),
                terminals=tuple(TerminalId(str(t)) for t in raw["terminals"]),
                slots=tuple((str(x["pop"]), str(x["type"])) for x in raw["slots"]),
                labels=tuple((TerminalId(str(p)), _as_int(v)) for p, v in raw["labels"].items()),
                addresses=tuple((TerminalId(str(e)), str(a)) for e, a in raw["addresses"].items()),
            )
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise InvalidArgument("handle", f"not an emulated-domain handle ({exc})") from None


def _as_int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"label {value!r} is not an integer")
    return value


@dataclass
class _Segment:
    """A held segment: its order, grant and allocation, and the state the core last moved it to."""

    request: SliceRequest | None  # None when restored from a handle alone
    grant: SegmentGrant
    alloc: _Allocation
    state: SliceState = SliceState.HELD


def _fmt_labels(labels: LabelSet) -> str:
    return ",".join(str(r.first) if r.first == r.last else f"{r.first}-{r.last}" for r in labels.ranges) or "{}"


@dataclass
class _Books:
    """Everything held in the domain, as counters (restored holdings may exceed a shrunk capacity)."""

    links: Counter[tuple[str, str]] = field(default_factory=Counter)
    terminals: Counter[str] = field(default_factory=Counter)
    slots: Counter[tuple[str, str]] = field(default_factory=Counter)
    labels: dict[str, dict[int, str]] = field(default_factory=dict)  # port -> label -> key
    addresses: dict[str, str] = field(default_factory=dict)  # bare address -> key

    def apply(self, a: _Allocation) -> None:
        for link in a.links:
            self.links[link] += a.bandwidth_mbps
        for t in a.terminals:
            self.terminals[t] += a.bandwidth_mbps
        for slot in a.slots:
            self.slots[slot] += 1
        for port, label in a.labels:
            self.labels.setdefault(port, {})[label] = a.key
        for _, addr in a.addresses:
            self.addresses[addr.split("/")[0]] = a.key

    def release(self, a: _Allocation) -> None:
        for link in a.links:
            self.links[link] -= a.bandwidth_mbps
        for t in a.terminals:
            self.terminals[t] -= a.bandwidth_mbps
        for slot in a.slots:
            self.slots[slot] -= 1
        for port, label in a.labels:
            held = self.labels.get(port, {})
            if held.get(label) == a.key:
                del held[label]
        for _, addr in a.addresses:
            bare = addr.split("/")[0]
            if self.addresses.get(bare) == a.key:
                del self.addresses[bare]
        self.links = +self.links  # drop zero counts
        self.terminals = +self.terminals
        self.slots = +self.slots


# --- the agent -------------------------------------------------------------------------------


class EmulatedDomainAgent:
    """A ``DomainAgent`` over an emulated domain: min-latency routing, all-or-nothing accounting."""

    def __init__(
        self,
        config: EmulatedDomainConfig,
        clock: Callable[[], float],
        *,
        latency_s: float | None = None,
        fail_at: str | None = None,
    ) -> None:
        # The knobs default to the config's ``faults``, so every agent built from a config honours them.
        fail_at = fail_at if fail_at is not None else config.faults.fail_at
        latency_s = latency_s if latency_s is not None else config.faults.latency_s
        if fail_at is not None and fail_at not in FAIL_STEPS:
            raise ValueError(f"fail_at must be one of {sorted(FAIL_STEPS)} or None, got {fail_at!r}")
        if latency_s < 0:
            raise ValueError(f"latency_s must not be negative, got {latency_s}")
        self.config = config
        self._clock = clock
        self.latency_s = latency_s
        self.fail_at = fail_at
        self._graph = nx.Graph()
        self._graph.add_nodes_from(config.pops)
        for link in config.links:
            self._graph.add_edge(link.a, link.b, latency_ms=link.latency_ms, bandwidth_mbps=link.bandwidth_mbps)
        self._capacity: dict[str, int] = {e.endpoint.id: e.endpoint.capacity_mbps for e in config.endpoints}
        self._capacity.update({p.port.id: p.port.capacity_mbps for p in config.ports})
        self._ports: dict[str, BorderPort] = {p.port.id: p.port for p in config.ports}
        self._slots: dict[tuple[str, str], int] = {(f.pop, f.type): f.slots for f in config.functions}
        self._books = _Books()
        self._offer = config.offer
        self._segments: dict[str, _Segment] = {}  # by order key
        self._by_handle: dict[str, str] = {}  # handle -> order key
        self._note = self._build_note(previous=None)
        # Set when holdings changed without a new note yet: built once, when next read.
        self._stale = False
        self._changed = asyncio.Event()

    # --- notes --------------------------------------------------------------------------------

    @property
    def domain_id(self) -> SpId:
        """The domain id, which is the sp_id of its notes."""
        return self.config.id

    @property
    def note(self) -> CapabilityNote:
        """The note published now."""
        if self._stale:
            self.republish()
        return self._note

    def republish(self) -> CapabilityNote:
        """Issue a new note version now and wake every ``notes()`` subscriber."""
        self._stale = False
        self._note = self._build_note(previous=self._note)
        self._wake()
        return self._note

    def _holdings_changed(self) -> None:
        """The note no longer shows what is free: build a new one when it is next read, not now.

        Holdings change in bursts (a restart restores all of them, concurrent customers reserve at
        once); subscribers are woken now, and one note covers every change made before they read it.
        """
        self._stale = True
        self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    @property
    def offer(self) -> OfferPolicy:
        """The operator's current offer policy."""
        return self._offer

    def set_offer(self, offer: OfferPolicy) -> CapabilityNote:
        """An operator's edit of the offer: publish a new note version at once."""
        self._offer = offer
        return self.republish()

    async def notes(self) -> AsyncIterator[CapabilityNote]:
        """The current note at once, then each note ``republish`` issues, until cancelled.

        A note is re-issued on its own at half its lifetime, so a long-running broker never
        holds only an expired note of its domain.
        """
        note = self.note
        yield note
        while True:
            if self.note is note:
                refresh_in = max(0.05, (note.expires_at - note.issued_at) / 2)
                try:
                    await asyncio.wait_for(self._changed.wait(), timeout=refresh_in)
                except TimeoutError:
                    self.republish()
            note = self.note
            yield note

    def _build_note(self, previous: CapabilityNote | None) -> CapabilityNote:
        now = self._clock()
        version = int(now * 1000)
        if previous is not None:
            version = max(version, previous.version + 1)
        cfg, offer = self.config, self._offer
        note = CapabilityNote(
            sp_id=cfg.id,
            version=version,
            issued_at=now,
            expires_at=now + cfg.note_ttl_s,
            qos_classes=offer.qos_classes,
            isolation=offer.isolation,
            address_pools=offer.address_pools,
            transit_policy=offer.transit_policy,
            price_per_mbps_hour=offer.price_per_mbps_hour,
        )
        if offer.withdrawn:
            # Withdrawn: a valid note that sells nothing, so every SP above stops using it at once.
            return note
        return replace(
            note,
            endpoints=tuple(e.endpoint for e in cfg.endpoints),
            ports=tuple(p.port for p in cfg.ports),
            transit=self._transit(),
            functions=tuple(
                FunctionOffer(f.type, f.pop, max(0, f.slots - self._books.slots[(f.pop, f.type)]))
                for f in cfg.functions
            ),
        )

    def _transit(self) -> tuple[Transit, ...]:
        terminals = [(e.endpoint.id, e.pop) for e in self.config.endpoints]
        terminals += [(p.port.id, p.pop) for p in self.config.ports]
        routes: dict[str, tuple[dict[str, float], dict[str, list[str]]]] = dict(
            nx.all_pairs_dijkstra(self._graph, weight="latency_ms")
        )
        out: list[Transit] = []
        used = self._books
        for (ta, pa), (tb, pb) in combinations(terminals, 2):
            # What is free now, not what was built: the note follows capacity taken by slices.
            cap = min(self._capacity[ta] - used.terminals[ta], self._capacity[tb] - used.terminals[tb])
            dist, path_to = routes[pa]
            if pb not in dist:
                continue  # pops not connected: no transit between these terminals
            path = path_to[pb]
            bottleneck = min(
                (int(self._graph.edges[u, v]["bandwidth_mbps"]) - used.links[_pair(u, v)] for u, v in pairwise(path)),
                default=cap,
            )
            out.append(Transit(ta, tb, float(dist[pb]), min(cap, bottleneck)))
        return tuple(out)

    # --- segments -----------------------------------------------------------------------------

    async def _step(self, step: str) -> None:
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)

    def _inject(self, step: str) -> None:
        if self.fail_at != step:
            return
        message = f"injected failure at {step}"
        if step == "reserve":
            raise ResourceExhausted(message, domain=self.domain_id)
        raise Unavailable(message, domain=self.domain_id)

    async def reserve(self, order: SegmentOrder) -> SegmentGrant:
        """Hold bandwidth, slots, labels and addresses for the segment, all or nothing."""
        await self._step("reserve")
        if not order.hold_time_s > 0:
            raise InvalidArgument("hold_time_s", f"must be positive (got {order.hold_time_s})", domain=self.domain_id)
        held = self._segments.get(order.key)
        if held is not None:
            # A segment restored from its handle alone has no request to compare: trust the key.
            if held.request is not None and held.request != order.request:
                raise AlreadyExists(f"order key '{order.key}' is held for a different request", domain=self.domain_id)
            return held.grant
        self._inject("reserve")
        try:
            alloc = self._allocate(order.key, order.request)
        except FedError as exc:
            raise exc.in_domain(self.domain_id) from None
        grant = SegmentGrant(handle=alloc.to_handle(), labels=dict(alloc.labels), addresses=dict(alloc.addresses))
        self._books.apply(alloc)
        self._segments[order.key] = _Segment(order.request, grant, alloc)
        self._by_handle[grant.handle] = order.key
        self._holdings_changed()
        return grant

    def _allocate(self, key: str, req: SliceRequest) -> _Allocation:
        """Choose everything the segment needs without holding any of it; raise when something is missing."""
        dom = self.domain_id
        src_pop = self.config.pop_of(req.src)
        if src_pop is None:
            raise InvalidArgument("request.src", f"'{req.src}' is not an endpoint or port of domain {dom}")
        dst_pop = self.config.pop_of(req.dst)
        if dst_pop is None:
            raise InvalidArgument("request.dst", f"'{req.dst}' is not an endpoint or port of domain {dom}")
        if req.src == req.dst:
            raise InvalidArgument("request.dst", f"must differ from request.src ('{req.src}')")
        bw = req.bandwidth_mbps
        if isinstance(bw, bool) or not isinstance(bw, int) or bw <= 0:
            raise InvalidArgument("request.bandwidth_mbps", f"must be a positive integer (got {bw!r})")
        try:
            subnet = ipaddress.ip_network(req.subnet)
        except ValueError as exc:
            raise InvalidArgument("request.subnet", str(exc)) from None

        for t in (req.src, req.dst):
            free = self._capacity[t] - self._books.terminals[t]
            if bw > free:
                raise ResourceExhausted(f"{t}: {free} of {self._capacity[t]} Mbit/s free, {bw} Mbit/s asked")
        pops = self._route(req, src_pop, dst_pop)
        links = tuple(_pair(u, v) for u, v in pairwise(pops))
        return _Allocation(
            domain=dom,
            key=key,
            bandwidth_mbps=bw,
            links=links,
            terminals=(req.src, req.dst),
            slots=self._place_functions(req.chain, pops),
            labels=self._choose_labels(req),
            addresses=self._choose_addresses(req, subnet),
        )

    def _route(self, req: SliceRequest, src_pop: str, dst_pop: str) -> list[str]:
        """The min-latency pop path over links with enough free bandwidth."""
        bw = req.bandwidth_mbps
        usable = nx.subgraph_view(
            self._graph,
            filter_edge=lambda u, v: self._graph.edges[u, v]["bandwidth_mbps"] - self._books.links[_pair(u, v)] >= bw,
        )
        try:
            latency, path = nx.single_source_dijkstra(usable, src_pop, dst_pop, weight="latency_ms")
        except nx.NetworkXNoPath:
            raise ResourceExhausted(
                f"no path from {req.src} ({src_pop}) to {req.dst} ({dst_pop}) in domain {self.domain_id}"
                f" with {bw} Mbit/s free"
            ) from None
        budget = req.latency_budget_ms
        if budget > 0 and float(latency) > budget + _LATENCY_SLACK_MS:
            raise ResourceExhausted(
                f"the path from {req.src} to {req.dst} with {bw} Mbit/s free takes {float(latency):g} ms,"
                f" over the budget of {budget:g} ms"
            )
        return [str(p) for p in path]

    def _place_functions(self, chain: Sequence[str], path: Sequence[str]) -> tuple[tuple[str, str], ...]:
        taken: Counter[tuple[str, str]] = Counter()
        placed: list[tuple[str, str]] = []
        others = [p for p in self.config.pops if p not in path]
        for fn in chain:
            for pop in (*path, *others):
                slot = (pop, fn)
                if self._slots.get(slot, 0) - self._books.slots[slot] - taken[slot] > 0:
                    taken[slot] += 1
                    placed.append(slot)
                    break
            else:
                raise ResourceExhausted(f"no free '{fn}' function slot in domain {self.domain_id}")
        return tuple(placed)

    def _choose_labels(self, req: SliceRequest) -> tuple[tuple[TerminalId, int], ...]:
        chosen: list[tuple[TerminalId, int]] = []
        for t in (req.src, req.dst):
            port = self._ports.get(t)
            if port is None:
                continue
            allowed = port.labels
            preferred: int | None = None
            constraint = req.constraint(t)
            within = f"{port.id}'s labels {_fmt_labels(port.labels)}"
            if constraint is not None:
                allowed = allowed.intersect(constraint.labels)
                preferred = constraint.preferred
                within = (
                    f"{_fmt_labels(allowed)} (port {_fmt_labels(port.labels)} ∩ asked {_fmt_labels(constraint.labels)})"
                )
            label = allowed.first_free(set(self._books.labels.get(t, {})), prefer=preferred)
            if label is None:
                raise ResourceExhausted(f"no free label on port {t} within {within}")
            chosen.append((t, label))
        return tuple(chosen)

    def _choose_addresses(
        self, req: SliceRequest, subnet: ipaddress.IPv4Network | ipaddress.IPv6Network
    ) -> tuple[tuple[TerminalId, str], ...]:
        chosen: list[tuple[TerminalId, str]] = []
        taken = set(self._books.addresses)
        for t in (req.src, req.dst):
            if t in self._ports:
                continue
            host = next((h for h in subnet.hosts() if str(h) not in taken), None)
            if host is None:
                raise ResourceExhausted(f"no free address left in subnet {subnet} for {t}")
            taken.add(str(host))
            chosen.append((t, f"{host}/{subnet.prefixlen}"))
        return tuple(chosen)

    def _segment(self, handle: str) -> _Segment:
        key = self._by_handle.get(handle)
        if key is None:
            raise NotFound(f"no segment held under this handle in domain {self.domain_id}", domain=self.domain_id)
        return self._segments[key]

    async def commit(self, handle: str) -> None:
        """Mark a held segment committed (``NotFound`` for a handle not held)."""
        await self._step("commit")
        seg = self._segment(handle)
        self._inject("commit")
        if seg.state is SliceState.HELD:
            seg.state = SliceState.COMMITTED

    async def activate(self, handle: str) -> None:
        """Mark a segment active (``NotFound`` for a handle not held)."""
        await self._step("activate")
        seg = self._segment(handle)
        self._inject("activate")
        seg.state = SliceState.ACTIVE

    async def abort(self, handle: str) -> None:
        """Release a held segment; an unknown or released handle is a no-op."""
        await self._step("abort")
        self._release(handle)

    async def terminate(self, handle: str) -> None:
        """Release a committed or active segment; an unknown or released handle is a no-op."""
        await self._step("terminate")
        self._release(handle)

    def _release(self, handle: str) -> None:
        key = self._by_handle.pop(handle, None)
        if key is None:
            return
        seg = self._segments.pop(key)
        self._books.release(seg.alloc)
        self._holdings_changed()

    async def restore(self, handle: str, committed: bool) -> None:
        """Re-apply a handle's allocation after a restart; capacity is not re-checked, holdings are facts."""
        await self._step("restore")
        alloc = _Allocation.from_handle(handle)
        if alloc.domain != self.domain_id:
            raise InvalidArgument("handle", f"belongs to domain {alloc.domain}, not {self.domain_id}")
        state = SliceState.COMMITTED if committed else SliceState.HELD
        if alloc.key in self._segments:
            seg = self._segments[alloc.key]
            if seg.grant.handle != handle:
                raise AlreadyExists(f"order key '{alloc.key}' is held under another handle", domain=self.domain_id)
            seg.state = state
            return
        self._check_restorable(alloc)
        grant = SegmentGrant(handle=handle, labels=dict(alloc.labels), addresses=dict(alloc.addresses))
        self._books.apply(alloc)
        self._segments[alloc.key] = _Segment(None, grant, alloc, state)
        self._by_handle[handle] = alloc.key
        self._holdings_changed()

    def _check_restorable(self, alloc: _Allocation) -> None:
        dom = self.domain_id
        known_links = {link.key for link in self.config.links}
        for a, b in alloc.links:
            if (a, b) not in known_links:
                raise InvalidArgument("handle", f"link {a}–{b} is not in domain {dom}")
        for t in alloc.terminals:
            if t not in self._capacity:
                raise InvalidArgument("handle", f"terminal '{t}' is not in domain {dom}")
        for slot in alloc.slots:
            if slot not in self._slots:
                raise InvalidArgument("handle", f"no '{slot[1]}' slots at pop {slot[0]} in domain {dom}")
        for port, label in alloc.labels:
            owner = self._books.labels.get(port, {}).get(label)
            if port not in self._ports:
                raise InvalidArgument("handle", f"port '{port}' is not in domain {dom}")
            if owner is not None:
                raise ResourceExhausted(f"label {label} on port {port} is already held by '{owner}'", domain=dom)

    def state_of(self, handle: str) -> SliceState:
        """The state the core last moved a held segment to (``NotFound`` when not held)."""
        return self._segment(handle).state

    def describe(self, handle: str) -> tuple[Mapping[str, object], ...]:
        """A local domain has no segments of its own to report."""
        return ()

    def usage(self) -> DomainUsage:
        """Sum of held segments' bandwidth, and counts of held labels, function slots and addresses."""
        allocs = [s.alloc for s in self._segments.values()]
        return DomainUsage(
            domain=self.domain_id,
            bandwidth_mbps=sum(a.bandwidth_mbps for a in allocs),
            labels=sum(len(a.labels) for a in allocs),
            function_slots=sum(len(a.slots) for a in allocs),
            addresses=sum(len(a.addresses) for a in allocs),
        )

    async def close(self) -> None:
        """Nothing to close; holdings stay."""

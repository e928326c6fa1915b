"""An emulated domain's configuration: pops, links, endpoints, border ports, function slots, fault knobs.

Parsed from the ``domains[i]`` mapping of a broker config by the strict schema of ``schemas/domain.py``
(types checked, not coerced; unknown keys refused), then checked as a whole here (pops that exist,
ids used once) and mapped onto frozen dataclasses; every error names the path of the bad field. The
netns and OpenStack domain configs reuse these pieces.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from capability_catalog.authoring import OfferPolicy
from capability_catalog.model import (
    BorderPort,
    CapabilityNote,
    Endpoint,
    Isolation,
    LabelSet,
    LabelType,
    QosClass,
    SpId,
    TerminalId,
)
from domain_agents.authored import offer_of
from schemas.domain import ALLOWED, EmulatedDomainFile, EndpointEntry, PortEntry
from schemas.note import parse_policy
from schemas.problems import problems
from slicing.errors import (
    InvalidArgument,
)

DEFAULT_NOTE_TTL_S = 3600.0
#: Steps at which the ``fail_at`` knob can inject a failure.
FAIL_STEPS: frozenset[str] = frozenset({"reserve", "commit", "activate"})
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
    #: The file's ``expires_at`` when it fixes one: no note served lasts past it (``domain_agents.authored``).
    note_expires_at: float | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, object], path: str) -> EmulatedDomainConfig:
        """Validate an already-parsed config mapping; errors are ``InvalidArgument`` naming the field path."""
        return _domain(d, path)

    def pop_of(self, terminal: str) -> str | None:
        """The pop a terminal sits at, or None when the domain has no such terminal."""
        return terminal_pop(self.endpoints, self.ports, terminal)


def parse_netns_domain(d: Mapping[str, object], path: str) -> EmulatedDomainConfig:
    """A ``type: netns`` domain (``domain_agents.netns``): the emulated format, validated by the emulated parser."""
    kind = d.get("type", "netns")
    if kind != "netns":
        raise InvalidArgument(f"{path}.type", f"must be 'netns', got {kind!r}")
    return EmulatedDomainConfig.from_dict({k: v for k, v in d.items() if k != "type"}, path)


def with_authored(cfg: EmulatedDomainConfig, note: CapabilityNote, until: float | None = None) -> EmulatedDomainConfig:
    """``cfg`` serving ``note`` (read from its ``note_file``): the note's offer and validity become the domain's.

    ``until``: the file's ``expires_at`` when it fixes one, past which no note is served.
    """
    ttl = note.expires_at - note.issued_at
    return replace(cfg, authored=note, offer=offer_of(note), note_ttl_s=ttl, note_expires_at=until)


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


_M = TypeVar("_M", bound=BaseModel)


def validated(model: type[_M], d: object, path: str) -> _M:
    """``d`` checked by ``model`` (``schemas.domain``); ``InvalidArgument`` naming the first bad field's path.

    Every other problem found follows on its own line of the message.
    """
    if not isinstance(d, Mapping):
        raise InvalidArgument(path or "config", "must be a mapping")
    try:
        return model.model_validate(d)
    except ValidationError as exc:
        found = problems(exc, path, root=model, allowed=ALLOWED)
    where, _, why = found[0].partition(": ")
    raise InvalidArgument(where, why + "".join(f"\n{p}" for p in found[1:]))


def check_pops(pops: Sequence[str], at: str) -> tuple[str, ...]:
    """The pop names, each once."""
    seen: list[str] = []
    for i, pop in enumerate(pops):
        if pop in seen:
            raise InvalidArgument(_at(_at(at, "pops"), i), f"pop '{pop}' is listed twice")
        seen.append(pop)
    return tuple(seen)


def known_pop(pop: str, pops: Sequence[str], where: str) -> str:
    """``pop`` when the domain has it."""
    if pop not in pops:
        raise InvalidArgument(where, f"unknown pop '{pop}' (pops: {', '.join(pops)})")
    return pop


def unique(seen: dict[str, str], ident: str, where: str) -> None:
    """Refuse an id used twice in one domain, naming both places."""
    if ident in seen:
        raise InvalidArgument(where, f"'{ident}' is used twice (also at {seen[ident]})")
    seen[ident] = where


def placed_terminals(
    endpoints: Sequence[EndpointEntry], ports: Sequence[PortEntry], pops: Sequence[str], at: str
) -> tuple[tuple[PlacedEndpoint, ...], tuple[PlacedPort, ...]]:
    """A domain's endpoints and border ports at its pops, each id once."""
    seen: dict[str, str] = {}
    placed_endpoints = []
    for i, e in enumerate(endpoints):
        where = _at(_at(at, "endpoints"), i)
        pop = known_pop(e.pop, pops, _at(where, "pop"))
        placed_endpoints.append(PlacedEndpoint(Endpoint(TerminalId(e.id), e.region, e.capacity_mbps), pop))
    placed_ports = []
    for i, p in enumerate(ports):
        where = _at(_at(at, "ports"), i)
        pop = known_pop(p.pop, pops, _at(where, "pop"))
        port = BorderPort(
            id=TerminalId(p.id),
            peer_sp=SpId(p.peer_sp),
            peer_port=TerminalId(p.peer_port),
            label_type=LabelType(p.label_type),
            labels=LabelSet.of(p.labels),
            can_swap=p.can_swap,
            capacity_mbps=p.capacity_mbps,
            latency_ms=p.latency_ms,
        )
        placed_ports.append(PlacedPort(port, pop))
    for i, pe in enumerate(placed_endpoints):
        unique(seen, pe.endpoint.id, _at(_at(_at(at, "endpoints"), i), "id"))
    for i, pp in enumerate(placed_ports):
        unique(seen, pp.port.id, _at(_at(_at(at, "ports"), i), "id"))
    return tuple(placed_endpoints), tuple(placed_ports)


def _domain(d: object, at: str) -> EmulatedDomainConfig:
    m = validated(EmulatedDomainFile, d, at)
    pops = check_pops(m.pops, at)
    links: list[PopLink] = []
    seen_links: dict[tuple[str, str], int] = {}
    for i, x in enumerate(m.links or ()):
        where = _at(_at(at, "links"), i)
        link = PopLink(
            known_pop(x.a, pops, _at(where, "a")), known_pop(x.b, pops, _at(where, "b")), x.bandwidth_mbps, x.latency_ms
        )
        if link.key in seen_links:
            raise InvalidArgument(where, f"duplicates links[{seen_links[link.key]}] ({link.a}–{link.b})")
        seen_links[link.key] = i
        links.append(link)
    endpoints, ports = placed_terminals(m.endpoints or (), m.ports or (), pops, at)
    functions: list[FunctionSlots] = []
    seen_fn: dict[tuple[str, str], int] = {}
    for i, f in enumerate(m.functions or ()):
        where = _at(_at(at, "functions"), i)
        slot = FunctionSlots(known_pop(f.pop, pops, _at(where, "pop")), f.type, f.slots)
        if (slot.pop, slot.type) in seen_fn:
            first = seen_fn[(slot.pop, slot.type)]
            raise InvalidArgument(where, f"duplicates functions[{first}] ({f.type} at {f.pop})")
        seen_fn[(slot.pop, slot.type)] = i
        functions.append(slot)
    raw = d if isinstance(d, Mapping) else {}
    offer = DEFAULT_OFFER
    if m.offer is not None:
        offer, found = parse_policy(m.offer, _at(at, "offer"))
        if found:
            where, _, why = found[0].partition(": ")
            raise InvalidArgument(where, why)
    if m.note_file is not None:
        # The file is what the operator validated: its offer and validity are the ones served.
        for key, what in (("offer", "qos_classes, isolation, address_pools, …"), ("note_ttl_s", "valid_for_s")):
            if key in raw:
                raise InvalidArgument(_at(at, key), f"the note file states this ({what}); give it there, not also here")
    faults = Faults(m.faults.fail_at, m.faults.latency_s) if m.faults is not None else Faults()
    return EmulatedDomainConfig(
        id=SpId(m.id),
        pops=pops,
        links=tuple(links),
        endpoints=endpoints,
        ports=ports,
        functions=tuple(functions),
        note_ttl_s=m.note_ttl_s,
        offer=offer,
        faults=faults,
        note_file=m.note_file,
        note_field=_at(at, "note_file"),
    )

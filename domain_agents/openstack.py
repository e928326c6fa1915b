"""The OpenStack domain agent: a leaf SP's segments as real Neutron networks and Placement allocations.

Capacity lives in Placement: one resource provider per PoP, with ``VCPU``, ``MEMORY_MB``,
``CUSTOM_FED_BANDWIDTH_MBPS`` and ``CUSTOM_FED_FUNCTION_SLOTS`` inventories. Labels are the VXLAN
VNIs of the range the SP dedicates to the federation at each border port, less those Neutron
networks use now. The published note is built from both and re-issued when they change.

A segment is, in OpenStack::

    Placement consumer  uuid5(domain, order key), consumer_type FEDBROKER:
                        bandwidth at every PoP on the route, a function slot (+ VCPU, MEMORY_MB)
                        per network function
    Neutron network     VXLAN, one segment per border terminal on its negotiated VNI
                        (no border: Neutron picks from its tenant range), admin down until activate
      subnet            the upper-SP's subnet, no gateway, no DHCP
      ports             one per terminal; endpoints get an address from the subnet

all tagged ``fedbroker-res:<consumer>``; commit adds ``fedbroker:committed``; abort, expiry and
terminate delete everything with the tag and the consumer's allocations. The handle is JSON of
what was made, so ``restore`` finds it again after a restart.

openstacksdk blocks: every call goes through ``asyncio.to_thread``, and its errors arrive here
already translated (``domain_agents/openstack_cloud.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import combinations
from typing import TYPE_CHECKING, Any, TypeVar

import networkx as nx

from capability_catalog.model import (
    BorderPort,
    CapabilityNote,
    FunctionOffer,
    LabelRange,
    LabelSet,
    LabelType,
    SpId,
    TerminalId,
    Transit,
)
from domain_agents.base import DomainUsage, SegmentGrant, SegmentOrder
from domain_agents.emulated import PlacedEndpoint, PlacedPort, _at, _fmt_labels, _Parser, terminal_pop
from domain_agents.openstack_model import (
    BANDWIDTH,
    COMMITTED_TAG,
    FUNCTION_SLOTS,
    HOLD_PREFIX,
    RES_PREFIX,
    Credentials,
    NetworkSpec,
    PortSpec,
    VniInUse,
    domain_tag,
    dump_handle,
    reservation_tag,
    tags_of,
)
from slicing.errors import AlreadyExists, FedError, InvalidArgument, NotFound, ResourceExhausted
from slicing.model import SliceRequest, SliceState

if TYPE_CHECKING:  # openstacksdk loads only when an agent connects, not when a config is read
    from domain_agents.openstack_cloud import Cloud

log = logging.getLogger(__name__)

HANDLE_VERSION = 1
DEFAULT_NOTE_TTL_S = 3600.0
DEFAULT_POLL_S = 15.0
_CONSUMERS = uuid.UUID("6f1c1f8e-51f4-4c1e-9b0e-3d7d1c2f0a11")  # namespace of fedbroker consumer uuids
_VNI_ATTEMPTS = 4
#: How long after its hold deadline an uncommitted reservation nobody holds is swept away.
SWEEP_GRACE_S = 60.0
T = TypeVar("T")


def consumer_id(domain: str, key: str) -> str:
    """The Placement consumer (and reservation tag) of one order: stable, so a retry finds it."""
    return str(uuid.uuid5(_CONSUMERS, f"{domain}/{key}"))


# --- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Pop:
    """A PoP: a Placement resource provider, optionally with the inventory the agent keeps on it."""

    name: str
    resource_provider: str
    inventory: Mapping[str, int] | None = None


@dataclass(frozen=True)
class PopLatency:
    """An internal link between two PoPs, for routing (its bandwidth is the PoPs' own)."""

    a: str
    b: str
    latency_ms: float


@dataclass(frozen=True)
class FunctionSpec:
    """A network function type a PoP hosts, and what one instance costs in Placement."""

    pop: str
    type: str
    vcpu: int = 1
    memory_mb: int = 512


@dataclass(frozen=True)
class OpenStackDomainConfig:
    """One OpenStack-backed domain as declared in a broker config (validated by ``from_dict``)."""

    id: SpId
    credentials: Credentials
    pops: tuple[Pop, ...]
    links: tuple[PopLatency, ...] = ()
    endpoints: tuple[PlacedEndpoint, ...] = ()
    ports: tuple[PlacedPort, ...] = ()
    functions: tuple[FunctionSpec, ...] = ()
    note_ttl_s: float = DEFAULT_NOTE_TTL_S
    poll_s: float = DEFAULT_POLL_S

    @classmethod
    def from_dict(cls, d: Mapping[str, object], path: str) -> OpenStackDomainConfig:
        """Validate a parsed config mapping; errors are ``InvalidArgument`` naming the field path."""
        return _OpenStackParser(path).openstack_domain(d)

    def pop_of(self, terminal: str) -> str | None:
        """The PoP a terminal sits at, or None when the domain has no such terminal."""
        return terminal_pop(self.endpoints, self.ports, terminal)


_AUTH_KEYS = (
    "auth_url",
    "username",
    "password",
    "project_name",
    "project_id",
    "user_domain_name",
    "project_domain_name",
    "region_name",
    "application_credential_id",
    "application_credential_secret",
    "auth_type",
)


class _OpenStackParser(_Parser):
    """The emulated parser's endpoint/port/label checks, plus PoPs, credentials and function costs."""

    _OS_DOMAIN = (
        "id",
        "type",
        "note_ttl_s",
        "poll_s",
        "cloud",
        "clouds_file",
        "auth",
        "pops",
        "links",
        "endpoints",
        "ports",
        "functions",
    )
    _OS_POP = ("name", "resource_provider", "inventory")
    _OS_LINK = ("a", "b", "latency_ms")
    _OS_FUNCTION = ("pop", "type", "vcpu", "memory_mb")

    def openstack_domain(self, d: object) -> OpenStackDomainConfig:
        at = self.path
        m = self._mapping(d, at, self._OS_DOMAIN)
        sp_id = self._str(m, "id", at)
        if m.get("type") != "openstack":
            raise InvalidArgument(_at(at, "type"), f"must be 'openstack', got {m.get('type')!r}")
        ttl = self._positive(m, "note_ttl_s", DEFAULT_NOTE_TTL_S, at)
        poll = self._positive(m, "poll_s", DEFAULT_POLL_S, at)
        creds = self._credentials(m, at)
        pops = tuple(self._os_pop(x, _at(_at(at, "pops"), i), sp_id) for i, x in self._items(m, "pops", at))
        if not pops:
            raise InvalidArgument(_at(at, "pops"), "required, a non-empty list of PoPs")
        names = tuple(p.name for p in pops)
        if len(set(names)) != len(names):
            raise InvalidArgument(_at(at, "pops"), "a PoP name is listed twice")
        links = tuple(self._os_link(x, _at(_at(at, "links"), i), names) for i, x in self._items(m, "links", at))
        endpoints = tuple(
            self._endpoint(x, _at(_at(at, "endpoints"), i), names) for i, x in self._items(m, "endpoints", at)
        )
        ports = tuple(self._port(x, _at(_at(at, "ports"), i), names) for i, x in self._items(m, "ports", at))
        seen: dict[str, str] = {}
        for i, e in enumerate(endpoints):
            self._unique(seen, e.endpoint.id, _at(_at(_at(at, "endpoints"), i), "id"))
        for i, p in enumerate(ports):
            self._unique(seen, p.port.id, _at(_at(_at(at, "ports"), i), "id"))
            if p.port.label_type is not LabelType.VXLAN_VNI:
                raise InvalidArgument(_at(_at(_at(at, "ports"), i), "label_type"), "an OpenStack port uses vxlan-vni")
        functions = tuple(
            self._os_function(x, _at(_at(at, "functions"), i), names) for i, x in self._items(m, "functions", at)
        )
        return OpenStackDomainConfig(
            id=SpId(sp_id),
            credentials=creds,
            pops=pops,
            links=links,
            endpoints=endpoints,
            ports=ports,
            functions=functions,
            note_ttl_s=ttl,
            poll_s=poll,
        )

    @staticmethod
    def _positive(m: Mapping[str, object], key: str, default: float, at: str) -> float:
        value = m.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise InvalidArgument(_at(at, key), f"must be a positive number, got {value!r}")
        return float(value)

    def _credentials(self, m: Mapping[str, object], at: str) -> Credentials:
        cloud, auth = m.get("cloud"), m.get("auth")
        if (cloud is None) == (auth is None):
            raise InvalidArgument(
                _at(at, "auth"), "give either 'cloud' (a clouds.yaml entry) or 'auth' (Keystone settings)"
            )
        if cloud is not None:
            name = self._str(m, "cloud", at)
            files = m.get("clouds_file", "")
            if not isinstance(files, str):
                raise InvalidArgument(_at(at, "clouds_file"), "must be a path")
            return Credentials(cloud=name, clouds_file=files, path=at)
        a = self._mapping(auth, _at(at, "auth"), _AUTH_KEYS)
        if "auth_url" not in a:
            raise InvalidArgument(_at(_at(at, "auth"), "auth_url"), "required, Keystone's URL")
        has_password = "username" in a and "password" in a
        has_app = "application_credential_id" in a and "application_credential_secret" in a
        if not (has_password or has_app):
            raise InvalidArgument(
                _at(at, "auth"),
                "needs username and password, or application_credential_id and application_credential_secret",
            )
        values = {str(k): str(v) for k, v in a.items()}
        if has_app and "auth_type" not in values:
            values["auth_type"] = "v3applicationcredential"
        return Credentials(auth=values, path=at)

    def _os_pop(self, x: object, at: str, sp_id: str) -> Pop:
        m = self._mapping(x, at, self._OS_POP)
        name = self._str(m, "name", at)
        rp = self._str(m, "resource_provider", at, default=f"{sp_id}-{name}") or f"{sp_id}-{name}"
        raw = m.get("inventory")
        if raw is None:
            return Pop(name, rp)
        inv = self._mapping(raw, _at(at, "inventory"), tuple(str(k) for k in raw) if isinstance(raw, Mapping) else ())
        out: dict[str, int] = {}
        for cls in inv:
            if not str(cls).replace("_", "").isalnum() or str(cls) != str(cls).upper():
                raise InvalidArgument(_at(_at(at, "inventory"), str(cls)), "a resource class is UPPER_CASE")
            out[str(cls)] = self._int(inv, str(cls), _at(at, "inventory"))
        return Pop(name, rp, out)

    def _os_link(self, x: object, at: str, pops: tuple[str, ...]) -> PopLatency:
        m = self._mapping(x, at, self._OS_LINK)
        a, b = self._pop(m, "a", at, pops), self._pop(m, "b", at, pops)
        if a == b:
            raise InvalidArgument(_at(at, "b"), f"a link must join two different pops (both are '{a}')")
        latency = m.get("latency_ms")
        if isinstance(latency, bool) or not isinstance(latency, int | float) or latency < 0:
            raise InvalidArgument(_at(at, "latency_ms"), f"must be a non-negative number (got {latency!r})")
        return PopLatency(a, b, float(latency))

    def _os_function(self, x: object, at: str, pops: tuple[str, ...]) -> FunctionSpec:
        m = self._mapping(x, at, self._OS_FUNCTION)
        return FunctionSpec(
            pop=self._pop(m, "pop", at, pops),
            type=self._str(m, "type", at),
            vcpu=self._int(m, "vcpu", at) if "vcpu" in m else 1,
            memory_mb=self._int(m, "memory_mb", at) if "memory_mb" in m else 512,
        )


# --- segments --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Made:
    """What one segment holds in OpenStack; its JSON is the handle."""

    domain: str
    key: str
    consumer: str
    network_id: str
    bandwidth_mbps: int
    pops: tuple[str, ...]
    slots: tuple[tuple[str, str], ...]
    labels: tuple[tuple[TerminalId, int], ...]
    addresses: tuple[tuple[TerminalId, str], ...]
    resources: Mapping[str, Mapping[str, int]] = field(default_factory=dict)  # pop -> class -> amount

    def to_handle(self) -> str:
        return dump_handle(
            {
                "v": HANDLE_VERSION,
                "kind": "openstack",
                "domain": self.domain,
                "key": self.key,
                "consumer": self.consumer,
                "network": self.network_id,
                "bandwidth_mbps": self.bandwidth_mbps,
                "pops": list(self.pops),
                "slots": [{"pop": p, "type": t} for p, t in self.slots],
                "labels": dict(self.labels),
                "addresses": dict(self.addresses),
                "resources": {pop: dict(res) for pop, res in self.resources.items()},
            }
        )

    @classmethod
    def from_handle(cls, handle: str) -> _Made:
        """Parse a handle; ``InvalidArgument("handle", ...)`` when it is not an OpenStack-domain handle."""
        try:
            raw = json.loads(handle)
            if not isinstance(raw, dict) or raw.get("v") != HANDLE_VERSION or raw.get("kind") != "openstack":
                raise TypeError("not a version-1 OpenStack-domain handle")
            return cls(
                domain=str(raw["domain"]),
                key=str(raw["key"]),
                consumer=str(uuid.UUID(str(raw["consumer"]))),
                network_id=str(raw["network"]),
                bandwidth_mbps=int(raw["bandwidth_mbps"]),
                pops=tuple(str(p) for p in raw["pops"]),
                slots=tuple((str(s["pop"]), str(s["type"])) for s in raw["slots"]),
                labels=tuple((TerminalId(str(p)), int(v)) for p, v in raw["labels"].items()),
                addresses=tuple((TerminalId(str(e)), str(a)) for e, a in raw["addresses"].items()),
                resources={str(p): {str(c): int(n) for c, n in r.items()} for p, r in raw["resources"].items()},
            )
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise InvalidArgument("handle", f"not an OpenStack-domain handle ({exc})") from None


@dataclass
class _Segment:
    request: SliceRequest | None  # None when restored from a handle alone
    grant: SegmentGrant
    made: _Made
    state: SliceState = SliceState.HELD


@dataclass(frozen=True)
class _Plan:
    pops: tuple[str, ...]
    slots: tuple[tuple[str, str], ...]
    labels: tuple[tuple[TerminalId, int], ...]
    resources: Mapping[str, Mapping[str, int]]  # pop -> resource class -> amount


@dataclass
class _View:
    """What OpenStack last said: free capacity per PoP and the VNIs in use."""

    free: dict[str, dict[str, int]] = field(default_factory=dict)
    used_vnis: set[int] = field(default_factory=set)


# --- the agent -------------------------------------------------------------------------------


class OpenStackDomainAgent:
    """A ``DomainAgent`` whose segments are Neutron networks and Placement allocations."""

    def __init__(
        self,
        config: OpenStackDomainConfig,
        clock: Callable[[], float] = time.time,
        *,
        cloud_factory: Callable[[Credentials], Cloud] | None = None,
    ) -> None:
        self.config = config
        self._clock = clock
        self._cloud_factory = cloud_factory
        self._cloud: Cloud | None = None
        self._providers: dict[str, str] = {}  # pop -> provider uuid
        self._connect_lock = asyncio.Lock()
        self._graph = nx.Graph()
        self._graph.add_nodes_from(p.name for p in config.pops)
        for link in config.links:
            self._graph.add_edge(link.a, link.b, latency_ms=link.latency_ms)
        self._capacity: dict[str, int] = {e.endpoint.id: e.endpoint.capacity_mbps for e in config.endpoints}
        self._capacity.update({p.port.id: p.port.capacity_mbps for p in config.ports})
        self._ports: dict[str, BorderPort] = {p.port.id: p.port for p in config.ports}
        self._functions: dict[tuple[str, str], FunctionSpec] = {(f.pop, f.type): f for f in config.functions}
        self._segments: dict[str, _Segment] = {}  # by order key
        self._by_handle: dict[str, str] = {}
        self._pending_vnis: set[int] = set()
        self._inflight: dict[str, asyncio.Future[None]] = {}
        self._view = _View()
        self._note: CapabilityNote | None = None
        self._changed = asyncio.Event()

    @property
    def domain_id(self) -> SpId:
        """The domain id, which is the sp_id of its notes."""
        return self.config.id

    # --- OpenStack access ---------------------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.to_thread(fn, *args)
        except FedError as exc:
            raise exc.in_domain(self.domain_id) from None

    async def connect(self) -> None:
        """Log in to Keystone and find (or set up) every PoP's resource provider; idempotent.

        Raises ``Unauthenticated`` / ``InvalidArgument`` naming the credentials setting when
        Keystone refuses, and ``NotFound`` naming the PoP when its provider does not exist.
        """
        async with self._connect_lock:
            if self._cloud is not None:
                return
            factory = self._cloud_factory
            if factory is None:
                from domain_agents.openstack_cloud import Cloud

                factory = Cloud
            cloud = await self._call(factory, self.config.credentials)
            try:
                for i, pop in enumerate(self.config.pops):
                    if pop.inventory is not None:
                        uuid_ = await self._call(cloud.ensure_provider, pop.resource_provider, pop.inventory)
                    else:
                        found = await self._call(cloud.provider, pop.resource_provider)
                        if found is None:
                            where = f"{self.config.credentials.path}.pops[{i}].resource_provider"
                            raise NotFound(
                                f"{where}: Placement has no resource provider '{pop.resource_provider}'",
                                domain=self.domain_id,
                            )
                        uuid_ = found
                    self._providers[pop.name] = uuid_
            except BaseException:
                await asyncio.to_thread(cloud.close)
                raise
            self._cloud = cloud
            await self._refresh()

    async def _ready(self) -> Cloud:
        if self._cloud is None:
            await self.connect()
        assert self._cloud is not None
        return self._cloud

    async def _refresh(self) -> bool:
        """Re-read capacity and VNIs; True when they differ from the last reading."""
        cloud = await self._ready()
        free = {}
        for pop in self.config.pops:
            free[pop.name] = await self._call(cloud.free, self._providers[pop.name], pop.resource_provider)
        used = await self._call(cloud.used_vnis)
        view = _View(free, used)
        changed = view != self._view
        self._view = view
        return changed

    # --- notes --------------------------------------------------------------------------------

    @property
    def providers(self) -> Mapping[str, str]:
        """Resource provider uuid per PoP (after ``connect``)."""
        return dict(self._providers)

    async def notes(self) -> AsyncIterator[CapabilityNote]:
        """The current note at once, then a new one whenever OpenStack's capacity or VNIs change.

        OpenStack is polled every ``poll_s`` (others may take capacity or VNIs too), after each of
        this agent's own changes, and the note is re-issued at half its lifetime regardless.
        """
        await self._ready()
        if self._note is None:
            self._republish()
        note = self._note
        assert note is not None
        yield note
        while True:
            if self._note is note:
                half_life = max(0.05, (note.expires_at - note.issued_at) / 2)
                wait = min(self.config.poll_s, max(0.05, note.issued_at + half_life - self._clock()))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), timeout=wait)
                if self._note is note:
                    try:
                        await self.sweep()
                        changed = await self._refresh()
                    except FedError as exc:
                        log.warning("domain %s: cannot read OpenStack now: %s", self.domain_id, exc)
                        changed = False
                    if changed or self._clock() >= note.issued_at + half_life:
                        self._republish()
                    else:
                        continue
            note = self._note
            assert note is not None
            yield note

    def _republish(self) -> CapabilityNote:
        self._note = self._build_note(self._note)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        return self._note

    def _after_change(self, made: _Made, sign: int) -> None:
        """Account a segment made (+1) or released (-1) in the view and re-publish, without asking OpenStack.

        The next poll reconciles the view with what OpenStack says (others change it too).
        """
        for pop, res in made.resources.items():
            free = self._view.free.setdefault(pop, {})
            for cls, amount in res.items():
                free[cls] = free.get(cls, 0) - sign * amount
        vnis = {v for _, v in made.labels}
        if sign > 0:
            self._view.used_vnis |= vnis
        else:
            self._view.used_vnis -= vnis
        if self._note is not None:
            self._republish()

    def _build_note(self, previous: CapabilityNote | None) -> CapabilityNote:
        now = self._clock()
        version = int(now * 1000)
        if previous is not None:
            version = max(version, previous.version + 1)
        cfg = self.config
        return CapabilityNote(
            sp_id=cfg.id,
            version=version,
            issued_at=now,
            expires_at=now + cfg.note_ttl_s,
            endpoints=tuple(e.endpoint for e in cfg.endpoints),
            ports=tuple(replace(p.port, labels=self._free_labels(p.port)) for p in cfg.ports),
            transit=self._transit(),
            functions=tuple(FunctionOffer(f.type, f.pop, self._free_slots(f)) for f in cfg.functions),
        )

    def _free_labels(self, port: BorderPort) -> LabelSet:
        used = self._view.used_vnis
        if not any(v in port.labels for v in used):
            return port.labels
        free = [v for v in port.labels if v not in used]
        return LabelSet.of(LabelRange(v, v) for v in free)

    def _free_slots(self, f: FunctionSpec) -> int:
        free = self._view.free.get(f.pop, {})
        limits = [free.get(FUNCTION_SLOTS, 0)]
        if f.vcpu:
            limits.append(free.get("VCPU", 0) // f.vcpu)
        if f.memory_mb:
            limits.append(free.get("MEMORY_MB", 0) // f.memory_mb)
        return max(0, min(limits))

    def _transit(self) -> tuple[Transit, ...]:
        terminals = [(e.endpoint.id, e.pop) for e in self.config.endpoints]
        terminals += [(p.port.id, p.pop) for p in self.config.ports]
        routes = dict(nx.all_pairs_dijkstra(self._graph, weight="latency_ms"))
        out: list[Transit] = []
        for (ta, pa), (tb, pb) in combinations(terminals, 2):
            dist, path_to = routes[pa]
            if pb not in dist:
                continue
            bw = max(0, min(self._view.free.get(p, {}).get(BANDWIDTH, 0) for p in path_to[pb]))
            out.append(Transit(ta, tb, float(dist[pb]), min(self._capacity[ta], self._capacity[tb], bw)))
        return tuple(out)

    # --- segments -----------------------------------------------------------------------------

    async def reserve(self, order: SegmentOrder) -> SegmentGrant:
        """Make the segment's allocations, network, subnet and ports, all or nothing."""
        dom = self.domain_id
        if not order.hold_time_s > 0:
            raise InvalidArgument("hold_time_s", f"must be positive (got {order.hold_time_s})", domain=dom)
        held = self._segments.get(order.key)
        if held is not None:
            if held.request is not None and held.request != order.request:
                raise AlreadyExists(f"order key '{order.key}' is held for a different request", domain=dom)
            return held.grant
        running = self._inflight.get(order.key)
        if running is not None:  # the same order again while the first is still being made: one answer
            await asyncio.shield(running)
            return await self.reserve(order)
        done = asyncio.get_running_loop().create_future()
        self._inflight[order.key] = done
        try:
            return await self._reserve(order)
        finally:
            del self._inflight[order.key]
            done.set_result(None)

    async def _reserve(self, order: SegmentOrder) -> SegmentGrant:
        dom = self.domain_id
        try:
            self._validate(order.request)
        except FedError as exc:
            raise exc.in_domain(dom) from None
        cloud = await self._ready()
        consumer = consumer_id(dom, order.key)
        exclude: set[int] = set()
        conflict: VniInUse | None = None
        for attempt in range(_VNI_ATTEMPTS):
            try:
                plan = self._plan(order.request, exclude)
            except FedError as exc:
                # After Neutron refused a VNI, its refusal says more than "no other VNI is left".
                raise (conflict if conflict is not None else exc).in_domain(dom) from None
            vnis = {v for _, v in plan.labels}
            self._pending_vnis |= vnis
            try:
                made = await self._make(cloud, order, consumer, plan)
            except VniInUse as exc:
                if attempt + 1 == _VNI_ATTEMPTS:
                    raise
                log.info("domain %s: %s; choosing another", dom, exc)
                exclude.add(exc.vni)
                self._view.used_vnis.add(exc.vni)
                conflict = exc
                continue
            finally:
                self._pending_vnis -= vnis
            break
        grant = SegmentGrant(handle=made.to_handle(), labels=dict(made.labels), addresses=dict(made.addresses))
        self._segments[order.key] = _Segment(order.request, grant, made)
        self._by_handle[grant.handle] = order.key
        self._after_change(made, +1)
        return grant

    async def _make(self, cloud: Cloud, order: SegmentOrder, consumer: str, plan: _Plan) -> _Made:
        req = order.request
        spec = NetworkSpec(
            name=f"fedbroker-{self.domain_id}-{order.key}"[:250],
            consumer=consumer,
            domain=self.domain_id,
            vnis=tuple(v for _, v in plan.labels),
            subnet=str(ipaddress.ip_network(req.subnet)),
            ports=tuple(PortSpec(t, t not in self._ports) for t in (req.src, req.dst)),
            hold_until=int(self._clock() + order.hold_time_s),
        )
        made = await self._call(cloud.make_network, spec)
        try:
            # Placement last: its refusal (capacity, generation) must undo the network just made.
            by_provider = {self._providers[pop]: res for pop, res in plan.resources.items()}
            await self._call(cloud.allocate, consumer, by_provider)
        except BaseException:
            with contextlib.suppress(FedError):
                await self._call(cloud.delete_network, made.network_id)
            raise
        return _Made(
            domain=self.domain_id,
            key=order.key,
            consumer=consumer,
            network_id=made.network_id,
            bandwidth_mbps=req.bandwidth_mbps,
            pops=plan.pops,
            slots=plan.slots,
            labels=plan.labels,
            addresses=tuple(made.addresses.items()),
            resources=plan.resources,
        )

    def _validate(self, req: SliceRequest) -> None:
        dom = self.domain_id
        for name, t in (("request.src", req.src), ("request.dst", req.dst)):
            if self.config.pop_of(t) is None:
                raise InvalidArgument(name, f"'{t}' is not an endpoint or port of domain {dom}")
        if req.src == req.dst:
            raise InvalidArgument("request.dst", f"must differ from request.src ('{req.src}')")
        bw = req.bandwidth_mbps
        if isinstance(bw, bool) or not isinstance(bw, int) or bw <= 0:
            raise InvalidArgument("request.bandwidth_mbps", f"must be a positive integer (got {bw!r})")
        try:
            ipaddress.ip_network(req.subnet)
        except ValueError as exc:
            raise InvalidArgument("request.subnet", str(exc)) from None
        for t in (req.src, req.dst):
            if bw > self._capacity[t]:
                raise ResourceExhausted(f"{t}: {self._capacity[t]} Mbit/s at most, {bw} Mbit/s asked")

    def _plan(self, req: SliceRequest, exclude: set[int]) -> _Plan:
        src_pop, dst_pop = self.config.pop_of(req.src), self.config.pop_of(req.dst)
        assert src_pop is not None and dst_pop is not None
        try:
            latency, path = nx.single_source_dijkstra(self._graph, src_pop, dst_pop, weight="latency_ms")
        except nx.NetworkXNoPath:
            raise ResourceExhausted(f"no path from {req.src} ({src_pop}) to {req.dst} ({dst_pop})") from None
        if req.latency_budget_ms > 0 and float(latency) > req.latency_budget_ms + 1e-9:
            raise ResourceExhausted(
                f"the path from {req.src} to {req.dst} takes {float(latency):g} ms,"
                f" over the budget of {req.latency_budget_ms:g} ms"
            )
        pops = tuple(str(p) for p in path)
        resources: dict[str, Counter[str]] = {p: Counter({BANDWIDTH: req.bandwidth_mbps}) for p in pops}
        slots = self._place_functions(req.chain, pops)
        for pop, kind in slots:
            spec = self._functions[(pop, kind)]
            res = resources.setdefault(pop, Counter())
            res.update({FUNCTION_SLOTS: 1, "VCPU": spec.vcpu, "MEMORY_MB": spec.memory_mb})
        return _Plan(
            pops=pops,
            slots=slots,
            labels=self._choose_labels(req, exclude),
            resources={pop: {k: v for k, v in c.items() if v > 0} for pop, c in resources.items()},
        )

    def _place_functions(self, chain: Sequence[str], path: Sequence[str]) -> tuple[tuple[str, str], ...]:
        taken: Counter[tuple[str, str]] = Counter()
        placed: list[tuple[str, str]] = []
        others = [p.name for p in self.config.pops if p.name not in path]
        for fn in chain:
            for pop in (*path, *others):
                spec = self._functions.get((pop, fn))
                if spec is not None and self._free_slots(spec) - taken[(pop, fn)] > 0:
                    taken[(pop, fn)] += 1
                    placed.append((pop, fn))
                    break
            else:
                raise ResourceExhausted(f"no free '{fn}' function slot in domain {self.domain_id}")
        return tuple(placed)

    def _choose_labels(self, req: SliceRequest, exclude: set[int]) -> tuple[tuple[TerminalId, int], ...]:
        used = self._view.used_vnis | self._pending_vnis | exclude
        used |= {v for s in self._segments.values() for _, v in s.made.labels}
        chosen: list[tuple[TerminalId, int]] = []
        for t in (req.src, req.dst):
            port = self._ports.get(t)
            if port is None:
                continue
            allowed, preferred = port.labels, None
            within = f"{port.id}'s VNIs {_fmt_labels(port.labels)}"
            constraint = req.constraint(t)
            if constraint is not None:
                allowed = allowed.intersect(constraint.labels)
                preferred = constraint.preferred
                within = (
                    f"{_fmt_labels(allowed)} (port {_fmt_labels(port.labels)} ∩ asked {_fmt_labels(constraint.labels)})"
                )
            label = allowed.first_free(used | {v for _, v in chosen}, prefer=preferred)
            if label is None:
                raise ResourceExhausted(f"no free VNI on port {t} within {within} (in use in Neutron or held)")
            chosen.append((t, label))
        return tuple(chosen)

    def _segment(self, handle: str) -> _Segment:
        key = self._by_handle.get(handle)
        if key is None:
            raise NotFound(f"no segment held under this handle in domain {self.domain_id}", domain=self.domain_id)
        return self._segments[key]

    async def commit(self, handle: str) -> None:
        """Tag the segment's network committed (``NotFound`` for a handle not held)."""
        seg = self._segment(handle)
        if seg.state is SliceState.HELD:
            await self._call((await self._ready()).add_tag, seg.made.network_id, COMMITTED_TAG)
            seg.state = SliceState.COMMITTED

    async def activate(self, handle: str) -> None:
        """Bring the segment's network up (``NotFound`` for a handle not held)."""
        seg = self._segment(handle)
        await self._call((await self._ready()).set_admin_state, seg.made.network_id, True)
        seg.state = SliceState.ACTIVE

    async def abort(self, handle: str) -> None:
        """Delete everything tagged with the reservation and its allocations; unknown handles are a no-op."""
        await self._release(handle)

    async def terminate(self, handle: str) -> None:
        """Delete everything tagged with the reservation and its allocations; idempotent."""
        await self._release(handle)

    async def _release(self, handle: str) -> None:
        try:
            made = _Made.from_handle(handle)
        except InvalidArgument:
            return  # not one of ours: nothing of it can exist
        if made.domain != self.domain_id:
            return
        cloud = await self._ready()
        await self._call(cloud.delete_reservation, made.consumer)
        await self._call(cloud.release, made.consumer)
        key = self._by_handle.pop(handle, None)
        if key is not None:
            held = self._segments.pop(key)
            self._after_change(held.made, -1)

    async def restore(self, handle: str, committed: bool) -> None:
        """Find a handle's network again by its tag after a restart and hold it in memory."""
        made = _Made.from_handle(handle)
        if made.domain != self.domain_id:
            raise InvalidArgument("handle", f"belongs to domain {made.domain}, not {self.domain_id}")
        state = SliceState.COMMITTED if committed else SliceState.HELD
        existing = self._segments.get(made.key)
        if existing is not None:
            if existing.grant.handle != handle:
                raise AlreadyExists(f"order key '{made.key}' is held under another handle", domain=self.domain_id)
            existing.state = state
            return
        cloud = await self._ready()
        nets = await self._call(cloud.networks, reservation_tag(made.consumer))
        if not nets:
            log.warning(
                "domain %s: the network of %s is gone from Neutron; nothing to restore", self.domain_id, made.key
            )
            return
        if committed and COMMITTED_TAG not in tags_of(nets[0]):
            await self._call(cloud.add_tag, made.network_id, COMMITTED_TAG)
        grant = SegmentGrant(handle=handle, labels=dict(made.labels), addresses=dict(made.addresses))
        self._segments[made.key] = _Segment(None, grant, made, state)
        self._by_handle[handle] = made.key

    async def sweep(self) -> list[str]:
        """Delete reservations of this domain that nobody holds: never committed, hold long past.

        A broker that crashed between making a segment and persisting its handle leaves such
        orphans; every network carries its hold deadline as a tag, so they are found and removed
        here (on each poll) once ``SWEEP_GRACE_S`` past it. Returns the consumers removed.
        """
        cloud = await self._ready()
        held = {s.made.consumer for s in self._segments.values()}
        now = self._clock()
        removed = []
        for net in await self._call(cloud.networks, domain_tag(self.domain_id)):
            tags = tags_of(net)
            consumer = next((t.removeprefix(RES_PREFIX) for t in tags if t.startswith(RES_PREFIX)), None)
            until = next((t.removeprefix(HOLD_PREFIX) for t in tags if t.startswith(HOLD_PREFIX)), None)
            if consumer is None or until is None or not until.isdigit() or COMMITTED_TAG in tags:
                continue
            if consumer in held or now < int(until) + SWEEP_GRACE_S:
                continue
            log.warning("domain %s: removing orphaned reservation %s (hold ended %s)", self.domain_id, consumer, until)
            await self._call(cloud.delete_reservation, consumer)
            await self._call(cloud.release, consumer)
            removed.append(consumer)
        return removed

    def state_of(self, handle: str) -> SliceState:
        """The state the core last moved a held segment to (``NotFound`` when not held)."""
        return self._segment(handle).state

    def describe(self, handle: str) -> tuple[Mapping[str, object], ...]:
        """A local domain has no segments of its own to report."""
        return ()

    def usage(self) -> DomainUsage:
        """Sum of held segments' bandwidth, and counts of their VNIs, function slots and addresses."""
        made = [s.made for s in self._segments.values()]
        return DomainUsage(
            domain=self.domain_id,
            bandwidth_mbps=sum(m.bandwidth_mbps for m in made),
            labels=sum(len(m.labels) for m in made),
            function_slots=sum(len(m.slots) for m in made),
            addresses=sum(len(m.addresses) for m in made),
        )

    async def close(self) -> None:
        """Close the OpenStack connection; holdings stay."""
        cloud, self._cloud = self._cloud, None
        if cloud is not None:
            await asyncio.to_thread(cloud.close)

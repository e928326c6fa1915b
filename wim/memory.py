"""The ``memory`` WIM driver: label and bandwidth accounting of connectivity services, no data plane.

It is the fake behind the ``WimDriver`` port, with knobs for tests (``latency_s``, ``fail_at``).
The handle is the service as created, as JSON, so a fresh driver can ``restore`` it::

    {"bandwidth_mbps": 100, "key": "s1:L1.to-L2:L2.to-L1",
     "points": [{"label": 1000, "label_type": "vxlan-vni", "port": "L1.to-L2"}, ...], "v": 1}

A service is known by its key: a handle stays valid for ``status``, ``edit`` and ``delete`` after
an edit, but ``restore`` re-applies the points and bandwidth the handle was created with.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import AsyncIterator, Mapping

from capability_catalog.model import LABEL_LIMITS, LabelType
from domain_agents.ledger import Ledger
from slicing.errors import AlreadyExists, InvalidArgument, NotFound, ResourceExhausted, Unavailable
from slicing.model import SliceState
from wim.base import ConnectionPoint, ConnectivitySpec, ServiceStatus, WimUsage

HANDLE_VERSION = 1
#: Steps at which the ``fail_at`` knob can inject a failure.
FAIL_STEPS: frozenset[str] = frozenset({"create", "edit", "delete"})


def encode_handle(spec: ConnectivitySpec) -> str:
    """The handle of a service: its spec as canonical JSON."""
    return json.dumps(
        {
            "v": HANDLE_VERSION,
            "key": spec.key,
            "bandwidth_mbps": spec.bandwidth_mbps,
            "points": [{"port": p.port, "label_type": p.label_type.value, "label": p.label} for p in spec.points],
        },
        sort_keys=True,
        separators=(",", ":"),
    )


def decode_handle(handle: str) -> ConnectivitySpec:
    """The spec inside a handle; ``InvalidArgument("handle", ...)`` when it is not a memory-WIM handle."""
    try:
        d = json.loads(handle)
        if not isinstance(d, dict) or d.get("v") != HANDLE_VERSION:
            raise TypeError("not a version-1 memory-WIM handle")
        return ConnectivitySpec(
            key=str(d["key"]),
            points=tuple(
                ConnectionPoint(str(p["port"]), LabelType(p["label_type"]), _strict_int(p["label"]))
                for p in d["points"]
            ),
            bandwidth_mbps=_strict_int(d["bandwidth_mbps"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidArgument("handle", f"not a memory-WIM handle ({exc})") from None


def _strict_int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{value!r} is not an integer")
    return value


def _validate(spec: ConnectivitySpec) -> None:
    if not isinstance(spec.key, str) or not spec.key:
        raise InvalidArgument("key", "required, a non-empty string")
    bw = spec.bandwidth_mbps
    if isinstance(bw, bool) or not isinstance(bw, int) or bw <= 0:
        raise InvalidArgument("bandwidth_mbps", f"must be a positive integer (got {bw!r})")
    if len(spec.points) < 2:
        raise InvalidArgument("points", f"a service joins at least 2 connection points (got {len(spec.points)})")
    seen: dict[tuple[str, int], int] = {}
    for i, p in enumerate(spec.points):
        if not p.port:
            raise InvalidArgument(f"points[{i}].port", "required, a non-empty string")
        lo, hi = LABEL_LIMITS[p.label_type]
        if isinstance(p.label, bool) or not isinstance(p.label, int) or not lo <= p.label <= hi:
            raise InvalidArgument(f"points[{i}].label", f"{p.label!r} is outside {p.label_type.value} labels {lo}-{hi}")
        if (p.port, p.label) in seen:
            raise InvalidArgument(f"points[{i}]", f"repeats points[{seen[(p.port, p.label)]}] ({p.port} {p.label})")
        seen[(p.port, p.label)] = i


class MemoryWimDriver:
    """A ``WimDriver`` that only accounts: one service per (port, label), bandwidth per port within capacity."""

    def __init__(
        self,
        capacity_mbps: Mapping[str, int] | None = None,
        *,
        latency_s: float = 0.0,
        fail_at: str | None = None,
        ledger: Ledger | None = None,
    ) -> None:
        if fail_at is not None and fail_at not in FAIL_STEPS:
            raise ValueError(f"fail_at must be one of {sorted(FAIL_STEPS)} or None, got {fail_at!r}")
        if latency_s < 0:
            raise ValueError(f"latency_s must not be negative, got {latency_s}")
        self._capacity = dict(capacity_mbps or {})
        self.latency_s = latency_s
        self.fail_at = fail_at
        self._services: dict[str, ConnectivitySpec] = {}  # by key
        self._handles: dict[str, str] = {}  # key -> handle returned by create (or restored)
        # Replicas of one SP: the services live in the shared store (``BOOK``); ``_seen`` is their version here.
        self._ledger = ledger
        self._seen = 0

    #: The name of the WIM's books in a shared ledger (a domain id cannot start with a dot).
    BOOK = ".wim"

    @contextlib.asynccontextmanager
    async def _changing(self) -> AsyncIterator[None]:
        """Around one change: with a ledger, under its lock and on the services as stored."""
        if self._ledger is None:
            yield
            return
        async with self._ledger.guard(self.BOOK):
            self._sync()
            yield

    def _sync(self) -> None:
        """Mirror the shared services when another replica changed them."""
        if self._ledger is None or self._ledger.version(self.BOOK) == self._seen:
            return
        version, entries = self._ledger.entries(self.BOOK)
        self._services, self._handles = {}, {}
        for key, kept, _ in entries:
            both = json.loads(kept)
            self._services[key] = decode_handle(both["spec"])
            self._handles[key] = both["handle"]
        self._seen = version

    def _record(self, key: str) -> None:
        """Write one service (or its deletion, when it is no longer kept) to the shared ledger."""
        if self._ledger is None:
            return
        if key not in self._services:
            self._seen = self._ledger.drop(self.BOOK, key)
            return
        kept = json.dumps({"handle": self._handles[key], "spec": encode_handle(self._services[key])})
        self._seen = self._ledger.put(self.BOOK, key, kept, SliceState.ACTIVE)

    async def _step(self, step: str) -> None:
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)
        if self.fail_at == step:
            raise Unavailable(f"injected failure at {step}")

    def _key(self, handle: str) -> str | None:
        """The key of the service a handle names, or None when the driver keeps no such service."""
        try:
            key = decode_handle(handle).key
        except InvalidArgument:
            return None
        return key if key in self._services else None

    def _check_room(self, spec: ConnectivitySpec, ignore: str | None = None, capacity: bool = True) -> None:
        """Raise ``ResourceExhausted`` when a point's label is taken or a port's capacity would be exceeded."""
        owners: dict[tuple[str, int], str] = {}
        load: Counter[str] = Counter()
        for key, other in self._services.items():
            if key == ignore:
                continue
            for p in other.points:
                owners[(p.port, p.label)] = key
                load[p.port] += other.bandwidth_mbps
        asked: Counter[str] = Counter()
        for p in spec.points:
            owner = owners.get((p.port, p.label))
            if owner is not None:
                raise ResourceExhausted(f"label {p.label} on port {p.port} is already used by service '{owner}'")
            asked[p.port] += spec.bandwidth_mbps
        for port, need in asked.items():
            cap = self._capacity.get(port) if capacity else None
            if cap is not None and load[port] + need > cap:
                raise ResourceExhausted(
                    f"port {port}: {cap - load[port]} of {cap} Mbit/s free, {need} Mbit/s asked for '{spec.key}'"
                )

    async def create(self, spec: ConnectivitySpec) -> str:
        """Account a new service; the same key with the same spec returns the same handle."""
        await self._step("create")
        async with self._changing():
            held = self._services.get(spec.key)
            if held is not None:
                if held != spec:
                    raise AlreadyExists(f"service key '{spec.key}' is used by a different service")
                return self._handles[spec.key]
            _validate(spec)
            self._check_room(spec)
            handle = encode_handle(spec)
            self._services[spec.key] = spec
            self._handles[spec.key] = handle
            self._record(spec.key)
        return handle

    async def edit(self, handle: str, spec: ConnectivitySpec) -> None:
        """Replace a service's points and bandwidth, all or nothing; the key cannot change."""
        await self._step("edit")
        async with self._changing():
            key = self._key(handle)
            if key is None:
                raise NotFound("no connectivity service under this handle")
            if spec.key != key:
                raise InvalidArgument("key", f"an edit keeps the service's key '{key}' (got '{spec.key}')")
            _validate(spec)
            self._check_room(spec, ignore=key)
            self._services[key] = spec
            self._record(key)

    async def delete(self, handle: str) -> None:
        """Forget a service; an unknown or deleted handle is not an error."""
        await self._step("delete")
        async with self._changing():
            key = self._key(handle)
            if key is not None:
                del self._services[key]
                del self._handles[key]
                self._record(key)

    async def status(self, handle: str) -> ServiceStatus:
        """``ACTIVE`` for a service the driver keeps; ``NotFound`` otherwise."""
        await self._step("status")
        self._sync()
        if self._key(handle) is None:
            raise NotFound("no connectivity service under this handle")
        return ServiceStatus.ACTIVE

    async def list(self) -> list[str]:
        """Handles of every service, as returned by ``create`` (or given to ``restore``)."""
        await self._step("list")
        self._sync()
        return list(self._handles.values())

    async def restore(self, handle: str) -> None:
        """Re-account a persisted service after a restart; a label clash means corrupt state and is refused."""
        await self._step("restore")
        spec = decode_handle(handle)
        async with self._changing():
            if spec.key in self._services:
                return
            _validate(spec)
            # Capacity is not re-checked: the service exists, even if the configured capacity shrank.
            self._check_room(spec, capacity=False)
            self._services[spec.key] = spec
            self._handles[spec.key] = handle
            self._record(spec.key)

    def usage(self) -> WimUsage:
        """Services kept, connection points (labels) held, and the sum of the services' bandwidth."""
        self._sync()
        return WimUsage(
            services=len(self._services),
            labels=sum(len(s.points) for s in self._services.values()),
            bandwidth_mbps=sum(s.bandwidth_mbps for s in self._services.values()),
        )

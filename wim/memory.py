"""The ``memory`` WIM driver: label and bandwidth accounting of connectivity services, no data plane."""

from __future__ import annotations

import json

from capability_catalog.model import LABEL_LIMITS
from slicing.errors import InvalidArgument, NotFound, ResourceExhausted
from wim.base import ConnectionPoint, ConnectivitySpec, ServiceStatus, WimUsage


def _encode(spec: ConnectivitySpec) -> str:
    return json.dumps(
        {
            "key": spec.key,
            "bandwidth_mbps": spec.bandwidth_mbps,
            "points": [[p.port, p.label_type.value, p.label] for p in spec.points],
        },
        sort_keys=True,
    )


def _decode(handle: str) -> ConnectivitySpec:
    from capability_catalog.model import LabelType

    try:
        d = json.loads(handle)
        return ConnectivitySpec(
            key=d["key"],
            points=tuple(ConnectionPoint(p, LabelType(t), int(v)) for p, t, v in d["points"]),
            bandwidth_mbps=int(d["bandwidth_mbps"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidArgument("handle", f"not a memory-WIM handle: {exc}") from None


class MemoryWimDriver:
    """Accounts labels per connection point and bandwidth per port; the handle is the spec itself."""

    def __init__(self, capacity_mbps: dict[str, int] | None = None) -> None:
        self._capacity = dict(capacity_mbps or {})
        self._services: dict[str, ConnectivitySpec] = {}

    def _check(self, spec: ConnectivitySpec, ignore: str | None = None) -> None:
        if len(spec.points) < 2:
            raise InvalidArgument("points", "a connectivity service joins at least two connection points")
        if spec.bandwidth_mbps <= 0:
            raise InvalidArgument("bandwidth_mbps", "must be positive")
        taken: dict[tuple[str, int], str] = {}
        load: dict[str, int] = {}
        for key, other in self._services.items():
            if key == ignore:
                continue
            for p in other.points:
                taken[(p.port, p.label)] = key
                load[p.port] = load.get(p.port, 0) + other.bandwidth_mbps
        for i, p in enumerate(spec.points):
            lo, hi = LABEL_LIMITS[p.label_type]
            if not lo <= p.label <= hi:
                raise InvalidArgument(f"points[{i}].label", f"{p.label} is outside {p.label_type} labels {lo}-{hi}")
            if (p.port, p.label) in taken:
                raise ResourceExhausted(
                    f"label {p.label} on port {p.port} is already used by service {taken[(p.port, p.label)]}"
                )
            cap = self._capacity.get(p.port)
            if cap is not None and load.get(p.port, 0) + spec.bandwidth_mbps > cap:
                raise ResourceExhausted(f"port {p.port} has less than {spec.bandwidth_mbps} Mb/s left")

    async def create(self, spec: ConnectivitySpec) -> str:
        """Account a new service; the same key returns the same handle."""
        if spec.key in self._services:
            return _encode(self._services[spec.key])
        self._check(spec)
        self._services[spec.key] = spec
        return _encode(spec)

    async def edit(self, handle: str, spec: ConnectivitySpec) -> None:
        """Replace a service's points and bandwidth, all or nothing."""
        old = _decode(handle)
        if old.key not in self._services:
            raise NotFound(f"no connectivity service {old.key}")
        self._check(spec, ignore=old.key)
        del self._services[old.key]
        self._services[spec.key] = spec

    async def delete(self, handle: str) -> None:
        """Forget a service (idempotent)."""
        self._services.pop(_decode(handle).key, None)

    async def status(self, handle: str) -> ServiceStatus:
        """ACTIVE for a known service."""
        if _decode(handle).key not in self._services:
            raise NotFound(f"no connectivity service for handle {handle[:60]}")
        return ServiceStatus.ACTIVE

    async def list(self) -> list[str]:
        """Handles of every service."""
        return [_encode(s) for s in self._services.values()]

    async def restore(self, handle: str) -> None:
        """Re-account a persisted service after a restart."""
        spec = _decode(handle)
        self._services[spec.key] = spec

    def usage(self) -> WimUsage:
        """Counts of what is accounted."""
        return WimUsage(
            services=len(self._services),
            labels=sum(len(s.points) for s in self._services.values()),
            bandwidth_mbps=sum(s.bandwidth_mbps for s in self._services.values()),
        )

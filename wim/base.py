"""The ``WimDriver`` port, after OSM's WIM interface: create / edit / delete / status / list.

A connectivity service joins connection points, each with its encapsulation (a VXLAN VNI now; VLAN
and MPLS representable). On failure a driver leaves nothing created.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, runtime_checkable

from capability_catalog.model import LabelType


class ServiceStatus(StrEnum):
    """OSM's connectivity-service statuses."""

    ACTIVE = "ACTIVE"
    INACTIVE = "INACTIVE"
    DOWN = "DOWN"
    ERROR = "ERROR"
    BUILD = "BUILD"


@dataclass(frozen=True)
class ConnectionPoint:
    """A port and the label the slice uses on it."""

    port: str
    label_type: LabelType
    label: int


@dataclass(frozen=True)
class ConnectivitySpec:
    """What to connect: a stable key (idempotency), the points, the bandwidth."""

    key: str
    points: tuple[ConnectionPoint, ...]
    bandwidth_mbps: int


@dataclass(frozen=True)
class WimUsage:
    """What the driver holds right now."""

    services: int
    labels: int
    bandwidth_mbps: int


@runtime_checkable
class WimDriver(Protocol):
    """Creates and removes connectivity services; stateless apart from what it realises."""

    async def create(self, spec: ConnectivitySpec) -> str:
        """Create the service and return its opaque handle; the same key returns the same handle."""
        ...

    async def edit(self, handle: str, spec: ConnectivitySpec) -> None:
        """Change a service's points or bandwidth (all or nothing)."""
        ...

    async def delete(self, handle: str) -> None:
        """Remove a service; deleting an unknown handle is not an error."""
        ...

    async def status(self, handle: str) -> ServiceStatus:
        """The service's current status (``ERROR`` for an unknown handle is not raised: NotFound is)."""
        ...

    async def list(self) -> list[str]:
        """Handles of every service the driver keeps."""
        ...

    async def restore(self, handle: str) -> None:
        """Re-apply a persisted handle after a restart."""
        ...

    def usage(self) -> WimUsage:
        """Counts of what the driver holds."""
        ...

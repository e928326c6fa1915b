"""What an OpenStack-backed leaf SP holds in OpenStack itself, read straight from Neutron and Placement.

The scenario step ``expect_openstack`` uses it to check that a slice really made (or really
removed) networks and allocations, independently of what the broker believes it holds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from domain_agents.openstack_config import OpenStackDomainConfig
from domain_agents.openstack_model import COMMITTED_TAG, tags_of


@dataclass(frozen=True)
class NetworkSeen:
    """One Neutron network an OpenStack domain made."""

    name: str
    vnis: tuple[int, ...]
    committed: bool
    up: bool


@dataclass(frozen=True)
class OpenStackHoldings:
    """A domain's networks, subnets and ports in Neutron (tagged or only named as its own) and the
    Placement consumers on its PoPs' providers."""

    domain: str
    networks: tuple[NetworkSeen, ...]
    consumers: frozenset[str]
    subnets: int = 0
    ports: int = 0

    def describe(self) -> str:
        """One line: the consumer count, networks with their VNIs and state, subnet and port counts."""
        nets = "; ".join(
            f"{n.name} VNI {','.join(map(str, n.vnis)) or '-'}"
            f"{' committed' if n.committed else ''}{' up' if n.up else ''}"
            for n in self.networks
        )
        listed = f": {nets}" if nets else ""
        counts = f"{len(self.consumers)} Placement consumers, {len(self.networks)} networks"
        return f"{self.domain}: {counts}{listed}; {self.subnets} subnets, {self.ports} ports"


def _vnis(net: Any) -> tuple[int, ...]:
    if net.provider_segmentation_id is not None:
        return (int(net.provider_segmentation_id),)
    return tuple(int(s["provider:segmentation_id"]) for s in net.segments or () if s.get("provider:segmentation_id"))


def holdings(domains: Sequence[Mapping[str, Any]]) -> list[OpenStackHoldings]:
    """Read every OpenStack domain of an SP's ``domains`` settings (blocking: call it off the loop)."""
    from domain_agents.openstack_cloud import Cloud

    out = []
    for i, raw in enumerate(domains):
        if raw.get("type") != "openstack":
            continue
        cfg = OpenStackDomainConfig.from_dict(raw, f"domains[{i}]")
        cloud = Cloud(cfg.credentials)
        try:
            found = cloud.domain_objects(cfg.id)
            nets = tuple(
                NetworkSeen(str(n.name), _vnis(n), COMMITTED_TAG in tags_of(n), bool(n.is_admin_state_up))
                for n in found.networks
            )
            consumers: set[str] = set()
            for pop in cfg.pops:
                uuid = cloud.provider(pop.resource_provider)
                if uuid is not None:
                    consumers |= cloud.consumers(uuid, pop.resource_provider)
        finally:
            cloud.close()
        out.append(OpenStackHoldings(cfg.id, nets, frozenset(consumers), len(found.subnets), len(found.ports)))
    return out


def needs_openstack(sp_settings: Sequence[Mapping[str, Any]]) -> bool:
    """True when any SP of a scenario has an OpenStack domain."""
    return any(
        isinstance(d, Mapping) and d.get("type") == "openstack"
        for settings in sp_settings
        for d in settings.get("domains") or ()
    )

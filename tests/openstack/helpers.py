"""What the OpenStack tests share: a test domain's config, and reading Placement and Neutron directly."""

from __future__ import annotations

import itertools
import time
from typing import Any

import openstack.connection

from capability_catalog.model import LabelRange, LabelSet, TerminalId
from domain_agents.base import SegmentOrder
from domain_agents.openstack_config import OpenStackDomainConfig
from domain_agents.openstack_model import BANDWIDTH, FUNCTION_SLOTS, consumer_of_name, domain_tag
from scenarios.openstack_services import CLOUD, CloudInfo
from slicing.model import PortConstraint, SliceRequest

DOMAINS = itertools.count(1)
PLACEMENT = {"service_type": "placement"}


class Clock:
    def __init__(self, now: float | None = None) -> None:
        self.now = now if now is not None else time.time()

    def __call__(self) -> float:
        return self.now


def domain_spec(info: CloudInfo, sp: str, vni_first: int, **extra: Any) -> dict[str, Any]:
    """Two PoPs (core with function capacity, edge with the border port), two endpoints, one port."""
    return {
        "id": sp,
        "type": "openstack",
        "cloud": CLOUD,
        "clouds_file": info.clouds_file,
        "note_ttl_s": 600,
        "poll_s": 0.2,
        "pops": [
            {
                "name": "core",
                "inventory": {"VCPU": 8, "MEMORY_MB": 8192, BANDWIDTH: 1000, FUNCTION_SLOTS: 2},
            },
            {"name": "edge", "inventory": {BANDWIDTH: 1000}},
        ],
        "links": [{"a": "core", "b": "edge", "latency_ms": 2}],
        "endpoints": [
            {"id": f"{sp}.ep", "pop": "core", "region": "here", "capacity_mbps": 10_000},
            {"id": f"{sp}.ep2", "pop": "edge", "capacity_mbps": 10_000},
        ],
        "ports": [
            {
                "id": f"{sp}.to-X",
                "pop": "edge",
                "peer_sp": "X",
                "peer_port": f"X.to-{sp}",
                "label_type": "vxlan-vni",
                "labels": [f"{vni_first}-{vni_first + 49}"],
                "capacity_mbps": 10_000,
            }
        ],
        "functions": [{"pop": "core", "type": "firewall", "vcpu": 2, "memory_mb": 1024}],
        **extra,
    }


def config_of(spec: dict[str, Any]) -> OpenStackDomainConfig:
    return OpenStackDomainConfig.from_dict(spec, "domains[0]")


# --- looking at OpenStack directly ---------------------------------------------------------------


def placement(admin: openstack.connection.Connection, path: str) -> Any:
    resp = admin.session.get(path, endpoint_filter=PLACEMENT, microversion="1.38")
    return resp.json()


def provider_uuid(admin: openstack.connection.Connection, name: str) -> str:
    found = placement(admin, f"/resource_providers?name={name}")["resource_providers"]
    assert found, f"no provider {name}"
    return str(found[0]["uuid"])


def usages(admin: openstack.connection.Connection, sp: str) -> dict[str, dict[str, int]]:
    """Used amounts per PoP provider of the domain, only classes with a use."""
    out = {}
    for pop in ("core", "edge"):
        uuid = provider_uuid(admin, f"{sp}-{pop}")
        out[pop] = {k: v for k, v in placement(admin, f"/resource_providers/{uuid}/usages")["usages"].items() if v}
    return out


def allocations(admin: openstack.connection.Connection, consumer: str) -> dict[str, Any]:
    return dict(placement(admin, f"/allocations/{consumer}")["allocations"])


def ours(sp: str, objs: Any) -> list[Any]:
    """The objects of domain ``sp``: tagged as its own, or named so (tagging cut off)."""
    return [o for o in objs if domain_tag(sp) in (o.tags or ()) or consumer_of_name(sp, o.name)]


def networks(admin: openstack.connection.Connection, sp: str) -> list[Any]:
    return ours(sp, admin.network.networks())


def subnets(admin: openstack.connection.Connection, sp: str) -> list[Any]:
    return ours(sp, admin.network.subnets())


def ports(admin: openstack.connection.Connection, sp: str) -> list[Any]:
    return ours(sp, admin.network.ports())


def assert_nothing_left(admin: openstack.connection.Connection, sp: str) -> None:
    assert networks(admin, sp) == []
    assert subnets(admin, sp) == []
    assert ports(admin, sp) == []
    assert usages(admin, sp) == {"core": {}, "edge": {}}


def purge(admin: openstack.connection.Connection, sp: str) -> None:
    """Remove whatever a test left of its domain (ports, networks, allocations, providers)."""
    for port in ports(admin, sp):
        admin.network.delete_port(port, ignore_missing=True)
    for net in networks(admin, sp):
        admin.network.delete_network(net, ignore_missing=True)
    providers = placement(admin, "/resource_providers")["resource_providers"]
    for rp in (p for p in providers if p["name"].startswith(f"{sp}-")):  # each PoP's ``<sp>-<pop>``
        allocs = placement(admin, f"/resource_providers/{rp['uuid']}/allocations")["allocations"]
        for consumer in allocs:
            admin.session.delete(f"/allocations/{consumer}", endpoint_filter=PLACEMENT, microversion="1.38")
        admin.session.delete(f"/resource_providers/{rp['uuid']}", endpoint_filter=PLACEMENT, microversion="1.38")


def order(sp: str, key: str = "k1", mbps: int = 10, **fields: Any) -> SegmentOrder:
    constraints = fields.pop("constraints", ())
    req = SliceRequest(
        src=TerminalId(fields.pop("src", f"{sp}.ep")),
        dst=TerminalId(fields.pop("dst", f"{sp}.to-X")),
        bandwidth_mbps=mbps,
        subnet=fields.pop("subnet", "10.77.0.0/24"),
        port_constraints=constraints,
        **fields,
    )
    return SegmentOrder(key=key, request=req, hold_time_s=30)


def only(sp: str, *vnis: int, preferred: int | None = None) -> tuple[PortConstraint, ...]:
    labels = LabelSet.of(LabelRange(v, v) for v in vnis)
    return (PortConstraint(TerminalId(f"{sp}.to-X"), labels, preferred),)

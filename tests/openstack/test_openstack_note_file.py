"""An OpenStack leaf serving its operator's note file against real Keystone, Placement and Neutron."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import openstack.connection
import pytest
import yaml

from broker.app import read_note_file
from broker.config import parse_config
from capability_catalog.model import LabelRange, LabelSet
from domain_agents.openstack import OpenStackDomainAgent
from domain_agents.openstack_config import OpenStackDomainConfig
from scenarios.openstack_services import CloudInfo
from slicing.errors import InvalidArgument
from tests.openstack.helpers import assert_nothing_left, domain_spec, order


def authored(sp: str, vni_first: int, **changes: Any) -> dict[str, Any]:
    """What the operator sells of the test domain (1000 Mb/s a PoP, two function slots at core)."""
    return {
        "sp_id": sp,
        "version": 7,
        "endpoints": [{"id": f"{sp}.ep", "location": "Zurich", "capacity_mbps": 800}],
        "border_ports": [
            {
                "id": f"{sp}.to-X",
                "peer_sp": "X",
                "peer_port": f"X.to-{sp}",
                "label_type": "vxlan-vni",
                "label_ranges": [f"{vni_first}-{vni_first + 9}"],
                "capacity_mbps": 800,
            }
        ],
        "transit": [{"a": f"{sp}.ep", "b": f"{sp}.to-X", "latency_ms": 5, "bandwidth_mbps": 600}],
        "hosting": [{"type": "firewall", "site": "core", "instances": 1, "throughput_mbps": 100}],
        "qos_classes": [{"name": "gold", "native": {"dscp": 46}, "delay_ms": 5}],
        "isolation": ["vxlan"],
        **changes,
    }


def read(tmp_path: Path, info: CloudInfo, sp: str, vni_block: int, note: dict[str, Any]) -> OpenStackDomainConfig:
    (tmp_path / "note.yaml").write_text(yaml.safe_dump(note))
    domain = {k: v for k, v in domain_spec(info, sp, vni_block).items() if k != "note_ttl_s"}
    config = parse_config({"sp_id": sp, "domains": [{**domain, "note_file": "note.yaml"}]}, tmp_path / "b.yaml")
    dom = read_note_file(config.domains[0], config, time.time())
    assert isinstance(dom, OpenStackDomainConfig)
    return dom


async def test_an_openstack_leaf_serves_its_note_file_with_placements_capacity_applied(
    loopback_cloud: CloudInfo, admin: openstack.connection.Connection, sp: str, vni_block: int, tmp_path: Path
) -> None:
    cap = time.time() + 300
    cfg = read(tmp_path, loopback_cloud, sp, vni_block, authored(sp, vni_block, expires_at=cap))
    agent = OpenStackDomainAgent(cfg)
    try:
        await agent.connect()
        agent.check_authored()
        stream = agent.notes()
        first = await anext(stream)
        assert first.version >= 7 and first.expires_at <= cap
        assert [q.name for q in first.qos_classes] == ["gold"] and [str(i) for i in first.isolation] == ["vxlan"]
        assert [(e.location, e.capacity_mbps) for e in first.endpoints] == [("Zurich", 800)]
        port = first.port(f"{sp}.to-X")
        assert port is not None and port.labels == LabelSet.of([LabelRange(vni_block, vni_block + 9)])
        assert [(t.latency_ms, t.bandwidth_mbps) for t in first.transit if not t.functions] == [(5.0, 600)]
        assert [(f.type, f.slots) for f in first.functions] == [("firewall", 1)]

        # A slice takes 300 Mb/s in Placement and a VNI in Neutron: off the share sold, off the labels.
        grant = await agent.reserve(order(sp, mbps=300))
        second = await asyncio.wait_for(anext(stream), timeout=10)
        assert [t.bandwidth_mbps for t in second.transit if not t.functions] == [300]
        port = second.port(f"{sp}.to-X")
        assert port is not None and len(port.labels) == 9 and second.expires_at <= cap
        await stream.aclose()  # type: ignore[attr-defined]
        await agent.terminate(grant.handle)
    finally:
        await agent.close()
    assert_nothing_left(admin, sp)


async def test_an_openstack_note_file_selling_more_than_placement_has_stops_the_start(
    loopback_cloud: CloudInfo, sp: str, vni_block: int, tmp_path: Path
) -> None:
    greedy = authored(sp, vni_block, hosting=[{"type": "firewall", "site": "core", "instances": 5}])
    agent = OpenStackDomainAgent(read(tmp_path, loopback_cloud, sp, vni_block, greedy))
    try:
        await agent.connect()
        with pytest.raises(InvalidArgument) as info:
            agent.check_authored()
    finally:
        await agent.close()
    assert info.value.field == "domains[0].note_file"
    assert "hosting[0].instances: 5 is more than the domain's 2 slots" in str(info.value)

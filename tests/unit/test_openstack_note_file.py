"""An OpenStack domain serves a note file as an emulated one does: its offer and validity, live capacity applied."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from broker.app import read_note_file
from broker.config import parse_config
from broker.descriptors import ConfigError
from capability_catalog.model import Isolation, LabelRange, LabelSet
from domain_agents.openstack import OpenStackDomainAgent
from domain_agents.openstack_config import OpenStackDomainConfig
from domain_agents.openstack_model import BANDWIDTH, FUNCTION_SLOTS
from domain_agents.openstack_offer import View
from slicing.errors import InvalidArgument

NOW = 1_700_000_000.0


def spec(**extra: Any) -> dict[str, Any]:
    return {
        "id": "L9",
        "type": "openstack",
        "cloud": "mycloud",
        "pops": [{"name": "core"}, {"name": "edge"}],
        "links": [{"a": "core", "b": "edge", "latency_ms": 3}],
        "endpoints": [{"id": "L9.ep", "pop": "core", "capacity_mbps": 1000}],
        "ports": [
            {
                "id": "L9.to-L8",
                "pop": "edge",
                "peer_sp": "L8",
                "peer_port": "L8.to-L9",
                "labels": ["5000-5099"],
                "capacity_mbps": 1000,
            }
        ],
        "functions": [{"pop": "core", "type": "firewall", "vcpu": 1}],
        **extra,
    }


def note(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "sp_id": "L9",
        "version": 7,
        "valid_for_s": 300,
        "endpoints": [{"id": "L9.ep", "location": "Zurich", "capacity_mbps": 800}],
        "border_ports": [
            {
                "id": "L9.to-L8",
                "peer_sp": "L8",
                "peer_port": "L8.to-L9",
                "label_type": "vxlan-vni",
                "label_ranges": ["5000-5009"],
                "capacity_mbps": 800,
            }
        ],
        "transit": [{"a": "L9.ep", "b": "L9.to-L8", "latency_ms": 5, "bandwidth_mbps": 600}],
        "hosting": [{"type": "firewall", "site": "core", "instances": 2, "throughput_mbps": 100}],
        "qos_classes": [{"name": "gold", "native": {"dscp": 46}, "delay_ms": 5}],
        "isolation": ["vxlan"],
        "price_per_mbps_hour": 0.5,
        **changes,
    }
    return {k: v for k, v in data.items() if v is not None}  # None: the field left out


def read(tmp_path: Path, authored: dict[str, Any], now: float = NOW, **domain: Any) -> OpenStackDomainConfig:
    """The OpenStack domain as the broker reads it at ``now``: its config, then its note file."""
    (tmp_path / "note.yaml").write_text(yaml.safe_dump(authored))
    config = parse_config(
        {"sp_id": "L9", "domains": [spec(note_file="note.yaml", **domain)]}, source=tmp_path / "broker.yaml"
    )
    dom = read_note_file(config.domains[0], config, now)
    assert isinstance(dom, OpenStackDomainConfig)
    return dom


def test_an_openstack_domain_takes_a_note_file_naming_its_setting() -> None:
    cfg = OpenStackDomainConfig.from_dict(spec(note_file="note.yaml"), "domains[0]")
    assert (cfg.note_file, cfg.note_field, cfg.authored) == ("note.yaml", "domains[0].note_file", None)
    with pytest.raises(InvalidArgument, match=r"^domains\[0\]\.note_file: must be the path of a note file"):
        OpenStackDomainConfig.from_dict(spec(note_file=5), "domains[0]")
    with pytest.raises(InvalidArgument, match=r"^domains\[0\]\.note_ttl_s: the note file states this"):
        OpenStackDomainConfig.from_dict(spec(note_file="note.yaml", note_ttl_s=60), "domains[0]")


def test_the_note_files_offer_and_validity_become_the_openstack_domains(tmp_path: Path) -> None:
    cfg = read(tmp_path, note())
    assert cfg.authored is not None and cfg.authored.version == 7
    assert cfg.note_ttl_s == 300 and cfg.note_expires_at is None
    assert [q.name for q in cfg.offer.qos_classes] == ["gold"] and cfg.offer.isolation == (Isolation.VXLAN,)
    assert cfg.offer.price_per_mbps_hour == 0.5
    assert read(tmp_path, note(valid_for_s=None, expires_at=NOW + 60)).note_expires_at == NOW + 60


def test_a_bad_or_expired_note_file_on_an_openstack_domain_is_refused_naming_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        read(tmp_path, note(transit=[{"a": "L9.ep", "b": "L9.to-L8", "latency_ms": "soon", "bandwidth_mbps": 1}]))
    assert info.value.field == "domains[0].note_file"
    assert "domains[0].note_file: " in str(info.value) and "transit[0].latency_ms: 'soon'" in str(info.value)
    with pytest.raises(ConfigError, match=r"domains\[0\]\.note_file: .*expires_at \d+ is in the past"):
        read(tmp_path, note(valid_for_s=None, expires_at=NOW - 1))


def agent_on(cfg: OpenStackDomainConfig, now: float = NOW) -> OpenStackDomainAgent:
    """The agent over ``cfg`` with what OpenStack would report: 1000 Mb/s at each PoP, 3 slots, VNI 5001 used."""
    agent = OpenStackDomainAgent(cfg, lambda: now)
    free = {"VCPU": 8, "MEMORY_MB": 8192, BANDWIDTH: 1000, FUNCTION_SLOTS: 3}
    agent._offer.view = View({"core": dict(free), "edge": {BANDWIDTH: 1000}}, {5001})
    return agent


def test_the_openstack_leaf_serves_the_authored_note_with_its_live_capacity_and_the_files_cap(tmp_path: Path) -> None:
    agent = agent_on(read(tmp_path, note(valid_for_s=None, expires_at=NOW + 100), now=NOW - 50))
    agent.check_authored()
    served = agent._build_note(None)
    assert served.version >= 7 and served.expires_at == NOW + 100  # capped: 150 s of validity from NOW - 50
    assert [q.name for q in served.qos_classes] == ["gold"] and served.price_per_mbps_hour == 0.5
    ((ep,),) = [served.endpoints]
    assert (ep.location, ep.capacity_mbps) == ("Zurich", 800)
    port = served.port("L9.to-L8")
    assert port is not None and port.labels == LabelSet.of([LabelRange(5000, 5000), LabelRange(5002, 5009)])
    plain = [t for t in served.transit if not t.functions]
    assert [(t.latency_ms, t.bandwidth_mbps) for t in plain] == [(5.0, 600)]
    assert [(f.type, f.slots, f.throughput_mbps) for f in served.functions] == [("firewall", 2, 100)]

    # Others take capacity in the cloud: what is left of it caps what is sold.
    agent._offer.view.free["edge"][BANDWIDTH] = 250
    agent._offer.view.free["core"][FUNCTION_SLOTS] = 1
    after = agent._build_note(served)
    assert [t.bandwidth_mbps for t in after.transit if not t.functions] == [250]
    assert [f.slots for f in after.functions] == [1]


def test_an_openstack_note_file_promising_what_the_cloud_cannot_keep_is_refused(tmp_path: Path) -> None:
    agent = agent_on(
        read(tmp_path, note(transit=[{"a": "L9.ep", "b": "L9.to-L8", "latency_ms": 1, "bandwidth_mbps": 5}]))
    )
    with pytest.raises(InvalidArgument) as info:
        agent.check_authored()
    assert info.value.field == "domains[0].note_file"
    assert "transit[0].latency_ms: 1 is less than the domain's path" in str(info.value)


def test_an_openstack_domain_without_a_note_file_publishes_as_before() -> None:
    agent = agent_on(OpenStackDomainConfig.from_dict(spec(), "domains[0]"))
    agent.check_authored()
    plain = agent._build_note(None)
    assert plain.expires_at == NOW + 3600 and plain.qos_classes == () and plain.isolation == ()
    assert [t.bandwidth_mbps for t in plain.transit if not t.functions] == [1000]

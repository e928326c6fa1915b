"""A leaf domain serving an authored note: the checks before it starts, and what it publishes (pure, no I/O)."""

from __future__ import annotations

from typing import Any

import pytest

from capability_catalog.model import CapabilityNote
from domain_agents.emulated import EmulatedDomainAgent
from domain_agents.emulated_config import EmulatedDomainConfig, with_authored
from schemas.note import parse_note
from slicing.errors import InvalidArgument
from tests.topology import leaf_domain


def _authored(**changes: Any) -> CapabilityNote:
    data: dict[str, Any] = {
        "sp_id": "L1",
        "valid_for_s": 120,
        "endpoints": [{"id": "L1.ep", "location": "Science Park", "capacity_mbps": 1000}],
        "border_ports": [
            {
                "id": "L1.to-L2",
                "peer_sp": "L2",
                "peer_port": "L2.to-L1",
                "label_type": "vxlan-vni",
                "label_ranges": ["1000-1099"],
                "capacity_mbps": 1000,
            }
        ],
        "transit": [{"a": "L1.ep", "b": "L1.to-L2", "latency_ms": 3, "bandwidth_mbps": 1000}],
        "hosting": [{"type": "nat", "site": "core", "instances": 1, "throughput_mbps": 100}],
        **changes,
    }
    note, problems = parse_note(data, now=0.0)
    assert note is not None, problems
    return note


def _config(**extra: Any) -> EmulatedDomainConfig:
    d = {**leaf_domain("L1", {"L2": "1000-1999"}, functions={"nat": 2}), **extra}
    return EmulatedDomainConfig.from_dict(d, "domains[0]")


def test_a_note_file_and_an_offer_in_the_config_are_refused_together() -> None:
    with pytest.raises(InvalidArgument) as info:
        _config(note_file="note.yaml", offer={"isolation": ["shared"]})
    assert str(info.value).startswith("domains[0].offer: the note file states this")
    with pytest.raises(InvalidArgument, match=r"^domains\[0\]\.note_file: must be the path of a note file"):
        _config(note_file=5)


def test_the_served_note_takes_validity_and_offer_from_the_file() -> None:
    cfg = with_authored(_config(note_file="note.yaml"), _authored(isolation=["vxlan"]))
    note = EmulatedDomainAgent(cfg, lambda: 1000.0).note
    assert note.expires_at - note.issued_at == 120
    assert [str(i) for i in note.isolation] == ["vxlan"]
    assert note.endpoints[0].location == "Science Park"
    assert [(f.type, f.slots, f.throughput_mbps) for f in note.functions] == [("nat", 1, 100)]


def test_promises_the_domain_cannot_keep_are_each_named_before_it_starts() -> None:
    note = _authored(
        border_ports=[
            {
                "id": "L1.to-L9",
                "peer_sp": "L9",
                "peer_port": "L9.to-L1",
                "label_type": "vxlan-vni",
                "label_ranges": ["1000-1099"],
                "capacity_mbps": 1000,
            }
        ],
        transit=[],
        hosting=[{"type": "dpi", "site": "core", "instances": 1}],
    )
    with pytest.raises(InvalidArgument) as info:
        EmulatedDomainAgent(with_authored(_config(note_file="n.yaml"), note), lambda: 0.0)
    said = str(info.value)
    assert said.startswith("domains[0].note_file: ")
    assert "border_ports[0].id: 'L1.to-L9' is not a border port of the domain (its ports: L1.to-L2)" in said
    assert "hosting[0]: the domain hosts no dpi at core (it hosts: nat at core)" in said


def test_labels_outside_the_domains_own_are_refused() -> None:
    wide = _authored(
        border_ports=[
            {
                "id": "L1.to-L2",
                "peer_sp": "L2",
                "peer_port": "L2.to-L1",
                "label_type": "vxlan-vni",
                "label_ranges": ["1900-2100"],
                "capacity_mbps": 1000,
            }
        ]
    )
    with pytest.raises(InvalidArgument, match=r"border_ports\[0\]\.label_ranges: 1900-2100 are not all among"):
        EmulatedDomainAgent(with_authored(_config(note_file="n.yaml"), wide), lambda: 0.0)

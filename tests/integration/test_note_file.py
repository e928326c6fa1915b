"""A leaf serves the note its operator wrote (``domains[].note_file``), with its live capacity applied."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from capability_catalog.canonical import note_from_canonical
from capability_catalog.model import CapabilityNote, LabelRange, LabelSet
from fedbroker.v1 import northsouth_pb2 as pb
from scenarios.processes import StartError
from tests.integration.federation import Federation, leaf_domain, op, reserve, slice_request

pytestmark = pytest.mark.integration

FEDBROKER = Path(sys.executable).with_name("fedbroker")


def authored(**changes: Any) -> dict[str, Any]:
    """L1's note in the AUTHORING.md format; its domain (``leaf_domain``) has a 2 ms core-edge link."""
    note: dict[str, Any] = {
        "sp_id": "L1",
        "version": 7,
        "valid_for_s": 600,
        "endpoints": [{"id": "L1.ep", "region": "nl-ams", "location": "Amsterdam Science Park", "capacity_mbps": 5000}],
        "border_ports": [
            {
                "id": "L1.to-L2",
                "peer_sp": "L2",
                "peer_port": "L2.to-L1",
                "label_type": "vxlan-vni",
                "label_ranges": ["1000-1499"],
                "local_label_ranges": ["1500-1599"],
                "capacity_mbps": 8000,
                "latency_ms": 1.5,
            }
        ],
        "transit": [{"a": "L1.ep", "b": "L1.to-L2", "latency_ms": 7.5, "bandwidth_mbps": 4000}],
        "hosting": [{"type": "firewall", "site": "core", "instances": 3, "throughput_mbps": 800}],
        "qos_classes": [
            {"name": "best-effort", "native": {"dscp": 0}},
            {"name": "gold", "native": {"dscp": 46}, "delay_ms": 5},
        ],
        "isolation": ["shared", "vxlan"],
    }
    note.update(changes)
    return note


def write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(FEDBROKER), "catalog", "validate", str(path)], capture_output=True, text=True, timeout=60, check=False
    )


def l1_domain(note_file: Path) -> dict[str, Any]:
    return {**leaf_domain("L1", {"L2": "1000-1999"}, functions={"firewall": 4}), "note_file": str(note_file)}


async def l1_note_at(fed: Federation, upper: str, newer_than: int = 0) -> pb.CapabilityNote:
    """L1's note as the upper SP holds it (verified), once it is newer than ``newer_than``."""
    for _ in range(300):
        cat = await fed.sps[upper].caps.GetCatalog(pb.GetCatalogRequest(), timeout=5)
        for note in cat.lower:
            if note.sp_id == "L1" and note.version > newer_than:
                return note
        await asyncio.sleep(0.05)
    raise AssertionError(f"{upper} holds no note of L1 newer than version {newer_than}")


async def published(fed: Federation, sp: str) -> CapabilityNote:
    """The note ``sp`` signs and sends up, decoded from exactly those bytes."""
    cat = await fed.sps[sp].caps.GetCatalog(pb.GetCatalogRequest(), timeout=5)
    return note_from_canonical(cat.own_signed.payload)


async def test_a_leaf_serves_its_validated_note_file_with_live_capacity_applied(
    fed: Federation, tmp_path: Path
) -> None:
    note_file = write(tmp_path / "note.yaml", authored())
    checked = validate(note_file)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    await fed.start("L1", domains=[l1_domain(note_file)])
    await fed.start("L2", domains=[leaf_domain("L2", {"L1": "1000-1999"})])
    top = await fed.start("M", lowers=["L1", "L2"])
    await fed.wait_terminals("M", ["L1.ep", "L2.ep"])

    # What the upper SP holds from L1 (verified) carries what only the note file states.
    seen = await l1_note_at(fed, "M")
    assert seen.version >= 7
    (ep,) = seen.endpoints
    assert (ep.location, ep.region, ep.capacity_mbps) == ("Amsterdam Science Park", "nl-ams", 5000)
    (port,) = seen.ports
    assert [(r.first, r.last) for r in port.labels] == [(1000, 1499)]
    assert [(r.first, r.last) for r in port.local_labels] == [(1500, 1599)]
    assert port.capacity_mbps == 8000
    plain = [t for t in seen.transit if {t.a, t.b} == {"L1.ep", "L1.to-L2"}]
    assert plain and all(t.latency_ms == pytest.approx(7.5) for t in plain)  # authored, not the 2 ms link
    assert max(t.bandwidth_mbps for t in plain) == 4000
    (fw,) = seen.functions
    assert (fw.type, fw.site, fw.slots, fw.throughput_mbps) == ("firewall", "core", 3, 800)
    # The leaf's abstract note keeps each class's guarantee (its native mapping stays inside the SP).
    assert {q.name: q.delay_ms for q in seen.qos_classes} == {"best-effort": 0.0, "gold": 5.0}
    validity = seen.expires_at.ToSeconds() - seen.issued_at.ToSeconds()
    assert 540 <= validity <= 600  # the file's valid_for_s, counted from when the domain issued its note
    # The signed bytes L1 sends up also keep the port's link latency (not in the decoded protobuf view).
    own = await published(fed, "L1")
    (own_port,) = own.ports
    assert own_port.latency_ms == pytest.approx(1.5)
    assert own_port.local_labels == LabelSet((LabelRange(1500, 1599),))

    # Live capacity: a slice through L1's firewall takes 300 Mb/s and one instance off what is sold.
    held = await reserve(top, "nf-1", slice_request("L1.ep", "L2.ep", 300, chain=["firewall"]))
    after = await l1_note_at(fed, "M", newer_than=seen.version)
    for _ in range(100):
        if after.functions and after.functions[0].slots == 2:
            break
        after = await l1_note_at(fed, "M", newer_than=after.version)
    assert after.functions[0].slots == 2 and after.functions[0].throughput_mbps == 800
    plain_after = [t for t in after.transit if {t.a, t.b} == {"L1.ep", "L1.to-L2"}]
    assert max(t.bandwidth_mbps for t in plain_after) == 3700
    assert all(t.latency_ms == pytest.approx(7.5) for t in plain_after)
    await op(top, "Abort", held.id)
    await fed.wait_idle()


async def test_a_leaf_refuses_to_start_on_a_bad_note_file_naming_the_field(fed: Federation, tmp_path: Path) -> None:
    broken = authored()
    broken["border_ports"][0]["label_ranges"] = ["5000-4000"]
    bad = write(tmp_path / "bad.yaml", broken)
    checked = validate(bad)
    assert checked.returncode == 1 and "border_ports[0].label_ranges[0]: 5000-4000 is empty" in checked.stdout

    with pytest.raises(StartError) as info:
        await fed.start("L1", domains=[l1_domain(bad)])
    said = str(info.value)
    assert "domains[0].note_file" in said and "border_ports[0].label_ranges[0]: 5000-4000 is empty" in said, said
    assert "Traceback" not in said


async def test_a_leaf_refuses_a_note_file_that_promises_what_its_domain_cannot_keep(
    fed: Federation, tmp_path: Path
) -> None:
    # Valid as a note, but faster than the domain's 2 ms path and more bandwidth than its 10 Gb/s.
    promise = write(
        tmp_path / "promise.yaml",
        authored(transit=[{"a": "L1.ep", "b": "L1.to-L2", "latency_ms": 1.0, "bandwidth_mbps": 20000}]),
    )
    assert validate(promise).returncode == 0

    with pytest.raises(StartError) as info:
        await fed.start("L1", domains=[l1_domain(promise)])
    said = str(info.value)
    assert "domains[0].note_file: transit[0].latency_ms: 1 is less than the domain's path" in said, said
    assert "transit[0].bandwidth_mbps: 20000 is more than the domain carries" in said, said


async def test_a_leaf_stops_offering_when_its_note_files_expires_at_has_passed(fed: Federation, tmp_path: Path) -> None:
    cap = time.time() + 12  # the brokers start well within it, on a busy machine too
    note = authored(expires_at=cap)
    del note["valid_for_s"]
    note_file = write(tmp_path / "note.yaml", note)
    leaf = await fed.start("L1", domains=[l1_domain(note_file)])
    await fed.start("M", lowers=["L1"])
    await fed.wait_terminals("M", ["L1.ep"])

    seen = await l1_note_at(fed, "M")
    assert seen.expires_at.ToMilliseconds() <= cap * 1000  # no note served lasts past the file's expires_at
    own = await published(fed, "M")
    assert own.expires_at <= cap

    await asyncio.sleep(max(0.0, cap - time.time()) + 0.5)
    cat = await fed.sps["M"].caps.GetCatalog(pb.GetCatalogRequest(), timeout=5)
    assert [n.sp_id for n in cat.lower] == []  # L1's last note expired at M: nothing of L1 is offered
    log = leaf.log_path.read_text(errors="replace")
    assert "note.yaml (domains[0].note_file) expired at" in log and "later expires_at" in log, log[-2000:]


async def test_a_leaf_refuses_to_start_on_a_note_file_that_has_expired(fed: Federation, tmp_path: Path) -> None:
    note = authored(expires_at=time.time() - 60)
    del note["valid_for_s"]
    stale = write(tmp_path / "stale.yaml", note)
    with pytest.raises(StartError) as info:
        await fed.start("L1", domains=[l1_domain(stale)])
    said = str(info.value)
    assert "domains[0].note_file: " in said and "expires_at" in said and "is in the past" in said, said

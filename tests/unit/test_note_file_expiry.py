"""A note file's ``expires_at`` is an absolute cap: no note served lasts past it, and after it nothing is served."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

import pytest
import yaml

from broker.app import read_note_file
from broker.config import parse_config
from broker.descriptors import ConfigError
from capability_catalog.model import CapabilityNote
from domain_agents.emulated import EmulatedDomainAgent
from domain_agents.emulated_config import EmulatedDomainConfig
from tests.topology import leaf_domain

NOW = 1_700_000_000.0


def note_file(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "sp_id": "L1",
        "endpoints": [{"id": "L1.ep", "capacity_mbps": 1000}],
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
        "isolation": ["vxlan"],
        **changes,
    }
    return data


def domain_read(tmp_path: Path, note: dict[str, Any], now: float = NOW) -> EmulatedDomainConfig:
    """L1's domain as the broker reads it at ``now``: its config, then its note file."""
    (tmp_path / "note.yaml").write_text(yaml.safe_dump(note))
    domain = {**leaf_domain("L1", {"L2": "1000-1999"}), "note_file": "note.yaml"}
    config = parse_config({"sp_id": "L1", "domains": [domain]}, source=tmp_path / "broker.yaml")
    dom = read_note_file(config.domains[0], config, now)
    assert isinstance(dom, EmulatedDomainConfig)
    return dom


def test_a_note_file_that_has_expired_is_refused_at_start_naming_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        domain_read(tmp_path, note_file(expires_at=NOW - 60))
    said = str(info.value)
    assert info.value.field == "domains[0].note_file"
    assert "domains[0].note_file: " in said and f"expires_at {NOW - 60:.0f} is in the past" in said, said
    assert "later expires_at" in said
    with pytest.raises(ConfigError, match=r"issued_at \+ valid_for_s \d+ is in the past"):
        domain_read(tmp_path, note_file(issued_at=NOW - 600, valid_for_s=60))


def test_only_a_file_that_fixes_its_expiry_caps_the_notes_served(tmp_path: Path) -> None:
    assert domain_read(tmp_path, note_file(expires_at=NOW + 600)).note_expires_at == NOW + 600
    assert domain_read(tmp_path, note_file(issued_at=NOW - 10, valid_for_s=70)).note_expires_at == NOW + 60
    # valid_for_s alone: each note lasts that long from its issue, for as long as the broker runs.
    rolling = domain_read(tmp_path, note_file(valid_for_s=70))
    assert rolling.note_expires_at is None and rolling.note_ttl_s == 70


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_no_note_served_lasts_past_the_files_expires_at(tmp_path: Path) -> None:
    clock = Clock(NOW)
    agent = EmulatedDomainAgent(domain_read(tmp_path, note_file(expires_at=NOW + 100)), clock)
    first = agent.note
    assert first.expires_at == NOW + 100
    clock.now = NOW + 90  # the validity the file gave at start (100 s) would run to NOW + 190
    later = agent.republish()
    assert later.issued_at == NOW + 90 and later.expires_at == NOW + 100


class Feed:
    """The notes an agent's feed yields, collected by a task of their own."""

    def __init__(self, agent: EmulatedDomainAgent) -> None:
        self.notes: list[CapabilityNote] = []
        self._task = asyncio.get_running_loop().create_task(self._run(agent))

    async def _run(self, agent: EmulatedDomainAgent) -> None:
        async for note in agent.notes():
            self.notes.append(note)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def test_the_leaf_stops_offering_once_the_file_has_expired_and_warns_what_to_do(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock(NOW)
    # 0.3 s before the cap (by the injected clock): the feed's next wake-up is at the cap.
    agent = EmulatedDomainAgent(domain_read(tmp_path, note_file(expires_at=NOW + 0.3)), clock)
    with caplog.at_level(logging.WARNING, logger="domain_agents.authored"):
        feed = Feed(agent)
        await asyncio.sleep(0.1)
        assert [n.expires_at for n in feed.notes] == [NOW + 0.3]
        clock.now = NOW + 0.31
        await asyncio.sleep(0.5)
        agent.republish()  # a change (a slice, an offer edit) after the cap publishes nothing either
        await asyncio.sleep(0.2)
        assert len(feed.notes) == 1, feed.notes  # nothing more: the last note expires where it is held
        assert not feed._task.done()  # the feed stays open, publishing nothing
        await feed.close()
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "domain_agents.authored"]
    assert "note.yaml (domains[0].note_file) expired at" in warning
    assert "Write a new note file with a later expires_at" in warning and "restart the broker" in warning


async def test_a_rolling_note_file_is_served_past_its_first_notes_validity(tmp_path: Path) -> None:
    clock = Clock(NOW)
    agent = EmulatedDomainAgent(domain_read(tmp_path, note_file(valid_for_s=0.2)), clock)
    feed = Feed(agent)
    await asyncio.sleep(0.05)
    clock.now = NOW + 1000
    await asyncio.sleep(0.3)  # re-issued at half its lifetime
    await feed.close()
    assert len(feed.notes) >= 2 and feed.notes[-1].expires_at == pytest.approx(NOW + 1000.2)

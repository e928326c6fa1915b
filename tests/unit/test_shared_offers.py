"""Operators' offer edits at an SP run as replicas (issue 16): kept in the PostgreSQL store they share.

Each "replica" is an emulated domain agent with an ``OfferDesk`` over its own ``PostgresStore``
connection to one database (``exclusive=False``, as replicas open it). An edit at one is applied by
every other within a bounded wait, survives a restart, and two edits at once end the same everywhere.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from broker.core.offers import OfferDesk
from broker.store.postgres import PostgresStore
from capability_catalog.authoring import OfferPolicy, policy_to_dict
from capability_catalog.model import CapabilityNote
from domain_agents.emulated import EmulatedDomainAgent
from schemas.note import parse_policy
from tests.unit.test_emulated_agent import Clock, config


@dataclass
class Replica:
    store: PostgresStore
    agent: EmulatedDomainAgent
    desk: OfferDesk


Start = Callable[..., Replica]


@pytest.fixture
def start(pg_dsn: str, tmp_path: Path) -> Iterator[Start]:
    """Starts one more replica of domain L1 on the test's database, restored as a broker start does."""
    stores: list[PostgresStore] = []
    clock = Clock()

    def make(folder: str = "r") -> Replica:
        store = PostgresStore(pg_dsn, exclusive=False)
        stores.append(store)
        agent = EmulatedDomainAgent(config(), clock)
        (tmp_path / folder).mkdir(exist_ok=True)
        desk = OfferDesk(
            {"L1": agent}, tmp_path / folder / "offers.json", read_policy=parse_policy, shared=store, clock=clock
        )
        desk.restore()
        return Replica(store, agent, desk)

    yield make
    for store in stores:
        store.close()


def sells_nothing(note: CapabilityNote) -> bool:
    return not note.endpoints and not note.ports and not note.functions


async def until_applied(*replicas: Replica, within_s: float = 5.0) -> None:
    """Let each replica's ``follow`` run until every one shows the same offer (bounded)."""
    tasks = [asyncio.create_task(r.desk.follow(every_s=0.05)) for r in replicas]
    try:
        for _ in range(int(within_s / 0.05)):
            if len({json.dumps(policy_to_dict(r.agent.offer), sort_keys=True) for r in replicas}) == 1:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"the replicas still differ: {[policy_to_dict(r.agent.offer) for r in replicas]}")
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_an_edit_at_one_replica_is_published_by_every_other_and_survives_a_restart(start: Start) -> None:
    a, b = start("a"), start("b")
    assert not sells_nothing(b.agent.note)
    before = b.agent.note.version
    a.desk.set("L1", OfferPolicy(withdrawn=True))
    assert a.agent.offer.withdrawn and sells_nothing(a.agent.note)
    assert not b.agent.offer.withdrawn  # not yet: b looks every FOLLOW_S
    await until_applied(a, b)
    assert b.agent.offer.withdrawn and sells_nothing(b.agent.note) and b.agent.note.version > before
    assert not (Path(a.desk._path)).exists()  # replicas keep edits in the store, not in a file of their own
    c = start("c")  # a replica (re)started later publishes the edit from its first note
    assert c.agent.offer.withdrawn and sells_nothing(c.agent.note)
    a.desk.set_withdrawn("L1", False)
    await until_applied(a, b, c)
    assert not sells_nothing(b.agent.note) and not sells_nothing(c.agent.note)


async def test_two_edits_at_once_at_two_replicas_end_as_one_offer_everywhere(start: Start) -> None:
    a, b = start("a"), start("b")
    base = a.agent.offer
    for round_ in range(20):
        cheap, dear = replace(base, price_per_mbps_hour=1.0 + round_), replace(base, price_per_mbps_hour=100.0 + round_)
        await asyncio.gather(asyncio.to_thread(a.desk.set, "L1", cheap), asyncio.to_thread(b.desk.set, "L1", dear))
        await until_applied(a, b)
        number, text = a.store.offer_edits()["L1"]
        assert number == 2 * (round_ + 1)  # every edit numbered, none lost
        kept = json.loads(text)["price_per_mbps_hour"]
        assert a.agent.offer.price_per_mbps_hour == b.agent.offer.price_per_mbps_hour == kept  # the later one


def test_a_replicas_own_offers_file_from_before_is_carried_into_the_store_once(start: Start, tmp_path: Path) -> None:
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "offers.json").write_text(json.dumps({"L1": policy_to_dict(OfferPolicy(withdrawn=True))}))
    old = start("old")
    assert old.agent.offer.withdrawn and old.store.offer_edits()["L1"][0] == 1
    fresh = start("fresh")  # no file: takes the carried edit from the store
    assert fresh.agent.offer.withdrawn
    start("old")  # started again from the same folder: the file is not carried a second time
    assert old.store.offer_edits()["L1"][0] == 1


def test_an_edit_in_the_store_that_does_not_parse_is_reported_and_the_offer_kept(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    a = start("a")
    a.store.save_offer_edit("L1", json.dumps({"withdrawn": "perhaps"}), 0.0)
    assert a.desk.catch_up() == [] and not a.agent.offer.withdrawn
    assert "offer edit 1 of L1 in the store not applied" in caplog.text and "withdrawn" in caplog.text

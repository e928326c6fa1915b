"""Locks on slices and request ids that every broker process sharing one PostgreSQL store sees (issue 16).

Two stores on one database here are two processes there: two PostgreSQL sessions. A key one holds
is refused to the other, seen as held elsewhere, and free again once given back or once the holder's
connection ends (what a ``kill -9`` does). ``KeyLock`` orders operations of two managers on one
key, and a restart leaves alone a reservation another process is running. SQLite (one process per
file) has no one to exclude.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from broker.core.lifecycle import SliceManager
from broker.core.manager_base import KeyLock
from broker.store.postgres import PostgresStore
from broker.store.sqlite import SqliteStore
from domain_agents.emulated import EmulatedDomainAgent
from slicing.model import SliceState
from tests.unit.test_lifecycle import Clock, configs, first_note
from tests.unit.test_store import record
from wim.memory import MemoryWimDriver

S = SliceState


@pytest.fixture
def two(pg_dsn: str) -> Iterator[tuple[PostgresStore, PostgresStore]]:
    """Two brokers' stores sharing one database (not exclusive: replicas)."""
    a, b = PostgresStore(pg_dsn, exclusive=False), PostgresStore(pg_dsn, exclusive=False)
    yield a, b
    for store in (a, b):
        if not store._db.closed:
            store.close()


def test_a_key_held_by_one_process_is_refused_to_another_until_given_back(
    two: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = two
    assert a.try_lock("T-1") and not b.try_lock("T-1")
    assert b.locked_elsewhere("T-1") and not a.locked_elsewhere("T-1")
    assert b.try_lock("T-2") and a.locked_elsewhere("T-2")  # another key is another lock
    a.unlock("T-1")
    assert not b.locked_elsewhere("T-1") and b.try_lock("T-1") and not a.try_lock("T-1")


def test_a_dead_holder_frees_its_keys_with_its_connection(two: tuple[PostgresStore, PostgresStore]) -> None:
    a, b = two
    assert a.try_lock("request:alice:r1") and a.try_lock("T-9")
    a._db.close()  # the process died: PostgreSQL ends its session
    got = False
    for _ in range(100):  # the server notices the closed socket at once; bounded anyway (2 s)
        got = b.try_lock("T-9")
        if got:
            break
        time.sleep(0.02)
    assert got and b.try_lock("request:alice:r1")


def test_one_broker_per_database_and_sqlite_have_no_one_to_exclude(pg_dsn: str, tmp_path: Path) -> None:
    for store in (PostgresStore(pg_dsn), SqliteStore(tmp_path / "s.db")):
        assert store.try_lock("k") and store.try_lock("k") and not store.locked_elsewhere("k")
        store.unlock("k")
        store.close()


async def test_key_locks_of_two_processes_never_overlap(two: tuple[PostgresStore, PostgresStore]) -> None:
    a, b = two
    inside: list[str] = []
    overlaps: list[str] = []

    async def worker(name: str, lock: KeyLock) -> None:
        for _ in range(15):
            async with lock:
                if inside:
                    overlaps.append(f"{name} entered while {inside} held it")
                inside.append(name)
                await asyncio.sleep(0.002)
                inside.remove(name)
            await asyncio.sleep(0)

    await asyncio.wait_for(asyncio.gather(worker("a", KeyLock("T-1", a)), worker("b", KeyLock("T-1", b))), timeout=30)
    assert not overlaps, overlaps[:3]
    assert not a.locked_elsewhere("T-1") and not b.locked_elsewhere("T-1")  # both given back


async def _manager(store: PostgresStore) -> SliceManager:
    clock = Clock()
    agents = {c.id: EmulatedDomainAgent(c, clock) for c in configs()}
    notes = {d: await first_note(a) for d, a in agents.items()}
    return SliceManager(
        sp_id="T",
        store=store,
        agents=agents,
        local_domains=[],
        wim=MemoryWimDriver(),
        notes=lambda: notes,  # type: ignore[arg-type,return-value]
        clock=clock,
    )


async def test_a_restart_leaves_a_reservation_another_process_runs_and_releases_one_no_one_runs(
    two: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = two
    running = replace(record("T-run", S.RESERVING), segments=(), links=())
    orphaned = replace(record("T-orphan", S.RESERVING), segments=(), links=(), request_id="r-2")
    a.save(running)
    a.save(orphaned)
    assert a.try_lock("T-run")  # process a is reserving T-run now
    restarted = await _manager(b)
    await restarted.recover()
    assert b.state_of("T-run") is S.RESERVING  # left to the process running it
    assert b.state_of("T-orphan") in (S.ABORTING, S.FAILED)  # no one ran it: released
    assert not b.locked_elsewhere("T-orphan")

"""An emulated domain run by several replicas: its books in the shared PostgreSQL store (issue 16).

Each "replica" here is an ``EmulatedDomainAgent`` over its own ``PostgresStore`` connection to one
database (``exclusive=False``, as replicas open it), with a ``StoreLedger``: what one sells the
others see, nothing is sold twice, and any of them can move or release what another holds.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from broker.core.ledger import StoreLedger
from broker.store.postgres import PostgresStore
from capability_catalog.model import CapabilityNote, TerminalId
from domain_agents.base import SegmentOrder
from domain_agents.emulated import EmulatedDomainAgent
from slicing.errors import NotFound, ResourceExhausted
from slicing.model import SliceState
from tests.unit.test_emulated_agent import Clock, config, order

S = SliceState
Replica = Callable[[], EmulatedDomainAgent]


@pytest.fixture
def replica(pg_dsn: str) -> Iterator[Replica]:
    """Makes one more replica of domain L1 on the test's database (each its own connection)."""
    stores: list[PostgresStore] = []
    clock = Clock()

    def make() -> EmulatedDomainAgent:
        store = PostgresStore(pg_dsn, exclusive=False)
        stores.append(store)
        return EmulatedDomainAgent(config(), clock, ledger=StoreLedger(store))

    yield make
    for store in stores:
        store.close()


def _port_bandwidth(note: CapabilityNote) -> int:
    """What the note sells between L1.par and the border port (800 Mbit/s when nothing is held)."""
    return max(
        t.bandwidth_mbps for t in note.transit if {str(t.a), str(t.b)} == {"L1.par", "L1.to-L2"} and not t.functions
    )


async def test_what_one_replica_sells_the_others_see_and_none_sells_it_twice(replica: Replica) -> None:
    a, b = replica(), replica()
    # 40 customers at once, half at each replica, 100 Mbit/s each through a port of 800 Mbit/s.
    orders = [order(f"k{i}", src="L1.par", mbps=100) for i in range(40)]
    results = await asyncio.gather(
        *((a if i % 2 else b).reserve(o) for i, o in enumerate(orders)), return_exceptions=True
    )
    granted = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(granted) == 8, results  # exactly the port's capacity, not 8 per replica
    assert all(isinstance(r, ResourceExhausted) for r in refused), refused
    labels = [label for g in granted for label in g.labels.values()]
    assert len(set(labels)) == len(labels) == 8
    addresses = [addr for g in granted for addr in g.addresses.values()]
    assert len(set(addresses)) == 8
    # Both replicas account the same, and publish the same free capacity (none left to the port).
    assert a.usage() == b.usage()
    assert a.usage().bandwidth_mbps == 800
    assert _port_bandwidth(a.note) == _port_bandwidth(b.note) == 0
    assert sorted(h.key for h in await a.holdings()) == sorted(h.key for h in await b.holdings())


async def test_any_replica_moves_or_releases_what_another_holds(replica: Replica) -> None:
    a, b = replica(), replica()
    grant = await a.reserve(order("k1"))
    await b.commit(grant.handle)
    assert a.state_of(grant.handle) is S.COMMITTED
    await a.activate(grant.handle)
    assert b.state_of(grant.handle) is S.ACTIVE
    await b.deactivate(grant.handle)
    await b.terminate(grant.handle)
    assert await a.holdings() == []
    with pytest.raises(NotFound):
        a.state_of(grant.handle)
    # A reservation whose broker died before it kept the handle: released by key at another replica.
    await a.reserve(order("k2"))
    await b.release("k2", "")
    assert await a.holdings() == [] and a.usage().bandwidth_mbps == 0


async def test_a_repeated_order_key_at_another_replica_gets_the_same_grant(replica: Replica) -> None:
    a, b = replica(), replica()
    first = await a.reserve(order("k1"))
    again = await b.reserve(order("k1"))
    assert again.handle == first.handle
    assert b.usage().bandwidth_mbps == 10  # held once


async def test_a_restarted_replica_finds_the_books_without_being_told(replica: Replica) -> None:
    a = replica()
    grant = await a.reserve(order("k1", src="L1.par", mbps=300))
    await a.commit(grant.handle)
    fresh = replica()  # a restart: nothing restored by hand
    assert [(h.key, h.state) for h in await fresh.holdings()] == [("k1", S.COMMITTED)]
    assert _port_bandwidth(fresh.note) == 500
    # Its restore (what a restarted broker does with the handles it kept) changes nothing held.
    await fresh.restore(grant.handle, committed=True)
    assert fresh.usage().bandwidth_mbps == 300
    # A restore never moves a segment back: another replica activated it meanwhile.
    await a.activate(grant.handle)
    await fresh.restore(grant.handle, committed=True)
    assert a.state_of(grant.handle) is S.ACTIVE


async def test_a_replica_publishes_what_another_one_sold(replica: Replica) -> None:
    a, b = replica(), replica()
    stream = b.notes()
    first = await anext(stream)
    assert _port_bandwidth(first) == 800
    await a.reserve(order("k1", src="L1.par", mbps=250))
    # b hears of it by looking (bounded: a few of its polls).
    nxt = await asyncio.wait_for(anext(stream), timeout=5 * EmulatedDomainAgent.SHARED_POLL_S)
    assert nxt.version > first.version
    assert _port_bandwidth(nxt) == 550
    await stream.aclose()


async def test_the_books_in_the_database_are_the_handles_themselves(replica: Replica, pg_dsn: str) -> None:
    import psycopg

    a = replica()
    grant = await a.reserve(order("k1", constraints=()))
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute("SELECT domain, order_key, handle, state FROM domain_holdings").fetchall()
        (version,) = conn.execute("SELECT version FROM domain_books WHERE domain = 'L1'").fetchone() or (0,)
    assert rows == [("L1", "k1", grant.handle, "HELD")]
    assert json.loads(rows[0][2])["key"] == "k1" and version == 1


async def test_concurrent_replicas_under_churn_never_oversell(replica: Replica) -> None:
    """Three replicas reserve, commit and release at random in parallel; the books stay exact."""
    import random

    rng = random.Random(16)
    agents = [replica() for _ in range(3)]
    live: dict[str, str] = {}  # key -> handle
    taken = Counter[str]()

    async def one(i: int) -> None:
        agent = agents[rng.randrange(3)]
        key = f"k{i}"
        try:
            grant = await agent.reserve(SegmentOrder(key, order(key, src="L1.par", mbps=100).request, 30))
        except ResourceExhausted:
            taken["refused"] += 1
            return
        live[key] = grant.handle
        await asyncio.sleep(rng.random() * 0.01)
        other = agents[rng.randrange(3)]
        if rng.random() < 0.5:
            await other.terminate(grant.handle)
            del live[key]
        else:
            await other.commit(grant.handle)

    await asyncio.gather(*(one(i) for i in range(60)))
    usage = {agent.usage().bandwidth_mbps for agent in agents}
    assert usage == {100 * len(live)}, (usage, len(live))
    assert len(live) <= 8
    held = await agents[0].holdings()
    assert sorted(h.key for h in held) == sorted(live)
    assert {TerminalId("L1.to-L2")} >= {t for h in held for t in json.loads(h.handle)["labels"]}


async def test_the_memory_wim_of_replicas_frees_a_label_whichever_deletes_it(pg_dsn: str) -> None:
    """One replica stitches, another releases the slice: the label is free again for both (not only in one)."""
    from capability_catalog.model import LabelType
    from wim.base import ConnectionPoint, ConnectivitySpec
    from wim.memory import MemoryWimDriver

    stores = [PostgresStore(pg_dsn, exclusive=False) for _ in range(2)]
    try:
        a, b = (MemoryWimDriver(ledger=StoreLedger(store)) for store in stores)

        def spec(key: str, label: int, mbps: int = 10) -> ConnectivitySpec:
            vni = LabelType.VXLAN_VNI
            points = (ConnectionPoint("X.to-Y", vni, label), ConnectionPoint("Y.to-X", vni, label))
            return ConnectivitySpec(key=key, points=points, bandwidth_mbps=mbps)

        handle = await a.create(spec("s1", 1000))
        with pytest.raises(ResourceExhausted, match=r"label 1000 on port X\.to-Y is already used by service 's1'"):
            await b.create(spec("s2", 1000))  # the other replica knows the label is taken
        assert await b.create(spec("s1", 1000)) == handle  # the same service again: the same handle
        await b.edit(handle, spec("s1", 1000, mbps=20))
        assert a.usage().bandwidth_mbps == 20
        await b.delete(handle)
        assert await a.list() == [] and a.usage().services == 0
        again = await a.create(spec("s2", 1000))  # free again at the replica that first stitched it
        assert await b.list() == [again]
    finally:
        for store in stores:
            store.close()

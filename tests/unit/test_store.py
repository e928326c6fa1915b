"""The store contract, on both backends: what is saved is what is loaded, and the queries the core relies on.

Every test runs on SQLite (a file) and on PostgreSQL (a new database of the session's throw-away
server, ``scenarios/postgres.py``); ``open_store()`` opens the same database again, as a restarted broker
does.
"""

from __future__ import annotations

import contextlib
import random
import socket
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from broker.core.records import LinkRecord, OrderRecord, SegmentRecord, SliceRecord, request_hash
from broker.core.storage import StoreConflict
from broker.core.workflow import TaskStatus
from broker.store.postgres import PostgresStore, StoreUnavailable
from broker.store.schema import LATEST, SQLITE, SchemaTooNew
from broker.store.sql import SqlStore, statements
from broker.store.sqlite import SqliteStore
from capability_catalog.model import LabelRange, LabelSet, LabelType, TerminalId
from scenarios.postgres import PostgresServer, find_bindir
from slicing.errors import Unavailable
from slicing.model import PortConstraint, SliceRequest, SliceState
from tests.conftest import require_postgresql

S = SliceState
REQ = SliceRequest(
    src=TerminalId("A.ep"),
    dst=TerminalId("B.ep"),
    bandwidth_mbps=10,
    chain=("fw",),
    port_constraints=(PortConstraint(TerminalId("A.ep"), LabelSet.of([LabelRange(1, 4)]), 2),),
)


Opener = Callable[[], SqlStore]


@pytest.fixture(params=["sqlite", "postgresql"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens the test's database (the same one each call); every store opened is closed at the end."""
    opened: list[SqlStore] = []
    if request.param == "sqlite":
        make: Opener = lambda: SqliteStore(tmp_path / "s.db")  # noqa: E731
    else:
        dsn = request.getfixturevalue("pg_dsn")
        make = lambda: PostgresStore(dsn, exclusive=False)  # noqa: E731 - reopened while the first is open

    def opener() -> SqlStore:
        store = make()
        opened.append(store)
        return store

    yield opener
    for store in opened:
        store.close()


def record(slice_id: str, state: SliceState, *, label: int = 100, hold_until: float = 0.0) -> SliceRecord:
    seg = SegmentRecord(
        index=0,
        domain="A",
        local=False,
        sp_id="A",
        request=REQ,
        transit_latency_ms=1.5,
        latency_share_ms=2.0,
        state=state,
        order_key=f"{slice_id}.0.0",
        handle="A-123",
        labels={"A.to-B": label},
        addresses={"A.ep": "10.0.0.1/24"},
        detail=({"domain": "A1", "local": True, "spId": "A"},),
    )
    link = LinkRecord(
        TerminalId("A.to-B"), TerminalId("B.to-A"), "A", "B", LabelType.VXLAN_VNI, label, label, wim_handle="w"
    )
    return SliceRecord(
        id=slice_id,
        requester="alice",
        request_id=f"r-{slice_id}",
        request_hash=request_hash(REQ, 60),
        request=REQ,
        hold_time_s=60,
        state=state,
        created_at=1.0,
        updated_at=2.0,
        hold_expires_at=hold_until,
        segments=(seg,),
        links=(link,),
        labels={"A.ep": 3},
        addresses={"A.ep": "10.0.0.1/24"},
    )


def test_saved_slice_loads_back_equal_with_segments_and_links(open_store: Opener) -> None:
    store = open_store()
    rec = record("s1", S.ACTIVE)
    store.save(rec)
    assert store.get("s1") == rec
    assert store.find_by_request("alice", "r-s1") == rec
    assert store.find_by_request("bob", "r-s1") is None
    store.close()
    reopened = open_store()
    assert reopened.get("s1") == rec  # survives a new process


def test_saving_again_replaces_segments_instead_of_adding(open_store: Opener) -> None:
    store = open_store()
    store.save(record("s1", S.HELD))
    store.save(record("s1", S.COMMITTED))
    loaded = store.get("s1")
    assert loaded is not None and loaded.state is S.COMMITTED and len(loaded.segments) == 1


def test_state_of_reads_the_stored_state_and_none_for_an_unknown_slice(open_store: Opener) -> None:
    store = open_store()
    assert store.state_of("s1") is None
    store.save(record("s1", S.HELD))
    assert store.state_of("s1") is S.HELD
    store.save(record("s1", S.COMMITTED))
    assert store.state_of("s1") is S.COMMITTED


def test_restart_reads_live_local_segments_and_wim_handles_of_holding_slices_only(open_store: Opener) -> None:
    store = open_store()

    def local(slice_id: str, state: SliceState, seg_state: SliceState, handle: str = "h") -> SliceRecord:
        rec = record(slice_id, state)
        seg = replace(rec.segments[0], local=True, state=seg_state, handle=handle)
        return replace(rec, segments=(seg, replace(seg, index=1, local=False, handle=f"{handle}-remote")))

    store.save(replace(local("s1", S.COMMITTED, S.COMMITTED, "h1"), created_at=1.0))
    store.save(replace(local("s2", S.HELD, S.HELD, "h2"), created_at=2.0))
    store.save(local("s3", S.TERMINATED, S.TERMINATED, "h3"))  # final: nothing to restore
    store.save(replace(local("s4", S.ACTIVE, S.FAILED, "h4"), created_at=3.0))  # a released segment
    store.save(replace(local("s5", S.ACTIVE, S.ACTIVE, ""), created_at=4.0))  # never granted

    assert store.local_holdings() == [("A", "h1", S.COMMITTED), ("A", "h2", S.HELD)]
    assert store.wim_handles() == ["w", "w", "w", "w"]  # s1, s2, s4, s5; not the terminated s3
    assert store.count_holding() == 4 == len(store.holding())


def test_expired_holds_lists_only_held_slices_past_their_time(open_store: Opener) -> None:
    store = open_store()
    store.save(record("old", S.HELD, hold_until=10))
    store.save(record("new", S.HELD, hold_until=100))
    store.save(record("done", S.COMMITTED, hold_until=10))
    assert store.expired_holds(50) == ["old"]
    assert store.next_hold_expiry() == 10


def test_used_link_labels_count_only_slices_that_hold_resources(open_store: Opener) -> None:
    store = open_store()
    store.save(record("a", S.ACTIVE, label=100))
    store.save(record("b", S.RESERVING, label=101))
    store.save(record("c", S.TERMINATED, label=102))
    store.save(record("d", S.EXPIRED, label=103))
    assert store.used_link_labels() == {("A.to-B", "B.to-A"): {100, 101}}
    assert {r.id for r in store.holding()} == {"a", "b"}


def test_task_log_keeps_each_task_status(open_store: Opener) -> None:
    store = open_store()
    store.log_tasks(
        "s1", "reserve", [TaskStatus(0, "reserve A#0", "running"), TaskStatus(0, "reserve B#1", "running")], 1.0
    )
    store.log_tasks("s1", "reserve", [TaskStatus(0, "reserve A#0", "done")], 2.0)
    rows = store.tasks("s1")
    assert [(r["name"], r["status"]) for r in rows] == [("reserve B#1", "running"), ("reserve A#0", "done")]


def test_save_returns_the_state_the_slice_had_before(open_store: Opener) -> None:
    store = open_store()
    assert store.save(record("a", S.RESERVING)) is None
    assert store.save(record("a", S.HELD)) is S.RESERVING
    assert store.save(record("a", S.HELD)) is S.HELD


def test_used_link_labels_follow_each_state_change_and_survive_a_reopen(open_store: Opener) -> None:
    store = open_store()
    key = ("A.to-B", "B.to-A")
    store.save(record("a", S.RESERVING, label=100))
    store.save(record("b", S.HELD, label=100))
    assert store.used_link_labels() == {key: {100}}
    store.save(record("a", S.RESERVING, label=101))  # a re-plan moved slice a to another label
    assert store.used_link_labels() == {key: {100, 101}}
    store.save(record("b", S.ABORTED, label=100))  # no longer holding: its label is free again
    assert store.used_link_labels() == {key: {101}}
    store.save(replace(record("a", S.HELD, label=101), links=()))
    assert store.used_link_labels() == {}
    store.save(record("c", S.COMMITTED, label=105))
    store.save(record("d", S.TERMINATED, label=106))
    store.close()
    assert open_store().used_link_labels() == {key: {105}}


def test_records_sharing_a_request_each_load_back_their_own(open_store: Opener) -> None:
    store = open_store()
    other = replace(REQ, bandwidth_mbps=99)
    first = record("a", S.HELD)
    store.save(first)
    store.save(replace(first, state=S.COMMITTED))  # same request object, encoded once
    store.save(replace(record("b", S.HELD), request=other))
    loaded_a, loaded_b = store.get("a"), store.get("b")
    assert loaded_a is not None and loaded_b is not None
    assert loaded_a.request == REQ and loaded_a.state is S.COMMITTED
    assert loaded_b.request == other and loaded_b.segments[0].detail == first.segments[0].detail


def test_request_hash_differs_when_any_field_or_the_hold_time_differs() -> None:
    base = request_hash(REQ, 60)
    assert base == request_hash(REQ, 60)
    assert base != request_hash(REQ, 61)
    assert base != request_hash(SliceRequest(src=REQ.src, dst=REQ.dst, bandwidth_mbps=11, chain=REQ.chain), 60)


def test_state_changes_keep_segments_and_new_segments_replace_the_old(open_store: Opener) -> None:
    store = open_store()
    held = record("a", S.HELD)
    store.save(held)
    committed = replace(held, state=S.COMMITTED)  # the same segment and link tuples: only the row is rewritten
    store.save(committed)
    loaded = store.get("a")
    assert loaded is not None and loaded.state is S.COMMITTED
    assert loaded.segments == held.segments and loaded.links == held.links
    moved = replace(committed, segments=(replace(held.segments[0], handle="A-456"),), links=())
    store.save(moved)
    loaded = store.get("a")
    assert loaded is not None and [s.handle for s in loaded.segments] == ["A-456"] and loaded.links == ()
    store.close()
    reopened = open_store()
    again = reopened.get("a")
    assert again is not None
    reopened.save(replace(again, segments=(), state=S.TERMINATED))  # fresh objects after a reopen are written
    final = reopened.get("a")
    assert final is not None and final.segments == () and final.state is S.TERMINATED


def test_a_second_slice_with_a_used_request_id_is_refused_and_leaves_the_first(open_store: Opener) -> None:
    store = open_store()
    store.save(record("a", S.HELD))
    with pytest.raises(StoreConflict, match="request_id"):
        store.save(replace(record("b", S.HELD), request_id="r-a"))
    kept = store.get("a")
    assert kept is not None and kept.segments and store.get("b") is None


# --- List pages and the retention of failed records (issue 18 item 3) --------------------------------


def _at(rec: SliceRecord, created: float, *, requester: str = "alice") -> SliceRecord:
    return replace(rec, created_at=created, updated_at=created, requester=requester, request_id=f"r-{rec.id}")


def test_pages_walk_every_slice_once_oldest_first_filtered_by_requester_and_state(open_store: Opener) -> None:
    store = open_store()
    for i in range(7):
        state = S.FAILED if i % 2 else S.HELD
        store.save(_at(record(f"s{i}", state, label=100 + i), float(i // 2), requester="bob" if i == 3 else "alice"))
    seen, after = [], None
    while True:
        page = store.page(limit=3, after=after)
        seen += [r.id for r in page]
        if len(page) < 3:
            break
        after = (page[-1].created_at, page[-1].id)
    assert seen == [f"s{i}" for i in range(7)]
    assert [r.id for r in store.page(requester="bob")] == ["s3"]
    assert [r.id for r in store.page([S.FAILED], requester="alice")] == ["s1", "s5"]
    assert [r.id for r in store.page(after=(1.0, "s2"), limit=2)] == ["s3", "s4"]


def test_failed_records_are_kept_for_the_retention_time_and_count_and_nothing_else_goes(open_store: Opener) -> None:
    store = open_store()
    released = lambda r: replace(r, segments=(), links=())  # noqa: E731 - a failed reserve holds nothing
    for i in range(10):
        store.save(_at(released(record(f"f{i}", S.FAILED)), float(i)))
    store.save(_at(record("held", S.HELD, label=200), 0.0))
    # A FAILED slice whose release failed still holds its segment and link: never pruned.
    store.save(_at(record("stuck", S.FAILED, label=201), 0.0))
    store.log_tasks("f0", "reserve", [TaskStatus(0, "plan", "done")], 0.0)
    assert store.prune_failed(before=2.0, keep=100) == 2  # f0, f1: older than the retention time
    assert store.prune_failed(before=0.0, keep=3) == 5  # f2..f6: beyond the newest three
    assert sorted(r.id for r in store.slices()) == ["f7", "f8", "f9", "held", "stuck"]
    assert store.tasks("f0") == []
    assert store.prune_failed(before=0.0, keep=3) == 0


def test_user_rules_are_kept_replaced_by_name_survive_a_reopen_and_go_with_their_slice(open_store: Opener) -> None:
    store = open_store()
    store.save(record("s1", S.ACTIVE))
    store.save(record("s2", S.ACTIVE))
    lossy = {"name": "lossy", "metric": "loss", "comparison": ">", "threshold": 0.01, "for_s": 0.0}
    store.save_rule("s1", "lossy", lossy)
    store.save_rule("s1", "slow", {"name": "slow", "metric": "latency_ms", "comparison": ">", "threshold": 5})
    store.save_rule("s1", "lossy", {**lossy, "threshold": 0.02})  # replaced, keeps its place
    store.save_rule("s2", "slow", {"name": "slow", "metric": "latency_ms", "comparison": ">", "threshold": 9})
    assert [r["name"] for r in store.rules("s1")] == ["lossy", "slow"]
    assert store.rules("s1")[0]["threshold"] == 0.02
    store.close()
    reopened = open_store()
    assert [r["threshold"] for r in reopened.rules("s1")] == [0.02, 5]
    reopened.drop_rules("s1")
    assert reopened.rules("s1") == [] and len(reopened.rules("s2")) == 1
    failed = record("s3", S.FAILED)  # holds nothing any more: prunable
    reopened.save(
        replace(
            failed,
            segments=tuple(replace(g, state=S.TERMINATED) for g in failed.segments),
            links=tuple(replace(k, wim_handle="") for k in failed.links),
        )
    )
    reopened.save_rule("s3", "slow", {"name": "slow", "metric": "latency_ms", "comparison": ">", "threshold": 1})
    assert reopened.prune_failed(before=1e12, keep=0) == 1  # a pruned slice's rules go with it
    assert reopened.rules("s3") == []


def test_open_alerts_are_kept_per_cause_replaced_as_a_whole_survive_a_reopen_and_go_with_their_slice(
    open_store: Opener,
) -> None:
    store = open_store()
    store.save(record("s1", S.ACTIVE))
    store.save(record("s2", S.ACTIVE, label=101))
    link = {"cause": "link", "metric": "link_up", "contributions": {"child:L1": [0.0, 1.0, "critical", "L1", "<"]}}
    store.save_alerts("s1", [link, {"cause": "loss", "metric": "loss"}])
    store.save_alerts("s2", [{"cause": "latency"}])
    assert [a["cause"] for a in store.alerts("s1")] == ["link", "loss"]
    store.save_alerts("s1", [link])  # what fires now replaces what was kept
    reopened = open_store()
    assert reopened.alerts("s1") == [link] and [a["cause"] for a in reopened.alerts("s2")] == ["latency"]
    reopened.save_alerts("s1", [])
    assert reopened.alerts("s1") == [] and reopened.alerts("nope") == []
    failed = record("s2", S.FAILED, label=101)  # holds nothing any more: prunable
    segments = tuple(replace(g, state=S.TERMINATED) for g in failed.segments)
    reopened.save(replace(failed, segments=segments, links=tuple(replace(k, wim_handle="") for k in failed.links)))
    assert reopened.prune_failed(before=1e12, keep=0) == 1  # a pruned slice's alerts go with it
    assert reopened.alerts("s2") == []


def test_in_service_local_names_active_local_segments_of_active_slices_only(open_store: Opener) -> None:
    store = open_store()
    active = record("s1", S.ACTIVE)
    store.save(replace(active, segments=tuple(replace(g, state=S.ACTIVE) for g in active.segments)))
    terminating = record("s2", S.TERMINATING)
    store.save(replace(terminating, segments=tuple(replace(g, state=S.ACTIVE) for g in terminating.segments)))
    store.save(record("s3", S.COMMITTED))
    assert store.in_service_local() == {(g.domain, g.handle) for g in active.segments if g.local}


# --- the schema's versions, the owner, and PostgreSQL's one broker per database (issue 16) ------------


def test_a_new_database_gets_every_migration_once_and_a_reopen_applies_none(open_store: Opener) -> None:
    store = open_store()
    assert store.schema_version() == LATEST
    store.save(record("s1", S.HELD))
    again = open_store()
    assert again.schema_version() == LATEST and again.get("s1") == record("s1", S.HELD)
    rows = again._execute("SELECT version FROM schema_version").fetchall()
    assert [int(r["version"]) for r in rows] == list(range(1, LATEST + 1))


def test_a_database_written_by_a_newer_broker_is_refused_and_left_as_it_is(open_store: Opener) -> None:
    store = open_store()
    store.save(record("s1", S.HELD))
    with store._tx():
        store._execute("INSERT INTO schema_version VALUES (?, ?)", (LATEST + 1, 0.0))
    with pytest.raises(SchemaTooNew, match=f"schema version {LATEST + 1}.*up to {LATEST}"):
        open_store()
    assert store.get("s1") == record("s1", S.HELD)  # nothing was written down to the older schema


def test_a_database_of_another_sp_is_refused(open_store: Opener) -> None:
    open_store()._claim("M1")
    store = open_store()
    store._claim("M1")  # its own: accepted again
    with pytest.raises(StoreConflict, match="holds the slices of SP 'M1', not of 'M2'"):
        store._claim("M2")


def test_a_sqlite_file_from_before_schema_versions_is_upgraded_and_keeps_its_slices(tmp_path: Path) -> None:
    old = sqlite3.connect(tmp_path / "s.db")
    # The schema as the first wave wrote it: no schema_version, no rules, slices without settle_to / deadline_at.
    legacy = SQLITE.base().replace(
        "    settle_to TEXT NOT NULL DEFAULT '',\n    deadline_at REAL NOT NULL DEFAULT 0,\n", ""
    )
    for statement in statements(legacy):
        if "CREATE TABLE IF NOT EXISTS rules" not in statement:
            old.execute(statement)
    old.execute("INSERT INTO slices VALUES ('s1','alice','r-s1','h','{}',60,'TERMINATED',1,2,0,'','','{}','{}')")
    old.commit()
    old.close()
    store = SqliteStore(tmp_path / "s.db")
    assert store.schema_version() == LATEST
    assert store.state_of("s1") is S.TERMINATED
    store.save(record("s2", S.HELD))
    store.save_rule("s2", "slow", {"name": "slow"})
    assert store.get("s2") == record("s2", S.HELD) and store.rules("s2") == [{"name": "slow"}]


def test_postgresql_lets_one_broker_in_until_it_closes(pg_dsn: str) -> None:
    first = PostgresStore(pg_dsn, owner="L1")
    try:
        with pytest.raises(StoreUnavailable, match="another broker holds the PostgreSQL database") as refused:
            PostgresStore(pg_dsn, owner="L1")
        assert "replicas of one SP" in str(refused.value)
    finally:
        first.close()
    PostgresStore(pg_dsn, owner="L1").close()  # the lock went with the first one's connection


def test_postgresql_brokers_starting_together_migrate_a_new_database_once(pg_dsn: str) -> None:
    opened: list[PostgresStore] = []
    failed: list[BaseException] = []

    def open_one() -> None:
        try:
            opened.append(PostgresStore(pg_dsn, exclusive=False))
        except BaseException as exc:
            failed.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    try:
        assert not failed and len(opened) == 6
        rows = opened[0]._execute("SELECT version FROM schema_version").fetchall()
        assert sorted(int(r["version"]) for r in rows) == list(range(1, LATEST + 1))
    finally:
        for store in opened:
            store.close()


def test_an_unreachable_postgresql_is_named_without_its_password() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: refused at once
        dsn = f"host=127.0.0.1 port={port} user=fb password=hunter2 dbname=slices connect_timeout=2"
        with pytest.raises(StoreUnavailable, match=f"cannot reach the PostgreSQL database .*port={port}") as exc:
            PostgresStore(dsn)
    assert "hunter2" not in str(exc.value) and "dbname=slices" in str(exc.value)


def test_a_postgresql_outage_is_unavailable_and_the_store_reconnects_once_it_is_back() -> None:
    require_postgresql()
    bindir = find_bindir()
    assert bindir is not None
    server = PostgresServer(bindir)  # a server of its own: the outage must not reach other tests
    try:
        server.start()
        dsn = server.new_database()
        store = PostgresStore(dsn, owner="T")
        store.save(record("s1", S.HELD))
        server.halt()
        with pytest.raises(Unavailable, match="store: lost the PostgreSQL database"):
            store.slices([S.HELD])
        with pytest.raises(Unavailable, match="store: cannot reach the PostgreSQL database"):
            store.save(record("s2", S.HELD))
        # The only writer keeps what it wrote of a live slice: read from memory, what the database holds.
        assert store.get("s1") == record("s1", S.HELD)
        server.resume()
        assert store.slices([S.HELD]) == [record("s1", S.HELD)]  # connected again, nothing lost
        store.save(record("s2", S.HELD))
        with pytest.raises(StoreUnavailable, match="another broker holds"):
            PostgresStore(dsn)  # the new connection took the one-broker lock again
        store.close()
    finally:
        server.stop()


def test_service_orders_are_kept_found_by_id_and_key_listed_newest_first_and_go_with_a_pruned_slice(
    open_store: Opener,
) -> None:
    store = open_store()
    orders = [OrderRecord(f"o{i}", "alice", f"r-s{i}", float(i), hold_only=i == 1) for i in range(3)]
    for o in orders:
        store.save_order(o)
    store.save_order(OrderRecord("ob", "bob", "r-s0", 9.0))  # a key is its requester's own
    store.save_order(replace(orders[0], completed_at=5.0, description="done"))  # updated in place
    store.close()
    reopened = open_store()
    assert reopened.order("o0") == replace(orders[0], completed_at=5.0, description="done")
    assert reopened.order_by_request("alice", "r-s1") == orders[1] and reopened.order("nope") is None
    assert [o.id for o in reopened.orders(requester="alice")] == ["o2", "o1", "o0"]
    assert [o.id for o in reopened.orders(limit=2)] == ["ob", "o2"]
    assert [o.id for o in reopened.orders(requester="alice", request_id="r-s0")] == ["o0"]
    with pytest.raises(StoreConflict):  # one order per requester and key
        reopened.save_order(OrderRecord("o-twice", "alice", "r-s1", 3.0))
    reopened.drop_order("o2")
    assert reopened.order("o2") is None
    failed = record("s0", S.FAILED)  # holds nothing any more: pruned, and its order with it
    reopened.save(
        replace(
            failed,
            segments=tuple(replace(g, state=S.TERMINATED) for g in failed.segments),
            links=tuple(replace(k, wim_handle="") for k in failed.links),
        )
    )
    assert reopened.prune_failed(before=1e12, keep=0) == 1
    assert reopened.order("o0") is None and reopened.order("ob") is not None


def test_segments_at_a_domain_are_read_at_once_for_live_slices_only(open_store: Opener) -> None:
    store = open_store()
    store.save(record("s1", S.COMMITTED))
    active = record("s2", S.ACTIVE)
    store.save(replace(active, segments=(replace(active.segments[0], state=S.COMMITTED),)))
    store.save(record("s3", S.TERMINATED))  # ended: its keys are no longer anyone's
    assert store.segments_at("A") == {"s1.0.0": (S.COMMITTED, S.COMMITTED), "s2.0.0": (S.ACTIVE, S.COMMITTED)}
    assert store.segments_at("B") == {}


def test_a_domains_shared_books_keep_handles_states_and_a_version(open_store: Opener) -> None:
    store = open_store()
    assert store.book_entries("D") == (0, [])
    assert store.book_put("D", "k2", "h2", S.HELD) == 1
    assert store.book_put("D", "k1", "h1", S.HELD) == 2
    assert store.book_put("D", "k1", "h1", S.COMMITTED) == 3  # a move
    assert store.book_drop("D", "k2") == 4
    assert store.book_drop("D", "absent") == 5  # a no-op still moves the version: readers look again
    assert store.book_entries("D") == (5, [("k1", "h1", S.COMMITTED)])
    assert store.books_version("E") == 0
    again = open_store()  # another process (a replica) reads the same books
    assert again.book_entries("D") == (5, [("k1", "h1", S.COMMITTED)])


def test_offer_edits_are_numbered_per_domain_and_read_by_another_process(open_store: Opener) -> None:
    store = open_store()
    assert store.offer_edits() == {}
    assert store.save_offer_edit("D", '{"withdrawn": true}', 1.0) == 1
    assert store.save_offer_edit("D", '{"withdrawn": false}', 2.0) == 2  # the newest replaces, numbered on
    assert store.save_offer_edit("E", "{}", 3.0) == 1
    again = open_store()  # another process (a replica) sees what this one edited
    assert again.offer_edits() == {"D": (2, '{"withdrawn": false}'), "E": (1, "{}")}


def test_a_slice_read_from_memory_is_what_the_database_holds_after_any_sequence_of_writes(tmp_path: Path) -> None:
    """The only writer answers ``get`` from what it wrote: after random writes (every state, new labels and
    segments, a refused duplicate request id), each answer equals a second connection's read of the file."""
    rng = random.Random(17)
    writer, reader = SqliteStore(tmp_path / "s.db"), SqliteStore(tmp_path / "s.db")
    try:
        ids = [f"s{i}" for i in range(6)]
        for step in range(300):
            sid = rng.choice(ids)
            rec = record(sid, rng.choice(list(SliceState)), label=rng.randrange(100, 200), hold_until=float(step))
            if rng.random() < 0.1:  # another slice under a request id already taken: refused, nothing kept
                rec = replace(rec, id=f"dup{step}", request_id=f"r-{rng.choice(ids)}")
            if rng.random() < 0.3:
                rec = replace(rec, reason=f"step {step}", segments=(replace(rec.segments[0], handle=f"h{step}"),))
            with contextlib.suppress(StoreConflict):
                writer.save(rec)
            for each in [*ids, rec.id]:
                assert writer.get(each) == reader.get(each), (step, each)
    finally:
        writer.close()
        reader.close()


def test_the_writes_of_a_batch_are_seen_together_once_it_ends_and_not_before(open_store: Opener) -> None:
    store, other = open_store(), open_store()
    with store.batch():
        store.save(record("b1", S.HELD, label=200))
        store.log_tasks("b1", "reserve", [TaskStatus(0, "reserve A", "done")], 1.0)
        store.save(record("b2", S.HELD, label=201))
        with store.batch():  # nested: joins the outer one
            store.save(record("b1", S.COMMITTED, label=200))
        assert other.get("b1") is None and other.get("b2") is None  # nothing committed yet
    assert other.get("b1") == record("b1", S.COMMITTED, label=200)
    assert other.get("b2") == record("b2", S.HELD, label=201)
    assert [t["status"] for t in other.tasks("b1")] == ["done"]


def test_a_batch_that_raises_leaves_the_database_and_the_stores_memory_as_before_it(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")  # the only writer: it answers from memory
    store.save(record("r1", S.HELD, label=300))
    key = ("A.to-B", "B.to-A")
    with pytest.raises(RuntimeError, match="boom"), store.batch():
        store.save(record("r1", S.COMMITTED, label=301))
        store.save(record("r2", S.HELD, label=302))
        assert store.used_link_labels() == {key: {301, 302}}
        raise RuntimeError("boom")
    assert store.get("r1") == record("r1", S.HELD, label=300)
    assert store.get("r2") is None
    assert store.used_link_labels() == {key: {300}}
    store.close()
    reopened = SqliteStore(tmp_path / "s.db")
    assert reopened.get("r1") == record("r1", S.HELD, label=300) and reopened.get("r2") is None
    reopened.close()


def test_a_write_refused_inside_a_batch_takes_back_only_itself(open_store: Opener) -> None:
    store = open_store()
    store.save(record("c1", S.HELD, label=400))
    with store.batch():
        store.save(record("c2", S.HELD, label=401))
        twin = replace(record("c3", S.HELD, label=402), request_id="r-c1")  # c1's request id again
        with pytest.raises(StoreConflict):
            store.save(twin)
        store.log_tasks("c2", "reserve", [TaskStatus(0, "reserve A", "done")], 1.0)
    reader = open_store()
    assert reader.get("c2") == record("c2", S.HELD, label=401)
    assert reader.get("c3") is None
    assert [t["status"] for t in reader.tasks("c2")] == ["done"]

"""The store's queries, written once for SQLite and PostgreSQL (``sqlite.py`` and ``postgres.py`` connect).

Every statement is written with ``?`` marks; a backend that spells them otherwise (psycopg's ``%s``)
translates them once per statement. Every write of one slice (its row, segments, links) is one
transaction; a read of a whole slice (its row, then its segments and links) sees one snapshot.

A backend whose process is the only writer of its database (``single_writer``) keeps two things in
memory beside it: the labels the links of holding slices take (the planner asks for them on every
Reserve; a query joining every holding slice grew with the number held), the segments and links
each slice last wrote (a state change carries the same tuples, so only the slice row is rewritten),
and the record of each slice not ended as last written (``get``, on every call and event, reads no row).
A backend shared with other processes asks the database each time.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from broker.core.records import (
    LinkRecord,
    OrderRecord,
    SegmentRecord,
    SliceRecord,
    Then,
    request_from_dict,
    request_to_dict,
)
from broker.core.storage import StoreConflict
from broker.core.workflow import TaskStatus
from broker.store.schema import LATEST, VERSION_TABLE, Dialect, SchemaTooNew, migrations
from capability_catalog.model import LabelType, TerminalId
from slicing.model import FINAL_STATES, HOLDING_STATES, SliceState

#: Segment states in which a segment holds nothing.
_RELEASED = (SliceState.TERMINATED.value, SliceState.ABORTED.value, SliceState.EXPIRED.value)
#: A label taken on an inter-child link: ((lower port, higher port), label).
LinkLabel = tuple[tuple[str, str], int]
#: Encodings kept by object identity; past this many the cache starts afresh.
_ENCODED_MAX = 1024
#: Slices whose last written segments and links are remembered (by identity); past this many, afresh
#: (a slice changes state within seconds of its last save, so recent ones are all that pay off).
_PARTS_MAX = 1024
#: Insert a slice, or update it in place: no delete and re-insert of the row and its index entries.
_UPSERT_SLICE = """
INSERT INTO slices VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (id) DO UPDATE SET
    requester = excluded.requester, request_id = excluded.request_id, request_hash = excluded.request_hash,
    request = excluded.request, hold_time_s = excluded.hold_time_s, state = excluded.state,
    created_at = excluded.created_at, updated_at = excluded.updated_at, hold_expires_at = excluded.hold_expires_at,
    reason = excluded.reason, error_code = excluded.error_code, labels = excluded.labels,
    addresses = excluded.addresses, settle_to = excluded.settle_to, deadline_at = excluded.deadline_at,
    order_then = excluded.order_then
"""
_UPSERT_TASK = """
INSERT INTO tasks VALUES (?,?,?,?,?,?,?) ON CONFLICT (slice_id, operation, seq, name) DO UPDATE SET
    status = excluded.status, detail = excluded.detail, updated_at = excluded.updated_at
"""
_HOLDING = [s.value for s in HOLDING_STATES]
_MARKS_HOLDING = ",".join("?" * len(HOLDING_STATES))
_FINAL = [s.value for s in FINAL_STATES]
_MARKS_FINAL = ",".join("?" * len(FINAL_STATES))


def _link_labels(links: Iterable[LinkRecord]) -> tuple[LinkLabel, ...]:
    out: list[LinkLabel] = []
    for ln in links:
        key = (min(ln.a_port, ln.b_port), max(ln.a_port, ln.b_port))
        out.extend((key, int(label)) for label in (ln.label_a, ln.label_b) if label is not None)
    return tuple(out)


def statements(script: str) -> list[str]:
    """The statements of a schema script (which holds no ``;`` but between statements)."""
    return [s.strip() for s in script.split(";") if s.strip()]


class SqlStore:
    """Slices and everything under them, in one SQL database; a backend supplies the connection."""

    dialect: Dialect
    #: The backend's errors for a broken unique or foreign key (a request id used twice).
    conflict_errors: tuple[type[BaseException], ...] = ()

    def __init__(self, *, single_writer: bool, owner: str | None = None, where: str = "the database") -> None:
        self._where = where
        self._migrate()
        if owner is not None:
            self._claim(owner)
        # Object id -> (the object, kept alive so its id is not reused; its JSON).
        self._encoded: dict[int, tuple[object, str]] = {}
        self._single = single_writer
        # Slice id -> the segments and links tuples as last written (only when this process is the only writer).
        self._parts: dict[str, tuple[tuple[SegmentRecord, ...], tuple[LinkRecord, ...]]] = {}
        # Slice id -> the record as last written, for slices not ended (idem): ``get`` answers from it.
        self._records: dict[str, SliceRecord] = {}
        # Labels held by each holding slice's links, and how many holders each label has.
        self._held_labels: dict[str, tuple[LinkLabel, ...]] = {}
        self._label_use: Counter[LinkLabel] = Counter()
        # Inside ``batch``: the slices it saved (what memory must forget should it roll back).
        self._batched: set[str] | None = None
        if single_writer:
            for slice_id, labels in self._labels_of_holding().items():
                self._hold_labels(slice_id, labels)

    # --- what a backend supplies -----------------------------------------------------------------

    def _execute(self, sql: str, args: Sequence[object] = ()) -> Any:
        """Run one statement (``?`` marks); the cursor, with ``fetchone`` and ``fetchall`` of mapping rows."""
        raise NotImplementedError

    def _executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        raise NotImplementedError

    def _tx(self) -> AbstractContextManager[None]:
        """One write transaction: committed when the block ends, rolled back when it raises."""
        raise NotImplementedError

    def _snapshot(self) -> AbstractContextManager[None]:
        """Several reads that must see one state (a slice row, then its segments and links)."""
        raise NotImplementedError

    def _lock_schema(self) -> None:
        """Inside the migration transaction: keep other processes from migrating at the same time."""

    def _lock_events(self) -> None:
        """Inside a write: hold off other processes' event appends until it commits (none to hold off here)."""

    def _legacy(self) -> None:
        """Inside the migration transaction of a database that predates ``schema_version``: bring it to version 1."""

    def close(self) -> None:
        """Release the connection."""
        raise NotImplementedError

    # --- locks shared with other broker processes (none: one process per database) ----------------

    def try_lock(self, key: str) -> bool:
        """Always taken: no other process uses this database (see ``SliceStore.try_lock``)."""
        return True

    def unlock(self, key: str) -> None:
        """Nothing to give back."""

    def locked_elsewhere(self, key: str) -> bool:
        """Never: no other process uses this database."""
        return False

    # --- the schema -------------------------------------------------------------------------------

    def schema_version(self) -> int:
        """The newest migration applied to the database."""
        row = self._execute("SELECT MAX(version) AS v FROM schema_version").fetchone()
        return int(row["v"] or 0)

    def _migrate(self) -> None:
        """Apply, in order, every migration the database has not had; refuse a newer database."""
        with self._tx():
            self._lock_schema()
            self._execute(VERSION_TABLE.format(real=self.dialect.real))
            applied = {int(r["version"]) for r in self._execute("SELECT version FROM schema_version").fetchall()}
            if applied and max(applied) > LATEST:
                raise SchemaTooNew(max(applied), self._where)
            if not applied:
                self._legacy()
            for number, _what, script in migrations(self.dialect):
                if number in applied:
                    continue
                for statement in statements(script):
                    self._execute(statement)
                self._execute("INSERT INTO schema_version VALUES (?, ?)", (number, time.time()))

    def _claim(self, owner: str) -> None:
        """Record the SP this database belongs to, or refuse one that belongs to another SP."""
        with self._tx():
            self._execute("CREATE TABLE IF NOT EXISTS owner (sp_id TEXT PRIMARY KEY)")
            row = self._execute("SELECT sp_id FROM owner").fetchone()
            if row is None:
                self._execute("INSERT INTO owner VALUES (?)", (owner,))
            elif row["sp_id"] != owner:
                raise StoreConflict(
                    f"{self._where} holds the slices of SP '{row['sp_id']}', not of '{owner}': "
                    "give every SP a database of its own"
                )

    # --- writes -------------------------------------------------------------------------------

    def _json(self, value: object, encode: Any) -> str:
        """``json.dumps(encode(value))``, remembered by identity: records share these immutable parts."""
        hit = self._encoded.get(id(value))
        if hit is not None and hit[0] is value:
            return hit[1]
        text = json.dumps(encode(value))
        if len(self._encoded) >= _ENCODED_MAX:
            self._encoded.clear()
        self._encoded[id(value)] = (value, text)
        return text

    @contextmanager
    def batch(self) -> Iterator[None]:
        """The writes inside, as one transaction: all committed when the block ends, none when it raises.

        One commit for the writes of one step of an operation (its task log, its segments, its new
        state) instead of one each. The block must not await: nothing leaves the broker between the
        writes and their commit. Nested, it joins the outer one.
        """
        if self._batched is not None:
            yield
            return
        saved: set[str] = set()
        self._batched = saved
        try:
            with self._tx():
                yield
        except BaseException:
            self._forget(saved)
            raise
        finally:
            self._batched = None

    def _forget(self, slice_ids: Iterable[str]) -> None:
        """A batch rolled back: what memory says of the slices it saved is the database's again."""
        slice_ids = set(slice_ids)
        if not slice_ids:
            return
        for slice_id in slice_ids:
            self._parts.pop(slice_id, None)
            self._records.pop(slice_id, None)
        if self._single:
            held = self._labels_of_holding()
            for slice_id in slice_ids:
                self._hold_labels(slice_id, held.get(slice_id, ()))

    def save(self, rec: SliceRecord) -> SliceState | None:
        """Insert or replace a slice with its segments and links, atomically; return the state it had (or None).

        A second slice with a request id its requester already used is refused (``StoreConflict``).
        """
        try:
            with self._tx():
                row = self._execute(self._select_state_for_update(), (rec.id,)).fetchone()
                self._execute(
                    _UPSERT_SLICE,
                    (
                        rec.id,
                        rec.requester,
                        rec.request_id,
                        rec.request_hash,
                        self._json(rec.request, request_to_dict),
                        rec.hold_time_s,
                        rec.state.value,
                        rec.created_at,
                        rec.updated_at,
                        rec.hold_expires_at,
                        rec.reason,
                        rec.error_code,
                        json.dumps(dict(rec.labels)),
                        json.dumps(dict(rec.addresses)),
                        rec.settle_to.value if rec.settle_to else "",
                        rec.deadline_at,
                        rec.then.value,
                    ),
                )
                written = self._parts.get(rec.id)
                if written is None or written[0] is not rec.segments or written[1] is not rec.links:
                    self._write_parts(rec)
                if row is None or row["state"] != rec.state.value:
                    self._changed(rec)
        except self.conflict_errors as exc:
            raise StoreConflict(f"slice {rec.id}: {exc}".strip()) from exc
        if self._batched is not None:
            self._batched.add(rec.id)
        if self._single:
            if rec.state in FINAL_STATES:
                self._parts.pop(rec.id, None)
                self._records.pop(rec.id, None)
            else:
                if len(self._parts) >= _PARTS_MAX:
                    self._parts.clear()
                    self._records.clear()
                self._parts[rec.id] = (rec.segments, rec.links)
                self._records[rec.id] = rec
            self._hold_labels(rec.id, _link_labels(rec.links) if rec.state in HOLDING_STATES else ())
        return SliceState(row["state"]) if row else None

    def _changed(self, rec: SliceRecord) -> None:
        """Inside the write of a state change: tell the other processes sharing the database (none here)."""

    async def follow_changes(self, on_change: Callable[[str, SliceState, float, str], None]) -> None:
        """Call ``on_change(slice_id, state, at, detail)`` for every state change another process writes.

        Returns at once for a database no other process writes; else runs until cancelled.
        """

    def _select_state_for_update(self) -> str:
        """The slice's stored state, locking its row where the backend locks rows."""
        return "SELECT state FROM slices WHERE id = ?"

    def _write_parts(self, rec: SliceRecord) -> None:
        """Replace the stored segments and links of ``rec`` (inside the caller's transaction)."""
        self._execute("DELETE FROM segments WHERE slice_id = ?", (rec.id,))
        self._execute("DELETE FROM links WHERE slice_id = ?", (rec.id,))
        self._executemany(
            "INSERT INTO segments VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [
                (
                    rec.id,
                    s.index,
                    s.domain,
                    int(s.local),
                    s.sp_id,
                    self._json(s.request, request_to_dict),
                    s.transit_latency_ms,
                    s.latency_share_ms,
                    s.state.value,
                    s.order_key,
                    s.handle,
                    json.dumps(dict(s.labels)),
                    json.dumps(dict(s.addresses)),
                    self._json(s.detail, _detail_list),
                )
                for s in rec.segments
            ],
        )
        self._executemany(
            "INSERT INTO links VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            [
                (
                    rec.id,
                    ln.a_port,
                    ln.b_port,
                    ln.a_domain,
                    ln.b_domain,
                    ln.label_type.value,
                    ln.label_a,
                    ln.label_b,
                    int(ln.a_can_swap),
                    int(ln.b_can_swap),
                    ln.wim_handle,
                )
                for ln in rec.links
            ],
        )

    def log_tasks(self, slice_id: str, operation: str, entries: Sequence[TaskStatus], at: float) -> None:
        """Record the status of tasks in the schedule log, in one transaction (written before and after they run)."""
        with self._tx():
            self._executemany(
                _UPSERT_TASK, [(slice_id, operation, e.seq, e.name, e.status, e.detail, at) for e in entries]
            )

    def _hold_labels(self, slice_id: str, labels: tuple[LinkLabel, ...]) -> None:
        """Count ``labels`` as the ones ``slice_id`` now takes, in place of those it took before."""
        old = self._held_labels.pop(slice_id, ())
        if old == labels:
            if labels:
                self._held_labels[slice_id] = labels
            return
        self._label_use.subtract(old)
        self._label_use.update(labels)
        for gone in old:
            if self._label_use[gone] <= 0:
                del self._label_use[gone]
        if labels:
            self._held_labels[slice_id] = labels

    def _labels_of_holding(self) -> dict[str, tuple[LinkLabel, ...]]:
        """The labels each holding slice's links take, read from the database."""
        rows = self._execute(
            f"SELECT l.slice_id, l.a_port, l.b_port, l.label_a, l.label_b FROM links l "  # noqa: S608 - only ? marks
            f"JOIN slices s ON s.id = l.slice_id WHERE s.state IN ({_MARKS_HOLDING})",
            _HOLDING,
        ).fetchall()
        by_slice: dict[str, list[LinkLabel]] = {}
        for r in rows:
            key = (min(r["a_port"], r["b_port"]), max(r["a_port"], r["b_port"]))
            taken = by_slice.setdefault(r["slice_id"], [])
            taken.extend((key, int(label)) for label in (r["label_a"], r["label_b"]) if label is not None)
        return {slice_id: tuple(labels) for slice_id, labels in by_slice.items()}

    # --- reads --------------------------------------------------------------------------------

    def get(self, slice_id: str) -> SliceRecord | None:
        """The slice with that id, or None (a slice not ended, from memory when this process is the only writer)."""
        if (kept := self._records.get(slice_id)) is not None:
            return kept
        with self._snapshot():
            row = self._execute("SELECT * FROM slices WHERE id = ?", (slice_id,)).fetchone()
            return self._load(row) if row else None

    def state_of(self, slice_id: str) -> SliceState | None:
        """The stored state of a slice, or None (cheaper than ``get``: one column, nothing decoded)."""
        row = self._execute("SELECT state FROM slices WHERE id = ?", (slice_id,)).fetchone()
        return SliceState(row["state"]) if row else None

    def find_by_request(self, requester: str, request_id: str) -> SliceRecord | None:
        """The slice a requester reserved with that request id, or None."""
        with self._snapshot():
            row = self._execute(
                "SELECT * FROM slices WHERE requester = ? AND request_id = ?", (requester, request_id)
            ).fetchone()
            return self._load(row) if row else None

    def segments_at(self, domain: str) -> dict[str, tuple[SliceState, SliceState]]:
        """Every segment at ``domain`` of a slice that has not ended: order key -> (slice state, segment state).

        One query for what anti-entropy compares a child's holdings with (not one read per slice).
        """
        rows = self._execute(
            "SELECT g.order_key, s.state AS slice_state, g.state AS segment_state FROM segments g "  # noqa: S608
            f"JOIN slices s ON s.id = g.slice_id WHERE g.domain = ? AND s.state NOT IN ({_MARKS_FINAL})",
            (domain, *_FINAL),
        ).fetchall()
        return {r["order_key"]: (SliceState(r["slice_state"]), SliceState(r["segment_state"])) for r in rows}

    def find_by_segment(self, domain: str, handle: str) -> SliceRecord | None:
        """The slice one of whose current segments ``domain`` granted under ``handle``, or None."""
        with self._snapshot():
            row = self._execute(
                "SELECT s.* FROM segments g JOIN slices s ON s.id = g.slice_id WHERE g.domain = ? AND g.handle = ?",
                (domain, handle),
            ).fetchone()
            return self._load(row) if row else None

    def slices(self, states: Iterable[SliceState] = ()) -> list[SliceRecord]:
        """Every slice, or those in ``states``, oldest first."""
        wanted = [s.value for s in states]
        with self._snapshot():
            if wanted:
                marks = ",".join("?" * len(wanted))
                rows = self._execute(
                    f"SELECT * FROM slices WHERE state IN ({marks}) ORDER BY created_at, id",  # noqa: S608 - only ?
                    wanted,
                ).fetchall()
            else:
                rows = self._execute("SELECT * FROM slices ORDER BY created_at, id").fetchall()
            return [self._load(r) for r in rows]

    def page(
        self,
        states: Iterable[SliceState] = (),
        *,
        requester: str | None = None,
        after: tuple[float, str] | None = None,
        limit: int = 500,
    ) -> list[SliceRecord]:
        """Up to ``limit`` slices, oldest first (by creation, then id), after the key ``after``.

        ``requester`` None means everyone's; ``after`` is the (created_at, id) of the last slice of
        the previous page.
        """
        where: list[str] = []
        args: list[object] = []
        wanted = [s.value for s in states]
        if wanted:
            where.append(f"state IN ({','.join('?' * len(wanted))})")
            args.extend(wanted)
        if requester is not None:
            where.append("requester = ?")
            args.append(requester)
        if after is not None:
            where.append("(created_at, id) > (?, ?)")
            args.extend(after)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        with self._snapshot():
            rows = self._execute(
                f"SELECT * FROM slices {clause} ORDER BY created_at, id LIMIT ?",  # noqa: S608 - only ? marks
                [*args, limit],
            ).fetchall()
            return [self._load(r) for r in rows]

    def save_rule(self, slice_id: str, name: str, body: Mapping[str, object]) -> None:
        """Keep a user rule of a slice (replacing the one of that name); it goes with its slice."""
        with self._tx():
            self._execute(
                "INSERT INTO rules (slice_id, name, body) VALUES (?,?,?) "
                "ON CONFLICT (slice_id, name) DO UPDATE SET body = excluded.body",
                (slice_id, name, json.dumps(dict(body), sort_keys=True)),
            )

    def rules(self, slice_id: str) -> list[dict[str, Any]]:
        """The user rules kept for a slice, in the order they were first added."""
        rows = self._execute(
            f"SELECT body FROM rules WHERE slice_id = ? ORDER BY {self.dialect.order}",  # noqa: S608 - a column name
            (slice_id,),
        ).fetchall()
        return [json.loads(r["body"]) for r in rows]

    def drop_rules(self, slice_id: str) -> None:
        """Forget a slice's user rules (it ended)."""
        with self._tx():
            self._execute("DELETE FROM rules WHERE slice_id = ?", (slice_id,))

    def save_order(self, order: OrderRecord) -> None:
        """Insert or update a service order (its key, requester and request id, never changes).

        Another order with the same requester and request id is refused (``StoreConflict``).
        """
        body = json.dumps(
            {
                "hold_only": order.hold_only,
                "hold_time_s": order.hold_time_s,
                "description": order.description,
                "completed_at": order.completed_at,
                "cancelled_at": order.cancelled_at,
                **({"delete_slice": order.delete_slice} if order.delete_slice else {}),
            }
        )
        try:
            with self._tx():
                self._execute(
                    "INSERT INTO orders (id, requester, request_id, created_at, body) VALUES (?,?,?,?,?) "
                    "ON CONFLICT (id) DO UPDATE SET body = excluded.body",
                    (order.id, order.requester, order.request_id, order.created_at, body),
                )
        except self.conflict_errors as exc:  # another order with the same key (another process placed it)
            raise StoreConflict(f"order {order.id}: {exc}".strip()) from exc

    def drop_order(self, order_id: str) -> None:
        """Forget a service order (its Reserve was refused before any slice was recorded)."""
        with self._tx():
            self._execute("DELETE FROM orders WHERE id = ?", (order_id,))

    @staticmethod
    def _order(row: Mapping[str, Any]) -> OrderRecord:
        body = json.loads(row["body"])
        return OrderRecord(
            id=row["id"],
            requester=row["requester"],
            request_id=row["request_id"],
            created_at=row["created_at"],
            hold_only=bool(body.get("hold_only", False)),
            hold_time_s=float(body.get("hold_time_s", 0.0)),
            description=str(body.get("description", "")),
            completed_at=float(body.get("completed_at", 0.0)),
            cancelled_at=float(body.get("cancelled_at", 0.0)),
            delete_slice=str(body.get("delete_slice", "")),
        )

    def order(self, order_id: str) -> OrderRecord | None:
        """The service order with that id, or None."""
        row = self._execute("SELECT * FROM orders WHERE id = ?", (order_id,)).fetchone()
        return self._order(row) if row else None

    def order_by_request(self, requester: str, request_id: str) -> OrderRecord | None:
        """The service order a requester placed with that request id (its externalId), or None."""
        row = self._execute(
            "SELECT * FROM orders WHERE requester = ? AND request_id = ?", (requester, request_id)
        ).fetchone()
        return self._order(row) if row else None

    def orders(self, *, requester: str | None = None, request_id: str = "", limit: int = 500) -> list[OrderRecord]:
        """Up to ``limit`` service orders (of ``requester``, or everyone's for None), newest first."""
        where: list[str] = []
        args: list[object] = []
        if requester is not None:
            where.append("requester = ?")
            args.append(requester)
        if request_id:
            where.append("request_id = ?")
            args.append(request_id)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        order = f"created_at DESC, {self.dialect.order} DESC"
        rows = self._execute(
            f"SELECT * FROM orders {clause} ORDER BY {order} LIMIT ?",  # noqa: S608 - only ? marks and a column name
            [*args, limit],
        ).fetchall()
        return [self._order(r) for r in rows]

    def save_alerts(self, slice_id: str, alerts: Sequence[Mapping[str, object]]) -> None:
        """Keep what fires at this level for a slice now (one body per cause), replacing what was kept."""
        with self._tx():
            self._execute("DELETE FROM alerts WHERE slice_id = ?", (slice_id,))
            rows = [(slice_id, str(a["cause"]), json.dumps(dict(a), sort_keys=True)) for a in alerts]
            if rows:
                self._executemany("INSERT INTO alerts (slice_id, cause, body) VALUES (?,?,?)", rows)

    def alerts(self, slice_id: str) -> list[dict[str, Any]]:
        """The open alerts kept for a slice, by cause."""
        rows = self._execute("SELECT body FROM alerts WHERE slice_id = ? ORDER BY cause", (slice_id,)).fetchall()
        return [json.loads(r["body"]) for r in rows]

    def save_subscription(self, sub_id: str, principal: Mapping[str, object], callback: str, query: str) -> None:
        """Keep a REST hub subscription (whose, as plain data; where to; which events) until it is deleted."""
        with self._tx():
            self._execute(
                "INSERT INTO hub_subscriptions (id, principal, callback, query, created_at) VALUES (?,?,?,?,?) "
                "ON CONFLICT (id) DO UPDATE SET "
                "principal = excluded.principal, callback = excluded.callback, query = excluded.query",
                (sub_id, json.dumps(dict(principal), sort_keys=True), callback, query, time.time()),
            )

    def hub_delivered(self, sub_id: str) -> int:
        """The number of the last event a hub subscription was sent (0: none yet)."""
        row = self._execute("SELECT delivered FROM hub_subscriptions WHERE id = ?", (sub_id,)).fetchone()
        return int(row["delivered"]) if row else 0

    def save_hub_delivered(self, sub_id: str, number: int) -> None:
        """Keep how far a hub subscription was delivered (never moved back)."""
        with self._tx():
            self._execute(
                "UPDATE hub_subscriptions SET delivered = ? WHERE id = ? AND delivered < ?", (number, sub_id, number)
            )

    def drop_subscription(self, sub_id: str) -> None:
        """Forget a hub subscription."""
        with self._tx():
            self._execute("DELETE FROM hub_subscriptions WHERE id = ?", (sub_id,))

    def subscriptions(self) -> list[tuple[str, dict[str, Any], str, str]]:
        """Every kept hub subscription, oldest first: (id, principal, callback, query)."""
        rows = self._execute(
            "SELECT id, principal, callback, query FROM hub_subscriptions ORDER BY created_at, id"
        ).fetchall()
        return [(r["id"], json.loads(r["principal"]), r["callback"], r["query"]) for r in rows]

    # --- a local domain's books (replicas share them) ----------------------------------------

    def offer_edits(self) -> dict[str, tuple[int, str]]:
        """Each local domain's offer as last edited at any replica: domain -> (edit number, policy JSON)."""
        rows = self._execute("SELECT domain, edit, policy FROM offer_edits").fetchall()
        return {r["domain"]: (int(r["edit"]), r["policy"]) for r in rows}

    def save_offer_edit(self, domain: str, policy: str, at: float) -> int:
        """Keep ``domain``'s edited offer for every replica; its edit number (one more than the last)."""
        with self._tx():
            self._execute(
                "INSERT INTO offer_edits VALUES (?, 1, ?, ?) ON CONFLICT (domain) DO UPDATE SET "
                "edit = offer_edits.edit + 1, policy = excluded.policy, edited_at = excluded.edited_at",
                (domain, policy, at),
            )
            row = self._execute("SELECT edit FROM offer_edits WHERE domain = ?", (domain,)).fetchone()
            return int(row["edit"])

    def books_version(self, domain: str) -> int:
        """How many times ``domain``'s books changed (0: never written)."""
        row = self._execute("SELECT version FROM domain_books WHERE domain = ?", (domain,)).fetchone()
        return int(row["version"]) if row else 0

    def book_entries(self, domain: str) -> tuple[int, list[tuple[str, str, SliceState]]]:
        """The books' version and every segment held in ``domain``: (order key, handle, state), by key."""
        with self._snapshot():
            version = self.books_version(domain)
            rows = self._execute(
                "SELECT order_key, handle, state FROM domain_holdings WHERE domain = ? ORDER BY order_key", (domain,)
            ).fetchall()
        return version, [(r["order_key"], r["handle"], SliceState(r["state"])) for r in rows]

    def book_put(self, domain: str, key: str, handle: str, state: SliceState) -> int:
        """Hold (or move) the segment ``key`` in ``domain``'s books; the books' new version."""
        with self._tx():
            self._execute(
                "INSERT INTO domain_holdings VALUES (?,?,?,?) ON CONFLICT (domain, order_key) DO UPDATE SET "
                "handle = excluded.handle, state = excluded.state",
                (domain, key, handle, state.value),
            )
            return self._bump_books(domain)

    def book_drop(self, domain: str, key: str) -> int:
        """Release the segment ``key`` from ``domain``'s books; the books' new version."""
        with self._tx():
            self._execute("DELETE FROM domain_holdings WHERE domain = ? AND order_key = ?", (domain, key))
            return self._bump_books(domain)

    def _bump_books(self, domain: str) -> int:
        self._execute(
            "INSERT INTO domain_books VALUES (?, 1) "
            "ON CONFLICT (domain) DO UPDATE SET version = domain_books.version + 1",
            (domain,),
        )
        return self.books_version(domain)

    def append_events(self, events: Sequence[tuple[str, str, str, str, str]], *, keep: int) -> list[int]:
        """Number and keep events (key, requester, slice id, body, body as seen from above); their numbers.

        An event whose key is kept already (another replica wrote it first) keeps its number. All
        but about the newest ``keep`` are dropped.
        """
        numbers: list[int] = []
        with self._tx():
            # Numbered in the order the appends commit: a reader that got number n never sees a smaller one later.
            self._lock_events()
            for event in events:
                self._execute(
                    "INSERT INTO events (event_key, requester, slice_id, body, above) VALUES (?,?,?,?,?) "
                    "ON CONFLICT (event_key) DO NOTHING",
                    event,
                )
                row = self._execute("SELECT seq FROM events WHERE event_key = ?", (event[0],)).fetchone()
                numbers.append(int(row["seq"]))
            if numbers:
                self._execute("DELETE FROM events WHERE seq <= ?", (max(numbers) - keep,))
        return numbers

    def events_after(
        self, seq: int, *, requester: str | None, limit: int, slice_id: str = ""
    ) -> list[tuple[int, str, str]]:
        """The kept events numbered after ``seq`` (of ``requester``'s slices, None: all; of one slice if
        given), oldest first: (number, body, body as seen from above or '')."""
        where, args = ("seq > ?", [seq]) if requester is None else ("requester = ? AND seq > ?", [requester, seq])
        if slice_id:
            where, args = f"{where} AND slice_id = ?", [*args, slice_id]
        rows = self._execute(
            f"SELECT seq, body, above FROM events WHERE {where} ORDER BY seq LIMIT ?",  # noqa: S608 - only ? marks
            [*args, limit],
        ).fetchall()
        return [(int(r["seq"]), r["body"], r["above"]) for r in rows]

    def event_bounds(self) -> tuple[int, int]:
        """The numbers of the oldest and the newest kept event; (0, 0) when none is kept."""
        row = self._execute("SELECT MIN(seq) AS lo, MAX(seq) AS hi FROM events").fetchone()
        return int(row["lo"] or 0), int(row["hi"] or 0)

    def prune_failed(self, *, before: float, keep: int) -> int:
        """Delete FAILED slices last changed before ``before``, and all but the newest ``keep``; returns how many.

        Only those that hold nothing (every segment released, no stitched link): the bound on what
        a caller's failing requests can make the store keep, never a lost holding.
        """
        failed = SliceState.FAILED.value
        with self._tx():
            # Only records that hold nothing anywhere: no segment still live, no stitched link. A FAILED
            # slice whose release failed ("retry Terminate") is kept until it is terminated.
            ids = [
                row["id"]
                for row in self._execute(
                    "SELECT id FROM slices s WHERE state = ? AND (updated_at < ? OR id NOT IN "
                    "(SELECT id FROM slices WHERE state = ? ORDER BY updated_at DESC, id DESC LIMIT ?)) "
                    "AND NOT EXISTS (SELECT 1 FROM segments g WHERE g.slice_id = s.id AND g.state NOT IN (?, ?, ?)) "
                    "AND NOT EXISTS (SELECT 1 FROM links k WHERE k.slice_id = s.id AND k.wim_handle != '')",
                    (failed, before, failed, keep, *_RELEASED),
                ).fetchall()
            ]
            for slice_id in ids:  # segments, links and rules go with their slice (ON DELETE CASCADE)
                self._execute("DELETE FROM tasks WHERE slice_id = ?", (slice_id,))
                # A service order goes with the failed slice it placed (the same retention).
                self._execute(
                    "DELETE FROM orders WHERE EXISTS (SELECT 1 FROM slices s WHERE s.id = ? "
                    "AND s.requester = orders.requester AND s.request_id = orders.request_id)",
                    (slice_id,),
                )
                self._execute("DELETE FROM slices WHERE id = ?", (slice_id,))
                self._parts.pop(slice_id, None)
                self._records.pop(slice_id, None)
        return len(ids)

    def holding(self) -> list[SliceRecord]:
        """Slices in a state that holds resources."""
        return self.slices(HOLDING_STATES)

    def count_holding(self) -> int:
        """How many slices are in a state that holds resources."""
        row = self._execute(
            f"SELECT COUNT(*) AS n FROM slices WHERE state IN ({_MARKS_HOLDING})",  # noqa: S608 - only ? marks
            _HOLDING,
        ).fetchone()
        return int(row["n"])

    def local_holdings(self) -> list[tuple[str, str, SliceState]]:
        """(domain, handle, segment state) of each live local segment of a holding slice, oldest slice first.

        What a restart re-applies to the local domains; read without decoding whole slices.
        """
        final = ",".join("?" * len(FINAL_STATES))
        rows = self._execute(
            "SELECT g.domain, g.handle, g.state FROM segments g JOIN slices s ON s.id = g.slice_id "  # noqa: S608
            f"WHERE s.state IN ({_MARKS_HOLDING}) AND g.local = 1 AND g.handle != '' AND g.state NOT IN ({final}) "
            "ORDER BY s.created_at, s.id, g.idx",
            [*_HOLDING, *(x.value for x in FINAL_STATES)],
        ).fetchall()
        return [(r["domain"], r["handle"], SliceState(r["state"])) for r in rows]

    def in_service_local(self) -> set[tuple[str, str]]:
        """(domain, handle) of each local segment in service (ACTIVE) in a slice that is in service."""
        active = SliceState.ACTIVE.value
        rows = self._execute(
            "SELECT g.domain, g.handle FROM segments g JOIN slices s ON s.id = g.slice_id "
            "WHERE s.state = ? AND g.local = 1 AND g.handle != '' AND g.state = ?",
            (active, active),
        ).fetchall()
        return {(r["domain"], r["handle"]) for r in rows}

    def wim_handles(self) -> list[str]:
        """WIM handles of the stitched links of holding slices."""
        rows = self._execute(
            "SELECT l.wim_handle FROM links l JOIN slices s ON s.id = l.slice_id "  # noqa: S608
            f"WHERE s.state IN ({_MARKS_HOLDING}) AND l.wim_handle != '' ORDER BY s.created_at, s.id",
            _HOLDING,
        ).fetchall()
        return [r["wim_handle"] for r in rows]

    def expired_holds(self, now: float) -> list[str]:
        """Ids of held slices whose hold time has passed."""
        rows = self._execute(
            "SELECT id FROM slices WHERE state = ? AND hold_expires_at <= ?", (SliceState.HELD.value, now)
        ).fetchall()
        return [r["id"] for r in rows]

    def next_hold_expiry(self) -> float | None:
        """The earliest hold expiry among held slices."""
        row = self._execute(
            "SELECT MIN(hold_expires_at) AS t FROM slices WHERE state = ?", (SliceState.HELD.value,)
        ).fetchone()
        return float(row["t"]) if row and row["t"] is not None else None

    def used_link_labels(self) -> dict[tuple[str, str], set[int]]:
        """Labels taken on each inter-child link by slices that hold resources (see the module on where from)."""
        used: dict[tuple[str, str], set[int]] = {}
        if self._single:
            taken: Iterable[LinkLabel] = self._label_use
        else:
            taken = (label for labels in self._labels_of_holding().values() for label in labels)
        for key, label in taken:
            used.setdefault(key, set()).add(label)
        return used

    def tasks(self, slice_id: str) -> list[dict[str, Any]]:
        """The task log of a slice."""
        rows = self._execute("SELECT * FROM tasks WHERE slice_id = ? ORDER BY updated_at, seq", (slice_id,)).fetchall()
        return [dict(r) for r in rows]

    def _load(self, row: Mapping[str, Any]) -> SliceRecord:
        sid = row["id"]
        segs = self._execute("SELECT * FROM segments WHERE slice_id = ? ORDER BY idx", (sid,)).fetchall()
        links = self._execute(
            f"SELECT * FROM links WHERE slice_id = ? ORDER BY {self.dialect.order}",  # noqa: S608 - a column name
            (sid,),
        ).fetchall()
        return SliceRecord(
            id=sid,
            requester=row["requester"],
            request_id=row["request_id"],
            request_hash=row["request_hash"],
            request=request_from_dict(json.loads(row["request"])),
            hold_time_s=row["hold_time_s"],
            state=SliceState(row["state"]),
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            hold_expires_at=row["hold_expires_at"],
            reason=row["reason"],
            error_code=row["error_code"],
            labels=json.loads(row["labels"]),
            addresses=json.loads(row["addresses"]),
            settle_to=SliceState(row["settle_to"]) if row["settle_to"] else None,
            deadline_at=row["deadline_at"],
            then=Then(row["order_then"]),
            segments=tuple(
                SegmentRecord(
                    index=s["idx"],
                    domain=s["domain"],
                    local=bool(s["local"]),
                    sp_id=s["sp_id"],
                    request=request_from_dict(json.loads(s["request"])),
                    transit_latency_ms=s["transit_latency_ms"],
                    latency_share_ms=s["latency_share_ms"],
                    state=SliceState(s["state"]),
                    order_key=s["order_key"],
                    handle=s["handle"],
                    labels=json.loads(s["labels"]),
                    addresses=json.loads(s["addresses"]),
                    detail=tuple(json.loads(s["detail"])),
                )
                for s in segs
            ),
            links=tuple(
                LinkRecord(
                    a_port=TerminalId(ln["a_port"]),
                    b_port=TerminalId(ln["b_port"]),
                    a_domain=ln["a_domain"],
                    b_domain=ln["b_domain"],
                    label_type=LabelType(ln["label_type"]),
                    label_a=ln["label_a"],
                    label_b=ln["label_b"],
                    a_can_swap=bool(ln["a_can_swap"]),
                    b_can_swap=bool(ln["b_can_swap"]),
                    wim_handle=ln["wim_handle"],
                )
                for ln in links
            ),
        )


def _detail_list(detail: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [dict(d) for d in detail]


__all__ = ["LinkLabel", "SqlStore", "statements"]

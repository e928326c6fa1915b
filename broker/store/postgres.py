"""The SP's state on PostgreSQL (``store: {backend: postgresql, dsn: ...}``), with psycopg 3.

The same queries as the SQLite store (``broker/store/sql.py``) and the same schema migrations
(applied under an advisory lock, so brokers starting together migrate once). A broker alone on its
database keeps in memory what the SQLite store keeps; replicas ask the database each time.

Without ``replicas`` (``exclusive``), one broker process per database: a second one is refused at
start (a session advisory lock, released by PostgreSQL when the holder's connection ends, a ``kill -9``
included). With it, the processes share locks on slices and request ids (advisory locks of two keys),
and each state change is NOTIFYed in its writing transaction, so every replica's watchers hear it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import psycopg
from psycopg import errors
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

from broker.core.records import SliceRecord
from broker.core.storage import StoreConflict
from broker.store.schema import POSTGRESQL
from broker.store.sql import SqlStore
from slicing.errors import Unavailable
from slicing.model import SliceState

log = logging.getLogger("broker.store")

#: Advisory lock keys (any 64-bit numbers, fixed): migrating the schema, and being the one broker.
_SCHEMA_LOCK = 0x6662_7363_6865_6D61  # "fbschema"
_BROKER_LOCK = 0x6662_6272_6F6B_6572  # "fbbroker"
_EVENTS_LOCK = 0x6662_6576_656E_7473  # "fbevents"
#: The first of the two keys of every lock on a slice or request id ("fb").
_KEY_LOCKS = 0x6662
#: Where replicas tell each other of the state changes they write.
CHANGES_CHANNEL = "fedbroker_slices"
#: A connection attempt to a database that does not answer gives up after this many seconds.
CONNECT_TIMEOUT_S = 10


class StoreUnavailable(RuntimeError):
    """The database could not be reached or would not let this broker in."""


def describe(dsn: str) -> str:
    """The DSN without its password, fit for a log line or an error."""
    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "the configured PostgreSQL database (its dsn does not parse)"
    parts.pop("password", None)
    shown = " ".join(f"{k}={v}" for k, v in sorted(parts.items()))
    return f"PostgreSQL database '{shown}'"


def _translated(sql: str) -> str:
    """``?`` marks as psycopg's ``%s`` (the queries hold no other ``?`` nor any ``%``)."""
    return sql.replace("?", "%s")


class PostgresStore(SqlStore):
    """Slices and everything under them, in one PostgreSQL database."""

    dialect = POSTGRESQL
    conflict_errors = (errors.IntegrityError,)

    def __init__(self, dsn: str, *, owner: str | None = None, exclusive: bool = True) -> None:
        self._where = describe(dsn)
        self._dsn = dsn
        self._exclusive = exclusive
        self._lock = threading.RLock()  # one connection: one statement at a time, whichever thread
        self._sql: dict[str, str] = {}
        self._db = self._connect()
        try:
            # The only broker on its database (exclusive) is its only writer: it may keep what it wrote.
            super().__init__(single_writer=exclusive, owner=owner, where=self._where)
        except BaseException:
            self._db.close()
            raise

    def _connect(self) -> psycopg.Connection[dict[str, Any]]:
        """A new connection, holding the one-broker lock when ``exclusive``; StoreUnavailable when it cannot."""
        try:
            db = psycopg.connect(self._dsn, autocommit=True, row_factory=dict_row, connect_timeout=CONNECT_TIMEOUT_S)
        except psycopg.OperationalError as exc:
            detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise StoreUnavailable(f"cannot reach the {self._where}: {detail}") from None
        if self._exclusive:
            row = db.execute("SELECT pg_try_advisory_lock(%s) AS got", (_BROKER_LOCK,)).fetchone()
            if not row or not row["got"]:
                db.close()
                raise StoreUnavailable(
                    f"another broker holds the {self._where}: one broker process per database "
                    "(replicas of one SP sharing a database are not supported yet); stop it, or give this "
                    "broker a database of its own"
                )
        return db

    def _usable(self) -> psycopg.Connection[dict[str, Any]]:
        """The connection, made again after it was lost (the database restarted, the network cut)."""
        if self._db.closed or self._db.broken:
            try:
                self._db = self._connect()
            except StoreUnavailable as exc:
                raise Unavailable(f"store: {exc}") from None
            log.warning("store: connected again to the %s", self._where)
        return self._db

    def _lost(self, exc: psycopg.OperationalError) -> Unavailable:
        """The error a call gets when the database stopped answering in the middle of it."""
        detail = " ".join(str(exc).split())[:300] or type(exc).__name__
        if not self._db.closed:  # told once, not again by the transaction that ends with it
            log.error("store: lost the %s (%s); reconnecting at the next call", self._where, detail)
            self._db.close()
        return Unavailable(f"store: lost the {self._where} ({detail}); the broker reconnects at its next call")

    def _text(self, sql: str) -> str:
        text = self._sql.get(sql)
        if text is None:
            text = self._sql[sql] = _translated(sql)
        return text

    def _execute(self, sql: str, args: Sequence[object] = ()) -> Any:
        text = self._text(sql)
        with self._lock:
            try:
                return self._usable().execute(text, args)
            except psycopg.OperationalError as exc:
                raise self._lost(exc) from None

    def _executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        if not rows:
            return
        with self._lock:
            try:
                with self._usable().cursor() as cur:
                    cur.executemany(self._text(sql), rows)
            except psycopg.OperationalError as exc:
                raise self._lost(exc) from None

    @contextmanager
    def _block(self, *, read_only: bool) -> Iterator[None]:
        with self._lock:
            db = self._usable()
            if db.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                if read_only:
                    yield  # a read within a write: it sees the write's snapshot
                    return
                try:
                    with db.transaction():  # a write within a batch: a savepoint, taken back alone if it fails
                        yield
                except psycopg.OperationalError as exc:
                    raise self._lost(exc) from None
                return
            try:
                with db.transaction():
                    if read_only:
                        db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    yield
            except psycopg.OperationalError as exc:
                raise self._lost(exc) from None

    def _tx(self) -> AbstractContextManager[None]:
        return self._block(read_only=False)

    def _snapshot(self) -> AbstractContextManager[None]:
        if self._exclusive:  # no other writer, and no await between the reads: they see one state
            return nullcontext()
        return self._block(read_only=True)

    # Locks on keys (slices, request ids), seen by every process on the database: PostgreSQL's
    # advisory locks of two 32-bit keys (a key space apart from the one-key locks above), held by
    # this process's session until given back or until its connection ends (a kill -9 included). A
    # store that is the only broker on its database (``exclusive``) has no one to exclude.

    def try_lock(self, key: str) -> bool:
        if self._exclusive:
            return True
        row = self._execute("SELECT pg_try_advisory_lock(?, hashtext(?)) AS got", (_KEY_LOCKS, key)).fetchone()
        return bool(row and row["got"])

    def unlock(self, key: str) -> None:
        if not self._exclusive and not self._db.closed:
            self._execute("SELECT pg_advisory_unlock(?, hashtext(?))", (_KEY_LOCKS, key))

    def locked_elsewhere(self, key: str) -> bool:
        if self._exclusive:
            return False
        row = self._execute(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2 "
            "AND classid = ?::oid AND objid = (hashtext(?)::bigint & 4294967295)::oid "
            "AND pid <> pg_backend_pid()) AS held",
            (_KEY_LOCKS, key),
        ).fetchone()
        return bool(row and row["held"])

    # State changes, told to the other replicas: a NOTIFY in the writing transaction (delivered when it
    # commits, never for a rolled-back one), heard on a connection of its own by every other process.

    def _changed(self, rec: SliceRecord) -> None:
        if self._exclusive:
            return
        payload = json.dumps({"id": rec.id, "state": rec.state.value, "at": rec.updated_at, "detail": rec.reason[:500]})
        self._execute("SELECT pg_notify(?, ?)", (CHANGES_CHANNEL, payload))

    async def follow_changes(self, on_change: Callable[[str, SliceState, float, str], None]) -> None:
        if self._exclusive:
            return
        pause = 0.1
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
                ) as conn:
                    await conn.execute(f"LISTEN {CHANGES_CHANNEL}")
                    pause = 0.1
                    async for note in conn.notifies():
                        if note.pid == self._db.info.backend_pid:
                            continue  # this process's own write: already told here
                        try:
                            change = json.loads(note.payload)
                            on_change(change["id"], SliceState(change["state"]), float(change["at"]), change["detail"])
                        except (ValueError, KeyError, TypeError) as exc:
                            log.warning("store: a change notice that does not parse (%s): %.200s", exc, note.payload)
            except psycopg.OperationalError as exc:
                log.warning("store: stopped hearing the other replicas' changes (%s); listening again", exc)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 5.0)

    def _select_state_for_update(self) -> str:
        return "SELECT state FROM slices WHERE id = ? FOR UPDATE"

    def _lock_events(self) -> None:
        if not self._exclusive:  # replicas append too: one at a time, so numbers follow commits
            self._execute("SELECT pg_advisory_xact_lock(?)", (_EVENTS_LOCK,))

    def _lock_schema(self) -> None:
        self._execute("SELECT pg_advisory_xact_lock(?)", (_SCHEMA_LOCK,))

    def close(self) -> None:
        """Close the connection (its advisory locks go with it)."""
        self._db.close()


__all__ = ["CONNECT_TIMEOUT_S", "PostgresStore", "StoreConflict", "StoreUnavailable", "describe"]

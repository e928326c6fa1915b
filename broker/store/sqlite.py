"""The broker's embedded state: slices, their sub-requests (segments), stitched links, task log.

SQLite in WAL mode in the SP's data directory, the default store. Every write is one transaction, so
a ``kill -9`` leaves either the old or the new state of a slice, never half of it. The queries are
``broker/store/sql.py``'s; the broker is the only writer of its file, so the store keeps the labels
of holding slices and what each slice last wrote in memory (see there).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from broker.store.schema import SQLITE
from broker.store.sql import SqlStore


class SqliteStore(SqlStore):
    """Slices and everything under them, in one SQLite file."""

    dialect = SQLITE
    conflict_errors = (sqlite3.IntegrityError,)

    def __init__(self, path: Path, *, owner: str | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        super().__init__(single_writer=True, owner=owner, where=str(path))

    def _execute(self, sql: str, args: Sequence[object] = ()) -> Any:
        return self._db.execute(sql, args)

    def _executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        self._db.executemany(sql, rows)

    @contextmanager
    def _write(self) -> Iterator[None]:
        if self._db.in_transaction:  # inside a batch: a savepoint, so a write that fails takes back only itself
            self._db.execute("SAVEPOINT w")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK TO w")
                self._db.execute("RELEASE w")
                raise
            self._db.execute("RELEASE w")
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _tx(self) -> AbstractContextManager[None]:
        return self._write()

    def _snapshot(self) -> AbstractContextManager[None]:
        # The only writer, on one connection: between two statements of a read nothing else writes.
        return nullcontext()

    def _legacy(self) -> None:
        """A file from before ``schema_version``: add the columns its ``slices`` lacks, then it is version 1."""
        columns = {r["name"] for r in self._db.execute("PRAGMA table_info(slices)").fetchall()}
        if not columns:
            return  # a new file
        if "settle_to" not in columns:  # added with the reconciler: where an in-flight release ends
            self._db.execute("ALTER TABLE slices ADD COLUMN settle_to TEXT NOT NULL DEFAULT ''")
        if "deadline_at" not in columns:  # added with the activation deadline
            self._db.execute("ALTER TABLE slices ADD COLUMN deadline_at REAL NOT NULL DEFAULT 0")

    def close(self) -> None:
        """Close the database."""
        self._db.close()


__all__ = ["SqliteStore"]

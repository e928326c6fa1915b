"""The store port's implementations: SQLite (embedded, the default) and PostgreSQL, on one set of queries."""

from __future__ import annotations

from pathlib import Path

from broker.core.storage import StoreConflict
from broker.store.schema import SchemaTooNew
from broker.store.sql import SqlStore
from slicing.errors import FailedPrecondition, Unavailable


def open_store(
    backend: str, *, path: Path, dsn: str = "", owner: str | None = None, replicas: bool = False
) -> SqlStore:
    """The SP's store: ``state.db`` at ``path`` for ``sqlite``, the database at ``dsn`` for ``postgresql``.

    ``replicas``: other broker processes of the SP share the PostgreSQL database (else a second one
    is refused at start).

    A start that cannot use its store fails with what to do: ``Unavailable`` when the database does
    not answer or another broker holds it, ``FailedPrecondition`` when it belongs to another SP or
    to a newer broker. The PostgreSQL driver is imported only when it is the backend.
    """
    try:
        if backend == "postgresql":
            from broker.store.postgres import PostgresStore, StoreUnavailable

            try:
                return PostgresStore(dsn, owner=owner, exclusive=not replicas)
            except StoreUnavailable as exc:
                raise Unavailable(f"store: {exc}", field="store.dsn") from None
        from broker.store.sqlite import SqliteStore

        return SqliteStore(path, owner=owner)
    except (StoreConflict, SchemaTooNew) as exc:
        raise FailedPrecondition(f"store: {exc}", field="store") from None


__all__ = ["open_store"]

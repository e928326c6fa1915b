"""The ``Ledger`` port (``domain_agents.ledger``) over the SP's store, for replicas sharing local domains."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

from broker.core.manager_base import KeyLock
from broker.core.storage import SliceStore
from domain_agents.ledger import Entry
from slicing.model import SliceState


class StoreLedger:
    """Local domains' books in the shared store, each domain's changes under a lock every replica sees."""

    def __init__(self, store: SliceStore) -> None:
        self._store = store
        self._locks: dict[str, KeyLock] = {}

    def guard(self, domain: str) -> AbstractAsyncContextManager[None]:
        lock = self._locks.get(domain)
        if lock is None:  # one per domain, kept: an SP has a handful of domains
            lock = self._locks[domain] = KeyLock(f"books:{domain}", self._store, lambda _key, _lock: None)
        return lock

    def version(self, domain: str) -> int:
        return self._store.books_version(domain)

    def entries(self, domain: str) -> tuple[int, list[Entry]]:
        return self._store.book_entries(domain)

    def put(self, domain: str, key: str, handle: str, state: SliceState) -> int:
        return self._store.book_put(domain, key, handle, state)

    def drop(self, domain: str, key: str) -> int:
        return self._store.book_drop(domain, key)


__all__ = ["StoreLedger"]

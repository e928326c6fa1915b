"""Where a local domain keeps its books when several broker processes run the same SP (replicas).

An agent on its own keeps its books in memory and rebuilds them from the handles its broker kept
after a restart. Replicas of one SP must agree on them (no label or unit of bandwidth sold twice by
two processes), so each change goes through a ``Ledger``, the port the broker implements over its
shared store: ``guard`` is held across read-modify-write (a lock every replica sees), ``entries``
are the books as the database has them, and ``put``/``drop`` write one segment. Every change moves
the books' version on; an agent whose last-seen version differs reads the books again first.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Protocol

from slicing.model import SliceState

#: One held segment: (order key, handle, state).
Entry = tuple[str, str, SliceState]


class Ledger(Protocol):
    """A local domain's books in a store shared by the SP's replicas."""

    def guard(self, domain: str) -> AbstractAsyncContextManager[None]:
        """Held while one change is read, decided and written; every replica waits for it."""
        ...

    def version(self, domain: str) -> int:
        """How many times the books changed (0: never)."""
        ...

    def entries(self, domain: str) -> tuple[int, list[Entry]]:
        """The books' version and every segment held, as one read."""
        ...

    def put(self, domain: str, key: str, handle: str, state: SliceState) -> int:
        """Hold or move one segment; the books' new version."""
        ...

    def drop(self, domain: str, key: str) -> int:
        """Release one segment; the books' new version."""
        ...


__all__ = ["Entry", "Ledger"]

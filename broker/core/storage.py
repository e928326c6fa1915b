"""The store port: what the broker core needs from wherever it keeps its slices (``broker.store`` implements it).

``broker.store`` implements it twice, on one set of queries (``broker/store/sql.py``):
``SqliteStore`` (one SQLite file, the embedded default) and ``PostgresStore`` (``store: {backend:
postgresql, dsn: ...}``). Every write of one slice (its row, segments, links, held labels) is
atomic; reads never see half a write.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from broker.core.records import OrderRecord, SliceRecord
from broker.core.workflow import TaskStatus
from slicing.model import SliceState


class StoreConflict(Exception):
    """A write the database refused: a request id its requester already used, a database of another SP."""


class SliceStore(Protocol):
    """Slices with their segments, links and task logs, and the narrow queries recovery and planning need."""

    def batch(self) -> AbstractContextManager[None]:
        """The writes inside as one transaction: all committed at its end, none if it raises (no await inside)."""
        ...

    def save(self, rec: SliceRecord) -> SliceState | None:
        """Insert or replace a slice with its segments and links atomically; return the state it had (or None)."""
        ...

    def log_tasks(self, slice_id: str, operation: str, entries: Sequence[TaskStatus], at: float) -> None:
        """Record the status of an operation's tasks (one transaction per call)."""
        ...

    def get(self, slice_id: str) -> SliceRecord | None:
        """The slice with that id, or None."""
        ...

    def state_of(self, slice_id: str) -> SliceState | None:
        """The stored state of a slice, or None."""
        ...

    def find_by_request(self, requester: str, request_id: str) -> SliceRecord | None:
        """The slice a requester reserved with that request id, or None."""
        ...

    def find_by_segment(self, domain: str, handle: str) -> SliceRecord | None:
        """The slice one of whose current segments ``domain`` granted under ``handle``, or None."""
        ...

    def slices(self, states: Iterable[SliceState] = ()) -> list[SliceRecord]:
        """Every slice, or those in ``states``, oldest first."""
        ...

    def page(
        self,
        states: Iterable[SliceState] = (),
        *,
        requester: str | None = None,
        after: tuple[float, str] | None = None,
        limit: int = 500,
    ) -> list[SliceRecord]:
        """Up to ``limit`` slices (of ``requester``, or everyone's for None), oldest first after the key
        ``after`` = (created_at, id) of the previous page's last slice."""
        ...

    def prune_failed(self, *, before: float, keep: int) -> int:
        """Delete FAILED slices last changed before ``before``, and all but the newest ``keep``; how many."""
        ...

    def count_holding(self) -> int:
        """How many slices are in a state that holds resources."""
        ...

    def local_holdings(self) -> list[tuple[str, str, SliceState]]:
        """(domain, handle, segment state) of each live local segment of a holding slice, oldest first."""
        ...

    def in_service_local(self) -> set[tuple[str, str]]:
        """(domain, handle) of each local segment in service (ACTIVE) in a slice that is in service."""
        ...

    def wim_handles(self) -> list[str]:
        """WIM handles of the stitched links of holding slices."""
        ...

    def expired_holds(self, now: float) -> list[str]:
        """Ids of held slices whose hold time has passed."""
        ...

    def next_hold_expiry(self) -> float | None:
        """The earliest hold expiry among held slices."""
        ...

    def used_link_labels(self) -> dict[tuple[str, str], set[int]]:
        """Labels taken on each inter-child link by slices that hold resources."""
        ...

    def tasks(self, slice_id: str) -> list[dict[str, Any]]:
        """The task log of a slice."""
        ...

    def hub_delivered(self, sub_id: str) -> int:
        """The number of the last event a REST hub subscription was sent (0: none yet)."""
        ...

    def save_hub_delivered(self, sub_id: str, number: int) -> None:
        """Keep how far a REST hub subscription was delivered."""
        ...

    def offer_edits(self) -> dict[str, tuple[int, str]]:
        """Each local domain's offer as an operator last edited it at any replica: (edit number, policy JSON)."""
        ...

    def save_offer_edit(self, domain: str, policy: str, at: float) -> int:
        """Keep a local domain's edited offer (its authoring form, JSON) for every replica; its edit number."""
        ...

    def segments_at(self, domain: str) -> dict[str, tuple[SliceState, SliceState]]:
        """Each segment at ``domain`` of a slice not yet ended: order key -> (slice state, segment state)."""
        ...

    def books_version(self, domain: str) -> int:
        """How many times a local domain's shared books changed (0: never written)."""
        ...

    def book_entries(self, domain: str) -> tuple[int, list[tuple[str, str, SliceState]]]:
        """A local domain's books: their version and each held segment's (order key, handle, state)."""
        ...

    def book_put(self, domain: str, key: str, handle: str, state: SliceState) -> int:
        """Hold or move a segment in a local domain's books; their new version."""
        ...

    def book_drop(self, domain: str, key: str) -> int:
        """Release a segment from a local domain's books; their new version."""
        ...

    def save_rule(self, slice_id: str, name: str, body: Mapping[str, object]) -> None:
        """Keep a user rule of a slice (as plain data, replacing the one of that name); it goes with its slice."""
        ...

    def rules(self, slice_id: str) -> list[dict[str, Any]]:
        """The user rules kept for a slice, oldest first."""
        ...

    def drop_rules(self, slice_id: str) -> None:
        """Forget a slice's user rules."""
        ...

    def save_order(self, order: OrderRecord) -> None:
        """Insert or update a service order."""
        ...

    def drop_order(self, order_id: str) -> None:
        """Forget a service order."""
        ...

    def order(self, order_id: str) -> OrderRecord | None:
        """The service order with that id, or None."""
        ...

    def order_by_request(self, requester: str, request_id: str) -> OrderRecord | None:
        """The service order a requester placed with that request id, or None."""
        ...

    def orders(self, *, requester: str | None = None, request_id: str = "", limit: int = 500) -> list[OrderRecord]:
        """Up to ``limit`` service orders (of ``requester``, or everyone's for None), newest first."""
        ...

    def try_lock(self, key: str) -> bool:
        """Take the lock on ``key`` that every broker process sharing this store sees, unless another holds it.

        A store only one process uses has no one else to exclude: always True (the process's own
        asyncio lock orders its operations).
        """
        ...

    def unlock(self, key: str) -> None:
        """Give back a lock ``try_lock`` took."""
        ...

    def locked_elsewhere(self, key: str) -> bool:
        """Whether another broker process sharing this store holds the lock on ``key`` now."""
        ...

    def save_alerts(self, slice_id: str, alerts: Sequence[Mapping[str, object]]) -> None:
        """Keep the alerts open at this level for a slice (plain data, one per cause), replacing those kept."""
        ...

    def alerts(self, slice_id: str) -> list[dict[str, Any]]:
        """The open alerts kept for a slice."""
        ...

    def save_subscription(self, sub_id: str, principal: Mapping[str, object], callback: str, query: str) -> None:
        """Keep a REST hub subscription until it is deleted."""
        ...

    def drop_subscription(self, sub_id: str) -> None:
        """Forget a hub subscription."""
        ...

    def subscriptions(self) -> list[tuple[str, dict[str, Any], str, str]]:
        """Every kept hub subscription, oldest first: (id, principal, callback, query)."""
        ...

    def append_events(self, events: Sequence[tuple[str, str, str, str, str]], *, keep: int) -> list[int]:
        """Number and keep events (key, requester, slice id, body, body seen from above); keep about ``keep``."""
        ...

    def events_after(
        self, seq: int, *, requester: str | None, limit: int, slice_id: str = ""
    ) -> list[tuple[int, str, str]]:
        """Kept events numbered after ``seq`` (of ``requester``'s slices, None: all; of one slice if given)."""
        ...

    def event_bounds(self) -> tuple[int, int]:
        """The numbers of the oldest and newest kept event; (0, 0) when none is kept."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...


__all__ = ["SliceStore", "StoreConflict"]

"""The store's schema, as numbered migrations for each backend, applied in order when a store opens.

``schema_version`` holds one row per migration applied (its number and when). A store opening a
database applies the migrations it has not seen, each in a transaction of its own; a database at a
version newer than this code knows is refused (an older broker must not write a newer schema).

SQLite files written before the schema was versioned (no ``schema_version`` table, but ``slices``)
are brought up by the column checks they used to run, then counted as version 1.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The schema, written once for both backends; ``{real}`` and ``{int}`` become each backend's types
#: (PostgreSQL's ``real`` is single precision: timestamps need double), and ``{pos}`` the column that
#: keeps the order links and rules were written in (SQLite has its rowid; PostgreSQL has no order).
_BASE = """
CREATE TABLE IF NOT EXISTS slices (
    id TEXT PRIMARY KEY,
    requester TEXT NOT NULL,
    request_id TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    request TEXT NOT NULL,
    hold_time_s {real} NOT NULL,
    state TEXT NOT NULL,
    created_at {real} NOT NULL,
    updated_at {real} NOT NULL,
    hold_expires_at {real} NOT NULL,
    reason TEXT NOT NULL,
    error_code TEXT NOT NULL,
    labels TEXT NOT NULL,
    addresses TEXT NOT NULL,
    settle_to TEXT NOT NULL DEFAULT '',
    deadline_at {real} NOT NULL DEFAULT 0,
    UNIQUE (requester, request_id)
);
CREATE INDEX IF NOT EXISTS slices_state ON slices (state, hold_expires_at);
CREATE INDEX IF NOT EXISTS slices_created ON slices (created_at, id);
CREATE INDEX IF NOT EXISTS slices_failed ON slices (state, updated_at);
CREATE TABLE IF NOT EXISTS segments (
    slice_id TEXT NOT NULL REFERENCES slices (id) ON DELETE CASCADE,
    idx {int} NOT NULL,
    domain TEXT NOT NULL,
    local {int} NOT NULL,
    sp_id TEXT NOT NULL,
    request TEXT NOT NULL,
    transit_latency_ms {real} NOT NULL,
    latency_share_ms {real} NOT NULL,
    state TEXT NOT NULL,
    order_key TEXT NOT NULL,
    handle TEXT NOT NULL,
    labels TEXT NOT NULL,
    addresses TEXT NOT NULL,
    detail TEXT NOT NULL,
    PRIMARY KEY (slice_id, idx)
);
CREATE INDEX IF NOT EXISTS segments_handle ON segments (domain, handle);
CREATE TABLE IF NOT EXISTS links (
    slice_id TEXT NOT NULL REFERENCES slices (id) ON DELETE CASCADE,
    a_port TEXT NOT NULL,
    b_port TEXT NOT NULL,
    a_domain TEXT NOT NULL,
    b_domain TEXT NOT NULL,
    label_type TEXT NOT NULL,
    label_a {int},
    label_b {int},
    a_can_swap {int} NOT NULL,
    b_can_swap {int} NOT NULL,
    wim_handle TEXT NOT NULL{pos},
    PRIMARY KEY (slice_id, a_port, b_port)
);
CREATE TABLE IF NOT EXISTS rules (
    slice_id TEXT NOT NULL REFERENCES slices (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    body TEXT NOT NULL{pos},
    PRIMARY KEY (slice_id, name)
);
CREATE TABLE IF NOT EXISTS tasks (
    slice_id TEXT NOT NULL,
    operation TEXT NOT NULL,
    seq {int} NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    detail TEXT NOT NULL,
    updated_at {real} NOT NULL,
    PRIMARY KEY (slice_id, operation, seq, name)
);
"""


#: Version 2: a service order is the intent around one slice, found by (requester, request_id).
_ORDERS = """
CREATE TABLE IF NOT EXISTS orders (
    id TEXT PRIMARY KEY,
    requester TEXT NOT NULL,
    request_id TEXT NOT NULL,
    created_at {real} NOT NULL,
    body TEXT NOT NULL{pos},
    UNIQUE (requester, request_id)
);
CREATE INDEX IF NOT EXISTS orders_created ON orders (requester, created_at)
"""


@dataclass(frozen=True)
class Dialect:
    """How one backend spells the schema's types."""

    name: str
    real: str
    int: str
    #: The last column of ``links`` and ``rules``, if the backend needs one to keep their order.
    pos: str
    #: What ``links`` and ``rules`` are ordered by.
    order: str
    #: A primary key numbered by the database, never reusing a number (the event log's).
    serial: str = ""

    def base(self) -> str:
        """The schema of version 1 in this backend's types."""
        return _BASE.format(real=self.real, int=self.int, pos=self.pos)


SQLITE = Dialect(
    "sqlite", real="REAL", int="INTEGER", pos="", order="rowid", serial="INTEGER PRIMARY KEY AUTOINCREMENT"
)
# Positional INSERTs leave ``pos`` to its default: the next number.
POSTGRESQL = Dialect(
    "postgresql",
    real="DOUBLE PRECISION",
    int="BIGINT",
    pos=",\n    pos BIGSERIAL",
    order="pos",
    serial="BIGSERIAL PRIMARY KEY",
)


#: Version 3 (issue 14): the alerts open at this level per slice and cause, so a restarted SP still has them.
_ALERTS = """
CREATE TABLE IF NOT EXISTS alerts (
    slice_id TEXT NOT NULL REFERENCES slices (id) ON DELETE CASCADE,
    cause TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (slice_id, cause)
);
"""


_HUB = """
CREATE TABLE IF NOT EXISTS hub_subscriptions (
    id TEXT PRIMARY KEY,
    principal TEXT NOT NULL,
    callback TEXT NOT NULL,
    query TEXT NOT NULL,
    created_at {real} NOT NULL
)
"""


#: Version 5: the REST API's events, numbered, kept (the newest ``retention.events_max``) so an SSE
#: client that reconnects gets what it missed. ``event_key`` tells one event from another (replicas sharing
#: the database each hear every state change: the first to write it numbers it); ``requester`` is the
#: slice's, for the tenancy of a replay; ``above`` is the body as an SP above reads it (alerts with
#: this SP as their source), when it differs.
_EVENTS = """
CREATE TABLE IF NOT EXISTS events (
    seq {serial},
    event_key TEXT NOT NULL UNIQUE,
    requester TEXT NOT NULL,
    slice_id TEXT NOT NULL,
    body TEXT NOT NULL,
    above TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_requester ON events (requester, seq)
"""


#: Version 6 (issue 16): a local domain's books, when the SP's replicas share them: each held segment's
#: handle and state per domain, and a version per domain that every change moves on (read to see
#: whether another replica changed the books since this one last read them).
_BOOKS = """
CREATE TABLE IF NOT EXISTS domain_holdings (
    domain TEXT NOT NULL,
    order_key TEXT NOT NULL,
    handle TEXT NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (domain, order_key)
);
CREATE TABLE IF NOT EXISTS domain_books (
    domain TEXT PRIMARY KEY,
    version {int} NOT NULL
)
"""


#: Version 7 (issue 17): a one-call order's intent (``SliceRecord.then``), durable with the commit decision.
_ORDER_THEN = "ALTER TABLE slices ADD COLUMN order_then TEXT NOT NULL DEFAULT ''"


#: Version 8 (issue 15): how far each hub subscription was delivered, so a restart goes on from there.
_HUB_CURSOR = "ALTER TABLE hub_subscriptions ADD COLUMN delivered {int} NOT NULL DEFAULT 0"


#: Version 9 (issue 16): operators' offer edits, when the SP's replicas share them: the policy of each
#: local domain as last edited at any replica, with a number every edit moves on.
_OFFER_EDITS = """
CREATE TABLE IF NOT EXISTS offer_edits (
    domain TEXT PRIMARY KEY,
    edit {int} NOT NULL,
    policy TEXT NOT NULL,
    edited_at {real} NOT NULL
)
"""


def migrations(dialect: Dialect) -> list[tuple[int, str, str]]:
    """(number, what it does, the SQL) of every migration, oldest first. Append; never edit one that shipped."""
    return [
        (1, "slices, segments, links, rules and the task log", dialect.base()),
        (2, "service orders (the REST API's TMF641 orders)", _ORDERS.format(real=dialect.real, pos=dialect.pos)),
        (3, "the alerts open at this level, per slice and cause", _ALERTS),
        (4, "the REST hub's subscriptions", _HUB.format(real=dialect.real)),
        (5, "the REST API's events, kept for SSE clients that reconnect", _EVENTS.format(serial=dialect.serial)),
        (6, "local domains' books, shared by an SP's replicas", _BOOKS.format(int=dialect.int)),
        (7, "what follows a slice's hold or commit (a one-call order)", _ORDER_THEN),
        (8, "how far each hub subscription was delivered", _HUB_CURSOR.format(int=dialect.int)),
        (
            9,
            "operators' offer edits, shared by an SP's replicas",
            _OFFER_EDITS.format(int=dialect.int, real=dialect.real),
        ),
    ]


#: The newest schema version this code writes.
LATEST = max(n for n, _, _ in migrations(SQLITE))

VERSION_TABLE = "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at {real} NOT NULL)"


class SchemaTooNew(RuntimeError):
    """The database was written by a newer broker than this one."""

    def __init__(self, found: int, where: str) -> None:
        super().__init__(
            f"{where} is at schema version {found}, but this broker knows versions up to {LATEST}: "
            "run a fedbroker at least as new as the one that wrote it (a newer schema is never written back down)"
        )
        self.found = found


__all__ = ["LATEST", "POSTGRESQL", "SQLITE", "VERSION_TABLE", "Dialect", "SchemaTooNew", "migrations"]

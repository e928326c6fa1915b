"""The REST event log over a real SQLite store: numbering, tenancy of a read, the bounds of a resume."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from broker.api.rest_journal import BATCH, EventLog, Row
from broker.core.events import SliceEvent
from broker.security.accounts import Role
from broker.security.auth import Principal
from broker.store.sqlite import SqliteStore
from slicing.model import SliceState

ALICE = Principal("alice", Role.CUSTOMER)
BOB = Principal("bob", Role.CUSTOMER)
OPERATOR = Principal("op", Role.OPERATOR)
UPPER = Principal("alice", Role.PEER_SP)  # an SP above, whose account is the slice's requester


def _rows(ev: SliceEvent) -> Sequence[Row]:
    owner = "bob" if ev.slice_id.startswith("b") else "alice"
    body = f'{{"eventType":"ServiceStateChangeEvent","n":"{ev.detail}","as":"own"}}'
    above = f'{{"eventType":"ServiceStateChangeEvent","n":"{ev.detail}","as":"above"}}' if ev.detail == "up" else ""
    return [(f"{ev.slice_id}|{ev.state}|{ev.at!r}", owner, ev.slice_id, body, above)]


def _log(tmp_path: Path, keep: int = 1000) -> tuple[EventLog, SqliteStore]:
    store = SqliteStore(tmp_path / "s.db")
    return EventLog(store, _rows, keep=keep), store


def _ev(slice_id: str, at: float, detail: str = "") -> SliceEvent:
    return SliceEvent(slice_id, SliceState.HELD, at, detail)


def test_events_are_numbered_in_order_and_one_heard_twice_keeps_its_number(tmp_path: Path) -> None:
    log, store = _log(tmp_path)
    for i in range(3):
        log.record(_ev("a1", float(i)))
    log.record(_ev("a1", 1.0))  # heard again (another replica told it): kept once
    assert log.head == 3
    assert [n for n, _ in log.after(0, ALICE)] == [1, 2, 3]
    assert [e["eventId"] for _, e in log.after(1, ALICE)] == ["2", "3"]
    store.close()
    again, store = _log(tmp_path)  # a restart: the numbering goes on
    assert again.head == 3
    again.record(_ev("a1", 9.0))
    assert again.head > 3  # numbers are never reused (one taken by a repeat may be skipped)
    assert [n for n, _ in again.after(0, ALICE)] == [1, 2, 3, again.head]
    store.close()


def test_a_reader_sees_only_its_slices_an_operator_all_and_an_upper_sp_its_own_view(tmp_path: Path) -> None:
    log, store = _log(tmp_path)
    log.record(_ev("a1", 1.0))
    log.record(_ev("b1", 2.0))
    log.record(_ev("a2", 3.0, "up"))
    assert [n for n, _ in log.after(0, ALICE)] == [1, 3]
    assert [n for n, _ in log.after(0, BOB)] == [2]
    assert [n for n, _ in log.after(0, OPERATOR)] == [1, 2, 3]
    assert [e["as"] for _, e in log.after(0, ALICE)] == ["own", "own"]
    assert [e["as"] for _, e in log.after(0, UPPER)] == ["own", "above"]
    assert [n for n, _ in log.after(0, OPERATOR, slice_id="a2")] == [3]
    store.close()


def test_a_read_returns_at_most_a_batch(tmp_path: Path) -> None:
    log, store = _log(tmp_path)
    for i in range(BATCH + 5):
        log.record(_ev("a1", float(i)))
    first = log.after(0, ALICE)
    assert len(first) == BATCH and [n for n, _ in log.after(first[-1][0], ALICE)] == list(range(BATCH + 1, BATCH + 6))
    store.close()


@pytest.mark.parametrize(
    ("last", "cursor", "why"),
    [
        (None, 10, ""),  # a new reader starts at the newest
        (10, 10, ""),
        (5, 5, ""),  # 6..10 are all kept
        (4, 10, "no longer kept"),  # 5 is not
        (0, 10, "no longer kept"),
        (11, 10, "started afresh"),  # never sent by this broker
    ],
)
def test_a_resume_starts_after_the_last_event_or_says_why_it_cannot(
    tmp_path: Path, last: int | None, cursor: int, why: str
) -> None:
    log, store = _log(tmp_path, keep=5)
    for i in range(10):
        log.record(_ev("a1", float(i)))
    assert store.event_bounds() == (6, 10)
    got, reason = log.resume(last)
    assert got == cursor
    assert (why in reason) if why else reason == "", reason
    if why:
        assert "GET" in reason  # what to do: read the state again
    store.close()


def test_an_empty_log_resumes_from_zero_and_refuses_a_later_id(tmp_path: Path) -> None:
    log, store = _log(tmp_path)
    assert log.resume(None) == (0, "") and log.resume(0) == (0, "")
    assert "started afresh" in log.resume(1)[1]
    store.close()


async def test_a_waiting_reader_wakes_at_the_next_event_or_at_close(tmp_path: Path) -> None:
    log, store = _log(tmp_path)
    assert not await log.grown(0, 0.01)  # nothing yet: the wait ends empty
    log.record(_ev("a1", 1.0))
    assert await log.grown(0, 0.01)  # already there
    log.close()
    assert not await log.grown(1, 10.0)  # closed: at once
    store.close()

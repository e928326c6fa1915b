"""The store of notes held from below: newest version wins, expired notes are not current."""

from __future__ import annotations

import pytest

from capability_catalog.model import CapabilityNote, Endpoint, SpId, TerminalId
from capability_catalog.store import NoteStore


def note(sp: str, version: int, *, expires_at: float = 100.0, ep: str = "ep") -> CapabilityNote:
    return CapabilityNote(
        sp_id=SpId(sp),
        version=version,
        issued_at=0.0,
        expires_at=expires_at,
        endpoints=(Endpoint(TerminalId(f"{sp}.{ep}")),),
    )


def test_store_accepts_first_and_newer_versions() -> None:
    store = NoteStore()

    assert store.offer(note("A", 1), now=0.0) is True
    newer = note("A", 2, ep="other")
    assert store.offer(newer, now=1.0) is True
    assert store.get(SpId("A")) == newer
    assert store.versions() == {"A": 2}


def test_store_ignores_equal_and_older_versions() -> None:
    store = NoteStore()
    held = note("A", 5)
    store.offer(held, now=0.0)

    assert store.offer(note("A", 5, ep="same-version"), now=1.0) is False
    assert store.offer(note("A", 4, ep="older"), now=1.0) is False
    assert store.get(SpId("A")) == held


def test_store_refuses_expired_note_naming_expires_at() -> None:
    store = NoteStore()

    with pytest.raises(ValueError, match="expires_at"):
        store.offer(note("A", 1, expires_at=10.0), now=10.0)
    assert store.get(SpId("A")) is None


def test_store_current_drops_notes_once_expired() -> None:
    store = NoteStore()
    store.offer(note("A", 1, expires_at=50.0), now=0.0)
    store.offer(note("B", 1, expires_at=200.0), now=0.0)

    assert set(store.current(now=49.9)) == {"A", "B"}
    assert set(store.current(now=50.0)) == {"B"}
    assert store.get(SpId("A")) is not None  # still held, only no longer current


def test_store_takes_fresh_note_after_the_held_one_expired() -> None:
    store = NoteStore()
    store.offer(note("A", 1, expires_at=50.0), now=0.0)

    assert store.offer(note("A", 2, expires_at=150.0), now=60.0) is True
    assert set(store.current(now=60.0)) == {"A"}


def test_store_keeps_children_apart_and_forgets_removed_ones() -> None:
    store = NoteStore()
    store.offer(note("A", 3), now=0.0)
    store.offer(note("B", 1), now=0.0)

    store.remove(SpId("A"))
    store.remove(SpId("never-seen"))

    assert store.versions() == {"B": 1}
    assert store.get(SpId("A")) is None
    assert store.offer(note("A", 1), now=0.0) is True  # forgotten: any version is news again

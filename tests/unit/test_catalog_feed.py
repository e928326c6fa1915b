"""The broker's note feed: signed notes verified, refused ones never used, one signed aggregate out."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

import pytest

from broker.core.catalog import Catalog
from capability_catalog.canonical import note_from_canonical
from capability_catalog.model import (
    BorderPort,
    CapabilityNote,
    Endpoint,
    LabelRange,
    LabelSet,
    SpId,
    TerminalId,
    Transit,
)
from capability_catalog.signing import SignedNote, TrustStore, generate_key, public_key_to_text, sign_note, verify_note
from slicing.errors import ErrorCode, InvalidArgument, ResourceExhausted

NOW = 1_800_000_000.0
KEYS = {sp: generate_key() for sp in ("A", "B", "M", "X")}


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def child(sp: str, version: int, peer: str, expires: float = NOW + 10_000) -> CapabilityNote:
    ep, port = TerminalId(f"{sp}.ep"), TerminalId(f"{sp}.to-{peer}")
    return CapabilityNote(
        sp_id=SpId(sp),
        version=version,
        issued_at=NOW - 1,
        expires_at=expires,
        endpoints=(Endpoint(ep, "", 1000),),
        ports=(
            BorderPort(
                port,
                SpId(peer),
                TerminalId(f"{peer}.to-{sp}"),
                labels=LabelSet.of([LabelRange(1, 9)]),
                capacity_mbps=1000,
            ),
        ),
        transit=(Transit(ep, port, 1.0, 1000),),
    )


def signed(note: CapabilityNote, signer: str | None = None, key: str | None = None) -> SignedNote:
    return sign_note(note, KEYS[key or note.sp_id], signer or note.sp_id)


def catalog(clock: Clock | None = None, min_interval_s: float = 0.0) -> Catalog:
    trust = TrustStore.of({sp: [public_key_to_text(KEYS[sp].public_key())] for sp in ("A", "B")})
    return Catalog("M", clock or Clock(), key=KEYS["M"], trust=trust, min_interval_s=min_interval_s)


def child_versions(note: CapabilityNote | None) -> list[int]:
    assert note is not None
    return sorted(version for _, version in note.provenance)


async def test_signed_children_aggregate_into_one_signed_note_hiding_internal_links() -> None:
    cat = catalog()
    assert await cat.offer_signed(SpId("A"), signed(child("A", 1, "B")))
    assert await cat.offer_signed(SpId("B"), signed(child("B", 1, "A")))
    own = cat.own
    assert own is not None and own.sp_id == "M"
    assert {e.id for e in own.endpoints} == {"A.ep", "B.ep"}
    assert own.ports == ()  # A–B is internal to M
    assert [(t.a, t.b, t.latency_ms) for t in own.transit] == [("A.ep", "B.ep", 2.0)]
    # The published note is signed by M and verifies with M's key; its provenance names no child.
    assert cat.own_signed is not None
    trust_m = TrustStore.of({"M": [public_key_to_text(KEYS["M"].public_key())]})
    assert verify_note(cat.own_signed, trust_m, expected_sp="M", held_version=None, now=NOW) == own
    assert len(own.provenance) == 2
    assert all(digest.startswith("sha256:") and len(digest) == 71 for digest, _ in own.provenance)
    assert sorted(version for _, version in own.provenance) == [1, 1]


async def test_each_bad_note_is_refused_with_its_reason_and_never_used() -> None:
    cat = catalog()
    good = signed(child("A", 5, "B"))
    tampered = replace(good, payload=good.payload.replace(b'"A.ep"', b'"Z.ep"'))
    cases = [
        (tampered, "BAD_SIGNATURE"),
        (signed(child("A", 6, "B"), key="X"), "BAD_SIGNATURE"),  # A's name, someone else's key
        (signed(child("X", 6, "B"), signer="X"), "UNKNOWN_SIGNER"),
        (signed(child("B", 6, "A")), "SIGNER_MISMATCH"),  # B's valid note on A's feed
        (signed(child("A", 6, "B", expires=NOW - 1)), "EXPIRED"),
    ]
    for bad, reason in cases:
        assert not await cat.offer_signed(SpId("A"), bad)
        assert cat.rejected[-1].reason == reason, (reason, cat.rejected[-1])
    assert cat.current() == {} and cat.own is None
    assert await cat.offer_signed(SpId("A"), good)
    assert not await cat.offer_signed(SpId("A"), signed(child("A", 4, "B")))  # replayed older version
    assert cat.rejected[-1].reason == "REPLAYED_VERSION"
    assert cat.current()[SpId("A")].version == 5


async def test_a_note_that_expires_is_no_longer_offered_to_the_planner() -> None:
    clock = Clock()
    cat = catalog(clock)
    await cat.offer_signed(SpId("A"), signed(child("A", 1, "B", expires=NOW + 60)))
    assert SpId("A") in cat.current()
    assert cat.own is not None and cat.own.expires_at <= NOW + 60
    clock.now += 61
    assert cat.current() == {}


async def test_subscribers_get_the_current_signed_note_then_each_new_version() -> None:
    clock = Clock()
    cat = catalog(clock)
    await cat.offer_signed(SpId("A"), signed(child("A", 1, "B")))
    stream = cat.updates()
    first = await asyncio.wait_for(anext(stream), 1)
    clock.now += 1
    await cat.offer_signed(SpId("A"), signed(child("A", 2, "B")))
    second = await asyncio.wait_for(anext(stream), 1)
    assert note_from_canonical(second.payload).version > note_from_canonical(first.payload).version
    await stream.aclose()  # type: ignore[attr-defined]


async def test_changes_within_the_minimum_interval_are_republished_once_together() -> None:
    cat = catalog(min_interval_s=0.05)
    stream = cat.updates()
    first_signed = asyncio.create_task(anext(stream))  # a subscriber waits: changes are pushed
    await asyncio.sleep(0)
    await cat.offer_signed(SpId("A"), signed(child("A", 2, "B")))
    second = cat.own
    assert child_versions(second) == [2]  # the first change after a quiet spell is published at once
    assert note_from_canonical((await asyncio.wait_for(first_signed, 1)).payload) == second
    for version in (3, 4, 5):
        assert await cat.offer_signed(SpId("A"), signed(child("A", version, "B")))
    assert cat.own == second  # taken, not yet re-published
    assert cat.current()[SpId("A")].version == 5
    async with asyncio.timeout(5):
        while child_versions(cat.own) != [5]:
            await asyncio.sleep(0.01)
    # The clock stands still, so each re-publication raises the version by exactly one.
    assert second is not None and cat.own is not None and cat.own.version == second.version + 1
    await stream.aclose()  # type: ignore[attr-defined]
    await cat.close()


async def test_closing_drops_a_pending_republication() -> None:
    cat = catalog(min_interval_s=0.05)
    stream = cat.updates()
    first = asyncio.create_task(anext(stream))
    await asyncio.sleep(0)
    await cat.offer_signed(SpId("A"), signed(child("A", 2, "B")))
    await cat.offer_signed(SpId("A"), signed(child("A", 3, "B")))
    await asyncio.wait_for(first, 1)
    await cat.close()
    await asyncio.sleep(0.2)
    assert child_versions(cat.own) == [2]
    await stream.aclose()  # type: ignore[attr-defined]


async def test_without_subscribers_changes_are_built_once_when_the_note_is_read() -> None:
    cat = catalog(min_interval_s=0.05)
    await cat.offer_signed(SpId("A"), signed(child("A", 1, "B")))
    first = cat.own
    assert child_versions(first) == [1]
    for version in (2, 3, 4):
        assert await cat.offer_signed(SpId("A"), signed(child("A", version, "B")))
    # Read at once, no interval to wait: one new version covering all three changes.
    latest = cat.own
    assert first is not None and latest is not None
    assert child_versions(latest) == [4] and latest.version == first.version + 1
    assert cat.own is latest  # nothing changed since: not built again
    signed_now = cat.own_signed
    assert signed_now is not None and note_from_canonical(signed_now.payload) == latest


async def test_a_subscriber_arriving_after_unpushed_changes_gets_the_current_note_first() -> None:
    cat = catalog()
    await cat.offer_signed(SpId("A"), signed(child("A", 1, "B")))
    await cat.offer_signed(SpId("A"), signed(child("A", 2, "B")))  # nobody subscribed: not built
    stream = cat.updates()
    got = note_from_canonical((await asyncio.wait_for(anext(stream), 1)).payload)
    assert child_versions(got) == [2]
    await cat.offer_signed(SpId("A"), signed(child("A", 3, "B")))  # now pushed
    pushed = note_from_canonical((await asyncio.wait_for(anext(stream), 1)).payload)
    assert child_versions(pushed) == [3]
    await stream.aclose()  # type: ignore[attr-defined]


async def test_a_note_signed_with_the_wrong_key_is_logged_once_naming_keys_as_configured(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cat = catalog()
    wrong = signed(child("A", 1, "B"), key="X")
    with caplog.at_level(logging.WARNING, logger="broker.core.catalog"):
        assert not await cat.offer_signed(SpId("A"), wrong)
        assert not await cat.offer_signed(SpId("A"), wrong)  # re-sent at a reconnect
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and lines[0].count("BAD_SIGNATURE") == 1
    assert public_key_to_text(KEYS["A"].public_key()) in lines[0] and "lower_sps[A].keys" in lines[0]
    assert cat.rejected[-1].reason == "BAD_SIGNATURE" and "BAD_SIGNATURE" not in cat.rejected[-1].detail

    plain = ResourceExhausted("no capability notes from any child yet; nothing to decompose over")
    said = cat.explain(plain, "A.ep", "B.ep")
    assert said.code is ErrorCode.RESOURCE_EXHAUSTED and said.message.startswith(plain.message)
    assert "refused (A BAD_SIGNATURE: signed with a key that is not configured for A" in said.message
    assert "catalog show" in said.message
    assert cat.explain(plain, "A.ep", "B.ep") is not plain
    assert await cat.offer_signed(SpId("A"), signed(child("A", 2, "B")))
    assert cat.explain(plain, "A.ep", "B.ep") is plain  # a good note since: nothing refused to speak of


async def test_a_terminal_a_child_withdrew_is_said_to_be_withdrawn_not_unknown() -> None:
    cat = catalog()
    assert await cat.offer_signed(SpId("A"), signed(child("A", 1, "B")))
    assert await cat.offer_signed(SpId("A"), signed(replace(child("A", 2, "B"), endpoints=(), transit=())))
    unknown = InvalidArgument("request.src", "unknown terminal 'A.ep' (not in any note held)")

    said = cat.explain(unknown, "A.ep", "B.ep")

    assert said.code is ErrorCode.INVALID_ARGUMENT and said.field == "request.src"
    assert "'A.ep' is withdrawn: A no longer offers it (since its note version 2)" in said.message
    other = InvalidArgument("request.dst", "unknown terminal 'Q.ep' (not in any note held)")
    assert cat.explain(other, "A.ep", "Q.ep") is other
    assert await cat.offer_signed(SpId("A"), signed(child("A", 3, "B")))
    assert cat.explain(unknown, "A.ep", "B.ep") is unknown  # offered again

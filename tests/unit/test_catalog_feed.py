"""The broker's note feed: children's notes in, one aggregated note out, pushed on every change."""

from __future__ import annotations

import asyncio

from broker.catalog import Catalog
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


class Clock:
    now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def child(sp: str, version: int, peer: str, expires: float = 1_800_010_000.0) -> CapabilityNote:
    ep, port = TerminalId(f"{sp}.ep"), TerminalId(f"{sp}.to-{peer}")
    return CapabilityNote(
        sp_id=SpId(sp),
        version=version,
        issued_at=1_800_000_000.0,
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


async def test_children_notes_aggregate_into_one_note_hiding_internal_links() -> None:
    cat = Catalog("M", Clock())
    assert await cat.offer(SpId("A"), child("A", 1, "B"))
    assert await cat.offer(SpId("B"), child("B", 1, "A"))
    own = cat.own
    assert own is not None and own.sp_id == "M"
    assert {e.id for e in own.endpoints} == {"A.ep", "B.ep"}
    assert own.ports == ()  # A–B is internal to M
    assert [(t.a, t.b, t.latency_ms) for t in own.transit] == [("A.ep", "B.ep", 2.0)]


async def test_older_versions_and_impostor_notes_are_ignored() -> None:
    cat = Catalog("M", Clock())
    assert await cat.offer(SpId("A"), child("A", 5, "B"))
    version = cat.own.version if cat.own else 0
    assert not await cat.offer(SpId("A"), child("A", 4, "B"))
    assert not await cat.offer(SpId("A"), child("B", 9, "A"))  # signed as B on A's feed
    assert cat.own is not None and cat.own.version == version


async def test_own_note_expires_no_later_than_the_children_it_summarises() -> None:
    clock = Clock()
    cat = Catalog("M", clock, ttl_s=3600)
    await cat.offer(SpId("A"), child("A", 1, "B", expires=clock.now + 60))
    assert cat.own is not None and cat.own.expires_at == clock.now + 60


async def test_subscribers_get_the_current_note_then_each_new_version() -> None:
    clock = Clock()
    cat = Catalog("M", clock)
    await cat.offer(SpId("A"), child("A", 1, "B"))
    stream = cat.updates()
    first = await asyncio.wait_for(anext(stream), 1)
    clock.now += 1
    await cat.offer(SpId("A"), child("A", 2, "B"))
    second = await asyncio.wait_for(anext(stream), 1)
    assert second.version > first.version
    await stream.aclose()  # type: ignore[attr-defined]

"""The broker's side of capability notes: follow children's notes, re-publish its own upward."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping

from capability_catalog.aggregate import aggregate
from capability_catalog.model import CapabilityNote, SpId
from capability_catalog.store import NoteStore
from domain_agents.base import DomainAgent

log = logging.getLogger(__name__)


class Catalog:
    """Notes held from below, and the abstract note this broker publishes for its whole subtree."""

    def __init__(self, sp_id: str, clock: Callable[[], float], ttl_s: float = 3600.0) -> None:
        self.sp_id = SpId(sp_id)
        self._clock = clock
        self._ttl_s = ttl_s
        self._store = NoteStore()
        self._own: CapabilityNote | None = None
        self._changed = asyncio.Condition()

    def current(self) -> Mapping[SpId, CapabilityNote]:
        """Unexpired notes from below, by child id."""
        return self._store.current(self._clock())

    @property
    def own(self) -> CapabilityNote | None:
        """The note this broker publishes (None until a child has published)."""
        return self._own

    async def offer(self, child: SpId, note: CapabilityNote) -> bool:
        """Take a child's note; re-publish ours when it is news. Returns whether it was taken."""
        if note.sp_id != child:
            log.error("child %s sent a note signed as %s; ignored", child, note.sp_id)
            return False
        try:
            taken = self._store.offer(note, self._clock())
        except ValueError as exc:
            log.warning("note from %s refused: %s", child, exc)
            return False
        if taken:
            log.info("note from %s: version %d", child, note.version)
            await self._republish()
        return taken

    async def _republish(self) -> None:
        now = self._clock()
        notes = self.current()
        if not notes:
            return
        version = max(int(now * 1000), (self._own.version + 1) if self._own else 0)
        expires = min([now + self._ttl_s, *(n.expires_at for n in notes.values())])
        own = aggregate(self.sp_id, list(notes.values()), version=version, issued_at=now, expires_at=expires)
        async with self._changed:
            self._own = own
            self._changed.notify_all()

    async def updates(self) -> AsyncIterator[CapabilityNote]:
        """Our note now (when there is one), then each new version: what a subscriber above gets."""
        sent = 0

        def news() -> bool:
            return self._own is not None and self._own.version > sent

        while True:
            async with self._changed:
                await self._changed.wait_for(news)
                own = self._own
            assert own is not None
            sent = own.version
            yield own

    async def follow(self, agent: DomainAgent) -> None:
        """Background task: take every note a child publishes, for as long as the broker runs."""
        async for note in agent.notes():
            await self.offer(agent.domain_id, note)

"""The broker's side of capability notes: verify children's notes, re-publish its own, signed.

Notes from lower-SPs arrive signed and are verified here against the keys configured for that
lower-SP (signer, signature, expiry, version); a refused note is logged with its reason, kept in a
short list for operators, and never used. Notes of local domains come from in-process agents and
are trusted as they are. The broker's own note is the aggregate of everything it holds, signed with
its key, and pushed to every subscriber whenever it changes.

Re-publishing (aggregating the subtree and signing) is the costliest thing a mid-level broker does
per change below, and under load children change many times a second. With ``min_interval_s`` a
change is re-published at once when the last re-publication is at least that old, and otherwise
once when the interval has passed, covering every change taken meanwhile: a quiet federation
sees each change at once, a busy one at most one note per interval and level. While nobody
subscribes (the top of the federation, or a broker whose parent is away) nothing is pushed, so a
change only marks the note stale and it is built when next read: the top broker spent a sixth of
its CPU aggregating and signing notes nobody received.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, replace

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from capability_catalog.aggregate import aggregate
from capability_catalog.canonical import note_to_canonical
from capability_catalog.model import CapabilityNote, SpId, TerminalId
from capability_catalog.signing import NoteRejected, SignedNote, TrustStore, sign_note, verify_note
from capability_catalog.store import NoteStore
from domain_agents.base import DomainAgent
from slicing.errors import FedError, InvalidArgument, ResourceExhausted

log = logging.getLogger(__name__)
MAX_REJECTIONS_KEPT = 50


@dataclass(frozen=True)
class Rejection:
    """A note this broker refused."""

    sp_id: str
    version: int
    reason: str
    detail: str
    at: float


class Catalog:
    """Notes held from below, and the signed abstract note this broker publishes for its subtree."""

    def __init__(
        self,
        sp_id: str,
        clock: Callable[[], float],
        *,
        key: Ed25519PrivateKey,
        trust: TrustStore,
        ttl_s: float = 3600.0,
        min_interval_s: float = 0.0,
    ) -> None:
        self.sp_id = SpId(sp_id)
        self._clock = clock
        self._key = key
        self._trust = trust
        self._ttl_s = ttl_s
        self._store = NoteStore()
        self._digests: dict[SpId, str] = {}
        self._own: SignedNote | None = None
        self._own_note: CapabilityNote | None = None
        self._changed = asyncio.Condition()
        self._min_interval_s = min_interval_s
        self._last_publish = -math.inf
        self._pending: asyncio.Task[None] | None = None
        self._subscribers = 0
        self._stale = False
        self.rejected: deque[Rejection] = deque(maxlen=MAX_REJECTIONS_KEPT)
        self._last_rejection: dict[SpId, Rejection] = {}
        # Terminals each child's current note offers, and those a later note stopped offering.
        self._offered: dict[SpId, set[TerminalId]] = {}
        self._withdrawn: dict[TerminalId, tuple[SpId, int]] = {}

    def current(self) -> Mapping[SpId, CapabilityNote]:
        """Unexpired notes from below, by child id: all the planner may use."""
        return self._store.current(self._clock())

    def heard(self) -> list[SpId]:
        """Every child that sent a note since this process started: taken (expired since or not) or refused."""
        return [*self._store.versions(), *self._last_rejection]

    @property
    def own(self) -> CapabilityNote | None:
        """The note this broker publishes (None until a child has published)."""
        self._build_if_stale()
        return self._own_note

    @property
    def own_signed(self) -> SignedNote | None:
        """The note this broker publishes, as signed."""
        self._build_if_stale()
        return self._own

    def _build_if_stale(self) -> None:
        if not self._stale:
            return
        self._stale = False
        try:
            built = self._build()
        except ValueError as exc:  # keep the note we had; the next change tries again
            log.error("re-publishing the note of %s failed: %s", self.sp_id, exc)
            return
        if built is not None:
            self._own, self._own_note = built

    def _reject(self, child: SpId, version: int, reason: str, detail: str) -> None:
        last = self._last_rejection.get(child)
        # A lower-SP re-sends the same refused note at every reconnect: one log line until it changes.
        if last is None or (last.version, last.reason, last.detail) != (version, reason, detail):
            log.warning("note from %s (version %d) refused: %s: %s", child, version, reason, detail)
        rejection = Rejection(child, version, reason, detail, self._clock())
        self._last_rejection[child] = rejection
        self.rejected.append(rejection)

    def explain(self, exc: FedError, src: str, dst: str) -> FedError:
        """``exc`` (a refused plan of ``src`` → ``dst``) said better where the catalog knows more, else itself.

        A terminal that a child's earlier note offered and its current one does not is withdrawn, not
        unknown; a plan with no note to go on names the notes this broker refused, if it refused any.
        """
        if isinstance(exc, InvalidArgument) and exc.field in ("request.src", "request.dst"):
            terminal = src if exc.field == "request.src" else dst
            gone = self._withdrawn.get(TerminalId(terminal))
            if gone is not None:
                child, version = gone
                return InvalidArgument(
                    exc.field,
                    f"terminal '{terminal}' is withdrawn: {child} no longer offers it (since its note version "
                    f"{version})",
                    domain=exc.domain,
                )
        if isinstance(exc, ResourceExhausted) and not self.current() and self._last_rejection:
            refused = "; ".join(
                f"{r.sp_id}{f' version {r.version}' if r.version else ''} {r.reason}: {r.detail}"
                for r in sorted(self._last_rejection.values(), key=lambda r: r.sp_id)
            )
            if refused:
                return ResourceExhausted(
                    f"{exc.message}: every note from below was refused ({refused}); see `fedbroker catalog show`",
                    domain=exc.domain,
                    constraint=exc.constraint,
                    causes=exc.causes,
                )
        return exc

    async def offer_signed(self, child: SpId, signed: SignedNote) -> bool:
        """Verify a lower-SP's signed note and take it when valid and newer. Returns whether taken."""
        held = self._store.get(child)
        try:
            note = verify_note(
                signed,
                self._trust,
                expected_sp=child,
                held_version=held.version if held else None,
                now=self._clock(),
            )
        except NoteRejected as exc:
            self._reject(child, getattr(exc, "version", 0) or 0, str(exc.reason), exc.detail)
            return False
        return await self._take(child, note, hashlib.sha256(signed.payload).hexdigest())

    async def offer(self, child: SpId, note: CapabilityNote) -> bool:
        """Take a local domain's note (from an in-process agent; no signature to check)."""
        if note.sp_id != child:
            self._reject(child, note.version, "SIGNER_MISMATCH", f"domain {child} produced a note for {note.sp_id}")
            return False
        try:
            payload = note_to_canonical(note)
        except ValueError as exc:  # e.g. a non-finite number: refused and kept on record, the feed goes on
            self._reject(child, note.version, "MALFORMED", str(exc))
            return False
        return await self._take(child, note, hashlib.sha256(payload).hexdigest())

    async def _take(self, child: SpId, note: CapabilityNote, digest: str) -> bool:
        try:
            taken = self._store.offer(note, self._clock())
        except ValueError as exc:
            self._reject(child, note.version, "EXPIRED", str(exc))
            return False
        if taken:
            self._last_rejection.pop(child, None)
            self._note_withdrawals(child, note)
            self._digests[child] = digest
            # Under load a child publishes many times a second: a line per note at INFO drowns the log.
            log.debug("note from %s: version %d", child, note.version)
            await self._republish_soon()
        return taken

    def _note_withdrawals(self, child: SpId, note: CapabilityNote) -> None:
        offered = {e.id for e in note.endpoints} | {p.id for p in note.ports}
        for terminal in self._offered.get(child, set()) - offered:
            self._withdrawn[terminal] = (child, note.version)
        for terminal in offered:
            self._withdrawn.pop(terminal, None)
        self._offered[child] = offered

    async def _republish_soon(self) -> None:
        """Re-publish now, or once the minimum interval has passed (one pending re-publication covers all)."""
        if self._pending is not None:
            return
        if not self._subscribers:
            self._stale = True
            return
        loop = asyncio.get_running_loop()
        wait = self._last_publish + self._min_interval_s - loop.time()
        if wait <= 0:
            await self._republish()
            return

        async def later() -> None:
            await asyncio.sleep(wait)
            self._pending = None
            try:
                await self._republish()
            except ValueError as exc:  # no follow() task above us to die and report it
                log.error("re-publishing the note of %s failed: %s", self.sp_id, exc)

        self._pending = loop.create_task(later(), name=f"republish-{self.sp_id}")

    async def close(self) -> None:
        """Drop a pending re-publication (the broker is stopping)."""
        if self._pending is not None:
            self._pending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pending
            self._pending = None

    async def _republish(self) -> None:
        self._stale = False
        built = self._build()
        if built is None:
            return
        async with self._changed:
            self._own, self._own_note = built
            self._changed.notify_all()

    def _build(self) -> tuple[SignedNote, CapabilityNote] | None:
        """Aggregate the notes held now into our next version, signed (None while nothing is held)."""
        self._last_publish = asyncio.get_running_loop().time()
        now = self._clock()
        notes = self.current()
        if not notes:
            return None
        previous = self._own_note.version if self._own_note else 0
        version = max(int(now * 1000), previous + 1)
        expires = min([now + self._ttl_s, *(n.expires_at for n in notes.values())])
        # Whole milliseconds: the canonical encoding carries times on that grid.
        now_ms, expires_ms = round(now * 1000) / 1000, int(expires * 1000) / 1000
        own = aggregate(self.sp_id, list(notes.values()), version=version, issued_at=now_ms, expires_at=expires_ms)
        # Provenance names no internal SP: a digest of each note it was derived from, with its version.
        own = replace(
            own, provenance=tuple(sorted((f"sha256:{self._digests[sp]}", n.version) for sp, n in notes.items()))
        )
        return sign_note(own, self._key, self.sp_id), own

    async def updates(self) -> AsyncIterator[SignedNote]:
        """Our signed note now (when there is one), then each new version: what a subscriber gets."""
        sent = 0

        def news() -> bool:
            self._build_if_stale()  # changes taken while nobody subscribed
            return self._own_note is not None and self._own_note.version > sent

        self._subscribers += 1
        try:
            while True:
                async with self._changed:
                    await self._changed.wait_for(news)
                    signed, note = self._own, self._own_note
                assert signed is not None and note is not None
                sent = note.version
                yield signed
        finally:
            self._subscribers -= 1

    async def follow(self, agent: DomainAgent) -> None:
        """Background task: take every note a child publishes, for as long as the broker runs."""
        async for item in agent.notes():
            if isinstance(item, SignedNote):
                await self.offer_signed(agent.domain_id, item)
            else:
                await self.offer(agent.domain_id, item)

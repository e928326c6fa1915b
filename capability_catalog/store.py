"""The notes a broker holds from below, one per child, newest version wins, expired ones dropped."""

from __future__ import annotations

from capability_catalog.model import CapabilityNote, SpId


class NoteStore:
    """Latest unexpired note per child SP (or local domain). The clock is passed in, never read."""

    def __init__(self) -> None:
        self._notes: dict[SpId, CapabilityNote] = {}

    def offer(self, note: CapabilityNote, now: float) -> bool:
        """Keep ``note`` if it is newer than the held one; False when it is not news.

        Raises ``ValueError`` naming ``expires_at`` for a note that has already expired.
        """
        if note.is_expired(now):
            raise ValueError(
                f"note from {note.sp_id} version {note.version} has expired: expires_at={note.expires_at} <= now={now}"
            )
        held = self._notes.get(note.sp_id)
        if held is not None and note.version <= held.version:
            return False
        self._notes[note.sp_id] = note
        return True

    def current(self, now: float) -> dict[SpId, CapabilityNote]:
        """Unexpired notes by SP id."""
        return {sp: n for sp, n in self._notes.items() if not n.is_expired(now)}

    def get(self, sp_id: SpId) -> CapabilityNote | None:
        """The held note of ``sp_id``, expired or not."""
        return self._notes.get(sp_id)

    def remove(self, sp_id: SpId) -> None:
        """Forget a child's note."""
        self._notes.pop(sp_id, None)

    def versions(self) -> dict[SpId, int]:
        """Held version per SP."""
        return {sp: n.version for sp, n in self._notes.items()}

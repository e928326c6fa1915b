"""Signed capability notes: Ed25519 over the canonical encoding, and their verification.

A public key is written as text ``ed25519:<base64url of the 32 raw bytes, unpadded>``; its key id
is the first 16 hex digits of the SHA-256 of those bytes. An upper-SP trusts, per lower-SP, a list
of such keys (two at once during a rotation). A note is used only when all of this holds, checked
in this order, each failure with its reason:

``MALFORMED``         the signature is not 64 bytes, or the payload does not decode;
``UNKNOWN_SIGNER``    no key is configured for the SP named as signer;
``BAD_SIGNATURE``     the key id is not one of the signer's keys, or the signature does not verify;
``SIGNER_MISMATCH``   the signer is not the SP whose feed it came on, or the note names another SP;
``EXPIRED``           the note's validity ended;
``REPLAYED_VERSION``  its version is lower than one already held from that SP.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from capability_catalog.canonical import CanonicalError, note_from_canonical, note_to_canonical
from capability_catalog.model import CapabilityNote

KEY_PREFIX = "ed25519:"


class RejectReason(StrEnum):
    """Why a note was refused."""

    MALFORMED = "MALFORMED"
    UNKNOWN_SIGNER = "UNKNOWN_SIGNER"
    BAD_SIGNATURE = "BAD_SIGNATURE"
    SIGNER_MISMATCH = "SIGNER_MISMATCH"
    EXPIRED = "EXPIRED"
    REPLAYED_VERSION = "REPLAYED_VERSION"


class NoteRejected(Exception):
    """A note that must not be used, with the reason and (when it could be read) its version."""

    def __init__(self, reason: RejectReason, detail: str, version: int = 0) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.version = version


@dataclass(frozen=True)
class SignedNote:
    """A note as it travels: canonical bytes, the signature over exactly them, who signed, with which key."""

    payload: bytes
    signature: bytes
    signer: str
    key_id: str


def generate_key() -> Ed25519PrivateKey:
    """A new Ed25519 private key."""
    return Ed25519PrivateKey.generate()


def _raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id_of(public: Ed25519PublicKey) -> str:
    """The short id a signature names its key by."""
    return hashlib.sha256(_raw(public)).hexdigest()[:16]


def public_key_to_text(public: Ed25519PublicKey) -> str:
    """``ed25519:<base64url>``: the form configs list trusted keys in."""
    return KEY_PREFIX + base64.urlsafe_b64encode(_raw(public)).decode("ascii").rstrip("=")


def public_key_from_text(text: str) -> Ed25519PublicKey:
    """Parse ``ed25519:<base64url>``; ``ValueError`` says what is wrong."""
    if not text.startswith(KEY_PREFIX):
        raise ValueError(f"a public key must start with '{KEY_PREFIX}' (as `fedbroker keys init` prints it)")
    body = text[len(KEY_PREFIX) :].strip()
    try:
        raw = base64.b64decode(body + "=" * (-len(body) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the key is not valid base64url") from None
    if len(raw) != 32:
        raise ValueError(f"an Ed25519 public key has 32 bytes, this one {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def private_key_to_pem(key: Ed25519PrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted (the file is written 0600)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def private_key_from_pem(data: bytes) -> Ed25519PrivateKey:
    """Load a PEM private key; ``ValueError`` unless it is Ed25519."""
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"expected an Ed25519 key, found {type(key).__name__}")
    return key


@dataclass(frozen=True)
class TrustStore:
    """The public keys each lower-SP may sign its notes with, by SP id and key id."""

    keys: Mapping[str, Mapping[str, Ed25519PublicKey]]

    @classmethod
    def of(cls, by_sp: Mapping[str, Iterable[str]]) -> TrustStore:
        """From key texts per SP (raises ``ValueError`` on a malformed key)."""
        table: dict[str, dict[str, Ed25519PublicKey]] = {}
        for sp, texts in by_sp.items():
            for text in texts:
                public = public_key_from_text(text)
                table.setdefault(sp, {})[key_id_of(public)] = public
        return cls(table)


def sign_note(note: CapabilityNote, key: Ed25519PrivateKey, signer: str) -> SignedNote:
    """Sign the canonical encoding of ``note`` as ``signer``."""
    payload = note_to_canonical(note)
    return SignedNote(payload, key.sign(payload), signer, key_id_of(key.public_key()))


def verify_note(
    signed: SignedNote,
    trust: TrustStore,
    *,
    expected_sp: str,
    held_version: int | None,
    now: float,
) -> CapabilityNote:
    """The note inside ``signed`` if it may be used; else ``NoteRejected`` with the reason."""
    if len(signed.signature) != 64:
        raise NoteRejected(RejectReason.MALFORMED, f"signature has {len(signed.signature)} bytes, not 64")
    keys = trust.keys.get(signed.signer)
    if not keys:
        raise NoteRejected(RejectReason.UNKNOWN_SIGNER, f"no key is configured for signer '{signed.signer}'")
    public = keys.get(signed.key_id)
    if public is None:
        # Said in the form the config lists keys in: the operator compares it with lower_sps[].keys.
        known = ", ".join(sorted(public_key_to_text(k) for k in keys.values()))
        raise NoteRejected(
            RejectReason.BAD_SIGNATURE,
            f"signed with a key that is not configured for {signed.signer} (key id {signed.key_id or '-'}); "
            f"configured: {known}. List {signed.signer}'s public key (its key_file's .pub, as `fedbroker keys init` "
            f"printed it) in lower_sps[{signed.signer}].keys",
        )
    try:
        public.verify(signed.signature, signed.payload)
    except InvalidSignature:
        raise NoteRejected(
            RejectReason.BAD_SIGNATURE,
            f"the signature does not verify with {signed.signer}'s key {public_key_to_text(public)}",
        ) from None
    try:
        note = note_from_canonical(signed.payload)
    except CanonicalError as exc:
        raise NoteRejected(RejectReason.MALFORMED, str(exc)) from None
    if signed.signer != expected_sp or note.sp_id != signed.signer:
        raise NoteRejected(
            RejectReason.SIGNER_MISMATCH,
            f"note of '{note.sp_id}' signed by '{signed.signer}' arrived on the feed of '{expected_sp}'",
            note.version,
        )
    if note.is_expired(now):
        raise NoteRejected(
            RejectReason.EXPIRED,
            f"version {note.version} expired at {note.expires_at:.3f} (now {now:.3f})",
            note.version,
        )
    if held_version is not None and note.version < held_version:
        raise NoteRejected(
            RejectReason.REPLAYED_VERSION,
            f"version {note.version} is older than held version {held_version}",
            note.version,
        )
    return note

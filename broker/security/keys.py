"""The SP's signing key on disk: ``fedbroker keys init`` and what ``serve`` loads."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from capability_catalog.signing import generate_key, private_key_from_pem, private_key_to_pem, public_key_to_text

log = logging.getLogger(__name__)


def write_key(path: Path, key: Ed25519PrivateKey) -> str:
    """Write a private key (mode 0600) and its public text beside it (``.pub``); return the public text."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private_key_to_pem(key))
    os.replace(tmp, path)
    public = public_key_to_text(key.public_key())
    path.with_suffix(".pub").write_text(public + "\n", encoding="utf-8")
    return public


def init_key(path: Path, *, force: bool = False) -> str:
    """Create a new key pair at ``path``; refuses to overwrite one unless ``force``."""
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists; pass --force to replace it (peers then need the new public key)")
    return write_key(path, generate_key())


def load_key(path: Path) -> Ed25519PrivateKey:
    """An Ed25519 private key from a PEM file; ``ValueError`` names the file."""
    try:
        return private_key_from_pem(path.read_bytes())
    except ValueError as exc:
        raise ValueError(f"{path}: not an Ed25519 private key in PEM: {exc}") from None


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """The SP's key; a first start without one creates it and logs the public key for the peers' configs."""
    if path.exists():
        return load_key(path)
    key = generate_key()
    public = write_key(path, key)
    log.warning("no signing key at %s: created one; upper-SPs must list this public key: %s", path, public)
    return key

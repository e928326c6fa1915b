"""Accounts a broker knows: users (operators, customers) and service accounts (peer SPs), with roles.

The account book is a YAML file (``security.accounts_file``)::

    accounts:
      - {id: T, kind: service, role: peer-sp, keys: ["ed25519:…"]}       # an upper-SP
      - {id: ops, kind: user, role: operator, keys: ["ed25519:…"]}         # signs its own call tokens
      - {id: alice, kind: user, role: customer, password_hash: "scrypt$…"}  # logs in for a session token

``keys`` are the Ed25519 public keys the account signs call tokens with (two at once during a
rotation); ``password_hash`` (users only) is what ``fedbroker accounts hash-password`` prints. The
broker reads the file at start, and again when it changed on disk: looked at (a ``stat``) when a
token names a key id it does not know, and at most once a second otherwise. A new peer needs no
restart, a removed account loses access within a second, and no call reads the file.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from broker.descriptors import ConfigError, load_yaml
from capability_catalog.signing import key_id_of, public_key_from_text

log = logging.getLogger(__name__)

ACCOUNT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# scrypt at n=2**14, r=8 costs 16 MiB and some tens of milliseconds: cheap for one login, dear for guessing.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
_SCRYPT_MAXMEM = 64 * 1024 * 1024


class Role(StrEnum):
    """What an account may do at this SP."""

    CUSTOMER = "customer"  # its own slices
    PEER_SP = "peer-sp"  # an upper-SP ordering segments, for itself or its customer
    OPERATOR = "operator"  # everything in this SP, note edits included


class AccountKind(StrEnum):
    """A person or another SP's broker."""

    USER = "user"
    SERVICE = "service"


_ROLES_OF: dict[AccountKind, frozenset[Role]] = {
    AccountKind.USER: frozenset({Role.CUSTOMER, Role.OPERATOR}),
    AccountKind.SERVICE: frozenset({Role.PEER_SP}),
}


class AccountError(ConfigError):
    """An account file is wrong; the message names the file and the path of the bad field."""


@dataclass(frozen=True)
class Account:
    """One account: its id (the TLS certificate's common name), kind, role, token keys and password hash."""

    id: str
    kind: AccountKind
    role: Role
    keys: tuple[str, ...] = ()
    password_hash: str = ""


def hash_password(password: str) -> str:
    """``scrypt$N$r$p$salt$hash`` (base64url), for an account's ``password_hash``."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, maxmem=_SCRYPT_MAXMEM, dklen=32
    )
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` matches a ``hash_password`` result (constant-time comparison)."""
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        return False
    try:
        n, r, p = (int(x) for x in parts[1:4])
        salt, want = _unb64(parts[4]), _unb64(parts[5])
        got = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=_SCRYPT_MAXMEM, dklen=len(want))
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(got, want)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def parse_accounts(data: Any, where: str = "") -> tuple[Account, ...]:
    """Validate ``{accounts: [...]}``; errors name ``where`` and the path of the bad field."""
    if data is None:
        return ()
    if not isinstance(data, Mapping) or set(data) - {"accounts"}:
        raise AccountError(f"{where}the document must be a mapping with one key, 'accounts'")
    raw = data.get("accounts") or []
    if not isinstance(raw, list):
        raise AccountError(f"{where}accounts: must be a list")
    out: list[Account] = []
    seen: set[str] = set()
    for i, entry in enumerate(raw):
        path = f"{where}accounts[{i}]"
        if not isinstance(entry, Mapping):
            raise AccountError(f"{path}: must be a mapping")
        extra = sorted(set(entry) - {"id", "kind", "role", "keys", "password_hash"})
        if extra:
            raise AccountError(f"{path}.{extra[0]}: unknown setting")
        ident = entry.get("id")
        if not isinstance(ident, str) or not ACCOUNT_ID.fullmatch(ident):
            raise AccountError(f"{path}.id: must match {ACCOUNT_ID.pattern}, got {ident!r}")
        if ident in seen:
            raise AccountError(f"{path}.id: '{ident}' is used twice")
        seen.add(ident)
        try:
            kind = AccountKind(entry.get("kind", "user"))
        except ValueError:
            raise AccountError(f"{path}.kind: one of {', '.join(AccountKind)}") from None
        try:
            role = Role(entry.get("role", ""))
        except ValueError:
            raise AccountError(f"{path}.role: one of {', '.join(Role)}") from None
        if role not in _ROLES_OF[kind]:
            allowed = ", ".join(sorted(_ROLES_OF[kind]))
            raise AccountError(f"{path}.role: a {kind} account has role {allowed}, not {role}")
        keys = entry.get("keys") or []
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys) or len(keys) > 4:
            raise AccountError(f"{path}.keys: a list of at most 4 public keys ('ed25519:…')")
        for j, key in enumerate(keys):
            try:
                public_key_from_text(key)
            except ValueError as exc:
                raise AccountError(f"{path}.keys[{j}]: {exc}") from None
        pw = entry.get("password_hash", "")
        if not isinstance(pw, str) or (pw and not pw.startswith("scrypt$")):
            raise AccountError(f"{path}.password_hash: as printed by `fedbroker accounts hash-password`")
        if pw and kind is not AccountKind.USER:
            raise AccountError(f"{path}.password_hash: only user accounts log in with a password")
        out.append(Account(ident, kind, role, tuple(keys), pw))
    return tuple(out)


def dump_accounts(accounts: list[Account] | tuple[Account, ...]) -> dict[str, Any]:
    """The YAML-able form of ``parse_accounts``' input."""
    rows = []
    for a in accounts:
        row: dict[str, Any] = {"id": a.id, "kind": str(a.kind), "role": str(a.role)}
        if a.keys:
            row["keys"] = list(a.keys)
        if a.password_hash:
            row["password_hash"] = a.password_hash
        rows.append(row)
    return {"accounts": rows}


class AccountBook:
    """The accounts of one broker by id and by token key id; re-read only when the file changed."""

    REFRESH_S = 1.0

    def __init__(self, path: Path | None, accounts: tuple[Account, ...] = ()) -> None:
        self._path = path
        self._checked = time.monotonic()
        self._stamp: tuple[int, int, int] | None = None
        self._by_id: dict[str, Account] = {}
        self._by_kid: dict[str, tuple[Account, Ed25519PublicKey]] = {}
        self._install(accounts)
        if path is not None:
            self.reload()

    def _install(self, accounts: tuple[Account, ...]) -> None:
        by_kid: dict[str, tuple[Account, Ed25519PublicKey]] = {}
        for acc in accounts:
            for text in acc.keys:
                public = public_key_from_text(text)
                by_kid[key_id_of(public)] = (acc, public)
        self._by_id = {a.id: a for a in accounts}
        self._by_kid = by_kid

    def _file_stamp(self) -> tuple[int, int, int] | None:
        assert self._path is not None
        try:
            st = os.stat(self._path)
        except FileNotFoundError:
            return None
        # The inode too: a file replaced atomically twice within the clock's granularity keeps its mtime.
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def reload(self) -> bool:
        """Read the file again if it changed; True when the accounts were replaced."""
        if self._path is None:
            return False
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return False
        try:
            data = load_yaml(self._path) if stamp is not None else None
            accounts = parse_accounts(data, f"{self._path}: ")
        except (ConfigError, AccountError) as exc:
            if self._stamp is None:
                raise AccountError(str(exc)) from None
            log.error("account file not reloaded, keeping the accounts held: %s", exc)
            self._stamp = stamp
            return False
        self._install(accounts)
        self._stamp = stamp
        log.info("accounts loaded from %s: %d", self._path, len(accounts))
        return True

    def refresh(self) -> None:
        """Look at the file at most once a second (a stat), so a revoked account loses access within a second."""
        now = time.monotonic()
        if now - self._checked >= self.REFRESH_S:
            self._checked = now
            self.reload()

    def get(self, account_id: str) -> Account | None:
        """The account with this id."""
        return self._by_id.get(account_id)

    def by_key_id(self, kid: str) -> tuple[Account, Ed25519PublicKey] | None:
        """The account owning the token key ``kid``, and the parsed key."""
        return self._by_kid.get(kid)

    def all(self) -> tuple[Account, ...]:
        """Every account, in file order."""
        return tuple(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)

"""Per-call JWTs signed with EdDSA (Ed25519), and their verification with replay protection.

Two kinds of token reach a broker, both compact JWS with ``alg: EdDSA`` and a ``kid`` header:

* a **call token**, signed by the caller with its own registered key: ``iss == sub == caller``,
  ``aud`` the callee SP, a short life (at most ``MAX_CALL_TTL_S``), and a ``jti`` the callee
  accepts once: a token seen before is refused until it has expired. Peer SPs and operators or
  customers holding a key use these, one per call.
* a **session token**, issued by this broker's login endpoint to a user who gave a password:
  ``iss == aud == this SP``, ``sub`` the user, signed with the SP's own key, living at most
  ``MAX_SESSION_TTL_S``. A user without a key cannot sign per call, so a session token may be
  presented on several calls within its short life; it is bound to the user's TLS client
  certificate by the subject check, so a copied token is useless without the client's key.

The verifier pins the algorithm (``none``, HMAC and anything else are refused before any key is
looked at), finds the key by ``kid`` among the issuer's keys (several valid at once, for
rotation), and checks ``iss``, ``aud``, ``exp``, ``nbf``, ``iat`` and ``jti``. Keys are parsed
once; nothing is read from disk per call.

Tokens are minted with pyjwt. They are verified here directly over ``cryptography`` (strict
base64url, the signature checked before the claims are parsed), because pyjwt's decoder costs
about 110 µs per token on top of the Ed25519 check on the lab machines, a fifth of a loopback
round trip; the unit tests check both ways that pyjwt and this verifier agree.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from capability_catalog.signing import key_id_of
from slicing.errors import Unauthenticated

ALGORITHM = "EdDSA"
MAX_TOKEN_CHARS = 4096
DEFAULT_CALL_TTL_S = 60.0
MAX_CALL_TTL_S = 300.0
DEFAULT_SESSION_TTL_S = 600.0
MAX_SESSION_TTL_S = 3600.0
LEEWAY_S = 2.0
MAX_OBO_CHARS = 200
_REQUIRED = ["iss", "sub", "aud", "exp", "nbf", "iat", "jti"]
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
_PRUNE_EVERY = 1024
_HEADER_CACHE_SIZE = 256


@dataclass(frozen=True)
class Claims:
    """What a verified token says: who signed it, for whom it speaks, and on whose behalf."""

    issuer: str
    subject: str
    audience: str
    jti: str
    expires_at: float
    on_behalf_of: str = ""
    session: bool = False


class TokenMinter:
    """Signs call tokens as one principal with its Ed25519 key; the parsed key is kept, never re-read."""

    def __init__(
        self,
        key: Ed25519PrivateKey,
        issuer: str,
        *,
        ttl_s: float = DEFAULT_CALL_TTL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key = key
        self.issuer = issuer
        self.key_id = key_id_of(key.public_key())
        self._headers = {"kid": self.key_id}
        self._ttl_s = ttl_s
        self._clock = clock

    def mint(
        self,
        audience: str,
        *,
        subject: str = "",
        on_behalf_of: str = "",
        ttl_s: float | None = None,
        jti: str = "",
    ) -> str:
        """A fresh token for one call to ``audience`` (a new ``jti`` each time)."""
        now = int(self._clock())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": subject or self.issuer,
            "aud": audience,
            "iat": now,
            "nbf": now,
            "exp": now + int(self._ttl_s if ttl_s is None else ttl_s),
            "jti": jti or secrets.token_urlsafe(16),
        }
        if on_behalf_of:
            claims["obo"] = on_behalf_of
        return jwt.encode(claims, self._key, algorithm=ALGORITHM, headers=self._headers)


@dataclass(frozen=True)
class TrustedKey:
    """A public key registered for a principal, found by its key id."""

    owner: str
    key: Ed25519PublicKey


KeyLookup = Callable[[str], TrustedKey | None]


class ReplayCache:
    """Token ids seen, each kept until its token expires; expired ones are pruned as new ones arrive."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], float] = {}
        self._inserts = 0

    def __len__(self) -> int:
        return len(self._seen)

    def first_use(self, issuer: str, jti: str, expires_at: float, now: float) -> bool:
        """Record the id; False when it was already seen and its token has not expired yet."""
        key = (issuer, jti)
        seen_until = self._seen.get(key)
        if seen_until is not None and seen_until >= now:
            return False
        self._seen[key] = expires_at + LEEWAY_S
        self._inserts += 1
        if self._inserts % _PRUNE_EVERY == 0:
            self._seen = {k: t for k, t in self._seen.items() if t >= now}
        return True


class TokenVerifier:
    """Checks tokens presented to one SP (the audience); raises ``Unauthenticated`` naming the reason."""

    def __init__(
        self,
        audience: str,
        lookup: KeyLookup,
        *,
        own_key: Ed25519PublicKey | None = None,
        on_unknown_kid: Callable[[], bool] | None = None,
        clock: Callable[[], float] = time.time,
        max_call_ttl_s: float = MAX_CALL_TTL_S,
        max_session_ttl_s: float = MAX_SESSION_TTL_S,
    ) -> None:
        self.audience = audience
        self._lookup = lookup
        self._own = TrustedKey(audience, own_key) if own_key is not None else None
        self._own_kid = key_id_of(own_key) if own_key is not None else ""
        self._on_unknown_kid = on_unknown_kid
        self._clock = clock
        self._max_call_ttl_s = max_call_ttl_s
        self._max_session_ttl_s = max_session_ttl_s
        self.replays = ReplayCache()
        # The replay cache starts empty: call tokens issued before this verifier existed are refused,
        # so a restart does not reopen the window for tokens seen by the previous process.
        self._born = clock()
        # A caller sends the same header segment on every call: parse it once (only well-formed ones are kept).
        self._headers: dict[str, str] = {}

    def _key_for(self, kid: str) -> TrustedKey:
        if self._own is not None and kid == self._own_kid:
            return self._own
        found = self._lookup(kid)
        if found is None and self._on_unknown_kid is not None and self._on_unknown_kid():
            found = self._lookup(kid)  # the account book changed on disk; look again once
        if found is None:
            raise Unauthenticated(f"token key id '{kid[:40]}' is not registered here")
        return found

    def verify(self, token: str) -> Claims:
        """The token's claims, once every check passed."""
        if not token:
            raise Unauthenticated("no token: send 'authorization: Bearer <JWT>'")
        if len(token) > MAX_TOKEN_CHARS:
            raise Unauthenticated(f"token longer than {MAX_TOKEN_CHARS} characters")
        parts = token.split(".")
        if len(parts) != 3:
            raise Unauthenticated("malformed token: expected header.claims.signature")
        head, body, sig = parts
        kid = self._kid_of(head)
        trusted = self._key_for(kid)
        now = self._clock()
        try:
            trusted.key.verify(_segment(sig, "signature"), f"{head}.{body}".encode("ascii"))
        except InvalidSignature:
            raise Unauthenticated("token signature does not verify") from None
        claims = _json_object(body, "claims")
        for name in _REQUIRED:
            if name not in claims:
                raise Unauthenticated(f"token lacks the '{name}' claim")
        aud = claims["aud"]
        if aud != self.audience and not (isinstance(aud, list) and self.audience in aud):
            raise Unauthenticated(f"token audience is not this SP ({self.audience})")
        if claims["iss"] != trusted.owner:
            raise Unauthenticated(f"token issuer does not own key '{kid[:40]}'")
        return self._check_claims(claims, trusted is self._own, now)

    def _kid_of(self, head: str) -> str:
        """The key id of a header that pins ``alg: EdDSA``; anything else is refused here, before any key."""
        kid = self._headers.get(head)
        if kid is not None:
            return kid
        header = _json_object(head, "header")
        alg = header.get("alg")
        if alg != ALGORITHM:
            raise Unauthenticated(f"token algorithm {str(alg)[:20]!r} refused: only {ALGORITHM} is accepted")
        if "crit" in header:
            raise Unauthenticated("token header names critical extensions; none are understood here")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise Unauthenticated("token header has no key id (kid)")
        if len(self._headers) >= _HEADER_CACHE_SIZE:
            self._headers.clear()
        self._headers[head] = kid
        return kid

    def _check_claims(self, claims: Mapping[str, Any], session: bool, now: float) -> Claims:
        sub, jti, exp, iat, nbf = claims["sub"], claims["jti"], claims["exp"], claims["iat"], claims["nbf"]
        if not all(isinstance(t, int | float) and not isinstance(t, bool) for t in (exp, iat, nbf)):
            raise Unauthenticated("token times (exp, nbf, iat) must be numbers")
        if now > exp + LEEWAY_S:
            raise Unauthenticated("token expired")
        if nbf > now + LEEWAY_S or iat > now + LEEWAY_S:
            raise Unauthenticated("token not yet valid (nbf or iat in the future)")
        obo = claims.get("obo", "")
        if not isinstance(sub, str) or not sub or not isinstance(jti, str) or not 8 <= len(jti) <= 128:
            raise Unauthenticated("token subject or id (jti) malformed")
        if not isinstance(obo, str) or len(obo) > MAX_OBO_CHARS:
            raise Unauthenticated("token 'obo' claim malformed")
        issuer = str(claims["iss"])
        limit = self._max_session_ttl_s if session else self._max_call_ttl_s
        if float(exp) - float(iat) > limit + LEEWAY_S or float(exp) - now > limit + LEEWAY_S:
            raise Unauthenticated(f"token lives longer than {limit:g} s")
        if not session:
            if iat < self._born - LEEWAY_S:
                raise Unauthenticated("call token issued before this broker started")
            if sub != issuer:
                raise Unauthenticated("a call token's subject must be its issuer")
            if not self.replays.first_use(issuer, jti, float(exp), now):
                raise Unauthenticated("token replayed: its id (jti) was seen before")
        return Claims(issuer, sub, self.audience, jti, float(exp), obo, session)


def _segment(text: str, what: str) -> bytes:
    """Strict base64url (no padding, no stray characters: the lenient decoder would skip them)."""
    if not _BASE64URL.fullmatch(text):
        raise Unauthenticated(f"malformed token: the {what} is not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise Unauthenticated(f"malformed token: the {what} is not base64url") from None


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(_segment(text, what))
    except ValueError:
        raise Unauthenticated(f"malformed token: the {what} is not JSON") from None
    if not isinstance(value, dict):
        raise Unauthenticated(f"malformed token: the {what} is not a JSON object")
    return value


def claimed_subject(token: str) -> str:
    """The ``sub`` a token claims, read without any check (for a client's own hints, never to trust)."""
    parts = token.split(".")
    if len(parts) != 3:
        return ""
    try:
        sub = _json_object(parts[1], "payload").get("sub", "")
    except Unauthenticated:
        return ""
    return sub if isinstance(sub, str) else ""


def bearer(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    """The token in gRPC invocation metadata (``authorization: Bearer …``), or ''."""
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return ""

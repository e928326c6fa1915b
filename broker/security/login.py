"""The login endpoint (aiohttp, HTTPS with client certificates): a user's password buys a short session token.

``POST /login`` with ``{"user": …, "password": …}`` answers ``{"token", "token_type": "Bearer",
"expires_at"}``. The user must hold a password in the account book, and the TLS client certificate
must name the same user (the token is only accepted from that certificate anyway). Wrong user and
wrong password give the same 401, after the same scrypt work, so the answer does not tell which.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import Any

from aiohttp import web

from broker.security.accounts import AccountBook, AccountKind, hash_password, verify_password
from broker.security.audit import AuditLog
from broker.security.auth import Principal
from broker.security.tokens import TokenMinter
from slicing.errors import FedError, PermissionDenied, ResourceExhausted, Unauthenticated

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 4096
# After this many failed logins for one user within the window, that user is refused until it passes.
MAX_FAILURES = 5
FAILURE_WINDOW_S = 60.0
# Compared against when the user is unknown, so that both failures cost one scrypt.
_DUMMY_HASH = hash_password("not a password")


def peer_name(request: web.Request) -> str:
    """The common name of the verified TLS client certificate of an aiohttp request, or ''."""
    cert: Any = request.transport.get_extra_info("peercert") if request.transport else None
    for rdn in (cert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return ""


class SessionIssuer:
    """Checks a user's password and mints a session token: the one core behind ``POST /login`` and the REST
    API's ``POST /fedbroker/v1/login``, with one failure count per user for both.

    Refusals are ``FedError``s (each surface encodes them its way): a certificate naming another user
    ``PermissionDenied``, too many failures ``ResourceExhausted``, a bad user or password
    ``Unauthenticated`` (the same words and the same scrypt work for both).
    """

    def __init__(
        self,
        sp_id: str,
        accounts: AccountBook,
        minter: TokenMinter,
        audit: AuditLog,
        *,
        session_ttl_s: float,
        clock: Callable[[], float],
    ) -> None:
        self._sp_id = sp_id
        self._accounts = accounts
        self._minter = minter
        self._audit = audit
        self._ttl_s = session_ttl_s
        self._clock = clock
        self._failures: dict[str, list[float]] = {}

    def _locked(self, user: str, now: float) -> bool:
        recent = [t for t in self._failures.get(user, ()) if now - t < FAILURE_WINDOW_S]
        if recent:
            self._failures[user] = recent
        else:
            self._failures.pop(user, None)
        return len(recent) >= MAX_FAILURES

    async def issue(self, user: str, password: str, *, peer: str, tls: bool) -> dict[str, Any]:
        """``{"token", "token_type", "expires_at"}`` for ``user`` if ``password`` is theirs (and, over TLS,
        the client certificate ``peer`` is theirs)."""
        if tls and peer != user:
            self._audit.record("Login", None, user, "PERMISSION_DENIED", "certificate names another user", peer=peer)
            raise PermissionDenied(f"the client certificate is not {user!r}'s", field="user")
        if self._locked(user, self._clock()):
            self._audit.record("Login", None, user, "RESOURCE_EXHAUSTED", "too many failed logins", peer=peer)
            raise ResourceExhausted("too many failed logins; try again later")
        # Counted as a failure *before* the check, with no await between the lock test and the count:
        # otherwise 30 concurrent guesses all pass the lock test while the first scrypt still runs.
        if len(self._failures) >= 10_000 and user not in self._failures:  # names tried are the caller's choice
            self._audit.record("Login", None, user, "RESOURCE_EXHAUSTED", "too many failing users", peer=peer)
            raise ResourceExhausted("too many failed logins; try again later")
        attempt = self._clock()
        self._failures.setdefault(user, []).append(attempt)
        self._accounts.reload()  # a stat: a password set since the start counts at once
        account = self._accounts.get(user)
        stored = account.password_hash if account and account.kind is AccountKind.USER else ""
        ok = await asyncio.to_thread(verify_password, password, stored or _DUMMY_HASH)
        if not (ok and stored):
            self._audit.record("Login", None, user, "UNAUTHENTICATED", "bad user or password", peer=peer)
            raise Unauthenticated("bad user or password")
        pending = self._failures.get(user, [])
        if attempt in pending:  # it was not a failure after all
            pending.remove(attempt)
        if not pending:
            self._failures.pop(user, None)
        token = self._minter.mint(self._sp_id, subject=user, ttl_s=self._ttl_s)
        assert account is not None
        who = Principal(account.id, account.role, peer=peer)
        self._audit.record("Login", who, user, "OK", f"session token for {self._ttl_s:g} s")
        return {"token": token, "token_type": "Bearer", "expires_at": int(self._clock() + self._ttl_s)}


#: ``POST /login``'s status for each refusal (its answers are ``{"error": …}``, as before the REST API).
_LOGIN_STATUS = {"PERMISSION_DENIED": 403, "RESOURCE_EXHAUSTED": 429, "UNAUTHENTICATED": 401}


class LoginEndpoint:
    """Issues session tokens to users; its own port, its own TLS context (client certificates required)."""

    def __init__(self, issuer: SessionIssuer, *, ssl_context: ssl.SSLContext | None) -> None:
        self._ssl = ssl_context
        self.issuer = issuer
        self._runner: web.AppRunner | None = None
        self.address = ""

    async def _login(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": "body: expected JSON {user, password}"}, status=400)
        user, password = (body.get("user"), body.get("password")) if isinstance(body, dict) else (None, None)
        if not isinstance(user, str) or not isinstance(password, str) or len(user) > 64 or len(password) > 1024:
            return web.json_response({"error": "body: expected JSON {user, password} (strings)"}, status=400)
        try:
            answer = await self.issuer.issue(user, password, peer=peer_name(request), tls=self._ssl is not None)
        except FedError as exc:
            return web.json_response({"error": str(exc)}, status=_LOGIN_STATUS.get(exc.code.value, 400))
        return web.json_response(answer)

    async def start(self, listen: str) -> str:
        """Serve on ``listen`` (HOST:PORT, port 0 for any); returns the bound address."""
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_post("/login", self._login)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        host, _, port = listen.rpartition(":")
        site = web.TCPSite(self._runner, host, int(port), ssl_context=self._ssl)
        await site.start()
        bound = int(self._runner.addresses[0][1]) if self._runner.addresses else int(port)
        self.address = f"{host}:{bound}"
        log.info("login endpoint on %s://%s/login", "https" if self._ssl else "http", self.address)
        return self.address

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def server_ssl_context(ca: bytes, cert_path: str, key_path: str) -> ssl.SSLContext:
    """A TLS server context that requires a client certificate from ``ca``."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cadata=ca.decode())
    ctx.load_cert_chain(cert_path, key_path)
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx

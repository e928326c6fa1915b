"""The REST API on ``rest_listen`` (aiohttp): HTTPS with client certificates, the gRPC API's tokens and roles.

Every operation of ``broker.api.rest_openapi.ROUTES`` is served here through one gate: the TLS
peer's name and the bearer token are checked by the same ``Guard`` as every gRPC call (the route's
``rpc`` names its policy), writes are audited with their outcome, and a ``FedError`` becomes its
HTTP status through the one table below, with a TMF error body naming the field. Anything else that
goes wrong is a bug: it is logged and answered 500, never a traceback to the caller.

=====================  ======  =====================================================
FedError code          HTTP    why
=====================  ======  =====================================================
INVALID_ARGUMENT       400     the body or a parameter is wrong (``field`` names it)
UNAUTHENTICATED        401     no or bad token, no client certificate
PERMISSION_DENIED      403     the role may not do this
NOT_FOUND              404     also another customer's resource, in the same words
ALREADY_EXISTS         409     an ``externalId`` used with another request
FAILED_PRECONDITION    409     the resource is in the wrong state for this
RESOURCE_EXHAUSTED     429     too many subscriptions, no capacity left
UNAVAILABLE            503     a lower SP did not answer
DEADLINE_EXCEEDED      504     a lower SP answered too late
INTERNAL               500     a bug
=====================  ======  =====================================================
"""

from __future__ import annotations

import json
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ValidationError

from broker.api.rest_models import Error, dump
from broker.api.rest_openapi import ROUTES, Route, document
from broker.security.audit import AuditLog
from broker.security.auth import Guard, Principal
from broker.security.login import peer_name
from slicing.errors import ErrorCode, FedError, InvalidArgument

log = logging.getLogger(__name__)
#: The largest request body read (an order is a few hundred bytes).
MAX_BODY_BYTES = 64 * 1024

HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_ARGUMENT: 400,
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.PERMISSION_DENIED: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.ALREADY_EXISTS: 409,
    ErrorCode.FAILED_PRECONDITION: 409,
    ErrorCode.RESOURCE_EXHAUSTED: 429,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.DEADLINE_EXCEEDED: 504,
    ErrorCode.INTERNAL: 500,
}
_CODE_OF_STATUS = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 405: "INVALID_ARGUMENT", 413: "INVALID_ARGUMENT"}

Handler = Callable[[web.Request, Principal], Awaitable[web.StreamResponse]]
#: The handler of a ``public`` route: no principal (it is how a user gets a token).
PublicHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(code: str, status: int, reason: str, field: str = "") -> web.Response:
    """A TMF error body (``application/json``)."""
    body = Error(code=code, reason=reason[:2000], message=reason[:2000], status=str(status), field=field)
    return web.json_response(dump(body), status=status)


def fed_error_response(exc: FedError) -> web.Response:
    """The answer for a ``FedError``, by the one table."""
    return error_response(exc.code.value, HTTP_STATUS[exc.code], str(exc), exc.field)


async def read_body(request: web.Request, model: type[BaseModel]) -> Any:
    """The request's JSON body as ``model``; ``InvalidArgument`` naming the first bad field otherwise."""
    try:
        data = await request.json(loads=json.loads)
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgument("body", "not JSON; send an application/json object") from None
    except RecursionError:  # nested deeper than the decoder goes: no body of this API is
        raise InvalidArgument("body", "nested too deeply") from None
    if not isinstance(data, dict):
        raise InvalidArgument("body", f"must be a JSON object ({model.__name__})")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"]).lstrip(".") or "body"
        raise InvalidArgument(where, str(first["msg"]).removeprefix("Value error, ")) from None


def query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter within ``[low, high]``."""
    text = request.query.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise InvalidArgument(name, f"must be a whole number from {low} to {high}, got {text[:20]!r}") from None
    if not low <= value <= high:
        raise InvalidArgument(name, f"must be from {low} to {high}, got {value}")
    return value


def selected(body: Mapping[str, Any], fields: str) -> dict[str, Any]:
    """``body`` with only the attributes ``fields`` names (TMF attribute selection); id, href and @type always.

    A dotted name selects inside an attribute (``serviceOrderItem.state``), through lists too.
    """
    paths = [tuple(f.strip().split(".")) for f in fields.split(",") if f.strip()]
    if not paths:
        return dict(body)
    return _pick(body, paths)


_ALWAYS = ("id", "href", "@type")


def _pick(body: Mapping[str, Any], paths: list[tuple[str, ...]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in body.items():
        inner = [p[1:] for p in paths if p[0] == key]
        if key in _ALWAYS or any(not p for p in inner):
            out[key] = value
        elif inner:
            out[key] = _within(value, inner)
    return out


def _within(value: Any, paths: list[tuple[str, ...]]) -> Any:
    if isinstance(value, Mapping):
        return _pick(value, paths)
    if isinstance(value, list):
        return [_within(v, paths) for v in value]
    return value  # a plain value has nothing inside to select: it is sent whole


@web.middleware
async def _json_errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> Any:
    """aiohttp's own refusals (no such route, wrong method, body too large) as TMF error bodies too."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _CODE_OF_STATUS.get(exc.status, "INVALID_ARGUMENT")
        return error_response(code, exc.status, exc.reason or exc.text or "refused")


class RestApi:
    """The aiohttp application of the REST API, and its listener."""

    def __init__(
        self,
        sp_id: str,
        guard: Guard,
        audit: AuditLog,
        handlers: Mapping[str, Handler],
        *,
        public: Mapping[str, PublicHandler] | None = None,
        observe: Callable[[str, str, float], None] | None = None,
        pages: Callable[[web.Application], None] | None = None,
    ) -> None:
        public = public or {}
        missing = [r.operation_id for r in ROUTES if r.operation_id not in (public if r.public else handlers)]
        if missing:
            raise TypeError(f"no handler for {', '.join(missing)}")
        self._sp_id = sp_id
        self._guard = guard
        self._audit = audit
        self._handlers = dict(handlers)
        self._public = dict(public)
        self._observe = observe
        self._pages = pages  # the web view's files (broker.api.rest_web), served without a token
        self._runner: web.AppRunner | None = None
        self._tls = False
        self.address = ""

    def app(self) -> web.Application:
        """The application: every route of the table through the gate, and ``/openapi.json``."""
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[_json_errors])
        for route in ROUTES:
            app.router.add_route(route.method, route.path, self._gated(route))
        app.router.add_get("/openapi.json", self._openapi)
        if self._pages is not None:
            self._pages(app)
        return app

    async def _openapi(self, request: web.Request) -> web.Response:
        # A client certificate is enough (the TLS handshake required it): the document is no secret.
        base = f"{'https' if self._tls else 'http'}://{request.host}"
        return web.json_response(document(self._sp_id, base))

    def _gated(self, route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        if route.public:
            return self._open(route, self._public[route.operation_id])
        handler = self._handlers[route.operation_id]
        audited = route.method != "GET"
        known = frozenset(p.name for p in route.params if p.where == "query")

        async def gated(request: web.Request) -> web.StreamResponse:
            started = time.perf_counter()
            peer = peer_name(request)
            principal: Principal | None = None
            try:
                token = _bearer(request) or (request.query.get("access_token", "") if route.query_token else "")
                principal = self._guard.check_call(peer, token, route.rpc)
                _only_known(request, known)
                response = await handler(request, principal)
            except FedError as exc:
                self._observed(route, exc.code.value, started)
                if audited:  # as on gRPC: every state-changing call, refusals included
                    self._audit.record(route.rpc, principal, _target(request), exc.code.value, str(exc), peer=peer)
                return fed_error_response(exc)
            except web.HTTPException as exc:  # aiohttp's own refusal (a body too large): the middleware answers
                self._observed(route, _CODE_OF_STATUS.get(exc.status, "INVALID_ARGUMENT"), started)
                if audited:
                    why = exc.reason or str(exc.status)
                    self._audit.record(route.rpc, principal, _target(request), "INVALID_ARGUMENT", why, peer=peer)
                raise
            except Exception as exc:  # a bug: on the record, answered 500 without a traceback
                log.exception("REST %s %s failed", route.method, route.path)
                self._observed(route, "INTERNAL", started)
                if audited:
                    self._audit.record(route.rpc, principal, _target(request), "INTERNAL", repr(exc), peer=peer)
                return error_response("INTERNAL", 500, "internal error (logged at the broker)")
            self._observed(route, "OK", started)
            if audited:
                self._audit.record(route.rpc, principal, _target(request), "OK", str(request.get("outcome", "")))
            return response

        return gated

    def _open(self, route: Route, handler: PublicHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """A route without a token (the handler audits what it does): its errors by the same table."""
        known = frozenset(p.name for p in route.params if p.where == "query")

        async def gated(request: web.Request) -> web.StreamResponse:
            started = time.perf_counter()
            try:
                _only_known(request, known)
                response = await handler(request)
            except FedError as exc:
                self._observed(route, exc.code.value, started)
                return fed_error_response(exc)
            except web.HTTPException:
                self._observed(route, "INVALID_ARGUMENT", started)
                raise
            except Exception:  # a bug: on the record, answered 500 without a traceback
                log.exception("REST %s %s failed", route.method, route.path)
                self._observed(route, "INTERNAL", started)
                return error_response("INTERNAL", 500, "internal error (logged at the broker)")
            self._observed(route, "OK", started)
            return response

        return gated

    def _observed(self, route: Route, code: str, started: float) -> None:
        if self._observe is not None:
            self._observe(f"REST {route.operation_id}", code, time.perf_counter() - started)

    async def start(self, listen: str, ssl_context: ssl.SSLContext | None) -> str:
        """Serve on ``listen`` (HOST:PORT, port 0 for any): HTTPS when ``ssl_context`` is given; the bound address."""
        self._tls = ssl_context is not None
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        host, _, port = listen.rpartition(":")
        site = web.TCPSite(self._runner, host, int(port), ssl_context=ssl_context)
        await site.start()
        bound = int(self._runner.addresses[0][1]) if self._runner.addresses else int(port)
        self.address = f"{host}:{bound}"
        log.info("REST API on %s://%s/tmf-api/", "https" if self._tls else "http", self.address)
        return self.address

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def _only_known(request: web.Request, known: frozenset[str]) -> None:
    """Refuse a query parameter the operation does not take (a misspelt filter must not silently list all)."""
    for name in request.query:
        if name not in known:
            takes = ", ".join(sorted(known)) or "none"
            raise InvalidArgument(name[:60], f"is not a query parameter of this operation (it takes: {takes})")


def _bearer(request: web.Request) -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _target(request: web.Request) -> str:
    return str(request.get("target") or request.match_info.get("id", ""))[:200]


__all__ = [
    "HTTP_STATUS",
    "MAX_BODY_BYTES",
    "PublicHandler",
    "RestApi",
    "error_response",
    "query_int",
    "read_body",
    "selected",
]

"""Event notifications of the REST API: the TMF hub (``POST /hub`` with a callback URL) and a Server-Sent Events stream.

Both carry the same events, made from the slice events gRPC's Watch streams (``SliceManager.watch``)
and filtered by the same tenancy: a ``ServiceStateChangeEvent`` per state change of a slice, a
``ServiceOrderStateChangeEvent`` beside it when an order placed the slice, a ``ServiceAlertEvent``
per alert (a peer SP reads this SP as the source, as on Watch).

Callbacks are POSTed as JSON, one event each, only to hosts the SP allows (``rest_callback_hosts``,
loopback by default: a callback URL is the caller's choice, and the broker must not be made to call
anywhere on its network). A subscription is kept in the store until it is deleted, and delivered to
again after a restart (events while the broker was down are not replayed); a callback that fails is
logged and the next event tried, and a slow one loses its oldest events, as a slow watcher does.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import ssl
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from broker.api import rest_models as m
from broker.api.rest import read_body
from broker.api.rest_tmf import alert_json, alerts_seen, iso, order_of, service_of
from broker.api.servicers import owned_slice, seen_by
from broker.core.events import SliceEvent, until_set
from broker.core.lifecycle import SliceManager
from broker.core.monitoring import Monitor
from broker.core.orders import OrderDesk
from broker.core.storage import SliceStore
from broker.security.accounts import Role
from broker.security.auth import Principal
from fedbroker.v1 import northsouth_pb2 as pb
from slicing.errors import InvalidArgument, NotFound, ResourceExhausted

log = logging.getLogger(__name__)
MAX_SUBSCRIPTIONS = 256
MAX_PER_CALLER = 16
CALLBACK_TIMEOUT_S = 5.0
KEEPALIVE_S = 15.0


@dataclass(frozen=True)
class Subscription:
    """One hub registration: whose, where to, and the task delivering to it."""

    id: str
    principal: Principal
    callback: str
    query: str
    task: asyncio.Task[None]


def _principal_data(principal: Principal) -> dict[str, str]:
    """Who a subscription is for, as plain data to keep."""
    return {
        "id": principal.id,
        "role": principal.role.value,
        "on_behalf_of": principal.on_behalf_of,
        "peer": principal.peer,
    }


def _loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_callback(url: str, allowed_hosts: Iterable[str]) -> str:
    """``url`` if it is an http(s) URL to an allowed host (loopback, or one listed); ``InvalidArgument`` else."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        raise InvalidArgument("callback", "must be an http:// or https:// URL with a host")
    if not (_loopback(host) or host in {h.lower() for h in allowed_hosts}):
        raise InvalidArgument(
            "callback", f"host {host[:100]!r} is not allowed here (loopback, or one of the SP's rest_callback_hosts)"
        )
    try:
        _ = parts.port
    except ValueError:
        raise InvalidArgument("callback", "has a port that is not a number from 0 to 65535") from None
    return url


class EventHub:
    """The hub's subscriptions and the SSE streams of one broker, fed from the slice events."""

    def __init__(
        self,
        sp_id: str,
        manager: SliceManager,
        orders: OrderDesk,
        *,
        allowed_hosts: Iterable[str] = (),
        client_ssl: Callable[[], ssl.SSLContext] | None = None,
        monitor: Monitor | None = None,
        store: SliceStore | None = None,
    ) -> None:
        self._sp = sp_id
        self._store = store
        self._monitor = monitor
        self._m = manager
        self._orders = orders
        self._allowed = tuple(allowed_hosts)
        self._client_ssl = client_ssl
        self._subs: dict[str, Subscription] = {}
        self._closing = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None

    # --- events -----------------------------------------------------------------------------------

    def encode(self, ev: SliceEvent, principal: Principal) -> list[m.EventOut]:
        """The events one slice event makes for ``principal`` (none when the slice is not theirs)."""
        rec = self._m.get_or_none(ev.slice_id)
        if rec is None or not principal.owns(rec.requester):
            return []
        at = iso(ev.at)
        if ev.alert is not None:
            alert = alert_json(seen_by(ev.alert, principal, self._sp))
            body = {"service": {"id": rec.id, "href": f"/tmf-api/serviceInventory/v4/service/{rec.id}"}, "alert": alert}
            return [m.EventOut(eventId=uuid.uuid4().hex, eventTime=at, eventType="ServiceAlertEvent", event=body)]
        out = [
            m.EventOut(
                eventId=uuid.uuid4().hex,
                eventTime=at,
                eventType="ServiceStateChangeEvent",
                event={
                    "service": m.dump(service_of(rec, self._sp, alerts_seen(self._monitor, rec, principal, self._sp)))
                },
            )
        ]
        view = self._orders.for_slice(rec)
        if view is not None:
            order = m.dump(order_of(view, self._sp))
            out.append(
                m.EventOut(
                    eventId=uuid.uuid4().hex,
                    eventTime=at,
                    eventType="ServiceOrderStateChangeEvent",
                    event={"serviceOrder": order},
                )
            )
        return out

    async def events(
        self, principal: Principal, *, initial: bool = False, slice_id: str = ""
    ) -> AsyncIterator[m.EventOut]:
        """The caller's events until the hub closes (``initial``: every visible slice's state first)."""
        source = until_set(self._m.watch(slice_id, initial), self._closing)
        try:
            async for ev in source:
                for event in self.encode(ev, principal):
                    yield event
        finally:
            await source.aclose()  # type: ignore[attr-defined]

    # --- the hub ------------------------------------------------------------------------------------

    async def _deliver(self, sub_id: str, principal: Principal, callback: str, slice_id: str) -> None:
        async for event in self.events(principal, slice_id=slice_id):
            try:
                if self._session is None:
                    self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CALLBACK_TIMEOUT_S))
                tls = self._client_ssl() if callback.startswith("https:") and self._client_ssl else None
                async with self._session.post(callback, json=m.dump(event), ssl=tls if tls else True) as reply:
                    if reply.status >= 300:
                        log.info("hub %s: callback %s answered %d", sub_id, callback, reply.status)
            except (aiohttp.ClientError, TimeoutError, ssl.SSLError) as exc:
                log.info("hub %s: callback %s failed: %s", sub_id, callback, exc)

    def _own(self, request: web.Request, principal: Principal) -> Subscription:
        sub = self._subs.get(request.match_info["id"])
        if sub is None or not principal.owns(sub.principal.id):
            raise NotFound(f"hub subscription '{request.match_info['id'][:200]}' does not exist")
        return sub

    @staticmethod
    def _out(sub: Subscription) -> m.HubOut:
        return m.HubOut(id=sub.id, callback=sub.callback, query=sub.query)

    async def register(self, request: web.Request, principal: Principal) -> web.StreamResponse:
        """``POST /hub``: ``query`` may be ``id=SLICE_ID`` (one of the caller's slices) or empty (all)."""
        body: m.HubCreate = await read_body(request, m.HubCreate)
        callback = check_callback(body.callback, self._allowed)
        if body.query:
            key, _, value = body.query.partition("=")
            if key != "id" or not value:
                raise InvalidArgument("query", "must be empty (every event) or id=SLICE_ID")
            owned_slice(self._m, principal, pb.SliceRef(slice_id=value))  # one of the caller's, or 404
        mine = sum(1 for s in self._subs.values() if s.principal.id == principal.id)
        if len(self._subs) >= MAX_SUBSCRIPTIONS or mine >= MAX_PER_CALLER:
            raise ResourceExhausted(
                f"at most {MAX_PER_CALLER} hub subscriptions per caller, {MAX_SUBSCRIPTIONS} in all"
            )
        sub_id = uuid.uuid4().hex
        if self._store is not None:  # kept before it is answered: a restart does not lose it
            self._store.save_subscription(sub_id, _principal_data(principal), callback, body.query)
        sub = self._start(sub_id, principal, callback, body.query)
        request["target"] = sub_id
        return web.json_response(m.dump(self._out(sub)), status=201)

    def _start(self, sub_id: str, principal: Principal, callback: str, query: str) -> Subscription:
        slice_id = query.partition("=")[2]
        task = asyncio.get_running_loop().create_task(
            self._deliver(sub_id, principal, callback, slice_id), name=f"hub-{sub_id}"
        )
        sub = self._subs[sub_id] = Subscription(sub_id, principal, callback, query, task)
        return sub

    def restore(self, still_allowed: Callable[[Principal], bool]) -> int:
        """After a start: deliver again to every kept subscription whose account still holds its role.

        One whose account is gone or changed role, or whose callback is no longer allowed here, is
        dropped (and logged). Returns how many were restored.
        """
        if self._store is None:
            return 0
        restored = 0
        for sub_id, data, callback, query in self._store.subscriptions():
            try:
                principal = Principal(
                    str(data["id"]),
                    Role(str(data["role"])),
                    str(data.get("on_behalf_of", "")),
                    str(data.get("peer", "")),
                )
                check_callback(callback, self._allowed)
                if not still_allowed(principal):
                    raise InvalidArgument("account", f"'{principal.id}' no longer has role {principal.role}")
            except (KeyError, ValueError, InvalidArgument) as exc:
                log.warning("hub %s: not restored (%s); dropped", sub_id, exc)
                self._store.drop_subscription(sub_id)
                continue
            self._start(sub_id, principal, callback, query)
            restored += 1
        return restored

    async def retrieve(self, request: web.Request, principal: Principal) -> web.StreamResponse:
        """``GET /hub/{id}``."""
        return web.json_response(m.dump(self._out(self._own(request, principal))))

    async def unregister(self, request: web.Request, principal: Principal) -> web.StreamResponse:
        """``DELETE /hub/{id}``."""
        sub = self._own(request, principal)
        if self._store is not None:
            self._store.drop_subscription(sub.id)
        del self._subs[sub.id]
        sub.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sub.task
        return web.Response(status=204)

    # --- Server-Sent Events ---------------------------------------------------------------------------

    async def stream(self, request: web.Request, principal: Principal) -> web.StreamResponse:
        """``GET /events``: one ``data:`` line per event, a comment every ``KEEPALIVE_S`` of silence."""
        initial = request.query.get("initial", "false")
        if initial not in ("true", "false"):
            raise InvalidArgument("initial", f"must be true or false, got {initial[:20]!r}")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        await response.write(b": connected\n\n")
        events = self.events(principal, initial=initial == "true")
        nxt: asyncio.Future[m.EventOut] | None = None
        try:
            while True:
                if nxt is None:
                    nxt = asyncio.ensure_future(anext(events))
                # Not wait_for: a timeout must not cancel the pending read (that would end the stream).
                done, _ = await asyncio.wait((nxt,), timeout=KEEPALIVE_S)
                if not done:
                    await response.write(b": keep-alive\n\n")
                    continue
                try:
                    event = nxt.result()
                except StopAsyncIteration:
                    break
                nxt = None
                line = json.dumps(m.dump(event), separators=(",", ":"))
                await response.write(f"event: {event.eventType}\nid: {event.eventId}\ndata: {line}\n\n".encode())
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            pass  # the browser went away
        finally:
            if nxt is not None and not nxt.done():
                nxt.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await nxt
            await events.aclose()  # type: ignore[attr-defined]
        return response

    async def close(self) -> None:
        """End every stream and subscription (at shutdown)."""
        self._closing.set()
        tasks = [s.task for s in self._subs.values()]
        self._subs.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None


__all__ = ["EventHub", "check_callback"]

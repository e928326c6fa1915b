"""Event notifications of the REST API: the TMF hub (``POST /hub`` with a callback URL) and a Server-Sent Events stream.

Both carry the same events, made from the slice events gRPC's Watch streams (``SliceManager.watch``)
and filtered by the same tenancy: a ``ServiceStateChangeEvent`` per state change of a slice, a
``ServiceOrderStateChangeEvent`` beside it when an order placed the slice, a ``ServiceAlertEvent``
per alert (a peer SP reads this SP as the source, as on Watch).

Every event is numbered and kept (``broker.api.rest_journal``): the SSE stream sends each with its
number as ``id:`` and resumes after ``Last-Event-ID`` (or ``?lastEventId=``), and the hub reads the
same log. Callbacks are POSTed as JSON, one event each, only to hosts the SP allows
(``rest_callback_hosts``, loopback by default: a callback URL is the caller's choice, and the broker
must not be made to call anywhere on its network). A subscription is kept in the store until it is
deleted, and delivered to again after a restart (from the events after the restart); a callback
that fails is logged and the next event tried. A subscription or stream whose account is removed or
no longer has its role ends at its next event: the subscription is dropped, with the reason logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import ssl
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from broker.api import rest_models as m
from broker.api.rest import read_body
from broker.api.rest_journal import BATCH, EventLog, Row
from broker.api.rest_tmf import alert_json, alerts_seen, iso, order_of, service_of
from broker.api.servicers import owned_slice, seen_by
from broker.core.events import SliceEvent
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
#: How soon a browser's EventSource tries again after its stream broke (its own default is about 3 s, and
#: some back off further): a broker restart takes a few seconds, so a page is live again soon after.
RETRY_MS = 2000
#: Events kept for clients that reconnect, unless the SP's ``retention.events_max`` says otherwise.
EVENTS_KEPT = 10_000
#: The largest event number a client may send back (a JavaScript number stays exact below 2**53).
MAX_EVENT_ID = 2**53 - 1


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
        store: SliceStore,
        still_allowed: Callable[[Principal], bool] = lambda _: True,
        keep_events: int = EVENTS_KEPT,
    ) -> None:
        self._sp = sp_id
        self._store = store
        self._allowed_now = still_allowed
        self._monitor = monitor
        self._m = manager
        self._orders = orders
        self._allowed = tuple(allowed_hosts)
        self._client_ssl = client_ssl
        self._subs: dict[str, Subscription] = {}
        self._closing = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self.log = EventLog(store, self._rows, keep=keep_events)
        self._untap = manager.tap(self.log.record)

    # --- events -----------------------------------------------------------------------------------

    def encode(self, ev: SliceEvent, principal: Principal, event_id: str = "") -> list[m.EventOut]:
        """The events one slice event makes for ``principal`` (none when the slice is not theirs)."""
        rec = self._m.get_or_none(ev.slice_id)
        if rec is None or not principal.owns(rec.requester):
            return []
        at = iso(ev.at)
        if ev.alert is not None:
            alert = alert_json(seen_by(ev.alert, principal, self._sp))
            body = {"service": {"id": rec.id, "href": f"/tmf-api/serviceInventory/v4/service/{rec.id}"}, "alert": alert}
            return [m.EventOut(eventId=event_id, eventTime=at, eventType="ServiceAlertEvent", event=body)]
        service = service_of(rec, self._sp, alerts_seen(self._monitor, rec, principal, self._sp))
        out = [
            m.EventOut(
                eventId=event_id,
                eventTime=at,
                eventType="ServiceStateChangeEvent",
                event={"service": m.dump(service)},
            )
        ]
        view = self._orders.for_slice(rec)
        if view is not None:
            order = m.dump(order_of(view, self._sp))
            out.append(
                m.EventOut(
                    eventId=event_id,
                    eventTime=at,
                    eventType="ServiceOrderStateChangeEvent",
                    event={"serviceOrder": order},
                )
            )
        return out

    def _rows(self, ev: SliceEvent) -> list[Row]:
        """What the event log keeps of one slice event: each REST event as its owner and an operator read it,
        and as an SP above reads it when that differs (an alert names this SP as its source there)."""
        rec = self._m.get_or_none(ev.slice_id)
        if rec is None:
            return []
        mine = self.encode(ev, Principal(rec.requester, Role.OPERATOR))
        alerting = ev.alert is not None or (self._monitor is not None and bool(self._monitor.open_alerts(rec.id)))
        above = self.encode(ev, Principal(rec.requester, Role.PEER_SP)) if alerting else mine
        alert = f"|{ev.alert.cause}|{ev.alert.status}|{ev.alert.at!r}" if ev.alert is not None else ""
        rows: list[Row] = []
        for own, up in zip(mine, above, strict=True):
            body = json.dumps(m.dump(own), separators=(",", ":"))
            high = json.dumps(m.dump(up), separators=(",", ":"))
            key = f"{ev.slice_id}|{ev.state}|{ev.at!r}|{own.eventType}{alert}"
            rows.append((key, rec.requester, rec.id, body, high if high != body else ""))
        return rows

    def _snapshot(self, principal: Principal) -> list[m.EventOut]:
        """Every visible slice's current state, as events without a number (``initial=true``)."""
        out: list[m.EventOut] = []
        for rec in self._m.slices():
            if principal.owns(rec.requester):
                ev = SliceEvent(rec.id, rec.state, rec.updated_at, rec.reason)
                out += [e for e in self.encode(ev, principal) if e.eventType == "ServiceStateChangeEvent"]
        return out

    def _revoked(self, principal: Principal) -> str:
        """Why ``principal`` may no longer be told events ('' while it may)."""
        if self._allowed_now(principal):
            return ""
        return f"account '{principal.id}' no longer exists with role {principal.role}"

    # --- the hub ------------------------------------------------------------------------------------

    async def _deliver(self, sub_id: str, principal: Principal, callback: str, slice_id: str, cursor: int) -> None:
        """Post each event after ``cursor`` to the callback, keeping how far it got (a restart goes on from there).

        Delivery is at least once across a restart: a batch posted but not yet recorded is posted again.
        """
        while not self._closing.is_set():
            why = self._revoked(principal)
            if why:  # checked before every delivery, and at least every KEEPALIVE_S without one
                log.warning("hub %s: dropped, its deliveries stopped: %s", sub_id, why)
                self._store.drop_subscription(sub_id)
                self._subs.pop(sub_id, None)
                return
            seen = self.log.head
            batch = self.log.after(cursor, principal, slice_id)
            revoked = False
            for number, event in batch:
                if self._revoked(principal):
                    revoked = True  # dropped at the top of the loop
                    break
                await self._post(sub_id, callback, event)
                cursor = number
            if batch:
                self._store.save_hub_delivered(sub_id, cursor)
            if not revoked and len(batch) < BATCH:
                await self.log.grown(seen, KEEPALIVE_S)

    async def _post(self, sub_id: str, callback: str, event: dict[str, object]) -> None:
        try:
            if self._session is None:
                self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CALLBACK_TIMEOUT_S))
            tls = self._client_ssl() if callback.startswith("https:") and self._client_ssl else None
            async with self._session.post(callback, json=event, ssl=tls if tls else True) as reply:
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
        # Kept before it is answered: a restart does not lose it.
        self._store.save_subscription(sub_id, _principal_data(principal), callback, body.query)
        cursor = self.log.head  # the events after the subscription
        self._store.save_hub_delivered(sub_id, cursor)
        sub = self._start(sub_id, principal, callback, body.query, cursor)
        request["target"] = sub_id
        return web.json_response(m.dump(self._out(sub)), status=201)

    def _start(self, sub_id: str, principal: Principal, callback: str, query: str, cursor: int) -> Subscription:
        slice_id = query.partition("=")[2]
        task = asyncio.get_running_loop().create_task(
            self._deliver(sub_id, principal, callback, slice_id, cursor), name=f"hub-{sub_id}"
        )
        sub = self._subs[sub_id] = Subscription(sub_id, principal, callback, query, task)
        return sub

    def restore(self, still_allowed: Callable[[Principal], bool]) -> int:
        """After a start: deliver again to every kept subscription whose account still holds its role,
        from the event after the last one it was sent (what happened while the broker was down included).

        One whose account is gone or changed role, or whose callback is no longer allowed here, is
        dropped (and logged). Returns how many were restored.
        """
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
            # Where its deliveries stopped: what happened while the broker was down is sent now.
            cursor, lost = self.log.resume(self._store.hub_delivered(sub_id))
            if lost:
                log.warning("hub %s: %s", sub_id, lost)
            self._start(sub_id, principal, callback, query, cursor)
            restored += 1
        return restored

    async def retrieve(self, request: web.Request, principal: Principal) -> web.StreamResponse:
        """``GET /hub/{id}``."""
        return web.json_response(m.dump(self._out(self._own(request, principal))))

    async def unregister(self, request: web.Request, principal: Principal) -> web.StreamResponse:
        """``DELETE /hub/{id}``."""
        sub = self._own(request, principal)
        self._store.drop_subscription(sub.id)
        del self._subs[sub.id]
        sub.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sub.task
        return web.Response(status=204)

    # --- Server-Sent Events ---------------------------------------------------------------------------

    @staticmethod
    def _last_event_id(request: web.Request) -> int | None:
        """The event a reconnecting client got last: the ``Last-Event-ID`` header (an EventSource sends it),
        else the ``lastEventId`` query parameter; None for a new client."""
        name, text = "Last-Event-ID", request.headers.get("Last-Event-ID")
        if text is None:
            name, text = "lastEventId", request.query.get("lastEventId")
        if text is None or text.strip() == "":
            return None
        text = text.strip()
        if not (text.isascii() and text.isdigit()) or int(text) > MAX_EVENT_ID:
            raise InvalidArgument(
                name, f"must be the id of an event this stream sent (a whole number), got {text[:30]!r}"
            )
        return int(text)

    async def stream(self, request: web.Request, principal: Principal) -> web.StreamResponse:
        """``GET /events``: each event with its number as ``id:``; resumed after ``Last-Event-ID``.

        A new stream starts with an ``id:`` of the newest event, so it can be resumed before its first
        event; one resumed from an id too old (or unknown) gets ``event: reset`` first, with the reason.
        """
        initial = request.query.get("initial", "false")
        if initial not in ("true", "false"):
            raise InvalidArgument("initial", f"must be true or false, got {initial[:20]!r}")
        cursor, reset = self.log.resume(self._last_event_id(request))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        try:
            await response.write(f": connected\nretry: {RETRY_MS}\n".encode())
            if reset:
                why = json.dumps({"reason": reset, "lastEventId": str(cursor)})
                await response.write(f"event: reset\nid: {cursor}\ndata: {why}\n\n".encode())
            else:
                await response.write(f"id: {cursor}\n\n".encode())  # sets the client's last id; no event
            for event in self._snapshot(principal) if initial == "true" else ():
                await response.write(self._message(m.dump(event), number=None))
            while not self._closing.is_set() and not self._revoked(principal):
                seen = self.log.head
                batch = self.log.after(cursor, principal)
                if batch:  # one write a batch: a connection that is gone fails once, not once an event
                    await response.write(b"".join(self._message(body, number) for number, body in batch))
                    cursor = batch[-1][0]
                if len(batch) < BATCH and not await self.log.grown(seen, KEEPALIVE_S):
                    await response.write(b": keep-alive\n\n")
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            pass  # the browser went away
        return response

    @staticmethod
    def _message(event: dict[str, object], number: int | None) -> bytes:
        line = json.dumps(event, separators=(",", ":"))
        ident = f"id: {number}\n" if number is not None else ""
        return f"event: {event['eventType']}\n{ident}data: {line}\n\n".encode()

    async def close(self) -> None:
        """End every stream and subscription (at shutdown)."""
        self._closing.set()
        self._untap()
        self.log.close()
        tasks = [s.task for s in self._subs.values()]
        self._subs.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None


__all__ = ["EventHub", "check_callback"]

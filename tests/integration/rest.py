"""A client of a broker process's REST API for the tests: HTTPS with a certificate, a fresh token per call."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from scenarios.processes import BrokerProcess, Fleet

ORDERING = "/tmf-api/serviceOrdering/v4"
INVENTORY = "/tmf-api/serviceInventory/v4"
CATALOG = "/tmf-api/serviceCatalog/v4"


def rest_address(broker: BrokerProcess) -> str:
    """The REST API's bound address, as the broker wrote it at start."""
    return (broker.data_dir / "rest_address").read_text().strip()


@dataclass
class Answer:
    """One answer: status, headers and the decoded JSON body (None when there is none)."""

    status: int
    body: Any
    headers: dict[str, str]


class RestClient:
    """Calls one broker's REST API as one principal of a fleet."""

    def __init__(self, fleet: Fleet, sp_id: str, name: str, session: aiohttp.ClientSession) -> None:
        self._fleet = fleet
        self._sp = sp_id
        self._name = name
        self._session = session
        self.base = f"https://{rest_address(fleet[sp_id])}"
        self._ssl = fleet.identity(name).ssl_context()

    def token(self) -> str:
        """A fresh call token for this principal (call tokens are accepted once)."""
        return self._fleet.identity(self._name).token(self._sp)

    def ssl(self) -> Any:
        """The client TLS context presenting this principal's certificate."""
        return self._ssl

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        token: str | None = None,
        headers_extra: dict[str, str] | None = None,
        **kw: Any,
    ) -> Answer:
        """``method path`` with a fresh token (or ``token``; "" for none)."""
        tok = self.token() if token is None else token
        headers = {"Authorization": f"Bearer {tok}"} if tok else {}
        headers.update(headers_extra or {})
        async with self._session.request(
            method, self.base + path, json=json, headers=headers, ssl=self.ssl(), **kw
        ) as reply:
            body = await reply.json() if reply.content_type == "application/json" else None
            return Answer(reply.status, body, dict(reply.headers))


def order_body(external_id: str, *, hold_only: bool = False, **fields: Any) -> dict[str, Any]:
    """A serviceOrder create body whose item's characteristics are ``fields`` (a slice request's)."""
    chars = [{"name": k, "value": v} for k, v in fields.items()]
    if hold_only:
        chars.append({"name": "holdOnly", "value": True, "valueType": "boolean"})
    return {
        "externalId": external_id,
        "description": "a test order",
        "serviceOrderItem": [{"id": "1", "action": "add", "service": {"name": "s", "serviceCharacteristic": chars}}],
    }


async def until(probe: Callable[[], Awaitable[Any]], done: Callable[[Any], bool], timeout_s: float = 15.0) -> Any:
    """``probe()`` again until ``done`` says yes (bounded); the last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await probe()
        if done(value) or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.05)


@dataclass
class Message:
    """One Server-Sent Events message: its type (``message`` when unnamed), ``id:`` (None when absent), data."""

    event: str
    id: str | None
    data: str

    def json(self) -> Any:
        """The data as JSON."""
        return json.loads(self.data)


class SseReader:
    """Reads the messages of an SSE stream one at a time (comments skipped), as EventSource parses them."""

    def __init__(self, reply: aiohttp.ClientResponse) -> None:
        self.reply = reply

    async def next(self, timeout_s: float = 15.0) -> Message:
        """The next message, or TimeoutError; EOFError when the stream ended."""
        event, ident, data = "message", None, []
        async with asyncio.timeout(timeout_s):
            while True:
                raw = await self.reply.content.readline()
                if not raw:
                    raise EOFError("the stream ended")
                line = raw.decode().rstrip("\n")
                if not line:
                    if data or ident is not None or event != "message":
                        return Message(event, ident, "\n".join(data))
                    continue
                if line.startswith(":"):
                    continue
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "event":
                    event = value
                elif name == "id":
                    ident = value
                elif name == "data":
                    data.append(value)


@contextlib.asynccontextmanager
async def callback_sink() -> AsyncIterator[tuple[str, dict[str, list[Any]]]]:
    """A loopback HTTP server taking hub callbacks at ``/cb/WHO``: its URL up to ``/cb`` and what each WHO got."""
    received: dict[str, list[Any]] = defaultdict(list)

    async def callback(request: web.Request) -> web.Response:
        received[request.match_info["who"]].append(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/cb/{who}", callback)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/cb", received
    finally:
        await runner.cleanup()

"""A client of a broker process's REST API for the tests: HTTPS with a certificate, a fresh token per call."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

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

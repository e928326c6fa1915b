"""The REST hub's subscriptions are kept: after a kill -9 and a restart the broker delivers to them again."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from broker.security.accounts import Role
from scenarios.processes import Fleet
from tests.integration.rest import ORDERING, RestClient, callback_sink, order_body, until
from tests.topology import leaf_domain

pytestmark = pytest.mark.integration
SP = "L"
SLICE = {"src": "L.ep", "dst": "L.to-X", "bandwidth_mbps": 10}


async def test_a_hub_subscription_outlives_a_kill_and_a_deleted_one_stays_deleted(tmp_path: Path) -> None:
    async with callback_sink() as (url, told):
        await _kept_across_kills(tmp_path, url, told["alice"])


async def _kept_across_kills(tmp_path: Path, url: str, received: list[dict[str, Any]]) -> None:
    fleet = Fleet(tmp_path)
    try:
        fleet.grant(SP, "alice", Role.CUSTOMER)
        await fleet.start(SP, {"domains": [leaf_domain(SP, {"X": "100-199"})], "rest_listen": "127.0.0.1:0"})
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
            alice = RestClient(fleet, SP, "alice", session)
            hub = await alice.call("POST", f"{ORDERING}/hub", json={"callback": f"{url}/alice"})
            assert hub.status == 201
        fleet.signal(SP, signal.SIGKILL)
        await fleet.wait_exit(SP)
        await fleet.restart(SP)

        def orders_told(external_id: str) -> list[str]:
            return [
                e["event"]["serviceOrder"]["state"]
                for e in received
                if e.get("event", {}).get("serviceOrder", {}).get("externalId") == external_id
            ]

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
            alice = RestClient(fleet, SP, "alice", session)  # the restarted broker's REST port is a new one
            kept = await alice.call("GET", f"{ORDERING}/hub/{hub.body['id']}")
            assert kept.status == 200 and kept.body["callback"] == f"{url}/alice"
            placed = await alice.call("POST", f"{ORDERING}/serviceOrder", json=order_body("after-kill", **SLICE))
            assert placed.status == 201
            for _ in range(100):  # bounded: 10 s
                if "completed" in orders_told("after-kill"):
                    break
                await asyncio.sleep(0.1)
            assert "completed" in orders_told("after-kill"), received[-3:]
            assert (await alice.call("DELETE", f"{ORDERING}/hub/{hub.body['id']}")).status == 204

        fleet.signal(SP, signal.SIGKILL)
        await fleet.wait_exit(SP)
        await fleet.restart(SP)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
            alice = RestClient(fleet, SP, "alice", session)
            assert (await alice.call("GET", f"{ORDERING}/hub/{hub.body['id']}")).status == 404
            before = len(received)
            placed = await alice.call("POST", f"{ORDERING}/serviceOrder", json=order_body("after-delete", **SLICE))
            assert placed.status == 201
            path = f"{ORDERING}/serviceOrder/{placed.body['id']}"
            done = await until(lambda: alice.call("GET", path), lambda a: a.body["state"] == "completed")
            assert done.body["state"] == "completed"
            await asyncio.sleep(0.5)  # what a subscription would have been told is out by now
            assert len(received) == before  # deleted before the restart: told nothing
    finally:
        await fleet.stop_all()


async def test_what_happens_while_a_broker_restarts_still_reaches_a_hub_subscription(tmp_path: Path) -> None:
    """A hold runs out while the broker is down; the restart expires it: the subscriber is told (not skipped)."""
    async with callback_sink() as (url, told):
        fleet = Fleet(tmp_path)
        try:
            fleet.grant(SP, "alice", Role.CUSTOMER)
            settings = {"domains": [leaf_domain(SP, {"X": "100-199"})], "rest_listen": "127.0.0.1:0", "hold_time_s": 2}
            await fleet.start(SP, settings)
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
                alice = RestClient(fleet, SP, "alice", session)
                hub = await alice.call("POST", f"{ORDERING}/hub", json={"callback": f"{url}/alice"})
                assert hub.status == 201
                placed = await alice.call(
                    "POST", f"{ORDERING}/serviceOrder", json=order_body("held", hold_only=True, holdTimeS=2, **SLICE)
                )
                assert placed.status == 201
                path = f"{ORDERING}/serviceOrder/{placed.body['id']}"
                held = await until(lambda: alice.call("GET", path), lambda a: a.body["state"] == "completed")
                assert held.body["state"] == "completed", held.body  # a hold-only order completes once held
            await until(lambda: asyncio.sleep(0, told["alice"]), lambda got: any("HELD" in str(e) for e in got))
            before = len(told["alice"])
            fleet.signal(SP, signal.SIGKILL)
            await fleet.wait_exit(SP)
            await asyncio.sleep(2.5)  # the hold runs out while nobody runs the broker
            await fleet.restart(SP)  # its recovery expires the slice: an event made before the hub is restored

            def expired() -> list[dict[str, Any]]:
                return [e for e in told["alice"][before:] if "EXPIRED" in str(e)]

            got = await until(lambda: asyncio.sleep(0, expired()), bool, timeout_s=10)
            assert got, told["alice"][before:] or "nothing told after the restart"
        finally:
            await fleet.stop_all()

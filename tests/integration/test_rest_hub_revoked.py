"""A hub subscription whose account was removed, or no longer has its role, is told nothing more and is dropped."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from broker.security.accounts import Role
from scenarios.processes import OPERATOR, Fleet
from tests.integration.rest import INVENTORY, ORDERING, RestClient, callback_sink, order_body, until
from tests.topology import leaf_domain

pytestmark = pytest.mark.integration
SP = "L"
SLICE = {"src": "L.ep", "dst": "L.to-X", "bandwidth_mbps": 1}


async def test_a_removed_or_demoted_account_s_subscription_stops_and_is_dropped(tmp_path: Path) -> None:
    async with callback_sink() as (url, received):
        await _revoked_accounts_told_nothing(tmp_path, url, received)


async def _revoked_accounts_told_nothing(tmp_path: Path, url: str, received: dict[str, list[Any]]) -> None:
    async def told(who: str) -> list[dict[str, Any]]:
        return received[who]

    fleet = Fleet(tmp_path)
    try:
        for name in ("alice", "carol", "dave"):
            fleet.grant(SP, name, Role.CUSTOMER)
        await fleet.start(SP, {"domains": [leaf_domain(SP, {"X": "100-199"})], "rest_listen": "127.0.0.1:0"})
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
            client = {name: RestClient(fleet, SP, name, session) for name in ("alice", "carol", "dave", OPERATOR)}
            subs, slices = {}, {}
            for name in ("alice", "carol", "dave"):
                hub = await client[name].call("POST", f"{ORDERING}/hub", json={"callback": f"{url}/{name}"})
                assert hub.status == 201, hub.body
                subs[name] = hub.body["id"]
                placed = await client[name].call(
                    "POST", f"{ORDERING}/serviceOrder", json=order_body(f"h-{name}", **SLICE)
                )
                assert placed.status == 201, placed.body
                slices[name] = placed.body["serviceOrderItem"][0]["service"]["id"]
            for name in ("alice", "carol", "dave"):  # each is told of its own order, up to its completion
                await until(lambda n=name: told(n), lambda got: any(_order_state(e) == "completed" for e in got))
                assert any(_order_state(e) == "completed" for e in received[name])

            alice = client["alice"]  # her event stream, open before she is removed, ends when she is
            headers = {"Authorization": f"Bearer {alice.token()}"}
            sse = await session.get(
                f"{alice.base}{ORDERING}/events",
                headers=headers,
                ssl=alice.ssl(),
                timeout=aiohttp.ClientTimeout(total=60),
            )
            assert sse.status == 200 and await sse.content.readline() == b": connected\n"

            fleet.revoke(SP, "alice")  # removed
            fleet.grant(SP, "carol", Role.PEER_SP)  # the same account, another role
            # The broker has read the accounts file again once alice is refused and carol is a peer SP.
            refused = await until(
                lambda: client["alice"].call("GET", f"{ORDERING}/serviceOrder"), lambda a: a.status == 401
            )
            assert refused.status == 401
            peer = await until(
                lambda: client["carol"].call("GET", "/fedbroker/v1/federation"), lambda a: a.status == 200
            )
            assert peer.status == 200
            told_before = {name: len(received[name]) for name in received}

            for name in ("alice", "carol", "dave"):  # every slice changes state: three slices' events
                assert (await client[OPERATOR].call("DELETE", f"{INVENTORY}/service/{slices[name]}")).status == 204
            ended = await until(lambda: told("dave"), lambda got: any(_slice_state(e) == "TERMINATED" for e in got))
            assert any(_slice_state(e) == "TERMINATED" for e in ended)  # deliveries go on for dave
            for name in ("alice", "carol"):
                gone = await until(
                    lambda n=name: client[OPERATOR].call("GET", f"{ORDERING}/hub/{subs[n]}"),  # type: ignore[misc]
                    lambda a: a.status == 404,
                )
                assert gone.status == 404, (name, gone.body)
            await asyncio.sleep(0.3)  # anything still on its way to the dropped callbacks is there by now
            for name in ("alice", "carol"):
                assert received[name][told_before[name] :] == [], name
            assert (await client["dave"].call("GET", f"{ORDERING}/hub/{subs['dave']}")).status == 200
            async with asyncio.timeout(10):  # the events of her terminated slice were not sent: the stream ended
                rest = await sse.content.read()
            sse.close()
            assert b"ServiceStateChangeEvent" not in rest and b"TERMINATED" not in rest, rest

        log = fleet[SP].log_path.read_text()
        assert f"hub {subs['alice']}: dropped, its deliveries stopped: account 'alice' no longer exists" in log
        assert (
            f"hub {subs['carol']}: dropped, its deliveries stopped: account 'carol' no longer exists with role customer"
            in log
        )
        fleet.signal(SP, signal.SIGTERM)
        await fleet.wait_exit(SP)
        await fleet.restart(SP)  # dropped from the store too: not restored
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
            operator = RestClient(fleet, SP, OPERATOR, session)
            for name in ("alice", "carol"):
                assert (await operator.call("GET", f"{ORDERING}/hub/{subs[name]}")).status == 404
            assert (await operator.call("GET", f"{ORDERING}/hub/{subs['dave']}")).status == 200
    finally:
        await fleet.stop_all()


def _slice_state(event: dict[str, Any]) -> str:
    service = event["event"].get("service", {})
    return next((c["value"] for c in service.get("serviceCharacteristic", []) if c["name"] == "sliceState"), "")


def _order_state(event: dict[str, Any]) -> str:
    return str(event["event"].get("serviceOrder", {}).get("state", ""))

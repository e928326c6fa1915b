"""REST orders on a broker keeping its state in PostgreSQL: placed, completed, still there after a kill."""

from __future__ import annotations

import signal
from pathlib import Path

import aiohttp
import pytest

from broker.security.accounts import Role
from scenarios.postgres import PostgresServer
from scenarios.processes import Fleet
from tests.integration.rest import ORDERING, RestClient, order_body, until
from tests.topology import leaf_domain

pytestmark = pytest.mark.integration
SP = "L"


async def test_an_order_kept_in_postgresql_completes_and_outlives_a_kill(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    fleet = Fleet(tmp_path)
    try:
        fleet.grant(SP, "alice", Role.CUSTOMER)
        settings = {
            "domains": [leaf_domain(SP, {"X": "100-199"})],
            "rest_listen": "127.0.0.1:0",
            "store": {"backend": "postgresql", "dsn": postgres_server.new_database()},
        }
        await fleet.start(SP, settings)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
            alice = RestClient(fleet, SP, "alice", session)
            body = order_body("pg-order", src="L.ep", dst="L.to-X", bandwidth_mbps=10)
            placed = await alice.call("POST", f"{ORDERING}/serviceOrder", json=body)
            assert placed.status == 201, placed.body
            path = f"{ORDERING}/serviceOrder/{placed.body['id']}"
            done = await until(lambda: alice.call("GET", path), lambda a: a.body["state"] == "completed")
            assert done.body["state"] == "completed"
        fleet.signal(SP, signal.SIGKILL)
        await fleet.wait_exit(SP)
        await fleet.restart(SP)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
            alice = RestClient(fleet, SP, "alice", session)  # the restarted broker's REST port is a new one
            again = await alice.call("GET", path)
            assert again.status == 200 and again.body["state"] == "completed"
            replay = await alice.call("POST", f"{ORDERING}/serviceOrder", json=body)
            assert replay.status == 201 and replay.body["id"] == placed.body["id"]
    finally:
        await fleet.stop_all()

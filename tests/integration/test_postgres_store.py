"""Brokers as processes keeping their slices in PostgreSQL (issue 16: ``store: {backend: postgresql}``).

Every SP gets a database of its own on the session's throw-away server (``scenarios/postgres.py``). The
slice's way through the federation, a ``kill -9`` and restart of the top and of a leaf (the state
comes back from PostgreSQL, not from a file), and a second broker process pointed at a database a
running broker holds, which must refuse to start rather than share it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess

import grpc
import psycopg
import pytest
import yaml

from fedbroker.v1 import northsouth_pb2 as pb
from scenarios.postgres import PostgresServer
from scenarios.processes import FEDBROKER
from tests.integration.federation import Federation, leaf_domain, op, reserve, slice_request

pytestmark = pytest.mark.integration


def _state_in_database(dsn: str, slice_id: str) -> str:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT state FROM slices WHERE id = %s", (slice_id,)).fetchone()
    return str(row[0]) if row else ""


async def test_a_federation_on_postgresql_survives_kills_and_a_second_broker_is_refused(
    fed: Federation, postgres_server: PostgresServer
) -> None:
    dsn = {sp: postgres_server.new_database() for sp in ("T", "L1", "L2")}
    store = {sp: {"backend": "postgresql", "dsn": dsn[sp]} for sp in dsn}
    await fed.start("L1", domains=[leaf_domain("L1", {"L2": "1000-1999"})], store=store["L1"])
    await fed.start("L2", domains=[leaf_domain("L2", {"L1": "1000-1999"})], store=store["L2"])
    top = await fed.start("T", lowers=["L1", "L2"], store=store["T"])
    await fed.wait_terminals("T", ["L1.ep", "L2.ep"])

    held = await reserve(top, "pg-1", slice_request("L1.ep", "L2.ep", 200))
    assert held.state == pb.SLICE_STATE_HELD
    assert (await op(top, "Commit", held.id)).state == pb.SLICE_STATE_COMMITTED
    assert (await op(top, "Activate", held.id)).state == pb.SLICE_STATE_ACTIVE
    assert _state_in_database(dsn["T"], held.id) == "ACTIVE"  # in PostgreSQL ...
    assert not (fed.sps["T"].data_dir / "state.db").exists()  # ... and in no file

    # A second broker of the top (its key, certificate and database; a data folder and port of its own)
    # while the top runs: refused at start, instead of both writing the same slices.
    config = yaml.safe_load(fed.sps["T"].config_path.read_text())
    twin = fed.sps["T"].config_path.with_name("twin.yaml")
    twin.write_text(yaml.safe_dump({**config, "data_dir": "data-twin", "listen": "127.0.0.1:0"}))
    second = await asyncio.to_thread(
        subprocess.run,
        [str(FEDBROKER), "serve", "--config", str(twin)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert second.returncode == 1, second.stdout + second.stderr
    said = " ".join((second.stdout + second.stderr).split())
    assert "T cannot start: store: another broker holds the PostgreSQL database" in said, said
    assert "replicas of one SP sharing a database are not supported yet" in said

    for sp in ("T", "L2"):  # kill -9: PostgreSQL releases the dead broker's lock with its connection
        fed.kill(sp, signal.SIGKILL)
        await asyncio.sleep(0.2)
        await fed.restart(sp)
    top = fed.sps["T"]
    await fed.wait_terminals("T", ["L1.ep", "L2.ep"])
    again = await op(top, "Get", held.id)
    assert again.state == pb.SLICE_STATE_ACTIVE and [s.state for s in again.segments] == [pb.SLICE_STATE_ACTIVE] * 2
    replay = await reserve(top, "pg-1", slice_request("L1.ep", "L2.ep", 200))
    assert replay.id == held.id  # the request id is remembered in PostgreSQL across the restart

    # The top's channel to the restarted L2 may still be backing off: then Terminate answers UNAVAILABLE
    # with the slice TERMINATING, and the reconciler (its retries kept in PostgreSQL too) finishes it.
    with contextlib.suppress(grpc.aio.AioRpcError):
        await op(top, "Terminate", held.id)
    for _ in range(150):
        if (await op(top, "Get", held.id)).state == pb.SLICE_STATE_TERMINATED:
            break
        await asyncio.sleep(0.1)
    assert (await op(top, "Get", held.id)).state == pb.SLICE_STATE_TERMINATED
    await fed.wait_idle()
    assert _state_in_database(dsn["T"], held.id) == "TERMINATED"
    leaf_states = {s.domain: _state_in_database(dsn[s.domain], s.child_ref) for s in again.segments}
    assert leaf_states == {"L1": "TERMINATED", "L2": "TERMINATED"}, leaf_states

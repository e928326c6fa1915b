"""Reserve + Commit through one upper SP whose store is SQLite, then PostgreSQL, then 2 and 3 replicas (issue 16).

The federation is ``hop``'s shape: SP ``B`` over one leaf ``L`` (its store SQLite both times), each
its own process; only ``B``'s store changes. Concurrent clients reserve and commit distinct slices
at ``B``; the figures are slices per second, ``B``'s CPU per slice, and for PostgreSQL the CPU its
server spent per slice (the postmaster and every backend, read from /proc), so the store's cost is
counted where it is spent. The server is a throw-away one (``scenarios/postgres.py``) with fsync
off: this measures the broker's work per write, not a disk. With replicas, the customers spread
over them, the CPU is every replica's, and ``failover_s_<n>_replicas`` is how long a client reading
from one replica waits, after that replica is killed -9, for its next call to be answered by another.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import signal
import time
from pathlib import Path
from typing import Any

import grpc

from bench import federations
from bench.measures import Client, Figures, cpu_seconds, slice_request
from bench.sizes import Sizes
from fedbroker.v1 import northsouth_pb2 as pb
from scenarios.postgres import PostgresServer, find_bindir
from scenarios.processes import Fleet

log = logging.getLogger("bench")


def _server_cpu_s(server: PostgresServer) -> float:
    """CPU seconds of the server's postmaster and of every process it started that is still running."""
    try:
        postmaster = int((server.data / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    total = cpu_seconds(postmaster)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # ended while read
        if int(fields[1]) == postmaster:  # its parent
            total += cpu_seconds(int(stat.parent.name))
    return total


async def _one(
    root: Path, sizes: Sizes, name: str, store: dict[str, Any], server: PostgresServer | None, replicas: int = 1
) -> Figures:
    fleet = Fleet(root / f"store-{name}")
    try:
        await federations.start_leaf(fleet, "L")
        await fleet.start("B", {"store": store}, ["L"])
        for n in range(2, replicas + 1):
            await fleet.start_replica("B", n)
        names = ["B", *(f"B#{n}" for n in range(2, replicas + 1))]
        for each in names:
            await fleet.wait_terminals(each, ["L.ep", "L.ep2"])
        brokers = [fleet[each] for each in names]
        clients = [Client(b, f"store-{name}") for b in brokers]
        for i in range(sizes.warmup):
            client = clients[i % len(clients)]
            await client.op("Commit", (await client.reserve(slice_request("L.ep", "L.ep2", i), f"w{i}")).id)
        counter = itertools.count(sizes.warmup)
        last = sizes.warmup + sizes.store_slices

        async def customer(k: int) -> None:
            client = clients[k % len(clients)]  # customers spread over the replicas
            while (i := next(counter)) < last:
                held = await client.reserve(slice_request("L.ep", "L.ep2", i), str(i))
                await client.op("Commit", held.id)

        pids = [b.proc.pid for b in brokers if b.proc is not None]
        cpu0, db0, t0 = sum(map(cpu_seconds, pids)), _server_cpu_s(server) if server else 0.0, time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for k in range(sizes.store_clients):
                group.create_task(customer(k))
        elapsed = time.perf_counter() - t0
        n = sizes.store_slices
        figures = {
            f"store_{name}_reserve_commit_per_s": n / elapsed,
            f"store_{name}_cpu_ms_per_slice": (sum(map(cpu_seconds, pids)) - cpu0) * 1000 / n,
        }
        if server is not None:
            figures[f"store_{name}_db_cpu_ms_per_slice"] = (_server_cpu_s(server) - db0) * 1000 / n
        usage = await fleet.usage("B")
        if usage.holding_slices != n + sizes.warmup:
            raise RuntimeError(f"B holds {usage.holding_slices} slices, not {n + sizes.warmup}")
        if replicas > 1:
            figures["failover_s"] = await _failover(fleet, names)
        return figures
    finally:
        await fleet.stop_all()


async def _failover(fleet: Fleet, names: list[str]) -> float:
    """Kill -9 the replica a client reads from; seconds until the client's next call is answered by another.

    The client reads a slice (``List``, one page) in a loop; when a call fails it goes to the next replica.
    """
    order = names[1:] + names[:1]  # start on a replica other than the first (its store opened the schema)
    current = 0
    request = pb.ListRequest(page_size=1)
    await fleet[order[current]].slices.List(request, timeout=5)
    fleet.signal(order[current], signal.SIGKILL)
    killed = time.perf_counter()
    for _ in range(200):  # bounded: 200 calls of at most a second each
        try:
            await fleet[order[current]].slices.List(request, timeout=1)
            return time.perf_counter() - killed
        except grpc.aio.AioRpcError:
            current = (current + 1) % len(order)
    raise RuntimeError("no replica answered after the kill")


async def store_backends(root: Path, sizes: Sizes) -> Figures:
    """The upper SP's Reserve + Commit rate and CPU per slice on SQLite and on PostgreSQL."""
    figures = await _one(root, sizes, "sqlite", {"backend": "sqlite"}, None)
    bindir = find_bindir()
    if bindir is None:
        log.warning("PostgreSQL (initdb, pg_ctl) is not installed: no PostgreSQL store figures")
        return figures
    server = PostgresServer(bindir)
    try:
        await asyncio.to_thread(server.start)
        dsn = await asyncio.to_thread(server.new_database)
        figures |= await _one(root, sizes, "postgresql", {"backend": "postgresql", "dsn": dsn}, server)
        for replicas in (2, 3):  # one SP as several processes on one database, customers spread over them
            shared = {"backend": "postgresql", "dsn": await asyncio.to_thread(server.new_database), "replicas": True}
            got = await _one(root, sizes, f"postgresql_{replicas}_replicas", shared, server, replicas)
            failover = got.pop("failover_s")
            figures |= got | {f"failover_s_{replicas}_replicas": failover}
    finally:
        await asyncio.to_thread(server.stop)
    return figures


__all__ = ["store_backends"]

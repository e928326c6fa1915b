"""Reserve + Commit through one upper SP whose store is SQLite, then PostgreSQL (issue 16).

The federation is ``hop``'s shape: SP ``B`` over one leaf ``L`` (its store SQLite both times), each
its own process; only ``B``'s store changes. Concurrent clients reserve and commit distinct slices
at ``B``; the figures are slices per second, ``B``'s CPU per slice, and for PostgreSQL the CPU its
server spent per slice (the postmaster and every backend, read from /proc), so the store's cost is
counted where it is spent. The server is a throw-away one (``scenarios/postgres.py``) with fsync
off: this measures the broker's work per write, not a disk.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from pathlib import Path
from typing import Any

from bench import federations
from bench.measures import Client, Figures, cpu_seconds, slice_request
from bench.sizes import Sizes
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


async def _one(root: Path, sizes: Sizes, name: str, store: dict[str, Any], server: PostgresServer | None) -> Figures:
    fleet = Fleet(root / f"store-{name}")
    try:
        await federations.start_leaf(fleet, "L")
        await fleet.start("B", {"store": store}, ["L"])
        await fleet.wait_terminals("B", ["L.ep", "L.ep2"])
        broker = fleet["B"]
        assert broker.proc is not None
        client = Client(broker, f"store-{name}")
        for i in range(sizes.warmup):
            await client.op("Commit", (await client.reserve(slice_request("L.ep", "L.ep2", i), f"w{i}")).id)
        counter = itertools.count(sizes.warmup)
        last = sizes.warmup + sizes.store_slices

        async def customer() -> None:
            while (i := next(counter)) < last:
                held = await client.reserve(slice_request("L.ep", "L.ep2", i), str(i))
                await client.op("Commit", held.id)

        cpu0, db0, t0 = cpu_seconds(broker.proc.pid), _server_cpu_s(server) if server else 0.0, time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for _ in range(sizes.store_clients):
                group.create_task(customer())
        elapsed = time.perf_counter() - t0
        n = sizes.store_slices
        figures = {
            f"store_{name}_reserve_commit_per_s": n / elapsed,
            f"store_{name}_cpu_ms_per_slice": (cpu_seconds(broker.proc.pid) - cpu0) * 1000 / n,
        }
        if server is not None:
            figures[f"store_{name}_db_cpu_ms_per_slice"] = (_server_cpu_s(server) - db0) * 1000 / n
        usage = await fleet.usage("B")
        if usage.holding_slices != n + sizes.warmup:
            raise RuntimeError(f"B holds {usage.holding_slices} slices, not {n + sizes.warmup}")
        return figures
    finally:
        await fleet.stop_all()


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
    finally:
        await asyncio.to_thread(server.stop)
    return figures


__all__ = ["store_backends"]

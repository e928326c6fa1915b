"""``python -m bench.profiling WORKLOAD``: where a broker spends its time under one benchmark's load.

Starts the workload's federation through the Fleet, drives the same calls the benchmark makes for
``--seconds``, and meanwhile samples chosen broker processes with ``py-spy record`` (install the
``bench`` extra). Writes the raw collapsed stacks per SP into ``--out`` and prints, per SP, the
functions with the largest share of samples, inclusive (anywhere on the stack) and exclusive (on top).

Workloads: ``leaf`` (Reserve+Commit at a leaf), ``hop`` (the same through one upper broker),
``e2e`` (reserve → commit → activate through three levels; with ``--clients 16``, the throughput
load), ``many`` (concurrent Reserve+Commit at one leaf, as when it is filled with 10,000 slices).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench import federations
from bench.measures import Client, slice_request
from scenarios.processes import Fleet

Load = Callable[[int], Awaitable[object]]


def summarise(collapsed: Path, top: int = 25) -> str:
    """The ``top`` functions by inclusive and by exclusive share of the samples in a collapsed-stack file."""
    inclusive: Counter[str] = Counter()
    exclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        # "function (path/file.py:line)" → "function (file.py)": one entry per function, not per line.
        frames = [f.split(":")[0].replace(str(Path.cwd()) + "/", "") + ")" for f in stack.split(";")]
        for name in set(frames):
            inclusive[name] += count
        exclusive[frames[-1]] += count
    if not total:
        return f"{collapsed.name}: no samples\n"
    out = [f"{collapsed.stem}: {total} samples", "  inclusive:"]
    out += [f"    {100 * n / total:5.1f}%  {name}" for name, n in inclusive.most_common(top)]
    out.append("  exclusive:")
    out += [f"    {100 * n / total:5.1f}%  {name}" for name, n in exclusive.most_common(top)]
    return "\n".join(out) + "\n"


async def _workload(name: str, fleet: Fleet) -> tuple[list[str], Load, int]:
    """Start the workload's federation; return the SPs to sample, one unit of load, and its concurrency."""
    if name in ("leaf", "hop"):
        upper, leaf = await federations.hop(fleet)
        client = Client(fleet[leaf if name == "leaf" else upper], name)

        async def reserve_commit(i: int) -> None:
            held = await client.reserve(slice_request(f"{leaf}.ep", f"{leaf}.ep2", i), str(i))
            await client.op("Commit", held.id)

        return ([leaf] if name == "leaf" else [upper, leaf]), reserve_commit, 1
    if name == "e2e":
        leaves = await federations.three_levels(fleet, 4)
        client = Client(fleet["T"], name)

        async def setup(i: int) -> None:
            held = await client.reserve(slice_request(f"{leaves[2]}.ep", f"{leaves[5]}.ep", i), str(i))
            await client.op("Commit", held.id)
            await client.op("Activate", held.id)

        return ["T", "M1", leaves[3]], setup, 1
    if name == "many":
        sp = await federations.big_leaf(fleet)
        client = Client(fleet[sp], name)

        async def fill(i: int) -> None:
            held = await client.reserve(slice_request(f"{sp}.ep", f"{sp}.ep2", i), str(i))
            await client.op("Commit", held.id)

        return [sp], fill, 32
    raise SystemExit(f"unknown workload {name!r} (leaf, hop, e2e, many)")


def _spy(spy: str, proc: subprocess.Popen[bytes] | None, seconds: float, output: Path) -> subprocess.Popen[bytes]:
    assert proc is not None, "broker not running"
    args = ["record", "--pid", str(proc.pid), "--duration", str(int(seconds)), "--rate", "250", "--format", "raw"]
    return subprocess.Popen(
        [spy, *args, "--output", str(output)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def profile(name: str, seconds: float, out: Path, clients: int = 0) -> str:
    """Run the workload for ``seconds`` under py-spy; return the summaries."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    await asyncio.to_thread(out.mkdir, parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fedbroker-profile-") as work:
        fleet = Fleet(Path(work))
        try:
            sps, load, concurrency = await _workload(name, fleet)
            concurrency = clients or concurrency
            spies = {sp: _spy(spy, fleet[sp].proc, seconds, out / f"{name}-{sp}.txt") for sp in sps}
            counter = itertools.count()
            deadline = time.perf_counter() + seconds

            async def driver() -> None:
                while time.perf_counter() < deadline:
                    await load(next(counter))

            async with asyncio.TaskGroup() as group:
                for _ in range(concurrency):
                    group.create_task(driver())
            for proc in spies.values():
                await asyncio.to_thread(proc.wait, 30)
        finally:
            await fleet.stop_all()
    return "".join(summarise(out / f"{name}-{sp}.txt") for sp in sps if (out / f"{name}-{sp}.txt").exists())


def main() -> int:
    """Command line."""
    parser = argparse.ArgumentParser(prog="python -m bench.profiling", description=__doc__)
    parser.add_argument("workload", choices=["leaf", "hop", "e2e", "many"])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=Path("bench/profiles"))
    parser.add_argument("--clients", type=int, default=0, help="concurrent clients (default: the workload's)")
    args = parser.parse_args()
    print(asyncio.run(profile(args.workload, args.seconds, args.out, args.clients)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

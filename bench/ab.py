"""``python -m bench.ab TREE_A TREE_B``: compare two checkouts on this machine, in interleaved runs.

On a shared two-core VM one run of ``make bench`` against another, minutes apart, differs by ±10 %:
more than most changes buy. This runs the same measurement alternately on two trees (a worktree of
the old commit, say, and this checkout), A B A B …, each in a fresh process whose brokers come from
that tree (``PYTHONPATH``), so drift in the machine's load hits both alike; it prints every run and
the medians.

Measurements (``--what``):

* ``throughput``: the three-level federation's load of ``make bench`` (``bench.measures._throughput``,
  16 clients, 11 brokers) for ``--seconds``: slices per second and CPU ms per slice;
* ``hop``: Reserve + Commit, one at a time, at an upper SP over one leaf and at the leaf directly:
  the CPU ms per call of each broker (``cpu_seconds`` of its process).

The measuring code is this file's, run by path; what it imports (``bench.measures``,
``bench.federations``, the brokers) comes from the tree under test, so a tree must be recent enough
to have them. Example::

    git worktree add /tmp/wt-old HEAD~1
    .venv/bin/python -m bench.ab /tmp/wt-old . --what throughput --runs 3 --seconds 15
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

#: One JSON line of figures, printed by the measuring process as its last line.
RESULT_MARK = "AB-RESULT "


async def _throughput(work: Path, seconds: float) -> dict[str, float]:
    from bench import federations, measures
    from bench.sizes import FULL
    from scenarios.processes import Fleet

    fleet = Fleet(work / "three-levels")
    try:
        leaves = await federations.three_levels(fleet, FULL.per_mid)
        sizes = dataclasses.replace(FULL, throughput_s=seconds)
        figures = await measures._throughput(fleet, leaves, sizes)
    finally:
        await fleet.stop_all()
    return {
        "slices_per_s": figures["e2e_throughput_slices_per_s"],
        "cpu_ms_per_slice": figures["throughput_cpu_ms_per_slice"],
        "errors": figures["throughput_errors"],
    }


async def _hop(work: Path, calls: int) -> dict[str, float]:
    from bench import federations, measures
    from scenarios.processes import Fleet

    fleet = Fleet(work / "hop")
    try:
        upper, leaf = await federations.hop(fleet)
        pids = {sp: fleet[sp].proc.pid for sp in (upper, leaf)}  # type: ignore[union-attr]
        figures: dict[str, float] = {}
        for via in (leaf, upper):
            client = measures.Client(fleet[via], f"ab-{via}")

            async def one(i: int, client: measures.Client = client) -> None:
                held = await client.reserve(measures.slice_request(f"{leaf}.ep", f"{leaf}.ep2", i), str(i))
                await client.op("Commit", held.id)

            for i in range(20):  # warm-up: channels open, code paths hot
                await one(10_000_000 + i)
            meter = measures.CpuMeter(list(pids.values()))
            with meter.span():
                for i in range(calls):
                    await one(i if via == leaf else 1_000_000 + i)
            for sp, pid in pids.items():
                if via == leaf and sp == upper:
                    continue
                name = f"{'leaf' if sp == leaf else 'upper'}_cpu_ms_via_{'leaf' if via == leaf else 'upper'}"
                figures[name] = meter.by_pid[pid] * 1000.0 / calls
    finally:
        await fleet.stop_all()
    return figures


def _measure(what: str, seconds: float, calls: int) -> int:
    here = Path(__file__).resolve().parent  # run by path: this folder is not a package root
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    with tempfile.TemporaryDirectory(prefix="fedbroker-ab-") as work:
        if what == "throughput":
            figures = asyncio.run(_throughput(Path(work), seconds))
        else:
            figures = asyncio.run(_hop(Path(work), calls))
    print(RESULT_MARK + json.dumps(figures), flush=True)
    return 0


def _run_one(tree: Path, args: argparse.Namespace) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--measure", args.what]
    cmd += ["--seconds", str(args.seconds), "--calls", str(args.calls)]
    proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=args.seconds * 4 + 600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_MARK)]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"the run in {tree} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return {k: float(v) for k, v in json.loads(lines[-1].removeprefix(RESULT_MARK)).items()}


def main(argv: list[str] | None = None) -> int:
    """Alternate the measurement over the trees; print each run and the medians."""
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n\n")[0])
    parser.add_argument("trees", nargs="*", type=Path, help="two (or more) checkouts to compare, in turn")
    parser.add_argument("--what", choices=("throughput", "hop"), default="throughput")
    parser.add_argument("--runs", type=int, default=3, help="runs per tree (default 3)")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of one throughput run")
    parser.add_argument("--calls", type=int, default=300, help="Reserve + Commit per broker in one hop run")
    parser.add_argument("--measure", choices=("throughput", "hop"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        return _measure(args.measure, args.seconds, args.calls)
    if len(args.trees) < 2:
        parser.error("name at least two trees to compare")
    trees = [t.resolve() for t in args.trees]
    runs: dict[Path, list[dict[str, float]]] = {t: [] for t in trees}
    for r in range(args.runs):
        for tree in trees:
            figures = _run_one(tree, args)
            runs[tree].append(figures)
            shown = "  ".join(f"{k} {v:.2f}" for k, v in sorted(figures.items()))
            print(f"run {r + 1} {tree}: {shown}", flush=True)
    print("medians:")
    for tree in trees:
        keys = sorted(runs[tree][0])
        shown = "  ".join(f"{k} {statistics.median(f[k] for f in runs[tree]):.2f}" for k in keys)
        print(f"  {tree}: {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m bench [--smoke] [--out DIR]``: run every benchmark once and write the results."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from bench import channels, hierarchy, logcost, measures, report, sessions, stores
from bench.sizes import MODES, Sizes

log = logging.getLogger("bench")


async def run(sizes: Sizes, work: Path) -> dict[str, float]:
    """Every measurement, one after the other (each federation stopped before the next starts)."""
    figures: dict[str, float] = {}
    steps: tuple[tuple[str, Callable[[], Awaitable[measures.Figures]]], ...] = (
        ("planner", lambda: asyncio.to_thread(measures.plan_times, sizes)),
        ("planner, two levels", lambda: asyncio.to_thread(hierarchy.hierarchy_figures, sizes)),
        ("floor and one hop", lambda: measures.floor_and_hop(work, sizes)),
        ("unary calls against stream messages", lambda: sessions.session_costs(work, sizes)),
        ("channel options", lambda: channels.channel_costs(work, sizes)),
        ("log lines", lambda: asyncio.to_thread(logcost.log_costs, sizes.log_lines)),
        ("three levels", lambda: measures.three_levels(work, sizes)),
        (f"{sizes.many_slices} slices", lambda: measures.many_slices(work, sizes)),
        ("store backends", lambda: stores.store_backends(work, sizes)),
    )
    for name, step in steps:
        start = time.perf_counter()
        log.info("%s …", name)
        figures |= await step()
        log.info("%s done in %.1f s", name, time.perf_counter() - start)
    return figures


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks; print the table; write results.json, results.md, results.png."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="few repetitions, small sizes (the test suite's run)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent, help="where results go (default: bench/)")
    parser.add_argument("--readme", type=Path, help="also write the table into this README, between its markers")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    sizes = MODES["smoke" if args.smoke else "full"]
    machine = report.machine()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fedbroker-bench-") as work:
        figures = asyncio.run(run(sizes, Path(work)))
    meta = {
        "mode": sizes.mode,
        "finished": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "duration_s": round(time.perf_counter() - started, 1),
        "machine": machine,
        "load_at_start": machine["load_average"],
        "load_at_end": list(report.machine()["load_average"]),
        "sizes": {k: v for k, v in vars(sizes).items() if k != "mode"},
    }
    text = report.write(args.out, figures, meta)
    if args.readme:
        report.into_readme(args.readme, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The result of one run: ``results.json`` (numbers), a Markdown table and a PNG chart."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from importlib import metadata
from pathlib import Path
from typing import Any


class Direction(StrEnum):
    """Whether a figure should stay under or above its goal."""

    AT_MOST = "≤"
    AT_LEAST = "≥"


@dataclass(frozen=True)
class Figure:
    """A figure the issue names: its unit, what it measures, and the goal to steer by."""

    key: str
    unit: str
    label: str
    goal: float
    direction: Direction = Direction.AT_MOST

    def met(self, value: float) -> bool:
        """Whether ``value`` meets the goal."""
        return value <= self.goal if self.direction is Direction.AT_MOST else value >= self.goal


A, B = Direction.AT_MOST, Direction.AT_LEAST
#: The keys issue 7 requires (and issue 17's one-call order), in the order the table shows them.
FIGURES: tuple[Figure, ...] = (
    Figure("grpc_floor_rtt_ms", "ms", "gRPC floor: grpc.aio unary round trip, same bytes", float("inf")),
    Figure("hop_overhead_ratio", "×", "one broker hop over 2 floor round trips", 2.0),
    Figure("e2e_setup_ms_p50", "ms", "reserve → commit → activate, 3 levels, p50", 15.0),
    Figure("e2e_setup_ms_p99", "ms", "reserve → commit → activate, 3 levels, p99", float("inf")),
    Figure("e2e_order_ms_p50", "ms", "one-call order (Reserve, then commit and activate), 3 levels, p50", float("inf")),
    Figure("rpcs_per_slice_classic", "calls", "round trips counted per reserve → commit → activate", float("inf")),
    Figure("rpcs_per_slice_order", "calls", "round trips counted per one-call order", float("inf")),
    Figure("e2e_throughput_slices_per_s", "/s", "slices set up per second, concurrent clients", 150.0, B),
    Figure("order_throughput_slices_per_s", "/s", "one-call orders per second, concurrent clients", float("inf"), B),
    Figure("plan_ms_p50_100", "ms", "planner, 100 SPs", 5.0),
    Figure("plan_ms_p50_1000", "ms", "planner, 1,000 SPs", 30.0),
    Figure("plan_ms_p50_10000", "ms", "planner, 10,000 SPs", 400.0),
    Figure("plan_ms_p50_hier", "ms", "two-level plan, GÉANT: 40 leaves under 3 mid-level SPs", float("inf")),
    Figure("note_bytes_mid", "B", "largest mid-level note (canonical bytes), GÉANT", float("inf")),
    Figure("note_propagation_ms", "ms", "leaf offer change seen at the top of 3 levels", 100.0),
    Figure("alert_propagation_ms", "ms", "leaf link down → alert on the top's Watch, 3 levels", 100.0),
    Figure("alert_burst_ms", "ms", "leaf pop under every active slice down → all alerts at the top", float("inf")),
    Figure("rss_mb_10k_slices", "MiB", "broker RSS holding 10,000 committed slices", 150.0),
    Figure("restart_recovery_s_10k_slices", "s", "kill -9 → serving with 10,000 slices", 2.0),
)
REQUIRED_KEYS = tuple(f.key for f in FIGURES)


def machine() -> dict[str, Any]:
    """What the run ran on."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        grpc_version = metadata.version("grpcio")
    except metadata.PackageNotFoundError:
        grpc_version = "?"
    return {
        "cpu": cpu,
        "cores": os.cpu_count() or 0,
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "grpcio": grpc_version,
        "load_average": list(os.getloadavg()),
    }


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(figures: Mapping[str, float], meta: Mapping[str, Any]) -> str:
    """The figures the issue names as a Markdown table, with goals, then the supporting figures."""
    lines = [
        f"Run `{meta['mode']}` at {meta['finished']}, {meta['duration_s']:.0f} s; "
        f"{meta['machine']['cpu']} ({meta['machine']['cores']} cores), {meta['machine']['system']}, "
        f"Python {meta['machine']['python']}, grpcio {meta['machine']['grpcio']}; "
        f"load average at start {meta['load_at_start'][0]:.2f}.",
        "",
        "| figure | value | goal | |",
        "|---|---:|---:|---|",
    ]
    for f in FIGURES:
        value = figures[f.key]
        goal = "—" if f.goal == float("inf") else f"{f.direction} {_fmt(f.goal)} {f.unit}"
        mark = "" if f.goal == float("inf") else ("met" if f.met(value) else "**missed**")
        lines.append(f"| `{f.key}` — {f.label} | {_fmt(value)} {f.unit} | {goal} | {mark} |")
    extra = sorted(set(figures) - set(REQUIRED_KEYS))
    if extra:
        lines += ["", "Supporting figures:", "", "| figure | value |", "|---|---:|"]
        lines += [f"| `{k}` | {_fmt(figures[k])} |" for k in extra]
    return "\n".join(lines) + "\n"


def chart(figures: Mapping[str, float], path: Path) -> bool:
    """Draw the figures against their goals and the latency ladder over the floor; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.5))
    goals = [f for f in FIGURES if f.goal != float("inf")]
    # How far from the goal, in the direction that matters: above 1 is a miss.
    ratios = [
        figures[f.key] / f.goal if f.direction is Direction.AT_MOST else f.goal / max(figures[f.key], 1e-9)
        for f in goals
    ]
    colours = ["#2e7d32" if r <= 1 else "#c62828" for r in ratios]
    left.barh([f.key for f in goals], ratios, color=colours)
    left.axvline(1.0, color="black", linewidth=1)
    left.set_xscale("log")
    left.invert_yaxis()
    left.set_xlabel("figure / goal (≥ goal / figure for throughput); right of the line misses")
    left.set_title("Figures against their goals")
    ladder = [
        ("gRPC floor (echo)", "grpc_floor_rtt_ms"),
        ("health check", "grpc_floor_health_rtt_ms"),
        ("leaf Reserve+Commit", "leaf_reserve_commit_ms"),
        ("1 hop Reserve+Commit", "hop_reserve_commit_ms"),
        ("3 levels setup p50", "e2e_setup_ms_p50"),
        ("3 levels setup p99", "e2e_setup_ms_p99"),
        ("note propagation", "note_propagation_ms"),
        ("alert propagation", "alert_propagation_ms"),
    ]
    shown = [(name, figures[key]) for name, key in ladder if key in figures]
    right.barh([n for n, _ in shown], [v for _, v in shown], color="#1565c0")
    right.set_xscale("log")
    right.set_xlim(right=max(v for _, v in shown) * 12)  # room for the labels
    right.invert_yaxis()
    right.set_xlabel("milliseconds (log)")
    right.set_title("Latencies beside the transport floor")
    for i, (_, v) in enumerate(shown):
        right.text(v, i, f" {_fmt(v)} ms ({v / figures['grpc_floor_rtt_ms']:.1f}× floor)", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


README_BEGIN = "<!-- bench results: begin (written by `make bench`) -->"
README_END = "<!-- bench results: end -->"


def into_readme(readme: Path, text: str) -> None:
    """Replace what stands between the README's two result markers with ``text``; both must be there."""
    doc = readme.read_text(encoding="utf-8")
    start, end = doc.find(README_BEGIN), doc.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"{readme}: no '{README_BEGIN}' … '{README_END}' markers to write the results between")
    readme.write_text(doc[: start + len(README_BEGIN)] + "\n\n" + text + "\n" + doc[end:], encoding="utf-8")


def write(out: Path, figures: Mapping[str, float], meta: Mapping[str, Any]) -> str:
    """Write results.json, results.md and (with matplotlib) results.png into ``out``; return the table."""
    out.mkdir(parents=True, exist_ok=True)
    doc = {**{k: round(v, 4) for k, v in sorted(figures.items())}, "meta": dict(meta)}
    (out / "results.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    text = table(figures, meta)
    (out / "results.md").write_text(text, encoding="utf-8")
    chart(figures, out / "results.png")
    return text

"""Scenario reports: the JSON of DESIGN.md (a contract) and a readable table."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table


@dataclass(frozen=True)
class StepResult:
    """How one step went."""

    name: str
    passed: bool
    duration_s: float
    detail: str


@dataclass(frozen=True)
class SliceResult:
    """A slice the scenario created, as last read from the SP that owns it."""

    alias: str
    id: str
    state: str
    domains: list[str]
    sp: str


@dataclass(frozen=True)
class SpResult:
    """An SP of the run: its gRPC address and its REST API's (empty when it served none)."""

    id: str
    address: str
    rest: str = ""


def report_json(
    name: str,
    passed: bool,
    steps: Sequence[StepResult],
    slices: Sequence[SliceResult],
    sps: Sequence[SpResult] = (),
) -> dict[str, Any]:
    """The report as DESIGN.md specifies it (plus a few extra keys, ``sps`` among them)."""
    return {
        "scenario": name,
        "passed": passed,
        "steps": [
            {"name": s.name, "passed": s.passed, "duration_s": round(s.duration_s, 6), "detail": s.detail}
            for s in steps
        ],
        "slices": [
            {"id": s.id, "state": s.state, "domains": list(s.domains), "alias": s.alias, "sp": s.sp} for s in slices
        ],
        "sps": [
            {"id": p.id, "address": p.address, "rest": f"https://{p.rest}/tmf-api/" if p.rest else ""} for p in sps
        ],
    }


def render_report(
    name: str,
    passed: bool,
    steps: Sequence[StepResult],
    slices: Sequence[SliceResult],
    console: Console,
    sps: Sequence[SpResult] = (),
) -> None:
    """Print the steps and slices as tables, and the verdict."""
    table = Table(title=f"scenario {name}", title_justify="left")
    table.add_column("step")
    table.add_column("result")
    table.add_column("s", justify="right")
    table.add_column("detail", overflow="fold")
    for s in steps:
        table.add_row(s.name, "[green]pass[/]" if s.passed else "[red]FAIL[/]", f"{s.duration_s:.2f}", s.detail)
    console.print(table)
    if slices:
        st = Table(title="slices", title_justify="left")
        for col in ("alias", "id", "owner", "state", "leaf SPs"):
            st.add_column(col)
        for sl in slices:
            st.add_row(sl.alias, sl.id, sl.sp, sl.state, " → ".join(sl.domains))
        console.print(st)
    if any(p.rest for p in sps):
        spt = Table(title="SPs (their REST API while the run lasted)", title_justify="left")
        for col in ("SP", "gRPC", "REST"):
            spt.add_column(col)
        for p in sps:
            spt.add_row(p.id, p.address, f"https://{p.rest}/tmf-api/" if p.rest else "-")
        console.print(spt)
    ok = sum(s.passed for s in steps)
    verdict = "[bold green]PASSED[/]" if passed else "[bold red]FAILED[/]"
    console.print(f"{verdict}: {ok}/{len(steps)} steps passed")

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


def report_json(name: str, passed: bool, steps: Sequence[StepResult], slices: Sequence[SliceResult]) -> dict[str, Any]:
    """The report as DESIGN.md specifies it (plus a few extra keys)."""
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
    }


def render_report(
    name: str, passed: bool, steps: Sequence[StepResult], slices: Sequence[SliceResult], console: Console
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
    ok = sum(s.passed for s in steps)
    verdict = "[bold green]PASSED[/]" if passed else "[bold red]FAILED[/]"
    console.print(f"{verdict}: {ok}/{len(steps)} steps passed")

"""The fault sweep's cases and report: what to break where (``Case``), how each case ended
(``CaseResult``), the figures over a run (``SweepReport``), and the case lists and federation tweaks
the tests use (``default_cases``, ``race_cases``, ``slow_leaves``, ``tuned``). ``scenarios.sweep`` runs them.
"""

from __future__ import annotations

import itertools
import json
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from broker.core.faults import OPERATIONS, POINTS
from scenarios.convergence import Outcome
from scenarios.model import Scenario

ACTIONS = ("crash", "hang", "fail", "kill", "race")
#: The error a ``fail`` case raises at its point: a definitive refusal (not "try again"), so the SP's
#: upper must decide on it at once — for an Activate, compensate back to COMMITTED.
FAIL_CODE = "FAILED_PRECONDITION"
#: Whose injection points an operation reaches: an upper SP releases a child with Terminate whatever
#: the child holds, so below the top a customer's Abort runs through the children's terminate points.
_POINTS_OF: dict[str, tuple[str, ...]] = {op: (op,) for op in OPERATIONS} | {"abort": ("abort", "terminate")}


@dataclass(frozen=True)
class Case:
    """One fault: at ``sp``, during ``operation``, at ``point`` (empty for ``kill``), doing ``action``."""

    operation: str
    sp: str
    action: str
    point: str = ""
    domain: str = ""  # for task.* points: only the hit for this child (default: the first hit)
    delay_ms: float = 0.0  # for race: how long after the operation was sent the SP is killed

    def __post_init__(self) -> None:
        if self.operation not in OPERATIONS:
            raise ValueError(f"operation {self.operation!r}: one of {', '.join(OPERATIONS)}")
        if self.action not in ACTIONS:
            raise ValueError(f"action {self.action!r}: one of {', '.join(ACTIONS)}")
        if self.action in ("kill", "race") and self.point:
            raise ValueError("a kill comes from outside: it has no injection point")
        if self.action not in ("kill", "race") and (
            self.point not in POINTS or self.point.split(".")[0] not in _POINTS_OF[self.operation]
        ):
            raise ValueError(f"point {self.point!r} is not an injection point of {self.operation}")

    def expected(self, top: bool) -> frozenset[Outcome] | None:
        """The outcomes this case may end in besides being settled (None: any settled one).

        A refused Activate keeps the reservation: every SP ends COMMITTED, never released. Only a
        refusal the top raises after it recorded ACTIVE (``activate.done``) leaves the slice active.
        """
        if self.action == "fail" and self.operation == "order" and self.point in ("order.task.after", "order.done"):
            # A refusal after a child's commit held is its activation's: compensated, as for Activate.
            if top and self.point == "order.done":
                return frozenset({Outcome.ACTIVE})
            return frozenset({Outcome.COMMITTED})
        if self.action != "fail" or self.operation != "activate":
            return None
        if top and self.point == "activate.done":
            return frozenset({Outcome.ACTIVE})
        return frozenset({Outcome.COMMITTED})

    @property
    def name(self) -> str:
        """``commit.task.after@M1:crash`` (``reserve@L3:kill`` for a kill)."""
        where = self.point or self.operation
        race = f"+{self.delay_ms:.0f}ms" if self.action == "race" else ""
        return f"{where}@{self.sp}" + (f"/{self.domain}" if self.domain else "") + f":{self.action}{race}"


@dataclass(frozen=True)
class CaseResult:
    """How one case ended."""

    case: Case
    fired: bool  # the rule fired (a kill always "fires")
    answer: str  # the top's answer to the operation: a state, or an error code
    verdict: str  # the last verdict, described
    outcome: Outcome
    converged: bool  # a settled outcome held before the deadline
    seconds: float  # from the operation's answer to the settled verdict (or to giving up)
    deadline_s: float
    orphans: tuple[str, ...] = ()
    lie: str = ""  # the top's answer contradicts what the SPs hold
    restarted: tuple[str, ...] = ()
    error: str = ""  # the harness could not run the case (federation would not start, ...)
    cleanup: str = ""  # what a clean Terminate after a committed outcome left held (empty: all released)
    cleanup_orphans: tuple[str, ...] = ()  # held after that Terminate with no upper holding them
    traffic: str = ""  # on a data plane: why an ACTIVE outcome carried no traffic (empty: it did, or not checked)
    unexpected: str = ""  # settled, but not where the case must end (a refused Activate released, say)

    @property
    def passed(self) -> bool:
        """Fired, converged to all-committed/active or all-released, no orphan, the top told the truth,
        and (on a data plane) an ACTIVE slice carries traffic."""
        return (
            self.fired
            and self.converged
            and not (self.orphans or self.lie or self.error or self.cleanup or self.traffic or self.unexpected)
        )

    def to_json(self) -> dict[str, Any]:
        """The result as a JSON object."""
        return {
            "case": self.case.name,
            "operation": self.case.operation,
            "point": self.case.point,
            "sp": self.case.sp,
            "action": self.case.action,
            "passed": self.passed,
            "fired": self.fired,
            "answer": self.answer,
            "outcome": str(self.outcome),
            "converged": self.converged,
            "seconds": round(self.seconds, 3),
            "deadline_s": self.deadline_s,
            "orphans": list(self.orphans),
            "lie": self.lie,
            "restarted": list(self.restarted),
            "error": self.error,
            "cleanup": self.cleanup,
            "cleanup_orphans": list(self.cleanup_orphans),
            "traffic": self.traffic,
            "unexpected": self.unexpected,
            "verdict": self.verdict,
        }


@dataclass
class SweepReport:
    """What a sweep covered and found."""

    results: list[CaseResult] = field(default_factory=list)
    seconds: float = 0.0
    federations_started: int = 0
    recycled: list[str] = field(default_factory=list)
    #: On a data plane: what a federation left in the kernel under its prefix after it stopped.
    leftovers: list[str] = field(default_factory=list)
    #: On a data plane: how many ACTIVE outcomes were probed with traffic.
    probed: int = 0
    #: Cases run a second time, on a fresh federation, because the harness lost its connection the first time.
    harness_retries: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Every case passed (and there was at least one), and no federation left anything in the kernel."""
        return bool(self.results) and all(r.passed for r in self.results) and not self.leftovers

    def summary(self) -> dict[str, Any]:
        """The figures: cases, operations × points covered, outcomes, orphans, slowest convergence."""
        fired = [r for r in self.results if r.fired]
        covered = sorted({(r.case.operation, r.case.point or "(kill)") for r in fired})
        slowest = max((r for r in self.results if r.converged), key=lambda r: r.seconds, default=None)
        return {
            "cases": len(self.results),
            "passed": sum(r.passed for r in self.results),
            "fired": len(fired),
            "not_reached": [r.case.name for r in self.results if not r.fired and not r.error],
            "operations_x_points_covered": len(covered),
            "operations_x_points": [f"{op}:{pt}" for op, pt in covered],
            "sps_x_points_covered": len({(r.case.sp, r.case.point or r.case.operation) for r in fired}),
            "outcomes": dict(Counter(str(r.outcome) for r in self.results)),
            "orphans": sum(len(r.orphans) + len(r.cleanup_orphans) for r in self.results),
            "cases_with_orphans": [r.case.name for r in self.results if r.orphans or r.cleanup_orphans],
            "not_converged": [r.case.name for r in self.results if not r.converged],
            "lies": [f"{r.case.name}: {r.lie}" for r in self.results if r.lie],
            "unexpected_outcomes": [f"{r.case.name}: {r.unexpected}" for r in self.results if r.unexpected],
            "errors": [f"{r.case.name}: {r.error}" for r in self.results if r.error],
            "left_after_terminate": [f"{r.case.name}: {r.cleanup}" for r in self.results if r.cleanup],
            "active_probed_with_traffic": self.probed,
            "no_traffic": [f"{r.case.name}: {r.traffic}" for r in self.results if r.traffic],
            "dataplane_leftovers": self.leftovers,
            "harness_retries": self.harness_retries,
            "slowest_convergence_s": round(slowest.seconds, 3) if slowest else None,
            "slowest_case": slowest.case.name if slowest else None,
            "federations_started": self.federations_started,
            "federations_replaced": self.recycled,
            "seconds": round(self.seconds, 1),
        }

    def render(self) -> str:
        """A short text for a test's failure message or a terminal."""
        s = self.summary()
        lines = [
            f"{s['passed']}/{s['cases']} cases passed in {s['seconds']} s on {s['federations_started']} federations; "
            f"{s['fired']} fired, covering {s['operations_x_points_covered']} operation×point pairs "
            f"({s['sps_x_points_covered']} SP×point)",
            f"outcomes {s['outcomes']}; orphans {s['orphans']}; slowest convergence "
            f"{s['slowest_convergence_s']} s ({s['slowest_case']})",
        ]
        lines.extend(f"  ↻ run again on a fresh federation: {why}" for why in self.harness_retries)
        for r in self.results:
            if not r.passed:
                why = r.error or (
                    "not reached (the rule never fired)"
                    if not r.fired
                    else (
                        r.lie
                        or r.unexpected
                        or ("orphans " + ", ".join(r.orphans) if r.orphans else "")
                        or ("did not converge" if not r.converged else r.cleanup or r.traffic)
                    )
                )
                lines.append(f"  ✗ {r.case.name}: answer {r.answer}; {why}; {r.verdict}")
        lines.extend(f"  ✗ left in the kernel: {left}" for left in self.leftovers)
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """Summary and every case."""
        return {"summary": self.summary(), "cases": [r.to_json() for r in self.results]}


def race_cases(
    sps: Sequence[str],
    *,
    operation: str = "commit",
    operations: Sequence[str] = (),
    trials: int = 20,
    max_delay_ms: float = 50.0,
    seed: int = 19,
) -> list[Case]:
    """``trials`` kills of each SP in ``sps`` at a random 0–``max_delay_ms`` after each operation was sent."""
    rng = random.Random(seed)
    return [
        Case(op, sp, "race", delay_ms=round(rng.uniform(0, max_delay_ms), 1))
        for op in (operations or (operation,))
        for sp in sps
        for _ in range(trials)
    ]


def tuned(scenario: Scenario, *, hold_s: float = 4, reconcile_s: float = 0.5, top_timeout_s: float = 3.0) -> Scenario:
    """The scenario's federation with sweep timings: a short hold, a fast reconciler, and lower-SP
    deadlines that shrink by one second per level below the top (at least one second)."""
    below = {lo for sp in scenario.sps for lo in sp.lower}
    depth = {sp.id: 0 for sp in scenario.sps if sp.id not in below}
    for _ in scenario.sps:
        for sp in scenario.sps:
            if sp.id in depth:
                depth.update({lo: depth[sp.id] + 1 for lo in sp.lower if lo not in depth})
    sps = [
        replace(
            sp,
            settings={
                **sp.settings,
                "hold_time_s": hold_s,
                "reconcile_interval_s": reconcile_s,
                "lower_timeout_s": max(1.0, top_timeout_s - depth.get(sp.id, 0)),
            },
        )
        for sp in scenario.sps
    ]
    return replace(scenario, sps=tuple(sps))


def slow_leaves(scenario: Scenario, latency_s: float) -> Scenario:
    """The scenario with every emulated leaf domain answering ``latency_s`` late at each step."""
    sps = []
    for sp in scenario.sps:
        domains = sp.settings.get("domains")
        if domains:
            slowed = [{**d, "faults": {**d.get("faults", {}), "latency_s": latency_s}} for d in domains]
            sp = replace(sp, settings={**sp.settings, "domains": slowed})
        sps.append(sp)
    return replace(scenario, sps=tuple(sps))


def default_cases(
    scenario: Scenario,
    *,
    operations: Sequence[str] = OPERATIONS,
    actions: Sequence[str] = ("crash", "hang"),
    sps: Sequence[str] | None = None,
) -> list[Case]:
    """Every operation × injection point of it × SP on the path × action (the path of sweep.yaml: every SP)."""
    on_path = list(sps) if sps is not None else [sp.id for sp in scenario.sps]
    below = {lo for sp in scenario.sps for lo in sp.lower}
    cases = []
    for op, point, sp, action in itertools.product(operations, POINTS, on_path, actions):
        if action in ("kill", "race"):
            continue
        # The points this SP reaches during the operation: its own for the top (the customer's call),
        # for an SP below the top those of the call its upper sends (an Abort arrives as a Terminate).
        reached = op if sp not in below or op != "abort" else "terminate"
        if point.startswith(reached + "."):
            cases.append(Case(op, sp, action, point))
    if "kill" in actions:
        cases.extend(Case(op, sp, "kill") for op in operations for sp in on_path)
    return cases


def write_report(report: SweepReport, path: Path) -> None:
    """The report as JSON (summary first, then every case)."""
    path.write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")


__all__ = [
    "ACTIONS",
    "FAIL_CODE",
    "Case",
    "CaseResult",
    "SweepReport",
    "default_cases",
    "race_cases",
    "slow_leaves",
    "tuned",
    "write_report",
]

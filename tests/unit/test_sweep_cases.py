"""The fault sweep's cases and report, without processes."""

from __future__ import annotations

import pytest

from broker.core.faults import POINTS
from scenarios.convergence import Outcome
from scenarios.model import load_scenario
from scenarios.sweep import SWEEP_YAML, Case, CaseResult, SweepReport, _answer_contradicts, default_cases


def test_default_cases_cover_each_operations_own_points_at_every_sp_with_crash_and_hang() -> None:
    sc = load_scenario(SWEEP_YAML)
    cases = default_cases(sc)
    assert len(cases) == len(POINTS) * 7 * 2
    assert {c.point for c in cases} == set(POINTS)
    # Below the top an Abort arrives as the upper's Terminate: its cases arm the terminate points there.
    for c in cases:
        reached = "terminate" if c.operation == "abort" and c.sp != "T" else c.operation
        assert c.point.startswith(reached + "."), c.name
    assert {c.point for c in cases if c.operation == "abort" and c.sp == "M1"} == {
        p for p in POINTS if p.startswith("terminate.")
    }
    assert {c.sp for c in cases} == {"T", "M1", "M2", "L1", "L2", "L3", "L4"}
    kills = default_cases(sc, operations=("reserve", "commit"), actions=("kill",), sps=("M1",))
    assert [c.name for c in kills] == ["reserve@M1:kill", "commit@M1:kill"]


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"operation": "launch", "sp": "T", "action": "crash", "point": "reserve.start"}, "operation"),
        ({"operation": "commit", "sp": "T", "action": "explode", "point": "commit.done"}, "action"),
        (
            {"operation": "commit", "sp": "T", "action": "crash", "point": "reserve.start"},
            "not an injection point of commit",
        ),
        ({"operation": "commit", "sp": "T", "action": "kill", "point": "commit.done"}, "no injection point"),
    ],
)
def test_a_case_that_cannot_happen_is_refused(kw: dict[str, str], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        Case(**kw)


def test_the_top_lies_when_its_answer_promises_what_the_sps_do_not_hold() -> None:
    assert (
        _answer_contradicts("TERMINATED", Outcome.COMMITTED)
        == "the top answered TERMINATED, but the SPs hold committed"
    )
    assert _answer_contradicts("COMMITTED", Outcome.RELEASED)
    assert not _answer_contradicts("COMMITTED", Outcome.ACTIVE)
    assert not _answer_contradicts("UNAVAILABLE", Outcome.RELEASED)  # an error promises nothing
    assert not _answer_contradicts("HELD", Outcome.RELEASED)  # a hold may expire
    assert _answer_contradicts("COMMITTED", Outcome.ACTIVE, "deactivate")  # a Deactivate that did not happen
    assert not _answer_contradicts("COMMITTED", Outcome.COMMITTED, "deactivate")


def test_a_refused_activation_must_end_committed_not_released() -> None:
    sc = load_scenario(SWEEP_YAML)
    refusals = default_cases(sc, operations=("activate",), actions=("fail",), sps=("T", "M1"))
    assert {c.point for c in refusals} == {p for p in POINTS if p.startswith("activate.")} and len(refusals) == 8
    at_leaf = Case("activate", "L2", "fail", "activate.task.before")
    assert at_leaf.expected(top=False) == {Outcome.COMMITTED}
    assert Case("activate", "T", "fail", "activate.done").expected(top=True) == {Outcome.ACTIVE}
    assert Case("activate", "M1", "fail", "activate.done").expected(top=False) == {Outcome.COMMITTED}
    assert Case("activate", "T", "crash", "activate.start").expected(top=True) is None  # any settled outcome
    released = _result(at_leaf, outcome=Outcome.RELEASED, unexpected="ended released, must end committed")
    assert not released.passed
    report = SweepReport([released])
    assert report.summary()["unexpected_outcomes"] == [
        "activate.task.before@L2:fail: ended released, must end committed"
    ]
    assert "must end committed" in report.render()


def test_deactivate_cases_run_after_an_activation_and_arm_deactivate_points() -> None:
    from scenarios.sweep import PREFIX

    assert PREFIX["deactivate"] == ("reserve", "commit", "activate")
    cases = default_cases(load_scenario(SWEEP_YAML), operations=("deactivate",), sps=("M1",))
    assert sorted(c.point for c in cases if c.action == "crash") == sorted(
        f"deactivate.{s}" for s in ("start", "task.before", "task.after", "done")
    )


def _result(case: Case, **kw: object) -> CaseResult:
    base: dict[str, object] = {
        "fired": True,
        "answer": "COMMITTED",
        "verdict": "committed",
        "outcome": Outcome.COMMITTED,
        "converged": True,
        "seconds": 1.0,
        "deadline_s": 7.5,
    }
    base.update(kw)
    return CaseResult(case, **base)  # type: ignore[arg-type]


def test_the_report_counts_coverage_outcomes_orphans_and_the_slowest_convergence() -> None:
    a = Case("commit", "M1", "crash", "commit.decided")
    b = Case("commit", "T", "hang", "commit.decided")
    c = Case("reserve", "L1", "crash", "reserve.start")
    d = Case("terminate", "M2", "kill")
    report = SweepReport(
        [
            _result(a, seconds=2.5),
            _result(b, seconds=0.4),
            _result(c, fired=False, outcome=Outcome.RELEASED),
            _result(d, converged=False, outcome=Outcome.SPLIT, orphans=("L3 L3-1 COMMITTED",), seconds=7.5),
        ],
        seconds=12.0,
        federations_started=2,
    )
    s = report.summary()
    assert s["cases"] == 4 and s["passed"] == 2 and not report.passed
    assert s["operations_x_points"] == ["commit:commit.decided", "terminate:(kill)"]
    assert s["sps_x_points_covered"] == 3
    assert s["not_reached"] == ["reserve.start@L1:crash"]
    assert s["orphans"] == 1 and s["cases_with_orphans"] == ["terminate@M2:kill"]
    assert s["slowest_convergence_s"] == 2.5 and s["slowest_case"] == "commit.decided@M1:crash"
    text = report.render()
    assert "2/4 cases passed" in text and "✗ reserve.start@L1:crash" in text and "orphans L3 L3-1 COMMITTED" in text
    assert report.to_json()["cases"][3]["orphans"] == ["L3 L3-1 COMMITTED"]

"""The all-or-nothing judge: one slice read back at every SP, committed everywhere or released everywhere."""

from __future__ import annotations

from fedbroker.v1 import northsouth_pb2 as pb
from scenarios.convergence import Outcome, SpReading, judge

LOWERS = {"T": ["M1", "M2"], "M1": ["L1", "L2"], "M2": ["L3", "L4"], "L1": [], "L2": [], "L3": [], "L4": []}
PATH = {"T": "T-1", "M1": "M1-1", "M2": "M2-1", "L1": "L1-1", "L2": "L2-1", "L3": "L3-1", "L4": "L4-1"}
PARENT = {"M1": "T", "M2": "T", "L1": "M1", "L2": "M1", "L3": "M2", "L4": "M2"}


def _slice(sp: str, state: str, slice_id: str = "", request_id: str = "", attempt: int = 0) -> pb.Slice:
    sid = slice_id or PATH[sp]
    if not request_id:
        request_id = f"{PATH[PARENT[sp]]}.{LOWERS[PARENT[sp]].index(sp)}.{attempt}" if sp in PARENT else "cust-1"
    segments = [
        pb.Segment(domain=lo, sp_id=lo, local=False, child_ref=PATH[lo], state=getattr(pb, f"SLICE_STATE_{state}"))
        for lo in LOWERS[sp]
    ] or [pb.Segment(domain=sp, sp_id=sp, local=True, child_ref=f"{sid}.0.0")]
    return pb.Slice(id=sid, request_id=request_id, state=getattr(pb, f"SLICE_STATE_{state}"), segments=segments)


def _usage(sp: str, holding: int, mbps: int = 0) -> pb.Usage:
    return pb.Usage(sp_id=sp, holding_slices=holding, domains=[pb.DomainUsage(domain=sp, bandwidth_mbps=mbps)])


def _everywhere(state: str, *, overrides: dict[str, str] | None = None) -> dict[str, SpReading]:
    out = {}
    for sp in LOWERS:
        st = (overrides or {}).get(sp, state)
        held = st in {"HELD", "COMMITTED", "ACTIVE", "COMMITTING", "RESERVING", "TERMINATING"}
        out[sp] = SpReading(sp, (_slice(sp, st),), _usage(sp, int(held), 100 if held and not LOWERS[sp] else 0))
    return out


def _judge(readings: dict[str, SpReading], **kw: object) -> Outcome:
    return judge(readings, LOWERS, "T", slice_id="T-1", **kw).outcome  # type: ignore[arg-type]


def test_committed_at_every_sp_of_the_path_is_all_committed() -> None:
    verdict = judge(_everywhere("COMMITTED"), LOWERS, "T", slice_id="T-1")
    assert verdict.outcome is Outcome.COMMITTED and verdict.settled and not verdict.problems
    assert verdict.states["L3"] == ("L3-1 COMMITTED",)


def test_the_root_is_found_by_the_customers_request_id_too() -> None:
    assert judge(_everywhere("ACTIVE"), LOWERS, "T", request_id="cust-1").outcome is Outcome.ACTIVE


def test_released_everywhere_with_nothing_in_use_is_all_released() -> None:
    for final in ("TERMINATED", "ABORTED", "EXPIRED", "FAILED"):
        assert _judge(_everywhere(final)) is Outcome.RELEASED


def test_a_leaf_still_committed_under_a_terminated_top_is_an_orphan() -> None:
    readings = _everywhere("TERMINATED", overrides={"M1": "COMMITTED", "L2": "COMMITTED"})
    verdict = judge(readings, LOWERS, "T", slice_id="T-1")
    assert verdict.outcome is Outcome.SPLIT and not verdict.settled
    assert verdict.orphans == ("M1 M1-1 COMMITTED",)  # L2's upper M1 holds it; M1's upper T does not
    assert any("T-1 is TERMINATED" in p for p in verdict.problems)


def test_one_sp_short_of_the_rest_is_split_and_one_in_flight_is_pending() -> None:
    assert _judge(_everywhere("COMMITTED", overrides={"L4": "ABORTED"})) is Outcome.SPLIT
    assert _judge(_everywhere("COMMITTED", overrides={"L4": "HELD"})) is Outcome.SPLIT
    assert _judge(_everywhere("COMMITTED", overrides={"M2": "COMMITTING"})) is Outcome.PENDING
    assert _judge(_everywhere("HELD")) is Outcome.HELD


def test_resources_held_with_no_slice_holding_them_are_a_leak() -> None:
    readings = _everywhere("ABORTED")
    readings["L3"] = SpReading("L3", readings["L3"].slices, _usage("L3", 0, mbps=600))
    verdict = judge(readings, LOWERS, "T", slice_id="T-1")
    assert verdict.outcome is Outcome.SPLIT and "L3 holds L3 600 Mb/s" in verdict.describe()
    readings["L3"] = SpReading("L3", readings["L3"].slices, _usage("L3", 1))
    assert "GetUsage counts 1 holding slices, List shows 0" in judge(readings, LOWERS, "T", slice_id="T-1").describe()


def test_a_child_the_upper_never_recorded_is_still_found_by_its_request_id() -> None:
    # T crashed during Reserve: M2 holds a second attempt's slice T never learned of.
    readings = _everywhere("ABORTED")
    stray = _slice("M2", "HELD", slice_id="M2-9", attempt=1)
    readings["M2"] = SpReading("M2", (*readings["M2"].slices, stray), _usage("M2", 1))
    verdict = judge(readings, LOWERS, "T", slice_id="T-1")
    assert verdict.outcome is Outcome.SPLIT and verdict.orphans == ("M2 M2-9 HELD",)
    assert verdict.states["M2"] == ("M2-1 ABORTED", "M2-9 HELD")


def test_a_stale_attempt_still_held_beside_the_committed_path_is_split() -> None:
    readings = _everywhere("COMMITTED")
    stale = _slice("L1", "HELD", slice_id="L1-7", attempt=1)
    readings["L1"] = SpReading("L1", (*readings["L1"].slices, stale), _usage("L1", 2, 200))
    verdict = judge(readings, LOWERS, "T", slice_id="T-1")
    assert verdict.outcome is Outcome.SPLIT and verdict.orphans == ("L1 L1-7 HELD",)


def test_without_a_root_anything_held_is_an_orphan_and_nothing_held_is_released() -> None:
    readings = {sp: SpReading(sp, (), _usage(sp, 0)) for sp in LOWERS}
    assert judge(readings, LOWERS, "T", request_id="never-made").outcome is Outcome.RELEASED
    readings["L2"] = SpReading("L2", (_slice("L2", "HELD"),), _usage("L2", 1, 100))
    verdict = judge(readings, LOWERS, "T", request_id="never-made")
    assert verdict.outcome is Outcome.SPLIT and verdict.orphans == ("L2 L2-1 HELD",)


def test_other_slices_are_ignored_unless_the_judge_is_exclusive() -> None:
    readings = _everywhere("COMMITTED")
    other = pb.Slice(id="L1-x", request_id="M1-x.0.0", state=pb.SLICE_STATE_ACTIVE)
    readings["L1"] = SpReading("L1", (*readings["L1"].slices, other), _usage("L1", 2, 200))
    assert _judge(readings) is Outcome.SPLIT
    assert _judge(readings, exclusive=False) is Outcome.COMMITTED


def test_an_sp_that_does_not_answer_makes_the_verdict_unreadable() -> None:
    readings: dict[str, SpReading] = _everywhere("COMMITTED")
    readings["M1"] = SpReading("M1", error="not running (exit status 86)")
    verdict = judge(readings, LOWERS, "T", slice_id="T-1")
    assert verdict.outcome is Outcome.UNREADABLE and "exit status 86" in verdict.describe()

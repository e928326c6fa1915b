"""The scenario format's fault steps: per-SP rules, faults/partition/heal, stop/cont, wait_crash, expect_everywhere."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from broker.core.faults import CRASH_EXIT_STATUS
from scenarios.model import ScenarioError, parse_scenario
from scenarios.processes import BrokerProcess, Fleet
from scenarios.runner import Run, StepFailed

REQUEST = {"sp": "T", "as": "s1", "slice": {"name": "s1", "src": "L1.ep", "dst": "L2.ep", "bandwidth_mbps": 10}}


def _doc(steps: list[dict[str, Any]], **t: Any) -> dict[str, Any]:
    return {
        "name": "f",
        "sps": [
            {"id": "T", "lower": ["L1", "L2"], **t},
            {"id": "L1", "domains": [{"id": "L1"}]},
            {"id": "L2", "domains": [{"id": "L2"}]},
        ],
        "steps": steps,
    }


def test_fault_steps_parse_with_run_unique_rule_ids_and_name_the_sps_with_a_faults_file() -> None:
    sc = parse_scenario(
        _doc(
            [
                {"request": REQUEST},
                {"faults": {"sp": "L1", "rules": [{"point": "commit.done", "action": "hang", "hang_s": 2}]}},
                {"faults": {"sp": "L1", "rules": [{"point": "commit.done", "action": "crash"}], "partitions": []}},
                {"partition": {"sp": "T", "from": ["L2"]}},
                {"heal": "T"},
                {"stop": "L2"},
                {"cont": "L2"},
                {"resume": "L2"},
                {"wait_crash": {"sp": "L1", "timeout_s": 5}},
                {"expect_everywhere": {"slice": "s1", "outcome": "committed", "timeout_s": 8}},
                {"expect_everywhere": "s1"},
            ],
            faults=[{"point": "reserve.start", "action": "fail", "code": "UNAVAILABLE"}],
            reconcile_interval_s=0.5,
        )
    )
    assert sc.sp("T").faults == ({"point": "reserve.start", "action": "fail", "code": "UNAVAILABLE", "id": "T-cfgr0"},)
    assert sc.sp("T").settings["reconcile_interval_s"] == 0.5
    ids = [r["id"] for st in sc.steps if st.action == "faults" for r in st.args["rules"]]
    assert ids == ["L1-s1r0", "L1-s2r0"]  # a fired rule is spent: no two steps share an id
    assert sc.fault_sps == {"T", "L1"}
    assert sc.steps[4].args == {"sp": "T", "from": []}
    assert sc.steps[9].args["outcome"] == "committed" and sc.steps[10].args == {"slice": "s1"}
    assert sc.lowers["T"] == ("L1", "L2")


@pytest.mark.parametrize(
    ("step", "needle"),
    [
        (
            {"faults": {"sp": "L1", "rules": [{"point": "commit.nowhere", "action": "crash"}]}},
            "steps[1].faults.rules[0].point",
        ),
        (
            {"faults": {"sp": "L1", "rules": [{"point": "commit.done", "action": "boom"}]}},
            "steps[1].faults.rules[0].action",
        ),
        ({"faults": {"sp": "L1", "rules": {"point": "x"}}}, "steps[1].faults.rules: a list"),
        ({"faults": {"sp": "T", "partitions": ["L9"]}}, "steps[1].faults.partitions[0]: 'L9' is not a lower-SP of T"),
        ({"faults": {"sp": "T", "when": 1}}, "steps[1].faults.when: unknown key"),
        ({"partition": {"sp": "T", "from": []}}, "steps[1].partition.from: a non-empty list"),
        ({"partition": {"sp": "L1", "from": ["L2"]}}, "'L2' is not a lower-SP of L1"),
        ({"heal": {"sp": "X"}}, "steps[1].heal.sp: unknown SP 'X'"),
        ({"wait_crash": {"sp": "L1", "timeout_s": 0}}, "steps[1].wait_crash.timeout_s"),
        ({"expect_everywhere": {"slice": "nope"}}, "steps[1].expect_everywhere.slice: 'nope' is not the alias"),
        ({"expect_everywhere": {"slice": "s1", "outcome": "fine"}}, "steps[1].expect_everywhere.outcome"),
        ({"expect_everywhere": {"slice": "s1", "timeout_s": 1e6}}, "steps[1].expect_everywhere.timeout_s"),
        ({"cont": {"sp": "L1", "x": 1}}, "steps[1].cont.x: unknown key"),
    ],
)
def test_a_bad_fault_step_names_its_path(step: dict[str, Any], needle: str) -> None:
    with pytest.raises(ScenarioError) as bad:
        parse_scenario(_doc([{"request": REQUEST}, step]))
    assert needle in str(bad.value)


def test_a_bad_per_sp_rule_names_its_path() -> None:
    with pytest.raises(ScenarioError, match=r"sps\[0\]\.faults\[0\]\.hang_s"):
        parse_scenario(_doc([{"request": REQUEST}], faults=[{"point": "commit.done", "action": "hang", "hang_s": -1}]))


def test_write_faults_replaces_the_file_and_always_moves_its_mtime(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    path = fleet.write_faults("L1", [{"id": "a", "point": "commit.done", "action": "crash"}], ["L2"])
    first = path.stat().st_mtime_ns
    for _ in range(5):  # faster than a file system's timestamp tick: each write is still a change
        fleet.write_faults("L1", [], [])
        assert path.stat().st_mtime_ns > first
        first = path.stat().st_mtime_ns
    assert json.loads(path.read_text()) == {"rules": [], "partitions": []}


def _process(fleet: Fleet, sp: str, code: str) -> BrokerProcess:
    broker = BrokerProcess(sp, fleet.root / sp)
    broker.proc = subprocess.Popen([sys.executable, "-c", code])  # a stand-in for a broker: only its end matters
    fleet.brokers[sp] = broker
    return broker


async def test_the_fleet_tells_an_injected_crash_from_a_kill_and_an_unexpected_death(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    crashing = _process(fleet, "L1", f"import os; os._exit({CRASH_EXIT_STATUS})")
    dying = _process(fleet, "L2", "raise SystemExit(3)")
    _process(fleet, "T", "import time; time.sleep(30)")
    try:
        fleet.signal("T")
        for b in (crashing, dying):
            assert b.proc is not None
            b.proc.wait(timeout=10)
        exits = {ex.sp_id: ex for ex in fleet.exits()}
        assert exits["L1"].crashed and "crashed (injected fault, status 86)" in exits["L1"].describe()
        assert exits["T"].expected and not exits["T"].crashed
        assert not exits["L2"].expected and "died unexpectedly (status 3)" in exits["L2"].describe()
        assert fleet.exits() == []  # each end is told once
        assert fleet.crashed() == ["L1"]
    finally:
        await fleet.stop_all()


async def test_stop_then_teardown_thaws_the_process_first(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    frozen = _process(fleet, "L1", "import time; time.sleep(30)")
    try:
        fleet.signal("L1", signal.SIGSTOP)
        assert frozen.frozen
        assert fleet.thaw_all() == ["L1"] and not frozen.frozen
        fleet.signal("L1", signal.SIGSTOP)
    finally:
        await fleet.stop_all()  # SIGCONT before SIGTERM: a stopped process could not die of it
    assert frozen.exit_status() is not None and not frozen.frozen


async def test_wait_crash_passes_only_for_the_crash_status(tmp_path: Path) -> None:
    sc = parse_scenario(_doc([{"request": REQUEST}, {"wait_crash": {"sp": "L1", "timeout_s": 10}}]))
    fleet = Fleet(tmp_path)
    run = Run(sc, fleet)
    try:
        _process(fleet, "L1", f"import os; os._exit({CRASH_EXIT_STATUS})")
        assert "L1 crashed (status 86)" in await run.step(sc.steps[1])
        _process(fleet, "L1", "raise SystemExit(1)")
        with pytest.raises(StepFailed, match="status 1, not the injected crash's 86"):
            await run.step(sc.steps[1])
        short = parse_scenario(_doc([{"request": REQUEST}, {"wait_crash": {"sp": "L1", "timeout_s": 0.3}}]))
        _process(fleet, "L1", "import time; time.sleep(30)")
        with pytest.raises(StepFailed, match=r"still running after 0\.3 s"):
            await run.step(short.steps[1])
    finally:
        await fleet.stop_all()


# --- the scenario schema (schemas/scenario.py): types checked, not coerced; unknown keys named --------


@pytest.mark.parametrize(
    ("setting", "field", "needle"),
    [
        ({"hold_time_s": "10"}, "sps[0].hold_time_s", "must be a positive number, got '10'"),
        ({"hold_time_s": True}, "sps[0].hold_time_s", "must be a positive number, got True"),
        ({"lower_timeout_s": [1]}, "sps[0].lower_timeout_s", "must be a positive number, got [1]"),
        (
            {"wim": {"driver": "linux", "capacity_mbps": {"p": "1"}}},
            "sps[0].wim.capacity_mbps.p",
            "must be a positive integer, got '1'",
        ),
        ({"lower": ["L1", 5]}, "sps[0].lower[1]", "required, a non-empty string, got 5"),
        ({"colour": 1}, "sps[0].colour", "unknown key (known: id, lower, faults, hold_time_s, lower_timeout_s"),
    ],
)
def test_an_sps_settings_are_checked_with_the_broker_configs_types(setting: Any, field: str, needle: str) -> None:
    with pytest.raises(ScenarioError) as bad:
        parse_scenario(_doc([{"request": REQUEST}], **setting))
    assert bad.value.field == field
    assert f"{field}: {needle}" in str(bad.value)


@pytest.mark.parametrize(
    ("step", "field", "needle"),
    [
        ({"sleep": "1h"}, "steps[1].sleep.seconds", "a number of seconds in (0, 60], got '1h'"),
        ({"sleep": True}, "steps[1].sleep.seconds", "a number of seconds in (0, 60], got True"),
        ({"get": {"sp": "T", "slice": "s1"}, "always": "no"}, "steps[1].always", "true or false, got 'no'"),
        ({"get": {"sp": "T", "slice": "s1"}, "expect": {"labels_agree": "yes"}}, "steps[1].expect.labels_agree", ""),
        ({"get": {"sp": "T", "slice": "s1"}, "expect": {"leaf_sps_min": True}}, "steps[1].expect.leaf_sps_min", ""),
        (
            {"request": {**REQUEST, "as": "s2", "hold_time_s": 10.5}},
            "steps[1].request.hold_time_s",
            "a whole number of seconds from 0, got 10.5",
        ),
        ({"wait_catalog": {"sp": "T", "terminals": ["x"], "timeout_s": "10"}}, "steps[1].wait_catalog.timeout_s", ""),
        ({"expect_idle": {"sps": "all", "when": 1}}, "steps[1].expect_idle.when", "unknown key (known: sps)"),
        (
            {"request": {**REQUEST, "alias": "s2"}},
            "steps[1].request.alias",
            "unknown key (known: sp, as, slice, request_id",
        ),
        (
            {"get": {"sp": "T", "slice": "s1"}, "expect": {"colour": 1}},
            "steps[1].expect.colour",
            "unknown key (known: state, error",
        ),
        ({"get": {"sp": "T", "slice": "s1"}, "nmae": "x"}, "steps[1].nmae", "unknown key (known: name, expect, always"),
        ({"cut": {"sp": "T", "port": "p"}}, "steps[1].cut.slice", "required"),
    ],
)
def test_a_steps_wrong_type_or_unknown_key_is_named_by_its_full_path(step: Any, field: str, needle: str) -> None:
    with pytest.raises(ScenarioError) as bad:
        parse_scenario(_doc([{"request": REQUEST}, step]))
    assert bad.value.field == field
    assert f"{field}: {needle}" in str(bad.value)


def test_every_problem_of_form_is_told_at_once() -> None:
    doc = _doc([{"request": REQUEST}, {"sleep": 0}, {"kill": {"sp": "L1", "signal": 9}}], hold_time_s=True)
    doc["colour"] = "blue"
    with pytest.raises(ScenarioError) as bad:
        parse_scenario(doc)
    lines = [line.partition(": ")[0] for line in str(bad.value).splitlines()]
    assert lines == ["scenario.colour", "sps[0].hold_time_s", "steps[1].sleep.seconds", "steps[2].kill.signal"]
    assert bad.value.field == "scenario.colour"


def test_shorthands_are_read_as_their_long_forms() -> None:
    steps = [{"request": REQUEST}, {"sleep": 1}, {"kill": "L1"}, {"expect_everywhere": "s1"}, {"expect_idle": "all"}]
    sc = parse_scenario(_doc([*steps, {"dataplane_audit": None}]))
    assert [dict(s.args) for s in sc.steps[1:]] == [{"seconds": 1}, {"sp": "L1"}, {"slice": "s1"}, {"sps": "all"}, {}]

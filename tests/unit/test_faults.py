"""Fault injection points: rules from the faults file fire where, when and as often as they say."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from broker.core.faults import CRASH_EXIT_STATUS, POINTS, Faults, parse_rules
from slicing.errors import ErrorCode, FedError


class Exited(Exception):
    pass


def _exit(status: int) -> None:
    raise Exited(status)


def _write(path: Path, rules: list[dict[str, object]], partitions: list[str] | None = None) -> None:
    path.write_text(json.dumps({"rules": rules, "partitions": partitions or []}))


async def test_no_file_means_every_point_is_free() -> None:
    faults = Faults(None, exit=_exit)
    for point in POINTS:
        await faults.hit(point, "s1", "L1")
    assert not faults.partitioned("L1") and not faults.enabled


async def test_a_crash_fires_at_the_nth_matching_hit_only_and_is_spent_before_it_acts(tmp_path: Path) -> None:
    path = tmp_path / "faults.json"
    _write(path, [{"id": "c", "point": "commit.task.after", "action": "crash", "occurrence": 2, "domain": "L3"}])
    faults = Faults(path, exit=_exit)
    await faults.hit("commit.task.after", "T-1", "L1")  # another child: not counted
    await faults.hit("commit.task.after", "T-1", "L3")  # first matching hit
    with pytest.raises(Exited) as crashed:
        await faults.hit("commit.task.after", "T-1", "L3")
    assert crashed.value.args == (CRASH_EXIT_STATUS,)
    assert (tmp_path / "faults.json.fired").read_text().split() == ["c"]
    # A broker restarted after the crash reads the same file and does not crash again.
    again = Faults(path, exit=_exit)
    for _ in range(3):
        await again.hit("commit.task.after", "T-1", "L3")


async def test_fail_raises_the_code_named_and_hang_sleeps(tmp_path: Path) -> None:
    path = tmp_path / "faults.json"
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)

    _write(
        path,
        [
            {"id": "f", "point": "reserve.start", "action": "fail", "code": "RESOURCE_EXHAUSTED", "occurrence": 0},
            {"id": "h", "point": "abort.done", "action": "hang", "hang_s": 7, "slice": "T-"},
        ],
    )
    faults = Faults(path, exit=_exit, sleep=sleep)
    for _ in range(2):  # occurrence 0: every hit
        with pytest.raises(FedError) as failed:
            await faults.hit("reserve.start", "T-9")
        assert failed.value.code is ErrorCode.RESOURCE_EXHAUSTED
    await faults.hit("abort.done", "M1-3")  # slice filter: not this one
    assert slept == []
    await faults.hit("abort.done", "T-3")
    assert slept == [7.0]


async def test_partitions_and_rules_follow_the_file_as_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "faults.json"
    faults = Faults(path, exit=_exit)
    assert not faults.partitioned("L3")  # no file yet
    _write(path, [], ["L3"])
    assert faults.partitioned("L3") and not faults.partitioned("L2")
    with pytest.raises(FedError) as cut:
        faults.check_partition("L3")
    assert cut.value.code is ErrorCode.UNAVAILABLE and "L3" in str(cut.value)
    path.unlink()
    assert not faults.partitioned("L3")


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"rules": [{"point": "nowhere", "action": "crash"}]}, "rules[0].point"),
        ({"rules": [{"point": "commit.decided", "action": "explode"}]}, "rules[0].action"),
        ({"rules": [{"point": "commit.decided", "action": "fail", "code": "OOPS"}]}, "rules[0].code"),
        ({"rules": [{"point": "commit.decided", "action": "crash", "occurrence": -1}]}, "rules[0].occurrence"),
        ({"rules": [{"point": "commit.decided", "action": "hang", "hang_s": 1e9}]}, "rules[0].hang_s"),
        ({"rules": [{"point": "commit.decided", "action": "hang", "when": 1}]}, "rules[0].when"),
        ({"partitions": "L3"}, "partitions"),
        ({"rule": []}, "rule"),
    ],
)
def test_a_bad_faults_file_names_the_field(raw: object, field: str) -> None:
    with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
        parse_rules(raw, "faults")


async def test_a_broken_file_arms_nothing(tmp_path: Path) -> None:
    path = tmp_path / "faults.json"
    path.write_text("{not json")
    faults = Faults(path, exit=_exit)
    await faults.hit("commit.decided", "T-1")
    assert not faults.partitioned("L1")

"""``fedbroker faults list`` prints every injection point, the actions and the file format; ``check`` validates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from broker.cli import main
from broker.core.faults import ACTIONS, CRASH_EXIT_STATUS, POINTS, RULE_FIELDS, parse_rules


def test_faults_list_json_names_every_point_action_and_rule_field(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["faults", "list", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert sorted(p["point"] for p in data["points"]) == sorted(POINTS)
    assert all(p["when"] == POINTS[p["point"]] for p in data["points"])
    assert [p["point"] for p in data["points"]][:2] == ["reserve.start", "reserve.task.before"]  # run order
    assert {f"deactivate.{s}" for s in ("start", "task.before", "task.after", "done")} <= set(POINTS)
    assert {a["action"] for a in data["actions"]} == set(ACTIONS) == {"crash", "hang", "fail"}
    assert data["crash_exit_status"] == CRASH_EXIT_STATUS
    assert {f["field"] for f in data["file"]["rule_fields"]} == set(RULE_FIELDS)
    parse_rules(data["file"]["example"], "example")  # the example printed is a valid faults file


def test_faults_list_table_shows_each_point_and_the_crash_status(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["faults", "list"]) == 0
    text = capsys.readouterr().out
    for point in POINTS:
        assert point in text
    assert "status 86" in text and "partitions" in text and ".fired" in text


def test_faults_check_accepts_a_good_file_and_names_the_bad_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"rules": [{"point": "commit.decided", "action": "crash"}], "partitions": ["L1"]}))
    assert main(["faults", "check", str(good)]) == 0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"rules": [{"point": "commit.nowhere", "action": "crash"}]}))
    assert main(["faults", "check", str(bad)]) == 1
    assert "rules[0].point" in capsys.readouterr().err
    (tmp_path / "broken.json").write_text("{")
    assert main(["faults", "check", str(tmp_path / "broken.json")]) == 1

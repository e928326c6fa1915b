"""``fedbroker faults …``: the broker's fault-injection points, actions and faults-file format."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.table import Table

from broker.cli.output import err, out
from broker.core.faults import ACTIONS, CRASH_EXIT_STATUS, FILE_FIELDS, OPERATIONS, POINTS, RULE_FIELDS, parse_rules

EXAMPLE: dict[str, Any] = {
    "rules": [
        {"id": "r1", "point": "commit.task.after", "action": "crash", "occurrence": 1, "domain": "L3"},
        {"id": "r2", "point": "reserve.start", "action": "hang", "hang_s": 5},
    ],
    "partitions": ["L4"],
}


_STAGE_ORDER = ("start", "decided", "task.before", "task.after", "done")


def _in_run_order(point: str) -> tuple[int, int]:
    operation, stage = point.split(".", 1)
    return OPERATIONS.index(operation), _STAGE_ORDER.index(stage) if stage in _STAGE_ORDER else len(_STAGE_ORDER)


def catalogue() -> dict[str, Any]:
    """Everything ``faults list`` prints, as data (the ``--json`` output)."""
    return {
        "points": [
            {"point": point, "operation": point.split(".", 1)[0], "stage": point.split(".", 1)[1], "when": what}
            for point, what in sorted(POINTS.items(), key=lambda item: _in_run_order(item[0]))
        ],
        "actions": [{"action": name, "does": what} for name, what in ACTIONS.items()],
        "crash_exit_status": CRASH_EXIT_STATUS,
        "file": {
            "config_key": "faults_file",
            "keys": [{"key": k, "meaning": v} for k, v in FILE_FIELDS.items()],
            "rule_fields": [{"field": k, "meaning": v} for k, v in RULE_FIELDS.items()],
            "fired_file": "<faults_file>.fired",
            "example": EXAMPLE,
        },
    }


def _list(ns: argparse.Namespace) -> int:
    data = catalogue()
    if ns.json:
        print(json.dumps(data, indent=2))
        return 0
    points = Table(title="injection points", title_justify="left")
    for col in ("point", "reached when"):
        points.add_column(col)
    for p in data["points"]:
        points.add_row(p["point"], p["when"])
    out.print(points)
    actions = Table(title="actions", title_justify="left")
    for col in ("action", "does"):
        actions.add_column(col)
    for a in data["actions"]:
        actions.add_row(a["action"], a["does"])
    out.print(actions)
    fields = Table(title="faults file (JSON; config key faults_file; re-read when it changes)", title_justify="left")
    for col in ("key", "meaning"):
        fields.add_column(col)
    for k in data["file"]["keys"]:
        fields.add_row(k["key"], k["meaning"])
    for f in data["file"]["rule_fields"]:
        fields.add_row(f"rules[].{f['field']}", f["meaning"])
    out.print(fields)
    out.print(
        "A one-shot rule (occurrence ≥ 1) is appended to <faults_file>.fired before it acts, so a broker "
        "restarted after an injected crash does not crash again. Example:"
    )
    out.print(json.dumps(EXAMPLE), markup=False, highlight=False, soft_wrap=True)
    return 0


def _check(ns: argparse.Namespace) -> int:
    path = Path(ns.file)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        err.print(f"[red]{path}:[/] {exc}", soft_wrap=True)
        return 1
    try:
        rules, partitions = parse_rules(raw, str(path))
    except ValueError as exc:
        err.print(f"[red]error:[/] {exc}", soft_wrap=True)
        return 1
    err.print(f"[green]{path}: valid[/] ({len(rules)} rules, {len(partitions)} partitions)", soft_wrap=True)
    return 0


def register(sub: Any) -> None:
    """Add ``faults list|check`` to the command's sub-parsers."""
    faults = sub.add_parser("faults", help="fault injection: points, actions, the faults file")
    fsub = faults.add_subparsers(dest="faults_cmd", required=True)
    fl = fsub.add_parser("list", help="every injection point, the actions and the faults-file format")
    fl.add_argument("--json", action="store_true", help="print it as one JSON document")
    fl.set_defaults(handler=_list)
    fc = fsub.add_parser("check", help="validate a faults file (exit 1 naming the bad field)")
    fc.add_argument("file", metavar="FILE", help="the faults file (JSON) to check, as `faults list` describes it")
    fc.set_defaults(handler=_check)

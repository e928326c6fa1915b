"""End to end: the dataplane scenario passes as root and leaves nothing; the audit command sees leftovers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from wim import netlink

pytestmark = pytest.mark.dataplane

ROOT = Path(__file__).resolve().parents[2]
FEDBROKER = Path(sys.executable).with_name("fedbroker")


def audit(prefix: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(FEDBROKER), "dataplane", "audit", "--prefix", prefix], capture_output=True, text=True, timeout=60
    )


def test_audit_lists_what_is_left_under_a_prefix_and_exits_non_zero(prefix: str) -> None:
    clean = audit(prefix)
    assert clean.returncode == 0, clean.stderr
    left = netlink.Names(prefix).pop_ns("L9", "lost")
    netlink.ensure_ns(left)
    found = audit(prefix)
    assert found.returncode == 1
    assert f"netns {left}" in found.stdout


def test_audit_refuses_a_prefix_outside_the_family() -> None:
    result = subprocess.run(
        [str(FEDBROKER), "dataplane", "audit", "--prefix", "eth"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and "--prefix" in result.stderr


# About 35 s alone, three times that beside the rest of make test on two cores.
@pytest.mark.timeout(330)
def test_dataplane_scenario_passes_and_leaves_no_namespace(tmp_path: Path) -> None:
    before = set(netlink.namespaces())
    report = tmp_path / "report.json"
    run = subprocess.run(
        [str(FEDBROKER), "scenario", "run", str(ROOT / "scenarios" / "dataplane.yaml"), "--report-json", str(report)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    if run.returncode != 0:  # the first failed step's own words, not only the table's end
        failed = [f"{s['name']}: {s['detail']}" for s in json.loads(report.read_text())["steps"] if not s["passed"]]
        raise AssertionError("\n".join(failed[:2]) + "\n" + run.stderr[-2000:])
    data = json.loads(report.read_text())
    assert data["passed"] is True
    probe_step = next(s for s in data["steps"] if s["name"].startswith("traffic"))
    for check in ("reachability s1 ok", "order s1 ok", "reachability s2 ok", "isolation s1|s2 ok", "shaping s1 ok"):
        assert check in probe_step["detail"]
    assert {s["alias"]: s["state"] for s in data["slices"]} == {"s1": "TERMINATED", "s2": "TERMINATED"}
    sweep = next(s for s in data["steps"] if s["name"] == "the data plane left nothing behind")
    assert sweep["passed"], sweep["detail"]
    prefix = sweep["detail"].rsplit(" ", 1)[-1]
    assert netlink.check_prefix(prefix) and netlink.leftovers(prefix) == []
    # Other runs on this machine may hold namespaces of their own prefixes; none of this run's is left.
    assert not [n for n in set(netlink.namespaces()) - before if n.startswith(f"{prefix}-")]

"""``scenarios/openstack.yaml`` end to end against the session's OpenStack services, and its check failing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from scenarios.openstack_services import CloudInfo

pytestmark = [pytest.mark.openstack, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
FEDBROKER = Path(sys.executable).with_name("fedbroker")


def run(scenario: Path, info: CloudInfo, report: Path) -> tuple[int, dict[str, Any], str]:
    # TMPDIR: the runner's work folder (kept after a failing run) lands in the test's own folder.
    env = {**os.environ, "OS_CLIENT_CONFIG_FILE": info.clouds_file, "TMPDIR": str(report.parent)}
    proc = subprocess.run(
        [str(FEDBROKER), "scenario", "run", str(scenario), "--report-json", str(report)],
        capture_output=True,
        text=True,
        env=env,
        timeout=280,
        check=False,
    )
    data = json.loads(report.read_text()) if report.exists() else {}
    return proc.returncode, data, proc.stdout + proc.stderr


def test_openstack_scenario_holds_commits_activates_terminates_and_leaves_openstack_empty(
    loopback_cloud: CloudInfo, tmp_path: Path
) -> None:
    code, report, output = run(ROOT / "scenarios" / "openstack.yaml", loopback_cloud, tmp_path / "r.json")
    assert code == 0, output[-4000:]
    steps = {s["name"]: s for s in report["steps"]}
    assert all(s["passed"] for s in report["steps"])
    held = steps["the held segment is a Neutron network with one Placement consumer"]["detail"]
    assert "L3: 1 Placement consumers, 1 networks: fedbroker-L3-" in held
    assert steps["Placement shows no allocation and Neutron no network of the slices"]["detail"] == (
        "L3: 0 Placement consumers, 0 networks; 0 subnets, 0 ports"
    )
    states = {s["alias"]: s["state"] for s in report["slices"]}
    assert states == {"s1": "TERMINATED", "s2": "EXPIRED"}


def test_expect_openstack_fails_when_openstack_holds_other_than_expected(
    loopback_cloud: CloudInfo, tmp_path: Path
) -> None:
    full = yaml.safe_load((ROOT / "scenarios" / "openstack.yaml").read_text())
    leaf = next(sp for sp in full["sps"] if sp["id"] == "L3")
    leaf["domains"][0]["id"] = leaf["id"] = "Q3"  # own providers and tags, apart from other tests
    scenario = {
        "name": "openstack-check",
        "sps": [leaf],
        "steps": [
            {"name": "a network that is not there", "expect_openstack": {"sp": "Q3", "networks": 1}},
            {"name": "counted right", "expect_openstack": {"sp": "Q3", "networks": 0, "consumers": 0}, "always": True},
        ],
    }
    path = tmp_path / "check.yaml"
    path.write_text(yaml.safe_dump(scenario))
    code, report, output = run(path, loopback_cloud, tmp_path / "r.json")
    assert code == 1, output[-3000:]
    first, second = report["steps"][1:]
    assert not first["passed"] and "expected 1 networks in OpenStack, found 0" in first["detail"]
    assert second["passed"]


def test_a_broker_whose_cloud_refuses_the_login_exits_naming_the_setting(
    loopback_cloud: CloudInfo, tmp_path: Path
) -> None:
    full = yaml.safe_load((ROOT / "scenarios" / "openstack.yaml").read_text())
    domain = next(sp for sp in full["sps"] if sp["id"] == "L3")["domains"][0]
    del domain["cloud"]
    domain["auth"] = {**loopback_cloud.auth(), "password": "not-the-password"}
    config = tmp_path / "broker.yaml"
    config.write_text(yaml.safe_dump({"sp_id": "L3", "listen": "127.0.0.1:0", "data_dir": "data", "domains": [domain]}))
    proc = subprocess.run(
        # Plaintext, so that the start gets as far as the cloud's login (the TLS settings are not the point here).
        [str(FEDBROKER), "serve", "--insecure", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1
    assert "domains[0].auth" in proc.stderr and "Keystone refused the credentials" in proc.stderr
    assert "Traceback" not in proc.stderr

"""The ``expect_openstack`` scenario step and the OpenStack scenario file parse; errors name their path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from scenarios.model import ScenarioError, load_scenario, parse_scenario
from scenarios.openstack_checks import needs_openstack

ROOT = Path(__file__).resolve().parents[2]


def scenario(step: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "x",
        "sps": [{"id": "L", "domains": [{"id": "L", "type": "emulated", "pops": ["a"]}]}],
        "steps": [step],
    }


def test_openstack_scenario_parses_and_needs_openstack() -> None:
    s = load_scenario(ROOT / "scenarios" / "openstack.yaml")
    checks = [st for st in s.steps if st.action == "expect_openstack"]
    assert [dict(c.args) for c in checks][-1] == {"sp": "L3", "networks": 0, "consumers": 0}
    assert checks[-1].always
    assert needs_openstack([sp.settings for sp in s.sps])
    assert not needs_openstack([sp.settings for sp in load_scenario(ROOT / "scenarios" / "three-tier.yaml").sps])


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ({"sp": "L", "networks": -1}, "steps[0].expect_openstack.networks: a non-negative count"),
        ({"sp": "L", "consumers": True}, "steps[0].expect_openstack.consumers: a non-negative count"),
        ({"sp": "L", "ports": 1}, "steps[0].expect_openstack.ports: unknown key"),
        ({"sp": "Z", "networks": 0}, "steps[0].expect_openstack.sp: unknown SP 'Z'"),
    ],
)
def test_bad_expect_openstack_names_the_path(args: dict[str, Any], needle: str) -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(scenario({"expect_openstack": args}))
    assert needle in str(info.value)

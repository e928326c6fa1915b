"""The scenario format's data-plane parts: the probe and audit steps, and when a run needs a prefix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from broker.descriptors import load_yaml
from fedbroker.v1 import northsouth_pb2 as pb
from scenarios.model import ScenarioError, load_scenario, parse_scenario
from scenarios.runner import local_segments

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


def test_the_dataplane_scenario_needs_a_prefix_and_the_demo_does_not() -> None:
    dataplane = load_scenario(SCENARIOS / "dataplane.yaml")
    assert dataplane.uses_dataplane
    assert not load_scenario(SCENARIOS / "three-tier.yaml").uses_dataplane
    probes = [s for s in dataplane.steps if s.action == "probe"]
    assert probes and probes[0].args["slices"] == ["s1", "s2"]
    assert [s.action for s in dataplane.steps][-1] == "dataplane_audit"


def doc(step: dict[str, Any]) -> dict[str, Any]:
    data = load_yaml(SCENARIOS / "dataplane.yaml")
    data["steps"] = [data["steps"][1], step]  # the request of s1, then the step under test
    return data


@pytest.mark.parametrize(
    ("step", "path"),
    [
        ({"probe": {"sp": "T", "slices": ["nope"]}}, "steps[1].probe.slices[0]"),
        ({"probe": {"sp": "T", "slices": ["s1"], "checks": ["speed"]}}, "steps[1].probe.checks[0]"),
        ({"probe": {"sp": "T", "slices": []}}, "steps[1].probe.slices"),
        ({"dataplane_audit": {"prefix": "fb12"}}, "steps[1].dataplane_audit.prefix"),
    ],
)
def test_a_wrong_probe_or_audit_step_names_its_path(step: dict[str, Any], path: str) -> None:
    with pytest.raises(ScenarioError, match=path.replace("[", r"\[").replace("]", r"\]")):
        parse_scenario(doc(step))


def test_local_segments_walk_the_read_back_down_to_the_leaves_in_path_order() -> None:
    leaf = pb.Segment(domain="L1", local=True, ingress="L1.ams", egress="L1.to-L2", functions=["firewall"])
    mid = pb.Segment(
        domain="M1", children=[leaf, pb.Segment(domain="L2", local=True, ingress="L2.to-L1", egress="L2.x")]
    )
    other = pb.Segment(domain="L9", local=True, ingress="L9.a", egress="L9.b")
    found = local_segments([mid, other])
    assert [(s.domain, s.src, s.dst, s.chain) for s in found] == [
        ("L1", "L1.ams", "L1.to-L2", ("firewall",)),
        ("L2", "L2.to-L1", "L2.x", ()),
        ("L9", "L9.a", "L9.b", ()),
    ]

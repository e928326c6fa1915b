"""The descriptor schemas at the edge (``schemas/``): types checked not coerced, unknown fields refused, paths named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from schemas.note import parse_note, parse_policy

EXAMPLE = Path(__file__).resolve().parents[2] / "scenarios" / "examples" / "note.yaml"


def example() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    return data


@pytest.mark.parametrize(
    ("where", "value", "said"),
    [
        (("endpoints", 0, "capacity_mbps"), "lots", "endpoints[0].capacity_mbps: 'lots' must be an integer > 0"),
        (("endpoints", 0, "capacity_mbps"), 500.5, "endpoints[0].capacity_mbps: 500.5 must be an integer > 0"),
        (("endpoints", 0, "capacity_mbps"), True, "endpoints[0].capacity_mbps: True must be an integer > 0"),
        (("transit", 0, "latency_ms"), "soon", "transit[0].latency_ms: 'soon' must be a number between 0 and 3.6e+06"),
        (("border_ports", 0, "can_swap"), "yes", "border_ports[0].can_swap: 'yes' must be true or false"),
        (("border_ports", 0, "peer_sp"), ["L2"], "border_ports[0].peer_sp: ['L2'] is not an id"),
        (("endpoints", 1, "region"), 5, "endpoints[1].region: 5 must be text"),
        (("hosting",), {"type": "nat"}, "hosting: must be a list"),
        (("endpoints", 0, "colour"), "blue", "endpoints[0].colour: unknown field"),
    ],
)
def test_a_note_with_a_wrong_type_is_refused_naming_the_path_and_what_is_allowed(
    where: tuple[str | int, ...], value: object, said: str
) -> None:
    data = example()
    target: Any = data
    for part in where[:-1]:
        target = target[part]
    target[where[-1]] = value

    note, problems = parse_note(data, 0.0)

    assert note is None
    assert any(p.startswith(said) for p in problems), problems


def test_a_required_field_left_out_is_named() -> None:
    data = example()
    del data["hosting"][0]["instances"]
    assert parse_note(data, 0.0)[1] == ["hosting[0].instances: required"]


def test_problems_in_several_entries_are_all_reported_in_one_pass() -> None:
    data = example()
    data["endpoints"][0]["capacity_mbps"] = "lots"
    data["border_ports"][0]["id"] = data["endpoints"][1]["id"]  # declared twice, in entries that are fine
    data["transit"][0]["b"] = "L1.nowhere"
    problems = parse_note(data, 0.0)[1]
    assert "border_ports[0].id: 'L1.utr' is already declared at endpoints[1].id" in problems
    assert any(p.startswith("endpoints[0].capacity_mbps: ") for p in problems)
    assert "transit[0].b: 'L1.nowhere' is not a declared endpoint or border port" in problems


def test_an_offer_edit_refuses_wrong_types_naming_the_offer_path() -> None:
    _, problems = parse_policy({"withdrawn": "no", "isolation": ["vxlan", 7]}, "offer")
    assert problems == [
        "offer.isolation[1]: 7 must be text",
        "offer.withdrawn: 'no' must be true or false",
    ]


# --- a leaf's domains (schemas/domain.py, through EmulatedDomainConfig / OpenStackDomainConfig) -----------


def _domain(**changes: Any) -> dict[str, Any]:
    from tests.topology import leaf_domain

    d = leaf_domain("L1", {"L2": "1000-1999"}, functions={"nat": 2})
    d.update(changes)
    return d


@pytest.mark.parametrize(
    ("change", "field", "said"),
    [
        (
            lambda d: d["links"][0].update(bandwidth_mbps=500.5),
            "links[0].bandwidth_mbps",
            "positive integer (got 500.5)",
        ),
        (lambda d: d["endpoints"][0].update(capacity_mbps=True), "endpoints[0].capacity_mbps", "(got True)"),
        (lambda d: d["links"][0].update(latency_ms="soon"), "links[0].latency_ms", "non-negative number (got 'soon')"),
        (lambda d: d.update(note_ttl_s="1h"), "note_ttl_s", "positive number (got '1h')"),
        (lambda d: d["ports"][0].update(can_swap=1), "ports[0].can_swap", "true or false (got 1)"),
        (lambda d: d["ports"][0].update(peer_sp=["L2"]), "ports[0].peer_sp", "non-empty string (got ['L2'])"),
        (lambda d: d["links"][0].update(colour="red"), "links[0].colour", "unknown key (known: a, b, bandwidth_mbps"),
    ],
)
def test_a_domain_with_a_wrong_type_is_refused_naming_the_path_not_coerced(change: Any, field: str, said: str) -> None:
    from domain_agents.emulated_config import EmulatedDomainConfig
    from slicing.errors import InvalidArgument

    d = _domain()
    change(d)
    with pytest.raises(InvalidArgument) as info:
        EmulatedDomainConfig.from_dict(d, "domains[2]")
    assert info.value.field == f"domains[2].{field}"
    assert said in str(info.value)


def test_every_problem_of_a_domain_is_named_the_first_as_its_field() -> None:
    from domain_agents.emulated_config import EmulatedDomainConfig
    from slicing.errors import InvalidArgument

    d = _domain()
    d["links"][0]["bandwidth_mbps"] = "lots"
    d["functions"][0]["slots"] = 0
    with pytest.raises(InvalidArgument) as info:
        EmulatedDomainConfig.from_dict(d, "domains[0]")
    lines = str(info.value).splitlines()
    assert info.value.field == "domains[0].links[0].bandwidth_mbps"
    assert lines[1] == "domains[0].functions[0].slots: must be a positive integer (got 0)"

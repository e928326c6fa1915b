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

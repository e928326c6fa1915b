"""The descriptor schemas at the edge (``schemas/``): types checked not coerced, unknown fields refused, paths named."""

from __future__ import annotations

import json
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


# --- fedbroker schema note|broker|scenario: the JSON Schema of each format, from its models -------

ROOT = Path(__file__).resolve().parents[2]
BROKER_EXAMPLES = [ROOT / "scenarios" / "examples" / "leaf.yaml"]
SCENARIOS = sorted((ROOT / "scenarios").glob("*.yaml"))
_TYPES: dict[str, Any] = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
    "integer": int,
    "number": (int, float),
}


def conforms(schema: dict[str, Any], value: Any, defs: dict[str, Any]) -> bool:
    """``value`` has the shape and types ``schema`` says (``jsonschema`` is not installed: this much suffices)."""
    if "$ref" in schema:
        return conforms(defs[schema["$ref"].rsplit("/", 1)[1]], value, defs)
    if "anyOf" in schema:
        return any(conforms(s, value, defs) for s in schema["anyOf"])
    if "const" in schema and value != schema["const"]:
        return False
    kind = schema.get("type")
    if kind is not None:
        if isinstance(value, bool) and kind in ("integer", "number"):
            return False
        if not isinstance(value, _TYPES[kind]):
            return False
    if isinstance(value, list) and "items" in schema:
        return all(conforms(schema["items"], x, defs) for x in value)
    if isinstance(value, dict) and kind == "object":
        props = schema.get("properties", {})
        if any(k not in value for k in schema.get("required", ())):
            return False
        extra = schema.get("additionalProperties", True)
        for k, v in value.items():
            sub = props.get(k, extra)
            if sub is False or (isinstance(sub, dict) and not conforms(sub, v, defs)):
                return False
    return True


def printed_schema(kind: str, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    from broker.cli import main

    assert main(["schema", kind]) == 0
    schema: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert schema["$schema"].startswith("https://json-schema.org/")
    return schema


def test_the_cli_names_the_formats_the_schemas_have() -> None:
    from broker.cli.schema import FORMATS
    from schemas.json_schema import KINDS

    assert FORMATS == KINDS


@pytest.mark.parametrize(
    ("kind", "properties"),
    [
        ("note", {"sp_id", "version", "endpoints", "border_ports", "transit", "qos_classes", "valid_for_s"}),
        ("broker", {"sp_id", "listen", "hold_time_s", "lower_sps", "domains", "wim", "security", "monitoring"}),
        ("scenario", {"name", "description", "sps", "steps"}),
    ],
)
def test_schema_prints_the_formats_json_schema(
    kind: str, properties: set[str], capsys: pytest.CaptureFixture[str]
) -> None:
    schema = printed_schema(kind, capsys)
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert properties <= set(schema["properties"])


def test_the_example_note_is_valid_by_the_models_and_the_printed_schema(capsys: pytest.CaptureFixture[str]) -> None:
    schema = printed_schema("note", capsys)
    assert parse_note(example(), now=0.0)[1] == []
    assert conforms(schema, example(), schema["$defs"])
    assert not conforms(schema, {**example(), "colour": "blue"}, schema["$defs"])


def _read(kind: str, path: Path) -> None:
    from broker.config import load_config
    from scenarios.model import load_scenario

    load_config(path) if kind == "broker" else load_scenario(path)


#: A change to a valid file that the printed schema must refuse (a wrong type, an unknown key).
BROKEN: dict[str, list[dict[str, Any]]] = {
    "broker": [{"hold_time_s": "10"}, {"wim": {"drvier": "linux"}}, {"lower_timeout_s": True}],
    "scenario": [{"name": 5}, {"colour": "blue"}, {"sps": [{"id": "T", "hold_time_s": "10"}]}],
}


@pytest.mark.parametrize(
    ("kind", "path"),
    [("broker", p) for p in BROKER_EXAMPLES] + [("scenario", p) for p in SCENARIOS],
    ids=lambda x: x.name if isinstance(x, Path) else x,
)
def test_the_example_files_are_valid_by_the_models_and_the_printed_schema(
    kind: str, path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    schema = printed_schema(kind, capsys)
    _read(kind, path)
    data = yaml.safe_load(path.read_text())
    assert conforms(schema, data, schema["$defs"])
    for change in BROKEN[kind]:
        assert not conforms(schema, {**data, **change}, schema["$defs"]), change
    if kind == "scenario":
        assert not conforms(schema, {**data, "steps": [*data["steps"], {"sleep": "1h"}]}, schema["$defs"])

"""The printed JSON Schemas carry the numeric ranges the models check, and agree with the models at the bounds."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from schemas import broker, domain, note, scenario

ROOT = Path(__file__).resolve().parents[2]
INF = math.inf

#: (format, model in ``$defs`` or "" for the document, field, what is kept inside it) -> its bounds.
#: ``"{}"`` under a field is the values of its mapping.
RANGES: dict[tuple[str, str, str], dict[str, float]] = {
    # a broker config
    ("broker", "", "hold_time_s"): {"exclusiveMinimum": 0},
    ("broker", "", "lower_timeout_s"): {"exclusiveMinimum": 0},
    ("broker", "", "activation_timeout_s"): {"exclusiveMinimum": 0},
    ("broker", "", "note_ttl_s"): {"exclusiveMinimum": 0},
    ("broker", "", "reconcile_interval_s"): {"exclusiveMinimum": 0},
    ("broker", "SecurityEntry", "call_ttl_s"): {"exclusiveMinimum": 0},
    ("broker", "SecurityEntry", "session_ttl_s"): {"exclusiveMinimum": 0},
    ("broker", "RetentionEntry", "failed_s"): {"exclusiveMinimum": 0},
    ("broker", "RetentionEntry", "failed_max"): {"minimum": 0, "maximum": 1_000_000},
    ("broker", "MonitoringEntry", "delta"): {"minimum": 0, "exclusiveMaximum": 1e12},
    ("broker", "MonitoringEntry", "clear_s"): {"minimum": 0, "maximum": 3600},
    ("broker", "WimEntry", "capacity_mbps{}"): {"exclusiveMinimum": 0},
    # its domains
    ("broker", "EmulatedDomainFile", "note_ttl_s"): {"exclusiveMinimum": 0},
    ("broker", "LinkEntry", "bandwidth_mbps"): {"minimum": 1},
    ("broker", "LinkEntry", "latency_ms"): {"minimum": 0},
    ("broker", "EndpointEntry", "capacity_mbps"): {"minimum": 1},
    ("broker", "PortEntry", "capacity_mbps"): {"minimum": 1},
    ("broker", "PortEntry", "latency_ms"): {"minimum": 0},
    ("broker", "FunctionEntry", "slots"): {"minimum": 1},
    ("broker", "FaultsEntry", "latency_s"): {"minimum": 0},
    ("broker", "OpenStackDomainFile", "note_ttl_s"): {"exclusiveMinimum": 0},
    ("broker", "OpenStackDomainFile", "poll_s"): {"exclusiveMinimum": 0},
    ("broker", "OpenStackDomainFile", "api_timeout_s"): {"exclusiveMinimum": 0},
    ("broker", "OpenStackDomainFile", "sweep_grace_s"): {"exclusiveMinimum": 0},
    ("broker", "PopEntry", "inventory{}"): {"minimum": 1},
    ("broker", "PopLatencyEntry", "latency_ms"): {"minimum": 0},
    ("broker", "FunctionSpecEntry", "vcpu"): {"minimum": 1},
    ("broker", "FunctionSpecEntry", "memory_mb"): {"minimum": 1},
    # a note (AUTHORING.md)
    ("note", "", "version"): {"minimum": 0},
    ("note", "", "valid_for_s"): {"exclusiveMinimum": 0},
    ("note", "", "price_per_mbps_hour"): {"minimum": 0, "maximum": 1e6},
    ("note", "EndpointFile", "capacity_mbps"): {"minimum": 1},
    ("note", "PortFile", "capacity_mbps"): {"minimum": 1},
    ("note", "PortFile", "latency_ms"): {"minimum": 0, "maximum": 3_600_000},
    ("note", "TransitFile", "latency_ms"): {"minimum": 0, "maximum": 3_600_000},
    ("note", "TransitFile", "bandwidth_mbps"): {"minimum": 1},
    ("note", "HostingFile", "instances"): {"minimum": 1},
    ("note", "HostingFile", "throughput_mbps"): {"minimum": 0},
    ("note", "QosFile", "delay_ms"): {"minimum": 0, "maximum": 3_600_000},
    ("note", "QosFile", "loss"): {"minimum": 0, "maximum": 1},
    # a scenario
    ("scenario", "SpFile", "hold_time_s"): {"exclusiveMinimum": 0},
    ("scenario", "SpFile", "note_ttl_s"): {"exclusiveMinimum": 0},
    ("scenario", "WaitCrashArgs", "timeout_s"): {"exclusiveMinimum": 0, "maximum": 300},
    ("scenario", "WaitCatalogArgs", "timeout_s"): {"exclusiveMinimum": 0, "maximum": 300},
    ("scenario", "RequestArgs", "hold_time_s"): {"minimum": 0},
    ("scenario", "SleepArgs", "seconds"): {"exclusiveMinimum": 0, "maximum": 60},
    ("scenario", "ExpectEverywhereArgs", "timeout_s"): {"minimum": 0, "maximum": 300},
    ("scenario", "CutArgs", "latency_ms"): {"minimum": 0, "maximum": 1e6},
    ("scenario", "CutArgs", "loss"): {"minimum": 0, "maximum": 1},
    ("scenario", "ExpectAlertArgs", "within_s"): {"exclusiveMinimum": 0, "maximum": 300},
    ("scenario", "ExpectAlertArgs", "count"): {"minimum": 0},
    ("scenario", "ExpectOpenstackArgs", "networks"): {"minimum": 0},
    ("scenario", "ExpectFile", "leaf_sps_min"): {"minimum": 0},
}
BOUNDS = ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum")
_ROOTS = {"broker": broker.BrokerFile, "note": note.NoteFile, "scenario": scenario.ScenarioFile}


def printed(kind: str, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    from broker.cli import main

    assert main(["schema", kind]) == 0
    schema: dict[str, Any] = json.loads(capsys.readouterr().out)
    return schema


def _numeric(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """The number (or integer) branch of a field's schema: through ``$ref`` and ``anyOf``."""
    if "$ref" in schema:
        return _numeric(defs[schema["$ref"].rsplit("/", 1)[1]], defs)
    if schema.get("type") in ("number", "integer"):
        return schema
    branches = [_numeric(s, defs) for s in schema.get("anyOf", ())]
    found = [b for b in branches if b]
    assert len(found) <= 1, schema
    return found[0] if found else {}


def field_schema(schema: dict[str, Any], model: str, field: str) -> dict[str, Any]:
    """The number schema of ``field`` in ``model`` (``$defs``; "" for the document itself)."""
    defs = schema["$defs"]
    at = defs[model] if model else schema
    if "anyOf" in at:  # a step's arguments: the mapping, or a lone value
        at = next(s for s in at["anyOf"] if s.get("type") == "object")
    name, mapping = field.removesuffix("{}"), field.endswith("{}")
    prop = at["properties"][name]
    if mapping:
        prop = next(s for s in prop.get("anyOf", [prop]) if s.get("type") == "object")["additionalProperties"]
    return _numeric(prop, defs)


@pytest.mark.parametrize(("where", "bounds"), RANGES.items(), ids=lambda x: ".".join(p for p in x if p))
def test_the_printed_schema_states_each_fields_range(
    where: tuple[str, str, str], bounds: dict[str, float], capsys: pytest.CaptureFixture[str]
) -> None:
    kind, model, field = where
    got = field_schema(printed(kind, capsys), model, field)
    assert {k: got[k] for k in BOUNDS if k in got} == bounds, got


def _model(kind: str, name: str) -> type[BaseModel]:
    if not name:
        return _ROOTS[kind]
    for module in (broker, domain, note, scenario):
        found = getattr(module, name, None)
        if isinstance(found, type) and issubclass(found, BaseModel):
            return found
    raise AssertionError(f"no model {name}")


def _in_range(value: float, schema: dict[str, Any]) -> bool:
    if schema["type"] == "integer" and not isinstance(value, int):
        return False
    checks = {
        "minimum": lambda b: value >= b,
        "exclusiveMinimum": lambda b: value > b,
        "maximum": lambda b: value <= b,
        "exclusiveMaximum": lambda b: value < b,
    }
    return all(checks[k](schema[k]) for k in BOUNDS if k in schema)


def _samples(schema: dict[str, Any]) -> list[float]:
    """Each bound, and values just inside and just outside it."""
    out: list[float] = []
    for k in BOUNDS:
        if k not in schema:
            continue
        bound = schema[k]
        if schema["type"] == "integer":
            out += [int(bound) - 1, int(bound), int(bound) + 1]
        else:
            step = 1e-6 * max(1.0, abs(bound))
            out += [float(bound) - step, float(bound), float(bound) + step]
    return out


def _refused_at(model: type[BaseModel], field: str, value: object) -> bool:
    """Whether the model refuses ``value`` as ``field`` (other fields left out, their problems ignored)."""
    name, mapping = field.removesuffix("{}"), field.endswith("{}")
    data: dict[str, Any] = {name: {"CUSTOM_X": value} if mapping and model is domain.PopEntry else value}
    if mapping and model is not domain.PopEntry:
        data = {name: {"L1.to-L2": value}}
    try:
        model.model_validate(data)
    except ValidationError as exc:
        return any(e["loc"][:1] == (name,) for e in exc.errors())
    return False


@pytest.mark.parametrize(("where", "bounds"), RANGES.items(), ids=lambda x: ".".join(p for p in x if p))
def test_a_value_at_a_bound_is_taken_by_the_model_exactly_when_the_schema_takes_it(
    where: tuple[str, str, str], bounds: dict[str, float], capsys: pytest.CaptureFixture[str]
) -> None:
    kind, name, field = where
    schema = field_schema(printed(kind, capsys), name, field)
    model = _model(kind, name)
    for value in _samples(schema):
        assert _in_range(value, schema) == (not _refused_at(model, field, value)), (field, value)


# --- label limits by label type: a JSON Schema if/then per type -------------------------------------


def conforms(schema: dict[str, Any], value: Any, defs: dict[str, Any]) -> bool:
    """``value`` as ``schema`` says: types, ``anyOf``/``allOf``/``if``/``then``, numeric bounds, items, keys."""
    if "$ref" in schema:
        return conforms(defs[schema["$ref"].rsplit("/", 1)[1]], value, defs)
    if "anyOf" in schema and not any(conforms(s, value, defs) for s in schema["anyOf"]):
        return False
    if not all(conforms(s, value, defs) for s in schema.get("allOf", ())):
        return False
    if "if" in schema and conforms(schema["if"], value, defs) and not conforms(schema.get("then", {}), value, defs):
        return False
    if "const" in schema and value != schema["const"]:
        return False
    types = {"object": dict, "array": list, "string": str, "boolean": bool, "integer": int, "number": (int, float)}
    kind = schema.get("type")
    if kind is not None:
        if kind == "null":
            return value is None
        if (isinstance(value, bool) and kind in ("integer", "number")) or not isinstance(value, types[kind]):
            return False
    numeric = isinstance(value, int | float) and not isinstance(value, bool) and kind in ("integer", "number")
    if numeric and not _in_range(value, schema):
        return False
    if isinstance(value, list) and "items" in schema:
        return all(conforms(schema["items"], x, defs) for x in value)
    if isinstance(value, dict):
        props = schema.get("properties", {})
        if any(k not in value for k in schema.get("required", ())):
            return False
        extra = schema.get("additionalProperties", True)
        for k, v in value.items():
            sub = props.get(k, extra)
            if sub is False or (isinstance(sub, dict) and not conforms(sub, v, defs)):
                return False
    return True


def _leaf() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "scenarios" / "examples" / "leaf.yaml").read_text())
    return data


@pytest.mark.parametrize(
    ("label_type", "label", "ok"),
    [
        ("vxlan-vni", 16_777_215, True),
        ("vxlan-vni", 16_777_216, False),
        (None, 16_777_216, False),  # vxlan-vni when left out
        ("vlan", 4094, True),
        ("vlan", 4095, False),
        ("vlan", 0, False),
        ("mpls", 16, True),
        ("mpls", 15, False),
    ],
)
def test_a_ports_labels_are_bounded_by_its_label_type_in_the_schema_as_in_the_model(
    label_type: str | None, label: int, ok: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    from broker.config import parse_config
    from broker.descriptors import ConfigError

    schema = printed("broker", capsys)
    data = _leaf()
    port = data["domains"][0]["ports"][0]
    port["labels"] = [label]
    port.pop("label_type")
    if label_type is not None:
        port["label_type"] = label_type
    assert conforms(schema, data, schema["$defs"]) is ok
    if ok:
        parse_config(data)
    else:
        with pytest.raises(ConfigError, match=r"domains\[0\]\.ports\[0\]\.labels\[0\]: "):
            parse_config(data)


@pytest.mark.parametrize(("mechanism", "value", "ok"), [("dscp", 63, True), ("dscp", 64, False), ("5qi", 0, False)])
def test_a_qos_classs_native_value_is_bounded_in_the_schema_as_in_the_model(
    mechanism: str, value: int, ok: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    schema = printed("note", capsys)
    data: dict[str, Any] = yaml.safe_load((ROOT / "scenarios" / "examples" / "note.yaml").read_text())
    data["qos_classes"] = [{"name": "gold", "native": {mechanism: value}}]
    assert conforms(schema, data, schema["$defs"]) is ok
    assert (note.parse_note(data, 0.0)[1] == []) is ok

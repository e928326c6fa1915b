"""Request files: strict types at the edge, every error naming the field and saying what it allows (issue 18 item 7)."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.api.request_file import FIELDS, slice_request_from_data
from broker.descriptors import ConfigError
from fedbroker.v1 import northsouth_pb2 as pb

BASE = {"src": "L1.ams", "dst": "L1.par", "bandwidth_mbps": 10}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"bandwidth_mbps": "lots"},
            "req.yaml: bandwidth_mbps: input should be a valid integer, got 'lots' "
            "(allowed: a whole number of Mb/s from 1 to 10,000,000)",
        ),
        ({"latency_budget_ms": "soon"}, "req.yaml: latency_budget_ms: input should be a valid number, got 'soon'"),
        ({"bandwidth_mbps": -5}, "req.yaml: bandwidth_mbps: input should be greater than or equal to 1, got -5"),
        ({"bandwidth_mbps": 500.5}, "req.yaml: bandwidth_mbps: input should be a valid integer, got 500.5"),
        ({"bandwidth_mbps": True}, "req.yaml: bandwidth_mbps: input should be a valid integer, got True"),
        ({"name": [1, 2]}, "req.yaml: name: input should be a valid string, got [1, 2]"),
        ({"latency_budget_ms": float("nan")}, "req.yaml: latency_budget_ms: input should be a finite number"),
        ({"latency_budget_ms": 1e303}, "req.yaml: latency_budget_ms: input should be less than or equal to 3600000"),
        (
            {"chain": ["fw", {"type": "nat", "throughput_mbps": "x"}]},
            "req.yaml: chain[1].throughput_mbps: input should be a valid integer, got 'x'",
        ),
        ({"chain": [{"type": "nat", "speed": 1}]}, "req.yaml: chain[0].speed: unknown field"),
        (
            {"port_constraints": [{"port": "L1.ams", "labels": ["x-y"]}]},
            "req.yaml: port_constraints[0].labels: [0] 'x-y' is not a label N or a range 'FIRST-LAST'",
        ),
        ({"colour": "blue"}, "req.yaml: colour: unknown field (known: name, src, dst, bandwidth_mbps"),
        ({"include_sps": "L2"}, "req.yaml: include_sps: input should be a valid list, got 'L2'"),
    ],
)
def test_a_wrong_type_or_range_names_the_field_the_value_and_what_is_allowed(
    change: dict[str, object], expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        slice_request_from_data({**BASE, **change}, "req.yaml")
    assert str(info.value).startswith(expected), str(info.value)


def test_a_missing_field_is_named() -> None:
    with pytest.raises(ConfigError, match=r"^slice\.src: required field missing"):
        slice_request_from_data({"dst": "b", "bandwidth_mbps": 1})


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        slice_request_from_data({"src": "a", "dst": "b", "bandwidth_mbps": "x", "subnet": 10}, "req.yaml")
    lines = str(info.value).splitlines()
    assert [line.split(":")[1].strip() for line in lines] == ["bandwidth_mbps", "subnet"]


def test_a_complete_request_file_becomes_the_wire_request() -> None:
    data = {
        "slice": {
            **BASE,
            "name": "s1",
            "latency_budget_ms": 20,  # an integer is a number of ms
            "chain": ["firewall", {"type": "nat", "throughput_mbps": 500}],
            "subnet": "10.20.0.0/24",
            "port_constraints": [{"port": "L1.ams", "labels": ["100-199", 300], "preferred": 150}],
            "reverse_bandwidth_mbps": 5,
            "qos_class": "gold",
            "isolation": "vlan",
            "include_sps": ["L4"],
            "exclude_sps": ["L2"],
            "max_price_per_hour": 30,
        }
    }
    msg = slice_request_from_data(data)
    assert msg.latency_budget_ms == 20.0 and list(msg.chain) == ["firewall", "nat"]
    assert list(msg.chain_throughput_mbps) == [0, 500]
    assert list(msg.port_constraints[0].labels) == [
        pb.LabelRange(first=100, last=199),
        pb.LabelRange(first=300, last=300),
    ]
    assert (msg.max_price_per_hour, msg.isolation, list(msg.exclude_sps)) == (30.0, "vlan", ["L2"])


def test_the_example_request_file_is_valid() -> None:
    from broker.descriptors import load_yaml

    path = Path(__file__).resolve().parents[2] / "scenarios" / "examples" / "request.yaml"
    assert slice_request_from_data(load_yaml(path), str(path)).bandwidth_mbps == 500


def test_fields_list_every_wire_field_a_file_may_set() -> None:
    wire = set(pb.SliceRequest.DESCRIPTOR.fields_by_name) - {"chain_throughput_mbps", "trace"}
    assert set(FIELDS) == wire


@pytest.mark.parametrize("broker", ["nonsense", "host:", ":50061", "host:0", "host:70000", "host:http"])
def test_a_broker_address_that_is_not_host_port_is_refused_by_the_option(
    broker: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from broker.cli import main

    with pytest.raises(SystemExit) as info:
        main(["slice", "list", "--broker", broker])
    assert info.value.code == 2
    assert f"argument --broker: {broker!r} is not HOST:PORT (a port from 1 to 65535)" in capsys.readouterr().err

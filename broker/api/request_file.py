"""Slice request files: a parsed YAML mapping into the wire ``SliceRequest``; errors name the field's path.

Used by the CLI and by scenarios, so both read request files the same way (and ``scenarios/`` need
not import the CLI).
"""

from __future__ import annotations

from typing import Any

from broker.descriptors import ConfigError
from fedbroker.v1 import northsouth_pb2 as pb

_SLICE_KEYS = {
    "name",
    "src",
    "dst",
    "bandwidth_mbps",
    "latency_budget_ms",
    "chain",
    "subnet",
    "port_constraints",
    "reverse_bandwidth_mbps",
    "qos_class",
    "isolation",
    "include_sps",
    "exclude_sps",
    "max_price_per_hour",
}


def _label_ranges(value: Any, path: str) -> list[pb.LabelRange]:
    items = value if isinstance(value, list) else [value]
    ranges = []
    for i, item in enumerate(items):
        text = str(item)
        first, _, last = text.partition("-")
        if not first.strip().isdigit() or (last and not last.strip().isdigit()):
            raise ConfigError(f"{path}[{i}]: expected a label or 'FIRST-LAST', got {item!r}")
        ranges.append(pb.LabelRange(first=int(first), last=int(last or first)))
    return ranges


def slice_request_from_data(data: Any, path: str = "slice") -> pb.SliceRequest:
    """A ``SliceRequest`` from a parsed YAML mapping; errors name the path of the bad field."""
    if isinstance(data, dict) and set(data) == {"slice"}:
        data, path = data["slice"], f"{path}"
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must be a mapping of slice fields")
    unknown = sorted(set(data) - _SLICE_KEYS)
    if unknown:
        raise ConfigError(f"{path}.{unknown[0]}: unknown field (known: {', '.join(sorted(_SLICE_KEYS))})")
    msg = pb.SliceRequest()
    try:
        for key in ("name", "src", "dst", "subnet"):
            if key in data:
                setattr(msg, key, str(data[key]))
        if "bandwidth_mbps" in data:
            msg.bandwidth_mbps = int(data["bandwidth_mbps"])
        if "latency_budget_ms" in data:
            msg.latency_budget_ms = float(data["latency_budget_ms"])
        if "reverse_bandwidth_mbps" in data:
            msg.reverse_bandwidth_mbps = int(data["reverse_bandwidth_mbps"])
        if "max_price_per_hour" in data:
            msg.max_price_per_hour = float(data["max_price_per_hour"])
        for key in ("qos_class", "isolation"):
            if key in data:
                setattr(msg, key, str(data[key]))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    for key in ("include_sps", "exclude_sps"):
        value = data.get(key) or []
        if not isinstance(value, list):
            raise ConfigError(f"{path}.{key}: must be a list of SP ids")
        getattr(msg, key).extend(str(v) for v in value)
    chain = data.get("chain") or []
    if not isinstance(chain, list):
        raise ConfigError(f"{path}.chain: must be a list of function types (or {{type, throughput_mbps}})")
    throughputs: list[int] = []
    for i, fn in enumerate(chain):
        if isinstance(fn, dict):  # {type: firewall, throughput_mbps: 500}
            extra = sorted(set(fn) - {"type", "throughput_mbps"})
            if extra or "type" not in fn:
                raise ConfigError(f"{path}.chain[{i}]: needs type (and optionally throughput_mbps), not {extra}")
            try:
                throughputs.append(int(fn.get("throughput_mbps", 0)))
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{path}.chain[{i}].throughput_mbps: {exc}") from None
            msg.chain.append(str(fn["type"]))
        else:
            throughputs.append(0)
            msg.chain.append(str(fn))
    if any(throughputs):
        msg.chain_throughput_mbps.extend(throughputs)
    for i, pc in enumerate(data.get("port_constraints") or []):
        cpath = f"{path}.port_constraints[{i}]"
        if not isinstance(pc, dict) or "port" not in pc or "labels" not in pc:
            raise ConfigError(f"{cpath}: needs port and labels")
        msg.port_constraints.add(
            port=str(pc["port"]),
            labels=_label_ranges(pc["labels"], f"{cpath}.labels"),
            preferred=int(pc.get("preferred", 0)),
        )
    return msg


__all__ = ["slice_request_from_data"]

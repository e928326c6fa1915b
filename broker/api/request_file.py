"""Slice request files: a parsed YAML mapping into the wire ``SliceRequest``; errors name the field's path.

Used by the CLI and by scenarios, so both read request files the same way (and ``scenarios/`` need
not import the CLI). The file is checked by a strict pydantic model: types are checked, not coerced
(``500.5`` is not an integer, ``true`` is not a bandwidth, ``[1, 2]`` is not a name), unknown fields
are refused, and every error names the path of the field and says what it allows. The model stops
at the edge: it builds the protobuf message, and the broker's codec checks meaning (ids, subnets,
terminals) on arrival, the same for every client.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError, field_validator

from broker.api.codec import MAX_BANDWIDTH_MBPS, MAX_ID_LEN, MAX_LATENCY_BUDGET_MS, MAX_LIST_LEN, MAX_PRICE_PER_HOUR
from broker.descriptors import ConfigError
from fedbroker.v1 import northsouth_pb2 as pb

_RANGE = re.compile(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?")
_STRICT = ConfigDict(strict=True, extra="forbid", frozen=True)

Id = Annotated[StrictStr, Field(min_length=1, max_length=MAX_ID_LEN)]
Mbps = Annotated[StrictInt, Field(ge=1, le=MAX_BANDWIDTH_MBPS)]
OptionalMbps = Annotated[StrictInt, Field(ge=0, le=MAX_BANDWIDTH_MBPS)]
MAX_LABEL = 2**32 - 1


class ChainFunction(BaseModel):
    """A chain entry with its own throughput: ``{type: nat, throughput_mbps: 500}``."""

    model_config = _STRICT
    type: Id
    throughput_mbps: OptionalMbps = 0


class PortConstraintFile(BaseModel):
    """Labels a terminal may use: ``{port: L1.to-L2, labels: [100-199, 300], preferred: 150}``."""

    model_config = _STRICT
    port: Id
    labels: Annotated[list[tuple[int, int]], Field(min_length=1, max_length=MAX_LIST_LEN)]
    preferred: Annotated[StrictInt, Field(ge=0, le=MAX_LABEL)] = 0

    @field_validator("labels", mode="before")
    @classmethod
    def _ranges(cls, value: object) -> list[tuple[int, int]]:
        out = []
        for i, item in enumerate(value if isinstance(value, list) else [value]):
            if isinstance(item, int) and not isinstance(item, bool) and 0 <= item <= MAX_LABEL:
                out.append((item, item))
                continue
            match = _RANGE.fullmatch(item) if isinstance(item, str) else None
            if match is None or not int(match.group(1)) <= int(match.group(2) or match.group(1)) <= MAX_LABEL:
                raise ValueError(f"[{i}] {item!r} is not a label N or a range 'FIRST-LAST' with FIRST <= LAST")
            out.append((int(match.group(1)), int(match.group(2) or match.group(1))))
        return out


class SliceRequestFile(BaseModel):
    """What a request file may say (README, "Planning a slice"); see ``slice request --help``."""

    model_config = _STRICT
    name: Annotated[StrictStr, Field(max_length=MAX_ID_LEN)] = ""
    src: Id
    dst: Id
    bandwidth_mbps: Mbps
    latency_budget_ms: Annotated[float, Field(ge=0, le=MAX_LATENCY_BUDGET_MS, allow_inf_nan=False)] | None = None
    chain: Annotated[list[Id | ChainFunction], Field(max_length=MAX_LIST_LEN)] = []
    subnet: Annotated[StrictStr, Field(max_length=40)] = ""
    port_constraints: Annotated[list[PortConstraintFile], Field(max_length=2)] = []
    reverse_bandwidth_mbps: OptionalMbps = 0
    qos_class: Annotated[StrictStr, Field(max_length=MAX_ID_LEN)] = ""
    isolation: Annotated[StrictStr, Field(max_length=MAX_ID_LEN)] = ""
    include_sps: Annotated[list[Id], Field(max_length=MAX_LIST_LEN)] = []
    exclude_sps: Annotated[list[Id], Field(max_length=MAX_LIST_LEN)] = []
    max_price_per_hour: Annotated[float, Field(ge=0, le=MAX_PRICE_PER_HOUR, allow_inf_nan=False)] = 0.0

    def to_pb(self) -> pb.SliceRequest:
        """The wire request."""
        msg = pb.SliceRequest(
            name=self.name,
            src=self.src,
            dst=self.dst,
            bandwidth_mbps=self.bandwidth_mbps,
            subnet=self.subnet,
            reverse_bandwidth_mbps=self.reverse_bandwidth_mbps,
            qos_class=self.qos_class,
            isolation=self.isolation,
            include_sps=self.include_sps,
            exclude_sps=self.exclude_sps,
            max_price_per_hour=self.max_price_per_hour,
        )
        if self.latency_budget_ms is not None:  # absent: no budget; 0 is a budget (nothing may add delay)
            msg.latency_budget_ms = self.latency_budget_ms
        throughputs = []
        for fn in self.chain:
            if isinstance(fn, ChainFunction):
                msg.chain.append(fn.type)
                throughputs.append(fn.throughput_mbps)
            else:
                msg.chain.append(fn)
                throughputs.append(0)
        if any(throughputs):
            msg.chain_throughput_mbps.extend(throughputs)
        for pc in self.port_constraints:
            labels = [pb.LabelRange(first=a, last=b) for a, b in pc.labels]
            msg.port_constraints.add(port=pc.port, labels=labels, preferred=pc.preferred)
        return msg


#: Every field a request file may hold, for help texts.
FIELDS = tuple(SliceRequestFile.model_fields)

#: What each field allows, said with every error about it (and by ``slice request --help``).
ALLOWED: dict[str, str] = {
    "name": f"text without spaces, at most {MAX_ID_LEN} characters",
    "src": "the id of an endpoint or border port, e.g. L1.ams",
    "dst": "the id of an endpoint or border port, e.g. L6.waw",
    "bandwidth_mbps": f"a whole number of Mb/s from 1 to {MAX_BANDWIDTH_MBPS:,}",
    "latency_budget_ms": f"a number of ms from 0 to {MAX_LATENCY_BUDGET_MS:g} (leave it out for no budget)",
    "chain": "a list of function types, each a name or {type: NAME, throughput_mbps: N}",
    "subnet": "an IPv4 unicast network A.B.C.D/N with N from 8 to 30 (default 10.0.0.0/16)",
    "port_constraints": "at most two of {port: TERMINAL, labels: [N or FIRST-LAST, ...], preferred: N}",
    "reverse_bandwidth_mbps": f"a whole number of Mb/s from 0 (same as bandwidth_mbps) to {MAX_BANDWIDTH_MBPS:,}",
    "qos_class": "the name of a QoS class the SPs offer, e.g. gold",
    "isolation": "shared, vxlan, vlan, vrf, dedicated-pop or physical",
    "include_sps": "a list of SP ids the path must cross",
    "exclude_sps": "a list of SP ids the path must avoid",
    "max_price_per_hour": f"a price per hour from 0 (no ceiling) to {MAX_PRICE_PER_HOUR:g}",
}


def fields_help() -> str:
    """Every field of a request file, from the model: required or its default, and what it allows."""
    lines = ["fields of the request file (YAML; unknown fields are refused):"]
    for name, info in SliceRequestFile.model_fields.items():
        if info.is_required():
            state = "required"
        else:
            default = info.get_default(call_default_factory=True)
            state = "optional" if default in ("", [], 0, 0.0) else f"default {default!r}"
        lines.append(f"  {name} ({state}): {info.description or ALLOWED[name]}")
    lines.append("example: scenarios/examples/request.yaml; more in the README, 'Planning a slice'")
    return "\n".join(lines)


_UNION_MEMBERS = ("str", "int", "ChainFunction", "list[union[str,int]]")


def _where(path: str, loc: tuple[int | str, ...]) -> str:
    # pydantic names the union member it tried ("chain.0.str"): keep only the data's own path.
    out = path
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        elif i > 0 and (part in _UNION_MEMBERS or part.startswith(("constrained-", "function-"))):
            continue
        else:
            out += (": " if out.endswith((".yaml", ".yml")) and i == 0 else ".") + part if out else part
    return out


def _describe(error: Any) -> str:
    kind, message, got = error["type"], error["msg"], error.get("input")
    top = str(error["loc"][0]) if error["loc"] else ""
    if kind == "missing":
        why = "required field missing"
    elif kind == "extra_forbidden":
        return f"unknown field (known: {', '.join(FIELDS)})"
    else:
        message = message.removeprefix("Value error, ")
        shown = repr(got) if len(repr(got)) <= 60 else repr(got)[:57] + "..."
        why = f"{message[0].lower()}{message[1:]}, got {shown}"
    return f"{why} (allowed: {ALLOWED[top]})" if top in ALLOWED else why


def validation_message(exc: ValidationError, path: str) -> str:
    """Every problem of a request file, one per line, each as ``path.field: what is wrong, got value (allowed)``."""
    errors = exc.errors()
    # A union reports each member it tried; a mapping given where a name or a mapping may stand was
    # meant as the mapping, so its "not a string" is noise beside the mapping's own errors.
    errors = [
        e for e in errors if not (e["type"] == "string_type" and isinstance(e.get("input"), dict) and len(errors) > 1)
    ]
    seen: dict[str, str] = {}
    for error in errors:
        seen.setdefault(_where(path, tuple(error["loc"])), _describe(error))
    return "\n".join(f"{where}: {why}" for where, why in seen.items())


def slice_request_from_data(data: Any, path: str = "slice") -> pb.SliceRequest:
    """A ``SliceRequest`` from a parsed YAML mapping; errors name the path of the bad field."""
    if isinstance(data, dict) and set(data) == {"slice"}:
        data = data["slice"]
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must be a mapping of slice fields ({', '.join(FIELDS)})", field="slice")
    try:
        model = SliceRequestFile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]["loc"] if exc.errors() else ()
        raise ConfigError(validation_message(exc, path), field=_where("", tuple(first))) from None
    return model.to_pb()


__all__ = ["ALLOWED", "FIELDS", "SliceRequestFile", "fields_help", "slice_request_from_data", "validation_message"]

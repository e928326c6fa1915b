"""A leaf's domains in a broker config (``domains[i]``): the emulated (and netns) and the OpenStack schema.

The models check each field's type, range and shape (strict: ``500.5`` is not a capacity, ``"yes"``
not a flag; unknown keys refused, with the known ones named). What needs the whole domain (a pop
that exists, an id used twice, a link listed twice) is checked by the domain's config module
(``domain_agents/emulated_config.py``, ``openstack_config.py``) on the validated model, which it
maps onto its frozen dataclasses.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, Field, model_validator

from capability_catalog.model import LABEL_LIMITS, LabelRange, LabelType
from schemas.checks import Ranged
from schemas.note import LABEL_SCHEMA, label_limits_schema
from schemas.problems import STRICT, Below

_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")
_SINGLE = re.compile(r"^\s*(\d+)\s*$")
_RESOURCE_CLASS = re.compile(r"^[A-Z0-9_]+$")

#: What a field allows, said when it is missing (``required, a positive integer``).
ALLOWED: dict[str, str] = {
    "id": "a non-empty string",
    "pop": "the name of one of the domain's pops",
    "a": "the name of one of the domain's pops",
    "b": "the name of one of the domain's pops",
    "type": "a non-empty string",
    "peer_sp": "a non-empty string",
    "peer_port": "a non-empty string",
    "capacity_mbps": "a positive integer",
    "bandwidth_mbps": "a positive integer",
    "slots": "a positive integer",
    "latency_ms": "a non-negative number",
    "labels": "a non-empty list of labels and 'first-last' ranges",
    "pops": "a non-empty list of pop names",
    "name": "a non-empty string",
    "auth_url": "Keystone's URL",
}


def _text(value: object) -> object:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"required, a non-empty string (got {value!r})")
    return value


def _path(value: object) -> object:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"must be the path of a note file (got {value!r})")
    return value


def _optional_text(value: object) -> object:
    if not isinstance(value, str):
        raise ValueError(f"must be a string (got {value!r})")
    return value


def _positive_int(value: object) -> object:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"must be a positive integer (got {value!r})")
    return value


def _number(*, positive: bool) -> Callable[[object], object]:
    def check(value: object) -> object:
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or (value <= 0 if positive else value < 0):  # type: ignore[operator]
            raise ValueError(f"must be a {'positive' if positive else 'non-negative'} number (got {value!r})")
        return float(value)  # type: ignore[arg-type]

    return check


def _flag(value: object) -> object:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false (got {value!r})")
    return value


def _label_type(value: object) -> object:
    if value not in {t.value for t in LabelType}:
        known = ", ".join(t.value for t in LabelType)
        raise ValueError(f"unknown label type {value!r} (known: {known})")
    return value


def _label(item: object) -> LabelRange:
    first: int
    last: int
    if isinstance(item, int) and not isinstance(item, bool):
        first = last = item
    elif isinstance(item, str) and (match := _RANGE.match(item)):
        first, last = int(match.group(1)), int(match.group(2))
    elif isinstance(item, str) and (match := _SINGLE.match(item)):
        first = last = int(match.group(1))
    else:
        raise ValueError(f"must be a label or a 'first-last' range (got {item!r})")
    if first < 0:
        raise ValueError(f"must be a label or a 'first-last' range (got {item!r})")
    if last < first:
        raise ValueError(f"range {first}-{last} ends before it starts")
    return LabelRange(first, last)


def _labels(value: object) -> object:
    if not isinstance(value, list | tuple) or not value:
        raise ValueError("required, a non-empty list of labels and 'first-last' ranges")
    return list(value)


Name = Annotated[str, BeforeValidator(_text)]
OptionalText = Annotated[str, BeforeValidator(_optional_text)]
PositiveInt = Annotated[int, Ranged(_positive_int, ge=1)]
Latency = Annotated[float, Ranged(_number(positive=False), ge=0)]
Seconds = Annotated[float, Ranged(_number(positive=True), gt=0)]
Flag = Annotated[bool, BeforeValidator(_flag)]


class EndpointEntry(BaseModel):
    """``endpoints[]``: a service endpoint at a pop."""

    model_config = STRICT
    id: Name
    pop: Name
    region: OptionalText = ""
    capacity_mbps: PositiveInt


class PortEntry(BaseModel):
    """``ports[]``: a border port at a pop, with the labels it may use."""

    model_config = label_limits_schema(("labels",), default=LabelType.VXLAN_VNI)
    id: Name
    pop: Name
    peer_sp: Name
    peer_port: Name
    label_type: Annotated[str, BeforeValidator(_label_type)] = LabelType.VXLAN_VNI.value
    labels: Annotated[list[Annotated[LabelRange, BeforeValidator(_label), LABEL_SCHEMA]], BeforeValidator(_labels)]
    can_swap: Flag = False
    capacity_mbps: PositiveInt
    latency_ms: Latency = 0.0

    @model_validator(mode="after")
    def _within_type(self) -> PortEntry:
        kind = LabelType(self.label_type)
        lo, hi = LABEL_LIMITS[kind]
        bad = [
            f"labels[{i}]: {kind.value} labels must lie within {lo}-{hi} (got {r.first}-{r.last})"
            for i, r in enumerate(self.labels)
            if r.first < lo or r.last > hi
        ]
        if bad:
            raise Below(bad[:1])
        return self


class LinkEntry(BaseModel):
    """``links[]`` of an emulated domain: an internal link between two pops."""

    model_config = STRICT
    a: Name
    b: Name
    bandwidth_mbps: PositiveInt
    latency_ms: Latency

    @model_validator(mode="after")
    def _two_pops(self) -> LinkEntry:
        if self.a == self.b:
            raise Below([f"b: a link must join two different pops (both are '{self.a}')"])
        return self


class FunctionEntry(BaseModel):
    """``functions[]`` of an emulated domain: how many functions of a type a pop hosts."""

    model_config = STRICT
    pop: Name
    type: Name
    slots: PositiveInt


def _kind(expected: str) -> Callable[[object], object]:
    def check(value: object) -> object:
        if value != expected:
            raise ValueError(f"must be '{expected}', got {value!r}")
        return value

    return check


def _fail_step(value: object) -> object:
    steps = ("activate", "commit", "reserve")
    if value is not None and value not in steps:
        raise ValueError(f"must be one of {', '.join(steps)}, got {value!r}")
    return value


class FaultsEntry(BaseModel):
    """``faults`` of an emulated domain: fail at one step, answer slowly."""

    model_config = STRICT
    fail_at: Annotated[str | None, BeforeValidator(_fail_step)] = None
    latency_s: Latency = 0.0


def _pops(value: object) -> object:
    if not isinstance(value, list | tuple) or not value:
        raise ValueError("required, a non-empty list of pop names")
    return list(value)


class EmulatedDomainFile(BaseModel):
    """A ``domains[i]`` entry of ``type: emulated`` (also ``netns``, whose ``type`` the caller strips)."""

    model_config = STRICT
    id: Name
    type: Annotated[str, BeforeValidator(_kind("emulated"))] = "emulated"
    note_ttl_s: Seconds = 3600.0
    note_file: Annotated[str, BeforeValidator(_path)] | None = None
    pops: Annotated[list[Name], BeforeValidator(_pops)]
    links: list[LinkEntry] | None = None
    endpoints: list[EndpointEntry] | None = None
    ports: list[PortEntry] | None = None
    functions: list[FunctionEntry] | None = None
    # The offer policy: schemas.note.parse_policy reads it, with its own paths.
    offer: object = None
    faults: FaultsEntry | None = None


# --- OpenStack ----------------------------------------------------------------------------------


def _inventory(value: object) -> object:
    if not isinstance(value, dict):
        raise ValueError("must be a mapping of resource class to amount, e.g. {VCPU: 16}")
    bad = [f"{k}: a resource class is UPPER_CASE" for k in value if not _RESOURCE_CLASS.match(str(k))]
    if bad:
        raise Below(bad[:1])
    return value


class PopEntry(BaseModel):
    """``pops[]`` of an OpenStack domain: a Placement resource provider, maybe with its inventory."""

    model_config = STRICT
    name: Name
    resource_provider: OptionalText = ""
    inventory: Annotated[dict[str, PositiveInt], BeforeValidator(_inventory)] | None = None


class PopLatencyEntry(BaseModel):
    """``links[]`` of an OpenStack domain: latency between two PoPs."""

    model_config = STRICT
    a: Name
    b: Name
    latency_ms: Latency

    @model_validator(mode="after")
    def _two_pops(self) -> PopLatencyEntry:
        if self.a == self.b:
            raise Below([f"b: a link must join two different pops (both are '{self.a}')"])
        return self


class FunctionSpecEntry(BaseModel):
    """``functions[]`` of an OpenStack domain: a function type at a PoP and its cost in Placement."""

    model_config = STRICT
    pop: Name
    type: Name
    vcpu: PositiveInt = 1
    memory_mb: PositiveInt = 512


class AuthEntry(BaseModel):
    """``auth`` of an OpenStack domain: Keystone settings (strings)."""

    model_config = STRICT
    auth_url: Name
    username: OptionalText | None = None
    password: OptionalText | None = None
    project_name: OptionalText | None = None
    project_id: OptionalText | None = None
    user_domain_name: OptionalText | None = None
    project_domain_name: OptionalText | None = None
    region_name: OptionalText | None = None
    application_credential_id: OptionalText | None = None
    application_credential_secret: OptionalText | None = None
    auth_type: OptionalText | None = None


class OpenStackDomainFile(BaseModel):
    """A ``domains[i]`` entry of ``type: openstack``."""

    model_config = STRICT
    id: Name
    type: Annotated[str, BeforeValidator(_kind("openstack"))]
    note_ttl_s: Seconds = 3600.0
    note_file: Annotated[str, BeforeValidator(_path)] | None = None
    poll_s: Seconds = 15.0
    api_timeout_s: Seconds | None = None
    sweep_grace_s: Seconds = 60.0
    cloud: Name | None = None
    clouds_file: OptionalText = ""
    auth: AuthEntry | None = None
    pops: list[PopEntry] = Field(default_factory=list)
    links: list[PopLatencyEntry] | None = None
    endpoints: list[EndpointEntry] | None = None
    ports: list[PortEntry] | None = None
    functions: list[FunctionSpecEntry] | None = None


__all__ = [
    "ALLOWED",
    "AuthEntry",
    "EmulatedDomainFile",
    "EndpointEntry",
    "FaultsEntry",
    "FunctionEntry",
    "FunctionSpecEntry",
    "LinkEntry",
    "OpenStackDomainFile",
    "PopEntry",
    "PopLatencyEntry",
    "PortEntry",
]

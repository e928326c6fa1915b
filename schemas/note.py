"""The note authoring format (``capability_catalog/AUTHORING.md``) as strict pydantic models.

``parse_note`` and ``parse_policy`` read a parsed YAML mapping into the core's ``CapabilityNote``
and ``OfferPolicy`` and report every problem with its path, in one pass, so an operator fixes a
note at once: the model checks each field (types not coerced, unknown fields refused, numbers
finite and in range, ids, label ranges and prefixes parsed where they stand); then the checks
across entries (an id declared twice, transit between undeclared terminals, overlapping pools)
run over every entry that passed, even when others did not.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from capability_catalog.authoring import MAX_DELAY_MS, MAX_PRICE_PER_MBPS_HOUR, NATIVE_RANGES, OfferPolicy
from capability_catalog.model import (
    LABEL_LIMITS,
    BorderPort,
    CapabilityNote,
    Endpoint,
    FunctionOffer,
    Isolation,
    LabelRange,
    LabelSet,
    LabelType,
    QosClass,
    SpId,
    TerminalId,
    Transit,
)
from schemas.checks import Ranged
from schemas.problems import STRICT, Below, join, problems

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,62}$")
_RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")
DEFAULT_VALIDITY_S = 3600.0


def _ident(value: object) -> object:
    if not isinstance(value, str) or not _ID.match(value):
        raise ValueError(f"{value!r} is not an id (letters, digits, '.', '_', ':', '-'; at most 63)")
    return value


def _real(upper: float) -> Callable[[object], object]:
    def check(value: object) -> object:
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or not 0 <= value <= upper:  # type: ignore[operator]
            shown = f"{value:g}" if isinstance(value, float) else repr(value)
            raise ValueError(f"{shown} must be a number between 0 and {upper:g}")
        return value

    return check


def _count(positive: bool) -> Callable[[object], object]:
    def check(value: object) -> object:
        if not isinstance(value, int) or isinstance(value, bool) or value < (1 if positive else 0):
            raise ValueError(f"{value!r} must be an integer {'> 0' if positive else '>= 0'}")
        return value

    return check


def _label_range(item: object) -> LabelRange:
    text = str(item) if isinstance(item, int | str) and not isinstance(item, bool) else None
    match = _RANGE.match(text) if text is not None else None
    if match is None:
        raise ValueError(f"{item!r} is not a label or a range 'first-last'")
    first = int(match.group(1))
    last = int(match.group(2)) if match.group(2) is not None else first
    if last < first:
        raise ValueError(f"{first}-{last} is empty")
    return LabelRange(first, last)


def _label_type(value: str) -> str:
    if value not in {t.value for t in LabelType}:
        raise ValueError(f"{value!r} is not one of {', '.join(t.value for t in LabelType)}")
    return value


def _isolation(value: str) -> str:
    if value not in {i.value for i in Isolation}:
        raise ValueError(f"{value!r} is not one of {', '.join(i.value for i in Isolation)}")
    return value


def _prefix(value: str) -> str:
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a prefix: {exc}") from None
    if net.is_multicast or net.is_loopback or net.is_link_local:
        raise ValueError(f"{net} is not a unicast range (multicast, loopback, link-local)")
    return str(net)


def _pair(value: object) -> object:
    ok = isinstance(value, list) and len(value) == 2 and all(isinstance(x, str) and _ID.match(x) for x in value)
    if not ok:
        raise ValueError(f"{value!r} must be a pair of peer SP ids [A, B]")
    return tuple(value)  # type: ignore[arg-type]


def _native(value: object) -> object:
    if not isinstance(value, Mapping):
        raise ValueError("must be a mapping such as {dscp: 46}")
    bad: list[str] = []
    for k, v in value.items():
        if not isinstance(k, str) or not isinstance(v, str | int) or isinstance(v, bool):
            bad.append(f"{k}: must map a mechanism name to a value")
        elif k in NATIVE_RANGES and not (str(v).isdigit() and NATIVE_RANGES[k][0] <= int(v) <= NATIVE_RANGES[k][1]):
            # an int in YAML, a digit string once stored (native values are kept as text)
            lo, hi = NATIVE_RANGES[k]
            bad.append(f"{k}: {v!r} is not a {k} value (an integer {lo}-{hi})")
    if bad:
        raise Below(bad)
    return {str(k): str(v) for k, v in value.items()}


Ident = Annotated[str, BeforeValidator(_ident)]
# The bounds are checked before the strict type, so a wrong type is told what is allowed too; the
# constraints say them to the JSON Schema.
Delay = Annotated[float, Ranged(_real(MAX_DELAY_MS), ge=0, le=MAX_DELAY_MS)]
Fraction = Annotated[float, Ranged(_real(1.0), ge=0, le=1)]
Price = Annotated[float, Ranged(_real(MAX_PRICE_PER_MBPS_HOUR), ge=0, le=MAX_PRICE_PER_MBPS_HOUR)]
Positive = Annotated[int, Ranged(_count(True), ge=1)]
Count = Annotated[int, Ranged(_count(False), ge=0)]
_LABEL_TEXT = r"^\s*\d+\s*(-\s*\d+\s*)?$"
#: In the JSON Schema as in the file: a label, or a range ``'first-last'``.
LABEL_SCHEMA = WithJsonSchema(
    {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": _LABEL_TEXT}]}
)
Label = Annotated[LabelRange, BeforeValidator(_label_range), LABEL_SCHEMA]


def label_limits_schema(lists: tuple[str, ...], default: LabelType | None = None) -> ConfigDict:
    """``STRICT``, and in the JSON Schema each label type's limits on the labels of ``lists``.

    ``if label_type is vlan then every label of the lists is an integer 1..4094 (or a range)``; a
    range's text cannot carry its bounds, the model checks them. ``default``: the type when
    ``label_type`` is left out.
    """

    def extra(schema: dict[str, Any]) -> None:
        rules = []
        for kind, (lo, hi) in LABEL_LIMITS.items():
            label = {"anyOf": [{"type": "integer", "minimum": lo, "maximum": hi}, {"type": "string"}]}
            when: dict[str, Any] = {"properties": {"label_type": {"const": kind.value}}}
            if kind is not default:
                when["required"] = ["label_type"]
            rules.append({"if": when, "then": {"properties": {k: {"items": label} for k in lists}}})
        schema["allOf"] = rules

    return ConfigDict(**STRICT, json_schema_extra=extra)


def _native_value(lo: int, hi: int) -> dict[str, Any]:
    return {"anyOf": [{"type": "string", "pattern": r"^\d+$"}, {"type": "integer", "minimum": lo, "maximum": hi}]}


#: A mechanism's value is text or a number (``dscp: 46``), kept as text; the known ones in their range.
NATIVE_SCHEMA = WithJsonSchema(
    {
        "type": "object",
        "properties": {k: _native_value(lo, hi) for k, (lo, hi) in NATIVE_RANGES.items()},
        "additionalProperties": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
    }
)
Prefix = Annotated[str, AfterValidator(_prefix)]


class EndpointFile(BaseModel):
    """``endpoints[]``: a service endpoint."""

    model_config = STRICT
    id: Ident
    region: str = ""
    location: str = ""
    capacity_mbps: Positive


def _labels(raw: tuple[LabelRange, ...], label_type: LabelType, key: str) -> tuple[LabelSet, list[str]]:
    bad: list[str] = []
    lo, hi = LABEL_LIMITS[label_type]
    for i, r in enumerate(raw):
        if r.first < lo or r.last > hi:
            bad.append(f"{key}[{i}]: {r.first}-{r.last} is outside {label_type} labels {lo}-{hi}")
    merged = LabelSet.of(raw)
    if not bad and len(merged) != sum(len(r) for r in raw):
        bad.append(f"{key}: ranges overlap")
    return merged, bad


class PortFile(BaseModel):
    """``border_ports[]``: one side of an inter-domain link."""

    model_config = label_limits_schema(("label_ranges", "local_label_ranges"))
    id: Ident
    peer_sp: Ident
    peer_port: Ident
    label_type: Annotated[str, AfterValidator(_label_type)]
    label_ranges: list[Label]
    local_label_ranges: list[Label] = []
    can_swap: bool = False
    capacity_mbps: Positive
    latency_ms: Delay = 0.0

    @model_validator(mode="after")
    def _ranges(self) -> PortFile:
        kind = LabelType(self.label_type)
        offered, bad = _labels(tuple(self.label_ranges), kind, "label_ranges")
        local, bad_local = _labels(tuple(self.local_label_ranges), kind, "local_label_ranges")
        bad += bad_local
        if not bad and not offered:
            bad.append("label_ranges: offers no label to the federation")
        both = offered.intersect(local)
        if both:
            r = both.ranges[0]
            bad.append(f"local_label_ranges: {r.first}-{r.last} is also offered to the federation in label_ranges")
        if bad:
            raise Below(bad)
        return self

    def to_core(self) -> BorderPort:
        """The core's border port."""
        kind = LabelType(self.label_type)
        return BorderPort(
            TerminalId(self.id),
            SpId(self.peer_sp),
            TerminalId(self.peer_port),
            kind,
            LabelSet.of(self.label_ranges),
            self.can_swap,
            self.capacity_mbps,
            LabelSet.of(self.local_label_ranges),
            self.latency_ms,
        )


class TransitFile(BaseModel):
    """``transit[]``: latency and bandwidth between two declared terminals."""

    model_config = STRICT
    a: Ident
    b: Ident
    latency_ms: Delay
    bandwidth_mbps: Positive

    @model_validator(mode="after")
    def _two_ends(self) -> TransitFile:
        if self.a == self.b:
            raise Below(["b: transit joins two different terminals"])
        return self


class HostingFile(BaseModel):
    """``hosting[]``: network functions a site can host."""

    model_config = STRICT
    type: Ident
    site: Ident
    instances: Positive
    throughput_mbps: Count = 0


class QosFile(BaseModel):
    """``qos_classes[]``: a class, its native mapping and what it guarantees."""

    model_config = STRICT
    name: Ident
    native: Annotated[dict[str, str], BeforeValidator(_native), NATIVE_SCHEMA] = {}
    delay_ms: Delay = 0.0
    loss: Fraction = 0.0

    def to_core(self) -> QosClass:
        """The core's QoS class."""
        return QosClass(self.name, tuple(sorted(self.native.items())), self.delay_ms, self.loss)


class PolicyFields(BaseModel):
    """The offer policy's fields, shared by a note and an offer edit."""

    model_config = STRICT
    qos_classes: list[QosFile] | None = None
    isolation: list[Annotated[str, AfterValidator(_isolation)]] | None = None
    address_pools: list[Prefix] | None = None
    transit_policy: list[Annotated[tuple[str, str], BeforeValidator(_pair)]] | None = None
    price_per_mbps_hour: Price | None = None


class OfferFile(PolicyFields):
    """An offer edit (``fedbroker catalog offer``, a domain's ``offer``): the policy plus ``withdrawn``."""

    withdrawn: bool = False


class NoteFile(PolicyFields):
    """A whole note in the authoring format."""

    sp_id: Ident
    version: Count | None = None
    issued_at: float | None = None
    expires_at: float | None = None
    valid_for_s: Annotated[float, Field(gt=0)] | None = None
    endpoints: list[EndpointFile] | None = None
    border_ports: list[PortFile] | None = None
    transit: list[TransitFile] | None = None
    hosting: list[HostingFile] | None = None


_M = TypeVar("_M", bound=BaseModel)


def _entries(data: object, key: str, model: type[_M], valid: BaseModel | None = None) -> list[tuple[int, _M]]:
    """The entries of list ``key`` that pass ``model`` on their own, with their index.

    ``valid``: the whole document's model when it validated, whose entries are taken as they are.
    """
    if valid is not None:
        return list(enumerate(getattr(valid, key) or ()))
    raw = data.get(key) if isinstance(data, Mapping) else None
    out: list[tuple[int, _M]] = []
    for i, item in enumerate(raw if isinstance(raw, list) else []):
        try:
            out.append((i, model.model_validate(item)))
        except ValidationError:
            continue
    return out


def _scalar(data: object, key: str) -> object:
    return data.get(key) if isinstance(data, Mapping) else None


def _policy_checks(data: object, path: str, valid: BaseModel | None = None) -> list[str]:
    """Across entries of the policy: a QoS class declared twice, overlapping pools."""
    bad: list[str] = []
    names: set[str] = set()
    for i, q in _entries(data, "qos_classes", QosFile, valid):
        if q.name in names:
            bad.append(f"{join(join(join(path, 'qos_classes'), i), 'name')}: '{q.name}' is declared twice")
        names.add(q.name)
    raw = _scalar(data, "address_pools")
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for i, item in enumerate(raw if isinstance(raw, list) else []):
        try:
            net = ipaddress.ip_network(_prefix(item), strict=True) if isinstance(item, str) else None
        except ValueError:
            continue
        if net is None:
            continue
        clash = next((n for n in nets if n.version == net.version and n.overlaps(net)), None)
        if clash is not None:
            bad.append(f"{join(join(path, 'address_pools'), i)}: {net} overlaps {clash}")
        nets.append(net)
    return bad


def _note_checks(data: object, valid: NoteFile | None = None) -> list[str]:
    """Across entries of a note: ids declared twice, transit ends, pairs twice, a port to itself, times."""
    bad = _policy_checks(data, "", valid)
    declared: dict[str, str] = {}
    for key, model in (("endpoints", EndpointFile), ("border_ports", PortFile)):
        for i, entry in _entries(data, key, model, valid):
            at = f"{key}[{i}].id"
            if entry.id in declared:  # type: ignore[attr-defined]
                bad.append(f"{at}: '{entry.id}' is already declared at {declared[entry.id]}")  # type: ignore[attr-defined]
            else:
                declared[entry.id] = at  # type: ignore[attr-defined]
    # Terminals as declared, even in an entry with another problem: a reference to it is not the fault.
    for key in ("endpoints", "border_ports"):
        raw = _scalar(data, key)
        for item in raw if isinstance(raw, list) else []:
            if isinstance(item, Mapping) and isinstance(item.get("id"), str):
                declared.setdefault(item["id"], key)
    sp = _scalar(data, "sp_id")
    for i, port in _entries(data, "border_ports", PortFile, valid):
        if port.peer_sp == sp:
            bad.append(f"border_ports[{i}].peer_sp: a border port leads to another SP, not to itself")
    raw_transit = _scalar(data, "transit")
    pairs: set[frozenset[str]] = set()
    for i, item in enumerate(raw_transit if isinstance(raw_transit, list) else []):
        ends = item if isinstance(item, Mapping) else {}
        for name in ("a", "b"):
            end = ends.get(name)
            if isinstance(end, str) and _ID.match(end) and end not in declared:
                bad.append(f"transit[{i}].{name}: '{end}' is not a declared endpoint or border port")
        a, b = ends.get("a"), ends.get("b")
        if isinstance(a, str) and isinstance(b, str) and a != b:
            pair = frozenset((a, b))
            if pair in pairs:
                bad.append(f"transit[{i}]: transit between {a} and {b} is declared twice")
            pairs.add(pair)
    bad += _time_checks(data)
    return bad


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _time_checks(data: object) -> list[str]:
    m = data if isinstance(data, Mapping) else {}
    bad: list[str] = []
    if "issued_at" in m and not _number(m["issued_at"]):
        bad.append("issued_at: must be a Unix time in seconds")
    if "expires_at" in m and "valid_for_s" in m:
        bad.append("valid_for_s: give expires_at or valid_for_s, not both")
    valid_for = m.get("valid_for_s", DEFAULT_VALIDITY_S)
    if not _number(valid_for) or valid_for <= 0:
        bad.append(f"valid_for_s: {valid_for!r} must be a number of seconds > 0")
    issued = m.get("issued_at", 0.0)
    expires = m.get("expires_at")
    if expires is not None and (not _number(expires) or (_number(issued) and expires <= issued)):
        bad.append("expires_at: the note must expire after it is issued")
    version = m.get("version", 0)
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        bad.append(f"version: {version!r} must be an integer >= 0 (higher than any version published before)")
    return bad


def _policy(model: PolicyFields, withdrawn: bool = False) -> OfferPolicy:
    return OfferPolicy(
        qos_classes=tuple(sorted((q.to_core() for q in model.qos_classes or ()), key=lambda q: q.name)),
        isolation=tuple(sorted({Isolation(i) for i in model.isolation or ()})),
        address_pools=tuple(sorted(model.address_pools or ())),
        transit_policy=tuple(sorted(model.transit_policy or ())),
        price_per_mbps_hour=model.price_per_mbps_hour,
        withdrawn=withdrawn,
    )


def _merge(first: Iterable[str], second: Iterable[str]) -> list[str]:
    out: list[str] = []
    for item in [*first, *second]:
        if item not in out:
            out.append(item)
    return out


def parse_note(data: object, now: float) -> tuple[CapabilityNote | None, list[str]]:
    """A note from its authoring form, or None with every problem (``path: message``)."""
    found: list[str] = []
    model: NoteFile | None = None
    if not isinstance(data, Mapping):
        return None, ["must be a mapping"]
    try:
        model = NoteFile.model_validate(data)
    except ValidationError as exc:
        found = problems(exc)
    # Time checks are said by _note_checks in their own words; drop pydantic's duplicates of them.
    times = ("issued_at", "expires_at", "valid_for_s", "version")
    found = [p for p in found if p.partition(":")[0] not in times]
    found = _merge(found, _note_checks(data, model))
    if found or model is None:
        return None, found
    issued = model.issued_at if model.issued_at is not None else now
    expires = model.expires_at if model.expires_at is not None else issued + (model.valid_for_s or DEFAULT_VALIDITY_S)
    policy = _policy(model)
    note = CapabilityNote(
        sp_id=SpId(model.sp_id),
        version=model.version if model.version is not None else round(issued * 1000),
        issued_at=float(issued),
        expires_at=float(expires),
        endpoints=tuple(
            Endpoint(TerminalId(e.id), e.region, e.capacity_mbps, e.location) for e in model.endpoints or ()
        ),
        ports=tuple(p.to_core() for p in model.border_ports or ()),
        transit=tuple(
            Transit(TerminalId(t.a), TerminalId(t.b), t.latency_ms, t.bandwidth_mbps) for t in model.transit or ()
        ),
        functions=tuple(FunctionOffer(h.type, h.site, h.instances, h.throughput_mbps) for h in model.hosting or ()),
        qos_classes=policy.qos_classes,
        isolation=policy.isolation,
        address_pools=policy.address_pools,
        transit_policy=policy.transit_policy,
        price_per_mbps_hour=policy.price_per_mbps_hour,
    )
    return note, []


def validate_authoring(data: object, now: float = 0.0) -> list[str]:
    """Every problem of a note in the authoring format; empty when it is valid."""
    return parse_note(data, now)[1]


def parse_policy(data: object, path: str = "offer") -> tuple[OfferPolicy, list[str]]:
    """An offer policy (the operator-editable part), with every problem found."""
    if not isinstance(data, Mapping):
        return OfferPolicy(), [f"{path}: must be a mapping"]
    try:
        model = OfferFile.model_validate(data)
    except ValidationError as exc:
        return OfferPolicy(), _merge(problems(exc, path), _policy_checks(data, path))
    found = _policy_checks(data, path, model)
    if found:
        return OfferPolicy(), found
    return _policy(model, model.withdrawn), []


__all__ = ["LABEL_SCHEMA", "NoteFile", "OfferFile", "parse_note", "parse_policy", "validate_authoring"]

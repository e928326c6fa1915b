"""The YAML authoring format of a capability note, for lower-SP operators (parsed data in, no I/O).

``capability_catalog/AUTHORING.md`` documents the format with an example. Parsing collects every
problem with its path (``border_ports[2].label_ranges[0]: 5000-4000 is empty``) instead of
stopping at the first, so an operator fixes a note in one pass.

The *offer policy* part (QoS classes, isolation, address pools, transit policy, price, withdrawal)
is also what an operator may change on a running broker; ``parse_policy`` reads just that part.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

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

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,62}$")
_RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")

_TOP = {
    "sp_id",
    "version",
    "issued_at",
    "expires_at",
    "valid_for_s",
    "endpoints",
    "border_ports",
    "transit",
    "hosting",
    "qos_classes",
    "isolation",
    "address_pools",
    "transit_policy",
    "price_per_mbps_hour",
}
#: Bounds of a note's real numbers: far above any real offer, far below where the canonical
#: encoding's integer micro-units overflow (an offer of 1e308 or inf once froze the note feed).
MAX_DELAY_MS = 3_600_000.0
MAX_PRICE_PER_MBPS_HOUR = 1e6
#: The values each well-known QoS mechanism allows (others are free text).
NATIVE_RANGES: dict[str, tuple[int, int]] = {"dscp": (0, 63), "mpls_tc": (0, 7), "pcp": (0, 7), "5qi": (1, 255)}
_POLICY = {"qos_classes", "isolation", "address_pools", "transit_policy", "price_per_mbps_hour", "withdrawn"}


@dataclass(frozen=True)
class OfferPolicy:
    """What an operator states about an offer beyond the infrastructure's own facts."""

    qos_classes: tuple[QosClass, ...] = ()
    isolation: tuple[Isolation, ...] = ()
    address_pools: tuple[str, ...] = ()
    transit_policy: tuple[tuple[str, str], ...] = ()
    price_per_mbps_hour: float | None = None
    # A withdrawn offer is published with no endpoints, ports or functions: nothing to buy.
    withdrawn: bool = False


@dataclass
class _Problems:
    items: list[str] = field(default_factory=list)

    def add(self, path: str, message: str) -> None:
        self.items.append(f"{path}: {message}")


def _num(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class _Parser:
    def __init__(self) -> None:
        self.p = _Problems()

    # -- scalars --

    def mapping(self, value: object, path: str, known: set[str], required: tuple[str, ...] = ()) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            self.p.add(path, "must be a mapping")
            return {}
        for key in sorted(set(value) - known, key=str):
            self.p.add(f"{path}.{key}" if path else str(key), "unknown field")
        for key in required:
            if key not in value:
                self.p.add(f"{path}.{key}" if path else key, "required")
        return value

    def seq(self, m: Mapping[str, Any], key: str, path: str) -> list[Any]:
        value = m.get(key, [])
        if value is None:
            return []
        if not isinstance(value, list):
            self.p.add(path, "must be a list")
            return []
        return value

    def ident(self, m: Mapping[str, Any], key: str, path: str) -> str:
        value = m.get(key)
        if value is None:
            return ""
        if not isinstance(value, str) or not _ID.match(value):
            self.p.add(path, f"{value!r} is not an id (letters, digits, '.', '_', ':', '-'; at most 63)")
            return ""
        return value

    def text(self, m: Mapping[str, Any], key: str, path: str) -> str:
        value = m.get(key, "")
        if not isinstance(value, str):
            self.p.add(path, "must be text")
            return ""
        return value

    def count(self, m: Mapping[str, Any], key: str, path: str, *, positive: bool = False) -> int:
        value = m.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < (1 if positive else 0):
            self.p.add(path, f"{value!r} must be an integer {'> 0' if positive else '>= 0'}")
            return 0
        return value

    def real(self, m: Mapping[str, Any], key: str, path: str, *, upper: float | None) -> float:
        value = m.get(key, 0.0)
        if not _num(value) or not math.isfinite(value) or value < 0 or (upper is not None and value > upper):
            bound = f"between 0 and {upper:g}" if upper is not None else ">= 0"
            self.p.add(path, f"{value!r} must be a number {bound}")
            return 0.0
        return float(value)

    def flag(self, m: Mapping[str, Any], key: str, path: str) -> bool:
        value = m.get(key, False)
        if not isinstance(value, bool):
            self.p.add(path, "must be true or false")
            return False
        return value

    # -- labels --

    def label_set(self, raw: list[Any], path: str, label_type: LabelType | None) -> LabelSet:
        ranges: list[LabelRange] = []
        lo, hi = LABEL_LIMITS.get(label_type, (0, 2**32)) if label_type else (0, 2**32)
        for i, item in enumerate(raw):
            at = f"{path}[{i}]"
            text = str(item) if isinstance(item, int | str) and not isinstance(item, bool) else None
            match = _RANGE.match(text) if text is not None else None
            if match is None:
                self.p.add(at, f"{item!r} is not a label or a range 'first-last'")
                continue
            first = int(match.group(1))
            last = int(match.group(2)) if match.group(2) is not None else first
            if last < first:
                self.p.add(at, f"{first}-{last} is empty")
                continue
            if first < lo or last > hi:
                self.p.add(at, f"{first}-{last} is outside {label_type} labels {lo}-{hi}")
                continue
            ranges.append(LabelRange(first, last))
        total = sum(len(r) for r in ranges)
        merged = LabelSet.of(ranges)
        if len(merged) != total:
            self.p.add(path, "ranges overlap")
        return merged

    # -- parts --

    def qos(self, raw: object, path: str) -> QosClass | None:
        m = self.mapping(raw, path, {"name", "native", "delay_ms", "loss"}, ("name",))
        name = self.ident(m, "name", f"{path}.name")
        native_raw = m.get("native", {})
        native: list[tuple[str, str]] = []
        if not isinstance(native_raw, Mapping):
            self.p.add(f"{path}.native", "must be a mapping such as {dscp: 46}")
        else:
            for k, v in native_raw.items():
                if not isinstance(k, str) or not isinstance(v, str | int) or isinstance(v, bool):
                    self.p.add(f"{path}.native.{k}", "must map a mechanism name to a value")
                elif k in NATIVE_RANGES and not (
                    # an int in YAML, a digit string once stored (native values are kept as text)
                    str(v).isdigit() and NATIVE_RANGES[k][0] <= int(v) <= NATIVE_RANGES[k][1]
                ):
                    lo, hi = NATIVE_RANGES[k]
                    self.p.add(f"{path}.native.{k}", f"{v!r} is not a {k} value (an integer {lo}-{hi})")
                else:
                    native.append((k, str(v)))
        delay = self.real(m, "delay_ms", f"{path}.delay_ms", upper=MAX_DELAY_MS)
        loss = self.real(m, "loss", f"{path}.loss", upper=1.0)
        return QosClass(name, tuple(sorted(native)), delay, loss) if name else None

    def policy(self, m: Mapping[str, Any], path: str) -> OfferPolicy:
        def at(key: str) -> str:
            return f"{path}.{key}" if path else key

        qos: list[QosClass] = []
        for i, raw in enumerate(self.seq(m, "qos_classes", at("qos_classes"))):
            q = self.qos(raw, f"{at('qos_classes')}[{i}]")
            if q is not None:
                if any(x.name == q.name for x in qos):
                    self.p.add(f"{at('qos_classes')}[{i}].name", f"'{q.name}' is declared twice")
                qos.append(q)
        isolation: list[Isolation] = []
        for i, raw in enumerate(self.seq(m, "isolation", at("isolation"))):
            try:
                isolation.append(Isolation(str(raw)))
            except ValueError:
                known = ", ".join(i.value for i in Isolation)
                self.p.add(f"{at('isolation')}[{i}]", f"{raw!r} is not one of {known}")
        pools: list[str] = []
        nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for i, raw in enumerate(self.seq(m, "address_pools", at("address_pools"))):
            try:
                net = ipaddress.ip_network(str(raw), strict=True)
            except ValueError as exc:
                self.p.add(f"{at('address_pools')}[{i}]", f"{raw!r} is not a prefix: {exc}")
                continue
            if net.is_multicast or net.is_loopback or net.is_link_local:
                self.p.add(
                    f"{at('address_pools')}[{i}]", f"{net} is not a unicast range (multicast, loopback, link-local)"
                )
                continue
            clash = next((n for n in nets if n.version == net.version and n.overlaps(net)), None)
            if clash is not None:
                self.p.add(f"{at('address_pools')}[{i}]", f"{net} overlaps {clash}")
            nets.append(net)
            pools.append(str(net))
        policy_pairs: list[tuple[str, str]] = []
        for i, raw in enumerate(self.seq(m, "transit_policy", at("transit_policy"))):
            if not (isinstance(raw, list) and len(raw) == 2 and all(isinstance(x, str) and _ID.match(x) for x in raw)):
                self.p.add(f"{at('transit_policy')}[{i}]", f"{raw!r} must be a pair of peer SP ids [A, B]")
                continue
            policy_pairs.append((raw[0], raw[1]))
        price: float | None = None
        if m.get("price_per_mbps_hour") is not None:
            price = self.real(m, "price_per_mbps_hour", at("price_per_mbps_hour"), upper=MAX_PRICE_PER_MBPS_HOUR)
        return OfferPolicy(
            qos_classes=tuple(sorted(qos, key=lambda q: q.name)),
            isolation=tuple(sorted(set(isolation))),
            address_pools=tuple(sorted(pools)),
            transit_policy=tuple(sorted(policy_pairs)),
            price_per_mbps_hour=price,
            withdrawn=self.flag(m, "withdrawn", at("withdrawn")),
        )

    def note(self, data: object, now: float) -> CapabilityNote | None:
        m = self.mapping(data, "", _TOP, ("sp_id",))
        sp = self.ident(m, "sp_id", "sp_id")
        terminals: dict[str, str] = {}

        def declare(ident: str, path: str) -> None:
            if not ident:
                return
            if ident in terminals:
                self.p.add(path, f"'{ident}' is already declared at {terminals[ident]}")
            else:
                terminals[ident] = path

        endpoints: list[Endpoint] = []
        for i, raw in enumerate(self.seq(m, "endpoints", "endpoints")):
            at = f"endpoints[{i}]"
            e = self.mapping(raw, at, {"id", "region", "location", "capacity_mbps"}, ("id",))
            ident = self.ident(e, "id", f"{at}.id")
            declare(ident, f"{at}.id")
            endpoints.append(
                Endpoint(
                    TerminalId(ident),
                    self.text(e, "region", f"{at}.region"),
                    self.count(e, "capacity_mbps", f"{at}.capacity_mbps", positive=True),
                    self.text(e, "location", f"{at}.location"),
                )
            )
        ports: list[BorderPort] = []
        port_keys = {
            "id",
            "peer_sp",
            "peer_port",
            "label_type",
            "label_ranges",
            "local_label_ranges",
            "can_swap",
            "capacity_mbps",
            "latency_ms",
        }
        for i, raw in enumerate(self.seq(m, "border_ports", "border_ports")):
            at = f"border_ports[{i}]"
            b = self.mapping(raw, at, port_keys, ("id", "peer_sp", "peer_port", "label_type", "label_ranges"))
            ident = self.ident(b, "id", f"{at}.id")
            declare(ident, f"{at}.id")
            label_type: LabelType | None = None
            if "label_type" in b:
                try:
                    label_type = LabelType(str(b["label_type"]))
                except ValueError:
                    known = ", ".join(t.value for t in LabelType)
                    self.p.add(f"{at}.label_type", f"{b['label_type']!r} is not one of {known}")
            labels = self.label_set(self.seq(b, "label_ranges", f"{at}.label_ranges"), f"{at}.label_ranges", label_type)
            if "label_ranges" in b and not labels and not any(x.startswith(f"{at}.label_ranges") for x in self.p.items):
                self.p.add(f"{at}.label_ranges", "offers no label to the federation")
            local = self.label_set(
                self.seq(b, "local_label_ranges", f"{at}.local_label_ranges"), f"{at}.local_label_ranges", label_type
            )
            both = labels.intersect(local)
            if both:
                r = both.ranges[0]
                self.p.add(
                    f"{at}.local_label_ranges", f"{r.first}-{r.last} is also offered to the federation in label_ranges"
                )
            peer_sp = self.ident(b, "peer_sp", f"{at}.peer_sp")
            if peer_sp and peer_sp == sp:
                self.p.add(f"{at}.peer_sp", "a border port leads to another SP, not to itself")
            ports.append(
                BorderPort(
                    TerminalId(ident),
                    SpId(peer_sp),
                    TerminalId(self.ident(b, "peer_port", f"{at}.peer_port")),
                    label_type or LabelType.VXLAN_VNI,
                    labels,
                    self.flag(b, "can_swap", f"{at}.can_swap"),
                    self.count(b, "capacity_mbps", f"{at}.capacity_mbps", positive=True),
                    local,
                    self.real(b, "latency_ms", f"{at}.latency_ms", upper=MAX_DELAY_MS),
                )
            )
        transit: list[Transit] = []
        seen_pairs: set[tuple[str, str]] = set()
        for i, raw in enumerate(self.seq(m, "transit", "transit")):
            at = f"transit[{i}]"
            t = self.mapping(raw, at, {"a", "b", "latency_ms", "bandwidth_mbps"}, ("a", "b", "latency_ms"))
            a, b_ = self.ident(t, "a", f"{at}.a"), self.ident(t, "b", f"{at}.b")
            for end, name in ((a, "a"), (b_, "b")):
                if end and end not in terminals:
                    self.p.add(f"{at}.{name}", f"'{end}' is not a declared endpoint or border port")
            if a and a == b_:
                self.p.add(f"{at}.b", "transit joins two different terminals")
            pair = (min(a, b_), max(a, b_))
            if a and b_ and pair in seen_pairs:
                self.p.add(at, f"transit between {a} and {b_} is declared twice")
            seen_pairs.add(pair)
            transit.append(
                Transit(
                    TerminalId(a),
                    TerminalId(b_),
                    self.real(t, "latency_ms", f"{at}.latency_ms", upper=MAX_DELAY_MS),
                    self.count(t, "bandwidth_mbps", f"{at}.bandwidth_mbps", positive=True),
                )
            )
        functions: list[FunctionOffer] = []
        for i, raw in enumerate(self.seq(m, "hosting", "hosting")):
            at = f"hosting[{i}]"
            h = self.mapping(raw, at, {"type", "site", "instances", "throughput_mbps"}, ("type", "site", "instances"))
            site = self.ident(h, "site", f"{at}.site")
            functions.append(
                FunctionOffer(
                    self.ident(h, "type", f"{at}.type"),
                    site,
                    self.count(h, "instances", f"{at}.instances", positive=True),
                    self.count(h, "throughput_mbps", f"{at}.throughput_mbps"),
                )
            )
        policy = self.policy(m, "")
        issued = m.get("issued_at", now)
        if not _num(issued):
            self.p.add("issued_at", "must be a Unix time in seconds")
            issued = now
        if "expires_at" in m and "valid_for_s" in m:
            self.p.add("valid_for_s", "give expires_at or valid_for_s, not both")
        valid_for = m.get("valid_for_s", 3600)
        if not _num(valid_for) or valid_for <= 0:
            self.p.add("valid_for_s", f"{valid_for!r} must be a number of seconds > 0")
            valid_for = 3600
        expires = m.get("expires_at", float(issued) + float(valid_for))
        if not _num(expires) or expires <= issued:
            self.p.add("expires_at" if "expires_at" in m else "valid_for_s", "the note must expire after it is issued")
            expires = float(issued) + 3600
        version = m.get("version", round(float(issued) * 1000))
        if not isinstance(version, int) or isinstance(version, bool) or version < 0:
            self.p.add("version", f"{version!r} must be an integer >= 0 (higher than any version published before)")
            version = 0
        if self.p.items:
            return None
        return CapabilityNote(
            sp_id=SpId(sp),
            version=version,
            issued_at=float(issued),
            expires_at=float(expires),
            endpoints=tuple(endpoints),
            ports=tuple(ports),
            transit=tuple(transit),
            functions=tuple(functions),
            qos_classes=policy.qos_classes,
            isolation=policy.isolation,
            address_pools=policy.address_pools,
            transit_policy=policy.transit_policy,
            price_per_mbps_hour=policy.price_per_mbps_hour,
        )


def parse_note(data: object, now: float) -> tuple[CapabilityNote | None, list[str]]:
    """A note from its authoring form, or None with every problem (``path: message``)."""
    parser = _Parser()
    note = parser.note(data, now)
    return note, parser.p.items


def validate_authoring(data: object, now: float = 0.0) -> list[str]:
    """Every problem of a note in the authoring format; empty when it is valid."""
    return parse_note(data, now)[1]


def parse_policy(data: object, path: str = "offer") -> tuple[OfferPolicy, list[str]]:
    """An offer policy (the operator-editable part), with every problem found."""
    parser = _Parser()
    m = parser.mapping(data, path, _POLICY)
    policy = parser.policy(m, path)
    return policy, parser.p.items


def policy_to_dict(policy: OfferPolicy) -> dict[str, Any]:
    """An offer policy in its authoring form (what ``parse_policy`` reads back)."""
    out: dict[str, Any] = {
        "qos_classes": [
            {"name": q.name, "native": dict(q.native), "delay_ms": q.delay_ms, "loss": q.loss}
            for q in policy.qos_classes
        ],
        "isolation": [str(i) for i in policy.isolation],
        "address_pools": list(policy.address_pools),
        "transit_policy": [[a, b] for a, b in policy.transit_policy],
        "withdrawn": policy.withdrawn,
    }
    if policy.price_per_mbps_hour is not None:
        out["price_per_mbps_hour"] = policy.price_per_mbps_hour
    return out

"""The canonical encoding of a capability note: the exact bytes an SP signs.

Deterministic protobuf serialisation is not canonical across implementations (field order of
unknown fields, map order, varint forms), so notes are signed over this JSON form instead:

* UTF-8 JSON as RFC 8785 (JCS) writes it: object keys sorted, no insignificant whitespace,
  strings with JSON's minimal escapes. Only objects, arrays, strings, booleans and **integers**
  occur, so the number-formatting part of JCS never arises and any language reproduces the bytes.
* Quantities are integers in fixed units: times in milliseconds since the Unix epoch
  (``issued_at_ms``, ``expires_at_ms``), latency and delay in microseconds (``latency_us``,
  ``delay_us``), loss in parts per billion (``loss_ppb``), price in millionths of a currency unit
  per Mb/s and hour (``price_micro``, absent when the SP quotes no price), bandwidth in Mb/s.
* Optional keys appear only when they say something: a port's ``latency_us`` (to its peer) when
  not zero, a transit entry's ``price_micro`` when it states its own price and ``functions`` (the
  function types its route visits, in order from ``a``) when it has some, a function's ``routed``
  when true. A note without them has the bytes it had before they existed.
* Collections that are sets are sorted: endpoints and ports by id, transit by
  ``(a, b, functions, latency_us, bandwidth_mbps, price_micro)``,
  functions by ``(type, site)``, QoS classes by name (their ``native`` mapping as an object),
  isolation, address pools, transit-policy pairs and provenance by value; label ranges are
  normalised ``[first, last]`` pairs.
* ``"format": "fedbroker-note/1"`` names this scheme; a receiver refuses any other.

A receiver verifies the signature over the bytes it received, then decodes them with
``note_from_canonical``, which checks every field's type and names the path of a bad one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from capability_catalog.model import (
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

FORMAT = "fedbroker-note/1"
T = TypeVar("T")


class CanonicalError(ValueError):
    """The bytes are not a canonical note; the message names the path of the first bad field."""


def _grid(value: float, scale: float) -> int:
    # A non-finite value has no canonical form: refuse it here, as a ValueError the feed can report,
    # instead of letting round() raise OverflowError in a background task.
    scaled = value * scale
    if not math.isfinite(scaled):
        raise CanonicalError(f"{value!r} is not a finite number, so the note has no canonical form")
    return round(scaled)


def _ms(t: float) -> int:
    return _grid(t, 1000)


def _us(ms: float) -> int:
    return _grid(ms, 1000)


def _labels(labels: LabelSet) -> list[list[int]]:
    return [[r.first, r.last] for r in labels.ranges]


def _price_micro(price: float) -> int:
    if not math.isfinite(price):
        raise CanonicalError(f"{price!r} is not a finite number, so the note has no canonical form")
    return round(price * 1e6) if abs(price) < 1e290 else int(price) * 1_000_000


def _transit_key(t: Transit) -> tuple[str, str, tuple[str, ...], int, int, int]:
    price = -1 if t.price_per_mbps_hour is None else _price_micro(t.price_per_mbps_hour)
    return (t.a, t.b, t.functions, _us(t.latency_ms), t.bandwidth_mbps, price)


def _transit_dict(t: Transit) -> dict[str, Any]:
    out: dict[str, Any] = {"a": t.a, "b": t.b, "latency_us": _us(t.latency_ms), "bandwidth_mbps": t.bandwidth_mbps}
    if t.price_per_mbps_hour is not None:
        out["price_micro"] = _price_micro(t.price_per_mbps_hour)
    if t.functions:
        out["functions"] = list(t.functions)
    return out


def note_to_dict(note: CapabilityNote) -> dict[str, Any]:
    """The note as the JSON-able object the canonical bytes encode."""
    out: dict[str, Any] = {
        "format": FORMAT,
        "sp_id": note.sp_id,
        "version": note.version,
        "issued_at_ms": _ms(note.issued_at),
        "expires_at_ms": _ms(note.expires_at),
        "endpoints": [
            {"id": e.id, "region": e.region, "location": e.location, "capacity_mbps": e.capacity_mbps}
            for e in sorted(note.endpoints, key=lambda e: e.id)
        ],
        "ports": [
            {
                "id": p.id,
                "peer_sp": p.peer_sp,
                "peer_port": p.peer_port,
                "label_type": str(p.label_type),
                "labels": _labels(p.labels),
                "local_labels": _labels(p.local_labels),
                "can_swap": p.can_swap,
                "capacity_mbps": p.capacity_mbps,
                **({"latency_us": _us(p.latency_ms)} if _us(p.latency_ms) else {}),
            }
            for p in sorted(note.ports, key=lambda p: p.id)
        ],
        "transit": [_transit_dict(t) for t in sorted(note.transit, key=_transit_key)],
        "functions": [
            {
                "type": f.type,
                "site": f.site,
                "slots": f.slots,
                "throughput_mbps": f.throughput_mbps,
                **({"routed": True} if f.routed else {}),
            }
            for f in sorted(note.functions, key=lambda f: (f.type, f.site))
        ],
        "qos_classes": [
            {
                "name": q.name,
                "native": dict(q.native),
                "delay_us": _us(q.delay_ms),
                "loss_ppb": _grid(q.loss, 1e9),
            }
            for q in sorted(note.qos_classes, key=lambda q: q.name)
        ],
        "isolation": sorted(str(i) for i in note.isolation),
        "address_pools": sorted(note.address_pools),
        "transit_policy": sorted([a, b] for a, b in note.transit_policy),
        "provenance": [{"digest": d, "version": v} for d, v in sorted(note.provenance)],
    }
    if note.price_per_mbps_hour is not None:
        out["price_micro"] = _price_micro(note.price_per_mbps_hour)
    return out


def note_to_canonical(note: CapabilityNote) -> bytes:
    """The canonical bytes of ``note`` (what is signed and what travels)."""
    return json.dumps(note_to_dict(note), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def normalised(note: CapabilityNote) -> CapabilityNote:
    """The note as a receiver will see it: sets sorted, quantities on the canonical grid."""
    return note_from_canonical(note_to_canonical(note))


# --- decoding -----------------------------------------------------------------------------------


class _Reader:
    """Typed access to a decoded JSON object; every error names its path."""

    def __init__(self, data: object, path: str) -> None:
        if not isinstance(data, dict):
            raise CanonicalError(f"{path or 'note'}: must be an object")
        self.data: dict[str, object] = data
        self.path = path

    def _at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: str, kind: type[T], default: T | None = None) -> T:
        if key not in self.data:
            if default is not None:
                return default
            raise CanonicalError(f"{self._at(key)}: missing")
        value = self.data[key]
        # bool is an int in Python; keep the two apart.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise CanonicalError(f"{self._at(key)}: must be {kind.__name__}, not {type(value).__name__}")
        return value

    def items(self, key: str, convert: Callable[[object, str], T]) -> tuple[T, ...]:
        seq = self.get(key, list, [])
        return tuple(convert(x, f"{self._at(key)}[{i}]") for i, x in enumerate(seq))


def _label_set(raw: object, path: str) -> LabelSet:
    if not isinstance(raw, list):
        raise CanonicalError(f"{path}: must be a list of [first, last]")
    ranges = []
    for i, r in enumerate(raw):
        ok = isinstance(r, list) and len(r) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in r)
        if not ok:
            raise CanonicalError(f"{path}[{i}]: must be [first, last] integers")
        try:
            ranges.append(LabelRange(r[0], r[1]))
        except ValueError as exc:
            raise CanonicalError(f"{path}[{i}]: {exc}") from None
    return LabelSet.of(ranges)


def _endpoint(x: object, path: str) -> Endpoint:
    r = _Reader(x, path)
    return Endpoint(
        TerminalId(r.get("id", str)),
        r.get("region", str, ""),
        r.get("capacity_mbps", int, 0),
        r.get("location", str, ""),
    )


def _port(x: object, path: str) -> BorderPort:
    r = _Reader(x, path)
    raw_type = r.get("label_type", str)
    try:
        label_type = LabelType(raw_type)
    except ValueError:
        raise CanonicalError(f"{path}.label_type: unknown label type '{raw_type}'") from None
    return BorderPort(
        id=TerminalId(r.get("id", str)),
        peer_sp=SpId(r.get("peer_sp", str)),
        peer_port=TerminalId(r.get("peer_port", str)),
        label_type=label_type,
        labels=_label_set(r.get("labels", list, []), f"{path}.labels"),
        can_swap=r.get("can_swap", bool, False),
        capacity_mbps=r.get("capacity_mbps", int, 0),
        local_labels=_label_set(r.get("local_labels", list, []), f"{path}.local_labels"),
        latency_ms=r.get("latency_us", int, 0) / 1000,
    )


def _transit(x: object, path: str) -> Transit:
    r = _Reader(x, path)
    price = r.data.get("price_micro")
    if price is not None and (not isinstance(price, int) or isinstance(price, bool)):
        raise CanonicalError(f"{path}.price_micro: must be int")
    return Transit(
        TerminalId(r.get("a", str)),
        TerminalId(r.get("b", str)),
        r.get("latency_us", int) / 1000,
        r.get("bandwidth_mbps", int),
        None if price is None else _from_micro(price),
        r.items("functions", _string),
    )


def _from_micro(micro: int) -> float:
    try:
        return micro / 1e6
    except OverflowError:
        raise CanonicalError(f"price_micro: {micro} is out of range") from None


def _function(x: object, path: str) -> FunctionOffer:
    r = _Reader(x, path)
    return FunctionOffer(
        r.get("type", str),
        r.get("site", str),
        r.get("slots", int),
        r.get("throughput_mbps", int, 0),
        r.get("routed", bool, False),
    )


def _qos(x: object, path: str) -> QosClass:
    r = _Reader(x, path)
    native = r.get("native", dict, {})
    for k, v in native.items():
        if not isinstance(v, str):
            raise CanonicalError(f"{path}.native.{k}: must be str")
    return QosClass(
        name=r.get("name", str),
        native=tuple(sorted(native.items())),
        delay_ms=r.get("delay_us", int, 0) / 1000,
        loss=r.get("loss_ppb", int, 0) / 1e9,
    )


def _isolation(x: object, path: str) -> Isolation:
    try:
        return Isolation(str(x))
    except ValueError:
        raise CanonicalError(f"{path}: unknown isolation '{x}'") from None


def _string(x: object, path: str) -> str:
    if not isinstance(x, str):
        raise CanonicalError(f"{path}: must be str")
    return x


def _pair(x: object, path: str) -> tuple[str, str]:
    if not (isinstance(x, list) and len(x) == 2 and all(isinstance(v, str) for v in x)):
        raise CanonicalError(f"{path}: must be [peer, peer]")
    return (x[0], x[1])


def _provenance(x: object, path: str) -> tuple[str, int]:
    r = _Reader(x, path)
    return (r.get("digest", str), r.get("version", int))


def note_from_dict(data: Mapping[str, object]) -> CapabilityNote:
    """A note from its canonical object, checking every field; errors name the path."""
    r = _Reader(dict(data), "")
    if r.get("format", str) != FORMAT:
        raise CanonicalError(f"format: '{data.get('format')}' is not {FORMAT}")
    price = r.data.get("price_micro")
    if price is not None and (not isinstance(price, int) or isinstance(price, bool)):
        raise CanonicalError("price_micro: must be int")
    return CapabilityNote(
        sp_id=SpId(r.get("sp_id", str)),
        version=r.get("version", int),
        issued_at=r.get("issued_at_ms", int) / 1000,
        expires_at=r.get("expires_at_ms", int) / 1000,
        endpoints=r.items("endpoints", _endpoint),
        ports=r.items("ports", _port),
        transit=r.items("transit", _transit),
        functions=r.items("functions", _function),
        qos_classes=r.items("qos_classes", _qos),
        isolation=r.items("isolation", _isolation),
        address_pools=r.items("address_pools", _string),
        transit_policy=r.items("transit_policy", _pair),
        price_per_mbps_hour=None if price is None else _from_micro(price),
        provenance=r.items("provenance", _provenance),
    )


def note_from_canonical(payload: bytes) -> CapabilityNote:
    """Decode canonical bytes; refuses bytes that are not exactly the canonical form of their content."""
    try:
        data = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CanonicalError(f"not canonical JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CanonicalError("note: must be an object")
    note = note_from_dict(data)
    if note_to_canonical(note) != payload:
        raise CanonicalError("payload is valid JSON but not in canonical form (key order, spacing or set order)")
    return note

"""The one conversion between protobuf messages and the core model, shared by server and client."""

from __future__ import annotations

import base64
import ipaddress
import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from broker.core.monitoring import Alert, AlertStatus, Health, Rule, check_rule
from broker.core.records import SegmentRecord, SliceRecord, Then
from capability_catalog.authoring import OfferPolicy
from capability_catalog.model import (
    LABEL_LIMITS,
    CapabilityNote,
    Isolation,
    LabelRange,
    LabelSet,
    LabelType,
    QosClass,
    TerminalId,
)
from capability_catalog.signing import SignedNote
from domain_agents.base import SegmentAlert
from fedbroker.v1 import northsouth_pb2 as pb
from schemas.note import parse_policy
from slicing.errors import ErrorCode, FedError, InvalidArgument, error_for_code
from slicing.model import Plan, PortConstraint, SliceRequest, SliceState

_LABEL_TYPES: dict[LabelType, int] = {
    LabelType.VXLAN_VNI: pb.LABEL_TYPE_VXLAN_VNI,
    LabelType.VLAN: pb.LABEL_TYPE_VLAN,
    LabelType.MPLS: pb.LABEL_TYPE_MPLS,
}
_LABEL_TYPES_BACK = {v: k for k, v in _LABEL_TYPES.items()}
_STATES: dict[SliceState, int] = {s: pb.SliceState.Value(f"SLICE_STATE_{s.value}") for s in SliceState}
_STATES_BACK = {v: k for k, v in _STATES.items()}

MAX_ID_LEN = 200
MAX_LIST_LEN = 64
# Ids (terminals, functions, slices, request ids) are strict: letters, digits and . _ : - only.
ID_SYNTAX = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*")
# Dotted-quad IPv4 with a prefix: no integer forms, no leading '+', nothing ipaddress would guess at.
SUBNET_SYNTAX = re.compile(r"(?:\d{1,3}\.){3}\d{1,3}/\d{1,2}")
MIN_PREFIX, MAX_PREFIX = 8, 30
#: Upper bounds of a request's numbers: far above any real slice, far below where float or SQLite
#: integer arithmetic overflows (a 1e303 ms budget once overflowed the planner's share rounding).
MAX_BANDWIDTH_MBPS = 10_000_000  # 10 Tb/s
MAX_LATENCY_BUDGET_MS = 3_600_000.0  # one hour
MAX_PRICE_PER_HOUR = 1e12


#: IPv4 blocks no slice can address its endpoints from.
_NOT_UNICAST = tuple(
    (ipaddress.IPv4Network(block), what)
    for block, what in (
        ("0.0.0.0/8", "'this network'"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved, with the broadcast address"),
    )
)


def ts(t: float) -> Timestamp:
    """A protobuf timestamp from Unix seconds."""
    seconds = math.floor(t)
    nanos = round((t - seconds) * 1e9)
    if nanos >= 1_000_000_000:  # rounding carried into the next second
        seconds, nanos = seconds + 1, nanos - 1_000_000_000
    return Timestamp(seconds=seconds, nanos=nanos)


def from_ts(t: Timestamp) -> float:
    """Unix seconds from a protobuf timestamp."""
    return t.seconds + t.nanos / 1e9


def state_to_pb(state: SliceState) -> int:
    """The protobuf enum value of a slice state."""
    return _STATES[state]


def state_from_pb(value: int, field: str = "state") -> SliceState:
    """The slice state of a protobuf enum value (``INVALID_ARGUMENT`` naming ``field`` for unspecified)."""
    try:
        return _STATES_BACK[value]
    except KeyError:
        raise InvalidArgument(field, f"unknown slice state {value}: name a state, e.g. SLICE_STATE_ACTIVE") from None


# --- labels -----------------------------------------------------------------------------------


def label_ranges_to_pb(labels: LabelSet) -> list[pb.LabelRange]:
    """Protobuf label ranges of a label set."""
    return [pb.LabelRange(first=r.first, last=r.last) for r in labels.ranges]


def label_ranges_from_pb(ranges: Iterable[pb.LabelRange], path: str) -> LabelSet:
    """A label set from protobuf ranges, naming ``path[i]`` when one is malformed."""
    out: list[LabelRange] = []
    items = list(ranges)
    if len(items) > MAX_LIST_LEN:
        raise InvalidArgument(path, f"more than {MAX_LIST_LEN} ranges")
    lo = min(low for low, _ in LABEL_LIMITS.values())
    hi = max(high for _, high in LABEL_LIMITS.values())
    for i, r in enumerate(items):
        if r.first < lo or r.last < r.first or r.last > hi:
            raise InvalidArgument(f"{path}[{i}]", f"bad label range {r.first}-{r.last} (labels are {lo}-{hi})")
        out.append(LabelRange(r.first, r.last))
    return LabelSet.of(out)


# --- notes ------------------------------------------------------------------------------------


def _qos_to_pb(classes: Iterable[QosClass]) -> list[pb.QosClass]:
    return [pb.QosClass(name=q.name, native=dict(q.native), delay_ms=q.delay_ms, loss=q.loss) for q in classes]


def note_to_pb(note: CapabilityNote) -> pb.CapabilityNote:
    """A capability note as protobuf."""
    msg = pb.CapabilityNote(
        sp_id=note.sp_id,
        version=note.version,
        issued_at=ts(note.issued_at),
        expires_at=ts(note.expires_at),
        endpoints=[
            pb.Endpoint(id=e.id, region=e.region, capacity_mbps=e.capacity_mbps, location=e.location)
            for e in note.endpoints
        ],
        ports=[
            pb.BorderPort(
                id=p.id,
                peer_sp=p.peer_sp,
                peer_port=p.peer_port,
                label_type=_LABEL_TYPES[p.label_type],  # type: ignore[arg-type]
                labels=label_ranges_to_pb(p.labels),
                can_swap=p.can_swap,
                capacity_mbps=p.capacity_mbps,
                local_labels=label_ranges_to_pb(p.local_labels),
            )
            for p in note.ports
        ],
        transit=[
            pb.Transit(a=t.a, b=t.b, latency_ms=t.latency_ms, bandwidth_mbps=t.bandwidth_mbps) for t in note.transit
        ],
        functions=[
            pb.FunctionOffer(type=f.type, site=f.site, slots=f.slots, throughput_mbps=f.throughput_mbps)
            for f in note.functions
        ],
        qos_classes=_qos_to_pb(note.qos_classes),
        isolation=[str(i) for i in note.isolation],
        address_pools=list(note.address_pools),
        transit_policy=[pb.TransitPolicy(a=a, b=b) for a, b in note.transit_policy],
        provenance=[pb.Provenance(digest=d, version=v) for d, v in note.provenance],
    )
    if note.price_per_mbps_hour is not None:
        msg.price_per_mbps_hour = note.price_per_mbps_hour
    return msg


def signed_to_pb(signed: SignedNote) -> pb.SignedNote:
    """A signed note as protobuf."""
    return pb.SignedNote(payload=signed.payload, signature=signed.signature, signer=signed.signer, key_id=signed.key_id)


def offer_to_pb(offer: OfferPolicy) -> pb.OfferPolicy:
    """An operator's offer policy as protobuf."""
    msg = pb.OfferPolicy(
        qos_classes=_qos_to_pb(offer.qos_classes),
        isolation=[str(i) for i in offer.isolation],
        address_pools=list(offer.address_pools),
        transit_policy=[pb.TransitPolicy(a=a, b=b) for a, b in offer.transit_policy],
        withdrawn=offer.withdrawn,
    )
    if offer.price_per_mbps_hour is not None:
        msg.price_per_mbps_hour = offer.price_per_mbps_hour
    return msg


def offer_from_pb(msg: pb.OfferPolicy) -> OfferPolicy:
    """An offer policy from protobuf, checked like the authoring format; the error names the field."""
    data: dict[str, Any] = {
        "qos_classes": [
            {"name": q.name, "native": dict(q.native), "delay_ms": q.delay_ms, "loss": q.loss} for q in msg.qos_classes
        ],
        "isolation": list(msg.isolation),
        "address_pools": list(msg.address_pools),
        "transit_policy": [[t.a, t.b] for t in msg.transit_policy],
        "withdrawn": msg.withdrawn,
    }
    if msg.HasField("price_per_mbps_hour"):
        data["price_per_mbps_hour"] = msg.price_per_mbps_hour
    offer, problems = parse_policy(data, "offer")
    if problems:
        where, _, why = problems[0].partition(": ")
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise InvalidArgument(where, why + more)
    return offer


def signed_from_pb(msg: pb.SignedNote) -> SignedNote:
    """A signed note from protobuf (verification is the catalog's job)."""
    return SignedNote(payload=msg.payload, signature=msg.signature, signer=msg.signer, key_id=msg.key_id)


# --- requests ---------------------------------------------------------------------------------


def _check_text(value: str, path: str) -> None:
    if len(value) > MAX_ID_LEN:
        raise InvalidArgument(path, f"longer than {MAX_ID_LEN} characters")
    if any(c.isspace() or not c.isprintable() for c in value):
        raise InvalidArgument(path, "must not contain spaces or control characters")


def check_id(value: str, path: str, *, required: bool = True) -> None:
    """Refuse an id that is empty (when required), too long or outside ``ID_SYNTAX``, naming ``path``."""
    if not value:
        if required:
            raise InvalidArgument(path, "must not be empty")
        return
    _check_text(value, path)
    if not ID_SYNTAX.fullmatch(value):
        raise InvalidArgument(path, "only letters, digits and . _ : - are allowed, starting with a letter or digit")


_THEN: dict[int, Then] = {
    pb.RESERVE_THEN_HOLD: Then.HOLD,
    pb.RESERVE_THEN_COMMIT: Then.COMMIT,
    pb.RESERVE_THEN_COMMIT_AND_ACTIVATE: Then.ACTIVATE,
}


def then_from_pb(value: int) -> Then:
    """What a Reserve does once held (``INVALID_ARGUMENT`` naming ``then`` for an unknown value)."""
    try:
        return _THEN[value]
    except KeyError:
        raise InvalidArgument("then", f"unknown value {value}: HOLD, COMMIT or COMMIT_AND_ACTIVATE") from None


def check_ref(ref: pb.SliceRef) -> None:
    """A slice reference names a well-formed slice id or request id."""
    check_id(ref.slice_id, "slice_id", required=False)
    check_id(ref.request_id, "request_id", required=False)
    if not ref.slice_id and not ref.request_id:
        raise InvalidArgument("slice_id", "give a slice_id or a request_id")


def check_subnet(text: str, path: str) -> str:
    """An IPv4 network in strict CIDR form with a prefix from /8 to /30; returns its normal form."""
    if len(text) > 18 or not SUBNET_SYNTAX.fullmatch(text):
        raise InvalidArgument(path, f"not a CIDR network (A.B.C.D/N): {text[:40]!r}")
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise InvalidArgument(path, f"not a CIDR network: {exc}") from None
    if not MIN_PREFIX <= net.prefixlen <= MAX_PREFIX:
        raise InvalidArgument(path, f"prefix length must be {MIN_PREFIX} to {MAX_PREFIX}, got /{net.prefixlen}")
    for block, what in _NOT_UNICAST:
        if net.overlaps(block):
            raise InvalidArgument(path, f"{net} lies in {block} ({what}); give a unicast range such as 10.0.0.0/16")
    return str(net)


def request_to_pb(req: SliceRequest) -> pb.SliceRequest:
    """A slice request as protobuf."""
    return pb.SliceRequest(
        name=req.name,
        src=req.src,
        dst=req.dst,
        bandwidth_mbps=req.bandwidth_mbps,
        latency_budget_ms=req.latency_budget_ms,  # None leaves the optional field absent
        chain=list(req.chain),
        subnet=req.subnet,
        port_constraints=[
            pb.PortConstraint(port=c.port, labels=label_ranges_to_pb(c.labels), preferred=c.preferred or 0)
            for c in req.port_constraints
        ],
        chain_throughput_mbps=list(req.chain_throughput_mbps),
        reverse_bandwidth_mbps=req.reverse_bandwidth_mbps,
        qos_class=req.qos_class,
        isolation=str(req.isolation) if req.isolation is not None else "",
        include_sps=list(req.include_sps),
        exclude_sps=list(req.exclude_sps),
        max_price_per_hour=req.max_price_per_hour,
        trace=list(req.trace),
    )


def _ids(values: Iterable[str], path: str) -> tuple[str, ...]:
    out = tuple(values)
    if len(out) > MAX_LIST_LEN:
        raise InvalidArgument(path, f"more than {MAX_LIST_LEN} entries")
    for i, v in enumerate(out):
        check_id(v, f"{path}[{i}]")
    return out


def request_from_pb(msg: pb.SliceRequest, path: str = "request") -> SliceRequest:
    """A slice request from protobuf; every malformed field is refused by its path."""
    check_id(msg.src, f"{path}.src")
    check_id(msg.dst, f"{path}.dst")
    _check_text(msg.name, f"{path}.name")
    if msg.src == msg.dst:
        raise InvalidArgument(f"{path}.dst", "must differ from src")
    if not 0 < msg.bandwidth_mbps <= MAX_BANDWIDTH_MBPS:
        raise InvalidArgument(f"{path}.bandwidth_mbps", f"must be 1 to {MAX_BANDWIDTH_MBPS:,} Mb/s")
    if msg.reverse_bandwidth_mbps > MAX_BANDWIDTH_MBPS:
        raise InvalidArgument(
            f"{path}.reverse_bandwidth_mbps", f"must be 0 (same as bandwidth_mbps) to {MAX_BANDWIDTH_MBPS:,} Mb/s"
        )
    for i, mbps in enumerate(msg.chain_throughput_mbps):
        if mbps > MAX_BANDWIDTH_MBPS:
            why = f"must be 0 (the slice's bandwidth) to {MAX_BANDWIDTH_MBPS:,} Mb/s"
            raise InvalidArgument(f"{path}.chain_throughput_mbps[{i}]", why)
    budget = msg.latency_budget_ms if msg.HasField("latency_budget_ms") else None
    if budget is not None and not 0 <= budget <= MAX_LATENCY_BUDGET_MS:  # NaN fails both comparisons
        raise InvalidArgument(
            f"{path}.latency_budget_ms",
            f"must be absent (no budget) or a number of ms from 0 to {MAX_LATENCY_BUDGET_MS:g}",
        )
    if len(msg.chain) > MAX_LIST_LEN:
        raise InvalidArgument(f"{path}.chain", f"more than {MAX_LIST_LEN} functions")
    for i, fn in enumerate(msg.chain):
        check_id(fn, f"{path}.chain[{i}]")
    if ":" in msg.subnet:
        raise InvalidArgument(f"{path}.subnet", "only IPv4 subnets are supported")
    subnet = check_subnet(msg.subnet or "10.0.0.0/16", f"{path}.subnet")
    if len(msg.port_constraints) > 2:
        raise InvalidArgument(f"{path}.port_constraints", "at most one per terminal (src, dst)")
    constraints = []
    for i, c in enumerate(msg.port_constraints):
        cpath = f"{path}.port_constraints[{i}]"
        if c.port not in (msg.src, msg.dst):
            raise InvalidArgument(f"{cpath}.port", f"'{c.port}' is neither src nor dst")
        labels = label_ranges_from_pb(c.labels, f"{cpath}.labels")
        if not labels:
            raise InvalidArgument(f"{cpath}.labels", "must not be empty")
        if c.preferred and c.preferred not in labels:
            raise InvalidArgument(f"{cpath}.preferred", f"{c.preferred} is outside the allowed labels")
        constraints.append(PortConstraint(TerminalId(c.port), labels, c.preferred or None))
    if len(msg.chain_throughput_mbps) > len(msg.chain):
        raise InvalidArgument(f"{path}.chain_throughput_mbps", "has more entries than the chain has functions")
    isolation: Isolation | None = None
    if msg.isolation:
        try:
            isolation = Isolation(msg.isolation)
        except ValueError:
            known = ", ".join(i.value for i in Isolation)
            why = f"unknown isolation '{msg.isolation}' (known: {known})"
            raise InvalidArgument(f"{path}.isolation", why) from None
    if not 0 <= msg.max_price_per_hour <= MAX_PRICE_PER_HOUR:  # NaN fails both comparisons
        raise InvalidArgument(
            f"{path}.max_price_per_hour", f"must be 0 (no ceiling) or a price per hour up to {MAX_PRICE_PER_HOUR:g}"
        )
    check_id(msg.qos_class, f"{path}.qos_class", required=False)
    return SliceRequest(
        name=msg.name,
        src=TerminalId(msg.src),
        dst=TerminalId(msg.dst),
        bandwidth_mbps=msg.bandwidth_mbps,
        latency_budget_ms=budget,
        chain=tuple(msg.chain),
        subnet=subnet,
        port_constraints=tuple(constraints),
        chain_throughput_mbps=tuple(msg.chain_throughput_mbps),
        reverse_bandwidth_mbps=msg.reverse_bandwidth_mbps,
        qos_class=msg.qos_class,
        isolation=isolation,
        include_sps=_ids(msg.include_sps, f"{path}.include_sps"),
        exclude_sps=_ids(msg.exclude_sps, f"{path}.exclude_sps"),
        max_price_per_hour=msg.max_price_per_hour,
        trace=_ids(msg.trace, f"{path}.trace"),
    )


# --- list pages -------------------------------------------------------------------------------


def page_token_to_text(key: tuple[float, str]) -> str:
    """An opaque List page token for the (created_at, id) key of a page's last slice."""
    return base64.urlsafe_b64encode(json.dumps([key[0], key[1]]).encode()).decode()


def page_token_from_text(text: str, path: str) -> tuple[float, str] | None:
    """The key a page token stands for (None for an empty token); ``INVALID_ARGUMENT`` for anything else."""
    if not text:
        return None
    why = "not a token from a previous List answer (pass its next_page_token, or nothing for the first page)"
    if len(text) > 4 * MAX_ID_LEN:
        raise InvalidArgument(path, why)
    try:
        created, slice_id = json.loads(base64.urlsafe_b64decode(text.encode("ascii")))
    except (ValueError, TypeError, UnicodeEncodeError):
        raise InvalidArgument(path, why) from None
    if not isinstance(created, int | float) or isinstance(created, bool) or not math.isfinite(created):
        raise InvalidArgument(path, why)
    if not isinstance(slice_id, str) or not ID_SYNTAX.fullmatch(slice_id) or len(slice_id) > MAX_ID_LEN:
        raise InvalidArgument(path, why)
    return float(created), slice_id


# --- plans and explanations -------------------------------------------------------------------


def plan_to_pb(plan: Plan) -> pb.SlicePlan:
    """A decomposition as protobuf (the answer to a dry-run Reserve)."""
    return pb.SlicePlan(
        path=list(plan.path),
        total_latency_ms=plan.total_latency_ms,
        money_per_hour=plan.cost.money_per_hour,
        hops=plan.cost.hops,
        segments=[
            pb.PlannedSegment(
                index=s.index,
                domain=s.domain,
                ingress=s.request.src,
                egress=s.request.dst,
                transit_latency_ms=s.transit_latency_ms,
                latency_share_ms=s.latency_share_ms,
                qos_native=dict(s.qos_native),
                isolation=str(s.isolation) if s.isolation is not None else "",
                subnet=s.request.subnet,
                port_constraints=[
                    pb.PortConstraint(port=c.port, labels=label_ranges_to_pb(c.labels), preferred=c.preferred or 0)
                    for c in s.request.port_constraints
                ],
                functions=list(s.request.chain),
                price_per_hour=s.price_per_hour,
            )
            for s in plan.segments
        ],
        links=[
            pb.PlannedLink(
                a_port=ln.a_port,
                b_port=ln.b_port,
                a_domain=ln.a_domain,
                b_domain=ln.b_domain,
                candidates=label_ranges_to_pb(ln.candidates),
                preferred=ln.preferred,
                a_can_swap=ln.a_can_swap,
                b_can_swap=ln.b_can_swap,
            )
            for ln in plan.links
        ],
        placements=[
            pb.FunctionPlacement(index=p.index, type=p.type, domain=p.domain, site=p.site) for p in plan.placements
        ],
    )


#: How deep an explanation tree may be and how many causes a node may list (a bound for hostile peers).
MAX_ERROR_DEPTH = 8


def error_to_detail(exc: FedError, depth: int = 0) -> pb.ErrorDetail:
    """An error and its causes as the ``ErrorDetail`` tree sent in the status details."""
    return pb.ErrorDetail(
        sp_id=exc.domain,
        code=exc.code.value,
        constraint=exc.constraint,
        message=exc.message,
        field=exc.field,
        causes=[error_to_detail(c, depth + 1) for c in exc.causes[:MAX_LIST_LEN]] if depth < MAX_ERROR_DEPTH else [],
    )


def error_from_detail(detail: pb.ErrorDetail, depth: int = 0) -> FedError:
    """The error tree back from ``ErrorDetail`` (unknown codes become INTERNAL)."""
    try:
        code = ErrorCode(detail.code)
    except ValueError:
        code = ErrorCode.INTERNAL
    causes = [error_from_detail(c, depth + 1) for c in detail.causes[:MAX_LIST_LEN]] if depth < MAX_ERROR_DEPTH else []
    err = error_for_code(code, detail.message, domain=detail.sp_id, constraint=detail.constraint, causes=causes)
    err.field = detail.field
    return err


# --- slices -----------------------------------------------------------------------------------


def _port_labels(labels: Mapping[str, int]) -> list[pb.PortLabel]:
    return [pb.PortLabel(port=p, label=v) for p, v in sorted(labels.items())]


def segment_to_pb(seg: SegmentRecord) -> pb.Segment:
    """A segment record as protobuf, with the child's nested segments."""
    msg = pb.Segment(
        domain=seg.domain,
        sp_id=seg.sp_id,
        local=seg.local,
        ingress=seg.request.src,
        egress=seg.request.dst,
        state=state_to_pb(seg.state),  # type: ignore[arg-type]
        child_ref=seg.child_ref,
        labels=_port_labels(seg.labels),
        subnet=seg.request.subnet,
        functions=list(seg.request.chain),
        latency_share_ms=seg.latency_share_ms,
    )
    kept = _DETAIL_BYTES.get(id(seg.detail))
    if kept is not None and kept[0] is seg.detail:  # a lower SP's answer: copied as it came, not parsed again
        for raw in kept[1]:
            msg.children.add().MergeFromString(raw)
        return msg
    for child in seg.detail:  # read back from the store (after a restart): from its JSON
        json_format.ParseDict(dict(child), msg.children.add())
    return msg


def slice_to_pb(rec: SliceRecord, sp_id: str) -> pb.Slice:
    """A slice record as protobuf."""
    msg = pb.Slice(
        id=rec.id,
        request_id=rec.request_id,
        request=request_to_pb(rec.request),
        state=state_to_pb(rec.state),  # type: ignore[arg-type]
        created_at=ts(rec.created_at),
        updated_at=ts(rec.updated_at),
        segments=[segment_to_pb(s) for s in rec.segments],
        labels=_port_labels(rec.labels),
        addresses=[pb.AddressAssignment(endpoint=e, address=a) for e, a in sorted(rec.addresses.items())],
        reason=rec.reason,
        sp_id=sp_id,
    )
    if rec.hold_expires_at:
        msg.hold_expires_at.CopyFrom(ts(rec.hold_expires_at))
    return msg


#: A lower SP's answer -> its segments as JSON dicts (``segments_detail``), and those dicts -> the
#: segments' protobuf bytes (``segment_to_pb``), each keyed by the object's id and holding the object
#: (so the id is not reused). The codec's costliest work at an upper SP was turning every answer from
#: below into dicts (reflection) and, for every answer upward, the dicts back into protobuf: now once.
_DETAIL_OF: dict[int, tuple[pb.Slice, tuple[dict[str, Any], ...]]] = {}
_DETAIL_BYTES: dict[int, tuple[tuple[dict[str, Any], ...], tuple[bytes, ...]]] = {}
_DETAIL_MAX = 4096


def segments_detail(msg: pb.Slice) -> tuple[dict[str, Any], ...]:
    """A lower-SP's segments as JSON dicts, to keep as a segment's nested detail (the message is not changed after)."""
    kept = _DETAIL_OF.get(id(msg))
    if kept is not None and kept[0] is msg:
        return kept[1]
    detail = tuple(json_format.MessageToDict(s) for s in msg.segments)
    if len(_DETAIL_OF) >= _DETAIL_MAX:
        _DETAIL_OF.clear()
    if len(_DETAIL_BYTES) >= _DETAIL_MAX:
        _DETAIL_BYTES.clear()
    _DETAIL_OF[id(msg)] = (msg, detail)
    _DETAIL_BYTES[id(detail)] = (detail, tuple(s.SerializeToString() for s in msg.segments))
    return detail


def leaf_sps(segments: Iterable[pb.Segment]) -> list[str]:
    """Leaf SP ids found by walking protobuf segments down to the local ones, in path order."""
    out: list[str] = []
    for seg in segments:
        found = [seg.sp_id] if seg.local else leaf_sps(seg.children)
        out.extend(sp for sp in found if sp not in out)
    return out


# --- monitoring ------------------------------------------------------------------------------

_ALERT_STATUS = {AlertStatus.FIRING: pb.ALERT_STATUS_FIRING, AlertStatus.RESOLVED: pb.ALERT_STATUS_RESOLVED}
_HEALTH = {Health.HEALTHY: pb.SLICE_HEALTH_HEALTHY, Health.DEGRADED: pb.SLICE_HEALTH_DEGRADED}


def alert_to_pb(a: Alert) -> pb.Alert:
    """An alert as protobuf (its ``source_sp`` as given: the caller decides how the reader sees it)."""
    return pb.Alert(
        slice_id=a.slice_id,
        cause=a.cause,
        metric=a.metric.value,
        value=a.value,
        threshold=a.threshold,
        comparison=a.comparison.value,
        severity=a.severity.value,
        status=_ALERT_STATUS[a.status],
        source_sp=a.source_sp,
        at=ts(a.at),
        detail=a.detail,
    )


def segment_alert_from_pb(msg: pb.Alert) -> SegmentAlert:
    """A child's alert, in plain values (the core checks them)."""
    return SegmentAlert(
        cause=msg.cause,
        metric=msg.metric,
        value=msg.value,
        threshold=msg.threshold,
        comparison=msg.comparison,
        severity=msg.severity,
        firing=msg.status == pb.ALERT_STATUS_FIRING,
        source=msg.source_sp,
        detail=msg.detail,
    )


def health_to_pb(h: Health) -> int:
    """A health marker as its protobuf enum value."""
    return _HEALTH[h]


def rule_to_pb(r: Rule) -> pb.AlertRule:
    """A user rule as protobuf."""
    return pb.AlertRule(
        name=r.name,
        metric=r.metric.value,
        comparison=r.comparison.value,
        threshold=r.threshold,
        for_s=r.for_s,
        severity=r.severity.value,
    )


def rule_from_pb(msg: pb.AlertRule) -> Rule:
    """A user rule from protobuf; ``InvalidArgument`` names the bad field (``rule.threshold``)."""
    return check_rule(msg.name, msg.metric, msg.comparison, msg.threshold, msg.for_s, msg.severity)

"""What the broker persists about its slices: records of slices, segments and stitched links."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from capability_catalog.model import CapabilityNote, Isolation, LabelRange, LabelSet, LabelType, SpId, TerminalId
from slicing.model import Plan, PortConstraint, SliceRequest, SliceState


class Then(StrEnum):
    """What follows once a slice is held everywhere: a one-call order's intent, durable with the slice.

    Set by a Reserve that orders more than a hold (at the customer's SP), and by a CommitAndActivate
    (at every level: its decision and the activation it promises are one write). A COMMITTING slice
    whose intent is ``ACTIVATE`` commits and activates each child in one step and goes on to ACTIVE.
    """

    HOLD = ""
    COMMIT = "commit"
    #: Commit, then activate.
    ACTIVATE = "activate"


@dataclass(frozen=True)
class SegmentRecord:
    """One child's piece of a slice, as this broker holds it."""

    index: int
    domain: str
    local: bool
    sp_id: str
    request: SliceRequest
    transit_latency_ms: float
    latency_share_ms: float
    state: SliceState
    order_key: str
    handle: str = ""
    labels: Mapping[str, int] = field(default_factory=dict)
    addresses: Mapping[str, str] = field(default_factory=dict)
    # The child's own segments (protobuf JSON dicts) when the child is a broker.
    detail: tuple[Mapping[str, Any], ...] = ()

    @property
    def child_ref(self) -> str:
        """The child's id for this piece: the lower-SP's slice id, or the local order key."""
        return self.order_key if self.local else self.handle


@dataclass(frozen=True)
class LinkRecord:
    """An inter-domain link between two children of this broker, stitched through its WIM."""

    a_port: TerminalId
    b_port: TerminalId
    a_domain: str
    b_domain: str
    label_type: LabelType
    label_a: int | None = None
    label_b: int | None = None
    a_can_swap: bool = False
    b_can_swap: bool = False
    wim_handle: str = ""

    def labels_agree(self) -> bool:
        """Both sides chose the same label, or a side that chose differently can swap."""
        if self.label_a is None or self.label_b is None:
            return False
        return self.label_a == self.label_b or self.a_can_swap or self.b_can_swap


@dataclass(frozen=True)
class SliceRecord:
    """A slice owned by this broker."""

    id: str
    requester: str
    request_id: str
    request_hash: str
    request: SliceRequest
    hold_time_s: float
    state: SliceState
    created_at: float
    updated_at: float
    hold_expires_at: float = 0.0
    reason: str = ""
    error_code: str = ""
    labels: Mapping[str, int] = field(default_factory=dict)
    addresses: Mapping[str, str] = field(default_factory=dict)
    segments: tuple[SegmentRecord, ...] = ()
    links: tuple[LinkRecord, ...] = ()
    # Where a release in flight (ABORTING, TERMINATING) ends once every SP below confirmed it.
    settle_to: SliceState | None = None
    # When an operation that rolls forward stops trying and is undone (ACTIVATING); 0: no deadline.
    deadline_at: float = 0.0
    # What follows the hold or the commit (a one-call order, a CommitAndActivate).
    then: Then = Then.HOLD

    def leaf_sps(self) -> list[str]:
        """The leaf SPs realising this slice, found by walking nested segments, in path order."""
        out: list[str] = []
        for seg in self.segments:
            found = _leaf_sps_in(seg.detail) if not seg.local else [seg.sp_id]
            for sp in found:
                if sp not in out:
                    out.append(sp)
        return out


@dataclass(frozen=True)
class OrderRecord:
    """A service order (TMF641 shape) placed at this broker: the intent around one slice.

    The slice is found by ``(requester, request_id)``, the order's idempotency key (its
    ``externalId``); the order's state is read from the slice (``broker.core.orders``), only what the
    slice cannot tell is kept here. A delete order (``delete_slice`` set) terminates an existing
    slice instead, and its state is read from that slice.
    """

    id: str
    requester: str
    request_id: str
    created_at: float
    hold_only: bool = False
    hold_time_s: float = 0.0
    description: str = ""
    # When the slice reached what the order asked for (0: not yet), and when its requester cancelled it.
    completed_at: float = 0.0
    cancelled_at: float = 0.0
    #: The slice a delete order terminates ('' for an order that adds one).
    delete_slice: str = ""


def _leaf_sps_in(detail: tuple[Mapping[str, Any], ...] | list[Mapping[str, Any]]) -> list[str]:
    out: list[str] = []
    for seg in detail:
        if seg.get("local"):
            out.append(str(seg.get("spId", "")))
        else:
            out.extend(_leaf_sps_in(seg.get("children", [])))
    return out


def labels_to_json(labels: LabelSet) -> list[list[int]]:
    """A label set as ``[[first, last], ...]``."""
    return [[r.first, r.last] for r in labels.ranges]


def labels_from_json(data: list[list[int]]) -> LabelSet:
    """The inverse of :func:`labels_to_json`."""
    return LabelSet.of(LabelRange(int(a), int(b)) for a, b in data)


def request_to_dict(req: SliceRequest) -> dict[str, Any]:
    """A slice request as plain JSON-able data (for the store and the idempotency hash)."""
    out: dict[str, Any] = {
        "name": req.name,
        "src": req.src,
        "dst": req.dst,
        "bandwidth_mbps": req.bandwidth_mbps,
        # No budget is stored as 0.0, as before budgets were optional, so older digests stay the same.
        "latency_budget_ms": req.latency_budget_ms or 0.0,
        "chain": list(req.chain),
        "subnet": req.subnet,
        "port_constraints": [
            {"port": c.port, "labels": labels_to_json(c.labels), "preferred": c.preferred} for c in req.port_constraints
        ],
    }
    # Fields added later are stored only when set, so digests of older requests stay the same.
    extra: dict[str, Any] = {
        "chain_throughput_mbps": list(req.chain_throughput_mbps),
        "reverse_bandwidth_mbps": req.reverse_bandwidth_mbps,
        "qos_class": req.qos_class,
        "isolation": str(req.isolation) if req.isolation is not None else "",
        "include_sps": list(req.include_sps),
        "exclude_sps": list(req.exclude_sps),
        "max_price_per_hour": req.max_price_per_hour,
        "trace": list(req.trace),
        "zero_latency_budget": req.latency_budget_ms == 0,
    }
    out.update({k: v for k, v in extra.items() if v})
    return out


def _budget(d: Mapping[str, Any]) -> float | None:
    if d.get("zero_latency_budget"):
        return 0.0
    value = float(d["latency_budget_ms"])
    return value if value > 0 else None


def request_from_dict(d: Mapping[str, Any]) -> SliceRequest:
    """The inverse of :func:`request_to_dict`."""
    return SliceRequest(
        name=d["name"],
        src=TerminalId(d["src"]),
        dst=TerminalId(d["dst"]),
        bandwidth_mbps=int(d["bandwidth_mbps"]),
        latency_budget_ms=_budget(d),
        chain=tuple(d["chain"]),
        subnet=d["subnet"],
        port_constraints=tuple(
            PortConstraint(TerminalId(c["port"]), labels_from_json(c["labels"]), c["preferred"])
            for c in d["port_constraints"]
        ),
        chain_throughput_mbps=tuple(int(x) for x in d.get("chain_throughput_mbps", ())),
        reverse_bandwidth_mbps=int(d.get("reverse_bandwidth_mbps", 0)),
        qos_class=str(d.get("qos_class", "")),
        isolation=Isolation(d["isolation"]) if d.get("isolation") else None,
        include_sps=tuple(d.get("include_sps", ())),
        exclude_sps=tuple(d.get("exclude_sps", ())),
        max_price_per_hour=float(d.get("max_price_per_hour", 0.0)),
        trace=tuple(d.get("trace", ())),
    )


def request_hash(req: SliceRequest, hold_time_s: float, then: Then = Then.HOLD) -> str:
    """A stable digest of a request, to tell a repeated request id from a reused one.

    A one-call order's intent is part of it (only when set, so digests of plain Reserves stay the same).
    """
    body: dict[str, Any] = {"r": request_to_dict(req), "h": hold_time_s}
    if then is not Then.HOLD:
        body["then"] = then.value
    blob = json.dumps(body, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


def label_at(segments: Iterable[SegmentRecord], port: TerminalId) -> int | None:
    """The label a segment confirmed at ``port``, or None."""
    for s in segments:
        if port in s.labels:
            return int(s.labels[port])
    return None


def with_state(segments: Iterable[SegmentRecord], state: SliceState) -> tuple[SegmentRecord, ...]:
    """The segments, each moved to ``state``."""
    return tuple(replace(s, state=state) for s in segments)


def order_key(slice_id: str, index: int, attempt: int) -> str:
    """The request id a segment is ordered under at its child: ``<slice id>.<segment>.<attempt>``."""
    return f"{slice_id}.{index}.{attempt}"


def slice_of_order_key(key: str) -> str:
    """The slice id an order key names ("" for a key that is not one of ours)."""
    parts = key.rsplit(".", 2)
    return parts[0] if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit() else ""


def records_for_plan(
    rec: SliceRecord,
    plan: Plan,
    attempt: int,
    notes: Mapping[SpId, CapabilityNote],
    local: Collection[str],
    sp_id: str,
) -> tuple[tuple[SegmentRecord, ...], tuple[LinkRecord, ...]]:
    """The segment and link records of one reservation attempt of ``rec`` along ``plan``."""
    segments = tuple(
        SegmentRecord(
            index=s.index,
            domain=s.domain,
            local=s.domain in local,
            sp_id=sp_id if s.domain in local else s.domain,
            request=s.request,
            transit_latency_ms=s.transit_latency_ms,
            latency_share_ms=s.latency_share_ms,
            state=SliceState.RESERVING,
            order_key=order_key(rec.id, s.index, attempt),
        )
        for s in plan.segments
    )
    links = []
    for ln in plan.links:
        port = notes[ln.a_domain].port(ln.a_port) if ln.a_domain in notes else None
        links.append(
            LinkRecord(
                a_port=ln.a_port,
                b_port=ln.b_port,
                a_domain=ln.a_domain,
                b_domain=ln.b_domain,
                label_type=port.label_type if port else LabelType.VXLAN_VNI,
                # The planned label counts as taken while the reservation is in flight.
                label_a=ln.preferred,
                label_b=ln.preferred,
                a_can_swap=ln.a_can_swap,
                b_can_swap=ln.b_can_swap,
            )
        )
    return segments, tuple(links)

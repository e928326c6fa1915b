"""Protobuf ↔ core conversion: lossless round trips, and malformed fields refused by their path."""

from __future__ import annotations

import json
from dataclasses import replace

import grpc
import pytest

from broker.api import codec
from broker.api.status import from_rpc_error, to_grpc
from broker.core.records import SegmentRecord, request_from_dict, request_to_dict
from capability_catalog.model import (
    BorderPort,
    CapabilityNote,
    Endpoint,
    FunctionOffer,
    LabelRange,
    LabelSet,
    LabelType,
    SpId,
    TerminalId,
    Transit,
)
from fedbroker.v1 import northsouth_pb2 as pb
from slicing.errors import ErrorCode, InvalidArgument
from slicing.model import PortConstraint, SliceRequest, SliceState


def note() -> CapabilityNote:
    return CapabilityNote(
        sp_id=SpId("L1"),
        version=7,
        issued_at=1_800_000_000.25,
        expires_at=1_800_003_600.5,
        endpoints=(Endpoint(TerminalId("L1.ep"), "nl", 1000),),
        ports=(
            BorderPort(
                TerminalId("L1.to-L2"),
                SpId("L2"),
                TerminalId("L2.to-L1"),
                LabelType.VLAN,
                LabelSet.of([LabelRange(10, 20), LabelRange(30, 30)]),
                True,
                500,
            ),
        ),
        transit=(Transit(TerminalId("L1.ep"), TerminalId("L1.to-L2"), 2.5, 900),),
        functions=(FunctionOffer("firewall", "L1.core", 3),),
    )


def test_note_to_protobuf_carries_every_field_for_display() -> None:
    msg = codec.note_to_pb(note())
    assert (msg.sp_id, msg.version) == ("L1", 7)
    assert codec.from_ts(msg.issued_at) == 1_800_000_000.25 and codec.from_ts(msg.expires_at) == 1_800_003_600.5
    port = msg.ports[0]
    assert (port.id, port.peer_sp, port.peer_port, port.label_type) == (
        "L1.to-L2",
        "L2",
        "L2.to-L1",
        pb.LABEL_TYPE_VLAN,
    )
    assert [(r.first, r.last) for r in port.labels] == [(10, 20), (30, 30)]
    assert port.can_swap and port.capacity_mbps == 500
    assert [(t.a, t.b, t.latency_ms, t.bandwidth_mbps) for t in msg.transit] == [("L1.ep", "L1.to-L2", 2.5, 900)]
    assert [(f.type, f.site, f.slots) for f in msg.functions] == [("firewall", "L1.core", 3)]
    assert not msg.HasField("price_per_mbps_hour")


def test_signed_note_round_trips_through_protobuf() -> None:
    from capability_catalog.signing import SignedNote

    signed = SignedNote(payload=b"{}", signature=b"\x01" * 64, signer="L1", key_id="abcd")
    assert codec.signed_from_pb(codec.signed_to_pb(signed)) == signed


@pytest.mark.parametrize("t", [0.0, 1_800_000_000.25, 1_800_000_000.999_999_999_9, 1.5e9 + 0.001])
def test_timestamps_convert_without_drift(t: float) -> None:
    assert abs(codec.from_ts(codec.ts(t)) - t) < 1e-6


def test_request_round_trips_through_protobuf() -> None:
    req = SliceRequest(
        src=TerminalId("L1.ep"),
        dst=TerminalId("L2.to-L3"),
        bandwidth_mbps=100,
        name="n",
        latency_budget_ms=12.5,
        chain=("firewall", "nat"),
        subnet="10.1.0.0/24",
        port_constraints=(PortConstraint(TerminalId("L2.to-L3"), LabelSet.of([LabelRange(5, 9)]), 7),),
    )
    assert codec.request_from_pb(codec.request_to_pb(req)) == req


def test_every_slice_state_maps_both_ways() -> None:
    for state in SliceState:
        assert codec.state_from_pb(codec.state_to_pb(state)) is state
    with pytest.raises(InvalidArgument):
        codec.state_from_pb(pb.SLICE_STATE_UNSPECIFIED)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"src": ""}, "request.src"),
        ({"dst": "has space"}, "request.dst"),
        ({"dst": "a"}, "request.dst"),  # same as src
        ({"bandwidth_mbps": 0}, "request.bandwidth_mbps"),
        ({"latency_budget_ms": -1}, "request.latency_budget_ms"),
        ({"latency_budget_ms": float("nan")}, "request.latency_budget_ms"),
        ({"subnet": "10.0.0.1/24"}, "request.subnet"),  # host bits set
        ({"subnet": "fe80::/64"}, "request.subnet"),
        ({"name": "x" * 201}, "request.name"),
        # Issue 18 item 1: values that once overflowed the planner's arithmetic.
        ({"latency_budget_ms": 1e303}, "request.latency_budget_ms"),
        ({"latency_budget_ms": float("inf")}, "request.latency_budget_ms"),
        ({"max_price_per_hour": 1e308}, "request.max_price_per_hour"),
        ({"max_price_per_hour": float("nan")}, "request.max_price_per_hour"),
        ({"bandwidth_mbps": 2**64 - 1}, "request.bandwidth_mbps"),
        ({"reverse_bandwidth_mbps": 2**63}, "request.reverse_bandwidth_mbps"),
    ],
)
def test_malformed_request_is_refused_naming_the_field(change: dict[str, object], field: str) -> None:
    msg = pb.SliceRequest(src="a", dst="b", bandwidth_mbps=1)
    for key, value in change.items():
        setattr(msg, key, value)
    with pytest.raises(InvalidArgument) as info:
        codec.request_from_pb(msg)
    assert info.value.field == field


def test_port_constraint_must_name_a_terminal_and_hold_its_preferred_label() -> None:
    msg = pb.SliceRequest(src="a", dst="b", bandwidth_mbps=1)
    msg.port_constraints.add(port="c", labels=[pb.LabelRange(first=1, last=2)])
    with pytest.raises(InvalidArgument) as info:
        codec.request_from_pb(msg)
    assert info.value.field == "request.port_constraints[0].port"
    msg.port_constraints[0].port = "b"
    msg.port_constraints[0].preferred = 9
    with pytest.raises(InvalidArgument) as info:
        codec.request_from_pb(msg)
    assert info.value.field == "request.port_constraints[0].preferred"
    msg.port_constraints[0].labels[0].last = 0
    with pytest.raises(InvalidArgument) as info:
        codec.request_from_pb(msg)
    assert info.value.field == "request.port_constraints[0].labels[0]"


def test_leaf_sps_walks_nested_segments_in_path_order() -> None:
    top = pb.Slice()
    m1 = top.segments.add(domain="M1", sp_id="M1")
    m1.children.add(domain="L1", sp_id="L1", local=True)
    m1.children.add(domain="L2", sp_id="L2", local=True)
    top.segments.add(domain="L3", sp_id="L3").children.add(domain="L3", sp_id="L3", local=True)
    assert codec.leaf_sps(top.segments) == ["L1", "L2", "L3"]


class FakeRpcError(grpc.aio.AioRpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_error_code_survives_a_hop_and_is_attributed_to_the_lower_sp(code: ErrorCode) -> None:
    err = from_rpc_error(FakeRpcError(to_grpc(code), "why"), "L7")
    assert err.code is code
    assert err.domain == "L7" and "why" in str(err) and "[L7]" in str(err)


def test_unanswered_lower_sp_errors_say_so() -> None:
    err = from_rpc_error(FakeRpcError(grpc.StatusCode.UNAVAILABLE, "connection refused"), "L7")
    assert err.retryable and "did not answer" in str(err)


@pytest.mark.parametrize(
    "subnet",
    ["10.0.0.0/33", "10.0.0.0/31", "10.0.0.0/4", "10.0.0.0", "0x0a.0.0.0/8", "010.0.0.0/8", "10.0.0.0/08x", "::/0"],
)
def test_malformed_subnets_are_refused_naming_the_field(subnet: str) -> None:
    msg = pb.SliceRequest(src="a", dst="b", bandwidth_mbps=1, subnet=subnet)
    with pytest.raises(InvalidArgument) as info:
        codec.request_from_pb(msg)
    assert info.value.field == "request.subnet"


@pytest.mark.parametrize(
    ("subnet", "what"),
    [
        ("224.0.0.0/8", "multicast"),
        ("239.1.0.0/16", "multicast"),
        ("127.0.0.0/8", "loopback"),
        ("127.5.0.0/24", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("0.0.0.0/8", "this network"),
        ("240.0.0.0/8", "reserved"),
        ("0.10.0.0/16", "this network"),
    ],
)
def test_subnets_that_are_not_unicast_are_refused_saying_what_to_give(subnet: str, what: str) -> None:
    msg = pb.SliceRequest(src="a", dst="b", bandwidth_mbps=1, subnet=subnet)
    with pytest.raises(InvalidArgument, match=what) as info:
        codec.request_from_pb(msg)
    assert info.value.field == "request.subnet" and "unicast range" in str(info.value)


@pytest.mark.parametrize("subnet", ["10.0.0.0/8", "192.168.4.0/24", "100.64.0.0/10", "198.51.100.0/24"])
def test_unicast_subnets_are_accepted(subnet: str) -> None:
    assert codec.request_from_pb(pb.SliceRequest(src="a", dst="b", bandwidth_mbps=1, subnet=subnet)).subnet == subnet


@pytest.mark.parametrize(("first", "last"), [(0, 5), (5, 4), (1, 16_777_216)])
def test_malformed_label_ranges_are_refused_naming_the_range(first: int, last: int) -> None:
    msg = pb.SliceRequest(src="a", dst="b", bandwidth_mbps=1)
    msg.port_constraints.add(port="b", labels=[pb.LabelRange(first=10, last=20), pb.LabelRange(first=first, last=last)])
    with pytest.raises(InvalidArgument) as info:
        codec.request_from_pb(msg)
    assert info.value.field == "request.port_constraints[0].labels[1]"


def test_too_many_label_ranges_and_ids_outside_the_syntax_are_refused() -> None:
    msg = pb.SliceRequest(src="a", dst="b", bandwidth_mbps=1)
    msg.port_constraints.add(port="b", labels=[pb.LabelRange(first=i, last=i) for i in range(1, 100)])
    with pytest.raises(InvalidArgument) as info:
        codec.request_from_pb(msg)
    assert info.value.field == "request.port_constraints[0].labels"
    for bad in ("-a", "a/b", "a;b", "é", "a\u202eb"):
        with pytest.raises(InvalidArgument) as info:
            codec.check_id(bad, "request_id")
        assert info.value.field == "request_id"
    codec.check_id("T-abc123.0.1", "request_id")
    codec.check_id("three_tier:s1", "request_id")


def test_out_of_range_number_says_what_is_allowed() -> None:
    msg = pb.SliceRequest(src="a", dst="b", bandwidth_mbps=1, latency_budget_ms=1e303)
    with pytest.raises(InvalidArgument, match=r"must be absent \(no budget\) or a number of ms from 0 to 3\.6e\+06"):
        codec.request_from_pb(msg)


def test_largest_allowed_numbers_are_accepted() -> None:
    msg = pb.SliceRequest(
        src="a",
        dst="b",
        bandwidth_mbps=codec.MAX_BANDWIDTH_MBPS,
        latency_budget_ms=codec.MAX_LATENCY_BUDGET_MS,
        max_price_per_hour=codec.MAX_PRICE_PER_HOUR,
    )
    req = codec.request_from_pb(msg)
    assert (req.latency_budget_ms, req.max_price_per_hour) == (codec.MAX_LATENCY_BUDGET_MS, codec.MAX_PRICE_PER_HOUR)


def test_a_page_token_round_trips_and_anything_else_is_refused_naming_the_field() -> None:
    token = codec.page_token_to_text((1_800_000_000.25, "L-0123456789ab"))
    assert codec.page_token_from_text(token, "page_token") == (1_800_000_000.25, "L-0123456789ab")
    assert codec.page_token_from_text("", "page_token") is None
    import base64

    forged = [base64.urlsafe_b64encode(x).decode() for x in (b"[1, 2]", b'["x", "a"]', b'[1e999, "a"]', b"{}")]
    for bad in ["nonsense", "@@@", "x" * 2000, *forged]:
        with pytest.raises(InvalidArgument, match="not a token from a previous List answer") as info:
            codec.page_token_from_text(bad, "page_token")
        assert info.value.field == "page_token"


@pytest.mark.parametrize("budget", [None, 0.0, 12.5, 3.6e6])
def test_no_latency_budget_and_a_zero_budget_stay_apart_on_the_wire_and_in_the_store(budget: float | None) -> None:

    req = SliceRequest(src=TerminalId("A.ep"), dst=TerminalId("B.ep"), bandwidth_mbps=10, latency_budget_ms=budget)
    msg = codec.request_to_pb(req)

    assert msg.HasField("latency_budget_ms") is (budget is not None)
    assert codec.request_from_pb(pb.SliceRequest.FromString(msg.SerializeToString())).latency_budget_ms == budget
    assert request_from_dict(request_to_dict(req)).latency_budget_ms == budget


def test_a_stored_request_from_before_optional_budgets_keeps_its_meaning_and_digest() -> None:

    old = {"name": "", "src": "A.ep", "dst": "B.ep", "bandwidth_mbps": 10, "latency_budget_ms": 0.0}
    old |= {"chain": [], "subnet": "10.0.0.0/16", "port_constraints": []}

    assert request_from_dict(old).latency_budget_ms is None
    assert request_to_dict(request_from_dict(old)) == old


def _answer_from_below() -> pb.Slice:
    """What a mid-level SP answers: two segments, one with nested leaves, labels, a subnet, functions."""
    msg = pb.Slice(id="M1-1", sp_id="M1")
    m = msg.segments.add(domain="L1", sp_id="L1", ingress="L1.ep", egress="L1.to-L2", latency_share_ms=2.25)
    m.labels.add(port="L1.to-L2", label=1500)
    m.functions.extend(["fw", "nat"])
    m.state = pb.SLICE_STATE_COMMITTED
    deep = msg.segments.add(domain="X2", sp_id="X2", ingress="X2.to-L1", egress="X2.ep", subnet="10.1.0.0/24")
    deep.children.add(domain="X2a", sp_id="X2", local=True, child_ref="k.0.0", latency_share_ms=0.0)
    deep.children.add(domain="X2b", sp_id="X2", local=True, state=pb.SLICE_STATE_ACTIVE)
    return msg


def test_a_segment_nesting_an_answer_from_below_encodes_alike_from_the_answer_and_from_the_store(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The answer's segments are copied as they came (no JSON round trip); a record read back from the
    store (its detail as JSON dicts only) encodes to the same message."""
    below = _answer_from_below()
    detail = codec.segments_detail(below)
    assert codec.segments_detail(below) is detail  # once per answer
    seg = SegmentRecord(
        index=0,
        domain="M1",
        local=False,
        sp_id="M1",
        request=SliceRequest(src=TerminalId("L1.ep"), dst=TerminalId("X2.ep"), bandwidth_mbps=5),
        transit_latency_ms=1.0,
        latency_share_ms=3.0,
        state=SliceState.COMMITTED,
        order_key="s.0.0",
        handle="M1-1",
        detail=detail,
    )
    with monkeypatch.context() as m:
        m.setattr(codec.json_format, "ParseDict", lambda *_: pytest.fail("parsed the JSON again"))
        fast = codec.segment_to_pb(seg)
    stored = replace(seg, detail=tuple(json.loads(json.dumps([dict(d) for d in detail]))))
    assert codec.segment_to_pb(stored) == fast
    assert list(fast.children) == list(below.segments)

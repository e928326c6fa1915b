"""The one-call order over real brokers (issue 17): one Reserve that commits and activates, three levels deep.

The federation: ``T`` over ``M1`` (leaves ``L1``, ``L2``) and ``M2`` (``L3``, ``L4``), each SP its own
process. Round trips are counted from every broker's ``/metrics`` (calls answered), not computed.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import pytest

from bench.rpcs import METRICS, answered, lifecycle_calls
from broker.api.child_agent import ChildBrokerAgent
from broker.security.accounts import Role
from domain_agents.base import NotActivated
from fedbroker.v1 import northsouth_pb2 as pb
from fedbroker.v1 import northsouth_pb2_grpc as pb_grpc
from scenarios.processes import Fleet
from slicing.errors import ErrorCode
from tests.integration.federation import Federation, leaf_domain, line_peers, op, reserve, slice_request

pytestmark = pytest.mark.integration

ORDER = pb.RESERVE_THEN_COMMIT_AND_ACTIVATE
SPS = ("T", "M1", "M2", "L1", "L2", "L3", "L4")


async def three_levels(fed: Federation, *, faults: bool = False, **settings: Any) -> None:
    """Start the federation, every SP serving metrics; with ``faults`` each gets a faults file to arm."""
    rules: list[dict[str, Any]] | None = [] if faults else None
    leaves = ["L1", "L2", "L3", "L4"]
    for i, sp in enumerate(leaves):
        domain = leaf_domain(sp, line_peers(leaves, i))
        await fed.fleet.start(sp, {"domains": [domain], **METRICS, **settings}, faults=rules)
    for mid, lows in (("M1", leaves[:2]), ("M2", leaves[2:])):
        await fed.fleet.start(mid, {**METRICS, **settings}, lows, faults=rules)
    await fed.fleet.start("T", {**METRICS, **settings}, ["M1", "M2"], faults=rules)
    await fed.wait_terminals("T", ["L1.ep", "L4.ep"])


async def order(sp: Any, request_id: str, req: pb.SliceRequest, timeout: float = 30) -> pb.Slice:
    """The one-call order at ``sp``."""
    reply: pb.Slice = await sp.slices.Reserve(
        pb.ReserveRequest(request_id=request_id, request=req, hold_time_s=60, then=ORDER), timeout=timeout
    )
    return reply


async def states(fed: Federation) -> dict[str, list[str]]:
    """The state of every slice each SP holds, read at the SP itself (its operator's List)."""
    out = {}
    for sp in SPS:
        listed = await fed.sps[sp].operator_slices.List(pb.ListRequest(), timeout=5)
        out[sp] = sorted(pb.SliceState.Name(s.state).removeprefix("SLICE_STATE_") for s in listed.slices)
    return out


async def test_a_one_call_order_is_active_at_every_level_in_fewer_round_trips_than_three_calls(
    fed: Federation,
) -> None:
    await three_levels(fed)
    top = fed.sps["T"]
    req = slice_request("L1.ep", "L4.ep", 10, subnet="10.71.0.0/24")

    before = await answered(fed.fleet)
    held = await reserve(top, "classic", req)
    await op(top, "Commit", held.id)
    classic = await op(top, "Activate", held.id)
    mid = await answered(fed.fleet)
    ordered = await order(top, "one-call", slice_request("L1.ep", "L4.ep", 10, subnet="10.72.0.0/24"))
    after = await answered(fed.fleet)

    assert classic.state == pb.SLICE_STATE_ACTIVE and ordered.state == pb.SLICE_STATE_ACTIVE
    assert await states(fed) == {sp: ["ACTIVE", "ACTIVE"] for sp in SPS}
    three_calls, one_call = lifecycle_calls(before, mid), lifecycle_calls(mid, after)
    # Classic: 3 calls from the customer, 3 from T to each mid, 3 from each mid to each of its 2 leaves.
    assert three_calls == Counter({"Reserve": 7, "Commit": 7, "Activate": 7}), three_calls
    # One call: the customer's Reserve; below it a Reserve and one CommitAndActivate per lower SP.
    assert one_call == Counter({"Reserve": 7, "CommitAndActivate": 6}), one_call
    assert sum(one_call.values()) == 13 < sum(three_calls.values()) == 21

    # A repeat answers the same slice and sends nothing down.
    again = await order(top, "one-call", slice_request("L1.ep", "L4.ep", 10, subnet="10.72.0.0/24"))
    assert again.id == ordered.id and again.state == pb.SLICE_STATE_ACTIVE
    assert lifecycle_calls(after, await answered(fed.fleet)) == Counter({"Reserve": 1})
    # The same request id with a plain Reserve is another request: refused, as today.
    with pytest.raises(grpc.aio.AioRpcError) as reused:
        await reserve(top, "one-call", slice_request("L1.ep", "L4.ep", 10, subnet="10.72.0.0/24"))
    assert reused.value.code() is grpc.StatusCode.ALREADY_EXISTS

    # A stock client may call CommitAndActivate itself on a held slice.
    held = await reserve(top, "by-hand", slice_request("L1.ep", "L4.ep", 10, subnet="10.73.0.0/24"))
    both = await top.slices.CommitAndActivate(pb.SliceRef(slice_id=held.id), timeout=30)
    assert both.slice.state == pb.SLICE_STATE_ACTIVE and not both.HasField("activation_error")

    for sid in (classic.id, ordered.id, held.id):
        await op(top, "Terminate", sid)
    await fed.assert_idle()


async def test_a_leaf_refusing_activation_leaves_the_order_committed_at_every_level(fed: Federation) -> None:
    await three_levels(fed, faults=True)
    top = fed.sps["T"]
    # L4 commits its domain's segment, then refuses to activate it, definitively.
    rule = {"id": "refuse", "point": "order.task.after", "action": "fail", "code": "FAILED_PRECONDITION"}
    fed.fleet.write_faults("L4", [rule])
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await order(top, "o-refused", slice_request("L1.ep", "L4.ep", 10))
    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "activation failed: M2 refused" in (refused.value.details() or "")
    assert "refuse" in fed.sps["L4"].fired()
    # Compensated at every level, as a refused Activate is: the reservation kept, nothing in service.
    assert await states(fed) == {sp: ["COMMITTED"] for sp in SPS}
    at_top = await op(top, "Get", (await top.slices.List(pb.ListRequest(), timeout=5)).slices[0].id)
    # The repeat answers what the order answered; the customer may activate it again, or terminate it.
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await order(top, "o-refused", slice_request("L1.ep", "L4.ep", 10))
    assert again.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert (await op(top, "Activate", at_top.id)).state == pb.SLICE_STATE_ACTIVE
    await op(top, "Terminate", at_top.id)
    await fed.assert_idle()


async def test_a_crash_of_the_top_between_held_everywhere_and_the_commit_releases_everything(
    fed: Federation,
) -> None:
    await three_levels(fed, faults=True, reconcile_interval_s=0.2)
    top = fed.sps["T"]
    fed.fleet.write_faults("T", [{"id": "die", "point": "order.start", "action": "crash"}])
    with pytest.raises(grpc.aio.AioRpcError) as lost:
        await order(top, "o-crash", slice_request("L1.ep", "L4.ep", 10))
    assert lost.value.code() is grpc.StatusCode.UNAVAILABLE
    assert "die" in top.fired()
    for sp in SPS[1:]:  # T is down; below it the slice is held, waiting for a decision that will not come
        listed = await fed.sps[sp].operator_slices.List(pb.ListRequest(), timeout=5)
        assert [s.state for s in listed.slices] == [pb.SLICE_STATE_HELD], sp
    top = await fed.restart("T")
    await fed.wait_idle(*SPS, within_s=15)  # presumed abort at the restart: released at every level
    with pytest.raises(grpc.aio.AioRpcError) as again:  # the repeat tells why, and holds nothing
        await order(top, "o-crash", slice_request("L1.ep", "L4.ep", 10))
    assert again.value.code() is grpc.StatusCode.UNAVAILABLE and "restarted" in (again.value.details() or "")
    await fed.assert_idle()


async def test_a_client_that_goes_away_mid_order_and_a_repeat_in_flight_end_in_one_active_slice(
    fed: Federation,
) -> None:
    await three_levels(fed, faults=True)
    top = fed.sps["T"]
    # L4 takes 2 s to commit and activate: the order is in flight that long.
    fed.fleet.write_faults("L4", [{"id": "slow", "point": "order.task.before", "action": "hang", "hang_s": 2}])
    req = slice_request("L1.ep", "L4.ep", 10)
    with pytest.raises(grpc.aio.AioRpcError) as gone:  # the client gives up after 0.5 s
        await order(top, "o-gone", req, timeout=0.5)
    assert gone.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    repeat = await order(top, "o-gone", req, timeout=20)  # waits for the order in flight, then answers it
    assert repeat.state == pb.SLICE_STATE_ACTIVE and "slow" in fed.sps["L4"].fired()
    assert await states(fed) == {sp: ["ACTIVE"] for sp in SPS}  # one slice, everywhere
    # Two concurrent repeats while nothing is in flight any more: both answer the same slice.
    a, b = await asyncio.gather(order(top, "o-gone", req), order(top, "o-gone", req))
    assert a.id == b.id == repeat.id
    await op(top, "Terminate", repeat.id)
    await fed.assert_idle()


class _OldLowerSp(pb_grpc.SlicesServicer):
    """A lower SP from before CommitAndActivate: Commit and Activate only (the base class answers UNIMPLEMENTED)."""

    def __init__(self, refuse_activation: bool = False) -> None:
        self.calls: list[str] = []
        self.refuse_activation = refuse_activation

    async def Commit(self, request: pb.SliceRef, context: grpc.aio.ServicerContext) -> pb.Slice:
        self.calls.append("Commit")
        return pb.Slice(id=request.slice_id, state=pb.SLICE_STATE_COMMITTED)

    async def Activate(self, request: pb.SliceRef, context: grpc.aio.ServicerContext) -> pb.Slice:
        self.calls.append("Activate")
        if self.refuse_activation:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "[old] no room to activate")
        return pb.Slice(id=request.slice_id, state=pb.SLICE_STATE_ACTIVE)


class _NewLowerSp(_OldLowerSp):
    """A lower SP that commits, then reports its refused activation in the answer."""

    async def CommitAndActivate(
        self, request: pb.SliceRef, context: grpc.aio.ServicerContext
    ) -> pb.CommitAndActivateResponse:
        self.calls.append("CommitAndActivate")
        reply = pb.CommitAndActivateResponse(slice=pb.Slice(id=request.slice_id, state=pb.SLICE_STATE_COMMITTED))
        reply.activation_error.CopyFrom(pb.ErrorDetail(code="FAILED_PRECONDITION", message="no room to activate"))
        return reply


async def _serve(servicer: pb_grpc.SlicesServicer) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    pb_grpc.add_SlicesServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


async def test_an_upper_sends_commit_then_activate_to_a_lower_sp_that_does_not_know_the_one_step() -> None:
    old = _OldLowerSp()
    server, address = await _serve(old)
    agent = ChildBrokerAgent("OLD", address, requester="T", timeout_s=5)
    try:
        await agent.commit_and_activate("s1")
        await agent.commit_and_activate("s2")  # UNIMPLEMENTED is asked once, then remembered
        assert old.calls == ["Commit", "Activate", "Commit", "Activate"]
        old.refuse_activation = True
        with pytest.raises(NotActivated) as refused:  # committed, and the refusal told apart from the commit
            await agent.commit_and_activate("s3")
        assert refused.value.error.code is ErrorCode.FAILED_PRECONDITION
    finally:
        await agent.close()
        await server.stop(None)


async def test_a_refused_activation_in_the_one_step_answer_comes_back_as_not_activated() -> None:
    new = _NewLowerSp()
    server, address = await _serve(new)
    agent = ChildBrokerAgent("NEW", address, requester="T", timeout_s=5)
    try:
        with pytest.raises(NotActivated) as refused:
            await agent.commit_and_activate("s1")
        err = refused.value.error
        assert err.code is ErrorCode.FAILED_PRECONDITION and err.domain == "NEW" and "no room" in str(err)
        assert new.calls == ["CommitAndActivate"]  # one round trip
    finally:
        await agent.close()
        await server.stop(None)


async def test_commit_and_activate_keeps_tenancy_and_needs_a_token(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    try:
        for name in ("alice", "bob"):
            fleet.grant("L", name, Role.CUSTOMER)
        await fleet.start("L", {"domains": [leaf_domain("L", {"X": "100-199"})]})
        alice = pb_grpc.SlicesStub(fleet.channel("L", "alice"))
        bob = pb_grpc.SlicesStub(fleet.channel("L", "bob"))
        anonymous = pb_grpc.SlicesStub(fleet.channel("L", "alice", authenticate=False))
        req = slice_request("L.ep", "L.to-X", 10)
        held = await alice.Reserve(pb.ReserveRequest(request_id="a-1", request=req), timeout=10)
        missing = pb.SliceRef(slice_id="L-000000000000")
        with pytest.raises(grpc.aio.AioRpcError) as nobody:
            await bob.CommitAndActivate(missing, timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as not_his:  # alice's slice is as absent to bob
            await bob.CommitAndActivate(pb.SliceRef(slice_id=held.id), timeout=5)
        assert not_his.value.code() is nobody.value.code() is grpc.StatusCode.NOT_FOUND
        assert (not_his.value.details() or "").replace(held.id, "ID") == (nobody.value.details() or "").replace(
            "L-000000000000", "ID"
        )
        with pytest.raises(grpc.aio.AioRpcError) as no_token:
            await anonymous.CommitAndActivate(pb.SliceRef(slice_id=held.id), timeout=5)
        assert no_token.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert (await fleet["L"].operator_slices.Get(pb.SliceRef(slice_id=held.id), timeout=5)).state == (
            pb.SLICE_STATE_HELD
        )
        # bob's order under alice's request id is bob's own new slice, not alice's.
        own = await bob.Reserve(pb.ReserveRequest(request_id="a-1", request=req, then=ORDER), timeout=10)
        assert own.id != held.id and own.state == pb.SLICE_STATE_ACTIVE
        both = await alice.CommitAndActivate(pb.SliceRef(slice_id=held.id), timeout=10)
        assert both.slice.state == pb.SLICE_STATE_ACTIVE
    finally:
        await fleet.stop_all()

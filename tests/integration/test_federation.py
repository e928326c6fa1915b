"""Brokers as separate processes over real gRPC: recursion, two-phase commit, expiry, restart, errors."""

from __future__ import annotations

import asyncio
import signal

import grpc
import pytest

from broker.api.codec import leaf_sps
from fedbroker.v1 import northsouth_pb2 as pb
from tests.integration.federation import Federation, leaf_domain, line_peers, op, reserve, slice_request

pytestmark = pytest.mark.integration

HELD = pb.SLICE_STATE_HELD
COMMITTED = pb.SLICE_STATE_COMMITTED
ACTIVE = pb.SLICE_STATE_ACTIVE
TERMINATED = pb.SLICE_STATE_TERMINATED
EXPIRED = pb.SLICE_STATE_EXPIRED
FAILED = pb.SLICE_STATE_FAILED


async def chain_of_leaves(fed: Federation, names: list[str], **leaf_kw: object) -> None:
    """Leaves L1–L2–…–Ln in a line, each with overlapping VNI ranges toward its neighbours."""
    for i, sp in enumerate(names):
        peers = line_peers(names, i)
        functions = leaf_kw.get("functions", {}).get(sp) if isinstance(leaf_kw.get("functions"), dict) else None
        await fed.start(sp, domains=[leaf_domain(sp, peers, functions=functions)])


def labels_of(segments: list[pb.Segment] | object) -> dict[str, int]:
    out: dict[str, int] = {}
    for seg in segments:  # type: ignore[attr-defined]
        out.update({pl.port: pl.label for pl in seg.labels})
        out.update(labels_of(seg.children))
    return out


async def test_two_level_slice_is_held_committed_activated_and_terminated_across_three_leaves(
    fed: Federation,
) -> None:
    await chain_of_leaves(fed, ["L1", "L2", "L3"])
    top = await fed.start("T", lowers=["L1", "L2", "L3"])
    await fed.wait_terminals("T", ["L1.ep", "L3.ep"])

    held = await reserve(top, "r1", slice_request("L1.ep", "L3.ep", 500))
    assert held.state == HELD
    assert [s.domain for s in held.segments] == ["L1", "L2", "L3"]
    assert leaf_sps(held.segments) == ["L1", "L2", "L3"]
    assert held.hold_expires_at.seconds > 0

    committed = await op(top, "Commit", held.id)
    assert committed.state == COMMITTED
    active = await op(top, "Activate", held.id)
    assert active.state == ACTIVE
    assert {e.endpoint for e in active.addresses} == {"L1.ep", "L3.ep"}

    # Both sides of every inter-domain link carry the same VNI, inside both sides' ranges.
    labels = labels_of(active.segments)
    for a, b in (("L1.to-L2", "L2.to-L1"), ("L2.to-L3", "L3.to-L2")):
        assert labels[a] == labels[b], (a, b, labels)
        assert 1500 <= labels[a] <= 1999
    top_usage = await fed.usage("T")
    assert top_usage.wim_services == 2 and top_usage.wim_bandwidth_mbps == 1000
    for leaf in ("L1", "L2", "L3"):
        leaf_usage = await fed.usage(leaf)
        assert leaf_usage.holding_slices == 1
        assert leaf_usage.domains[0].bandwidth_mbps > 0

    read = await op(top, "Get", held.id)
    assert read.state == ACTIVE and [s.state for s in read.segments] == [ACTIVE] * 3

    done = await op(top, "Terminate", held.id)
    assert done.state == TERMINATED
    await fed.assert_idle()


async def test_three_level_recursion_reaches_leaves_under_both_mid_level_sps(fed: Federation) -> None:
    await chain_of_leaves(fed, ["L1", "L2", "L3", "L4"])
    await fed.start("M1", lowers=["L1", "L2"])
    await fed.start("M2", lowers=["L3", "L4"])
    top = await fed.start("T", lowers=["M1", "M2"])
    own = await fed.wait_terminals("T", ["L1.ep", "L4.ep"])
    # M1's internal link L1–L2 is hidden from T; the L2–L3 link leaving M1's subtree is not.
    ports = {p.id for p in own.ports}
    assert "L1.to-L2" not in ports and "L2.to-L3" not in ports

    held = await reserve(top, "deep", slice_request("L1.ep", "L4.ep", 200))
    assert [s.domain for s in held.segments] == ["M1", "M2"]
    assert leaf_sps(held.segments) == ["L1", "L2", "L3", "L4"]
    await op(top, "Commit", held.id)
    active = await op(top, "Activate", held.id)
    labels = labels_of(active.segments)
    assert labels["L2.to-L3"] == labels["L3.to-L2"]  # stitched by T, chosen by leaves two levels down
    mid = await fed.sps["M1"].operator_slices.List(pb.ListRequest(), timeout=5)
    assert len(mid.slices) == 1 and mid.slices[0].state == ACTIVE

    await op(top, "Terminate", held.id)
    await fed.assert_idle()


async def test_reserve_aborts_every_held_lower_sp_when_one_refuses(fed: Federation) -> None:
    # L2 refuses every reservation (fault injection): what L1 and L3 held meanwhile is released.
    await fed.start("L1", domains=[leaf_domain("L1", {"L2": "1000-1999"})])
    l2 = leaf_domain("L2", {"L1": "1000-1999", "L3": "1500-2999"})
    l2["faults"] = {"fail_at": "reserve", "latency_s": 0.2}  # slow too, so L1 and L3 hold first
    await fed.start("L2", domains=[l2])
    await fed.start("L3", domains=[leaf_domain("L3", {"L2": "1000-1999"})])
    top = await fed.start("T", lowers=["L1", "L2", "L3"])
    await fed.wait_terminals("T", ["L1.ep", "L3.ep"])

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await reserve(top, "fw-2", slice_request("L1.ep", "L3.ep", 100))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "[L2]" in (info.value.details() or "") and "injected failure at reserve" in (info.value.details() or "")
    failed = await top.slices.Get(pb.SliceRef(request_id="fw-2"))
    assert failed.state == pb.SLICE_STATE_FAILED
    await fed.assert_idle()


async def test_capacity_taken_below_is_seen_at_the_top_before_planning(fed: Federation) -> None:
    # Only L2 hosts a firewall, with one slot: once taken, the top's plan fails naming the chain.
    await chain_of_leaves(fed, ["L1", "L2", "L3"], functions={"L2": {"firewall": 1}})
    top = await fed.start("T", lowers=["L1", "L2", "L3"])
    await fed.wait_terminals("T", ["L1.ep", "L3.ep"])
    first = await reserve(top, "fw-1", slice_request("L1.ep", "L3.ep", 100, chain=["firewall"]))
    assert first.state == HELD
    for _ in range(100):  # bounded: the note with the slot taken climbs within 5 s
        cat = await top.caps.GetCatalog(pb.GetCatalogRequest(), timeout=5)
        if all(f.slots == 0 for f in cat.own.functions if f.type == "firewall"):
            break
        await asyncio.sleep(0.05)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await reserve(top, "fw-2", slice_request("L1.ep", "L3.ep", 100, chain=["firewall"]))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "chain[0]" in (info.value.details() or "") and "firewall" in (info.value.details() or "")
    await op(top, "Abort", first.id)
    await fed.assert_idle()


async def test_held_reservation_is_released_everywhere_when_its_hold_time_passes(fed: Federation) -> None:
    await chain_of_leaves(fed, ["L1", "L2"])
    top = await fed.start("T", lowers=["L1", "L2"])
    await fed.wait_terminals("T", ["L1.ep", "L2.ep"])
    held = await reserve(top, "short", slice_request("L1.ep", "L2.ep"), hold_time_s=1)
    assert held.state == HELD
    for _ in range(60):  # bounded: 3 s
        got = await op(top, "Get", held.id)
        if got.state == EXPIRED:
            break
        await asyncio.sleep(0.05)
    assert got.state == EXPIRED, got
    assert "hold time" in got.reason
    await fed.assert_idle()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await op(top, "Commit", held.id)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_reserve_is_idempotent_per_request_id_and_refuses_a_reused_id(fed: Federation) -> None:
    await chain_of_leaves(fed, ["L1", "L2"])
    top = await fed.start("T", lowers=["L1", "L2"])
    await fed.wait_terminals("T", ["L1.ep", "L2.ep"])
    req = slice_request("L1.ep", "L2.ep", 300)
    first, second = await asyncio.gather(reserve(top, "same", req), reserve(top, "same", req))
    assert first.id == second.id
    again = await reserve(top, "same", req)
    assert again.id == first.id
    listed = await top.slices.List(pb.ListRequest(), timeout=5)
    assert len(listed.slices) == 1
    assert (await fed.usage("L1")).holding_slices == 1

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await reserve(top, "same", slice_request("L1.ep", "L2.ep", 301))
    assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "request_id" in (info.value.details() or "")


async def test_restart_after_kill_keeps_committed_slices_and_releases_lapsed_holds(fed: Federation) -> None:
    await chain_of_leaves(fed, ["L1", "L2"])
    top = await fed.start("T", lowers=["L1", "L2"])
    await fed.wait_terminals("T", ["L1.ep", "L2.ep"])
    kept = await reserve(top, "kept", slice_request("L1.ep", "L2.ep", 400))
    await op(top, "Commit", kept.id)
    await op(top, "Activate", kept.id)
    lapsing = await reserve(top, "lapsing", slice_request("L1.ep", "L2.ep", 100), hold_time_s=1)
    leaf_before = await fed.usage("L1")

    fed.kill("T")
    fed.kill("L1")
    await asyncio.sleep(1.2)  # the 1 s hold passes while both are down
    await fed.restart("L1")
    top = await fed.restart("T")

    back = await op(top, "Get", kept.id)
    assert back.state == ACTIVE
    assert [s.domain for s in back.segments] == ["L1", "L2"]
    assert all(s.child_ref for s in back.segments)
    assert (await fed.usage("T")).wim_services == 1
    lapsed = await op(top, "Get", lapsing.id)
    assert lapsed.state == EXPIRED
    # L1 rebuilt its holdings of the committed slice from its store and released the lapsed hold.
    leaf_after = await fed.usage("L1")
    assert leaf_after.holding_slices == 1
    assert leaf_after.domains[0].bandwidth_mbps == leaf_before.domains[0].bandwidth_mbps - 100

    await fed.wait_terminals("T", ["L1.ep"])
    await op(top, "Terminate", kept.id)
    await fed.assert_idle()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"bandwidth_mbps": 0}, "request.bandwidth_mbps"),
        ({"src": "nowhere.ep"}, "request.src"),
        ({"subnet": "10.0.0.0/33"}, "request.subnet"),
        ({"dst": "L1.ep"}, "request.dst"),
        ({"chain": [""]}, "request.chain[0]"),
    ],
)
async def test_bad_request_is_refused_with_invalid_argument_naming_the_field(
    fed: Federation, change: dict[str, object], field: str
) -> None:
    await chain_of_leaves(fed, ["L1", "L2"])
    top = await fed.start("T", lowers=["L1", "L2"])
    await fed.wait_terminals("T", ["L1.ep", "L2.ep"])
    req = slice_request("L1.ep", "L2.ep")
    for key, value in change.items():
        if isinstance(value, list):
            getattr(req, key).extend(value)
        else:
            setattr(req, key, value)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await reserve(top, "bad", req)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (info.value.details() or "")
    await fed.assert_idle()


async def test_lower_sp_that_is_down_gives_unavailable_and_nothing_stays_held(fed: Federation) -> None:
    await chain_of_leaves(fed, ["L1", "L2", "L3"])
    top = await fed.start("T", lowers=["L1", "L2", "L3"], lower_timeout_s=2, reconcile_interval_s=0.2)
    await fed.wait_terminals("T", ["L1.ep", "L3.ep"])
    fed.kill("L3")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await reserve(top, "down", slice_request("L1.ep", "L3.ep"))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "L3" in (info.value.details() or "")
    await fed.assert_idle("L1", "L2")
    # T cannot know what L3 holds until it answers: it says so instead of claiming the slice released.
    (pending,) = (await top.operator_slices.List(pb.ListRequest(), timeout=5)).slices
    assert pending.state == pb.SLICE_STATE_ABORTING and "[pending: L3]" in pending.reason
    await fed.restart("L3")
    await fed.wait_idle()
    final = await top.operator_slices.Get(pb.SliceRef(slice_id=pending.id), timeout=5)
    assert final.state == pb.SLICE_STATE_FAILED and "pending" not in final.reason


async def test_lower_sp_that_hangs_gives_deadline_exceeded_and_its_hold_lapses(fed: Federation) -> None:
    await chain_of_leaves(fed, ["L1", "L2"])
    top = await fed.start("T", lowers=["L1", "L2"], lower_timeout_s=1, reconcile_interval_s=0.2)
    await fed.wait_terminals("T", ["L1.ep", "L2.ep"])
    fed.kill("L2", signal.SIGSTOP)  # frozen: accepts connections, answers nothing
    try:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await reserve(top, "hang", slice_request("L1.ep", "L2.ep"), hold_time_s=30)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "L2" in (info.value.details() or "")
        await fed.assert_idle("L1")
        (pending,) = (await top.operator_slices.List(pb.ListRequest(), timeout=5)).slices
        assert pending.state == pb.SLICE_STATE_ABORTING and "[pending: L2]" in pending.reason
    finally:
        fed.kill("L2", signal.SIGCONT)
    # L2 now processes the late Reserve, and T's release by order key: nothing stays held anywhere,
    # long before the 30 s hold would have lapsed.
    await fed.wait_idle(within_s=12)


async def test_stock_reflection_and_health_clients_work_with_a_client_certificate_and_no_token(
    fed: Federation,
) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    leaf = await fed.start("L1", domains=[leaf_domain("L1")])
    creds = fed.fleet.identity("customer").credentials()
    with grpc.secure_channel(leaf.address, creds) as channel:  # verified by address (127.0.0.1 is in its cert)
        services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert {"fedbroker.v1.Slices", "fedbroker.v1.Capabilities", "grpc.health.v1.Health"} <= services
    assert health.status == health_pb2.HealthCheckResponse.SERVING


async def test_watch_streams_state_changes_of_a_slice(fed: Federation) -> None:
    await chain_of_leaves(fed, ["L1", "L2"])
    top = await fed.start("T", lowers=["L1", "L2"])
    await fed.wait_terminals("T", ["L1.ep", "L2.ep"])
    held = await reserve(top, "watched", slice_request("L1.ep", "L2.ep"))
    seen: list[int] = []

    async def watch() -> None:
        async for ev in top.slices.Watch(pb.WatchRequest(slice_id=held.id, initial=True)):
            seen.append(ev.state)
            if ev.state == TERMINATED:
                return

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0.2)
    await op(top, "Commit", held.id)
    await op(top, "Terminate", held.id)
    await asyncio.wait_for(watcher, timeout=10)
    assert seen[0] == HELD
    assert seen[-3:] == [COMMITTED, pb.SLICE_STATE_TERMINATING, TERMINATED]


async def test_a_watch_for_some_states_gets_only_changes_into_those_and_an_upper_asks_for_the_settled_ones(
    fed: Federation,
) -> None:
    """The lower SP sends an upper only where its segments settle; a stock watcher still gets every change."""
    from broker.api.child_agent import WATCHED

    await chain_of_leaves(fed, ["L1", "L2"])
    top = await fed.start("T", lowers=["L1", "L2"])
    await fed.wait_terminals("T", ["L1.ep", "L2.ep"])
    leaf = fed.sps["L1"]
    every = leaf.operator_slices.Watch(pb.WatchRequest())
    settled = leaf.operator_slices.Watch(WATCHED)
    await every.wait_for_connection()
    await settled.wait_for_connection()
    held = await reserve(top, "settled-only", slice_request("L1.ep", "L2.ep"))
    await op(top, "Commit", held.id)
    await op(top, "Activate", held.id)
    await op(top, "Terminate", held.id)

    async def states_until_terminated(stream: object) -> list[int]:
        out: list[int] = []
        async for ev in stream:  # type: ignore[attr-defined]
            out.append(ev.state)
            if ev.state == TERMINATED:
                return out
        return out

    all_states = await asyncio.wait_for(states_until_terminated(every), 10)
    settled_states = await asyncio.wait_for(states_until_terminated(settled), 10)
    every.cancel()
    settled.cancel()
    assert all_states == [
        pb.SLICE_STATE_RESERVING,
        HELD,
        pb.SLICE_STATE_COMMITTING,
        COMMITTED,
        pb.SLICE_STATE_ACTIVATING,
        ACTIVE,
        pb.SLICE_STATE_TERMINATING,
        TERMINATED,
    ]
    assert settled_states == [HELD, COMMITTED, ACTIVE, TERMINATED]
    assert set(WATCHED.states) == {HELD, COMMITTED, ACTIVE, TERMINATED, EXPIRED, pb.SLICE_STATE_ABORTED, FAILED}
    # A state that does not exist is refused, naming the field.
    bad = leaf.operator_slices.Watch(pb.WatchRequest(states=[pb.SLICE_STATE_UNSPECIFIED]))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await bad.read()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "states" in (info.value.details() or "")


async def test_a_broker_told_to_stop_ends_its_streams_cleanly_and_its_upper_follows_the_next_one(
    fed: Federation,
) -> None:
    """SIGTERM ends a Watch and the notes stream with OK: they are closed, not left to be cut off when
    the grace time for operations in flight runs out (which a watcher would see as CANCELLED)."""
    await chain_of_leaves(fed, ["L1", "L2"])
    top = await fed.start("T", lowers=["L1", "L2"])
    await fed.wait_terminals("T", ["L1.ep", "L2.ep"])
    leaf = fed.sps["L1"]
    watch = leaf.operator_slices.Watch(pb.WatchRequest(initial=True))
    notes = leaf.caps.SubscribeNotes(pb.SubscribeNotesRequest())
    assert (await notes.read()).signer == "L1"  # the stream is open: our note came
    await watch.wait_for_connection()
    fed.kill("L1", signal.SIGTERM)
    for stream in (watch, notes):
        async for _ in stream:  # type: ignore[attr-defined]
            pass
        assert await stream.code() == grpc.StatusCode.OK, await stream.details()
    assert await asyncio.to_thread(leaf.proc.wait, 10) == 0  # type: ignore[union-attr]
    await fed.restart("L1")
    for attempt in range(40):  # bounded: T's channel to L1 backs off for a few seconds after the refusal
        try:
            held = await reserve(top, f"after-restart-{attempt}", slice_request("L1.ep", "L2.ep"))
            break
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc.details()
            await asyncio.sleep(0.25)
    assert held.state == HELD


async def test_leaf_down_two_levels_below_gives_unavailable_naming_it_and_nothing_held(fed: Federation) -> None:
    await chain_of_leaves(fed, ["L1", "L2", "L3", "L4"])
    await fed.start("M1", lowers=["L1", "L2"], lower_timeout_s=2, reconcile_interval_s=0.2)
    await fed.start("M2", lowers=["L3", "L4"], lower_timeout_s=2, reconcile_interval_s=0.2)
    top = await fed.start("T", lowers=["M1", "M2"], lower_timeout_s=4, reconcile_interval_s=0.2)
    await fed.wait_terminals("T", ["L1.ep", "L4.ep"])
    fed.kill("L4")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await reserve(top, "deep-down", slice_request("L1.ep", "L4.ep"))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    details = info.value.details() or ""
    assert "[M2]" in details and "[L4]" in details and "did not answer" in details
    await fed.assert_idle("M1", "L1", "L2", "L3")
    # M2 cannot know what L4 holds, so neither can T: both say whom they wait for (T names M2, not L4).
    (at_top,) = (await top.operator_slices.List(pb.ListRequest(), timeout=5)).slices
    assert at_top.state == pb.SLICE_STATE_ABORTING and "[pending: M2]" in at_top.reason
    await fed.restart("L4")
    await fed.wait_idle()


async def test_notes_signed_with_a_key_the_upper_does_not_trust_are_refused_and_unused(fed: Federation) -> None:
    import yaml

    from capability_catalog.signing import generate_key, public_key_to_text

    await chain_of_leaves(fed, ["L1", "L2"])
    top = await fed.start("T", lowers=["L1", "L2"])
    await fed.wait_terminals("T", ["L1.ep", "L2.ep"])
    fed.kill("T")
    config = yaml.safe_load(top.config_path.read_text())
    config["lower_sps"][1]["keys"] = [public_key_to_text(generate_key().public_key())]  # not L2's key
    top.config_path.write_text(yaml.safe_dump(config))
    top = await fed.restart("T")

    await fed.wait_terminals("T", ["L1.ep"])
    for _ in range(100):  # bounded: 5 s
        cat = await top.caps.GetCatalog(pb.GetCatalogRequest(), timeout=5)
        if cat.rejected:
            break
        await asyncio.sleep(0.05)
    assert [(r.sp_id, r.reason) for r in cat.rejected][:1] == [("L2", "BAD_SIGNATURE")]
    assert "L2.ep" not in {e.id for e in cat.own.endpoints}
    assert [n.sp_id for n in cat.lower] == ["L1"]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await reserve(top, "untrusted", slice_request("L1.ep", "L2.ep"))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "L2.ep" in (info.value.details() or "")
    await fed.assert_idle()


async def test_upper_sp_follows_a_lower_sp_again_after_it_restarts(fed: Federation) -> None:
    await chain_of_leaves(fed, ["L1", "L2"])
    top = await fed.start("T", lowers=["L1", "L2"])
    await fed.wait_terminals("T", ["L1.ep", "L2.ep"])
    fed.kill("L1")
    l1 = await fed.restart("L1")
    # An operator edit after the restart reaches T: T re-subscribed on its own (back-off, no polling).
    await l1.caps.SetOffer(pb.SetOfferRequest(domain="L1", offer=pb.OfferPolicy(price_per_mbps_hour=0.75)), timeout=5)
    for _ in range(200):  # bounded: 10 s
        cat = await top.caps.GetCatalog(pb.GetCatalogRequest(), timeout=5)
        held = {n.sp_id: n for n in cat.lower}
        if "L1" in held and held["L1"].HasField("price_per_mbps_hour"):
            break
        await asyncio.sleep(0.05)
    assert held["L1"].price_per_mbps_hour == 0.75
    assert cat.own.price_per_mbps_hour == 0.75  # and T's own abstract note follows
    # The edit survives L1's next restart: it is persisted in L1's data directory.
    fed.kill("L1")
    l1 = await fed.restart("L1")
    again = await l1.caps.GetCatalog(pb.GetCatalogRequest(), timeout=5)
    assert again.lower[0].price_per_mbps_hour == 0.75


async def test_an_upper_sp_logs_when_a_lower_sp_goes_away_and_when_it_comes_back(fed: Federation) -> None:
    await fed.start("L1", domains=[leaf_domain("L1", {"L2": "1000-1999"})])
    top = await fed.start("T", lowers=["L1"])
    await fed.wait_terminals("T", ["L1.ep"])

    async def logged(text: str) -> None:
        for _ in range(150):  # the channel notices within its keepalive and back-off: bounded wait
            if text in top.log_path.read_text():
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"{text!r} not in T's log:\n{top.log_tail()}")

    fed.kill("L1")
    await logged("lower SP L1 at ")
    await logged("went away")
    await fed.restart("L1")
    await logged("is back")

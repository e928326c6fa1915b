"""Deactivate and the compensation of a refused Activate, over real broker processes (issue 19).

The federation is ``scenarios/sweep.yaml`` (T over M1 {L1, L2} and M2 {L3, L4}; every SP its own
process). Every test reads the slice back at every SP (``List`` and ``GetUsage`` through
``scenarios.convergence``, and each slice's segments), never only the top's answer: after a refused
activation every SP holds the slice COMMITTED, no segment anywhere is active, no WIM stitch is left,
and the reservation is still there to be activated again or terminated.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest

from broker.core.faults import CRASH_EXIT_STATUS
from fedbroker.v1 import northsouth_pb2 as pb
from scenarios.convergence import Outcome, read_everywhere, state_name, wait_settled
from scenarios.model import load_scenario
from scenarios.sweep import SWEEP_YAML, SweepFederation

pytestmark = pytest.mark.integration

SPS = ("T", "M1", "M2", "L1", "L2", "L3", "L4")
TIMEOUT_S = 10.0


def refuse(point: str = "activate.task.before", domain: str = "L2", occurrence: int = 0) -> dict[str, Any]:
    """A rule that makes the SP refuse definitively (not "try again") at ``point``."""
    return {
        "id": f"refuse-{point}-{domain}",
        "point": point,
        "action": "fail",
        "code": "FAILED_PRECONDITION",
        "domain": domain,
        "occurrence": occurrence,
    }


async def reserve_commit(fed: SweepFederation, request_id: str) -> str:
    fleet = fed.fleet
    assert fleet is not None
    top = fleet["T"].slices
    held = await top.Reserve(
        pb.ReserveRequest(request_id=request_id, request=fed.request(), hold_time_s=4), timeout=TIMEOUT_S
    )
    committed = await top.Commit(pb.SliceRef(slice_id=held.id), timeout=TIMEOUT_S)
    assert state_name(committed.state) == "COMMITTED"
    return str(held.id)


async def settled(fed: SweepFederation, slice_id: str, want: Outcome, timeout_s: float = 15.0) -> dict[str, list[str]]:
    """Wait until every SP holds the slice's tree in ``want``; then check each slice and segment there.

    Returns the tree's slice ids per SP. For COMMITTED: every slice and every segment of it (local
    domains included) is COMMITTED, and no SP keeps a WIM stitch; for ACTIVE: all ACTIVE.
    """
    fleet = fed.fleet
    assert fleet is not None
    got = await wait_settled(fleet, fed.scenario.lowers, "T", slice_id=slice_id, timeout_s=timeout_s, want={want})
    assert got.reached, got.verdict.describe()
    tree = {sp: [v.split(" ")[0] for v in vals] for sp, vals in got.verdict.states.items()}
    assert all(len(tree[sp]) == 1 for sp in SPS), tree  # the path crosses all seven SPs
    readings = await read_everywhere(fleet, SPS)
    name = want.value.upper()
    for sp in SPS:
        reading = readings[sp]
        assert not reading.error, reading.error
        (mine,) = [s for s in reading.slices if s.id == tree[sp][0]]
        assert state_name(mine.state) == name, f"{sp}: {mine.id} is {state_name(mine.state)}"
        assert [state_name(seg.state) for seg in mine.segments] == [name] * len(mine.segments), (sp, mine.segments)
        assert reading.usage is not None and reading.usage.holding_slices == 1
        if want is Outcome.COMMITTED:
            assert reading.usage.wim_services == 0, f"{sp} keeps {reading.usage.wim_services} WIM stitches"
        if sp.startswith("L"):  # the reservation is still held at every leaf
            assert sum(d.bandwidth_mbps for d in reading.usage.domains) == fed.request().bandwidth_mbps
    return tree


async def released(fed: SweepFederation, slice_id: str) -> None:
    fleet = fed.fleet
    assert fleet is not None
    got = await wait_settled(
        fleet, fed.scenario.lowers, "T", slice_id=slice_id, timeout_s=15.0, want={Outcome.RELEASED}, exclusive=True
    )
    assert got.reached, got.verdict.describe()
    assert await fleet.holdings() == {}


async def test_a_leaf_refusing_activation_leaves_every_sp_committed_then_activate_and_terminate_work(
    tmp_path: Path,
) -> None:
    fed = SweepFederation(load_scenario(SWEEP_YAML), tmp_path)
    try:
        fleet = await fed.start()
        slice_id = await reserve_commit(fed, "refuse-1")
        fleet.write_faults("L2", [refuse()])
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await fleet["T"].slices.Activate(pb.SliceRef(slice_id=slice_id), timeout=TIMEOUT_S)
        assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION, info.value.details()
        said = info.value.details() or ""
        assert "activation failed: M1 refused" in said and "L2 refused" in said, said
        assert said.count("activate it again or terminate it") == 1, said  # one story, not one per level
        assert "injected failure at activate.task.before" in said, said
        assert "activate it again or terminate it" in said, said
        tree = await settled(fed, slice_id, Outcome.COMMITTED)
        # Each level says who refused below it: M1 names its leaf, L2 its own domain.
        m1 = await fleet["M1"].operator_slices.Get(pb.SliceRef(slice_id=tree["M1"][0]), timeout=TIMEOUT_S)
        assert "L2 refused" in m1.reason and "COMMITTED" in m1.reason, m1.reason
        top = await fleet["T"].slices.Get(pb.SliceRef(slice_id=slice_id), timeout=TIMEOUT_S)
        assert state_name(top.state) == "COMMITTED" and top.reason == said, top.reason
        # M2's side had activated and stitched L3–L4: it was deactivated and unstitched, not released.
        m2_log = fleet["M2"].log_path.read_text()
        m2_id = tree["M2"][0]
        m2_states = [ln.rsplit("-> ", 1)[-1].strip() for ln in m2_log.splitlines() if f"slice {m2_id} -> " in ln]
        assert m2_states[-2:] == ["ACTIVE", "COMMITTED"], m2_states
        fleet.write_faults("L2")
        again = await fleet["T"].slices.Activate(pb.SliceRef(slice_id=slice_id), timeout=TIMEOUT_S)
        assert state_name(again.state) == "ACTIVE" and again.reason == ""
        await settled(fed, slice_id, Outcome.ACTIVE)
        gone = await fleet["T"].slices.Terminate(pb.SliceRef(slice_id=slice_id), timeout=TIMEOUT_S)
        assert state_name(gone.state) == "TERMINATED"
        await released(fed, slice_id)
    finally:
        await fed.stop()


async def test_deactivate_then_activate_round_trip_at_every_sp(tmp_path: Path) -> None:
    fed = SweepFederation(load_scenario(SWEEP_YAML), tmp_path)
    try:
        fleet = await fed.start()
        slice_id = await reserve_commit(fed, "round-1")
        top = fleet["T"].slices
        ref = pb.SliceRef(slice_id=slice_id)
        assert state_name((await top.Activate(ref, timeout=TIMEOUT_S)).state) == "ACTIVE"
        await settled(fed, slice_id, Outcome.ACTIVE)
        back = await top.Deactivate(ref, timeout=TIMEOUT_S)
        assert state_name(back.state) == "COMMITTED" and back.reason == ""
        await settled(fed, slice_id, Outcome.COMMITTED)
        assert state_name((await top.Deactivate(ref, timeout=TIMEOUT_S)).state) == "COMMITTED"  # idempotent
        assert state_name((await top.Activate(ref, timeout=TIMEOUT_S)).state) == "ACTIVE"
        await settled(fed, slice_id, Outcome.ACTIVE)
        assert state_name((await top.Terminate(ref, timeout=TIMEOUT_S)).state) == "TERMINATED"
        await released(fed, slice_id)
        audit = fleet["T"].audit_path.read_text()
        assert "Deactivate" in audit and f"slice {slice_id} COMMITTED" in audit
    finally:
        await fed.stop()


async def test_a_crash_during_deactivate_then_restart_converges_to_committed(tmp_path: Path) -> None:
    fed = SweepFederation(load_scenario(SWEEP_YAML), tmp_path)
    try:
        fleet = await fed.start()
        slice_id = await reserve_commit(fed, "crash-1")
        ref = pb.SliceRef(slice_id=slice_id)
        await fleet["T"].slices.Activate(ref, timeout=TIMEOUT_S)
        crash = {"id": "crash-deact", "point": "deactivate.task.after", "action": "crash", "domain": "L3"}
        fleet.write_faults("M2", [crash])
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await fleet["T"].slices.Deactivate(ref, timeout=TIMEOUT_S)
        assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        assert "crash-deact" in fleet["M2"].fired()
        top = await fleet["T"].slices.Get(ref, timeout=TIMEOUT_S)
        assert state_name(top.state) == "DEACTIVATING" and "[pending: M2]" in top.reason, top.reason
        assert await fleet.wait_exit("M2") == CRASH_EXIT_STATUS
        await fleet.restart("M2")
        await settled(fed, slice_id, Outcome.COMMITTED, timeout_s=20.0)
        assert state_name((await fleet["T"].slices.Activate(ref, timeout=TIMEOUT_S)).state) == "ACTIVE"
        await settled(fed, slice_id, Outcome.ACTIVE)
        await fleet["T"].slices.Terminate(ref, timeout=TIMEOUT_S)
        await released(fed, slice_id)
    finally:
        await fed.stop()


async def test_a_crash_of_the_mid_while_it_compensates_a_refusal_still_ends_committed_everywhere(
    tmp_path: Path,
) -> None:
    """L2 refuses every Activate; M1 dies half-way through deactivating L1. After M1's restart its
    DEACTIVATING slice rolls forward, the top (which only saw M1 go silent) retries, hears the refusal
    and compensates M2: every SP ends COMMITTED."""
    fed = SweepFederation(load_scenario(SWEEP_YAML), tmp_path)
    try:
        fleet = await fed.start()
        slice_id = await reserve_commit(fed, "crash-comp-1")
        fleet.write_faults("L2", [refuse()])
        crash = {"id": "crash-comp", "point": "deactivate.task.before", "action": "crash", "domain": "L1"}
        fleet.write_faults("M1", [crash])
        with pytest.raises(grpc.aio.AioRpcError):
            await fleet["T"].slices.Activate(pb.SliceRef(slice_id=slice_id), timeout=TIMEOUT_S)
        assert "crash-comp" in fleet["M1"].fired()
        assert await fleet.wait_exit("M1") == CRASH_EXIT_STATUS
        await fleet.restart("M1")
        await settled(fed, slice_id, Outcome.COMMITTED, timeout_s=25.0)
        top = await fleet["T"].slices.Get(pb.SliceRef(slice_id=slice_id), timeout=TIMEOUT_S)
        assert "refused" in top.reason and "activate it again or terminate it" in top.reason, top.reason
        fleet.write_faults("L2")
        await fleet["T"].slices.Terminate(pb.SliceRef(slice_id=slice_id), timeout=TIMEOUT_S)
        await released(fed, slice_id)
    finally:
        await fed.stop()


async def test_an_activation_that_outlives_the_tops_deadline_is_undone_at_every_sp(tmp_path: Path) -> None:
    """M1's activation of L2 hangs 6 s; the top's ``activation_timeout_s`` is 2 s. The top undoes the
    activation (M2 deactivated at once, M1 once it wakes and finishes), and every SP ends COMMITTED with
    nothing in service and the reservation kept, read back at each of the seven SPs."""
    base = load_scenario(SWEEP_YAML)
    quick = {"activation_timeout_s": 2}
    sps = tuple(replace(sp, settings={**sp.settings, **quick}) if sp.id == "T" else sp for sp in base.sps)
    fed = SweepFederation(replace(base, sps=sps), tmp_path)
    try:
        fleet = await fed.start()
        slice_id = await reserve_commit(fed, "deadline-1")
        hang = {"id": "hang-act", "point": "activate.task.before", "action": "hang", "hang_s": 6, "domain": "L2"}
        fleet.write_faults("M1", [hang])
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await fleet["T"].slices.Activate(pb.SliceRef(slice_id=slice_id), timeout=TIMEOUT_S)
        assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        await settled(fed, slice_id, Outcome.COMMITTED, timeout_s=25.0)
        assert "hang-act" in fleet["M1"].fired()
        top = await fleet["T"].slices.Get(pb.SliceRef(slice_id=slice_id), timeout=TIMEOUT_S)
        assert top.reason.startswith("activation timed out: M1 did not confirm within 2 s"), top.reason
        fleet.write_faults("M1")
        again = await fleet["T"].slices.Activate(pb.SliceRef(slice_id=slice_id), timeout=TIMEOUT_S)
        assert state_name(again.state) == "ACTIVE" and again.reason == ""
        await settled(fed, slice_id, Outcome.ACTIVE)
        await fleet["T"].slices.Terminate(pb.SliceRef(slice_id=slice_id), timeout=TIMEOUT_S)
        await released(fed, slice_id)
    finally:
        await fed.stop()

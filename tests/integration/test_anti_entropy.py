"""Anti-entropy of provisioning state between real brokers (issue 19, item 6).

The federation is ``scenarios/sweep.yaml`` (T over M1 {L1, L2} and M2 {L3, L4}; every SP its own
process; reconcile every 0.5 s, so holdings are compared every 7.5 s). M1's operator takes M1's part
of a slice out of service, or puts it in service, behind T's back: M1 tells T nothing that T acts on
(a COMMITTED segment is not an end), so only anti-entropy brings M1 back to T's decision. Every test
reads the slice back at every SP.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from fedbroker.v1 import northsouth_pb2 as pb
from scenarios.convergence import Outcome, state_name
from scenarios.model import load_scenario
from scenarios.sweep import SWEEP_YAML, SweepFederation
from tests.integration.test_deactivate import TIMEOUT_S, released, reserve_commit, settled

pytestmark = pytest.mark.integration

#: Compare every 15 passes of 0.5 s, plus the calls that bring M1 back and their answers.
WITHIN_S = 20.0


async def test_an_active_slice_taken_out_of_service_at_a_mid_sp_is_put_back_in_service(tmp_path: Path) -> None:
    fed = SweepFederation(load_scenario(SWEEP_YAML), tmp_path)
    try:
        fleet = await fed.start()
        slice_id = await reserve_commit(fed, "drift-active")
        top = fleet["T"].slices
        assert state_name((await top.Activate(pb.SliceRef(slice_id=slice_id), timeout=TIMEOUT_S)).state) == "ACTIVE"
        tree = await settled(fed, slice_id, Outcome.ACTIVE)
        m1 = fleet["M1"].operator_slices
        back = await m1.Deactivate(pb.SliceRef(slice_id=tree["M1"][0]), timeout=TIMEOUT_S)
        assert state_name(back.state) == "COMMITTED"  # M1, L1 and L2 out of service; T still says ACTIVE
        await settled(fed, slice_id, Outcome.ACTIVE, timeout_s=WITHIN_S)
        assert "holds its segment COMMITTED: activate it" in fleet["T"].log_path.read_text()
        assert state_name((await top.Terminate(pb.SliceRef(slice_id=slice_id), timeout=TIMEOUT_S)).state) == (
            "TERMINATED"
        )
        await released(fed, slice_id)
    finally:
        await fed.stop()


async def test_a_committed_slice_put_in_service_at_a_mid_sp_while_the_top_was_down_is_taken_out(
    tmp_path: Path,
) -> None:
    fed = SweepFederation(load_scenario(SWEEP_YAML), tmp_path)
    try:
        fleet = await fed.start()
        slice_id = await reserve_commit(fed, "drift-committed")
        tree = await settled(fed, slice_id, Outcome.COMMITTED)
        fleet.signal("T", signal.SIGKILL)
        m1 = fleet["M1"].operator_slices
        on = await m1.Activate(pb.SliceRef(slice_id=tree["M1"][0]), timeout=TIMEOUT_S)
        assert state_name(on.state) == "ACTIVE"  # traffic nobody above ordered
        await fleet.restart("T")  # it compares holdings with every child at its first pass
        await settled(fed, slice_id, Outcome.COMMITTED, timeout_s=WITHIN_S)
        assert "holds its segment ACTIVE: deactivate it" in fleet["T"].log_path.read_text()
        top = fleet["T"].slices
        assert state_name((await top.Terminate(pb.SliceRef(slice_id=slice_id), timeout=TIMEOUT_S)).state) == (
            "TERMINATED"
        )
        await released(fed, slice_id)
    finally:
        await fed.stop()

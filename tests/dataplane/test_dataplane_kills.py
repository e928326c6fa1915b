"""Issue 19 on a real data plane: any SP of the data-plane federation killed -9 at a random moment.

The nine SPs of ``scenarios/dataplane.yaml`` (six netns leaves, three linux WIMs), each killed at a
random 0–100 ms into Reserve, Commit, Activate and Terminate of the amsterdam–warsaw slice (through a
firewall and a DPI function), then restarted. Every outcome must settle all-committed/active or
all-released at every SP; an ACTIVE outcome must carry traffic end to end (ping through the leaves'
namespaces); a clean Terminate afterwards releases everything; and once the federations stop,
nothing is left in the kernel under their prefixes.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from scenarios.model import load_scenario
from scenarios.sweep import race_cases, run_sweep, tuned, write_report

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.sweep
@pytest.mark.timeout(1800)
async def test_the_dataplane_federation_survives_a_kill_of_any_sp_at_any_moment(tmp_path: Path) -> None:
    # Namespaces, VXLANs and shaping take seconds per activation: deadlines for a real data plane.
    dataplane = tuned(load_scenario(ROOT / "scenarios" / "dataplane.yaml"), hold_s=15, top_timeout_s=25)
    sps = [sp.id for sp in dataplane.sps]
    cases = race_cases(sps, operations=("reserve", "commit", "activate", "terminate"), trials=1, max_delay_ms=100)
    report = await run_sweep(
        cases, tmp_path, federations=2, scenario=dataplane, call_timeout_s=30, margin_s=20, case_timeout_s=240
    )
    if os.environ.get("FEDBROKER_DATAPLANE_SWEEP_REPORT"):
        write_report(report, Path(os.environ["FEDBROKER_DATAPLANE_SWEEP_REPORT"]))
    summary = report.summary()
    assert report.passed and summary["orphans"] == 0, report.render()
    assert summary["cases"] == len(sps) * 4 == 36
    # Every kill during Activate or Terminate (or after an earlier one) that ended ACTIVE was probed.
    assert summary["active_probed_with_traffic"] == summary["outcomes"].get("active", 0) > 0, summary
    assert summary["dataplane_leftovers"] == []


@pytest.mark.timeout(600)
async def test_deactivate_and_a_refused_activation_take_the_slice_out_of_the_kernel_and_activate_rebuilds_it(
    tmp_path: Path,
) -> None:
    """On the data-plane federation (six netns leaves, three linux WIMs): a Deactivate stops the traffic
    and leaves nothing of the slice in the kernel at any SP, yet keeps the reservation; Activate brings the
    traffic back. A leaf that refuses Activate (L2, which hosts both functions) is compensated: every SP
    COMMITTED, nothing in the kernel; activated again, the traffic flows; Terminate releases everything."""
    from scenarios.convergence import Outcome, wait_settled
    from scenarios.sweep import SweepFederation
    from wim import netlink

    dataplane = tuned(load_scenario(ROOT / "scenarios" / "dataplane.yaml"), hold_s=15, top_timeout_s=25)
    fed = SweepFederation(dataplane, tmp_path, call_timeout_s=30)
    try:
        fleet = await fed.start()

        async def everywhere(slice_id: str, want: Outcome) -> None:
            got = await wait_settled(fleet, dataplane.lowers, fed.top, slice_id=slice_id, timeout_s=30, want={want})
            assert got.reached, got.verdict.describe()

        async def kernel() -> list[str]:
            return [str(x) for x in await asyncio.to_thread(netlink.leftovers, fed.prefix)]

        answer, slice_id = await fed.call("reserve", "dp-deact", "", 15)
        assert answer == "HELD"
        assert (await fed.call("commit", "", slice_id, 15))[0] == "COMMITTED"
        assert (await fed.call("activate", "", slice_id, 15))[0] == "ACTIVE"
        assert await fed.carries_traffic(slice_id) == ""
        assert (await fed.call("deactivate", "", slice_id, 15))[0] == "COMMITTED"
        await everywhere(slice_id, Outcome.COMMITTED)
        # Every leaf took its segment down (endpoints, functions, pops), every WIM its VXLANs: no path is left.
        assert await kernel() == []
        assert (await fed.call("activate", "", slice_id, 15))[0] == "ACTIVE"
        assert await fed.carries_traffic(slice_id) == ""

        assert (await fed.call("deactivate", "", slice_id, 15))[0] == "COMMITTED"
        refuse = {"id": "dp-refuse", "point": "activate.task.before", "action": "fail", "code": "FAILED_PRECONDITION"}
        fleet.write_faults("L2", [{**refuse, "occurrence": 0}])
        assert (await fed.call("activate", "", slice_id, 15))[0] == "FAILED_PRECONDITION"
        await everywhere(slice_id, Outcome.COMMITTED)
        assert await kernel() == []  # what the other leaves had built was taken down again
        fleet.write_faults("L2")
        assert (await fed.call("activate", "", slice_id, 15))[0] == "ACTIVE"
        assert await fed.carries_traffic(slice_id) == ""
        assert (await fed.call("terminate", "", slice_id, 15))[0] == "TERMINATED"
        await everywhere(slice_id, Outcome.RELEASED)
        assert await kernel() == []
    finally:
        await fed.stop()
    assert fed.leftovers == []

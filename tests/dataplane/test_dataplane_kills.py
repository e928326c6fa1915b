"""Issue 19 on a real data plane: any SP of the data-plane federation killed -9 at a random moment.

The nine SPs of ``scenarios/dataplane.yaml`` (six netns leaves, three linux WIMs), each killed at a
random 0–100 ms into Reserve, Commit, Activate and Terminate of the amsterdam–warsaw slice (through a
firewall and a DPI function), then restarted. Every outcome must settle all-committed/active or
all-released at every SP; an ACTIVE outcome must carry traffic end to end (ping through the leaves'
namespaces); a clean Terminate afterwards releases everything; and once the federations stop,
nothing is left in the kernel under their prefixes.
"""

from __future__ import annotations

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

"""The GÉANT hierarchy scenario is what its generator writes today (its expectations come from flat planning)."""

from __future__ import annotations

from pathlib import Path

from scenarios import zoo


def test_the_committed_geant_scenario_is_fresh(tmp_path: Path) -> None:
    out = tmp_path / "geant.yaml"
    zoo.main([str(out)])
    committed = Path(__file__).resolve().parents[2] / "scenarios" / "geant-hierarchy.yaml"
    assert out.read_text() == committed.read_text(), "run: .venv/bin/python -m scenarios.zoo"


def test_the_scenario_has_at_least_30_leaves_under_3_mid_level_sps() -> None:
    data = zoo.scenario()
    mids = [sp for sp in data["sps"] if sp["id"].startswith("M")]
    leaves = [sp for sp in data["sps"] if "domains" in sp]
    assert len(mids) >= 3 and len(leaves) >= 30
    assert sorted(x for m in mids for x in m["lower"]) == sorted(sp["id"] for sp in leaves)

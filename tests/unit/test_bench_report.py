"""The benchmark's report: order statistics, the table against goals, and the README's result block."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.report import FIGURES, README_BEGIN, README_END, REQUIRED_KEYS, into_readme, table
from bench.stats import median, percentile


def test_percentile_is_nearest_rank_and_refuses_nonsense() -> None:
    samples = [float(x) for x in range(1, 101)]
    assert percentile(samples, 99) == 99.0
    assert percentile(samples, 100) == 100.0
    assert percentile([5.0, 1.0, 3.0], 50) == 3.0
    assert median([4.0, 1.0, 2.0, 3.0]) == 2.5
    with pytest.raises(ValueError, match="no samples"):
        percentile([], 50)
    with pytest.raises(ValueError, match="pct"):
        percentile([1.0], 0)


def test_table_marks_each_goal_met_or_missed_in_its_direction() -> None:
    figures = {k: 1.0 for k in REQUIRED_KEYS} | {"e2e_throughput_slices_per_s": 200.0, "plan_ms_p50_100": 6.0}
    meta = {
        "mode": "smoke",
        "finished": "now",
        "duration_s": 1.0,
        "machine": {"cpu": "c", "cores": 2, "system": "s", "python": "3", "grpcio": "1"},
        "load_at_start": [0.5],
    }
    rows = {line.split("`")[1]: line for line in table(figures, meta).splitlines() if line.startswith("| `")}
    assert rows["e2e_throughput_slices_per_s"].endswith("| met |")  # at least 150/s wanted
    assert rows["plan_ms_p50_100"].endswith("| **missed** |")  # at most 5 ms wanted
    assert rows["grpc_floor_rtt_ms"].endswith("| — |  |")  # no goal
    assert len(FIGURES) == len(rows)


def test_results_go_between_the_readme_markers_and_nowhere_else(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{README_BEGIN}\nold table\n{README_END}\n\ntail\n")
    into_readme(readme, "new table\n")
    into_readme(readme, "newer table\n")
    text = readme.read_text()
    assert "old table" not in text and "new table" not in text
    assert text == f"# x\n\n{README_BEGIN}\n\nnewer table\n\n{README_END}\n\ntail\n"
    (tmp_path / "bare.md").write_text("# no markers\n")
    with pytest.raises(ValueError, match="markers"):
        into_readme(tmp_path / "bare.md", "t")

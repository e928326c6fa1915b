"""The benchmark harness in its smoke mode: it runs end to end and writes every figure, with sane values."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench.channels import variants
from bench.report import REQUIRED_KEYS

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(240)
def test_bench_smoke_run_writes_every_required_figure_with_sane_values(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=200,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "results.json").read_text())

    missing = [k for k in REQUIRED_KEYS if k not in result]
    assert not missing, missing
    # hop_overhead_ratio is a difference of two medians over six samples each here: on a loaded
    # machine (make test runs the fault sweep beside this) it may come out at or below zero.
    differences = {"hop_overhead_ratio"}
    for key in REQUIRED_KEYS:
        value = result[key]
        assert isinstance(value, int | float) and math.isfinite(value), (key, value)
        assert key in differences or value > 0, (key, value)
    assert result["meta"]["mode"] == "smoke"
    # A loopback round trip is far under 50 ms; two broker round trips cost more than one bare one,
    # and a hop (four legs: client to mid to leaf, twice) more than that.
    assert 0.01 < result["grpc_floor_rtt_ms"] < 50
    assert result["leaf_reserve_commit_ms"] > result["grpc_floor_rtt_ms"]
    assert result["hop_reserve_commit_ms"] > result["grpc_floor_rtt_ms"]
    assert result["e2e_setup_ms_p99"] >= result["e2e_setup_ms_p50"]
    assert result["throughput_cpu_ms_per_slice"] > 0 and result["throughput_rpcs_per_slice"] >= 12
    assert result["throughput_slices"] >= 1 and result["throughput_errors"] == 0
    # Round trips counted at the brokers: the one-call order makes fewer than Reserve, Commit, Activate,
    # and the count over the throughput run agrees with the arithmetic of the path.
    assert 0 < result["rpcs_per_slice_order"] < result["rpcs_per_slice_classic"]
    assert result["throughput_rpcs_per_slice_counted"] == pytest.approx(result["throughput_rpcs_per_slice"])
    assert result["order_throughput_slices"] >= 1 and result["order_throughput_errors"] == 0
    # Unary calls against messages on one stream, and the token work per call (issue 17, item 2).
    for key in ("grpc_cpu_ms_per_rpc_sequential", "grpc_cpu_ms_per_rpc_concurrent", "stream_cpu_ms_per_msg"):
        assert 0 < result[key] < 50, (key, result[key])
    assert 0 < result["stream_cpu_ms_per_msg_concurrent"] < 50 and 0 < result["stream_rtt_ms"] < 50
    assert 0 < result["token_verify_ms"] < result["token_cpu_ms_per_call"] < 50
    # Channel options compared on the echo (issue 17, item 2): every variant measured, the broker's among them.
    for v in variants():
        for key in (
            f"channel_cpu_ms_per_rpc_{v.name}",
            f"channel_cpu_ms_per_rpc_seq_{v.name}",
            f"channel_rtt_ms_{v.name}",
        ):
            assert 0 < result[key] < 50, (key, result.get(key))
    # A log line, where the broker writes it and through a queue (issue 17, item 3).
    for key in (
        "log_line_us",
        "log_line_json_us",
        "log_line_queued_caller_us",
        "log_line_queued_total_us",
        "audit_line_us",
    ):
        assert 0 < result[key] < 5_000, (key, result[key])
    assert result["plan_ms_p50_10000"] > result["plan_ms_p50_100"]
    assert result["slices_held"] == 100
    assert result["rss_mb_10k_slices"] > 10 and result["rss_mb_empty"] > 10
    assert result["restart_recovery_s_10k_slices"] < 60
    # The upper SP's store on SQLite and on PostgreSQL (the server's own CPU counted apart).
    for backend in ("sqlite", "postgresql"):
        assert result[f"store_{backend}_reserve_commit_per_s"] > 0 and result[f"store_{backend}_cpu_ms_per_slice"] > 0
    assert result["store_postgresql_db_cpu_ms_per_slice"] > 0
    for n in (2, 3):  # one SP as n processes on one database, and a client's wait after one is killed
        assert result[f"store_postgresql_{n}_replicas_reserve_commit_per_s"] > 0
        assert 0 < result[f"failover_s_{n}_replicas"] < 30
    table = (tmp_path / "results.md").read_text()
    assert all(f"`{k}`" in table for k in REQUIRED_KEYS)


@pytest.mark.timeout(180)
def test_the_ab_harness_runs_each_tree_in_turn_with_that_trees_brokers_and_prints_the_medians() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.ab", str(ROOT), str(ROOT), "--what", "hop", "--runs", "1", "--calls", "3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    runs = [line for line in done.stdout.splitlines() if line.startswith("run 1 ")]
    assert len(runs) == 2, done.stdout  # one per tree named, in turn
    medians = done.stdout.split("medians:", 1)[1]
    for key in ("leaf_cpu_ms_via_leaf", "leaf_cpu_ms_via_upper", "upper_cpu_ms_via_upper"):
        assert all(key in run for run in runs) and medians.count(key) == 2, (key, done.stdout)
    # Fewer than two trees is refused with the reason, not run.
    refused = subprocess.run([sys.executable, "-m", "bench.ab", str(ROOT)], cwd=ROOT, capture_output=True, text=True)
    assert refused.returncode == 2 and "at least two trees" in refused.stderr

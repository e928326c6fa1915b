"""How much each benchmark does: the full run of ``make bench`` and the smoke run of the test suite."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sizes:
    """Repetitions, durations and sizes of one run."""

    mode: str
    #: Floor and hop samples are taken in interleaved rounds, so drift in machine load hits both alike.
    rounds: int
    floor_per_round: int
    hop_per_round: int
    warmup: int
    per_mid: int
    e2e_slices: int
    throughput_clients: int
    throughput_s: float
    throughput_max_slices: int
    note_samples: int
    plan_sizes: tuple[int, ...]
    plan_repetitions: tuple[int, ...]
    many_slices: int
    many_clients: int
    hier_requests: int = 50
    #: Reserve + Commit at an upper SP per store backend (bench/stores.py), and its concurrent clients.
    store_slices: int = 2_000
    store_clients: int = 16
    #: Lines written per way of logging (bench/logcost.py).
    log_lines: int = 20_000


FULL = Sizes(
    mode="full",
    rounds=20,
    floor_per_round=100,
    hop_per_round=15,
    warmup=30,
    per_mid=4,
    e2e_slices=200,
    throughput_clients=16,
    throughput_s=20.0,
    throughput_max_slices=20_000,
    note_samples=20,
    plan_sizes=(100, 1_000, 10_000),
    plan_repetitions=(50, 20, 5),
    many_slices=10_000,
    many_clients=32,
)

SMOKE = Sizes(
    mode="smoke",
    rounds=2,
    floor_per_round=20,
    hop_per_round=3,
    warmup=3,
    per_mid=2,
    e2e_slices=5,
    throughput_clients=4,
    throughput_s=1.0,
    throughput_max_slices=200,
    note_samples=2,
    plan_sizes=(100, 1_000, 10_000),
    plan_repetitions=(2, 1, 1),
    many_slices=100,
    many_clients=8,
    hier_requests=3,
    store_slices=20,
    store_clients=4,
    log_lines=500,
)

MODES = {s.mode: s for s in (FULL, SMOKE)}

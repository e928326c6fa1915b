"""Order statistics of timing samples."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def median(samples: Sequence[float]) -> float:
    """The median; ``ValueError`` on no samples."""
    if not samples:
        raise ValueError("no samples")
    return float(statistics.median(samples))


def percentile(samples: Sequence[float], pct: float) -> float:
    """The nearest-rank ``pct`` percentile (the smallest sample with ``pct`` % at or below it)."""
    if not samples:
        raise ValueError("no samples")
    if not 0 < pct <= 100:
        raise ValueError(f"pct must be in (0, 100], got {pct}")
    ordered = sorted(samples)
    rank = math.ceil(pct / 100 * len(ordered))
    return float(ordered[max(rank, 1) - 1])

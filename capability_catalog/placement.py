"""Which chain functions one run through an SP places: the rule planner and aggregation share. Pure.

A run is one transit entry of an SP's note, entered at one terminal. From chain position ``k`` it
places, in order:

1. greedily, the following functions of types the SP places *anywhere* (offers not ``routed`` and
   named by no transit entry: the SP's promise that any of its transit can host them at no extra
   latency), while it has a free slot with enough throughput;
2. when the entry names functions (a route through their sites), exactly those, which must be the
   next ones of the chain and have free slots; an entry naming functions is of no use elsewhere;
3. greedily again, functions placed anywhere.

A plain entry of a note whose types are all routed places nothing. Slots are counted per run.
"""

from __future__ import annotations

from collections.abc import Sequence

from capability_catalog.model import FunctionOffer

__all__ = ["advance"]


def advance(
    offers: Sequence[FunctionOffer],
    routed: frozenset[str],
    chain: Sequence[tuple[str, int]],
    k: int,
    via: tuple[str, ...],
) -> int | None:
    """The chain position after a run with route functions ``via`` from position ``k``; None when unusable.

    ``chain`` holds (type, throughput asked in Mb/s; 0 = any) per function.
    """
    free = {i: o.slots for i, o in enumerate(offers) if o.slots > 0}

    def take(j: int) -> bool:
        kind, need = chain[j]
        for i, o in enumerate(offers):
            if free.get(i, 0) > 0 and o.type == kind and (o.throughput_mbps == 0 or o.throughput_mbps >= need):
                free[i] -= 1
                return True
        return False

    def anywhere(j: int) -> int:
        while j < len(chain) and chain[j][0] not in routed and take(j):
            j += 1
        return j

    j = anywhere(k)
    if not via:
        return j
    if tuple(kind for kind, _ in chain[j : j + len(via)]) != via:
        return None
    for i in range(j, j + len(via)):
        if not take(i):
            return None
    return anywhere(j + len(via))

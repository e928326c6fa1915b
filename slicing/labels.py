"""The label algebra of inter-domain links: which labels a link can still carry. Pure, no I/O.

Label rule per inter-child link (ports ``a`` and ``b``; ``used`` = used and excluded labels of the
link key): when ``a.labels & b.labels - used`` is non-empty, both sides must use one of those.
Otherwise, when a side can swap, each side picks from its own labels minus ``used``; the link's
candidates are then the non-swapping side's free labels (the path-first side's when both swap),
and it is usable only if every side has a free label. Otherwise the link is unusable.
"""

from __future__ import annotations

from dataclasses import dataclass

from capability_catalog.graph import InterLink
from capability_catalog.model import LabelRange, LabelSet, TerminalId

__all__ = ["LinkLabels", "link_labels", "lowest", "subtract"]


@dataclass(frozen=True)
class LinkLabels:
    """The labels a link can carry: the wire's candidates and what each port may use."""

    candidates: LabelSet
    per_port: dict[TerminalId, LabelSet]


def link_labels(link: InterLink, used: set[int]) -> LinkLabels | None:
    """The labels a link can still carry under the module's label rule; None when it cannot."""
    common = subtract(link.a.labels.intersect(link.b.labels), used)
    if common:
        return LinkLabels(common, {link.a.id: common, link.b.id: common})
    if not (link.a.can_swap or link.b.can_swap):
        return None
    free_a, free_b = subtract(link.a.labels, used), subtract(link.b.labels, used)
    if not free_a or not free_b:
        return None
    # The wire carries the non-swapping side's labels; when both swap, the path-first side's.
    candidates = free_b if link.a.can_swap and not link.b.can_swap else free_a
    return LinkLabels(candidates, {link.a.id: free_a, link.b.id: free_b})


def lowest(labels: LabelSet) -> int:
    """The lowest label of a non-empty set."""
    return labels.ranges[0].first


def subtract(labels: LabelSet, used: set[int]) -> LabelSet:
    """``labels`` minus ``used``, in one sweep over both sorted."""
    if not used or not labels:
        return labels
    cuts = sorted(used)
    out: list[LabelRange] = []
    j = 0
    for r in labels.ranges:
        lo = r.first
        while j < len(cuts) and cuts[j] < lo:
            j += 1
        while j < len(cuts) and cuts[j] <= r.last:
            if cuts[j] > lo:
                out.append(LabelRange(lo, cuts[j] - 1))
            lo = cuts[j] + 1
            j += 1
        if lo <= r.last:
            out.append(LabelRange(lo, r.last))
    return LabelSet(tuple(out))

"""Planning through a tree of SPs, in process: the reference the brokers' recursion is checked against. Pure.

A ``Subtree`` is an SP that buys from its children; a leaf is a capability note (a domain whose note
is the truth about it). ``plan_through`` does what the brokers do over gRPC, without the network:
the SP plans over its children's notes (a child subtree's note is its ``aggregate``), each child
subtree plans its sub-request over its own children, and a child's refusal (no capacity, or a
constraint its plan could not meet, such as an excluded SP below it) makes the SP re-plan around
that run (crankback), up to ``max_attempts`` plans per SP, as ``broker`` does with
``MAX_PLAN_ATTEMPTS``. The outcome is what was realised: the latency and money summed over the
leaves' runs and every link, and the leaf runs in path order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

from capability_catalog.aggregate import aggregate
from capability_catalog.model import CapabilityNote, SpId, TerminalId
from slicing.errors import Constraint, ErrorCode, FedError, crankback_refusal
from slicing.model import SliceRequest
from slicing.planner import Run, plan
from slicing.search import total_ms

__all__ = ["Realised", "Subtree", "plan_through"]

#: Codes of a child's refusal that another plan might avoid.
_CRANKBACK_CODES = frozenset({ErrorCode.RESOURCE_EXHAUSTED, ErrorCode.FAILED_PRECONDITION})


@dataclass(frozen=True)
class Subtree:
    """An SP and the SPs (subtrees or leaf notes) it buys from."""

    sp: SpId
    children: tuple[Subtree | CapabilityNote, ...]
    version: int = 1

    @cached_property
    def child_notes(self) -> Mapping[SpId, CapabilityNote]:
        """The notes this SP plans over: leaves as they are, subtrees as their abstract note."""
        return {c.sp_id if isinstance(c, CapabilityNote) else c.sp: note_of(c) for c in self.children}

    @cached_property
    def note(self) -> CapabilityNote:
        """The abstract note this SP publishes upward."""
        return aggregate(self.sp, list(self.child_notes.values()), version=self.version, issued_at=0.0, expires_at=1e12)

    def child(self, sp: SpId) -> Subtree | CapabilityNote:
        """The child called ``sp``."""
        return next(c for c in self.children if (c.sp_id if isinstance(c, CapabilityNote) else c.sp) == sp)


def note_of(node: Subtree | CapabilityNote) -> CapabilityNote:
    """A leaf's own note or a subtree's abstract note."""
    return node if isinstance(node, CapabilityNote) else node.note


@dataclass(frozen=True)
class Realised:
    """What planning through the tree realised: latency and money over every level, leaf runs in order."""

    latency_ms: float
    money_per_hour: float
    leaf_runs: tuple[tuple[SpId, TerminalId, TerminalId], ...]
    replans: int


def plan_through(request: SliceRequest, tree: Subtree, *, max_attempts: int = 4) -> Realised:
    """Plan ``request`` at ``tree``'s SP and recursively below, with crankback; raise the refusal when none fits."""
    avoid: list[Run] = []
    refusals: list[FedError] = []
    replans = 0
    for _ in range(max_attempts):
        try:
            p = plan(request, tree.child_notes, avoid_runs=tuple(avoid))
        except FedError as exc:
            if not refusals:
                raise
            named = {r.constraint for r in refusals}
            # Only the crankback is left: the constraint every refusal below named is the reason.
            if exc.constraint == Constraint.CRANKBACK and len(named) == 1 and "" not in named:
                constraint = named.pop()
            else:
                constraint = exc.constraint
            raise crankback_refusal(exc.code, exc.message, refusals, constraint=constraint) from None
        latencies: list[float] = [ln.latency_ms for ln in p.links]
        money: list[float] = []
        runs: list[tuple[SpId, TerminalId, TerminalId]] = []
        refused = False
        for seg in p.segments:
            node = tree.child(seg.domain)
            if isinstance(node, CapabilityNote):
                latencies.append(seg.transit_latency_ms)
                money.append(seg.price_per_hour)
                runs.append((seg.domain, seg.request.src, seg.request.dst))
                continue
            try:
                below = plan_through(seg.request, node, max_attempts=max_attempts)
            except FedError as exc:
                if exc.code not in _CRANKBACK_CODES:
                    raise
                avoid.append(Run(seg.domain, seg.request.src, seg.request.dst))
                refusals.append(exc.in_domain(seg.domain))
                refused = True
                break
            latencies.append(below.latency_ms)
            money.append(below.money_per_hour)
            runs.extend(below.leaf_runs)
            replans += below.replans
        if refused:
            replans += 1
            continue
        return Realised(total_ms(latencies), total_ms(money), tuple(runs), replans)
    named = {r.constraint for r in refusals}
    raise crankback_refusal(
        ErrorCode.RESOURCE_EXHAUSTED,
        f"crankback: {max_attempts} plans were refused below",
        refusals,
        constraint=named.pop() if len(named) == 1 and "" not in named else Constraint.CRANKBACK,
    )


def group(sp: SpId, leaves: Sequence[CapabilityNote], assignment: Sequence[int], names: Sequence[SpId]) -> Subtree:
    """A two-level tree: ``sp`` over mid-level SPs ``names``, leaf ``i`` under ``names[assignment[i]]``."""
    mids = [
        Subtree(name, tuple(leaf for leaf, k in zip(leaves, assignment, strict=True) if k == i))
        for i, name in enumerate(names)
    ]
    return Subtree(sp, tuple(m for m in mids if m.children))

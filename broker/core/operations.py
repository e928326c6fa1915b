"""The slice operations as data, and the pure decisions the lifecycle takes between its awaits.

Which states each operation starts from, passes through, answers as already done and resumes is
one table (``OPERATIONS``), read by one generic path in ``SliceManager`` (as OpenNSA's state module
does), instead of ``if`` chains per operation. The decisions about children's answers — does this
error mean the child holds nothing, is this refusal worth a crankback, which labels to skip after a
disagreement, what a pending release says — are plain functions, tested without asyncio.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from slicing.errors import Constraint, ErrorCode, FedError
from slicing.model import SliceState

S = SliceState


@dataclass(frozen=True)
class Operation:
    """How one operation moves a slice: from ``accepts`` through ``in_flight``.

    A slice already in ``done`` is answered as it is (a repeated call is not an error); one in
    ``resumes`` is an earlier run of this or a related operation that some SP below did not confirm
    yet, and the call drives it on.
    """

    name: str
    accepts: frozenset[SliceState]
    in_flight: SliceState
    done: frozenset[SliceState]
    resumes: frozenset[SliceState] = frozenset()
    #: Where a release started by this operation ends once every SP below confirmed it.
    settle_to: SliceState | None = None


OPERATIONS: dict[str, Operation] = {
    op.name: op
    for op in (
        Operation(
            "Commit",
            frozenset({S.HELD}),
            S.COMMITTING,
            frozenset({S.COMMITTED, S.ACTIVATING, S.ACTIVE, S.DEACTIVATING}),
            frozenset({S.COMMITTING}),
        ),
        Operation(
            "Abort",
            frozenset({S.HELD}),
            S.ABORTING,
            frozenset({S.ABORTED, S.EXPIRED}),
            frozenset({S.ABORTING}),
            settle_to=S.ABORTED,
        ),
        Operation("Activate", frozenset({S.COMMITTED}), S.ACTIVATING, frozenset({S.ACTIVE}), frozenset({S.ACTIVATING})),
        # Deactivate (NSI's provisioning "release") undoes Activate and keeps the reservation. It also
        # accepts ACTIVATING: an upper SP compensating a refused activation deactivates every child,
        # whether or not that child's own activation has finished.
        Operation(
            "Deactivate",
            frozenset({S.ACTIVE, S.ACTIVATING}),
            S.DEACTIVATING,
            frozenset({S.COMMITTED}),
            frozenset({S.DEACTIVATING}),
            settle_to=S.COMMITTED,
        ),
        # Terminate is the one release that works in every state: what an upper SP sends to release
        # a segment whatever the child holds. A slice that ended already holds nothing.
        Operation(
            "Terminate",
            frozenset({S.HELD, S.COMMITTING, S.COMMITTED, S.ACTIVATING, S.ACTIVE, S.DEACTIVATING, S.FAILED}),
            S.TERMINATING,
            frozenset({S.TERMINATED, S.ABORTED, S.EXPIRED}),
            frozenset({S.TERMINATING, S.ABORTING}),
            settle_to=S.TERMINATED,
        ),
    )
}
#: States an operation passes through; every one of them has an owner that ends it (a running
#: operation, or the reconciler) — none is left for a restart to settle.
IN_FLIGHT: frozenset[SliceState] = frozenset(
    {S.RESERVING, S.COMMITTING, S.ACTIVATING, S.DEACTIVATING, S.ABORTING, S.TERMINATING}
)
#: Segment states in which a child confirmed it holds nothing for the slice.
RELEASED: frozenset[SliceState] = frozenset({S.ABORTED, S.TERMINATED, S.EXPIRED, S.FAILED})

# An answer with one of these codes may mean the child never heard us, or heard and answered too
# late: what it holds is unknown until it is asked again.
_UNKNOWN_OUTCOME = frozenset(
    {ErrorCode.UNAVAILABLE, ErrorCode.DEADLINE_EXCEEDED, ErrorCode.INTERNAL, ErrorCode.UNAUTHENTICATED}
)


def outcome_unknown(exc: FedError) -> bool:
    """True when a child's error leaves open whether it holds something (it did not really answer).

    Any other error is the child's own answer, and by the protocol a child that answers a Reserve with
    an error holds nothing (or is itself releasing what it could not confirm yet).
    """
    return exc.code in _UNKNOWN_OUTCOME


def lost_hold(exc: FedError) -> bool:
    """True when a child refused a Commit (or a Deactivate) definitively: its hold is gone (expired,
    released, never held). A child that committed accepts Deactivate in every state it can still be in
    while it holds the segment (active, activating, deactivating, committed), so a refusal means it no
    longer holds it: the slice cannot stay committed."""
    return exc.code in (ErrorCode.FAILED_PRECONDITION, ErrorCode.NOT_FOUND)


#: Constraints a child's planner names that another plan at this level might avoid.
_PLANNING_CONSTRAINTS = frozenset(
    {
        Constraint.EXCLUDE,
        Constraint.INCLUDE,
        Constraint.TRANSIT_POLICY,
        Constraint.ISOLATION,
        Constraint.QOS,
        Constraint.CHAIN,
        Constraint.LATENCY,
        Constraint.PRICE,
        Constraint.CRANKBACK,
    }
)


def replannable(err: FedError) -> bool:
    """A child's refusal that another plan might avoid: no capacity, or a planning constraint it could not meet
    (an excluded SP below it that this level cannot see, a function off every route it has)."""
    if err.code is ErrorCode.RESOURCE_EXHAUSTED:
        return True
    return err.code is ErrorCode.FAILED_PRECONDITION and err.constraint in _PLANNING_CONSTRAINTS


def worth_crankback(errors: Sequence[FedError]) -> bool:
    """A failed attempt is re-planned around when every child that said no said so replannably."""
    return bool(errors) and all(replannable(e) for e in errors)


def named_below(constraint: str, refusals: Sequence[FedError]) -> str:
    """When only the crankback is left and every refusal below named one constraint, that one is the reason."""
    named = {r.constraint for r in refusals}
    return named.pop() if constraint == Constraint.CRANKBACK and len(named) == 1 and "" not in named else constraint


def labels_to_skip(preferred: int | None, label_a: int | None, label_b: int | None) -> set[int]:
    """Labels to exclude on a link whose two sides picked different labels.

    A side picks the preferred label when it is free there, else the lowest free one, so every
    label below what a side picked (from the preferred one up) is taken at that side. Skipping the
    whole run up to the higher pick (not just the two picks) moves the next attempt past every label
    taken at either side at once: a port with a few leaked labels converges in one or two attempts.
    """
    picks = [x for x in (label_a, label_b) if x is not None]
    if not picks:
        return set()
    low = min([*picks, *([preferred] if preferred is not None else [])])
    return set(range(low, max(picks))) or set(picks)


_PENDING = re.compile(r" \[pending: [^\]]*\]$")


def with_pending(reason: str, pending: Iterable[str]) -> str:
    """``reason`` with the SPs that have not confirmed yet named at its end (replacing an older list)."""
    base = _PENDING.sub("", reason)
    names = sorted(set(pending))
    return f"{base} [pending: {', '.join(names)}]" if names else base


def without_pending(reason: str) -> str:
    """``reason`` without its pending list."""
    return _PENDING.sub("", reason)


_COMPENSATED = "; what was active is deactivated and the slice is COMMITTED: activate it again or terminate it"


def compensation_reason(refusals: Sequence[tuple[str, FedError]]) -> str:
    """What a slice whose activation a child refused says once it is back to COMMITTED.

    Names the SPs that refused and what the first one said, and what the customer may do next: the
    reservation is kept (NSI keeps provisioning apart from the reservation), so Activate again or Terminate.
    """
    names = ", ".join(sorted({name for name, _ in refusals}))
    # A lower SP that compensated its own children said so already: its story goes in once, at the end.
    said = without_pending(str(refusals[0][1])).removesuffix(_COMPENSATED) if refusals else ""
    return f"activation failed: {names} refused ({said}){_COMPENSATED}"


def activation_timeout_reason(timeout_s: float, pending: Sequence[str]) -> str:
    """What a slice whose activation did not complete in time says once it is back to COMMITTED."""
    who = ", ".join(sorted(pending)) or "an SP below"
    return f"activation timed out: {who} did not confirm within {timeout_s:g} s{_COMPENSATED}"


def settle_state(state: SliceState, settle_to: SliceState | None, error_code: str) -> SliceState:
    """Where a release in flight ends: its recorded target, else FAILED after an error, else by operation."""
    if settle_to is not None:
        return settle_to
    if error_code:
        return S.FAILED
    return S.ABORTED if state is S.ABORTING else S.TERMINATED


def segment_end_state(settle_to: SliceState) -> SliceState:
    """The state a released segment is recorded in for a slice that ends in ``settle_to``."""
    return settle_to if settle_to in (S.ABORTED, S.EXPIRED, S.TERMINATED) else S.ABORTED


__all__ = [
    "IN_FLIGHT",
    "OPERATIONS",
    "RELEASED",
    "Operation",
    "compensation_reason",
    "labels_to_skip",
    "lost_hold",
    "named_below",
    "outcome_unknown",
    "replannable",
    "segment_end_state",
    "settle_state",
    "with_pending",
    "without_pending",
    "worth_crankback",
]

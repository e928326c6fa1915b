"""Slice request and decomposition plan models: frozen dataclasses, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from capability_catalog.model import LabelSet, SpId, TerminalId


class SliceState(StrEnum):
    """States of a slice (or of one segment of it) at the broker that holds it."""

    RESERVING = "RESERVING"
    HELD = "HELD"
    COMMITTING = "COMMITTING"
    COMMITTED = "COMMITTED"
    ACTIVATING = "ACTIVATING"
    ACTIVE = "ACTIVE"
    TERMINATING = "TERMINATING"
    TERMINATED = "TERMINATED"
    ABORTING = "ABORTING"
    ABORTED = "ABORTED"
    EXPIRED = "EXPIRED"
    FAILED = "FAILED"


S = SliceState
#: Allowed transitions, as data (NSI-like: reservation, provisioning, lifecycle folded into one).
TRANSITIONS: dict[SliceState, frozenset[SliceState]] = {
    S.RESERVING: frozenset({S.HELD, S.FAILED}),
    S.HELD: frozenset({S.COMMITTING, S.ABORTING, S.EXPIRED, S.TERMINATING, S.FAILED}),
    S.COMMITTING: frozenset({S.COMMITTED, S.FAILED}),
    S.COMMITTED: frozenset({S.ACTIVATING, S.TERMINATING, S.FAILED}),
    S.ACTIVATING: frozenset({S.ACTIVE, S.FAILED, S.COMMITTED}),
    S.ACTIVE: frozenset({S.TERMINATING, S.FAILED}),
    S.TERMINATING: frozenset({S.TERMINATED, S.FAILED}),
    S.ABORTING: frozenset({S.ABORTED, S.FAILED}),
    S.TERMINATED: frozenset(),
    S.ABORTED: frozenset(),
    S.EXPIRED: frozenset(),
    S.FAILED: frozenset({S.TERMINATING}),
}
#: States in which a slice holds resources somewhere.
HOLDING_STATES: frozenset[SliceState] = frozenset(
    {S.RESERVING, S.HELD, S.COMMITTING, S.COMMITTED, S.ACTIVATING, S.ACTIVE, S.TERMINATING, S.ABORTING}
)
#: States after which nothing more happens.
FINAL_STATES: frozenset[SliceState] = frozenset({S.TERMINATED, S.ABORTED, S.EXPIRED, S.FAILED})


def can_transition(src: SliceState, dst: SliceState) -> bool:
    """True when ``src -> dst`` is in the transition table."""
    return dst in TRANSITIONS[src]


@dataclass(frozen=True)
class PortConstraint:
    """Labels the requester allows at a border port that is a terminal of the request."""

    port: TerminalId
    labels: LabelSet
    preferred: int | None = None


@dataclass(frozen=True)
class SliceRequest:
    """An end-to-end (or per-segment) slice request between two terminals."""

    src: TerminalId
    dst: TerminalId
    bandwidth_mbps: int
    name: str = ""
    latency_budget_ms: float = 0.0  # 0 = unbounded
    chain: tuple[str, ...] = ()
    subnet: str = "10.0.0.0/16"
    port_constraints: tuple[PortConstraint, ...] = ()

    def constraint(self, port: str) -> PortConstraint | None:
        """The constraint on ``port``, if any."""
        return next((c for c in self.port_constraints if c.port == port), None)


@dataclass(frozen=True)
class SegmentPlan:
    """One child's piece of a plan: its sub-request and what the planner assumed of it."""

    index: int
    domain: SpId
    request: SliceRequest
    transit_latency_ms: float
    latency_share_ms: float


@dataclass(frozen=True)
class LinkPlan:
    """An inter-domain link the plan crosses, stitched by this broker's WIM."""

    a_port: TerminalId
    b_port: TerminalId
    a_domain: SpId
    b_domain: SpId
    candidates: LabelSet
    preferred: int
    a_can_swap: bool = False
    b_can_swap: bool = False
    latency_ms: float = 0.0


@dataclass(frozen=True)
class Plan:
    """A decomposition: ordered segments from src to dst and the links between them."""

    segments: tuple[SegmentPlan, ...]
    links: tuple[LinkPlan, ...]
    total_latency_ms: float
    path: tuple[TerminalId, ...] = field(default=())

    def domains(self) -> list[SpId]:
        """The children involved, in path order (a child may appear twice)."""
        return [s.domain for s in self.segments]

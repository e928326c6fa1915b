"""Slice request and decomposition plan models: frozen dataclasses, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from capability_catalog.model import Isolation, LabelSet, SpId, TerminalId


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
    # Provisioning released (NSI's "release"): back from ACTIVE to COMMITTED, the reservation kept.
    DEACTIVATING = "DEACTIVATING"


S = SliceState
#: Allowed transitions, as data (NSI-like: reservation, provisioning, lifecycle folded into one).
TRANSITIONS: dict[SliceState, frozenset[SliceState]] = {
    S.RESERVING: frozenset({S.HELD, S.ABORTING, S.FAILED}),
    S.HELD: frozenset({S.COMMITTING, S.ABORTING, S.EXPIRED, S.TERMINATING, S.FAILED}),
    # After the commit decision: COMMITTED once every child confirmed; TERMINATING (to FAILED) when
    # a child lost its hold and everything else is released; ACTIVATING at once when the commit went
    # down with the activation (a one-call order): every child confirmed both, or the commit at least.
    S.COMMITTING: frozenset({S.COMMITTED, S.ACTIVATING, S.TERMINATING, S.FAILED}),
    S.COMMITTED: frozenset({S.ACTIVATING, S.TERMINATING, S.FAILED}),
    # An activation a child refused is compensated (DEACTIVATING, back to COMMITTED), not released.
    S.ACTIVATING: frozenset({S.ACTIVE, S.FAILED, S.COMMITTED, S.DEACTIVATING, S.TERMINATING}),
    S.ACTIVE: frozenset({S.DEACTIVATING, S.TERMINATING, S.FAILED}),
    # Provisioning is undone, the reservation stays: it ends COMMITTED once every SP below confirmed.
    S.DEACTIVATING: frozenset({S.COMMITTED, S.TERMINATING, S.FAILED}),
    # A release in flight ends where the record's settle_to says, once every SP below confirmed it.
    S.TERMINATING: frozenset({S.TERMINATED, S.FAILED}),
    S.ABORTING: frozenset({S.ABORTED, S.EXPIRED, S.FAILED}),
    S.TERMINATED: frozenset(),
    S.ABORTED: frozenset(),
    S.EXPIRED: frozenset(),
    S.FAILED: frozenset({S.TERMINATING}),
}
#: States in which a slice holds resources somewhere.
HOLDING_STATES: frozenset[SliceState] = frozenset(
    {
        S.RESERVING,
        S.HELD,
        S.COMMITTING,
        S.COMMITTED,
        S.ACTIVATING,
        S.ACTIVE,
        S.DEACTIVATING,
        S.TERMINATING,
        S.ABORTING,
    }
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
class ChainFunction:
    """One network function of a request's chain: its type and the throughput it must sustain (0: the slice's)."""

    type: str
    throughput_mbps: int = 0


@dataclass(frozen=True)
class SliceRequest:
    """An end-to-end (or per-segment) slice request between two terminals.

    Every field added after the first version has a default that means "no constraint", so older
    request files and stored records keep their meaning.
    """

    src: TerminalId
    dst: TerminalId
    bandwidth_mbps: int  # src -> dst
    name: str = ""
    # None: no latency budget. A number is a budget, 0 included (then only a 0 ms path meets it).
    latency_budget_ms: float | None = None
    chain: tuple[str, ...] = ()  # function types, in the order traffic traverses them
    subnet: str = "10.0.0.0/16"
    port_constraints: tuple[PortConstraint, ...] = ()
    # Per chain function, the throughput it must sustain; missing or 0 means the slice's bandwidth.
    chain_throughput_mbps: tuple[int, ...] = ()
    reverse_bandwidth_mbps: int = 0  # dst -> src; 0 = the same as bandwidth_mbps
    qos_class: str = ""  # empty = no QoS class asked
    isolation: Isolation | None = None  # None = any
    include_sps: tuple[str, ...] = ()  # SPs the path must cross (visible at the planning level)
    exclude_sps: tuple[str, ...] = ()  # SPs the path must avoid (at every level)
    max_price_per_hour: float = 0.0  # 0 = no ceiling
    # SPs this request has already passed through, the first requester-facing SP first (loop safety).
    trace: tuple[str, ...] = ()

    def constraint(self, port: str) -> PortConstraint | None:
        """The constraint on ``port``, if any."""
        return next((c for c in self.port_constraints if c.port == port), None)

    @property
    def reverse_mbps(self) -> int:
        """Bandwidth asked from dst to src."""
        return self.reverse_bandwidth_mbps or self.bandwidth_mbps

    @property
    def edge_mbps(self) -> int:
        """What every edge must carry: notes state capacity per direction (full duplex), so the larger one."""
        return max(self.bandwidth_mbps, self.reverse_mbps)

    def functions(self) -> tuple[ChainFunction, ...]:
        """The chain with each function's required throughput resolved."""
        out = []
        for i, fn in enumerate(self.chain):
            asked = self.chain_throughput_mbps[i] if i < len(self.chain_throughput_mbps) else 0
            out.append(ChainFunction(fn, asked or self.edge_mbps))
        return tuple(out)


@dataclass(frozen=True)
class FunctionPlacement:
    """Where the plan puts one chain function: the child and the site its note offers it at."""

    index: int
    type: str
    domain: SpId
    site: str


@dataclass(frozen=True)
class PlanCost:
    """What a plan costs, compared in this order: money, then latency, then hops.

    ``money_per_hour`` is the sum over segments of the child's ``price_per_mbps_hour`` times the
    bandwidth of both directions; a child whose note states no price adds nothing. Among equally
    priced plans (e.g. none priced) the lower latency wins, then the fewer inter-domain hops.
    """

    money_per_hour: float
    latency_ms: float
    hops: int


@dataclass(frozen=True)
class SegmentPlan:
    """One child's piece of a plan: its sub-request and what the planner assumed of it."""

    index: int
    domain: SpId
    request: SliceRequest
    transit_latency_ms: float
    latency_share_ms: float
    # The requested QoS class in the child's own mechanism (from its note), e.g. (("dscp", "46"),).
    qos_native: tuple[tuple[str, str], ...] = ()
    price_per_hour: float = 0.0
    # The child's weakest isolation mechanism at least as strong as asked (None when none was asked).
    isolation: Isolation | None = None


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
    placements: tuple[FunctionPlacement, ...] = ()
    cost: PlanCost = PlanCost(0.0, 0.0, 0)

    def domains(self) -> list[SpId]:
        """The children involved, in path order (a child may appear twice)."""
        return [s.domain for s in self.segments]

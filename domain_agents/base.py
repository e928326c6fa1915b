"""The ``DomainAgent`` port: what the broker core needs from whatever realises a segment.

A local emulated domain, network namespaces, OpenStack, and (in ``broker/api/child_agent.py``) a whole
lower-SP broker all implement it; the core cannot tell them apart. Agents are small: the core owns
state machines, hold timers and persistence, and hands back the opaque ``handle`` it persisted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, runtime_checkable

from capability_catalog.model import CapabilityNote, SpId, TerminalId
from capability_catalog.signing import SignedNote
from slicing.errors import FedError
from slicing.model import SliceRequest, SliceState
from wim.workers import Fanout


class Held(NamedTuple):
    """One segment a child holds for this broker (anti-entropy): its order key, handle and state there."""

    key: str
    handle: str
    state: SliceState


@dataclass(frozen=True)
class SegmentOrder:
    """A request to hold one segment: a stable idempotency key, the sub-request, the hold time."""

    key: str
    request: SliceRequest
    hold_time_s: float
    # Who the order is for at the level above (opaque); a child broker passes it on as a token claim.
    on_behalf_of: str = ""
    # How long the child may take to answer (None: the agent's own default). A broker gives its
    # children less time than its caller gave it, so the lowest level gives up and compensates first.
    timeout_s: float | None = None


@dataclass(frozen=True)
class SegmentGrant:
    """A held segment: the handle to persist, and the values chosen under the constraints."""

    handle: str
    labels: Mapping[TerminalId, int] = field(default_factory=dict)
    addresses: Mapping[TerminalId, str] = field(default_factory=dict)
    # A child broker reports its own segments (protobuf-free JSON-able dicts) for read-back.
    detail: tuple[Mapping[str, object], ...] = ()


@dataclass(frozen=True)
class SegmentAlert:
    """A child's SLA alert about one segment, in plain values (the broker core types them)."""

    cause: str
    metric: str
    value: float
    threshold: float
    comparison: str
    severity: str
    firing: bool
    source: str
    detail: str = ""


@dataclass(frozen=True)
class SegmentEvent:
    """A child changed a segment on its own (its hold expired, it failed), or — ``handle`` empty — the
    stream of such events (re)connected, after which what the child holds is worth comparing; with
    ``alert``, the child's SLA alert about the segment (the state is unchanged then)."""

    handle: str
    state: SliceState | None = None
    detail: str = ""
    alert: SegmentAlert | None = None


@dataclass(frozen=True)
class HealthSample:
    """One measurement of a held segment by a local domain agent: ``metric`` is latency_ms, loss,
    link_up (1 or 0) or bandwidth_mbps. Samples stay in the SP; only alerts derived from them leave."""

    handle: str
    metric: str
    value: float
    at: float


class HealthFeed(Fanout[HealthSample]):
    """Every health sample published, to every reader of ``samples``."""

    def samples(self) -> AsyncIterator[HealthSample]:
        """What is published from now on, until cancelled."""
        return self.items()


@runtime_checkable
class HealthSource(Protocol):
    """A local agent that measures its segments (emulated conditions, netlink link state, probes)."""

    def health(self) -> AsyncIterator[HealthSample]:
        """Samples as they are taken, until cancelled; a segment nobody measured is presumed healthy."""
        ...

    def set_skeleton(self, on: bool) -> None:
        """Skeleton monitoring: measure link state only."""
        ...


@dataclass(frozen=True)
class DomainUsage:
    """What an agent holds right now."""

    domain: str
    bandwidth_mbps: int = 0
    labels: int = 0
    function_slots: int = 0
    addresses: int = 0


class NotActivated(Exception):
    """A commit-and-activate step committed the segment but did not activate it: ``error`` says why.

    A refusal (the child compensated: the segment is committed, out of service) or an activation
    not confirmed yet below (``outcome_unknown``: it rolls forward there). Exactly what an Activate
    sent after the Commit would have raised.
    """

    def __init__(self, error: FedError) -> None:
        super().__init__(str(error))
        self.error = error


@runtime_checkable
class CommitsAndActivates(Protocol):
    """A child that commits and activates a segment in one step (a lower-SP broker: one round trip).

    Children without it are told Commit, then Activate; the outcome is the same.
    """

    async def commit_and_activate(self, handle: str) -> None:
        """Commit a held segment and, once committed, activate it.

        Raises what ``commit`` would when the segment did not commit, and ``NotActivated`` (carrying
        what ``activate`` would have raised) when it committed but is not active.
        """
        ...


@runtime_checkable
class DomainAgent(Protocol):
    """Realises segments of slices in one domain (or one lower-SP)."""

    @property
    def domain_id(self) -> SpId:
        """The id the planner knows this child by (the sp_id of its notes)."""
        ...

    def notes(self) -> AsyncIterator[CapabilityNote | SignedNote]:
        """The current note at once, then each new version, until cancelled.

        An in-process domain yields plain notes; a remote child (a lower-SP) yields them signed,
        and the broker verifies them before use.
        """
        ...

    async def reserve(self, order: SegmentOrder) -> SegmentGrant:
        """Hold resources for the segment, choosing labels and addresses within its constraints.

        Raises a ``FedError`` (e.g. ``ResourceExhausted`` naming the port) and holds nothing then.
        Repeating an order with the same key returns the same grant.
        """
        ...

    async def commit(self, handle: str) -> None:
        """Make a held segment permanent."""
        ...

    async def abort(self, handle: str) -> None:
        """Release a held segment. Releasing one already released is not an error."""
        ...

    async def activate(self, handle: str) -> None:
        """Bring a committed segment into service."""
        ...

    async def deactivate(self, handle: str) -> None:
        """Take an active segment out of service and keep its reservation: it is committed again.

        Undoes what ``activate`` made (a later ``activate`` must work again) and is idempotent: a
        segment that is committed already, or whose activation never finished, is fine.
        """
        ...

    async def terminate(self, handle: str) -> None:
        """Release a committed or active segment. Idempotent."""
        ...

    async def release(self, key: str, handle: str) -> None:
        """Release whatever is held for the order ``key`` (``handle``: its grant, or "" when none came back).

        Works in every state the segment may be in (held, committed, active, in flight) and is
        idempotent; it returns only once nothing is held for the order, and raises when that cannot
        be confirmed (the caller retries). An order never seen holds nothing.
        """
        ...

    async def restore(self, handle: str, committed: bool) -> None:
        """Re-apply a persisted handle's holdings after a broker restart."""
        ...

    async def holdings(self) -> Sequence[Held]:
        """Every segment the child holds for this broker now, in the state it is in there (anti-entropy)."""
        ...

    def segment_events(self) -> AsyncIterator[SegmentEvent]:
        """What the child does to segments on its own, as it happens, until cancelled (NSI's
        reserveTimeout / errorEvent). A local domain has none: this broker's core expires its holds."""
        ...

    def describe(self, handle: str) -> tuple[Mapping[str, object], ...]:
        """The child's own segments under ``handle`` as plain dicts (empty for a local domain)."""
        ...

    def usage(self) -> DomainUsage:
        """What the agent holds now."""
        ...

    async def close(self) -> None:
        """Release connections; holdings stay."""
        ...

"""What the local domain agents (emulated, netns, OpenStack) share: held segments by handle, their state,
usage, function placement along a route and label choice at border ports.

Each agent keeps its own record of what one segment holds (an allocation of counters, or the objects
it made in a cloud); this base only needs the fields every such record has (``Holding``).
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from capability_catalog.model import BorderPort, LabelSet, SpId, TerminalId
from domain_agents.base import DomainUsage, Held, SegmentEvent, SegmentGrant
from slicing.errors import InvalidArgument, NotFound, ResourceExhausted
from slicing.model import SliceRequest, SliceState


class Holding(Protocol):
    """What one segment holds in a local domain, as far as accounting goes."""

    @property
    def key(self) -> str:
        """The order key the segment was reserved under."""
        ...

    @property
    def bandwidth_mbps(self) -> int:
        """Bandwidth held along the route."""
        ...

    @property
    def slots(self) -> tuple[tuple[str, str], ...]:
        """(pop, function type), one per function."""
        ...

    @property
    def labels(self) -> tuple[tuple[TerminalId, int], ...]:
        """The label chosen at each border terminal."""
        ...

    @property
    def addresses(self) -> tuple[tuple[TerminalId, str], ...]:
        """The address given to each endpoint."""
        ...


H = TypeVar("H", bound=Holding)


@dataclass
class HeldSegment(Generic[H]):
    """A held segment: its order, grant and holding, and the state the core last moved it to."""

    request: SliceRequest | None  # None when restored from a handle alone
    grant: SegmentGrant
    holding: H
    state: SliceState = SliceState.HELD


@dataclass(frozen=True)
class CheckedRequest:
    """A segment request whose terminals, bandwidth and subnet a local domain has checked."""

    src_pop: str
    dst_pop: str
    subnet: ipaddress.IPv4Network | ipaddress.IPv6Network


def check_request(req: SliceRequest, pop_of: Callable[[str], str | None], domain: str) -> CheckedRequest:
    """What every local domain refuses whatever is free, each error naming the request's field.

    Both terminals must be the domain's endpoints or ports (``pop_of`` finds their PoP) and differ,
    the bandwidth a positive integer, the subnet an IP network.
    """
    src_pop = pop_of(req.src)
    if src_pop is None:
        raise InvalidArgument("request.src", f"'{req.src}' is not an endpoint or port of domain {domain}")
    dst_pop = pop_of(req.dst)
    if dst_pop is None:
        raise InvalidArgument("request.dst", f"'{req.dst}' is not an endpoint or port of domain {domain}")
    if req.src == req.dst:
        raise InvalidArgument("request.dst", f"must differ from request.src ('{req.src}')")
    bw = req.bandwidth_mbps
    if isinstance(bw, bool) or not isinstance(bw, int) or bw <= 0:
        raise InvalidArgument("request.bandwidth_mbps", f"must be a positive integer (got {bw!r})")
    try:
        subnet = ipaddress.ip_network(req.subnet)
    except ValueError as exc:
        raise InvalidArgument("request.subnet", str(exc)) from None
    return CheckedRequest(src_pop, dst_pop, subnet)


def fmt_labels(labels: LabelSet) -> str:
    """A label set as ranges, ``1000-1099,2000`` (``{}`` when empty)."""
    return ",".join(str(r.first) if r.first == r.last else f"{r.first}-{r.last}" for r in labels.ranges) or "{}"


class LocalDomainAgent(Generic[H]):
    """The bookkeeping every local domain agent does the same way; subclasses make and release segments."""

    _ports: Mapping[str, BorderPort]

    def __init__(self) -> None:
        self._segments: dict[str, HeldSegment[H]] = {}  # by order key
        self._by_handle: dict[str, str] = {}  # handle -> order key

    @property
    def domain_id(self) -> SpId:
        """The domain id, which is the sp_id of its notes."""
        raise NotImplementedError

    def _pop_names(self) -> Sequence[str]:
        """Every pop of the domain, in config order."""
        raise NotImplementedError

    def _free_slots_at(self, pop: str, function_type: str) -> int:
        """How many ``function_type`` slots at ``pop`` are free now (0 when the pop has none)."""
        raise NotImplementedError

    def _hold(self, grant: SegmentGrant, holding: H, request: SliceRequest | None, state: SliceState) -> None:
        self._segments[holding.key] = HeldSegment(request, grant, holding, state)
        self._by_handle[grant.handle] = holding.key

    def _unhold(self, handle: str) -> HeldSegment[H] | None:
        key = self._by_handle.pop(handle, None)
        return None if key is None else self._segments.pop(key)

    def _segment(self, handle: str) -> HeldSegment[H]:
        key = self._by_handle.get(handle)
        if key is None:
            raise NotFound(f"no segment held under this handle in domain {self.domain_id}", domain=self.domain_id)
        return self._segments[key]

    def _place_functions(self, chain: Sequence[str], path: Sequence[str]) -> tuple[tuple[str, str], ...]:
        """A free slot for each function of the chain: on the route first, then at any other pop."""
        taken: Counter[tuple[str, str]] = Counter()
        placed: list[tuple[str, str]] = []
        others = [p for p in self._pop_names() if p not in path]
        for fn in chain:
            for pop in (*path, *others):
                if self._free_slots_at(pop, fn) - taken[(pop, fn)] > 0:
                    taken[(pop, fn)] += 1
                    placed.append((pop, fn))
                    break
            else:
                raise ResourceExhausted(f"no free '{fn}' function slot in domain {self.domain_id}")
        return tuple(placed)

    def _pick_labels(
        self,
        req: SliceRequest,
        used_at: Mapping[str, Iterable[int]] | None = None,
        used_everywhere: Iterable[int] | None = None,
        *,
        noun: str = "label",
        why_used: str = "",
    ) -> tuple[tuple[TerminalId, int], ...]:
        """One free label at each border terminal of ``req``, within the port's range and the upper SP's constraint.

        ``used_at`` holds the labels taken per port; ``used_everywhere``, when given, those taken at
        every port (a VNI in use anywhere in a cloud): the label picked for one terminal is then also
        taken for the other.
        """
        shared = None if used_everywhere is None else set(used_everywhere)
        chosen: list[tuple[TerminalId, int]] = []
        for t in (req.src, req.dst):
            port = self._ports.get(t)
            if port is None:
                continue
            allowed = port.labels
            preferred: int | None = None
            constraint = req.constraint(t)
            within = f"{port.id}'s {noun}s {fmt_labels(port.labels)}"
            if constraint is not None:
                allowed = allowed.intersect(constraint.labels)
                preferred = constraint.preferred
                within = (
                    f"{fmt_labels(allowed)} (port {fmt_labels(port.labels)} ∩ asked {fmt_labels(constraint.labels)})"
                )
            used = set((used_at or {}).get(t, ()))
            if shared is not None:
                used |= shared | {v for _, v in chosen}
            label = allowed.first_free(used, prefer=preferred)
            if label is None:
                raise ResourceExhausted(f"no free {noun} on port {t} within {within}{why_used}")
            chosen.append((t, label))
        return tuple(chosen)

    async def terminate(self, handle: str) -> None:
        """Release a segment; implemented by each agent."""
        raise NotImplementedError

    async def release(self, key: str, handle: str) -> None:
        """Release whatever is held for order ``key``, by its handle or, when none came back, by the key."""
        if not handle:
            held = self._segments.get(key)
            if held is None:
                return  # a reservation that never completed here holds nothing in memory
            handle = held.grant.handle
        await self.terminate(handle)

    async def segment_events(self) -> AsyncIterator[SegmentEvent]:
        """A local domain changes nothing on its own: nothing is ever yielded."""
        await asyncio.Event().wait()
        yield SegmentEvent("")  # pragma: no cover - never reached

    async def holdings(self) -> Sequence[Held]:
        """Every segment held in the domain, in the state the core last moved it to."""
        return [Held(key, seg.grant.handle, seg.state) for key, seg in self._segments.items()]

    def state_of(self, handle: str) -> SliceState:
        """The state the core last moved a held segment to (``NotFound`` when not held)."""
        return self._segment(handle).state

    def describe(self, handle: str) -> tuple[Mapping[str, object], ...]:
        """A local domain has no segments of its own to report."""
        return ()

    def usage(self) -> DomainUsage:
        """Sum of held segments' bandwidth, and counts of their labels, function slots and addresses."""
        held = [s.holding for s in self._segments.values()]
        return DomainUsage(
            domain=self.domain_id,
            bandwidth_mbps=sum(h.bandwidth_mbps for h in held),
            labels=sum(len(h.labels) for h in held),
            function_slots=sum(len(h.slots) for h in held),
            addresses=sum(len(h.addresses) for h in held),
        )


__all__ = ["HeldSegment", "Holding", "LocalDomainAgent", "fmt_labels"]

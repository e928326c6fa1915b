"""An emulated domain: pops, internal links, terminals and function slots, all accounting in memory.

It is the fake behind the ``DomainAgent`` port: unit tests, scenarios and demos run whole
federations on it. Its knobs (``latency_s``, ``fail_at``) let tests slow it down or make it fail at
one step. The handle it returns is the allocation itself as JSON, so ``restore`` can rebuild the
holdings after a broker restart without any state of its own::

    {"v": 1, "domain": "L1", "key": "s1.0.0", "bandwidth_mbps": 100,
     "links": [{"a": "core", "b": "edge", "mbps": 100}], "terminals": {"L1.ep": 100, "L1.to-L2": 100},
     "slots": [{"pop": "core", "type": "firewall"}], "labels": {"L1.to-L2": 1000},
     "addresses": {"L1.ep": "10.0.0.1/24"}}
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from itertools import combinations, pairwise

import networkx as nx

from capability_catalog.authoring import OfferPolicy
from capability_catalog.frontier import route_sequences
from capability_catalog.model import (
    BorderPort,
    CapabilityNote,
    FunctionOffer,
    SpId,
    TerminalId,
    Transit,
)
from capability_catalog.served import serve, served_problems
from domain_agents.authored import live_header, past, refresh_in, stop_serving
from domain_agents.base import DomainUsage, HealthFeed, HealthSample, Held, SegmentGrant, SegmentOrder
from domain_agents.emulated_books import Allocation, Books, Condition
from domain_agents.emulated_config import (
    FAIL_STEPS,
    EmulatedDomainConfig,
    _pair,
)
from domain_agents.ledger import Ledger
from domain_agents.local import LocalDomainAgent, check_request
from domain_agents.routing import walk_through
from slicing.errors import (
    AlreadyExists,
    FedError,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)
from slicing.model import SliceRequest, SliceState

# Path latency may equal the budget; the slack absorbs float sums done in another order.
_LATENCY_SLACK_MS = 1e-9


# --- the agent -------------------------------------------------------------------------------


class EmulatedDomainAgent(LocalDomainAgent[Allocation]):
    """A ``DomainAgent`` over an emulated domain: min-latency routing, all-or-nothing accounting."""

    def __init__(
        self,
        config: EmulatedDomainConfig,
        clock: Callable[[], float],
        *,
        latency_s: float | None = None,
        fail_at: str | None = None,
        ledger: Ledger | None = None,
    ) -> None:
        # The knobs default to the config's ``faults``, so every agent built from a config honours them.
        fail_at = fail_at if fail_at is not None else config.faults.fail_at
        latency_s = latency_s if latency_s is not None else config.faults.latency_s
        if fail_at is not None and fail_at not in FAIL_STEPS:
            raise ValueError(f"fail_at must be one of {sorted(FAIL_STEPS)} or None, got {fail_at!r}")
        if latency_s < 0:
            raise ValueError(f"latency_s must not be negative, got {latency_s}")
        super().__init__()
        self.config = config
        self._clock = clock
        self.latency_s = latency_s
        self.fail_at = fail_at
        self._graph = nx.Graph()
        self._graph.add_nodes_from(config.pops)
        for link in config.links:
            self._graph.add_edge(link.a, link.b, latency_ms=link.latency_ms, bandwidth_mbps=link.bandwidth_mbps)
        self._capacity: dict[str, int] = {e.endpoint.id: e.endpoint.capacity_mbps for e in config.endpoints}
        self._capacity.update({p.port.id: p.port.capacity_mbps for p in config.ports})
        self._ports: dict[str, BorderPort] = {p.port.id: p.port for p in config.ports}
        self._slots: dict[tuple[str, str], int] = {(f.pop, f.type): f.slots for f in config.functions}
        self._books = Books()
        # With replicas: the books live in the shared store; ``_seen`` is their version these mirror.
        self._ledger = ledger
        self._seen = 0
        self._offer = config.offer
        # With nothing held yet: what an authored note's shares are taken from.
        self._full = self._live_note(previous=None)
        if config.authored is not None:
            # Refuse to start rather than publish a promise the domain cannot keep.
            problems = served_problems(config.authored, self._full)
            if problems:
                raise InvalidArgument(config.note_field or "note_file", "; ".join(problems))
        self._note = self._build_note(previous=None)
        # Set when holdings changed without a new note yet: built once, when next read.
        self._stale = False
        self._changed = asyncio.Event()
        # Conditions a lab put on links ("a/b", sorted) and pops: what segments across them measure.
        self._conditions: dict[str, Condition] = {}
        self._health = HealthFeed()
        self.skeleton = False

    # --- notes --------------------------------------------------------------------------------

    @property
    def domain_id(self) -> SpId:
        """The domain id, which is the sp_id of its notes."""
        return self.config.id

    @property
    def note(self) -> CapabilityNote:
        """The note published now."""
        self._sync()
        if self._stale:
            self.republish()
        return self._note

    def republish(self) -> CapabilityNote:
        """Issue a new note version now and wake every ``notes()`` subscriber."""
        self._stale = False
        self._note = self._build_note(previous=self._note)
        self._wake()
        return self._note

    def _holdings_changed(self) -> None:
        """The note no longer shows what is free: build a new one when it is next read, not now.

        Holdings change in bursts (a restart restores all of them, concurrent customers reserve at
        once); subscribers are woken now, and one note covers every change made before they read it.
        """
        self._stale = True
        self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    # --- shared books (replicas) -----------------------------------------------------------------

    #: How often a replica looks whether another one changed the books, to publish what is free now.
    SHARED_POLL_S = 0.5

    @contextlib.asynccontextmanager
    async def _changing(self) -> AsyncIterator[None]:
        """Around one change of the books: with a ledger, under its lock and on the books as stored."""
        if self._ledger is None:
            yield
            return
        async with self._ledger.guard(self.domain_id):
            self._sync()
            yield

    def _sync(self) -> bool:
        """Mirror the shared books when another replica changed them; whether they had changed."""
        if self._ledger is None or self._ledger.version(self.domain_id) == self._seen:
            return False
        version, entries = self._ledger.entries(self.domain_id)
        known = self._segments
        self._segments, self._by_handle, self._books = {}, {}, Books()
        for key, handle, state in entries:
            alloc = Allocation.from_handle(handle)
            mine = known.get(key)
            request = mine.request if mine is not None and mine.grant.handle == handle else None
            self._books.apply(alloc)
            self._hold(SegmentGrant(handle, dict(alloc.labels), dict(alloc.addresses)), alloc, request, state)
        self._seen = version
        self._holdings_changed()
        return True

    def _record(self, key: str, handle: str, state: SliceState | None) -> None:
        """Write one segment's change to the shared books (None: released)."""
        if self._ledger is None:
            return
        if state is None:
            self._seen = self._ledger.drop(self.domain_id, key)
        else:
            self._seen = self._ledger.put(self.domain_id, key, handle, state)

    # Reads see what other replicas changed (each a version check, a read of the books when it moved).

    async def holdings(self) -> Sequence[Held]:
        """Every segment held in the domain, in the state the core last moved it to."""
        self._sync()
        return await super().holdings()

    def state_of(self, handle: str) -> SliceState:
        """The state the core last moved a held segment to (``NotFound`` when not held)."""
        self._sync()
        return super().state_of(handle)

    def usage(self) -> DomainUsage:
        """Sum of held segments' bandwidth, and counts of their labels, function slots and addresses."""
        self._sync()
        return super().usage()

    @property
    def offer(self) -> OfferPolicy:
        """The operator's current offer policy."""
        return self._offer

    def set_offer(self, offer: OfferPolicy) -> CapabilityNote:
        """An operator's edit of the offer: publish a new note version at once."""
        self._offer = offer
        return self.republish()

    async def notes(self) -> AsyncIterator[CapabilityNote]:
        """The current note at once, then each note ``republish`` issues, until cancelled.

        A note is re-issued on its own at half its lifetime, so a long-running broker never
        holds only an expired note of its domain; once its note file's ``expires_at`` has passed,
        nothing more (``domain_agents.authored``).
        """
        cfg = self.config
        note = self.note
        while True:
            if past(cfg.note_expires_at, self._clock()):
                await stop_serving(cfg.id, cfg.note_field, cfg.note_file, cfg.note_expires_at)
            yield note
            if self.note is note:
                try:
                    wait = refresh_in(note, cfg.note_expires_at, self._clock())
                    if self._ledger is not None:  # another replica's change wakes no one here: look
                        wait = min(wait, self.SHARED_POLL_S)
                        if self._sync():
                            continue
                    await asyncio.wait_for(self._changed.wait(), timeout=wait)
                except TimeoutError:
                    if self._ledger is None or not self._sync():
                        self.republish()
            note = self.note

    def _build_note(self, previous: CapabilityNote | None) -> CapabilityNote:
        live = self._live_note(previous)
        return live if self.config.authored is None else serve(self.config.authored, live, self._full)

    def _live_note(self, previous: CapabilityNote | None) -> CapabilityNote:
        """The note of the domain's own facts and free capacity (what an authored note is served over)."""
        cfg, offer = self.config, self._offer
        note = live_header(
            cfg.id,
            offer,
            self._clock(),
            ttl_s=cfg.note_ttl_s,
            until=cfg.note_expires_at,
            previous=previous,
            authored=cfg.authored,
        )
        if offer.withdrawn:
            # Withdrawn: a valid note that sells nothing, so every SP above stops using it at once.
            return note
        return replace(
            note,
            endpoints=tuple(e.endpoint for e in cfg.endpoints),
            ports=tuple(p.port for p in cfg.ports),
            transit=self._transit(),
            # Routed: an SP above places a function only on the transit entries that pass its pop.
            functions=tuple(
                FunctionOffer(f.type, f.pop, max(0, f.slots - self._books.slots[(f.pop, f.type)]), routed=True)
                for f in cfg.functions
            ),
        )

    def _transit(self) -> tuple[Transit, ...]:
        terminals = [(e.endpoint.id, e.pop) for e in self.config.endpoints]
        terminals += [(p.port.id, p.pop) for p in self.config.ports]
        routes: dict[str, tuple[dict[str, float], dict[str, list[str]]]] = dict(
            nx.all_pairs_dijkstra(self._graph, weight="latency_ms")
        )
        out: list[Transit] = []
        used = self._books
        for (ta, pa), (tb, pb) in combinations(terminals, 2):
            # What is free now, not what was built: the note follows capacity taken by slices.
            cap = min(self._capacity[ta] - used.terminals[ta], self._capacity[tb] - used.terminals[tb])
            dist, path_to = routes[pa]
            if pb not in dist:
                continue  # pops not connected: no transit between these terminals
            path = path_to[pb]
            bottleneck = min(
                (int(self._graph.edges[u, v]["bandwidth_mbps"]) - used.links[_pair(u, v)] for u, v in pairwise(path)),
                default=cap,
            )
            out.append(Transit(ta, tb, float(dist[pb]), min(cap, bottleneck)))
            out.extend(self._routed_transit(ta, pa, tb, pb, cap))
        return tuple(out)

    def _routed_transit(self, ta: TerminalId, pa: str, tb: TerminalId, pb: str, cap: int) -> list[Transit]:
        """Per route sequence of function types with free slots, the least-latency walk through their pops.

        The same walk ``_route`` reserves for a chain: what the note promises is what a reservation gets.
        """
        kinds = {f.type for f in self.config.functions if self._free_slots_at(f.pop, f.type) > 0}
        out = []
        for seq in route_sequences(kinds)[1:]:
            walk = walk_through(self._graph, pa, pb, seq, self._free_slots_at)
            if walk is None:
                continue
            free = [
                (int(self._graph.edges[u, v]["bandwidth_mbps"]) - self._books.links[(u, v)]) // n
                for (u, v), n in walk.link_uses().items()
            ]
            out.append(Transit(ta, tb, walk.latency_ms, min([cap, *free]), functions=seq))
        return out

    # --- segments -----------------------------------------------------------------------------

    async def _step(self, step: str) -> None:
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)

    def _inject(self, step: str) -> None:
        if self.fail_at != step:
            return
        message = f"injected failure at {step}"
        if step == "reserve":
            raise ResourceExhausted(message, domain=self.domain_id)
        raise Unavailable(message, domain=self.domain_id)

    async def reserve(self, order: SegmentOrder) -> SegmentGrant:
        """Hold bandwidth, slots, labels and addresses for the segment, all or nothing."""
        await self._step("reserve")
        if not order.hold_time_s > 0:
            raise InvalidArgument("hold_time_s", f"must be positive (got {order.hold_time_s})", domain=self.domain_id)
        async with self._changing():
            held = self._segments.get(order.key)
            if held is not None:
                # A segment restored from its handle alone has no request to compare: trust the key.
                if held.request is not None and held.request != order.request:
                    raise AlreadyExists(
                        f"order key '{order.key}' is held for a different request", domain=self.domain_id
                    )
                return held.grant
            self._inject("reserve")
            try:
                alloc = self._allocate(order.key, order.request)
            except FedError as exc:
                raise exc.in_domain(self.domain_id) from None
            grant = SegmentGrant(handle=alloc.to_handle(), labels=dict(alloc.labels), addresses=dict(alloc.addresses))
            self._record(order.key, grant.handle, SliceState.HELD)
            self._books.apply(alloc)
            self._hold(grant, alloc, order.request, SliceState.HELD)
        self._holdings_changed()
        return grant

    def _allocate(self, key: str, req: SliceRequest) -> Allocation:
        """Choose everything the segment needs without holding any of it; raise when something is missing."""
        dom = self.domain_id
        checked = check_request(req, self.config.pop_of, dom)
        bw = req.bandwidth_mbps
        for t in (req.src, req.dst):
            free = self._capacity[t] - self._books.terminals[t]
            if bw > free:
                raise ResourceExhausted(f"{t}: {free} of {self._capacity[t]} Mbit/s free, {bw} Mbit/s asked")
        pops, placements = self._route(req, checked.src_pop, checked.dst_pop)
        links = tuple(_pair(u, v) for u, v in pairwise(pops))
        return Allocation(
            domain=dom,
            key=key,
            bandwidth_mbps=bw,
            links=links,
            terminals=(req.src, req.dst),
            slots=placements,
            labels=self._pick_labels(req, self._books.labels),
            addresses=self._choose_addresses(req, checked.subnet),
        )

    def _route(self, req: SliceRequest, src_pop: str, dst_pop: str) -> tuple[list[str], tuple[tuple[str, str], ...]]:
        """The min-latency pop walk over links with enough free bandwidth, through each chain function's pop in order.

        Returns the pops walked (a pop may repeat when the walk goes out and back to a function) and
        the (pop, function type) of each chain function.
        """
        bw = req.bandwidth_mbps
        for kind, wanted in Counter(req.chain).items():
            if sum(self._free_slots_at(pop, kind) for pop in self.config.pops) < wanted:
                raise ResourceExhausted(f"no free '{kind}' function slot in domain {self.domain_id}")
        usable = nx.subgraph_view(
            self._graph,
            filter_edge=lambda u, v: self._graph.edges[u, v]["bandwidth_mbps"] - self._books.links[_pair(u, v)] >= bw,
        )
        walk = walk_through(usable, src_pop, dst_pop, req.chain, self._free_slots_at)
        over = walk is not None and any(
            self._graph.edges[u, v]["bandwidth_mbps"] - self._books.links[(u, v)] < bw * n
            for (u, v), n in walk.link_uses().items()
        )
        if walk is None or over:
            through = f" through {', '.join(req.chain)}" if req.chain else ""
            raise ResourceExhausted(
                f"no path from {req.src} ({src_pop}) to {req.dst} ({dst_pop}){through} in domain {self.domain_id}"
                f" with {bw} Mbit/s free" + (" and a free slot for each function" if req.chain else "")
            )
        latency, path = walk.latency_ms, list(walk.pops)
        budget = req.latency_budget_ms
        if budget is not None and float(latency) > budget + _LATENCY_SLACK_MS:
            raise ResourceExhausted(
                f"the path from {req.src} to {req.dst} with {bw} Mbit/s free takes {float(latency):g} ms,"
                f" over the budget of {budget:g} ms"
            )
        return [str(p) for p in path], walk.placements

    def _choose_addresses(
        self, req: SliceRequest, subnet: ipaddress.IPv4Network | ipaddress.IPv6Network
    ) -> tuple[tuple[TerminalId, str], ...]:
        chosen: list[tuple[TerminalId, str]] = []
        taken: set[str] = set()
        for t in (req.src, req.dst):
            if t in self._ports:
                continue
            host = self._books.free_host(subnet, taken)
            if host is None:
                raise ResourceExhausted(f"no free address left in subnet {subnet} for {t}")
            taken.add(host)
            chosen.append((t, f"{host}/{subnet.prefixlen}"))
        return tuple(chosen)

    async def commit(self, handle: str) -> None:
        """Mark a held segment committed (``NotFound`` for a handle not held)."""
        await self._step("commit")
        async with self._changing():
            seg = self._segment(handle)
            self._inject("commit")
            if seg.state is SliceState.HELD:
                self._move(seg.holding.key, handle, SliceState.COMMITTED)

    async def activate(self, handle: str) -> None:
        """Mark a segment active (``NotFound`` for a handle not held)."""
        await self._step("activate")
        async with self._changing():
            seg = self._segment(handle)
            self._inject("activate")
            if seg.state is not SliceState.ACTIVE:
                self._move(seg.holding.key, handle, SliceState.ACTIVE)

    async def deactivate(self, handle: str) -> None:
        """Mark an active segment committed again (``NotFound`` for a handle not held); idempotent."""
        await self._step("deactivate")
        async with self._changing():
            seg = self._segment(handle)
            if seg.state is SliceState.ACTIVE:
                self._move(seg.holding.key, handle, SliceState.COMMITTED)

    async def abort(self, handle: str) -> None:
        """Release a held segment; an unknown or released handle is a no-op."""
        await self._step("abort")
        async with self._changing():
            self._release(handle)

    async def terminate(self, handle: str) -> None:
        """Release a committed or active segment; an unknown or released handle is a no-op."""
        await self._step("terminate")
        async with self._changing():
            self._release(handle)

    async def release(self, key: str, handle: str) -> None:
        """Release what order ``key`` holds; with shared books, as the store has them (another replica's too)."""
        if not handle and self._ledger is not None:
            self._sync()
        await super().release(key, handle)

    def _move(self, key: str, handle: str, state: SliceState) -> None:
        self._record(key, handle, state)
        self._segments[key].state = state

    def _release(self, handle: str) -> None:
        key = self._by_handle.get(handle)
        if key is None:
            return
        self._record(key, handle, None)
        seg = self._unhold(handle)
        if seg is None:
            return
        self._books.release(seg.holding)
        self._holdings_changed()

    async def restore(self, handle: str, committed: bool) -> None:
        """Re-apply a handle's allocation after a restart; capacity is not re-checked, holdings are facts."""
        await self._step("restore")
        alloc = Allocation.from_handle(handle)
        if alloc.domain != self.domain_id:
            raise InvalidArgument("handle", f"belongs to domain {alloc.domain}, not {self.domain_id}")
        state = SliceState.COMMITTED if committed else SliceState.HELD
        async with self._changing():
            if alloc.key in self._segments:
                seg = self._segments[alloc.key]
                if seg.grant.handle != handle:
                    raise AlreadyExists(f"order key '{alloc.key}' is held under another handle", domain=self.domain_id)
                if self._ledger is None or seg.state is SliceState.HELD:  # shared books: a replica may be ahead
                    self._move(alloc.key, handle, state)
                return
            self._check_restorable(alloc)
            grant = SegmentGrant(handle=handle, labels=dict(alloc.labels), addresses=dict(alloc.addresses))
            self._record(alloc.key, handle, state)
            self._books.apply(alloc)
            self._hold(grant, alloc, None, state)
        self._holdings_changed()

    def _check_restorable(self, alloc: Allocation) -> None:
        dom = self.domain_id
        known_links = {link.key for link in self.config.links}
        for a, b in alloc.links:
            if (a, b) not in known_links:
                raise InvalidArgument("handle", f"link {a}–{b} is not in domain {dom}")
        for t in alloc.terminals:
            if t not in self._capacity:
                raise InvalidArgument("handle", f"terminal '{t}' is not in domain {dom}")
        for slot in alloc.slots:
            if slot not in self._slots:
                raise InvalidArgument("handle", f"no '{slot[1]}' slots at pop {slot[0]} in domain {dom}")
        for port, label in alloc.labels:
            owner = self._books.labels.get(port, {}).get(label)
            if port not in self._ports:
                raise InvalidArgument("handle", f"port '{port}' is not in domain {dom}")
            if owner is not None:
                raise ResourceExhausted(f"label {label} on port {port} is already held by '{owner}'", domain=dom)

    def _pop_names(self) -> Sequence[str]:
        return self.config.pops

    # --- health (issue 14) -----------------------------------------------------------------------

    def _target_key(self, target: str) -> str:
        if "/" in target:
            a, _, b = target.partition("/")
            key = "/".join(_pair(a, b))
            if _pair(a, b) not in {link.key for link in self.config.links}:
                raise InvalidArgument("target", f"no link {a}/{b} in domain {self.domain_id}")
            return key
        if target not in self.config.pops:
            raise InvalidArgument("target", f"no pop or link '{target}' in domain {self.domain_id} (a link is 'a/b')")
        return target

    def set_condition(self, target: str, condition: Condition | None) -> int:
        """Degrade, cut (``condition``) or restore (None) a link ``a/b`` or a pop; returns the active segments touched.

        Every active segment across the target is measured again at once (``health``).
        """
        key = self._target_key(target)
        if condition is None:
            self._conditions.pop(key, None)
        else:
            self._conditions[key] = condition
        touched = 0
        now = self._clock()
        for seg in list(self._segments.values()):
            if seg.state is not SliceState.ACTIVE or key not in self._crossed(seg.holding):
                continue
            touched += 1
            for sample in self.measure(seg.grant.handle, now):
                self._publish(sample)
        return touched

    def _crossed(self, alloc: Allocation) -> set[str]:
        pops = {p for link in alloc.links for p in link}
        for t in alloc.terminals:
            pop = self.config.pop_of(t)
            if pop is not None:
                pops.add(pop)
        return pops | {"/".join(link) for link in alloc.links}

    def measure(self, handle: str, now: float) -> list[HealthSample]:
        """What a segment measures now under the lab's conditions."""
        alloc = self._segment(handle).holding
        latency = sum(float(self._graph.edges[a, b]["latency_ms"]) for a, b in alloc.links)
        delivered = 1.0
        up = 1.0
        for key in sorted(self._crossed(alloc)):
            cond = self._conditions.get(key)
            if cond is None:
                continue
            latency += cond.added_latency_ms
            delivered *= 1.0 - cond.loss
            if cond.down:
                up = 0.0
        samples = [HealthSample(handle, "link_up", up, now)]
        if not self.skeleton:
            samples.append(HealthSample(handle, "latency_ms", latency, now))
            samples.append(HealthSample(handle, "loss", 1 - delivered, now))
        return samples

    def _publish(self, sample: HealthSample) -> None:
        self._health.publish(sample)

    def health(self) -> AsyncIterator[HealthSample]:
        """Samples of the segments the lab's conditions touch, as they change."""
        return self._health.samples()

    def set_skeleton(self, on: bool) -> None:
        """Skeleton monitoring: measure link state only."""
        self.skeleton = on

    def _free_slots_at(self, pop: str, function_type: str) -> int:
        slot = (pop, function_type)
        return self._slots.get(slot, 0) - self._books.slots[slot]

    async def close(self) -> None:
        """Nothing to close; holdings stay."""

"""The OpenStack domain agent: a leaf SP's segments as real Neutron networks and Placement allocations.

Capacity lives in Placement: one resource provider per PoP, with ``VCPU``, ``MEMORY_MB``,
``CUSTOM_FED_BANDWIDTH_MBPS`` and ``CUSTOM_FED_FUNCTION_SLOTS`` inventories. Labels are the VXLAN
VNIs of the range the SP dedicates to the federation at each border port, less those Neutron
networks use now. The published note is built from both (``domain_agents.openstack_offer``) and
re-issued when they change.

A segment is, in OpenStack::

    Placement consumer  uuid5(domain, order key), consumer_type FEDBROKER:
                        bandwidth at every PoP on the route, a function slot (+ VCPU, MEMORY_MB)
                        per network function
    Neutron network     VXLAN, one segment per border terminal on its negotiated VNI
                        (no border: Neutron picks from its tenant range), admin down until activate
      subnet            the upper-SP's subnet, no gateway, no DHCP
      ports             one per terminal; endpoints get an address from the subnet

each named ``fedbroker-<domain>-<consumer>`` from its create request on (so it is findable from the
reservation whatever cuts the reserve short) and tagged ``fedbroker-res:<consumer>`` right after;
commit adds ``fedbroker:committed``; abort, expiry and terminate delete everything with the tag or
the name and the consumer's allocations. The handle is JSON of what was made, so ``restore`` finds
it again after a restart.

Every call to OpenStack is bounded (``api_timeout_s``); a reserve runs as a task of the agent, so a
caller that gives up (its deadline, a cancelled call) does not cut it in half: it ends, and a
release of the same order waits for it before it looks for what to delete.

Health (issue 14): every ``health_interval_s`` the agent reads each active segment's network and
ports from Neutron (``Cloud.segment_health``) and publishes ``link_up`` on ``health`` when it
changes (a segment is presumed up). It is link state, so skeleton monitoring keeps it.

openstacksdk blocks: every call goes through ``asyncio.to_thread``, and its errors arrive here
already translated (``domain_agents/openstack_cloud.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import itertools
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from capability_catalog.model import (
    BorderPort,
    CapabilityNote,
    SpId,
    TerminalId,
)
from capability_catalog.served import serve, served_problems
from domain_agents.authored import past, refresh_at, stop_serving
from domain_agents.base import HealthFeed, HealthSample, SegmentGrant, SegmentOrder
from domain_agents.local import LocalDomainAgent
from domain_agents.openstack_config import OpenStackDomainConfig
from domain_agents.openstack_model import (
    BANDWIDTH,
    COMMITTED_TAG,
    FUNCTION_SLOTS,
    HOLD_PREFIX,
    Credentials,
    Made,
    NetworkSpec,
    NoAnswer,
    PortSpec,
    VniInUse,
    consumer_id,
    consumer_of,
    created_at,
    domain_tag,
    hold_tag,
    reservation_tag,
    tags_of,
)
from domain_agents.openstack_offer import OpenStackOffer, View
from domain_agents.routing import walk_through
from slicing.errors import AlreadyExists, FedError, InvalidArgument, NotFound, ResourceExhausted
from slicing.model import SliceRequest, SliceState

if TYPE_CHECKING:  # openstacksdk loads only when an agent connects, not when a config is read
    from domain_agents.openstack_cloud import Cloud

log = logging.getLogger(__name__)

_VNI_ATTEMPTS = 4
T = TypeVar("T")


# --- segments --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    pops: tuple[str, ...]
    slots: tuple[tuple[str, str], ...]
    labels: tuple[tuple[TerminalId, int], ...]
    resources: Mapping[str, Mapping[str, int]]  # pop -> resource class -> amount


# --- the agent -------------------------------------------------------------------------------


class OpenStackDomainAgent(LocalDomainAgent[Made]):
    """A ``DomainAgent`` whose segments are Neutron networks and Placement allocations."""

    def __init__(
        self,
        config: OpenStackDomainConfig,
        clock: Callable[[], float] = time.time,
        *,
        cloud_factory: Callable[[Credentials], Cloud] | None = None,
        health_interval_s: float = 5.0,
    ) -> None:
        super().__init__()
        self.health_interval_s = health_interval_s
        self._health = HealthFeed()
        self._health_task: asyncio.Task[None] | None = None
        self._down: dict[str, str] = {}  # order key -> why its segment is down now
        self.config = config
        self._clock = clock
        self._cloud_factory = cloud_factory
        self._cloud: Cloud | None = None
        self._providers: dict[str, str] = {}  # pop -> provider uuid
        self._connect_lock = asyncio.Lock()
        self._offer = OpenStackOffer(config)
        self._ports: dict[str, BorderPort] = {p.port.id: p.port for p in config.ports}
        self._pending_vnis: set[int] = set()
        self._inflight: dict[str, asyncio.Task[SegmentGrant]] = {}  # reserves still running, by order key
        self._note: CapabilityNote | None = None
        self._changed = asyncio.Event()

    @property
    def domain_id(self) -> SpId:
        """The domain id, which is the sp_id of its notes."""
        return self.config.id

    # --- OpenStack access ---------------------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.to_thread(fn, *args)
        except FedError as exc:
            raise exc.in_domain(self.domain_id) from None

    async def connect(self, patience_s: float = 0.0) -> None:
        """Log in to Keystone and find (or set up) every PoP's resource provider; idempotent.

        Raises ``Unauthenticated`` / ``InvalidArgument`` naming the credentials setting when
        Keystone refuses, and ``NotFound`` naming the PoP when its provider does not exist. A
        service that does not answer, or answers 5xx, is tried again with a growing pause, each
        attempt logged, for up to ``patience_s`` (a broker starting while OpenStack is busy waits for
        it; a refusal is never retried); then the last error is raised.
        """
        give_up = time.monotonic() + patience_s
        pause = 0.5
        for attempt in itertools.count(1):
            try:
                await self._connect_once()
                return
            except FedError as exc:
                left = give_up - time.monotonic()
                if not exc.retryable or left <= 0:
                    raise
                wait = min(pause, left)
                log.warning(
                    "%s: connecting to OpenStack failed (attempt %d): %s; trying again in %.1f s (giving up in %.0f s)",
                    self.domain_id, attempt, exc, wait, left,
                )  # fmt: skip
                await asyncio.sleep(wait)
                pause = min(pause * 2, 5.0)

    async def _connect_once(self) -> None:
        async with self._connect_lock:
            if self._cloud is not None:
                return
            factory = self._cloud_factory
            if factory is None:
                from domain_agents.openstack_cloud import Cloud

                factory = Cloud
            cloud = await self._call(factory, self.config.credentials)
            try:
                for i, pop in enumerate(self.config.pops):
                    if pop.inventory is not None:
                        uuid_ = await self._call(cloud.ensure_provider, pop.resource_provider, pop.inventory)
                    else:
                        found = await self._call(cloud.provider, pop.resource_provider)
                        if found is None:
                            where = f"{self.config.credentials.path}.pops[{i}].resource_provider"
                            raise NotFound(
                                f"{where}: Placement has no resource provider '{pop.resource_provider}'",
                                domain=self.domain_id,
                            )
                        uuid_ = found
                    self._providers[pop.name] = uuid_
            except BaseException:
                await asyncio.to_thread(cloud.close)
                raise
            self._cloud = cloud
            await self._refresh()

    async def _ready(self) -> Cloud:
        if self._cloud is None:
            await self.connect()
        assert self._cloud is not None
        return self._cloud

    async def _refresh(self) -> bool:
        """Re-read capacity and VNIs; True when they differ from the last reading."""
        cloud = await self._ready()
        free = {}
        for pop in self.config.pops:
            free[pop.name] = await self._call(cloud.free, self._providers[pop.name], pop.resource_provider)
        used = await self._call(cloud.used_vnis)
        view = View(free, used)
        changed = view != self._offer.view
        self._offer.view = view
        return changed

    # --- notes --------------------------------------------------------------------------------

    @property
    def providers(self) -> Mapping[str, str]:
        """Resource provider uuid per PoP (after ``connect``)."""
        return dict(self._providers)

    async def notes(self) -> AsyncIterator[CapabilityNote]:
        """The current note at once, then a new one whenever OpenStack's capacity or VNIs change.

        OpenStack is polled every ``poll_s`` (others may take capacity or VNIs too), after each of
        this agent's own changes, and the note is re-issued at half its lifetime regardless (once
        its note file's ``expires_at`` has passed, nothing more: ``domain_agents.authored``).
        """
        cfg = self.config
        await self._ready()
        if self._note is None:
            self._republish()
        note = self._note
        assert note is not None
        if past(cfg.note_expires_at, self._clock()):
            await stop_serving(cfg.id, cfg.note_field, cfg.note_file, cfg.note_expires_at)
        yield note
        while True:
            if self._note is note:
                due = refresh_at(note, cfg.note_expires_at)
                wait = min(self.config.poll_s, max(0.05, due - self._clock()))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), timeout=wait)
                if self._note is note:
                    try:
                        await self.sweep()
                        changed = await self._refresh()
                    except FedError as exc:
                        log.warning("domain %s: cannot read OpenStack now: %s", self.domain_id, exc)
                        changed = False
                    if changed or self._clock() >= due:
                        self._republish()
                    else:
                        continue
            note = self._note
            assert note is not None
            if past(cfg.note_expires_at, self._clock()):
                await stop_serving(cfg.id, cfg.note_field, cfg.note_file, cfg.note_expires_at)
            yield note

    def _republish(self) -> CapabilityNote:
        self._note = self._build_note(self._note)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        return self._note

    def _build_note(self, previous: CapabilityNote | None) -> CapabilityNote:
        live = self._offer.note(self._clock(), previous)
        authored = self.config.authored
        return live if authored is None else serve(authored, live, self._full_note())

    def check_authored(self) -> None:
        """Refuse a note file that promises what the cloud cannot keep (after ``connect`` and the restore)."""
        if self.config.authored is not None:
            problems = served_problems(self.config.authored, self._full_note())
            if problems:
                raise InvalidArgument(self.config.note_field or "note_file", "; ".join(problems))

    def _full_note(self) -> CapabilityNote:
        """The note with nothing this agent holds taken and every VNI of its ports: an authored note's whole."""
        full = self._offer.unheld(seg.holding for seg in self._segments.values())
        return self._offer.note(self._clock(), None, full)

    def _after_change(self, made: Made, sign: int) -> None:
        """Account a segment made (+1) or released (-1) in the view and re-publish, without asking OpenStack.

        The next poll reconciles the view with what OpenStack says (others change it too).
        """
        self._offer.account(made, sign)
        if self._note is not None:
            self._republish()

    # --- segments -----------------------------------------------------------------------------

    async def reserve(self, order: SegmentOrder) -> SegmentGrant:
        """Make the segment's allocations, network, subnet and ports, all or nothing."""
        dom = self.domain_id
        if not order.hold_time_s > 0:
            raise InvalidArgument("hold_time_s", f"must be positive (got {order.hold_time_s})", domain=dom)
        held = self._segments.get(order.key)
        if held is not None:
            if held.request is not None and held.request != order.request:
                raise AlreadyExists(f"order key '{order.key}' is held for a different request", domain=dom)
            return held.grant
        running = self._inflight.get(order.key)
        if running is not None:  # the same order again while the first is still being made: one answer
            await asyncio.wait([running])
            return await self.reserve(order)
        # The agent owns the work: a caller that gives up ends its wait, not the reserve (every
        # OpenStack call in it is bounded), so nothing is left half-made by a cancellation.
        task = asyncio.get_running_loop().create_task(self._reserve(order), name=f"reserve {order.key}")
        self._inflight[order.key] = task
        task.add_done_callback(functools.partial(self._reserve_ended, order.key))
        return await asyncio.shield(task)

    def _reserve_ended(self, key: str, task: asyncio.Task[SegmentGrant]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled() and task.exception() is not None:
            log.debug("domain %s: reserve of %s failed: %s", self.domain_id, key, task.exception())

    async def _settled(self, key: str) -> None:
        """Wait until no reserve of order ``key`` runs here (its outcome is then in ``_segments`` or gone)."""
        running = self._inflight.get(key)
        if running is not None:
            await asyncio.wait([running])

    async def _reserve(self, order: SegmentOrder) -> SegmentGrant:
        dom = self.domain_id
        try:
            self._offer.validate(order.request)
        except FedError as exc:
            raise exc.in_domain(dom) from None
        cloud = await self._ready()
        consumer = consumer_id(dom, order.key)
        exclude: set[int] = set()
        conflict: VniInUse | None = None
        for attempt in range(_VNI_ATTEMPTS):
            try:
                plan = self._plan(order.request, exclude)
            except FedError as exc:
                # After Neutron refused a VNI, its refusal says more than "no other VNI is left".
                raise (conflict if conflict is not None else exc).in_domain(dom) from None
            vnis = {v for _, v in plan.labels}
            self._pending_vnis |= vnis
            try:
                made = await self._make(cloud, order, consumer, plan)
            except VniInUse as exc:
                if attempt + 1 == _VNI_ATTEMPTS:
                    raise
                log.info("domain %s: %s; choosing another", dom, exc)
                exclude.add(exc.vni)
                self._offer.view.used_vnis.add(exc.vni)
                conflict = exc
                continue
            finally:
                self._pending_vnis -= vnis
            break
        grant = SegmentGrant(handle=made.to_handle(), labels=dict(made.labels), addresses=dict(made.addresses))
        self._hold(grant, made, order.request, SliceState.HELD)
        self._after_change(made, +1)
        return grant

    async def _make(self, cloud: Cloud, order: SegmentOrder, consumer: str, plan: _Plan) -> Made:
        req = order.request
        spec = NetworkSpec(
            name=f"fedbroker-{self.domain_id}-{order.key}"[:250],
            key=order.key,
            consumer=consumer,
            domain=self.domain_id,
            vnis=tuple(v for _, v in plan.labels),
            subnet=str(ipaddress.ip_network(req.subnet)),
            ports=tuple(PortSpec(t, t not in self._ports) for t in (req.src, req.dst)),
            hold_until=int(self._clock() + order.hold_time_s),
        )
        try:
            made = await self._call(cloud.make_network, spec)
        except NoAnswer:
            # Neutron may still make what it did not answer for: look for it by its name (best effort;
            # whatever shows up later is found by ``release`` of this order, or by the sweep).
            with contextlib.suppress(FedError):
                await self._call(cloud.delete_reservation, self.domain_id, consumer)
            raise
        try:
            # Placement last: its refusal (capacity, generation) must undo the network just made.
            by_provider = {self._providers[pop]: res for pop, res in plan.resources.items()}
            await self._call(cloud.allocate, consumer, by_provider)
        except BaseException as exc:
            with contextlib.suppress(FedError):
                await self._call(cloud.delete_network, made.network_id)
                if isinstance(exc, NoAnswer):  # the allocation may have been made; a refusal made none
                    await self._call(cloud.release, consumer)
            raise
        return Made(
            domain=self.domain_id,
            key=order.key,
            consumer=consumer,
            network_id=made.network_id,
            bandwidth_mbps=req.bandwidth_mbps,
            pops=plan.pops,
            slots=plan.slots,
            labels=plan.labels,
            addresses=tuple(made.addresses.items()),
            resources=plan.resources,
        )

    def _plan(self, req: SliceRequest, exclude: set[int]) -> _Plan:
        src_pop, dst_pop = self.config.pop_of(req.src), self.config.pop_of(req.dst)
        assert src_pop is not None and dst_pop is not None
        for kind, wanted in Counter(req.chain).items():
            if sum(self._free_slots_at(p.name, kind) for p in self.config.pops) < wanted:
                raise ResourceExhausted(f"no free '{kind}' function slot in domain {self.domain_id}")
        # The least-latency walk through each chain function's PoP in order: the same rule the
        # published transit follows, so what the note promises is what a reservation gets.
        walk = walk_through(self._offer.graph, src_pop, dst_pop, req.chain, self._free_slots_at)
        if walk is None:
            through = f" through {', '.join(req.chain)}" if req.chain else ""
            raise ResourceExhausted(f"no path from {req.src} ({src_pop}) to {req.dst} ({dst_pop}){through}")
        if req.latency_budget_ms is not None and walk.latency_ms > req.latency_budget_ms + 1e-9:
            raise ResourceExhausted(
                f"the path from {req.src} to {req.dst} takes {walk.latency_ms:g} ms,"
                f" over the budget of {req.latency_budget_ms:g} ms"
            )
        pops = tuple(dict.fromkeys(walk.pops))  # a PoP walked out and back is one Placement provider
        resources: dict[str, Counter[str]] = {p: Counter({BANDWIDTH: req.bandwidth_mbps}) for p in pops}
        slots = walk.placements
        for pop, kind in slots:
            spec = self._offer.functions[(pop, kind)]
            res = resources.setdefault(pop, Counter())
            res.update({FUNCTION_SLOTS: 1, "VCPU": spec.vcpu, "MEMORY_MB": spec.memory_mb})
        return _Plan(
            pops=pops,
            slots=slots,
            labels=self._pick_labels(
                req,
                used_everywhere=self._offer.view.used_vnis
                | self._pending_vnis
                | exclude
                | {v for s in self._segments.values() for _, v in s.holding.labels},
                noun="VNI",
                why_used=" (in use in Neutron or held)",
            ),
            resources={pop: {k: v for k, v in c.items() if v > 0} for pop, c in resources.items()},
        )

    async def commit(self, handle: str) -> None:
        """Tag the segment's network committed (``NotFound`` for a handle not held)."""
        seg = self._segment(handle)
        if seg.state is SliceState.HELD:
            await self._call((await self._ready()).add_tag, seg.holding.network_id, COMMITTED_TAG)
            seg.state = SliceState.COMMITTED

    async def activate(self, handle: str) -> None:
        """Bring the segment's network up (``NotFound`` for a handle not held)."""
        seg = self._segment(handle)
        await self._call((await self._ready()).set_admin_state, seg.holding.network_id, True)
        seg.state = SliceState.ACTIVE
        if self._health_task is None:
            self._health_task = asyncio.get_running_loop().create_task(self._watch_health())

    # --- health (issue 14) ---------------------------------------------------------------------

    async def _watch_health(self) -> None:
        while True:
            await asyncio.sleep(self.health_interval_s)
            active = [s for s in list(self._segments.values()) if s.state is SliceState.ACTIVE]
            for key in set(self._down) - {s.holding.key for s in active}:
                del self._down[key]  # ended or taken out of service: nothing more to tell
            if active:
                await asyncio.gather(*(self._check(s.grant.handle, s.holding) for s in active))

    async def _check(self, handle: str, made: Made) -> None:
        terminals = {str(t) for t, _ in made.labels} | {str(t) for t, _ in made.addresses}
        try:
            why = await self._call((await self._ready()).segment_health, made.network_id, terminals)
        except FedError as exc:  # the cloud does not answer: that says nothing about the segment
            log.info("domain %s: health of %s unread: %s", self.domain_id, made.key, exc)
            return
        held = self._segments.get(made.key)
        if held is None or held.state is not SliceState.ACTIVE or (made.key in self._down) == bool(why):
            return
        if why:
            self._down[made.key] = why
            log.warning("domain %s: segment %s is down: %s", self.domain_id, made.key, why)
        else:
            self._down.pop(made.key, None)
            log.info("domain %s: segment %s is up again", self.domain_id, made.key)
        self._health.publish(HealthSample(handle, "link_up", 0.0 if why else 1.0, self._clock()))

    def health(self) -> AsyncIterator[HealthSample]:
        """``link_up`` of each active segment when Neutron's view of it changes, until cancelled."""
        return self._health.samples()

    def set_skeleton(self, on: bool) -> None:
        """Skeleton monitoring changes nothing here: what is read is link state."""

    async def deactivate(self, handle: str) -> None:
        """Bring the segment's network down again (admin down, as commit left it); idempotent."""
        seg = self._segment(handle)
        if seg.state is SliceState.HELD:
            return  # never activated: nothing to take down
        await self._call((await self._ready()).set_admin_state, seg.holding.network_id, False)
        seg.state = SliceState.COMMITTED

    async def abort(self, handle: str) -> None:
        """Delete everything tagged with the reservation and its allocations; unknown handles are a no-op."""
        await self._release(handle)

    async def terminate(self, handle: str) -> None:
        """Delete everything tagged with the reservation and its allocations; idempotent."""
        await self._release(handle)

    async def _release(self, handle: str) -> None:
        try:
            made = Made.from_handle(handle)
        except InvalidArgument:
            return  # not one of ours: nothing of it can exist
        if made.domain != self.domain_id:
            return
        await self._settled(made.key)
        cloud = await self._ready()
        await self._call(cloud.delete_reservation, self.domain_id, made.consumer)
        await self._call(cloud.release, made.consumer)
        held = self._unhold(handle)
        if held is not None:
            self._after_change(held.holding, -1)

    async def release(self, key: str, handle: str) -> None:
        """Release order ``key`` by its handle, or, when none came back, by the consumer id the key names.

        A broker that crashed while OpenStack was making a segment never learnt its handle; the
        consumer id is derived from the order key, so its allocations and tagged objects are found.
        """
        await self._settled(key)  # a reserve of the order still running here ends first
        if handle:
            await self._release(handle)
            return
        held = self._segments.get(key)
        if held is not None:
            await self._release(held.grant.handle)
            return
        consumer = consumer_id(self.domain_id, key)
        cloud = await self._ready()
        await self._call(cloud.delete_reservation, self.domain_id, consumer)
        await self._call(cloud.release, consumer)

    async def restore(self, handle: str, committed: bool) -> None:
        """Find a handle's network again (by tag or by name) after a restart and hold it in memory.

        Objects whose tagging a crash cut off get their tags back, so the sweep's view is right.
        """
        made = Made.from_handle(handle)
        if made.domain != self.domain_id:
            raise InvalidArgument("handle", f"belongs to domain {made.domain}, not {self.domain_id}")
        state = SliceState.COMMITTED if committed else SliceState.HELD
        existing = self._segments.get(made.key)
        if existing is not None:
            if existing.grant.handle != handle:
                raise AlreadyExists(f"order key '{made.key}' is held under another handle", domain=self.domain_id)
            existing.state = state
            return
        cloud = await self._ready()
        found = await self._call(cloud.find, self.domain_id, made.consumer)
        if not found.networks:
            log.warning(
                "domain %s: the network of %s is gone from Neutron; nothing to restore", self.domain_id, made.key
            )
            return
        tags = [reservation_tag(made.consumer), domain_tag(self.domain_id)]
        if not any(t.startswith(HOLD_PREFIX) for n in found.networks for t in tags_of(n)):
            tags.append(hold_tag(int(self._clock())))  # the hold's end is the core's; the sweep needs one
        await self._call(cloud.retag, found, tags)
        if committed and COMMITTED_TAG not in tags_of(found.networks[0]):
            await self._call(cloud.add_tag, made.network_id, COMMITTED_TAG)
        grant = SegmentGrant(handle=handle, labels=dict(made.labels), addresses=dict(made.addresses))
        self._hold(grant, made, None, state)

    async def sweep(self) -> list[str]:
        """Delete reservations of this domain that nobody holds: never committed, hold long past.

        A broker that crashed between making a segment and persisting its handle, or a create that
        Neutron carried out after the agent stopped waiting for it, leaves such orphans. They are
        found by tag or by name; one with its hold deadline tag is removed ``sweep_grace_s`` after
        it, one that never got its tags ``sweep_grace_s`` after Neutron made it. Runs on each poll;
        returns the consumers removed.
        """
        cloud = await self._ready()
        dom = self.domain_id
        busy = {s.holding.consumer for s in self._segments.values()}
        busy |= {consumer_id(dom, key) for key in self._inflight}
        now = self._clock()
        grace = self.config.sweep_grace_s
        found = await self._call(cloud.domain_objects, dom)
        deadline: dict[str, float] = {}  # consumer -> when it may go (inf: never)
        for obj in (*found.networks, *found.subnets, *found.ports):
            consumer = consumer_of(dom, obj)
            if consumer is None:
                continue
            tags = tags_of(obj)
            until = next((t.removeprefix(HOLD_PREFIX) for t in tags if t.startswith(HOLD_PREFIX)), None)
            if COMMITTED_TAG in tags:
                when = float("inf")
            elif until is not None and until.isdigit():
                when = int(until) + grace
            else:
                when = created_at(obj) + grace
            deadline[consumer] = max(deadline.get(consumer, when), when)
        removed = []
        for consumer, when in sorted(deadline.items()):
            if consumer in busy or now < when:
                continue
            log.warning("domain %s: removing orphaned reservation %s (nobody holds it)", dom, consumer)
            await self._call(cloud.delete_reservation, dom, consumer)
            await self._call(cloud.release, consumer)
            removed.append(consumer)
        return removed

    def _pop_names(self) -> Sequence[str]:
        return [p.name for p in self.config.pops]

    def _free_slots_at(self, pop: str, function_type: str) -> int:
        return self._offer.free_slots_at(pop, function_type)

    async def close(self) -> None:
        """Let running reserves end (each OpenStack call is bounded), then close the connection; holdings stay."""
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task
            self._health_task = None
        if self._inflight:
            await asyncio.wait(list(self._inflight.values()))
        cloud, self._cloud = self._cloud, None
        if cloud is not None:
            await asyncio.to_thread(cloud.close)


__all__ = ["OpenStackDomainAgent", "OpenStackDomainConfig", "consumer_id"]

"""The ``netns`` domain agent: a leaf domain realised in Linux network namespaces.

It is the emulated agent (same configuration, same accounting, same choice of path, labels, function
slots and addresses, subclassed rather than copied) plus a real data plane:

* each **pop** is a namespace; a slice segment gets one **bridge per pop visit** ("stage"), and
  consecutive stages are joined per slice by a veth between the pops' namespaces;
* each **network function** is a namespace with a bridge between two slice interfaces (``in``
  towards the slice's source, ``out`` towards its destination), spliced between two stages in
  chain order, so traffic really passes it and its interfaces count the packets;
* each **endpoint** of a segment is a namespace of its own holding the address the agent chose
  from the slice's subnet (two slices at one endpoint are two namespaces: isolated, even with
  overlapping subnets);
* each **border port** is a border namespace, ``Names.port_ns(port)``, where the slice gets a
  bridge named from (port, label); the upper-SP's ``linux`` WIM finds both by name and stitches the
  border with a VXLAN of that label. The agent makes the border side; the stitching SP makes the link.

Each segment also gets two **probe ends**, small namespaces on its first and last stage bridges
holding 169.254.0.1 and .2 with each other's MAC as a permanent neighbour (no ARP on the slice):
every ``probe_interval_s`` the agent sends a few echo requests from one to the other across the
segment's pops and functions (``wim.probes``, in the namespaces) and reads the kernel's counters of
the segment's veths, and publishes them on ``health`` as the segment's latency (half the round
trip), loss, bytes (what entered the segment at its two terminals) and drops. Link state comes from
netlink events, not from this loop. In skeleton mode the loop probes nothing.

Resources are realised at **activate**, not at reserve or commit: a hold may expire or be aborted
and must stay cheap, and the core activates every segment before its WIM stitches. ``abort`` and
``terminate`` remove the segment's objects, and a pop or border namespace goes with the last segment
that used it. After a broker restart, ``restore`` re-finds a committed segment's objects and
rebuilds what is missing when any of them is still there (the segment was active); a segment with
nothing left in the kernel stays committed and is realised again by the next ``activate``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import networkx as nx
from pyroute2.netlink.exceptions import NetlinkError

from capability_catalog.model import TerminalId
from domain_agents.base import HealthSample
from domain_agents.emulated import EmulatedDomainAgent
from domain_agents.emulated_books import Allocation
from domain_agents.emulated_config import EmulatedDomainConfig
from domain_agents.emulated_config import parse_netns_domain as parse_netns_domain  # re-exported
from domain_agents.probe import ProbeEndpoint, ProbeFunction, SliceView
from slicing.errors import FedError, InvalidArgument, Unavailable
from slicing.model import SliceState
from wim import netlink
from wim.linkwatch import LinkWatcher
from wim.netlink import Names
from wim.probes import ProbeError, Prober, total

log = logging.getLogger(__name__)
T = TypeVar("T")
#: The two probe ends of every segment: side -> its address (the same pair in every segment and SP).
PROBE_ADDRESSES = {"a": "169.254.0.1/30", "b": "169.254.0.2/30"}


@dataclass(frozen=True)
class ProbeSettings:
    """How often and how hard a segment is probed (``monitoring`` in the broker config)."""

    interval_s: float = 2.0
    count: int = 3
    timeout_s: float = 0.5


@dataclass(frozen=True)
class Layout:
    """How one segment is wired: its stages (a bridge per pop visit) and what joins each to the next."""

    domain: str
    key: str
    src: TerminalId
    dst: TerminalId
    stages: tuple[str, ...]  # the pop of each stage
    hops: tuple[int | None, ...]  # hops[i] joins stage i to i+1: a veth (None) or the function with that index
    labels: Mapping[TerminalId, int]
    addresses: Mapping[TerminalId, str]

    def pops(self) -> set[str]:
        """Pops the segment crosses."""
        return set(self.stages)

    def ports(self) -> set[str]:
        """Border ports the segment ends at."""
        return set(self.labels)


class NetnsDomainAgent(EmulatedDomainAgent):
    """A ``DomainAgent`` whose segments are bridges, veths and namespaces, made at activate."""

    def __init__(
        self,
        config: EmulatedDomainConfig,
        clock: Callable[[], float],
        *,
        prefix: str = netlink.FAMILY_PREFIX,
        latency_s: float | None = None,
        fail_at: str | None = None,
        probing: ProbeSettings | None = None,
    ) -> None:
        super().__init__(config, clock, latency_s=latency_s, fail_at=fail_at)
        self.names = Names(prefix)
        self.probing = probing or ProbeSettings()
        self._prober = Prober()
        self._probe_task: asyncio.Task[None] | None = None
        #: Probe rounds done (every segment of a round counts once), for tests and the bench.
        self.probe_rounds = 0
        self._realised: dict[str, Layout] = {}  # order key -> layout realised in the kernel
        self._wiring = asyncio.Lock()
        # Link state from netlink events (issue 14): the veth ends of each realised segment.
        self._links = LinkWatcher()
        self._link_task: asyncio.Task[None] | None = None
        self._watched: dict[str, tuple[str, ...]] = {}  # order key -> watch keys
        self._down: dict[str, set[str]] = {}  # order key -> watch keys down now

    # --- layout ----------------------------------------------------------------------------------

    def _layout(self, alloc: Allocation) -> Layout:
        src, dst = alloc.terminals
        src_pop, dst_pop = self.config.pop_of(src), self.config.pop_of(dst)
        if src_pop is None or dst_pop is None:
            raise InvalidArgument("handle", f"terminals {src}, {dst} are not both in domain {self.domain_id}")
        chosen = nx.Graph()
        chosen.add_nodes_from(self.config.pops)
        chosen.add_edges_from(alloc.links)
        stages: list[str] = [src_pop]
        hops: list[int | None] = []

        def walk(to: str) -> None:
            # Along the links the allocation holds; a function placed off that path is reached the short way.
            try:
                path = nx.shortest_path(chosen, stages[-1], to)
            except nx.NetworkXNoPath:
                path = nx.shortest_path(self._graph, stages[-1], to, weight="latency_ms")
            for pop in path[1:]:
                stages.append(str(pop))
                hops.append(None)

        for index, (pop, _type) in enumerate(alloc.slots):
            walk(pop)
            stages.append(pop)
            hops.append(index)
        walk(dst_pop)
        return Layout(
            domain=self.domain_id,
            key=alloc.key,
            src=src,
            dst=dst,
            stages=tuple(stages),
            hops=tuple(hops),
            labels=dict(alloc.labels),
            addresses=dict(alloc.addresses),
        )

    def _layout_of(self, handle: str) -> Layout | None:
        try:
            alloc = Allocation.from_handle(handle)
            if alloc.domain != self.domain_id or len(alloc.terminals) != 2:
                return None
            return self._layout(alloc)
        except (FedError, nx.NetworkXException):
            return None

    async def _wire(self, what: str, fn: Callable[..., T], *args: object) -> T:
        try:
            return await netlink.call(fn, self.names, *args)
        except (NetlinkError, OSError, AssertionError, RuntimeError) as exc:
            raise Unavailable(f"{what} failed: {exc}", domain=self.domain_id) from exc

    # --- the DomainAgent verbs that touch the kernel ---------------------------------------------

    async def activate(self, handle: str) -> None:
        """Mark the segment active and build it; a failed build removes what it made and raises."""
        await super().activate(handle)
        seg = self._segment(handle)
        lay = self._layout(seg.holding)
        async with self._wiring:
            if lay.key in self._realised:
                return
            try:
                await self._wire(f"building segment {lay.key}", realise, lay)
            except FedError:
                seg.state = SliceState.COMMITTED
                with contextlib.suppress(FedError):
                    await self._wire(f"cleaning up {lay.key}", unrealise, lay, list(self._realised.values()))
                raise
            self._realised[lay.key] = lay
        await self._watch_links(lay)

    async def warm_up(self) -> None:
        """Start the link watcher and the probe worker now, at broker start."""
        await self._links.warm_up()
        await self._prober.warm_up()

    async def _watch_links(self, lay: Layout) -> None:
        if self._link_task is None:
            self._link_task = asyncio.get_running_loop().create_task(self._follow_links())
        if self._probe_task is None:
            self._probe_task = asyncio.get_running_loop().create_task(self._probe_loop())
        keys = []
        for i, (ns, ifname) in enumerate(veth_ends(self.names, lay)):
            key = f"{lay.key}#{i}"
            keys.append(key)
            await self._links.watch(key, ns, ifname)
        self._watched[lay.key] = tuple(keys)

    async def _unwatch_links(self, order_key: str) -> None:
        for key in self._watched.pop(order_key, ()):
            await self._links.unwatch(key)
        self._down.pop(order_key, None)

    async def _follow_links(self) -> None:
        async for change in self._links.changes():
            order_key = change.key.rpartition("#")[0]
            if order_key not in self._watched:
                continue
            down = self._down.setdefault(order_key, set())
            was_up = not down
            if change.up:
                down.discard(change.key)
            else:
                down.add(change.key)
            held = self._segments.get(order_key)
            if held is None or was_up == (not down):
                continue
            log.info("segment %s: link %s", order_key, "up" if not down else f"down ({len(down)} interface(s))")
            self._publish(HealthSample(held.grant.handle, "link_up", 0.0 if down else 1.0, self._clock()))

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(self.probing.interval_s)
            if self.skeleton:
                continue  # link state only, and that comes from netlink events
            active = [
                (held.grant.handle, lay)
                for key, lay in list(self._realised.items())
                if (held := self._segments.get(key)) is not None and held.state is SliceState.ACTIVE
            ]
            if not active:
                continue
            await asyncio.gather(*(self._probe(handle, lay) for handle, lay in active))
            self.probe_rounds += 1

    async def _probe(self, handle: str, lay: Layout) -> None:
        """One round on one segment: a few echo requests across it, and its veths' counters."""
        src_ns, dst = probe_path(self.names, lay)
        ends = veth_ends(self.names, lay)
        terminals = terminal_ends(self.names, lay)
        try:
            got = await self._prober.ping(src_ns, dst, self.probing.count, self.probing.timeout_s)
            counters = await self._prober.counters([*terminals, *ends])
        except ProbeError as exc:  # torn down meanwhile, or the worker restarts: the next round tries again
            log.debug("segment %s: probe failed: %s", lay.key, exc)
            return
        if lay.key not in self._realised:
            return
        now = self._clock()
        if got.one_way_ms is not None:
            self._publish(HealthSample(handle, "latency_ms", got.one_way_ms, now))
        self._publish(HealthSample(handle, "loss", got.loss, now))
        self._publish(HealthSample(handle, "bytes", float(total(counters[: len(terminals)]).rx_bytes), now))
        self._publish(HealthSample(handle, "drops", float(total(counters[len(terminals) :]).dropped), now))

    def measure(self, handle: str, now: float) -> list[HealthSample]:
        """The lab's conditions, and the link state netlink last reported."""
        samples = super().measure(handle, now)
        key = self._segment(handle).holding.key
        if self._down.get(key):
            samples = [HealthSample(s.handle, s.metric, 0.0, s.at) if s.metric == "link_up" else s for s in samples]
        return samples

    async def close(self) -> None:
        """Stop following link state and probing; holdings (and the kernel's objects) stay."""
        for task in (self._link_task, self._probe_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._links.close()
        await self._prober.close()
        await super().close()

    async def deactivate(self, handle: str) -> None:
        """Remove everything activate built for the segment and keep its accounting: committed again."""
        await super().deactivate(handle)
        lay = self._layout(self._segment(handle).holding)
        async with self._wiring:
            self._realised.pop(lay.key, None)
            # Whether or not this process built it (a restart may have lost the mark): what is there goes.
            await self._wire(f"deactivating segment {lay.key}", unrealise, lay, list(self._realised.values()))

    async def abort(self, handle: str) -> None:
        """Release a held segment and remove anything built for it."""
        await super().abort(handle)
        await self._tear_down(handle)

    async def terminate(self, handle: str) -> None:
        """Release the segment and remove every namespace, link and bridge made for it."""
        await super().terminate(handle)
        await self._tear_down(handle)

    async def _tear_down(self, handle: str) -> None:
        lay = self._layout_of(handle)
        if lay is None:
            return
        await self._unwatch_links(lay.key)  # deleting them on purpose is no alert
        async with self._wiring:
            self._realised.pop(lay.key, None)
            await self._wire(f"removing segment {lay.key}", unrealise, lay, list(self._realised.values()))

    async def restore(self, handle: str, committed: bool) -> None:
        """Re-account the segment; when it was active (something of it is in the kernel), re-find or rebuild it."""
        await super().restore(handle, committed)
        if not committed:
            return
        lay = self._layout_of(handle)
        if lay is None or lay.key in self._realised:
            return
        async with self._wiring:
            try:
                if not await self._wire(f"looking for segment {lay.key}", any_realised, lay):
                    return
                await self._wire(f"rebuilding segment {lay.key}", realise, lay)
            except FedError as exc:
                # The holding is restored either way; a broken data plane must not stop the broker's start,
                # and the segment's terminate still removes whatever is there.
                log.warning("segment %s restored without its data plane: %s", lay.key, exc)
                return
            self._realised[lay.key] = lay
        self._segment(handle).state = SliceState.ACTIVE
        await self._watch_links(lay)

    def realised(self) -> list[str]:
        """Order keys of the segments built in the kernel now."""
        return sorted(self._realised)


# --- wiring: blocking, run in the data-plane worker (module-level so it pickles) ------------------


def _stage_bridge(names: Names, lay: Layout, i: int) -> str:
    return names.ifname("stage", lay.domain, lay.key, i)


def realise(n: Names, lay: Layout) -> None:
    """Build the segment, re-using whatever of it exists already (so a rebuild after a restart is the same call)."""
    d, k = lay.domain, lay.key
    for pop in sorted(lay.pops()):
        netlink.ensure_ns(n.pop_ns(d, pop))
    for i, pop in enumerate(lay.stages):
        netlink.ensure_bridge(n.pop_ns(d, pop), _stage_bridge(n, lay, i))
    for i, fn in enumerate(lay.hops):
        a_ns, b_ns = n.pop_ns(d, lay.stages[i]), n.pop_ns(d, lay.stages[i + 1])
        a_br, b_br = _stage_bridge(n, lay, i), _stage_bridge(n, lay, i + 1)
        if fn is None:
            a_if, b_if = n.ifname("hop-a", d, k, i), n.ifname("hop-b", d, k, i)
            netlink.ensure_veth(a_ns, a_if, b_ns, b_if)
            netlink.attach(a_ns, a_if, a_br)
            netlink.attach(b_ns, b_if, b_br)
            continue
        f_ns = n.function_ns(d, k, fn)
        f_br = n.ifname("fn-bridge", d, k, fn)
        in_if, out_if = n.function_ifs(d, k, fn)
        pop_in, pop_out = n.ifname("fn-a", d, k, fn), n.ifname("fn-b", d, k, fn)
        netlink.ensure_ns(f_ns)
        netlink.ensure_bridge(f_ns, f_br)
        netlink.ensure_veth(a_ns, pop_in, f_ns, in_if)
        netlink.ensure_veth(b_ns, pop_out, f_ns, out_if)
        netlink.attach(a_ns, pop_in, a_br)
        netlink.attach(b_ns, pop_out, b_br)
        netlink.attach(f_ns, in_if, f_br)
        netlink.attach(f_ns, out_if, f_br)
    last = len(lay.stages) - 1
    for term, stage in ((lay.src, 0), (lay.dst, last)):
        pop_ns, stage_br = n.pop_ns(d, lay.stages[stage]), _stage_bridge(n, lay, stage)
        if term in lay.labels:
            p_ns, p_br = n.port_ns(term), n.port_bridge(term, lay.labels[term])
            outer, inner = n.ifname("port-a", d, k, term), n.ifname("port-b", d, k, term)
            netlink.ensure_ns(p_ns)
            netlink.ensure_bridge(p_ns, p_br)
            netlink.ensure_veth(pop_ns, outer, p_ns, inner)
            netlink.attach(pop_ns, outer, stage_br)
            netlink.attach(p_ns, inner, p_br)
        else:
            e_ns, inner = n.endpoint_ns(d, k, term), n.endpoint_if(d, k, term)
            outer = n.ifname("ep-outer", d, k, term)
            netlink.ensure_ns(e_ns)
            netlink.ensure_veth(pop_ns, outer, e_ns, inner)
            netlink.attach(pop_ns, outer, stage_br)
            netlink.set_address(e_ns, inner, lay.addresses[term])
    for side, stage in (("a", 0), ("b", last)):
        other = "b" if side == "a" else "a"
        p_ns = n.probe_ns(d, k, side)
        outer, inner = n.probe_ifs(d, k, side)
        netlink.ensure_ns(p_ns)
        netlink.ensure_veth(n.pop_ns(d, lay.stages[stage]), outer, p_ns, inner)
        netlink.attach(n.pop_ns(d, lay.stages[stage]), outer, _stage_bridge(n, lay, stage))
        peer = PROBE_ADDRESSES[other].split("/")[0]
        mac, peer_mac = n.probe_mac(d, k, side), n.probe_mac(d, k, other)
        netlink.set_probe_end(p_ns, inner, mac, PROBE_ADDRESSES[side], peer, peer_mac)


def probe_path(n: Names, lay: Layout) -> tuple[str, str]:
    """Where a probe of the segment starts (the source end's namespace) and the address it asks."""
    return n.probe_ns(lay.domain, lay.key, "a"), PROBE_ADDRESSES["b"].split("/")[0]


def terminal_ends(n: Names, lay: Layout) -> list[tuple[str, str]]:
    """(pop namespace, interface) where each terminal's traffic enters the segment."""
    d, k = lay.domain, lay.key
    out = []
    for term, stage in ((lay.src, 0), (lay.dst, len(lay.stages) - 1)):
        role = "port-a" if term in lay.labels else "ep-outer"
        out.append((n.pop_ns(d, lay.stages[stage]), n.ifname(role, d, k, term)))
    return out


def veth_ends(n: Names, lay: Layout) -> list[tuple[str, str]]:
    """(namespace, interface) of both ends of every veth ``realise`` makes for the segment."""
    d, k = lay.domain, lay.key
    out: list[tuple[str, str]] = []
    for i, fn in enumerate(lay.hops):
        a_ns, b_ns = n.pop_ns(d, lay.stages[i]), n.pop_ns(d, lay.stages[i + 1])
        if fn is None:
            out += [(a_ns, n.ifname("hop-a", d, k, i)), (b_ns, n.ifname("hop-b", d, k, i))]
            continue
        f_ns = n.function_ns(d, k, fn)
        in_if, out_if = n.function_ifs(d, k, fn)
        out += [(a_ns, n.ifname("fn-a", d, k, fn)), (f_ns, in_if), (b_ns, n.ifname("fn-b", d, k, fn)), (f_ns, out_if)]
    last = len(lay.stages) - 1
    for term, stage in ((lay.src, 0), (lay.dst, last)):
        pop_ns = n.pop_ns(d, lay.stages[stage])
        if term in lay.labels:
            out += [(pop_ns, n.ifname("port-a", d, k, term)), (n.port_ns(term), n.ifname("port-b", d, k, term))]
        else:
            out += [(pop_ns, n.ifname("ep-outer", d, k, term)), (n.endpoint_ns(d, k, term), n.endpoint_if(d, k, term))]
    return out


def unrealise(n: Names, lay: Layout, keep: Sequence[Layout]) -> None:
    """Remove the segment's objects, then pops and border namespaces no layout in ``keep`` uses."""
    d, k = lay.domain, lay.key
    for term in (lay.src, lay.dst):
        if term in lay.labels:
            netlink.delete_link(n.port_ns(term), n.port_bridge(term, lay.labels[term]))
            netlink.delete_link(n.port_ns(term), n.ifname("port-b", d, k, term))
        else:
            # The pop's end first: the kernel destroys a removed namespace's interfaces later, on
            # its own, and a pop end that outlived its peer would stop a rebuild of the segment.
            pop_ns = n.pop_ns(d, lay.stages[0 if term == lay.src else -1])
            netlink.delete_link(pop_ns, n.ifname("ep-outer", d, k, term))
            netlink.remove_ns(n.endpoint_ns(d, k, term))
    for i, fn in enumerate(lay.hops):
        if fn is None:
            netlink.delete_link(n.pop_ns(d, lay.stages[i]), n.ifname("hop-a", d, k, i))
        else:
            netlink.delete_link(n.pop_ns(d, lay.stages[i]), n.ifname("fn-a", d, k, fn))
            netlink.delete_link(n.pop_ns(d, lay.stages[i + 1]), n.ifname("fn-b", d, k, fn))
            netlink.remove_ns(n.function_ns(d, k, fn))
    for side, stage in (("a", 0), ("b", len(lay.stages) - 1)):
        netlink.delete_link(n.pop_ns(d, lay.stages[stage]), n.probe_ifs(d, k, side)[0])
        netlink.remove_ns(n.probe_ns(d, k, side))
    for i, pop in enumerate(lay.stages):
        netlink.delete_link(n.pop_ns(d, pop), _stage_bridge(n, lay, i))
    pops_used = {p for other in keep for p in other.pops()}
    ports_used = {p for other in keep for p in other.ports()}
    for pop in lay.pops() - pops_used:
        netlink.remove_ns(n.pop_ns(d, pop))
    for port in lay.ports() - ports_used:
        netlink.remove_ns(n.port_ns(port))


def any_realised(n: Names, lay: Layout) -> bool:
    """True when the segment's first stage bridge exists: the segment was built."""
    return netlink.link_exists(n.pop_ns(lay.domain, lay.stages[0]), _stage_bridge(n, lay, 0))


@dataclass(frozen=True)
class LocalSegment:
    """A leaf domain's piece of a slice, as a read-back shows it: where it is and what it carries."""

    domain: str
    key: str  # the leaf's order key (``child_ref`` of a local segment)
    src: str
    dst: str
    chain: tuple[str, ...] = ()


def slice_view(
    names: Names,
    name: str,
    segments: Sequence[LocalSegment],
    addresses: Mapping[str, str],
    bandwidth_mbps: int,
) -> SliceView:
    """What a probe needs of a slice, derived from its leaf segments in path order and its addresses."""
    if not segments:
        raise InvalidArgument("segments", f"slice {name} has no local segments to probe")
    first, last = segments[0], segments[-1]

    def endpoint(seg: LocalSegment, term: str) -> ProbeEndpoint:
        if term not in addresses:
            raise InvalidArgument("addresses", f"slice {name} has no address for endpoint {term}")
        return ProbeEndpoint(
            term,
            names.endpoint_ns(seg.domain, seg.key, term),
            addresses[term].split("/")[0],
            names.endpoint_if(seg.domain, seg.key, term),
        )

    functions = []
    for seg in segments:
        for index, kind in enumerate(seg.chain):
            in_if, out_if = names.function_ifs(seg.domain, seg.key, index)
            functions.append(
                ProbeFunction(kind, seg.domain, names.function_ns(seg.domain, seg.key, index), in_if, out_if)
            )
    return SliceView(name, endpoint(first, first.src), endpoint(last, last.dst), tuple(functions), bandwidth_mbps)

"""The ``linux`` WIM driver: inter-domain links as veth underlays, each slice crossing as a VXLAN with its VNI.

A border port of a leaf domain is a network namespace, ``Names.port_ns(port)``, made by the leaf's
``netns`` domain agent, which also puts each slice that crosses the port on a bridge there,
``Names.port_bridge(port, label)``. This driver, run by the upper-SP that stitches the two leaves,
derives those names from the connection points alone and adds:

* the link's **underlay**: one veth between the two border namespaces (169.254.0.1/30 on the side
  whose port id sorts first, .2 on the other; each border namespace has exactly one underlay, so the
  addresses never meet), made with the first service over the link and removed with the last;
* per service, on each side, a **VXLAN** interface with the negotiated VNI over the underlay, a port
  of that slice's bridge, shaped to the service's bandwidth by a **tbf** qdisc on its egress.

When the two sides carry different labels (a side that can swap), the wire carries the label of the
side whose port id sorts first; labels are unique per port, so wire VNIs never collide on a link.

Besides link state (netlink events), every ``probe_interval_s`` the driver probes each service's
link: a few echo requests over the underlay from one border namespace to the other (``wim.probes``,
inside the namespaces), and the counters of its VXLANs and underlay ends; ``health`` yields them per
service handle as latency (half the round trip), loss, bytes (what the VXLANs received, both sides)
and drops. In skeleton mode it probes nothing.

Accounting (labels, capacity, idempotency by key, handles) is the ``memory`` driver's, composed, so
both drivers refuse the same things with the same errors; the handle is the memory driver's. Every
failure removes what the call made before it is raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from pyroute2.netlink.exceptions import NetlinkError

from domain_agents.base import HealthFeed, HealthSample
from slicing.errors import FailedPrecondition, FedError, InvalidArgument, NotFound, Unavailable
from wim import netlink
from wim.base import ConnectionPoint, ConnectivitySpec, ServiceStatus, WimUsage
from wim.linkwatch import LinkWatcher
from wim.memory import MemoryWimDriver, decode_handle
from wim.probes import ProbeError, Prober, total

log = logging.getLogger(__name__)

VXLAN_PORT = 4789
UNDERLAY_NET = "169.254.0.{}/30"
TBF_LATENCY = "50ms"
MIN_BURST_BYTES = 16 * 1024
T = TypeVar("T")


def tbf_burst(mbps: int) -> int:
    """The bucket size: 4 ms worth of the rate, at least 16 KiB (a few full frames)."""
    return max(MIN_BURST_BYTES, mbps * 1_000_000 // 8 // 250)


@dataclass(frozen=True)
class _Side:
    point: ConnectionPoint
    ns: str
    bridge: str
    vxlan: str
    underlay: str
    address: str  # bare underlay address of this side


def _two_points(spec: ConnectivitySpec) -> None:
    if len(spec.points) > 2:
        raise InvalidArgument("points", f"the linux driver joins exactly 2 connection points, not {len(spec.points)}")


def _sides(names: netlink.Names, spec: ConnectivitySpec) -> tuple[_Side, _Side]:
    a, b = sorted(spec.points, key=lambda p: p.port)
    out = []
    for n, p in enumerate((a, b), start=1):
        out.append(
            _Side(
                point=p,
                ns=names.port_ns(p.port),
                bridge=names.port_bridge(p.port, p.label),
                vxlan=names.ifname("vxlan", p.port, p.label),
                underlay=names.ifname("underlay", p.port),
                address=UNDERLAY_NET.format(n).split("/")[0],
            )
        )
    return out[0], out[1]


def _link_of(spec: ConnectivitySpec) -> tuple[str, ...]:
    return tuple(sorted(p.port for p in spec.points))


# --- realisation: blocking, run in the data-plane worker (module-level so it pickles) ------------


def _realise(names: netlink.Names, spec: ConnectivitySpec) -> None:
    a, b = _sides(names, spec)
    for side in (a, b):
        if not netlink.ns_exists(side.ns):
            raise FailedPrecondition(
                f"port {side.point.port}: its border namespace {side.ns} does not exist"
                " (the leaf domain has not activated a segment there)"
            )
        if not netlink.link_exists(side.ns, side.bridge):
            raise FailedPrecondition(
                f"port {side.point.port}: no slice bridge for label {side.point.label} in {side.ns}"
                " (the leaf domain has not activated this slice's segment)"
            )
    netlink.ensure_veth(a.ns, a.underlay, b.ns, b.underlay, mtu=netlink.UNDERLAY_MTU)
    wire = a.point.label
    for side, peer in ((a, b), (b, a)):
        with netlink.in_ns(side.ns) as ipr:
            under = netlink.link_index(ipr, side.underlay)
            assert under is not None, f"underlay {side.underlay} in {side.ns}"
            have = {x.get_attr("IFA_ADDRESS") for x in ipr.get_addr(index=under)}
            if side.address not in have:
                ipr.addr("add", index=under, address=side.address, prefixlen=30)
            if netlink.link_index(ipr, side.vxlan) is None:
                ipr.link(
                    "add",
                    ifname=side.vxlan,
                    kind="vxlan",
                    vxlan_id=wire,
                    vxlan_local=side.address,
                    vxlan_group=peer.address,
                    vxlan_link=under,
                    vxlan_port=VXLAN_PORT,
                )
            vx = netlink.link_index(ipr, side.vxlan)
            br = netlink.link_index(ipr, side.bridge)
            assert vx is not None and br is not None, f"vxlan {side.vxlan} on bridge {side.bridge}"
            ipr.link("set", index=vx, mtu=netlink.SLICE_MTU, master=br, state="up")
            _shape(ipr, vx, spec.bandwidth_mbps)


def _shape(ipr: Any, index: int, mbps: int) -> None:
    ipr.tc("replace", "tbf", index=index, handle="1:", rate=f"{mbps}mbit", burst=tbf_burst(mbps), latency=TBF_LATENCY)


def _reshape(names: netlink.Names, spec: ConnectivitySpec) -> None:
    for side in _sides(names, spec):
        with netlink.in_ns(side.ns) as ipr:
            vx = netlink.link_index(ipr, side.vxlan)
            if vx is None:
                raise FailedPrecondition(f"port {side.point.port}: VXLAN {side.vxlan} is gone")
            _shape(ipr, vx, spec.bandwidth_mbps)


def _unrealise(names: netlink.Names, spec: ConnectivitySpec, keep_underlay: bool) -> None:
    a, b = _sides(names, spec)
    for side in (a, b):
        netlink.delete_link(side.ns, side.vxlan)  # its qdisc goes with it
    if not keep_underlay:
        netlink.delete_link(a.ns, a.underlay)  # the peer end goes with it


def watched_ends(names: netlink.Names, spec: ConnectivitySpec) -> list[tuple[str, str]]:
    """(namespace, interface) whose state is the service's link state: both underlay ends and both VXLANs."""
    return [(side.ns, ifname) for side in _sides(names, spec) for ifname in (side.underlay, side.vxlan)]


def _up(names: netlink.Names, spec: ConnectivitySpec) -> bool:
    return all(netlink.is_up(s.ns, s.vxlan) for s in _sides(names, spec))


class LinuxWimDriver:
    """A ``WimDriver`` that stitches leaf border namespaces with veth underlays, VXLAN and tbf."""

    def __init__(
        self,
        prefix: str = netlink.FAMILY_PREFIX,
        capacity_mbps: Mapping[str, int] | None = None,
        *,
        probe_interval_s: float = 2.0,
        probe_count: int = 3,
        probe_timeout_s: float = 0.5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.names = netlink.Names(prefix)
        self._probe = (probe_interval_s, probe_count, probe_timeout_s)
        self._clock = clock
        self._prober = Prober()
        self._probe_task: asyncio.Task[None] | None = None
        self._health = HealthFeed()
        self.skeleton = False
        self._books = MemoryWimDriver(capacity_mbps)
        self._current: dict[str, ConnectivitySpec] = {}  # key -> spec as realised now
        self._lock = asyncio.Lock()
        # Link state from netlink events (issue 14): each service's underlay and VXLAN ends.
        self._links = LinkWatcher()
        self._down: dict[str, set[str]] = {}  # service key -> watch keys down now
        self._handles: dict[str, str] = {}  # service key -> handle

    async def _watch(self, spec: ConnectivitySpec, handle: str) -> None:
        if self._probe_task is None:
            self._probe_task = asyncio.get_running_loop().create_task(self._probe_loop())
        self._down.setdefault(spec.key, set())
        self._handles[spec.key] = handle
        for i, (ns, ifname) in enumerate(watched_ends(self.names, spec)):
            await self._links.watch(f"{spec.key}#{i}", ns, ifname)

    async def _unwatch(self, spec: ConnectivitySpec) -> None:
        self._down.pop(spec.key, None)
        self._handles.pop(spec.key, None)
        for i in range(len(watched_ends(self.names, spec))):
            await self._links.unwatch(f"{spec.key}#{i}")

    async def link_changes(self) -> AsyncIterator[tuple[str, bool]]:
        """(handle, up) each time a service's link state changes (netlink events, no polling), until cancelled."""
        async for change in self._links.changes():
            key = change.key.rpartition("#")[0]
            down = self._down.get(key)
            handle = self._handles.get(key)
            if down is None or handle is None:
                continue
            was_up = not down
            if change.up:
                down.discard(change.key)
            else:
                down.add(change.key)
            if was_up != (not down):
                log.info("service %s: link %s", key, "up" if not down else "down")
                yield handle, not down

    async def _probe_loop(self) -> None:
        interval, count, timeout = self._probe
        while True:
            await asyncio.sleep(interval)
            if self.skeleton:
                continue  # link state only, and that comes from netlink events
            services = [(self._handles[k], spec) for k, spec in list(self._current.items()) if k in self._handles]
            await asyncio.gather(*(self._probe_one(h, spec, count, timeout) for h, spec in services))

    async def _probe_one(self, handle: str, spec: ConnectivitySpec, count: int, wait_s: float) -> None:
        a, b = _sides(self.names, spec)
        vxlans = [(a.ns, a.vxlan), (b.ns, b.vxlan)]
        try:
            got = await self._prober.ping(a.ns, b.address, count, wait_s)
            counters = await self._prober.counters([*vxlans, (a.ns, a.underlay), (b.ns, b.underlay)])
        except ProbeError as exc:  # removed meanwhile, or the worker restarts: the next round tries again
            log.debug("service %s: probe failed: %s", spec.key, exc)
            return
        if spec.key not in self._current:
            return
        now = self._clock()
        samples = [HealthSample(handle, "loss", got.loss, now)]
        if got.one_way_ms is not None:
            samples.append(HealthSample(handle, "latency_ms", got.one_way_ms, now))
        samples.append(HealthSample(handle, "bytes", float(total(counters[:2]).rx_bytes), now))
        samples.append(HealthSample(handle, "drops", float(total(counters).dropped), now))
        for sample in samples:
            self._health.publish(sample)

    def health(self) -> AsyncIterator[HealthSample]:
        """Each service's probe results (handle, metric, value), as they are taken, until cancelled."""
        return self._health.samples()

    def set_skeleton(self, on: bool) -> None:
        """Skeleton monitoring: link state only (no probes)."""
        self.skeleton = on

    async def warm_up(self) -> None:
        """Start the link watcher and the probe worker now, at broker start."""
        await self._links.warm_up()
        await self._prober.warm_up()

    async def close(self) -> None:
        """Stop following link state and probing (the services stay)."""
        if self._probe_task is not None:
            self._probe_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe_task
        await self._links.close()
        await self._prober.close()

    def _underlay_shared(self, spec: ConnectivitySpec) -> bool:
        link = _link_of(spec)
        return any(_link_of(s) == link for k, s in self._current.items() if k != spec.key)

    async def _run(self, what: str, fn: Callable[..., T], *args: object) -> T:
        try:
            return await netlink.call(fn, self.names, *args)
        except FedError:
            raise
        except (NetlinkError, OSError, AssertionError, RuntimeError) as exc:
            raise Unavailable(f"linux WIM: {what} failed: {exc}") from exc

    # --- the WimDriver verbs ---------------------------------------------------------------------

    async def create(self, spec: ConnectivitySpec) -> str:
        """Account, then realise the service; the same key returns the same handle; a failure leaves nothing."""
        if len(spec.points) > 2:
            raise InvalidArgument(
                "points", f"the linux driver joins exactly 2 connection points (got {len(spec.points)})"
            )
        async with self._lock:
            known = spec.key in self._current
            handle = await self._books.create(spec)
            if known:
                return handle
            try:
                await self._run(f"stitching {spec.key}", _realise, spec)
            except FedError:
                keep = self._underlay_shared(spec)
                with contextlib.suppress(FedError):
                    await self._run(f"cleaning up {spec.key}", _unrealise, spec, keep)
                await self._books.delete(handle)
                raise
            self._current[spec.key] = spec
        await self._watch(spec, handle)
        return handle

    async def edit(self, handle: str, spec: ConnectivitySpec) -> None:
        """Move a service to new points or bandwidth; on failure the old service is put back."""
        if len(spec.points) > 2:
            raise InvalidArgument(
                "points", f"the linux driver joins exactly 2 connection points (got {len(spec.points)})"
            )
        async with self._lock:
            await self._books.edit(handle, spec)  # NotFound, InvalidArgument, ResourceExhausted: nothing done
            old = self._current[spec.key]
            try:
                if old.points == spec.points:
                    await self._run(f"reshaping {spec.key}", _reshape, spec)
                else:
                    await self._run(f"unstitching {spec.key}", _unrealise, old, True)
                    await self._run(f"stitching {spec.key}", _realise, spec)
                    if not self._underlay_shared(old) and _link_of(old) != _link_of(spec):
                        await self._run(f"removing the underlay of {spec.key}", _unrealise, old, False)
            except FedError:
                with contextlib.suppress(FedError):
                    await self._run(f"cleaning up {spec.key}", _unrealise, spec, True)
                    await self._run(f"re-stitching {spec.key}", _realise, old)
                await self._books.edit(handle, old)
                raise
            self._current[spec.key] = spec

    async def delete(self, handle: str) -> None:
        """Remove the service's VXLANs (and the underlay with the link's last service); unknown is no-op."""
        async with self._lock:
            spec = self._spec(handle)
            if spec is None:
                return
            await self._unwatch(spec)  # removing it on purpose is no alert
            await self._run(f"unstitching {spec.key}", _unrealise, spec, self._underlay_shared(spec))
            await self._books.delete(handle)
            del self._current[spec.key]

    def _spec(self, handle: str) -> ConnectivitySpec | None:
        try:
            key = decode_handle(handle).key
        except InvalidArgument:
            return None
        return self._current.get(key)

    async def status(self, handle: str) -> ServiceStatus:
        """``ACTIVE`` when both VXLANs are up, ``DOWN`` when one is missing or down; ``NotFound`` otherwise."""
        spec = self._spec(handle)
        if spec is None:
            raise NotFound("no connectivity service under this handle")
        up = await self._run(f"reading {spec.key}", _up, spec)
        return ServiceStatus.ACTIVE if up else ServiceStatus.DOWN

    async def list(self) -> list[str]:
        """Handles of every service the driver keeps."""
        return await self._books.list()

    async def restore(self, handle: str) -> None:
        """Re-account a persisted service and re-find (or rebuild) what realises it.

        A border namespace that is gone (the leaf has not restored yet) leaves the service accounted
        and ``DOWN`` rather than failing the broker's start.
        """
        spec = decode_handle(handle)
        async with self._lock:
            if spec.key in self._current:
                return
            await self._books.restore(handle)
            self._current[spec.key] = spec
            try:
                await self._run(f"re-stitching {spec.key}", _realise, spec)
            except FedError as exc:
                log.warning("service %s restored as DOWN: %s", spec.key, exc)
        await self._watch(spec, handle)

    def usage(self) -> WimUsage:
        """Services kept, connection points held, and the sum of the services' bandwidth."""
        return self._books.usage()

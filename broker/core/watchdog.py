"""The thin shim around ``Monitor``: feeds it samples and child alerts, lets time pass, emits its alerts.

Owned by the broker's lifecycle (``Broker.start`` spawns ``run``). It keeps the monitor's set of
watched slices equal to the ACTIVE slices here, reads every local agent's ``health`` stream and the
WIM's link state and probes, takes the alerts lower SPs send (``relay``, from
``SliceManager.follow_child``) and puts what the monitor returns on this broker's Watch — which is
the only thing that carries monitoring upward. A healthy slice therefore sends nothing at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Protocol, runtime_checkable

from broker.core.events import SliceEvent
from broker.core.lifecycle import SliceManager
from broker.core.monitoring import (
    DEFAULT_LOSS,
    Alert,
    AlertStatus,
    Comparison,
    Metric,
    Mode,
    Monitor,
    Rule,
    Sample,
    Severity,
    Sla,
    check_rule,
    rule_fields,
)
from broker.core.records import SliceRecord
from broker.core.storage import SliceStore
from domain_agents.base import DomainAgent, HealthSample, HealthSource, SegmentAlert, SegmentEvent
from slicing.errors import DeadlineExceeded, FedError, InvalidArgument, NotFound, Unavailable
from slicing.model import FINAL_STATES, SliceState

log = logging.getLogger(__name__)


@runtime_checkable
class RuleSink(Protocol):
    """A child that evaluates a user rule on its part of a slice (a lower SP: ``AddRule``)."""

    async def add_rule(self, handle: str, rule: Rule) -> None:
        """Add (or replace, by name) ``rule`` on the child's slice ``handle``."""
        ...


@runtime_checkable
class AlertSource(Protocol):
    """A child that can say which alerts fire for a segment now (a lower SP: ``ListAlerts``)."""

    async def open_alerts(self, handle: str) -> list[SegmentAlert]:
        """The child's firing alerts for its part ``handle``."""
        ...


@runtime_checkable
class LinkStateSource(Protocol):
    """A WIM driver that reports its services' link state as it changes (the ``linux`` one, from netlink)."""

    def link_changes(self) -> AsyncIterator[tuple[str, bool]]:
        """(service handle, up) per change, until cancelled."""
        ...


def wim_segment(a_port: str, b_port: str) -> str:
    """The monitor's name for an inter-domain link this SP's WIM stitches."""
    return f"wim:{a_port}/{b_port}"


class Watchdog:
    """Runs one SP's monitoring: ``run`` until the stop event; ``relay`` for alerts from below."""

    def __init__(
        self,
        manager: SliceManager,
        agents: Mapping[str, DomainAgent],
        clock: Callable[[], float],
        monitor: Monitor | None = None,
        qos_loss: Callable[[str], float | None] = lambda _: None,
        wim: object | None = None,
        store: SliceStore | None = None,
    ) -> None:
        self.manager = manager
        #: Where user rules are kept, so a restarted SP still evaluates them (None: in memory only).
        self._store = store
        self._wim = wim
        self.monitor = monitor or Monitor(manager.sp_id)
        self._agents = dict(agents)
        self._clock = clock
        self._qos_loss = qos_loss
        self._wake = asyncio.Event()
        self._resyncs: set[asyncio.Task[None]] = set()
        #: Alerts this SP put on its Watch, by status (for ``/metrics``).
        self.emitted: dict[str, int] = {"firing": 0, "resolved": 0}
        #: Seconds of CPU the monitoring took in this process (``time.process_time`` deltas), for the bench.
        self.cpu_s = 0.0

    # --- the slices watched ---------------------------------------------------------------------

    def sla_of(self, rec: SliceRecord) -> Sla:
        """What the slice promises at this SP."""
        loss = self._qos_loss(rec.request.qos_class) if rec.request.qos_class else None
        return Sla(
            latency_budget_ms=rec.request.latency_budget_ms,
            bandwidth_mbps=rec.request.bandwidth_mbps,
            loss=loss if loss is not None and math.isfinite(loss) and loss > 0 else DEFAULT_LOSS,
            shares={s.domain: s.latency_share_ms for s in rec.segments},
        )

    def track(self, rec: SliceRecord) -> None:
        """Watch an ACTIVE slice, forget any other (an ACTIVATING one keeps what its children said).

        A slice watched anew gets the user rules kept for it back (``add_rule``); an ended slice's go.
        """
        if rec.state is SliceState.ACTIVE:
            local = [s.domain for s in rec.segments if s.local]
            local += [wim_segment(ln.a_port, ln.b_port) for ln in rec.links if ln.wim_handle]
            new = rec.id not in self.monitor.watched()
            early = self.monitor.watch(rec.id, self.sla_of(rec), local, self._clock())
            if new and self._store is not None:
                # What fired here because of a child before a restart: still open, not resolved and fired again.
                self.monitor.restore(rec.id, self._store.alerts(rec.id))
            self._emit(early)
            if new and self._store is not None:
                for body in self._store.rules(rec.id):
                    try:
                        self.monitor.add_rule(rec.id, check_rule(**body))
                    except (InvalidArgument, TypeError) as exc:
                        log.warning("slice %s: a kept rule cannot be read (%s): %s", rec.id, body, exc)
        else:
            self.monitor.forget(rec.id, keep_early=rec.state is SliceState.ACTIVATING)
            self._persist()
            if rec.state in FINAL_STATES and self._store is not None:
                self._store.drop_rules(rec.id)

    def restore(self) -> None:
        """Watch every ACTIVE slice now, with the alerts kept for it: call before serving, so the SP above,
        asking what fires after a restart, hears what fired before it."""
        for rec in self.manager.slices([SliceState.ACTIVE]):
            self.track(rec)
        self._persist()

    async def _follow_slices(self) -> None:
        for rec in self.manager.slices([SliceState.ACTIVE]):
            self.track(rec)
        async for ev in self.manager.watch():
            if ev.alert is not None:
                continue
            try:
                self.track(self.manager.get(ev.slice_id))
            except NotFound:  # pruned meanwhile: simply not watched
                self.monitor.forget(ev.slice_id)

    # --- inputs ---------------------------------------------------------------------------------

    def sample(self, domain: str, s: HealthSample) -> None:
        """A local agent measured one of its segments."""
        try:
            metric = Metric(s.metric)
        except ValueError:
            return
        rec = self.manager.find_segment(domain, s.handle)
        if rec is None:
            return
        if rec.state is SliceState.ACTIVE and rec.id not in self.monitor.watched():
            self.track(rec)  # the sample came before the ACTIVE event
        self._emit(self.monitor.observe(Sample(rec.id, domain, metric, s.value, s.at), self._clock()))

    def wim_change(self, handle: str, up: bool) -> None:
        """This SP's WIM saw a stitched link go down or come up."""
        self.wim_sample(HealthSample(handle, Metric.LINK_UP.value, 1.0 if up else 0.0, self._clock()))

    def wim_sample(self, s: HealthSample) -> None:
        """This SP's WIM measured a stitched link (its handle is the WIM service's)."""
        try:
            metric = Metric(s.metric)
        except ValueError:
            return
        for rec in self.manager.slices([SliceState.ACTIVE]):
            for ln in rec.links:
                if ln.wim_handle == s.handle:
                    if rec.id not in self.monitor.watched():
                        self.track(rec)
                    sample = Sample(rec.id, wim_segment(ln.a_port, ln.b_port), metric, s.value, s.at)
                    self._emit(self.monitor.observe(sample, self._clock()))
                    return

    async def _read_wim(self, wim: LinkStateSource) -> None:
        async for handle, up in wim.link_changes():
            t0 = time.process_time()
            self.wim_change(handle, up)
            self.cpu_s += time.process_time() - t0

    async def _read_wim_health(self, wim: HealthSource) -> None:
        async for s in wim.health():
            t0 = time.process_time()
            self.wim_sample(s)
            self.cpu_s += time.process_time() - t0

    def resync_soon(self, domain: str) -> None:
        """The lower SP's stream (re)connected: ask it what fires now for our active slices there.

        Alerts it sent while the stream was down were lost, and one that restarted forgot what fired.
        """
        agent: object = self._agents.get(domain)
        if not isinstance(agent, AlertSource):
            return
        task = asyncio.get_running_loop().create_task(self._resync(domain, agent))
        self._resyncs.add(task)
        task.add_done_callback(self._resyncs.discard)

    async def _resync(self, domain: str, agent: AlertSource) -> None:
        for rec in self.manager.slices([SliceState.ACTIVE]):
            for seg in rec.segments:
                if seg.domain != domain or seg.local or not seg.handle:
                    continue
                log.info("slice %s: asking %s which alerts fire for its part", rec.id, domain)
                try:
                    found = await agent.open_alerts(seg.handle)
                except FedError as exc:
                    log.info("alerts of %s at %s: %s (the next reconnect asks again)", rec.id, domain, exc)
                    return
                if rec.id not in self.monitor.watched():
                    self.track(rec)
                alerts = [a for a in (self._typed(rec.id, domain, x) for x in found) if a is not None]
                self._emit(self.monitor.sync_child(rec.id, domain, alerts, self._clock()))

    def _typed(self, slice_id: str, domain: str, a: SegmentAlert) -> Alert | None:
        try:
            alert = Alert(
                slice_id=slice_id,
                cause=a.cause[:64],
                metric=Metric(a.metric),
                value=float(a.value),
                threshold=float(a.threshold),
                severity=Severity(a.severity),
                status=AlertStatus.FIRING if a.firing else AlertStatus.RESOLVED,
                source_sp=domain,
                at=self._clock(),
                comparison=Comparison(a.comparison or ">"),
                detail=a.detail[:200],
            )
        except ValueError as exc:
            log.warning("alert from %s for slice %s is malformed (%s): ignored", domain, slice_id, exc)
            return None
        if not (math.isfinite(alert.value) and math.isfinite(alert.threshold)):
            log.warning("alert from %s for slice %s has a non-finite value: ignored", domain, slice_id)
            return None
        return alert

    def relay(self, domain: str, ev: SegmentEvent) -> None:
        """A lower SP's alert about its part (``ev.handle``, its slice id) of one of this SP's slices."""
        a = ev.alert
        if a is None:
            return
        rec = self.manager.find_segment(domain, ev.handle)
        if rec is None:
            log.info("alert from %s for %s, which no slice here uses: ignored", domain, ev.handle[:80])
            return
        alert = self._typed(rec.id, domain, a)
        if alert is None:
            return
        if rec.state is SliceState.ACTIVATING:
            # The child is in service before this SP is: what it says counts once the slice is ACTIVE here.
            self.monitor.hold_early(rec.id, domain, alert)
            return
        if rec.state is SliceState.ACTIVE and rec.id not in self.monitor.watched():
            self.track(rec)  # the alert came before the ACTIVE event
        self._emit(self.monitor.child_alert(rec.id, domain, alert, self._clock()))

    async def add_rule(self, rec: SliceRecord, rule: Rule) -> None:
        """A user rule on an active slice, evaluated where the data is.

        This SP evaluates it on the segments it measures itself; every lower SP on the path gets it
        for its part (and passes it on, down to the leaves), and what fires there comes back up as
        alerts folded under the rule's name, as the SLA's own do. A lower SP that did not take it is
        named in ``Unavailable``; adding the rule again retries (a rule replaces one of its name).
        """
        self.monitor.add_rule(rec.id, rule)
        if self._store is not None:
            self._store.save_rule(rec.id, rule.name, rule_fields(rule))
        sinks = []
        for seg in rec.segments:
            agent: object = self._agents.get(seg.domain)
            if not seg.local and seg.handle and isinstance(agent, RuleSink):
                sinks.append((seg.domain, agent.add_rule(seg.handle, rule)))
        limit = self.manager.child_timeout_s
        results = await asyncio.gather(*(asyncio.wait_for(call, limit) for _, call in sinks), return_exceptions=True)
        failed: list[tuple[str, BaseException]] = [
            (domain, r) for (domain, _), r in zip(sinks, results, strict=True) if isinstance(r, BaseException)
        ]
        if failed:
            for _, r in failed:
                if not isinstance(r, (FedError, TimeoutError)):
                    raise r
            names = ", ".join(d for d, _ in failed)
            first = failed[0][1]
            why = f"no answer within {limit:g} s" if isinstance(first, TimeoutError) else str(first)
            error = DeadlineExceeded if all(isinstance(r, TimeoutError) for _, r in failed) else Unavailable
            raise error(
                f"rule '{rule.name}' is evaluated at {self.manager.sp_id}, but {names} did not take it yet "
                f"({why}); add it again to retry (a rule replaces the one of its name)"
            )

    def set_mode(self, mode: Mode, delta: float) -> None:
        """The operator's switch: normal, or skeleton (link state only, values that moved by more than delta)."""
        self.monitor.mode = mode
        self.monitor.delta = delta
        for agent in (*self._agents.values(), self._wim):
            if isinstance(agent, HealthSource):
                agent.set_skeleton(mode is Mode.SKELETON)

    # --- outputs --------------------------------------------------------------------------------

    def _persist(self) -> None:
        if self._store is None:
            self.monitor.changed()
            return
        for slice_id in self.monitor.changed():
            if self.manager.get_or_none(slice_id) is not None:  # a pruned slice's rows went with it
                self._store.save_alerts(slice_id, self.monitor.kept(slice_id))

    def _emit(self, alerts: list[Alert]) -> None:
        self._persist()
        for a in alerts:
            self.emitted[a.status.value] += 1
            rec = self.manager.get_or_none(a.slice_id)
            if rec is None:  # pruned meanwhile: nothing to tell
                continue
            state = rec.state
            self.manager.emit(SliceEvent(a.slice_id, state, a.at, a.detail, alert=a))
        self._wake.set()

    # --- the loop -------------------------------------------------------------------------------

    async def _timers(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            due = self.monitor.next_deadline()
            wait = None if due is None else max(0.0, due - self._clock())
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
            self._emit_tick()

    def _emit_tick(self) -> None:
        alerts = self.monitor.tick(self._clock())
        if alerts:
            self._emit(alerts)
        else:
            self._persist()

    async def _read(self, domain: str, agent: HealthSource) -> None:
        async for s in agent.health():
            t0 = time.process_time()
            self.sample(domain, s)
            self.cpu_s += time.process_time() - t0

    async def run(self, stop: asyncio.Event) -> None:
        """Watch ACTIVE slices, read local health, fire and resolve on time, until ``stop``."""
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(self._follow_slices()), tg.create_task(self._timers(stop))]
            for domain, agent in self._agents.items():
                if isinstance(agent, HealthSource):
                    tasks.append(tg.create_task(self._read(domain, agent)))
            if isinstance(self._wim, LinkStateSource):
                tasks.append(tg.create_task(self._read_wim(self._wim)))
            if isinstance(self._wim, HealthSource):
                tasks.append(tg.create_task(self._read_wim_health(self._wim)))
            await stop.wait()
            for t in (*tasks, *self._resyncs):
                t.cancel()


__all__ = ["LinkStateSource", "RuleSink", "Watchdog", "wim_segment"]

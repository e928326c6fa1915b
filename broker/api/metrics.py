"""``/metrics`` on ``metrics_listen``: Prometheus text for this SP's operator (issue 14). Metrics stay here.

Plaintext only on a loopback address (documented in ``scenarios/examples/leaf.yaml``); any other
address is served over HTTPS with the SP's certificate and requires a client certificate from its CA,
and is refused when the broker runs without TLS (``check_listen``).

Label cardinality is bounded by configuration, never by traffic: RPC method (the API's), status code
(gRPC's), slice state (the enum), lower SP or local domain id (the config), segment (a local domain
id, or ``wim:A/B`` for a link between two of the config's border ports). No slice id is a label:
a segment's gauge folds the slices on it (the worst latency and loss, the sums of bytes and drops).
"""

from __future__ import annotations

import ipaddress
import logging
import ssl
import time
from collections import Counter
from collections.abc import Callable, Iterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client import Counter as PromCounter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from broker.core.catalog import Catalog
from broker.core.lifecycle import SliceManager
from broker.core.monitoring import AlertStatus, Metric
from broker.core.storage import SliceStore
from broker.core.watchdog import Watchdog
from broker.descriptors import ConfigError
from slicing.model import HOLDING_STATES, SliceState

log = logging.getLogger(__name__)


def check_listen(listen: str, *, tls: bool, setting: str = "metrics_listen") -> None:
    """Refuse a non-loopback listener (``setting`` names it) without TLS: plaintext stays on this host."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"{setting}: expected HOST:PORT, got {listen!r}", field=setting)
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not tls:
        raise ConfigError(
            f"{setting}: {listen} is not a loopback address; plaintext is served on loopback only "
            "(use 127.0.0.1:PORT, or run with TLS: HTTPS with the SP's certificate)",
            field=setting,
        )


class _State(Collector):
    """What is read at scrape time: slices by state, holds, notes, alerts, segment health."""

    def __init__(self, sp_id: str, manager: SliceManager, store: SliceStore, catalog: Catalog, watchdog: Watchdog):
        self._sp = sp_id
        self._m = manager
        self._store = store
        self._catalog = catalog
        self._w = watchdog

    def collect(self) -> Iterator[GaugeMetricFamily]:
        recs = self._store.slices()
        by_state = Counter(r.state for r in recs)
        g = GaugeMetricFamily("fedbroker_slices", "Slices at this broker by state", labels=["state"])
        for state in SliceState:
            g.add_metric([state.value], by_state.get(state, 0))
        yield g
        yield GaugeMetricFamily(
            "fedbroker_holds",
            "Slices holding resources (held, committed, active, in flight)",
            value=sum(n for s, n in by_state.items() if s in HOLDING_STATES),
        )
        now = time.time()
        version = GaugeMetricFamily("fedbroker_note_version", "Version of each note held from below", labels=["sp"])
        age = GaugeMetricFamily("fedbroker_note_age_seconds", "Age of each note held from below", labels=["sp"])
        for sp, note in sorted(self._catalog.current().items()):
            version.add_metric([sp], note.version)
            age.add_metric([sp], max(0.0, now - note.issued_at))
        own = self._catalog.own
        if own is not None:
            version.add_metric([self._sp], own.version)
            age.add_metric([self._sp], max(0.0, now - own.issued_at))
        yield version
        yield age
        mon = self._w.monitor
        yield GaugeMetricFamily("fedbroker_alerts_firing", "Alerts firing at this level now", value=mon.firing_count())
        sent = GaugeMetricFamily(
            "fedbroker_alerts_emitted", "Alerts this broker put on its Watch since it started", labels=["status"]
        )
        for status in AlertStatus:
            sent.add_metric([status.value], self._w.emitted.get(status.value, 0))
        yield sent
        active = GaugeMetricFamily(
            "fedbroker_segments_active", "Active segments per child domain or lower SP", labels=["domain"]
        )
        degraded = GaugeMetricFamily(
            "fedbroker_segments_degraded",
            "Active segments per child whose slice has a firing alert naming that child",
            labels=["domain"],
        )
        per_active: Counter[str] = Counter()
        per_degraded: Counter[str] = Counter()
        for rec in recs:
            if rec.state is not SliceState.ACTIVE:
                continue
            sources = {a.source_sp for a in mon.open_alerts(rec.id)}
            for seg in rec.segments:
                per_active[seg.domain] += 1
                if seg.domain in sources or (seg.local and self._sp in sources):
                    per_degraded[seg.domain] += 1
        for domain in self._m.children:
            active.add_metric([domain], per_active.get(domain, 0))
            degraded.add_metric([domain], per_degraded.get(domain, 0))
        yield active
        yield degraded
        yield from _segment_gauges(mon.latest())
        c = mon.counters
        work = GaugeMetricFamily("fedbroker_monitor_events", "What the monitor took in", labels=["kind"])
        for kind, n in (("samples", c.samples), ("skipped", c.skipped), ("child_alerts", c.child_alerts)):
            work.add_metric([kind], n)
        yield work
        yield GaugeMetricFamily(
            "fedbroker_monitor_cpu_seconds", "CPU time the monitoring took in this process", value=self._w.cpu_s
        )


#: Per-segment gauges: metric -> (name, help, how the slices on one segment fold into one value).
SEGMENT_GAUGES: dict[Metric, tuple[str, str, Callable[[list[float]], float]]] = {
    Metric.LATENCY_MS: ("fedbroker_segment_latency_ms", "Measured one-way latency, worst slice", max),
    Metric.LOSS: ("fedbroker_segment_loss", "Measured loss (0..1), worst slice", max),
    Metric.LINK_UP: ("fedbroker_segment_link_up", "Link state (1 up, 0 down), worst slice", min),
    Metric.BYTES: ("fedbroker_segment_bytes", "Bytes that entered the segment, all slices", sum),
    Metric.DROPS: ("fedbroker_segment_drops", "Frames the segment's interfaces dropped, all slices", sum),
}


def _segment_gauges(latest: dict[tuple[str, Metric], list[float]]) -> Iterator[GaugeMetricFamily]:
    for metric, (name, doc, fold) in SEGMENT_GAUGES.items():
        g = GaugeMetricFamily(name, doc, labels=["segment"])
        for (segment, m), values in sorted(latest.items()):
            if m is metric and values:
                g.add_metric([segment], fold(values))
        yield g


class Metrics:
    """The SP's registry (its own, not the process-global one) and the ``/metrics`` endpoint."""

    def __init__(self, sp_id: str, manager: SliceManager, store: SliceStore, catalog: Catalog, watchdog: Watchdog):
        self.registry = CollectorRegistry(auto_describe=False)
        self.rpcs = PromCounter(
            "fedbroker_rpcs",
            "North–south calls answered, by method and code",
            ["method", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "fedbroker_rpc_seconds",
            "North–south call durations, by method",
            ["method"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )
        self.registry.register(_State(sp_id, manager, store, catalog, watchdog))
        self._runner: web.AppRunner | None = None
        self.address = ""

    def observe(self, method: str, code: str, seconds: float) -> None:
        """One answered call (``Gate`` calls it)."""
        self.rpcs.labels(method, code).inc()
        self.latency.labels(method).observe(seconds)

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def start(self, listen: str, ssl_context: ssl.SSLContext | None) -> str:
        """Serve ``/metrics`` on ``listen``; returns the bound address."""
        check_listen(listen, tls=ssl_context is not None)
        host, _, port = listen.rpartition(":")
        loopback = host in ("localhost",) or _is_loopback(host)
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        # Loopback is plaintext (documented); anything else is HTTPS with client certificates.
        site = web.TCPSite(self._runner, host, int(port), ssl_context=None if loopback else ssl_context)
        await site.start()
        bound = int(self._runner.addresses[0][1]) if self._runner.addresses else int(port)
        self.address = f"{host}:{bound}"
        log.info("metrics on %s://%s/metrics", "http" if loopback else "https", self.address)
        return self.address

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


Observer = Callable[[str, str, float], None]
__all__ = ["Metrics", "Observer", "check_listen"]

"""Issue 14 on a real data plane: in-namespace probes of latency and loss, and byte and drop counters.

No netem on these machines (DESIGN: "Not available: netem"), so the faults are what the kernel here
has: queueing delay from a ``tbf`` qdisc kept full by a bounded UDP stream (a congested hop), and a
``pfifo limit 0`` qdisc that drops every frame while the link stays up (a silent blackhole).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from capability_catalog.model import TerminalId
from domain_agents.base import HealthSample, HealthSource, SegmentOrder
from domain_agents.netns import NetnsDomainAgent, ProbeSettings, parse_netns_domain
from slicing.model import SliceRequest
from wim import netlink

pytestmark = pytest.mark.dataplane

DOMAIN = {
    "id": "P1",
    "type": "netns",
    "pops": ["a", "b"],
    "links": [{"a": "a", "b": "b", "bandwidth_mbps": 1000, "latency_ms": 1.0}],
    "endpoints": [
        {"id": "P1.x", "pop": "a", "capacity_mbps": 100},
        {"id": "P1.y", "pop": "b", "capacity_mbps": 100},
    ],
    "ports": [],
    "functions": [],
}
#: A congested hop: 2 Mbit/s, and a queue of 12 full frames plus room for a few echo requests (about 60 ms).
TBF_QUEUE = ["tbf", "rate", "2mbit", "burst", "1600", "limit", str(12 * 1242 + 600)]
BLACKHOLE = ["pfifo", "limit", "0"]


def backlog_bytes(ns: str, ifname: str) -> int:
    """How many bytes wait in the root qdisc of ``ifname`` in ``ns`` now."""
    shown = subprocess.run(
        ["tc", "-n", ns, "-s", "-j", "qdisc", "show", "dev", ifname], check=True, timeout=10, capture_output=True
    )
    return sum(int(q.get("backlog", 0)) for q in json.loads(shown.stdout) if q.get("root"))


async def until_backlogged(ns: str, ifname: str, within_s: float) -> None:
    """Until the qdisc holds a queue (the stream's sender, a new process, may take seconds to start on a busy
    machine), bounded."""
    for _ in range(int(within_s / 0.1)):
        if await asyncio.to_thread(backlog_bytes, ns, ifname) > 0:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the queue on {ifname} stayed empty for {within_s} s: the stream did not start")


def tc(ns: str, ifname: str, *qdisc: str) -> None:
    """Replace the root qdisc of ``ifname`` in ``ns`` (no qdisc: delete it, back to the default)."""
    if qdisc:
        cmd = ["tc", "-n", ns, "qdisc", "replace", "dev", ifname, "root", *qdisc]
    else:
        cmd = ["tc", "-n", ns, "qdisc", "del", "dev", ifname, "root"]
    subprocess.run(cmd, check=True, timeout=10, capture_output=True)


@contextlib.contextmanager
def udp_stream(ns: str, to: str, mbps: float, seconds: float) -> Iterator[None]:
    """A bounded UDP stream of full frames from namespace ``ns`` (the probe module's blaster), stopped after."""
    blast = ["blast", "--to", to, "--mbps", str(mbps), "--seconds", str(seconds)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "domain_agents.probe", "--netns", ns, *blast],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        proc.kill()
        proc.wait(timeout=10)


@dataclass
class Collector:
    """Every health sample an agent (or a WIM) publishes, read in the background."""

    agent: HealthSource

    def __post_init__(self) -> None:
        self.samples: list[HealthSample] = []
        self._task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        async for s in self.agent.health():
            self.samples.append(s)

    async def next(
        self, metric: str, within_s: float, after: float = 0.0, where: Callable[[float], bool] = lambda _: True
    ) -> HealthSample:
        """The latest ``metric`` sample taken after ``after`` (and whose value passes ``where``), within a bound."""
        for _ in range(int(within_s / 0.05)):
            found = [s for s in self.samples if s.metric == metric and s.at > after and where(s.value)]
            if found:
                return found[-1]
            await asyncio.sleep(0.05)
        seen = [s.value for s in self.samples if s.metric == metric and s.at > after]
        raise AssertionError(f"no such {metric} sample within {within_s} s; those seen: {seen[-12:]}")

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@contextlib.asynccontextmanager
async def active_segment(prefix: str, interval_s: float = 0.25) -> AsyncIterator[tuple[NetnsDomainAgent, str, str]]:
    """An agent probing one active segment P1.x → P1.y every ``interval_s``; torn down after, pass or fail."""
    agent = NetnsDomainAgent(
        parse_netns_domain(DOMAIN, "domains[0]"),
        time.time,
        prefix=prefix,
        probing=ProbeSettings(interval_s=interval_s, count=3, timeout_s=0.3),
    )
    request = SliceRequest(src=TerminalId("P1.x"), dst=TerminalId("P1.y"), bandwidth_mbps=10, subnet="10.9.0.0/24")
    grant = await agent.reserve(SegmentOrder(key="k1", request=request, hold_time_s=30))
    await agent.commit(grant.handle)
    await agent.activate(grant.handle)
    try:
        yield agent, grant.handle, "k1"
    finally:
        await agent.terminate(grant.handle)
        await agent.close()


def address_of(agent: NetnsDomainAgent, handle: str, endpoint: str) -> str:
    """The bare address the agent gave ``endpoint`` in the segment."""
    return dict(agent._segment(handle).holding.addresses)[TerminalId(endpoint)].split("/")[0]


async def test_a_segment_is_probed_inside_its_namespaces_for_latency_loss_bytes_and_drops(prefix: str) -> None:
    async with active_segment(prefix) as (agent, handle, key):
        names = agent.names
        seen = Collector(agent)
        try:
            latency = await seen.next("latency_ms", within_s=3)
            assert latency.handle == handle and 0 < latency.value < 5  # veths and bridges: well under a ms
            assert (await seen.next("loss", within_s=1)).value == 0.0
            before = await seen.next("bytes", within_s=1)
            assert (await seen.next("drops", within_s=1)).value >= 0

            # Traffic the customer sends through the slice counts.
            src_ns = names.endpoint_ns("P1", key, "P1.x")
            to = address_of(agent, handle, "P1.y")
            sender = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "domain_agents.probe", "--netns", src_ns, "send", "--to", to, "--count", "300"
            )
            await asyncio.wait_for(sender.wait(), 20)
            after = await seen.next("bytes", within_s=2, after=time.time())
            assert after.value - before.value >= 300 * 64, (before, after)

            # A silent blackhole on the hop between the pops: every echo request is lost, the link stays up.
            hop_ns, hop_if = names.pop_ns("P1", "a"), names.ifname("hop-a", "P1", key, 0)
            tc(hop_ns, hop_if, *BLACKHOLE)
            t0 = time.time()
            lost = await seen.next("loss", within_s=3, after=t0)
            assert lost.value == 1.0
            assert not [s for s in seen.samples if s.metric == "latency_ms" and s.at > t0]  # no reply, no latency
            assert not [s for s in seen.samples if s.metric == "link_up" and s.at > t0]
            tc(hop_ns, hop_if)
            assert (await seen.next("loss", within_s=3, after=time.time())).value == 0.0

            # Skeleton monitoring: no probes at all (link state only).
            agent.set_skeleton(True)
            await asyncio.sleep(0.6)  # a round in flight finishes
            rounds, t1 = agent.probe_rounds, time.time()
            await asyncio.sleep(1.0)
            assert agent.probe_rounds == rounds
            assert not [s for s in seen.samples if s.at > t1]
            agent.set_skeleton(False)
            await seen.next("latency_ms", within_s=2, after=time.time())
        finally:
            await seen.close()
    assert await asyncio.to_thread(netlink.leftovers, prefix) == []


async def test_a_congested_hop_shows_as_latency_and_its_end_restores_it(prefix: str) -> None:
    async with active_segment(prefix) as (agent, handle, key):
        names = agent.names
        seen = Collector(agent)
        try:
            base = await seen.next("latency_ms", within_s=3)
            hop_ns, hop_if = names.pop_ns("P1", "a"), names.ifname("hop-a", "P1", key, 0)
            tc(hop_ns, hop_if, *TBF_QUEUE)
            to = address_of(agent, handle, "P1.y")
            assert base.value < 5, base
            with udp_stream(names.endpoint_ns("P1", key, "P1.x"), to, mbps=3.0, seconds=12.0):
                await until_backlogged(hop_ns, hop_if, within_s=8)  # the queue fills
                # One way: half a round trip through the queue (about 60 ms full); a probe round that began
                # before the queue filled may still report the old figure, so the first slow one counts.
                await seen.next("latency_ms", within_s=4, after=time.time(), where=lambda v: v > 20)
            tc(hop_ns, hop_if)
            await seen.next("latency_ms", within_s=4, after=time.time(), where=lambda v: v < 5)
        finally:
            await seen.close()


# --- over real broker processes: T over M over the netns leaf L ----------------------------------------

LEAF = {
    **DOMAIN,
    "id": "L",
    "endpoints": [
        {"id": "L.x", "pop": "a", "capacity_mbps": 100},
        {"id": "L.y", "pop": "b", "capacity_mbps": 100},
    ],
}


async def _segment_gauge(address: str, family: str, segment: str) -> float:
    """One per-segment gauge from an SP's /metrics, parsed with prometheus-client's text parser."""
    import aiohttp
    from prometheus_client.parser import text_string_to_metric_families

    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://{address}/metrics", timeout=aiohttp.ClientTimeout(total=5)) as resp,
    ):
        text = await resp.text()
    assert "slice" not in {k for f in text_string_to_metric_families(text) for s in f.samples for k in s.labels}
    for f in text_string_to_metric_families(text):
        for sample in f.samples:
            if sample.name == family and sample.labels.get("segment") == segment:
                return float(sample.value)
    raise AssertionError(f"no {family}{{segment={segment!r}}} in /metrics: {text[-2000:]}")


async def test_probed_latency_and_loss_at_a_leaf_raise_alerts_at_the_top_naming_the_mid_sp(
    prefix: str, tmp_path: Path
) -> None:
    """A congested hop, then a blackhole, on the leaf's segment: each fires at T's Watch for T's slice, from M
    (the SP one level down, never the hidden leaf), and resolves once removed; the leaf's /metrics counts bytes."""
    from fedbroker.v1 import northsouth_pb2 as pb
    from scenarios.runner import local_segments
    from tests.integration.federation import Federation, op, reserve, slice_request
    from tests.integration.test_monitoring import FIRING, RESOLVED, Recorder

    fed = Federation(tmp_path)
    fast = {"probe_interval_s": 0.3, "probe_count": 3, "probe_timeout_s": 0.2, "clear_s": 0.5}
    try:
        leaf = await fed.start(
            "L", domains=[LEAF], dataplane={"prefix": prefix}, monitoring=fast, metrics_listen="127.0.0.1:0"
        )
        await fed.start("M", lowers=["L"])
        top = await fed.start("T", lowers=["M"])
        await fed.wait_terminals("T", ["L.x", "L.y"])
        held = await reserve(top, "probed", slice_request("L.x", "L.y", 10, latency_budget_ms=10))
        await op(top, "Commit", held.id)
        active = await op(top, "Activate", held.id)
        (seg,) = local_segments(active.segments)
        names = netlink.Names(prefix)
        hop_ns, hop_if = names.pop_ns("L", "a"), names.ifname("hop-a", "L", seg.key, 0)
        to = {a.endpoint: a.address for a in active.addresses}["L.y"].split("/")[0]
        watch = Recorder(top.slices.Watch(pb.WatchRequest(slice_id=held.id)))
        try:
            await asyncio.sleep(1.5)  # a few healthy rounds: nothing climbs
            assert watch.alerts() == []

            tc(hop_ns, hop_if, *TBF_QUEUE)
            with udp_stream(names.endpoint_ns("L", seg.key, "L.x"), to, mbps=3.0, seconds=4.0):
                _, fired = await watch.wait_alert(FIRING, within_s=3.0)
            a = fired.alert
            assert fired.slice_id == held.id and a.slice_id == held.id
            assert (a.cause, a.metric, a.source_sp) == ("latency", "latency_ms", "M"), a
            assert a.value > a.threshold
            tc(hop_ns, hop_if)
            _, resolved = await watch.wait_alert(RESOLVED, within_s=3.0)
            assert (resolved.alert.cause, resolved.alert.source_sp) == ("latency", "M")

            tc(hop_ns, hop_if, *BLACKHOLE)
            for _ in range(60):
                lossy = [e for _, e in watch.alerts() if e.alert.cause == "loss" and e.alert.status == FIRING]
                if lossy:
                    break
                await asyncio.sleep(0.05)
            assert lossy, watch.events
            assert lossy[0].alert.source_sp == "M" and lossy[0].alert.value == pytest.approx(1.0)
            tc(hop_ns, hop_if)
            for _ in range(60):
                back = [e for _, e in watch.alerts() if e.alert.cause == "loss" and e.alert.status == RESOLVED]
                if back:
                    break
                await asyncio.sleep(0.05)
            assert back, watch.events
            causes = [(e.alert.cause, e.alert.status) for _, e in watch.alerts()]
            assert causes == [("latency", FIRING), ("latency", RESOLVED), ("loss", FIRING), ("loss", RESOLVED)]
        finally:
            await watch.close()

        # Bytes sent through the slice show on the leaf's own /metrics, per segment, no slice id as a label.
        metrics_at = (leaf.data_dir / "metrics_address").read_text().strip()
        before = await _segment_gauge(metrics_at, "fedbroker_segment_bytes", "L")
        sender = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "domain_agents.probe", "--netns", names.endpoint_ns("L", seg.key, "L.x"),
            "send", "--to", to, "--count", "300",
        )  # fmt: skip
        await asyncio.wait_for(sender.wait(), 20)
        after = before
        for _ in range(40):
            after = await _segment_gauge(metrics_at, "fedbroker_segment_bytes", "L")
            if after - before >= 300 * 64:
                break
            await asyncio.sleep(0.1)
        assert after - before >= 300 * 64, (before, after)
        assert await _segment_gauge(metrics_at, "fedbroker_segment_loss", "L") == 0.0
        await op(top, "Terminate", held.id)
        await fed.wait_idle()
    finally:
        await fed.close()
    assert await asyncio.to_thread(netlink.leftovers, prefix) == []


async def test_a_linux_wim_link_is_probed_over_its_underlay_and_a_blackhole_there_is_loss(prefix: str) -> None:
    from tests.dataplane.test_linux_wim import PORT_A, PORT_B, border, spec
    from wim.linux import LinuxWimDriver

    await asyncio.to_thread(border, prefix)
    names = netlink.Names(prefix)
    wim = LinuxWimDriver(prefix, probe_interval_s=0.25, probe_count=3, probe_timeout_s=0.2)
    seen = Collector(wim)
    try:
        handle = await wim.create(spec("s1", 1003))
        t0 = time.time()
        latency = await seen.next("latency_ms", within_s=3, after=t0)
        assert latency.handle == handle and 0 < latency.value < 5
        assert (await seen.next("loss", within_s=1, after=t0)).value == 0.0
        assert (await seen.next("bytes", within_s=1, after=t0)).value >= 0
        under = names.port_ns(PORT_A), names.ifname("underlay", PORT_A)
        tc(*under, *BLACKHOLE)
        assert (await seen.next("loss", within_s=3, after=time.time())).value == 1.0
        tc(*under)
        assert (await seen.next("loss", within_s=3, after=time.time())).value == 0.0
        wim.set_skeleton(True)
        await asyncio.sleep(0.6)
        t2 = time.time()
        await asyncio.sleep(0.8)
        assert not [s for s in seen.samples if s.at > t2]
        await wim.delete(handle)
        assert not await asyncio.to_thread(netlink.link_exists, names.port_ns(PORT_B), names.ifname("underlay", PORT_B))
    finally:
        await seen.close()
        await wim.close()

"""Issue 14 on a real data plane: in-namespace probes of latency and loss, and byte and drop counters.

No netem on these machines (DESIGN: "Not available: netem"), so the faults are what the kernel here
has: queueing delay from a ``tbf`` qdisc kept full by a bounded UDP stream (a congested hop), and a
``pfifo limit 0`` qdisc that drops every frame while the link stays up (a silent blackhole).
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest

from capability_catalog.model import TerminalId
from domain_agents.base import HealthSample, SegmentOrder
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
    proc = subprocess.Popen(
        [sys.executable, "-m", "domain_agents.probe", "--netns", ns, "blast", "--to", to, "--mbps", str(mbps)]
        + ["--seconds", str(seconds)],
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
    """Every health sample an agent publishes, read in the background."""

    agent: NetnsDomainAgent

    def __post_init__(self) -> None:
        self.samples: list[HealthSample] = []
        self._task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        async for s in self.agent.health():
            self.samples.append(s)

    async def next(self, metric: str, within_s: float, after: float = 0.0) -> HealthSample:
        for _ in range(int(within_s / 0.05)):
            found = [s for s in self.samples if s.metric == metric and s.at > after]
            if found:
                return found[-1]
            await asyncio.sleep(0.05)
        raise AssertionError(f"no {metric} sample within {within_s} s: {self.samples[-8:]}")

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
            with udp_stream(names.endpoint_ns("P1", key, "P1.x"), to, mbps=3.0, seconds=4.0):
                await asyncio.sleep(0.5)  # the queue fills
                slow = await seen.next("latency_ms", within_s=3, after=time.time())
            assert slow.value > 20 > base.value, (base, slow)  # one way: half a round trip through the queue
            tc(hop_ns, hop_if)
            await asyncio.sleep(0.3)
            again = await seen.next("latency_ms", within_s=3, after=time.time())
            assert again.value < 5, again
        finally:
            await seen.close()

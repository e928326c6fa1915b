"""The measurements. Each returns figures (name → number); the harness adds them to one result.

Time is wall-clock on the client side (``time.perf_counter``) around the calls a customer makes;
medians over repetitions, p99 by nearest rank. Every broker is a separate OS process on loopback,
started by ``scenarios.processes.Fleet`` with mutual TLS and per-call tokens, over its channels.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench import federations, rpcs
from bench.echo import echo_request, echo_server
from bench.sizes import Sizes
from bench.stats import median, percentile
from broker.api import codec
from capability_catalog.canonical import note_from_canonical
from capability_catalog.model import CapabilityNote, SpId
from domain_agents.emulated_config import DEFAULT_OFFER
from fedbroker.v1 import northsouth_pb2 as pb
from fedbroker.v1 import northsouth_pb2_grpc as pb_grpc
from scenarios.processes import BrokerProcess, Fleet
from slicing import planner
from slicing.errors import FedError
from slicing.model import SliceRequest
from slicing.synthetic import synthetic_notes, synthetic_request

Figures = dict[str, float]
RPC_TIMEOUT_S = 30.0
#: Pause before each note change: more than the brokers' minimum re-publication interval (50 ms).
QUIET_S = 0.15
SLICE_MBPS = 1
#: Set-ups of each kind whose round trips are counted (one after the other, nothing else running).
RPC_COUNT_SLICES = 10


@dataclass(frozen=True)
class SyntheticCase:
    """One planning workload: the notes a broker holds and the requests to plan over them."""

    notes: Mapping[SpId, CapabilityNote]
    requests: tuple[SliceRequest, ...]


def synthetic_catalog(n_sps: int, *, seed: int, requests: int) -> SyntheticCase:
    """``n_sps`` notes of a random degree 3–4 federation and two-function requests between random endpoints."""
    notes = synthetic_notes(n_sps, seed)
    return SyntheticCase(notes, tuple(synthetic_request(notes, seed * 1_000 + k) for k in range(requests)))


#: The planner benchmark's input. Replace with another generator of the same signature to compare.
NotesGenerator = Callable[..., SyntheticCase]
notes_generator: NotesGenerator = synthetic_catalog


def _ms(seconds: float) -> float:
    return seconds * 1000.0


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far (from /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    # After "pid (comm)": state is field 3, utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class CpuMeter:
    """CPU time used by some processes and by this one (all its threads), summed over measured spans."""

    pids: list[int]
    by_pid: dict[int, float] = field(default_factory=dict)
    harness: float = 0.0

    @property
    def used(self) -> float:
        """CPU seconds of every process measured, the harness included."""
        return sum(self.by_pid.values()) + self.harness

    @contextlib.contextmanager
    def span(self) -> Iterator[None]:
        """Count the CPU used while the block runs."""
        start = {p: cpu_seconds(p) for p in self.pids}
        own = time.process_time()
        yield
        self.harness += time.process_time() - own
        for p in self.pids:
            self.by_pid[p] = self.by_pid.get(p, 0.0) + cpu_seconds(p) - start[p]


def slice_request(src: str, dst: str, index: int) -> pb.SliceRequest:
    """A 1 Mb/s request; each index gets its own /24, so no slice waits for addresses another holds."""
    return pb.SliceRequest(
        name=f"bench-{index}",
        src=src,
        dst=dst,
        bandwidth_mbps=SLICE_MBPS,
        subnet=f"10.{(index >> 8) & 255}.{index & 255}.0/24",
    )


@dataclass
class Client:
    """A customer of one broker: reserve, commit, activate over the Fleet's channel."""

    broker: BrokerProcess
    prefix: str

    async def reserve(
        self, req: pb.SliceRequest, request_id: str, then: pb.ReserveThen.ValueType = pb.RESERVE_THEN_HOLD
    ) -> pb.Slice:
        """Reserve; the reply is the held slice (with ``then``, a one-call order: committed, active)."""
        reply: pb.Slice = await self.broker.slices.Reserve(
            pb.ReserveRequest(request_id=f"{self.prefix}-{request_id}", request=req, then=then),
            timeout=RPC_TIMEOUT_S,
        )
        return reply

    async def op(self, rpc: str, slice_id: str) -> pb.Slice:
        """Commit, Activate, Get … a slice by id."""
        reply: pb.Slice = await getattr(self.broker.slices, rpc)(pb.SliceRef(slice_id=slice_id), timeout=RPC_TIMEOUT_S)
        return reply


async def _elapsed(call: Callable[[], Awaitable[object]]) -> float:
    start = time.perf_counter()
    await call()
    return time.perf_counter() - start


# --- floor and hop ------------------------------------------------------------------------------


async def floor_and_hop(root: Path, sizes: Sizes) -> Figures:
    """The transport floor and one broker hop, sampled in interleaved rounds in one run.

    * ``grpc_floor_rtt_ms``: median round trip of the echo server (``bench.echo``), alternating the
      byte sizes of the Reserve and the Commit exchange measured through ``B``;
    * ``grpc_floor_health_rtt_ms``: median ``grpc.health.v1.Health/Check`` on leaf ``L`` (a broker's
      own server, so it follows the Fleet's transport security);
    * ``leaf_reserve_commit_ms``: Reserve then Commit straight at leaf ``L``;
    * ``hop_reserve_commit_ms``: Reserve then Commit at ``B``, which reserves and commits at ``L``;
    * ``hop_overhead_ratio``: (hop − leaf) / (2 × floor): what putting one broker in front of a leaf
      costs, over the two round trips (Reserve, Commit) that the extra hop must make at the least;
    * ``hop_total_ratio``: hop / (2 × floor), the whole two-level exchange over two bare round trips.
    """
    fleet = Fleet(root / "hop")
    try:
        upper_id, leaf_id = await federations.hop(fleet)
        upper, leaf = Client(fleet[upper_id], "hop"), Client(fleet[leaf_id], "leaf")
        health = health_pb2_grpc.HealthStub(fleet[leaf_id].channel)
        counter = itertools.count()

        async def reserve_commit(client: Client) -> tuple[pb.ReserveRequest, pb.Slice, pb.Slice]:
            i = next(counter)
            req = slice_request(f"{leaf_id}.ep", f"{leaf_id}.ep2", i)
            held = await client.reserve(req, str(i))
            committed = await client.op("Commit", held.id)
            return pb.ReserveRequest(request_id=f"{client.prefix}-{i}", request=req), held, committed

        sent, held, committed = await reserve_commit(upper)
        exchanges = [
            echo_request(sent.ByteSize(), held.ByteSize()),
            echo_request(pb.SliceRef(slice_id=held.id).ByteSize(), committed.ByteSize()),
        ]
        floor: list[float] = []
        health_rtt: list[float] = []
        direct: list[float] = []
        via: list[float] = []
        async with echo_server(root / "echo") as echo:
            echo_cpu = CpuMeter([echo.pid])
            for _ in range(sizes.warmup):
                await echo.call(exchanges[0])
                await health.Check(health_pb2.HealthCheckRequest(), timeout=RPC_TIMEOUT_S)
                await reserve_commit(leaf)
                await reserve_commit(upper)
            for _ in range(sizes.rounds):
                with echo_cpu.span():
                    for k in range(sizes.floor_per_round):
                        call = functools.partial(echo.call, exchanges[k % 2], timeout=RPC_TIMEOUT_S)
                        floor.append(await _elapsed(call))
                for _ in range(sizes.floor_per_round):
                    health_rtt.append(
                        await _elapsed(lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=RPC_TIMEOUT_S))
                    )
                for _ in range(sizes.hop_per_round):
                    direct.append(await _elapsed(lambda: reserve_commit(leaf)))
                    via.append(await _elapsed(lambda: reserve_commit(upper)))
        f, d, v = median(floor), median(direct), median(via)
        return {
            "grpc_floor_rtt_ms": _ms(f),
            "grpc_floor_rtt_ms_p99": _ms(percentile(floor, 99)),
            "grpc_floor_health_rtt_ms": _ms(median(health_rtt)),
            # Client and server CPU per floor round trip: what any RPC costs the machine, whatever it does.
            "grpc_cpu_ms_per_rpc": _ms(echo_cpu.used / len(floor)),
            "leaf_reserve_commit_ms": _ms(d),
            "hop_reserve_commit_ms": _ms(v),
            "hop_overhead_ratio": (v - d) / (2 * f),
            "hop_total_ratio": v / (2 * f),
            "floor_request_bytes": float(sent.ByteSize()),
            "floor_reply_bytes": float(held.ByteSize()),
        }
    finally:
        await fleet.stop_all()


# --- three levels ---------------------------------------------------------------------------------


async def three_levels(root: Path, sizes: Sizes) -> Figures:
    """Set-up latency, note propagation and throughput on the three-level federation (one start)."""
    fleet = Fleet(root / "three-levels")
    try:
        leaves = await federations.three_levels(fleet, sizes.per_mid)
        figures = await _e2e_setup(fleet, leaves, sizes)
        figures |= await _note_propagation(fleet, leaves, sizes)
        figures |= await _alert_propagation(fleet, leaves, sizes)
        figures |= await _alert_burst(fleet, leaves)
        figures |= await _throughput(fleet, leaves, sizes)
        figures |= await _throughput(fleet, leaves, sizes, order=True)
        figures |= await _monitoring_cpu(fleet, leaves, sizes)
        return figures
    finally:
        await fleet.stop_all()


def _crossing_pair(leaves: list[str]) -> tuple[str, str]:
    """Endpoints two leaves either side of the middle: the slice crosses four leaves and both mid SPs."""
    mid = len(leaves) // 2
    return f"{leaves[max(0, mid - 2)]}.ep", f"{leaves[min(len(leaves) - 1, mid + 1)]}.ep"


async def _setup(client: Client, req: pb.SliceRequest, request_id: str) -> tuple[float, float, float]:
    t0 = time.perf_counter()
    held = await client.reserve(req, request_id)
    t1 = time.perf_counter()
    await client.op("Commit", held.id)
    t2 = time.perf_counter()
    active = await client.op("Activate", held.id)
    t3 = time.perf_counter()
    if active.state != pb.SLICE_STATE_ACTIVE:
        raise RuntimeError(f"slice {held.id} is {pb.SliceState.Name(active.state)} after Activate")
    return t1 - t0, t2 - t1, t3 - t2


async def _order(client: Client, req: pb.SliceRequest, request_id: str) -> float:
    """The one-call order (Reserve with then=COMMIT_AND_ACTIVATE); its time to the ACTIVE answer."""
    t0 = time.perf_counter()
    active = await client.reserve(req, request_id, then=pb.RESERVE_THEN_COMMIT_AND_ACTIVATE)
    t1 = time.perf_counter()
    if active.state != pb.SLICE_STATE_ACTIVE:
        raise RuntimeError(f"slice {active.id} is {pb.SliceState.Name(active.state)} after its order")
    return t1 - t0


async def _rpcs_per_slice(fleet: Fleet, setups: Sequence[Callable[[], Awaitable[object]]]) -> float:
    """The lifecycle calls every broker answered while ``setups`` ran one after the other, per set-up."""
    before = await rpcs.answered(fleet)
    for setup in setups:
        await setup()
    calls = rpcs.lifecycle_calls(before, await rpcs.answered(fleet))
    return sum(calls.values()) / len(setups)


async def _e2e_setup(fleet: Fleet, leaves: list[str], sizes: Sizes) -> Figures:
    """One slice at a time at the top SP ``T``: Reserve → Commit → Activate, and the one-call order.

    The two are timed in alternation (drift in machine load hits both alike). Their round trips are
    counted apart, from every broker's count of the calls it answered (``bench.rpcs``).
    """
    client = Client(fleet["T"], "e2e")
    src, dst = _crossing_pair(leaves)
    n = itertools.count()
    for _ in range(sizes.warmup):
        i = next(n)
        await _setup(client, slice_request(src, dst, i), str(i))
        i = next(n)
        await _order(client, slice_request(src, dst, i), str(i))
    phases: list[tuple[float, float, float]] = []
    orders: list[float] = []
    for _ in range(sizes.e2e_slices):
        i = next(n)
        phases.append(await _setup(client, slice_request(src, dst, i), str(i)))
        i = next(n)
        orders.append(await _order(client, slice_request(src, dst, i), str(i)))
    totals = [sum(p) for p in phases]
    counted = max(1, min(sizes.e2e_slices, RPC_COUNT_SLICES))
    classic = await _rpcs_per_slice(
        fleet, [functools.partial(_setup, client, slice_request(src, dst, i), str(i)) for i in _take(n, counted)]
    )
    one_call = await _rpcs_per_slice(
        fleet, [functools.partial(_order, client, slice_request(src, dst, i), str(i)) for i in _take(n, counted)]
    )
    return {
        "e2e_setup_ms_p50": _ms(median(totals)),
        "e2e_setup_ms_p99": _ms(percentile(totals, 99)),
        "e2e_reserve_ms_p50": _ms(median([p[0] for p in phases])),
        "e2e_commit_ms_p50": _ms(median([p[1] for p in phases])),
        "e2e_activate_ms_p50": _ms(median([p[2] for p in phases])),
        "e2e_order_ms_p50": _ms(median(orders)),
        "e2e_order_ms_p99": _ms(percentile(orders, 99)),
        "rpcs_per_slice_classic": classic,
        "rpcs_per_slice_order": one_call,
        "e2e_brokers": float(len(fleet.brokers)),
    }


def _take(counter: Iterator[int], k: int) -> list[int]:
    return [next(counter) for _ in range(k)]


async def _note_propagation(fleet: Fleet, leaves: list[str], sizes: Sizes) -> Figures:
    """An operator withdraws (then restores) leaf ``L1``'s offer; time until the top's note shows it.

    The clock runs from just before the ``SetOffer`` call at the leaf to the arrival, on the top's
    ``SubscribeNotes`` stream, of the first note whose endpoints lack (or again have) ``L1.ep``.
    Changes are spaced out by ``QUIET_S``; under a stream of changes each level adds at most its
    minimum re-publication interval.
    """
    leaf, top = fleet[leaves[0]], fleet["T"]
    watched = f"{leaves[0]}.ep"
    arrivals: asyncio.Queue[tuple[float, bool]] = asyncio.Queue()

    async def follow() -> None:
        stream = top.caps.SubscribeNotes(pb.SubscribeNotesRequest(subscriber="bench"))
        async for msg in stream:
            note = note_from_canonical(msg.payload)
            arrivals.put_nowait((time.perf_counter(), any(e.id == watched for e in note.endpoints)))

    async def change(withdrawn: bool) -> float:
        # Each change starts from quiet: brokers re-publish at once unless they did within NOTE_MIN_INTERVAL_S.
        await asyncio.sleep(QUIET_S)
        while not arrivals.empty():
            arrivals.get_nowait()
        offer = codec.offer_to_pb(replace(DEFAULT_OFFER, withdrawn=withdrawn))
        start = time.perf_counter()
        await leaf.caps.SetOffer(pb.SetOfferRequest(domain=leaves[0], offer=offer), timeout=RPC_TIMEOUT_S)
        async with asyncio.timeout(RPC_TIMEOUT_S):
            while True:
                at, present = await arrivals.get()
                if present != withdrawn:
                    return at - start

    follower = asyncio.create_task(follow())
    try:
        async with asyncio.timeout(RPC_TIMEOUT_S):
            while True:  # the stream's first message is the current note, with the leaf present
                _, present = await arrivals.get()
                if present:
                    break
        samples = []
        for _ in range(sizes.note_samples):
            samples.append(await change(withdrawn=True))
            samples.append(await change(withdrawn=False))
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
            await follower
    return {"note_propagation_ms": _ms(median(samples)), "note_propagation_ms_p99": _ms(percentile(samples, 99))}


async def _alert_propagation(fleet: Fleet, leaves: list[str], sizes: Sizes) -> Figures:
    """A leaf's pop under an active slice goes down (then back up); time until the alert is on the top's Watch.

    The clock runs from just before the operator's ``SetCondition`` at the leaf (the leaf measures the
    link down at once: that is its detection) to the arrival of the alert on the customer's ``Watch``
    at ``T``, three levels up. Each cut is restored and its alert resolved (one clear window,
    ``monitoring.DEFAULT_CLEAR_S``) before the next.

    The slice runs between the first two leaves, whose pops carry no other slice: the set-up
    measure's slices (hundreds, through the crossing pair's leaves) would each raise an alert of
    their own at the same cut, and this figure would be the tail of that burst (``_alert_burst``).
    """
    client = Client(fleet["T"], "alerts")
    src, dst = f"{leaves[0]}.ep", f"{leaves[1]}.ep"
    held = await client.reserve(slice_request(src, dst, 900), "alert-slice")
    await client.op("Commit", held.id)
    await client.op("Activate", held.id)
    leaf = src.split(".")[0]
    lab = pb_grpc.MonitoringStub(fleet[leaf].operator_channel)
    arrivals: asyncio.Queue[tuple[float, int]] = asyncio.Queue()

    async def follow() -> None:
        async for ev in fleet["T"].slices.Watch(pb.WatchRequest(slice_id=held.id)):
            if ev.HasField("alert"):
                arrivals.put_nowait((time.perf_counter(), ev.alert.status))

    async def toggle(down: bool) -> float:
        want = pb.ALERT_STATUS_FIRING if down else pb.ALERT_STATUS_RESOLVED
        req = pb.ConditionRequest(domain=leaf, target="core", down=down, restore=not down)
        while not arrivals.empty():  # an alert told before this cut (a repeat, a late resolve) is not its answer
            arrivals.get_nowait()
        start = time.perf_counter()
        await lab.SetCondition(req, timeout=RPC_TIMEOUT_S)
        async with asyncio.timeout(RPC_TIMEOUT_S):
            while True:
                at, status = await arrivals.get()
                if status == want and at >= start:
                    return at - start

    follower = asyncio.create_task(follow())
    try:
        # The operator's channel to the leaf is opened (TLS handshake) here, not inside the first sample.
        await lab.SetCondition(pb.ConditionRequest(domain=leaf, target="core", restore=True), timeout=RPC_TIMEOUT_S)
        await asyncio.sleep(QUIET_S)  # the stream is open
        samples = []
        for _ in range(sizes.note_samples):
            samples.append(await toggle(down=True))
            await toggle(down=False)
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
            await follower
        await client.op("Terminate", held.id)
    return {"alert_propagation_ms": _ms(median(samples)), "alert_propagation_ms_p99": _ms(percentile(samples, 99))}


async def _alert_burst(fleet: Fleet, leaves: list[str]) -> Figures:
    """A pop that every active slice crosses goes down: time until the top told an alert for each one.

    The set-up measure leaves its slices active through the crossing pair's first leaf; cutting that
    leaf's pop raises one alert per slice there, relayed by its mid-level SP to ``T``. The clock runs
    from the cut to the last slice's alert on the operator's ``Watch`` at ``T``.
    """
    top = fleet["T"]
    listed = await top.operator_slices.List(pb.ListRequest(states=[pb.SLICE_STATE_ACTIVE]), timeout=RPC_TIMEOUT_S)
    want = {s.id for s in listed.slices}
    if not want:
        return {}
    leaf = _crossing_pair(leaves)[0].split(".")[0]
    lab = pb_grpc.MonitoringStub(fleet[leaf].operator_channel)
    firing: dict[str, float] = {}
    resolved: set[str] = set()
    every = asyncio.Event()

    async def follow() -> None:
        async for ev in top.operator_slices.Watch(pb.WatchRequest()):
            if ev.HasField("alert") and ev.slice_id in want:
                if ev.alert.status == pb.ALERT_STATUS_FIRING:
                    firing.setdefault(ev.slice_id, time.perf_counter())
                else:
                    resolved.add(ev.slice_id)
                if len(firing) == len(want) or resolved == want:
                    every.set()

    follower = asyncio.create_task(follow())
    try:
        await asyncio.sleep(QUIET_S)  # the stream is open
        start = time.perf_counter()
        await lab.SetCondition(pb.ConditionRequest(domain=leaf, target="core", down=True), timeout=RPC_TIMEOUT_S)
        async with asyncio.timeout(10 * RPC_TIMEOUT_S):
            await every.wait()
        last = max(firing.values()) - start
        every.clear()
        await lab.SetCondition(pb.ConditionRequest(domain=leaf, target="core", restore=True), timeout=RPC_TIMEOUT_S)
        async with asyncio.timeout(10 * RPC_TIMEOUT_S):  # every alert resolved before the next measure
            while resolved != want:
                every.clear()
                await every.wait()
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
            await follower
    return {"alert_burst_ms": _ms(last), "alert_burst_slices": float(len(want))}


async def _monitoring_cpu(fleet: Fleet, leaves: list[str], sizes: Sizes) -> Figures:
    """CPU a leaf spends per active slice and second of operation, in normal then skeleton monitoring.

    An upper bound: the leaf process's whole CPU over a quiet window (no calls) while it holds its
    active slices, divided by slices × seconds. Monitoring here is event-driven (no polling), so a
    healthy slice costs what the idle broker costs; the figure would show a probe or a poll loop.
    """
    leaf = fleet[_crossing_pair(leaves)[0].split(".")[0]]
    listed = await leaf.operator_slices.List(pb.ListRequest(states=[pb.SLICE_STATE_ACTIVE]), timeout=RPC_TIMEOUT_S)
    count = max(1, len(listed.slices))
    window = max(1.0, sizes.throughput_s)
    assert leaf.proc is not None
    out: Figures = {"monitoring_active_slices_at_leaf": float(count)}
    mon = pb_grpc.MonitoringStub(leaf.operator_channel)
    for mode, key in (
        ("normal", "monitoring_cpu_ms_per_slice_s"),
        ("skeleton", "monitoring_cpu_ms_per_slice_s_skeleton"),
    ):
        await mon.SetMode(pb.MonitoringModeRequest(mode=mode, delta=1.0), timeout=RPC_TIMEOUT_S)
        before = cpu_seconds(leaf.proc.pid)
        await asyncio.sleep(window)
        out[key] = _ms((cpu_seconds(leaf.proc.pid) - before) / (count * window))
    await mon.SetMode(pb.MonitoringModeRequest(mode="normal"), timeout=RPC_TIMEOUT_S)
    return out


def _role(sp: str) -> str:
    return {"T": "top", "M": "mids", "L": "leaves"}[sp[0]]


def rpcs_per_slice(leaves: list[str], src: str, dst: str) -> int:
    """Round trips one set-up makes, computed: Reserve, Commit, Activate from the client to T, T to each
    mid SP involved, each mid SP to each leaf on the path (leaves form a line, split in halves under M1
    and M2). ``throughput_rpcs_per_slice_counted`` and ``rpcs_per_slice_*`` are the counted ones."""
    a, b = leaves.index(src.split(".")[0]), leaves.index(dst.split(".")[0])
    half = len(leaves) // 2
    mids = 1 if (a < half) == (b < half) else 2
    return 3 * (1 + mids + abs(a - b) + 1)


async def _throughput(fleet: Fleet, leaves: list[str], sizes: Sizes, *, order: bool = False) -> Figures:
    """Concurrent clients set up distinct slices between every ordered pair of leaf endpoints, for a bounded time.

    The CPU time of every broker process and of the harness over the run, per slice set up, tells
    what bounds the rate on this machine: ``cores / CPU per slice``. With ``order`` each set-up is the
    one-call order, and every figure is named ``order_…`` (it runs after the classic one, on a
    federation that holds those slices too).
    """
    client = Client(fleet["T"], "otput" if order else "tput")
    pairs = [(f"{a}.ep", f"{b}.ep") for a, b in itertools.permutations(leaves, 2)]
    random.Random(7).shuffle(pairs)
    counter = itertools.count()
    done: list[float] = []
    rpc_counts: list[int] = []
    errors: Counter[str] = Counter()
    roles = {b.proc.pid: _role(sp) for sp, b in fleet.brokers.items() if b.proc is not None}
    meter = CpuMeter(list(roles))
    start = time.perf_counter()
    deadline = start + sizes.throughput_s

    async def customer() -> None:
        while time.perf_counter() < deadline:
            i = next(counter)
            if i >= sizes.throughput_max_slices:
                return
            src, dst = pairs[i % len(pairs)]
            try:
                if order:
                    await _order(client, slice_request(src, dst, i), str(i))
                else:
                    await _setup(client, slice_request(src, dst, i), str(i))
            except (grpc.aio.AioRpcError, RuntimeError) as exc:
                errors[exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else "STATE"] += 1
                continue
            done.append(time.perf_counter())
            rpc_counts.append(rpcs_per_slice(leaves, src, dst))

    calls_before = await rpcs.answered(fleet)
    with meter.span():
        async with asyncio.TaskGroup() as group:
            for _ in range(sizes.throughput_clients):
                group.create_task(customer())
    calls = rpcs.lifecycle_calls(calls_before, await rpcs.answered(fleet))
    elapsed = (max(done) if done else time.perf_counter()) - start
    count = max(len(done), 1)
    per_role: dict[str, float] = {}
    for pid, used in meter.by_pid.items():
        per_role[roles[pid]] = per_role.get(roles[pid], 0.0) + used
    per_role["harness"] = meter.harness
    figures = {
        **{f"throughput_cpu_ms_per_slice_{role}": _ms(used / count) for role, used in per_role.items()},
        "e2e_throughput_slices_per_s": len(done) / elapsed,
        "throughput_clients": float(sizes.throughput_clients),
        "throughput_slices": float(len(done)),
        "throughput_errors": float(sum(errors.values())),
        "throughput_cpu_ms_per_slice": _ms(meter.used / count),
        # Counted: the lifecycle calls every broker answered over the run (failed set-ups' included).
        "throughput_rpcs_per_slice_counted": sum(calls.values()) / count,
        "throughput_cpu_bound_slices_per_s": (os.cpu_count() or 1) * count / meter.used if meter.used else 0.0,
    }
    if order:
        return {f"order_{k.removeprefix('e2e_')}": v for k, v in figures.items()}
    return figures | {"throughput_rpcs_per_slice": sum(rpc_counts) / count}


# --- planner --------------------------------------------------------------------------------------


def plan_times(sizes: Sizes) -> Figures:
    """Median time of ``slicing.planner.plan`` over synthetic catalogs of each size, in-process."""
    figures: Figures = {}
    for n_sps, reps in zip(sizes.plan_sizes, sizes.plan_repetitions, strict=True):
        case = notes_generator(n_sps, seed=n_sps, requests=reps)
        samples = []
        failed = 0
        for req in case.requests:
            start = time.perf_counter()
            try:
                planner.plan(req, case.notes)
            except FedError:
                failed += 1  # timed all the same: refusing is the planner's work too
            samples.append(time.perf_counter() - start)
        figures[f"plan_ms_p50_{n_sps}"] = _ms(median(samples))
        figures[f"plan_refused_{n_sps}"] = float(failed)
    return figures


# --- many slices ----------------------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    """Resident memory of a process (``VmRSS`` in /proc), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


async def many_slices(root: Path, sizes: Sizes) -> Figures:
    """One leaf broker with ``sizes.many_slices`` committed slices: its memory, and restart after kill -9.

    The slices are made through the API (Reserve + Commit) by concurrent clients. Recovery is timed
    from just before the Fleet spawns the process again to the answer of a ``Get`` of the first slice,
    after health reported SERVING (the Fleet polls for the listening address every 50 ms).
    """
    fleet = Fleet(root / "many")
    try:
        sp = await federations.big_leaf(fleet)
        broker = fleet[sp]
        client = Client(broker, "many")
        assert broker.proc is not None
        rss_empty = rss_mb(broker.proc.pid)
        counter = itertools.count()
        first: list[str] = []

        async def customer() -> None:
            while (i := next(counter)) < sizes.many_slices:
                held = await client.reserve(slice_request(f"{sp}.ep", f"{sp}.ep2", i), str(i))
                await client.op("Commit", held.id)
                if i == 0:
                    first.append(held.id)

        start = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for _ in range(sizes.many_clients):
                group.create_task(customer())
        create_s = time.perf_counter() - start
        rss = rss_mb(broker.proc.pid)
        usage = await fleet.usage(sp)
        if usage.holding_slices != sizes.many_slices:
            raise RuntimeError(f"{sp} holds {usage.holding_slices} slices, not {sizes.many_slices}")

        fleet.signal(sp, signal.SIGKILL)
        start = time.perf_counter()
        await fleet.restart(sp)
        got = await client.op("Get", first[0])
        recovery_s = time.perf_counter() - start
        if got.state != pb.SLICE_STATE_COMMITTED:
            raise RuntimeError(f"slice {first[0]} is {pb.SliceState.Name(got.state)} after the restart")
        assert broker.proc is not None
        rss_after = rss_mb(broker.proc.pid)
        usage = await fleet.usage(sp)
        if usage.holding_slices != sizes.many_slices:
            raise RuntimeError(f"after restart {sp} holds {usage.holding_slices} slices, not {sizes.many_slices}")
        return {
            "rss_mb_10k_slices": rss,
            "rss_mb_empty": rss_empty,
            "rss_mb_after_restart": rss_after,
            "restart_recovery_s_10k_slices": recovery_s,
            "slices_held": float(sizes.many_slices),
            "slice_creation_s": create_s,
            "slice_creation_per_s": sizes.many_slices / create_s,
        }
    finally:
        await fleet.stop_all()

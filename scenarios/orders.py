"""The ``orders`` step: many customers order slices at an SP spread over its replicas, then every SP is read.

Customers (``concurrency`` of them) take orders off one counter; each order is a Reserve, then a
Commit, at the replicas in turn (order ``i`` reserves at replica ``i`` and commits at ``i + 1``),
as clients of a replicated service do: a call that meets a replica gone (the transport says so) is
sent again, unchanged, to the next one. A reservation the kill interrupted is answered UNAVAILABLE
by the replica that settles it (presumed abort); the customer then orders again under a new request
id. Broker processes (the SP's replicas, or any SP's below) may be killed -9, each after ``after``
answered orders, and started again ``restart_after_s`` later.

Afterwards the federation is read at every SP (``convergence.read_everywhere``) and judged:

* every order answered COMMITTED, each by its own slice, and the SP's store has each order's request
  id once (none lost, none twice);
* every slice the orders made (the interrupted attempts too) is committed at every SP on its path
  or released everywhere (``convergence.judge`` on each slice's tree); nothing is held by an SP whose
  upper does not hold it, and each SP's usage agrees with the slices it lists;
* no (port, label) pair is held by two slices at any SP;
* every request id is answered with the same slice, in the same state, by every replica;
* with ``terminate``, every slice is then terminated through the replicas in turn.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from fedbroker.v1 import northsouth_pb2 as pb
from scenarios.convergence import (
    Outcome,
    SpReading,
    children_by_upper,
    judge,
    read_everywhere,
    slice_tree,
    state_name,
)
from scenarios.processes import BrokerProcess, Fleet

CALL_TIMEOUT_S = 30.0
#: How gRPC says the process at the other end is gone (not what a broker answers).
TRANSPORT = ("failed to connect", "Socket closed", "Connection reset", "Broken pipe", "Connection refused")
RETRY = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED})
#: Orders again under a new request id when a reservation was interrupted (bounded).
ATTEMPTS = 5
#: Calls to the next replica while replicas are down (bounded).
HOPS = 15
#: How long the federation may take to agree after the last order (anti-entropy runs every 30 s), and
#: the pause between reads of every SP meanwhile.
SETTLE_S = 120.0
SETTLE_POLL_S = 3.0
#: Replays and reads at the end run this many at a time.
READERS = 20
#: A reservation a kill interrupted is refused in these words by the replica that settles it.
INTERRUPTED = ("interrupted", "stopped", "restarted during the reservation")
#: Refusals of a Reserve a customer orders again after (under a new request id): the federation was
#: busy or a process was coming back, not a "no" to the order. Their slices must end released.
TRANSIENT = ("UNAVAILABLE", "DEADLINE_EXCEEDED")


class Refused(Exception):
    """A running replica answered with an error: the answer for this request, not a replica down."""


def processes(fleet: Fleet, sp_id: str) -> list[BrokerProcess]:
    """The SP's broker processes, first the SP's own then its replicas in order."""
    return sorted((b for b in fleet.brokers.values() if b.sp_id == sp_id), key=lambda b: b.replica)


async def call_any(
    replicas: Sequence[BrokerProcess],
    first: int,
    rpc: str,
    request: object,
    *,
    hops: list[int] | None = None,
    again: bool = False,
) -> pb.Slice:
    """``rpc`` at replica ``first``, then at the next ones while a replica is down (bounded).

    An error a running replica answers is raised as ``Refused``, except, with ``again`` (an
    idempotent call: Commit, Terminate), UNAVAILABLE or DEADLINE_EXCEEDED, which say the operation
    goes on (a lower SP slow to confirm): it is then sent again. ``hops`` counts calls sent again.
    """
    last = "none running"
    for attempt in range(HOPS):
        broker = replicas[(first + attempt) % len(replicas)]
        if not broker.running() or broker.channel is None:
            continue
        try:
            reply: pb.Slice = await getattr(broker.slices, rpc)(request, timeout=CALL_TIMEOUT_S)
            return reply
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # this customer is being stopped
            # The channel was closed under the call (its broker restarted): the call was lost.
            last = f"{rpc} at {broker.name}: cancelled with its channel"
            if hops is not None:
                hops.append(1)
        except grpc.aio.AioRpcError as exc:
            gone = not broker.running() or any(t in (exc.details() or "") for t in TRANSPORT)
            if exc.code() not in RETRY or not (gone or again):
                raise Refused(f"{rpc} at {broker.name}: {exc.code().name}: {exc.details()}") from exc
            last = f"{exc.code().name}: {exc.details()}"
            if hops is not None:
                hops.append(1)
        await asyncio.sleep(min(0.2 * (attempt + 1), 2.0))  # bounded: about 20 s over every hop
    raise Refused(f"{rpc}: no replica answered after {HOPS} calls: {last}")


@dataclass
class OrderBook:
    """What the customers were answered."""

    answered: dict[str, pb.Slice] = field(default_factory=dict)  # request id -> the committed slice
    refused: dict[str, str] = field(default_factory=dict)  # request id -> why (an attempt ordered again)
    failed: dict[int, str] = field(default_factory=dict)  # order -> why it never committed
    hops: list[int] = field(default_factory=list)
    kills: list[tuple[str, int, float]] = field(default_factory=list)  # (process, answered before, down for)
    late: int = 0  # customers still ordering when ``timeout_s`` ran out
    down_s: float = 0.0
    seconds: float = 0.0


class OrdersFailed(Exception):
    """An expectation of the ``orders`` step did not hold; the message lists what."""


def _order_id(prefix: str, i: int, attempt: int) -> str:
    return f"{prefix}-{i}" if attempt == 0 else f"{prefix}-{i}.r{attempt}"


async def place(fleet: Fleet, sp_id: str, request: pb.SliceRequest, args: Mapping[str, Any], prefix: str) -> OrderBook:
    """Run the customers; kill (and restart) the processes ``args["kill"]`` names when each is due."""
    replicas = processes(fleet, sp_id)
    count, hold = int(args["count"]), int(args["hold_time_s"])
    book = OrderBook()
    counter = itertools.count()
    done = asyncio.Event()
    kills: list[Mapping[str, Any]] = list(args.get("kill") or ())

    async def customer() -> None:
        while (i := next(counter)) < count:
            why = ""
            for attempt in range(ATTEMPTS):
                rid = _order_id(prefix, i, attempt)
                try:
                    held = await call_any(
                        replicas,
                        i,
                        "Reserve",
                        pb.ReserveRequest(request_id=rid, request=request, hold_time_s=hold),
                        hops=book.hops,
                    )
                except Refused as exc:
                    why = str(exc)
                    if not any(w in why for w in (*INTERRUPTED, *TRANSIENT)):
                        break  # a definitive refusal: the order fails, and the check says so
                    book.refused[rid] = why
                    await asyncio.sleep(0.5 * (attempt + 1))  # a busy federation: back off a little
                    continue
                if held.state != pb.SLICE_STATE_HELD:
                    why = f"{rid}: Reserve answered {state_name(held.state)} ({held.reason})"
                    break
                try:  # a Commit is repeated (it is idempotent), never ordered again under a new id
                    book.answered[rid] = await call_any(
                        replicas, i + 1, "Commit", pb.SliceRef(slice_id=held.id), hops=book.hops, again=True
                    )
                    why = ""
                except Refused as exc:
                    why = str(exc)
                break
            if why:
                book.failed[i] = why

    async def killer(kill: Mapping[str, Any]) -> None:
        name, after = str(kill["sp"]), int(kill["after"])
        while len(book.answered) < after:  # bounded: ``done`` is set when the customers end, whatever happened
            if done.is_set():
                return
            await asyncio.sleep(0.05)
        answered = len(book.answered)
        fleet.signal(name, signal.SIGKILL)
        t0 = time.monotonic()
        if float(kill["restart_after_s"]) > 0:
            await asyncio.sleep(float(kill["restart_after_s"]))
            await fleet.restart(name)
        book.kills.append((name, answered, time.monotonic() - t0 if kill["restart_after_s"] else 0.0))

    t0 = time.monotonic()
    killing = [asyncio.ensure_future(killer(kill)) for kill in kills]
    customers = [asyncio.ensure_future(customer()) for _ in range(min(int(args["concurrency"]), count))]
    finished, late = await asyncio.wait(customers, timeout=float(args["timeout_s"]))
    book.seconds = time.monotonic() - t0
    book.late = len(late)
    for task in late:
        task.cancel()
    await asyncio.gather(*late, return_exceptions=True)
    done.set()
    await asyncio.gather(*killing)  # a restart under way is finished (or its failure raised) before any read
    for task in finished:
        task.result()  # a customer's own bug is raised, not hidden
    return book


def _trees(
    readings: Mapping[str, SpReading], lowers: Mapping[str, Sequence[str]], root_sp: str, roots: Sequence[pb.Slice]
) -> dict[str, dict[str, SpReading]]:
    """For each root slice, the readings cut down to its tree (children found by their order keys)."""
    children = children_by_upper(readings)
    out: dict[str, dict[str, SpReading]] = {}
    for root in roots:
        found: dict[str, list[pb.Slice]] = defaultdict(list)
        for sp, s, _ in slice_tree(root_sp, root, lowers, children):
            found[sp].append(s)
        out[root.id] = {sp: SpReading(sp, tuple(found.get(sp, ()))) for sp in readings}
    return out


def _holding(s: pb.Slice) -> bool:
    return state_name(s.state) in ("HELD", "COMMITTED", "ACTIVE", "ACTIVATING", "DEACTIVATING", "COMMITTING")


def check_everywhere(
    readings: Mapping[str, SpReading],
    lowers: Mapping[str, Sequence[str]],
    sp_id: str,
    book: OrderBook,
) -> tuple[list[str], Counter[str], int]:
    """Problems found in the readings of every SP; outcomes per slice; (port, label) pairs held."""
    problems: list[str] = [f"no answer from {sp}: {r.error}" for sp, r in readings.items() if r.error]
    if problems:
        return problems, Counter(), 0
    top = readings[sp_id].slices
    by_rid: dict[str, list[pb.Slice]] = defaultdict(list)
    for s in top:
        by_rid[s.request_id].append(s)
    for rid, reply in book.answered.items():
        stored = by_rid.get(rid, [])
        if [s.id for s in stored] != [reply.id]:
            problems.append(f"{rid}: answered {reply.id}, {sp_id} stores {[s.id for s in stored] or 'nothing'}")
    if len({s.id for s in book.answered.values()}) != len(book.answered):
        problems.append("two orders were answered with the same slice")
    ours = [s for rid in (*book.answered, *book.refused) for s in by_rid.get(rid, [])]
    outcomes: Counter[str] = Counter()
    in_trees: set[tuple[str, str]] = set()
    for root_id, cut in _trees(readings, lowers, sp_id, ours).items():
        verdict = judge(cut, lowers, sp_id, slice_id=root_id, exclusive=False)
        outcomes[verdict.outcome.value] += 1
        in_trees.update((sp, s.id) for sp, r in cut.items() for s in r.slices)
        want = Outcome.COMMITTED if root_id in {s.id for s in book.answered.values()} else Outcome.RELEASED
        if verdict.outcome is not want:
            problems.append(f"{root_id}: expected {want} everywhere, got {verdict.describe()}")
    pairs = 0
    for sp, reading in readings.items():
        held = [s for s in reading.slices if _holding(s)]
        if reading.usage is not None and reading.usage.holding_slices != len(held):
            problems.append(f"{sp}: GetUsage counts {reading.usage.holding_slices} holding slices, List {len(held)}")
        stray = [s.id for s in held if (sp, s.id) not in in_trees]
        if stray:
            problems.append(f"{sp} holds {len(stray)} slices outside the orders' trees: {stray[:3]}")
        used = Counter((pl.port, pl.label) for s in held for seg in s.segments for pl in seg.labels)
        pairs += len(used)
        twice = [f"{port}={label}" for (port, label), n in used.items() if n > 1]
        if twice:
            problems.append(f"{sp}: {len(twice)} labels held twice: {', '.join(twice[:5])}")
    return problems, outcomes, pairs


async def replay(
    fleet: Fleet, sp_id: str, request: pb.SliceRequest, book: OrderBook, hold_time_s: int
) -> tuple[list[str], int]:
    """Each answered request id again at every running replica: the same slice, committed."""
    gate = asyncio.Semaphore(READERS)
    problems: list[str] = []
    calls = 0

    async def one(broker: BrokerProcess, rid: str, want: pb.Slice) -> None:
        nonlocal calls
        async with gate:
            try:
                again = await broker.slices.Reserve(
                    pb.ReserveRequest(request_id=rid, request=request, hold_time_s=hold_time_s),
                    timeout=CALL_TIMEOUT_S,
                )
            except grpc.aio.AioRpcError as exc:
                problems.append(f"{rid} at {broker.name}: {exc.code().name}: {exc.details()}")
                return
            calls += 1
            if (again.id, again.state) != (want.id, pb.SLICE_STATE_COMMITTED):
                problems.append(f"{rid} at {broker.name}: {again.id} {state_name(again.state)}, answered {want.id}")

    running = [b for b in processes(fleet, sp_id) if b.running()]
    await asyncio.gather(*(one(b, rid, s) for rid, s in book.answered.items() for b in running))
    return problems, calls


async def terminate_all(fleet: Fleet, sp_id: str, book: OrderBook) -> list[str]:
    """Terminate every committed order's slice through the replicas in turn."""
    replicas = processes(fleet, sp_id)
    gate = asyncio.Semaphore(READERS)
    problems: list[str] = []

    async def one(k: int, slice_id: str) -> None:
        async with gate:
            try:
                ended = await call_any(replicas, k, "Terminate", pb.SliceRef(slice_id=slice_id), again=True)
            except Refused as exc:
                problems.append(f"{slice_id}: {exc}")
                return
            if ended.state != pb.SLICE_STATE_TERMINATED:
                problems.append(f"{slice_id}: Terminate answered {state_name(ended.state)} ({ended.reason})")

    await asyncio.gather(*(one(k, s.id) for k, s in enumerate(book.answered.values())))
    return problems


async def run_orders(
    fleet: Fleet,
    lowers: Mapping[str, Sequence[str]],
    sp_id: str,
    request: pb.SliceRequest,
    args: Mapping[str, Any],
    prefix: str,
) -> str:
    """The whole step: orders, kill and restart, checks at every SP; a detail line, or ``OrdersFailed``."""
    book = await place(fleet, sp_id, request, args, prefix)
    count = int(args["count"])
    n = len(processes(fleet, sp_id))
    problems = [f"order {i}: {why}" for i, why in sorted(book.failed.items())[:10]]
    if book.late:
        problems.append(
            f"{book.late} customers were still ordering after {args['timeout_s']:g} s "
            f"({len(book.answered)} of {count} orders answered)"
        )
    if len(book.failed) > 10:
        problems.append(f"… and {len(book.failed) - 10} more orders failed")
    killed = {name for name, _, _ in book.kills}
    problems += [f"{k['sp']} was never killed" for k in args.get("kill") or () if k["sp"] not in killed]
    sps = sorted(set(lowers) | {lo for los in lowers.values() for lo in los})
    # What a late answer left (a child that held after its upper gave up on it) is released by the
    # upper's anti-entropy or the child's hold expiry: read until every SP agrees, bounded.
    t0 = time.monotonic()
    reads = 0
    while True:
        readings = await read_everywhere(fleet, sps, timeout_s=CALL_TIMEOUT_S)
        found, outcomes, pairs = check_everywhere(readings, lowers, sp_id, book)
        reads += 1
        if not found or time.monotonic() - t0 > SETTLE_S:
            break
        await asyncio.sleep(SETTLE_POLL_S)
    settled_s = time.monotonic() - t0
    problems += found
    replayed, calls = await replay(fleet, sp_id, request, book, int(args["hold_time_s"]))
    problems += replayed[:10]
    parts = [
        f"{count} orders at {sp_id} over {n} processes, {args['concurrency']} customers: "
        f"{len(book.answered)} committed in {book.seconds:.1f} s ({len(book.answered) / max(book.seconds, 1e-9):.1f}/s)"
    ]
    for name, answered, down in book.kills:
        parts.append(f"{name} killed -9 after {answered} answered" + (f", back after {down:.1f} s" if down else ""))
    parts.append(
        f"{len(book.hops)} calls sent again to another replica; {len(book.refused)} reservations refused "
        "(interrupted by a kill, UNAVAILABLE or DEADLINE_EXCEEDED) and ordered again"
    )
    parts.append(
        f"every SP read: {', '.join(f'{v} {k}' for k, v in sorted(outcomes.items()))} slices; "
        f"{pairs} (port, label) pairs held, none twice"
    )
    parts.append(f"every SP agreed {settled_s:.1f} s after the last order ({reads} reads of every SP)")
    parts.append(f"{calls} replays of {len(book.answered)} request ids at {n} processes answered the same slice")
    if args.get("terminate") and not problems:
        t0 = time.monotonic()
        ended = await terminate_all(fleet, sp_id, book)
        problems += ended[:10]
        parts.append(f"{len(book.answered) - len(ended)} terminated in {time.monotonic() - t0:.1f} s")
    if problems:
        raise OrdersFailed("; ".join(problems[:20]) + f" [{'; '.join(parts)}]")
    return "; ".join(parts)


__all__ = ["OrderBook", "OrdersFailed", "Refused", "call_any", "check_everywhere", "processes", "run_orders"]

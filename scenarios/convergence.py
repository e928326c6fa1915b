"""Read one slice back at every SP of a federation and judge it: all-committed/active, or all-released.

The coordinator's word is not enough (a Jepsen-style checker reads every node): ``read_everywhere``
asks each SP's operator for every slice it has (``List``) and what it holds (``GetUsage``);
``judge`` rebuilds the slice's tree from those answers alone and says whether the federation agrees.

The tree is found through request ids, not through what the upper SP remembers: an upper reserves
at a lower with its order key ``<upper slice id>.<segment>.<attempt>`` as the request id, so the
lower's slices whose request id starts with ``<upper slice id>.`` are that slice's children there,
even when the upper crashed before it recorded their ids. A segment's ``child_ref`` must name one
of them.

Outcomes (``Outcome``):

* ``released`` — no SP holds any slice of the tree, and (``exclusive``) no SP holds anything at all:
  ``GetUsage`` shows no holding slice, bandwidth, label, slot, address or WIM service;
* ``held`` / ``committed`` / ``active`` — the top's slice is in that state, every segment's child
  slice at the SP below is in the same state, recursively, each SP on the path holds exactly that one
  slice of the tree, and no SP off the path holds anything;
* ``pending`` — some slice of the tree is in flight (RESERVING, COMMITTING, …): not settled yet;
* ``split`` — anything else: what disagrees is in ``problems``, what is held that no upper SP holds
  in ``orphans``;
* ``unreadable`` — an SP did not answer (stopped, crashed, not restarted).

With ``exclusive=False`` slices outside the tree (other slices of the scenario) are allowed and
only the tree's own slices are judged, GetUsage against the number of holding slices List shows.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import grpc

from broker.core.records import slice_of_order_key
from fedbroker.v1 import northsouth_pb2 as pb
from fedbroker.v1 import northsouth_pb2_grpc as pb_grpc
from scenarios.processes import Fleet
from slicing.model import FINAL_STATES, HOLDING_STATES, SliceState

READ_TIMEOUT_S = 3.0
#: A bound on the pages one List read follows (500 slices each).
MAX_PAGES = 100
_IN_FLIGHT = frozenset(
    s.value
    for s in (
        SliceState.RESERVING,
        SliceState.COMMITTING,
        SliceState.ACTIVATING,
        SliceState.DEACTIVATING,
        SliceState.TERMINATING,
        SliceState.ABORTING,
    )
)
_HOLDING = frozenset(s.value for s in HOLDING_STATES)
#: The states a poll lists: every slice not yet ended (``SliceState`` values as the protobuf enum).
_LIVE_PB: tuple[pb.SliceState.ValueType, ...] = tuple(
    pb.SliceState.Value(f"SLICE_STATE_{s.value}") for s in SliceState if s not in FINAL_STATES
)


class Outcome(StrEnum):
    """What the federation as a whole holds for one slice."""

    RELEASED = "released"
    HELD = "held"
    COMMITTED = "committed"
    ACTIVE = "active"
    PENDING = "pending"
    SPLIT = "split"
    UNREADABLE = "unreadable"


#: The outcomes a fault must end in: all-committed/active or all-released.
SETTLED: frozenset[Outcome] = frozenset({Outcome.RELEASED, Outcome.COMMITTED, Outcome.ACTIVE})


def state_name(value: int) -> str:
    """``HELD`` for ``SLICE_STATE_HELD``."""
    return pb.SliceState.Name(value).removeprefix("SLICE_STATE_")  # type: ignore[arg-type]


@dataclass(frozen=True)
class SpReading:
    """What one SP answered: every slice it has and its usage, or why it did not answer."""

    sp_id: str
    slices: tuple[pb.Slice, ...] = ()
    usage: pb.Usage | None = None
    error: str = ""


@dataclass(frozen=True)
class Verdict:
    """The judgement of one slice across the federation."""

    outcome: Outcome
    root_id: str = ""  # the top slice's id, when the top has it
    root_state: str = ""
    states: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # SP -> "id STATE" of the tree's slices
    problems: tuple[str, ...] = ()
    orphans: tuple[str, ...] = ()  # "SP id STATE" held below with no upper holding it

    @property
    def settled(self) -> bool:
        """All-committed, all-active or all-released."""
        return self.outcome in SETTLED

    def describe(self) -> str:
        """One line: the outcome, the states per SP, and what is wrong."""
        states = "; ".join(f"{sp}: {', '.join(v)}" for sp, v in self.states.items() if v)
        text = f"{self.outcome}" + (f" [{states}]" if states else "")
        if self.problems:
            text += " — " + "; ".join(self.problems)
        return text


def _usage_held(u: pb.Usage) -> str:
    parts = []
    for d in u.domains:
        if d.bandwidth_mbps or d.labels or d.function_slots or d.addresses:
            parts.append(
                f"{d.domain} {d.bandwidth_mbps} Mb/s, {d.labels} labels, "
                f"{d.function_slots} slots, {d.addresses} addresses"
            )
    if u.wim_services or u.wim_labels or u.wim_bandwidth_mbps:
        parts.append(f"WIM {u.wim_services} services, {u.wim_labels} labels, {u.wim_bandwidth_mbps} Mb/s")
    return "; ".join(parts)


def _find_root(reading: SpReading, slice_id: str, request_id: str) -> pb.Slice | None:
    for s in reading.slices:
        if (slice_id and s.id == slice_id) or (not slice_id and request_id and s.request_id == request_id):
            return s
    return None


def children_by_upper(readings: Mapping[str, SpReading]) -> dict[str, dict[str, list[pb.Slice]]]:
    """Each SP's slices by the upper slice their order key (request id ``<upper slice>.<n>.<attempt>``) names."""
    index: dict[str, dict[str, list[pb.Slice]]] = {}
    for sp, reading in readings.items():
        by_upper: dict[str, list[pb.Slice]] = {}
        for s in reading.slices:
            if upper := slice_of_order_key(s.request_id):
                by_upper.setdefault(upper, []).append(s)
        index[sp] = by_upper
    return index


def slice_tree(
    root_sp: str,
    root: pb.Slice,
    lowers: Mapping[str, Sequence[str]],
    children: Mapping[str, Mapping[str, list[pb.Slice]]],
) -> list[tuple[str, pb.Slice, pb.Slice | None]]:
    """(SP, slice, its upper's slice) for ``root`` and every slice below it, top-down, through ``children_by_upper``."""
    tree: list[tuple[str, pb.Slice, pb.Slice | None]] = [(root_sp, root, None)]
    frontier = [(root_sp, root)]
    while frontier:
        sp, s = frontier.pop(0)
        for lo in lowers.get(sp, ()):
            for child in children.get(lo, {}).get(s.id, ()):
                tree.append((lo, child, s))
                frontier.append((lo, child))
    return tree


def judge(
    readings: Mapping[str, SpReading],
    lowers: Mapping[str, Sequence[str]],
    root_sp: str,
    *,
    slice_id: str = "",
    request_id: str = "",
    exclusive: bool = True,
) -> Verdict:
    """Judge the slice ``slice_id`` (or the one reserved with ``request_id``) of ``root_sp`` from the readings.

    ``lowers`` maps each SP to the SPs it buys from. Pure: no I/O, so it is tested with made-up answers.
    Without a slice id or request id that the top knows, the tree is empty and (``exclusive``) any
    holding anywhere is an orphan.
    """
    unread = [f"{sp}: {r.error}" for sp, r in readings.items() if r.error]
    if unread:
        return Verdict(Outcome.UNREADABLE, problems=tuple(f"no answer from {u}" for u in unread))
    root = _find_root(readings[root_sp], slice_id, request_id) if root_sp in readings else None
    tree = slice_tree(root_sp, root, lowers, children_by_upper(readings)) if root is not None else []
    in_tree = {(sp, s.id) for sp, s, _ in tree}
    problems: list[str] = []
    orphans: list[str] = []
    states: dict[str, list[str]] = {sp: [] for sp in readings}
    for sp, s, _ in tree:
        states[sp].append(f"{s.id} {state_name(s.state)}")

    def holding(s: pb.Slice) -> bool:
        return state_name(s.state) in _HOLDING

    # Usage must agree with the slices List shows, and nothing may be held without a holding slice.
    others_holding = 0
    for sp, r in readings.items():
        held_here = [s for s in r.slices if holding(s)]
        outside = [s for s in held_here if (sp, s.id) not in in_tree]
        others_holding += len(outside)
        if exclusive:
            for s in outside:
                orphans.append(f"{sp} {s.id} {state_name(s.state)}")
                problems.append(f"{sp} holds {s.id} ({state_name(s.state)}), which belongs to no slice of this tree")
        if r.usage is not None:
            if r.usage.holding_slices != len(held_here):
                problems.append(
                    f"{sp}: GetUsage counts {r.usage.holding_slices} holding slices, List shows {len(held_here)}"
                )
            leftover = _usage_held(r.usage)
            if leftover and not held_here:
                problems.append(f"{sp} holds {leftover} with no slice holding it")
    # Links: what each upper's segments name must exist below; what is held below needs a holding upper.
    by_id = {(sp, s.id): s for sp, s, _ in tree}
    for sp, s, parent in tree:
        for seg in s.segments:
            if seg.local or not seg.child_ref:
                continue
            named = by_id.get((seg.sp_id or seg.domain, seg.child_ref))
            if named is None and holding(s):
                problems.append(f"{sp}'s {s.id} names {seg.child_ref} at {seg.sp_id or seg.domain}, which is not there")
        if parent is not None and holding(s) and not holding(parent):
            orphans.append(f"{sp} {s.id} {state_name(s.state)}")
            problems.append(
                f"{sp} holds {s.id} ({state_name(s.state)}) but its upper's {parent.id} is {state_name(parent.state)}"
            )
    held_tree = [(sp, s) for sp, s, _ in tree if holding(s)]
    verdict_states = {sp: tuple(v) for sp, v in states.items()}
    root_id, root_state = (root.id, state_name(root.state)) if root is not None else ("", "")

    def verdict(outcome: Outcome) -> Verdict:
        return Verdict(outcome, root_id, root_state, verdict_states, tuple(problems), tuple(orphans))

    if any(state_name(s.state) in _IN_FLIGHT for _, s in held_tree):
        return verdict(Outcome.PENDING)
    if not held_tree:
        return verdict(Outcome.SPLIT if problems else Outcome.RELEASED)
    if root is None or not holding(root):
        return verdict(Outcome.SPLIT)
    # Held, committed or active: the path from the root through each segment's child, all in one state.
    want = root_state
    on_path: set[tuple[str, str]] = set()
    walk: list[tuple[str, pb.Slice]] = [(root_sp, root)]
    while walk:
        sp, s = walk.pop()
        on_path.add((sp, s.id))
        if state_name(s.state) != want:
            problems.append(f"{sp}'s {s.id} is {state_name(s.state)}, the top's {root.id} is {want}")
        for seg in s.segments:
            if seg.local:
                continue
            below = by_id.get((seg.sp_id or seg.domain, seg.child_ref))
            if below is None:
                if not seg.child_ref:
                    problems.append(f"{sp}'s {s.id} has no slice id for its segment at {seg.sp_id or seg.domain}")
                continue
            walk.append((seg.sp_id or seg.domain, below))
    for sp, s in held_tree:
        if (sp, s.id) not in on_path:
            orphans.append(f"{sp} {s.id} {state_name(s.state)}")
            problems.append(f"{sp} holds {s.id} ({state_name(s.state)}), which no segment of the slice names")
    per_sp: dict[str, int] = {}
    for sp, _ in on_path:
        per_sp[sp] = per_sp.get(sp, 0) + 1
    for sp, n in per_sp.items():
        if n > 1:
            problems.append(f"{sp} holds {n} slices of the path")
    if problems:
        return verdict(Outcome.SPLIT)
    return verdict({"HELD": Outcome.HELD, "COMMITTED": Outcome.COMMITTED, "ACTIVE": Outcome.ACTIVE}[want])


async def _list_all(
    stub: pb_grpc.SlicesStub, states: Sequence[pb.SliceState.ValueType], timeout_s: float
) -> list[pb.Slice]:
    """Every slice List shows (in ``states``; empty: all), page after page."""
    out: list[pb.Slice] = []
    token = ""
    for _ in range(MAX_PAGES):
        page = await stub.List(pb.ListRequest(states=states, page_token=token), timeout=timeout_s)
        out.extend(page.slices)
        token = page.next_page_token
        if not token:
            break
    return out


async def read_sp(
    fleet: Fleet,
    sp_id: str,
    timeout_s: float = READ_TIMEOUT_S,
    *,
    live_only: bool = False,
    root: tuple[str, str] | None = None,
) -> SpReading:
    """Every slice ``sp_id`` has and its usage, as its operator sees them.

    ``live_only`` lists only slices not yet ended (what can hold anything, or still move), which is
    what a poll needs and costs what is in flight rather than everything the SP ever had; the slice
    ``root`` (slice id, request id) is then fetched on its own as well, in whatever state it is, as
    its customer (a request id is the customer's own).
    """
    broker = fleet.brokers.get(sp_id)
    if broker is None or not broker.running():
        status = broker.exit_status() if broker is not None else None
        return SpReading(sp_id, error="not running" + (f" (exit status {status})" if status is not None else ""))
    if broker.frozen:
        return SpReading(sp_id, error="stopped (SIGSTOP)")
    stub = broker.operator_slices
    try:
        listed, usage = await asyncio.gather(
            _list_all(stub, _LIVE_PB if live_only else (), timeout_s),
            stub.GetUsage(pb.GetUsageRequest(), timeout=timeout_s),
        )
        if live_only and root is not None and (root[0] or root[1]):
            slice_id, request_id = root
            if not any(s.id == slice_id or (not slice_id and s.request_id == request_id) for s in listed):
                try:
                    found = await broker.slices.Get(
                        pb.SliceRef(slice_id=slice_id, request_id="" if slice_id else request_id), timeout=timeout_s
                    )
                except grpc.aio.AioRpcError as exc:
                    # No such slice; a request id no request could carry (the sweep's ``-none-``) neither.
                    if exc.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                        raise
                else:
                    listed.append(found)
    except grpc.aio.AioRpcError as exc:
        return SpReading(sp_id, error=f"{exc.code().name}: {exc.details()}")
    return SpReading(sp_id, tuple(listed), usage)


async def read_everywhere(
    fleet: Fleet,
    sp_ids: Iterable[str],
    timeout_s: float = READ_TIMEOUT_S,
    *,
    live_only: bool = False,
    root: tuple[str, str, str] | None = None,
) -> dict[str, SpReading]:
    """``read_sp`` at every SP named, side by side (``root``: the top's SP, slice id, request id)."""
    ids = list(sp_ids)

    def root_at(sp: str) -> tuple[str, str] | None:
        return (root[1], root[2]) if root is not None and root[0] == sp else None

    readings = await asyncio.gather(
        *(read_sp(fleet, sp, timeout_s, live_only=live_only, root=root_at(sp)) for sp in ids)
    )
    return dict(zip(ids, readings, strict=True))


@dataclass(frozen=True)
class Convergence:
    """How a wait for a settled federation ended."""

    verdict: Verdict
    seconds: float  # from the start of the wait until the verdict first held (or the wait gave up)
    reached: bool  # whether an outcome of ``want`` held, stable, before the deadline
    polls: int


async def wait_settled(
    fleet: Fleet,
    lowers: Mapping[str, Sequence[str]],
    root_sp: str,
    *,
    slice_id: str = "",
    request_id: str = "",
    timeout_s: float,
    want: Collection[Outcome] = SETTLED,
    exclusive: bool = True,
    interval_s: float = 0.2,
    stable_polls: int = 2,
    before_poll: Callable[[], Awaitable[object]] | None = None,
) -> Convergence:
    """Poll every SP until the slice's verdict is one of ``want`` on ``stable_polls`` reads in a row.

    Bounded by ``timeout_s`` plus the time ``before_poll`` takes (it runs before each read; the sweep
    restarts crashed SPs there, and a process start is not the federation settling). Returns the last
    verdict either way.
    """
    t0 = time.monotonic()
    deadline = t0 + timeout_s
    sps = sorted(set(lowers) | {lo for los in lowers.values() for lo in los} | {root_sp})
    first: float | None = None
    streak = polls = 0
    last: Outcome | None = None
    while True:
        if before_poll is not None:
            # Time spent bringing crashed SPs back (a process start) does not count against the bound:
            # it measures how fast the federation settles once its SPs run, not how fast Python starts.
            paused = time.monotonic()
            await before_poll()
            deadline += time.monotonic() - paused
        # Polls read what is live (and the slice itself); the read that would confirm a settled
        # verdict reads everything, so the verdict returned is judged on every slice of the tree.
        confirming = streak + 1 >= stable_polls and last in want
        readings = await read_everywhere(fleet, sps, live_only=not confirming, root=(root_sp, slice_id, request_id))
        verdict = judge(readings, lowers, root_sp, slice_id=slice_id, request_id=request_id, exclusive=exclusive)
        polls += 1
        if verdict.outcome in want:
            if verdict.outcome != last or first is None:
                streak, first = 0, time.monotonic()
            streak += 1
            if confirming and streak >= stable_polls:
                return Convergence(verdict, first - t0, True, polls)
            if time.monotonic() >= deadline:  # at the deadline one good read counts, read in full
                full = await read_everywhere(fleet, sps)
                verdict = judge(full, lowers, root_sp, slice_id=slice_id, request_id=request_id, exclusive=exclusive)
                return Convergence(verdict, first - t0, verdict.outcome in want, polls + 1)
        else:
            streak, first = 0, None
        last = verdict.outcome
        if time.monotonic() >= deadline:
            return Convergence(verdict, time.monotonic() - t0, False, polls)
        await asyncio.sleep(interval_s)


__all__ = [
    "SETTLED",
    "Convergence",
    "Outcome",
    "SpReading",
    "Verdict",
    "judge",
    "read_everywhere",
    "read_sp",
    "wait_settled",
]

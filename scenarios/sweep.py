"""The fault sweep: one slice through each operation with one fault armed, then read back at every SP.

For each case (an operation, an SP on the path, an injection point or an outside kill, an action) a
federation of ``sweep.yaml`` (a top, two mids, four leaves; every SP its own process) runs the
slice up to the operation without faults, arms the fault in that SP's faults file, runs the
operation at the top as the customer, restarts whatever crashed, and waits (bounded) until every SP
agrees: all-committed/active or all-released (``scenarios.convergence``). Then it cleans up, so the
next case can reuse the federation; a federation that does not come clean is replaced.

Several federations run side by side (``federations``), each taking the next case from one queue.
``SweepReport`` counts operations × points covered (a rule that never fired covers nothing),
outcomes, orphans, answers from the top that the SPs below contradict, and the slowest convergence.

Actions: ``crash`` and ``hang`` are rules at an injection point (``fedbroker faults list``); a hang
at the top lasts ``hang_s``, longer than the customer's deadline (``call_timeout_s``); below it, half
a second past the deadline its upper gives it (its ``lower_timeout_s``); ``fail`` raises a definitive
refusal (``FAIL_CODE``) at the point, and a refused Activate must end COMMITTED everywhere (compensated,
the reservation kept; ``Case.expected``), not released; ``kill`` is SIGKILL of the
SP from outside right after the operation answered, ``race`` the same at a set delay after the
operation was sent (while it is on its way through the federation), each followed by a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc

from broker.core.faults import OPERATIONS
from domain_agents import probe
from fedbroker.v1 import northsouth_pb2 as pb
from scenarios.convergence import SETTLED, Convergence, Outcome, Verdict, state_name, wait_settled
from scenarios.model import Scenario, load_scenario
from scenarios.processes import Fleet, StartError
from scenarios.runner import read_view
from scenarios.sweep_cases import (
    ACTIONS,
    FAIL_CODE,
    Case,
    CaseResult,
    SweepReport,
    default_cases,
    race_cases,
    slow_leaves,
    tuned,
    write_report,
)
from slicing.errors import FedError
from wim import netlink

SWEEP_YAML = Path(__file__).with_name("sweep.yaml")
#: What runs before the operation under test, without faults.
PREFIX: dict[str, tuple[str, ...]] = {
    "reserve": (),
    "commit": ("reserve",),
    "abort": ("reserve",),
    "activate": ("reserve", "commit"),
    "deactivate": ("reserve", "commit", "activate"),
    "terminate": ("reserve", "commit", "activate"),
    # The one-call order: a Reserve that commits and activates once held everywhere.
    "order": (),
}
#: Answers that say the harness, not a fault, is to blame.
_REFUSED = frozenset({"INVALID_ARGUMENT", "UNAUTHENTICATED", "PERMISSION_DENIED", "ALREADY_EXISTS"})
WARM_UP_ATTEMPTS = 20
#: A hang below the top lasts this much past the deadline its upper gives it.
HANG_PAST_DEADLINE_S = 0.5
_RPC = {
    "commit": "Commit",
    "abort": "Abort",
    "activate": "Activate",
    "deactivate": "Deactivate",
    "terminate": "Terminate",
}


def _answer_contradicts(answer: str, outcome: Outcome, operation: str = "") -> str:
    """Whether the top's answer to the operation says something the settled federation does not hold."""
    if operation == "deactivate" and answer == "COMMITTED" and outcome is Outcome.ACTIVE:
        return "the top answered COMMITTED to a Deactivate, but the SPs hold active"
    promised = {
        "COMMITTED": {Outcome.COMMITTED, Outcome.ACTIVE},
        "ACTIVE": {Outcome.ACTIVE},
        "TERMINATED": {Outcome.RELEASED},
        "ABORTED": {Outcome.RELEASED},
    }.get(answer)
    if promised is None or outcome in promised or outcome not in SETTLED:
        return ""
    return f"the top answered {answer}, but the SPs hold {outcome}"


@dataclass
class SweepFederation:
    """One federation of the sweep, reused across cases while it comes clean."""

    scenario: Scenario
    root: Path
    call_timeout_s: float = 4.0
    fleet: Fleet | None = None
    starts: int = 0
    recycled: list[str] = field(default_factory=list)  # why a federation was replaced
    _generation: int = 0
    _restarted: bool = False  # an SP was restarted since the last probe slice went through
    _probes: int = 0
    #: On a data plane, this federation's own prefix for every namespace and link it makes.
    prefix: str = field(default_factory=lambda: f"fb{secrets.token_hex(2)}")
    #: What it left in the kernel under that prefix after it stopped (removed since).
    leftovers: list[str] = field(default_factory=list)
    probed: int = 0

    @property
    def top(self) -> str:
        """The SP no other SP buys from."""
        below = {lo for sp in self.scenario.sps for lo in sp.lower}
        return next(sp.id for sp in self.scenario.sps if sp.id not in below)

    async def start(self) -> Fleet:
        """Start every SP (bottom-up, each with an empty faults file) and wait for the top's catalog."""
        await self.stop()
        self._generation += 1
        self._restarted = False
        fleet = self.fleet = Fleet(self.root / f"fed{self._generation}")
        self.starts += 1
        for wave in self.scenario.start_order():
            await asyncio.gather(
                *(fleet.start(sp, self._settings(sp), self.scenario.sp(sp).lower, faults=[]) for sp in wave)
            )
        await fleet.wait_terminals(self.top, list(self._terminals()), timeout_s=30)
        return fleet

    def _settings(self, sp: str) -> dict[str, object]:
        settings = dict(self.scenario.sp(sp).settings)
        if self.scenario.uses_dataplane:
            settings["dataplane"] = {"prefix": self.prefix}
        return settings

    def _terminals(self) -> tuple[str, str]:
        step = next(s for s in self.scenario.steps if s.action == "request")
        assert step.request is not None
        return step.request.src, step.request.dst

    def request(self) -> pb.SliceRequest:
        """The sweep's slice request (the scenario's first ``request``)."""
        step = next(s for s in self.scenario.steps if s.action == "request")
        assert step.request is not None
        return step.request

    async def stop(self) -> None:
        """Stop every broker (frozen ones are thawed first); the data folder goes too."""
        if self.fleet is not None:
            self.fleet.thaw_all()
            await self.fleet.stop_all()
            shutil.rmtree(self.fleet.root, ignore_errors=True)
            self.fleet = None
            if self.scenario.uses_dataplane:
                left = await netlink.call(netlink.clean, self.prefix)
                if left:
                    self.leftovers.append(f"prefix {self.prefix}: " + ", ".join(map(str, left)))

    async def carries_traffic(self, slice_id: str) -> str:
        """On a data plane: why the ACTIVE slice carries no traffic end to end (empty when it does)."""
        assert self.fleet is not None
        self.probed += 1
        try:
            view = await read_view(self.fleet, self.prefix, self.top, slice_id, "case")
        except (FedError, grpc.aio.AioRpcError) as exc:
            return f"its data plane could not be read back: {exc}"[:300]
        failed = [r for r in await probe.probe([view], ("reachability",)) if not r.passed]
        return "; ".join(f"{r.check}: {r.detail}" for r in failed)[:300]

    async def restart_crashed(self) -> list[str]:
        """Restart every broker that is not running (an injected crash, a kill); their uppers know the address."""
        assert self.fleet is not None
        restarted = []
        for sp, broker in self.fleet.brokers.items():
            if not broker.running():
                await self.fleet.restart(sp)
                restarted.append(sp)
        self._restarted = self._restarted or bool(restarted)
        return restarted

    async def _warm_up(self) -> bool:
        """After a restart: Reserve and Abort a probe slice until the top reaches every SP again (bounded).

        An upper's channel to a lower that just restarted may still be backing off; a case whose
        unfaulted prefix failed for that would prove nothing.
        """
        hold = int(self.scenario.sp(self.top).settings.get("hold_time_s", 4))
        self._probes += 1
        for attempt in range(WARM_UP_ATTEMPTS):
            answer, slice_id = await self.call("reserve", f"warm-{self._generation}-{self._probes}-{attempt}", "", hold)
            if answer == "HELD":
                await self.call("abort", "", slice_id, hold)
                self._restarted = False
                return True
            await asyncio.sleep(0.5)
        return False

    async def ensure_ready(self) -> Fleet:
        """A running federation that holds nothing; a new one if this one does not come clean."""
        if self.fleet is not None:
            try:
                await self.restart_crashed()
                for sp in self.fleet.brokers:
                    self.fleet.write_faults(sp)
                settings = self.scenario.sp(self.top).settings
                clean = await wait_settled(
                    self.fleet,
                    self.scenario.lowers,
                    self.top,
                    request_id="-none-",  # no slice: released means nothing held anywhere
                    timeout_s=float(settings.get("hold_time_s", 4)) + float(settings.get("reconcile_interval_s", 2)),
                    want={Outcome.RELEASED},
                )
                if clean.reached:
                    await self.fleet.wait_terminals(self.top, list(self._terminals()), timeout_s=10)
                    if not self._restarted:
                        return self.fleet
                    if await self._warm_up():
                        return await self.ensure_ready()  # the probe must leave nothing behind either
                    self.recycled.append("the top could not reserve across the federation after a restart")
                else:
                    self.recycled.append(f"not clean: {clean.verdict.describe()}"[:300])
            except (StartError, OSError, grpc.aio.AioRpcError, TimeoutError) as exc:
                self.recycled.append(f"{type(exc).__name__}: {exc}"[:300])
        return await self.start()

    async def call(self, operation: str, request_id: str, slice_id: str, hold_time_s: int) -> tuple[str, str]:
        """The operation at the top as the customer: (answer, slice id); the answer is a state or an error code."""
        assert self.fleet is not None
        top = self.fleet[self.top]
        if not top.running():
            return "NOT_RUNNING", slice_id
        try:
            if operation in ("reserve", "order"):
                then = pb.RESERVE_THEN_COMMIT_AND_ACTIVATE if operation == "order" else pb.RESERVE_THEN_HOLD
                msg: pb.Slice = await top.slices.Reserve(
                    pb.ReserveRequest(
                        request_id=request_id, request=self.request(), hold_time_s=hold_time_s, then=then
                    ),
                    timeout=self.call_timeout_s,
                )
            else:
                method = getattr(top.slices, _RPC[operation])
                msg = await method(pb.SliceRef(slice_id=slice_id), timeout=self.call_timeout_s)
        except grpc.aio.AioRpcError as exc:
            return exc.code().name, slice_id
        return state_name(msg.state), msg.id

    def hang_for(self, sp: str, top_hang_s: float) -> float:
        """How long a hang at ``sp`` lasts: past the deadline its caller gives it (the customer's for the top)."""
        upper = next((u for u in self.scenario.sps if sp in u.lower), None)
        if upper is None:
            return top_hang_s
        return float(upper.settings.get("lower_timeout_s", 10.0)) + HANG_PAST_DEADLINE_S

    async def run(self, case: Case, n: int, *, hang_s: float, margin_s: float) -> CaseResult:
        """Run one case on this federation (started or reused)."""
        hang_s = self.hang_for(case.sp, hang_s)
        fleet = await self.ensure_ready()
        top_settings = self.scenario.sp(self.top).settings
        hold = int(top_settings.get("hold_time_s", 4))
        reconcile = float(top_settings.get("reconcile_interval_s", 2.0))
        deadline_s = hold + reconcile + margin_s + (hang_s if case.action == "hang" else 0.0)
        request_id = f"sweep-{n}"
        slice_id = ""
        before = ""  # the slice's state when the operation under test is sent
        for op in PREFIX[case.operation]:
            answer, slice_id = await self.call(op, request_id, slice_id, hold)
            want = before = {"reserve": "HELD", "commit": "COMMITTED", "activate": "ACTIVE"}[op]
            if answer != want:
                return CaseResult(
                    case,
                    False,
                    answer,
                    "",
                    Outcome.UNREADABLE,
                    False,
                    0.0,
                    deadline_s,
                    error=f"{op} before the fault answered {answer}",
                )
        rule_id = f"sweep{n}"
        if case.action not in ("kill", "race"):
            rule: dict[str, Any] = {"id": rule_id, "point": case.point, "action": case.action, "occurrence": 1}
            if case.domain:
                rule["domain"] = case.domain
            if case.action == "hang":
                rule["hang_s"] = hang_s
            if case.action == "fail":
                rule["code"] = FAIL_CODE
            fleet.write_faults(case.sp, [rule])
        fleet.exits()  # forget ends told before the fault
        watched: dict[str, list[str]] = {}
        watcher = asyncio.ensure_future(self._watch_top(watched))
        await asyncio.sleep(0.05)  # subscribed before the operation is sent
        t_sent = time.monotonic()
        if case.action == "race":  # kill -9 while the operation is on its way through the federation
            sent = asyncio.ensure_future(self.call(case.operation, request_id, slice_id, hold))
            await asyncio.sleep(case.delay_ms / 1000)
            if fleet[case.sp].running():
                fleet.signal(case.sp, signal.SIGKILL)
            answer, slice_id = await sent
        else:
            answer, slice_id = await self.call(case.operation, request_id, slice_id, hold)
        restarted: list[str] = []
        died: list[str] = []
        if case.action == "kill" and fleet[case.sp].running():
            fleet.signal(case.sp, signal.SIGKILL)
        if case.action == "hang" and rule_id in fleet[case.sp].fired():
            # A hung operation is still under way: what the federation holds meanwhile is not where it
            # ends. Judge it once the hang is over (the operation resumes and runs to its end).
            await asyncio.sleep(max(0.0, t_sent + hang_s + 0.2 - time.monotonic()))

        async def before_poll() -> None:
            died.extend(ex.describe() for ex in fleet.exits() if not ex.crashed and not ex.expected)
            restarted.extend(await self.restart_crashed())

        result: Convergence = await wait_settled(
            fleet,
            self.scenario.lowers,
            self.top,
            slice_id=slice_id,
            request_id=request_id,
            timeout_s=deadline_s,
            before_poll=before_poll,
        )
        told = await self._told_on_watch(watched, result.verdict, watcher, before)
        fired = case.action in ("kill", "race") or rule_id in fleet[case.sp].fired()
        if answer in _REFUSED:  # the harness sent something wrong: that proves nothing about faults
            died.append(f"the top refused the {case.operation} itself: {answer}")
        verdict = result.verdict
        orphans = verdict.orphans if not result.reached else ()
        if not result.reached and not orphans and verdict.outcome is not Outcome.UNREADABLE:
            # Not settled at the deadline: whatever is still held below the top is held by no decision.
            orphans = tuple(f"{sp} {st}" for sp, sts in verdict.states.items() for st in sts if not _final(st))
        case_result = CaseResult(
            case,
            fired,
            answer,
            verdict.describe(),
            verdict.outcome,
            result.reached,
            result.seconds,
            deadline_s,
            orphans,
            (_answer_contradicts(answer, verdict.outcome, case.operation) or told) if result.reached else "",
            tuple(restarted),
            "; ".join(died),
        )
        expected = case.expected(top=case.sp == self.top)
        if result.reached and expected is not None and verdict.outcome not in expected:
            want = " or ".join(sorted(str(o) for o in expected))
            case_result = replace(case_result, unexpected=f"ended {verdict.outcome}, must end {want}")
        if case.action == "hang" and fired:  # let the hung operation wake before the next case shares the federation
            await asyncio.sleep(max(0.0, t_sent + hang_s + 0.2 - time.monotonic()))
        if self.scenario.uses_dataplane and result.reached and verdict.outcome is Outcome.ACTIVE:
            case_result = replace(case_result, traffic=await self.carries_traffic(slice_id))
        if verdict.outcome in (Outcome.COMMITTED, Outcome.ACTIVE):
            left, stranded = await self._clean_up(slice_id, request_id, deadline_s)
            if left:
                case_result = replace(case_result, cleanup=left, cleanup_orphans=stranded)
        else:
            for sp in fleet.brokers:
                fleet.write_faults(sp)
        return case_result

    async def _watch_top(self, seen: dict[str, list[str]]) -> None:
        """Follow the top's Watch as the customer, reconnecting (with the current states) after a restart."""
        assert self.fleet is not None
        first = True
        while True:
            top = self.fleet[self.top]
            try:
                # wait_for_ready: a reconnect waits for the restarted top instead of failing during the
                # channel's back-off, as a watching customer's client would.
                async for ev in top.slices.Watch(pb.WatchRequest(initial=not first), wait_for_ready=True):
                    seen.setdefault(ev.slice_id, []).append(state_name(ev.state))
            except (grpc.aio.AioRpcError, grpc.aio.UsageError, RuntimeError):
                pass  # the top died or was restarted: follow the new one
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # the harness stops watching
                # else the call was cancelled because the restart closed its channel: follow the new one
            first = False
            await asyncio.sleep(0.1)

    async def _told_on_watch(
        self, seen: dict[str, list[str]], verdict: Verdict, watcher: asyncio.Future[None], before: str = ""
    ) -> str:
        """Whether the last state the top's Watch told its customer agrees with what the SPs settled on.

        Watch tells changes: an operation refused before it changed anything (a ``fail`` at the top's
        ``start``) leaves nothing to tell, and the customer's last news (``before``) still holds.
        """
        try:
            expected = _WATCH_SAYS.get(verdict.outcome)
            if expected is None or not verdict.root_id:
                return ""
            for _ in range(60):  # the last change may still be on its way (bounded: 3 s)
                told = seen.get(verdict.root_id, [])
                if told and told[-1] in expected:
                    return ""
                await asyncio.sleep(0.05)
            told = seen.get(verdict.root_id, [])
            if not told and before in expected:
                return ""
            last = told[-1] if told else "nothing"
            return f"the top's Watch last said {last} (told {told}), but the SPs hold {verdict.outcome}"
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await watcher

    async def _clean_up(self, slice_id: str, request_id: str, deadline_s: float) -> tuple[str, tuple[str, ...]]:
        """Disarm every faults file, terminate what the case left committed, and check it is all released.

        Returns what is still held when it is not: a fault that leaves the federation unable to end
        a slice cleanly breaks the promise as much as one that leaves it split.
        """
        assert self.fleet is not None
        for sp in self.fleet.brokers:
            self.fleet.write_faults(sp)
        answer = ""
        # A one-call order that answered an error may have gone on to ACTIVE: its id is known by its request id.
        ref = pb.SliceRef(slice_id=slice_id) if slice_id else pb.SliceRef(request_id=request_id)
        with contextlib.suppress(grpc.aio.AioRpcError):
            msg = await self.fleet[self.top].slices.Terminate(ref, timeout=self.call_timeout_s)
            answer = state_name(msg.state)
        after = await wait_settled(
            self.fleet,
            self.scenario.lowers,
            self.top,
            slice_id=slice_id,
            request_id=request_id,
            timeout_s=deadline_s,
            want={Outcome.RELEASED},
        )
        if after.reached:
            return "", ()
        left = f"Terminate after the case answered {answer or 'an error'}, then {after.verdict.describe()}"
        return left[:600], after.verdict.orphans


#: The states the top's Watch may last have told for each settled outcome.
_WATCH_SAYS: dict[Outcome, frozenset[str]] = {
    Outcome.RELEASED: frozenset({"TERMINATED", "ABORTED", "EXPIRED", "FAILED"}),
    Outcome.COMMITTED: frozenset({"COMMITTED"}),
    Outcome.ACTIVE: frozenset({"ACTIVE"}),
}


def _final(described: str) -> bool:
    return described.rsplit(" ", 1)[-1] in {"TERMINATED", "ABORTED", "EXPIRED", "FAILED"}


async def run_sweep(
    cases: Iterable[Case],
    workdir: Path,
    *,
    federations: int = 2,
    scenario: Scenario | None = None,
    hang_s: float = 5.0,
    margin_s: float = 3.0,
    call_timeout_s: float = 4.0,
    case_timeout_s: float = 90.0,
    progress: Callable[[CaseResult], object] | None = None,
) -> SweepReport:
    """Run the cases on ``federations`` federations side by side; every broker is stopped at the end."""
    sc = scenario or load_scenario(SWEEP_YAML)
    queue: asyncio.Queue[tuple[int, Case]] = asyncio.Queue()
    for n, case in enumerate(cases):
        queue.put_nowait((n, case))
    report = SweepReport()
    feds = [SweepFederation(sc, workdir / f"w{i}", call_timeout_s) for i in range(max(1, federations))]
    t0 = time.monotonic()

    retried: set[int] = set()

    async def worker(fed: SweepFederation) -> None:
        while not queue.empty():
            n, case = queue.get_nowait()
            try:
                async with asyncio.timeout(case_timeout_s):
                    result = await fed.run(case, n, hang_s=hang_s, margin_s=margin_s)
            except (TimeoutError, StartError, OSError, grpc.aio.AioRpcError) as exc:
                error = f"{type(exc).__name__}: {exc}"[:500]
                await fed.stop()  # whatever state it is in, the next case gets a fresh federation
                if not isinstance(exc, TimeoutError) and n not in retried:
                    # The harness lost its own connection (a start or a read on a loaded machine), which
                    # says nothing about the brokers: run the case once more on a fresh federation, and say so.
                    retried.add(n)
                    report.harness_retries.append(f"{case.name}: {error}")
                    queue.put_nowait((n, case))
                    continue
                result = CaseResult(case, False, "", "", Outcome.UNREADABLE, False, 0.0, 0.0, error=error)
            report.results.append(result)
            if progress is not None:
                progress(result)

    try:
        await asyncio.gather(*(worker(f) for f in feds))
    finally:
        for fed in feds:
            await fed.stop()
        report.federations_started = sum(f.starts for f in feds)
        report.recycled = [why for f in feds for why in f.recycled]
        report.leftovers = [left for f in feds for left in f.leftovers]
        report.probed = sum(f.probed for f in feds)
        report.seconds = time.monotonic() - t0
    report.results.sort(key=lambda r: (OPERATIONS.index(r.case.operation), r.case.point, r.case.sp, r.case.action))
    return report


__all__ = [
    "ACTIONS",
    "PREFIX",
    "SWEEP_YAML",
    "Case",
    "CaseResult",
    "SweepFederation",
    "SweepReport",
    "default_cases",
    "race_cases",
    "run_sweep",
    "slow_leaves",
    "tuned",
    "write_report",
]

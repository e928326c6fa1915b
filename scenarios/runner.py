"""``fedbroker scenario run FILE``: start every SP as its own process, run the steps, report.

Exit status 0 exactly when every expectation held. Every process started is stopped at the end,
whatever happened. After a failed step only steps marked ``always: true`` run (clean-up), so one
failure does not cascade into a wall of noise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import signal
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from rich.console import Console

from broker.api import codec
from broker.api.codec import leaf_sps
from broker.core.faults import CRASH_EXIT_STATUS
from broker.descriptors import ConfigError
from domain_agents import probe
from domain_agents.netns import LocalSegment, slice_view
from fedbroker.v1 import northsouth_pb2 as pb
from scenarios.alerts import AlertLog, AlertStepFailed, condition, set_link, slice_id_at
from scenarios.convergence import SETTLED, Outcome, wait_settled
from scenarios.model import Scenario, Step, load_scenario
from scenarios.openstack_install import ServicesError, default_run_dir
from scenarios.openstack_services import LoopbackCloud, read_info
from scenarios.orders import OrdersFailed, run_orders
from scenarios.postgres import PostgresServer, find_bindir
from scenarios.processes import Exit, Fleet, StartError
from scenarios.report import SliceResult, SpResult, StepResult, render_report, report_json
from slicing.errors import FedError
from wim import netlink

CALL_TIMEOUT_S = 60.0

console = Console(stderr=True, highlight=False)


class StepFailed(Exception):
    """An expectation did not hold; the message says expected vs. got."""


def _state(value: int) -> str:
    return pb.SliceState.Name(value).removeprefix("SLICE_STATE_")  # type: ignore[arg-type]


def _labels(segments: Iterable[pb.Segment]) -> dict[str, int]:
    out: dict[str, int] = {}
    for seg in segments:
        out.update({pl.port: pl.label for pl in seg.labels})
        out.update(_labels(seg.children))
    return out


@dataclass
class Run:
    """The state of one scenario run."""

    scenario: Scenario
    fleet: Fleet
    slices: dict[str, tuple[str, str]] = field(default_factory=dict)  # alias -> (sp, slice id)
    requests: dict[str, tuple[str, str]] = field(default_factory=dict)  # alias -> (sp, request id), even if refused
    # What each SP's faults file holds now: its rules and its partitions (the lower-SPs it cannot reach).
    faults: dict[str, tuple[list[Mapping[str, Any]], list[str]]] = field(default_factory=dict)
    last: dict[str, pb.Slice] = field(default_factory=dict)  # alias -> last answer
    touched: list[str] = field(default_factory=list)  # SPs whose logs matter for the current step
    offer_edited_at: float | None = None  # monotonic time of the last set_offer, for propagation times
    # A fresh data-plane prefix per run, so two runs (or a run and a test) never share a name.
    prefix: str = field(default_factory=lambda: f"fb{secrets.token_hex(2)}")
    alerts: AlertLog | None = None
    rest: bool = False  # every SP serves its REST API on a free port (``scenario run`` does, for a person to open)
    postgres: PostgresServer | None = None  # the run's own PostgreSQL, for SPs whose store names no dsn
    dsns: dict[str, str] = field(default_factory=dict)  # SP -> its database on ``postgres``

    async def start(self) -> None:
        """Start the SPs bottom-up; the SPs of one wave start concurrently."""
        for sp in self.scenario.fault_sps:
            self.faults[sp] = (list(self.scenario.sp(sp).faults), [])
        for wave in self.scenario.start_order():
            await asyncio.gather(
                *(
                    self.fleet.start(
                        sp,
                        self._settings(sp),
                        self.scenario.sp(sp).lower,
                        faults=self.faults[sp][0] if sp in self.faults else None,
                    )
                    for sp in wave
                )
            )
            for sp in wave:  # an SP's replicas: the same identity and database, each its own process and port
                for n in range(2, self.scenario.sp(sp).replicas + 1):
                    await self.fleet.start_replica(sp, n)
            names = [name for sp in wave for name in self.scenario.sp(sp).processes]
            console.print(f"  started {', '.join(f'{name} ({self.fleet[name].address})' for name in names)}")
            for name in names:
                if self.fleet[name].rest_address:
                    console.print(f"    {name}: REST API https://{self.fleet[name].rest_address}/openapi.json")
        if any(st.action == "expect_alert" for st in self.scenario.steps):
            self.alerts = AlertLog(self.fleet)
            self.alerts.start(s.id for s in self.scenario.sps)

    def _settings(self, sp: str) -> dict[str, object]:
        settings = dict(self.scenario.sp(sp).settings)
        store = settings.get("store")
        if isinstance(store, Mapping) and store.get("backend") == "postgresql" and not store.get("dsn"):
            if self.postgres is None:
                raise StartError(f"{sp}: store.backend postgresql without a dsn needs the run's PostgreSQL")
            if sp not in self.dsns:
                self.dsns[sp] = self.postgres.new_database()
            settings["store"] = {**store, "dsn": self.dsns[sp]}
        if self.rest:  # a free port (an SP's own rest_listen in the scenario is kept, "" for none)
            settings.setdefault("rest_listen", "127.0.0.1:0")
        if self.scenario.uses_dataplane:
            settings["dataplane"] = {"prefix": self.prefix}
        return settings

    # --- actions ------------------------------------------------------------------------------

    async def step(self, step: Step) -> str:
        """Run one step; return a detail line, or raise ``StepFailed``."""
        a = step.args
        self.touched = [a["sp"]] if "sp" in a else []
        if "sp" in a and a["sp"] not in self.fleet.brokers:
            raise StepFailed(f"{a['sp']} is not running (it never started)")
        if step.action == "wait_catalog":
            timeout = float(a.get("timeout_s", 30))
            present, absent = list(a.get("terminals", [])), list(a.get("absent", []))
            try:
                await self.fleet.wait_terminals(a["sp"], present, timeout_s=timeout, absent=absent)
            except TimeoutError as exc:
                raise StepFailed(str(exc)) from None
            since = ""
            if self.offer_edited_at is not None:
                since = f"; {(time.monotonic() - self.offer_edited_at) * 1000:.1f} ms after the offer edit"
                self.offer_edited_at = None
            return f"{a['sp']} publishes {len(present)} expected terminals and none of {len(absent)} absent{since}"
        if step.action == "set_offer":
            offer = step.offer
            assert offer is not None  # parsed and checked with the scenario
            domain = str(a.get("domain", a["sp"]))
            self.offer_edited_at = time.monotonic()
            try:
                reply = await self.fleet[a["sp"]].caps.SetOffer(
                    pb.SetOfferRequest(domain=domain, offer=codec.offer_to_pb(offer)), timeout=10
                )
            except grpc.aio.AioRpcError as exc:
                raise StepFailed(f"SetOffer at {a['sp']}: {exc.code().name}: {exc.details()}") from None
            state = "withdrawn" if offer.withdrawn else "edited"
            return f"offer of {domain} at {a['sp']} {state}: note version {reply.note.version} published"
        if step.action == "expect_idle":
            sps = list(self.fleet.brokers) if a.get("sps", "all") == "all" else list(a["sps"])
            self.touched = sps
            held = await self.fleet.holdings(sps)
            if held:
                raise StepFailed("expected nothing held, but " + " | ".join(f"{sp}: {h}" for sp, h in held.items()))
            return f"{len(sps)} SPs hold nothing"
        if step.action == "sleep":
            await asyncio.sleep(float(a["seconds"]))
            return f"slept {a['seconds']} s"
        if step.action == "kill":
            self.fleet.signal(a["sp"], signal.SIGKILL)
            return f"{a['sp']} killed (SIGKILL)"
        if step.action == "stop":
            self.fleet.signal(a["sp"], signal.SIGSTOP)
            return f"{a['sp']} frozen (SIGSTOP)"
        if step.action in ("cont", "resume"):
            self.fleet.signal(a["sp"], signal.SIGCONT)
            return f"{a['sp']} resumed (SIGCONT)"
        if step.action in ("faults", "partition", "heal"):
            return self._set_faults(step)
        if step.action == "wait_crash":
            return await self._wait_crash(a["sp"], float(a.get("timeout_s", 10)))
        if step.action == "expect_everywhere":
            return await self._expect_everywhere(a)
        if step.action == "expect_openstack":
            return await self._expect_openstack(a)
        if step.action == "restart":
            await self.fleet.restart(a["sp"])
            return f"{a['sp']} restarted on {self.fleet[a['sp']].address}"
        if step.action == "probe":
            return await self._probe(step)
        if step.action in ("degrade", "cut", "restore", "expect_alert"):
            try:
                return await self._monitoring_step(step)
            except AlertStepFailed as exc:
                raise StepFailed(str(exc)) from None
        if step.action == "orders":
            assert step.request is not None  # parsed with the scenario
            self.touched = [*self.scenario.sp(a["sp"]).processes, *(k["sp"] for k in a["kill"])]
            try:
                return await run_orders(self.fleet, self.scenario.lowers, a["sp"], step.request, a, self.prefix)
            except OrdersFailed as exc:
                raise StepFailed(str(exc)) from None
        if step.action == "dataplane_audit":
            left = await netlink.call(netlink.leftovers, self.prefix)
            if left:
                raise StepFailed(f"left under prefix {self.prefix}: " + ", ".join(str(x) for x in left))
            return f"nothing left under prefix {self.prefix}"
        return await self._slice_step(step)

    async def _monitoring_step(self, step: Step) -> str:
        a = step.args
        if step.action == "expect_alert":
            assert self.alerts is not None  # started for any scenario with an expect_alert step
            owner, slice_id = self._slice_of(a["slice"])
            msg: pb.Slice = await self.fleet[owner].slices.Get(pb.SliceRef(slice_id=slice_id), timeout=CALL_TIMEOUT_S)
            at = slice_id_at(msg, owner, a["sp"])
            if not at:
                raise StepFailed(f"slice {a['slice']!r} does not cross {a['sp']}")
            return await self.alerts.expect(a["sp"], at, a)
        if self.alerts is not None:
            self.alerts.mark = time.monotonic()
        if "target" in a:
            return await condition(self.fleet, step.action, a)
        segments: list[LocalSegment] = []
        if "port" in a:
            owner, slice_id = self._slice_of(a["slice"])
            msg = await self.fleet[owner].slices.Get(pb.SliceRef(slice_id=slice_id), timeout=CALL_TIMEOUT_S)
            segments = local_segments(msg.segments)
        return await set_link(self.prefix, step.action, a, segments)

    def _slice_of(self, alias: str) -> tuple[str, str]:
        found = self.slices.get(alias)
        if found is None:
            raise StepFailed(f"slice {alias!r} was never reserved (its request failed)")
        return found

    def _set_faults(self, step: Step) -> str:
        """Rewrite an SP's faults file: new rules and partitions, or partitions added or healed."""
        a = step.args
        sp = str(a["sp"])
        rules, parts = self.faults.get(sp, ([], []))
        if step.action == "faults":
            rules, parts = list(a["rules"]), list(a["partitions"])
        elif step.action == "partition":
            parts = sorted(set(parts) | set(a["from"]))
        else:
            parts = sorted(set(parts) - set(a["from"])) if a["from"] else []
        self.faults[sp] = (rules, parts)
        self.fleet.write_faults(sp, rules, parts)
        armed = ", ".join(f"{r['id']}={r['point']}:{r['action']}" for r in rules) or "no rules"
        return f"{sp}: {armed}; cut off from {', '.join(parts) or 'no lower-SP'}"

    async def _wait_crash(self, sp: str, timeout_s: float) -> str:
        """Wait (bounded) until the SP's broker exits; only an injected crash's status passes."""
        broker = self.fleet[sp]
        try:
            status = await self.fleet.wait_exit(sp, timeout_s)
        except StartError as exc:
            raise StepFailed(f"{exc} (no injected crash fired)") from None
        if status != CRASH_EXIT_STATUS:
            raise StepFailed(f"{sp} exited with status {status}, not the injected crash's {CRASH_EXIT_STATUS}")
        fired = broker.fired()
        return f"{sp} crashed (status {status}); rules fired: {', '.join(fired) or 'none recorded'}"

    async def _expect_everywhere(self, a: Mapping[str, Any]) -> str:
        """Read the slice at every SP: all of them hold it in one state, or none holds anything of it."""
        alias = str(a["slice"])
        sp, request_id = self.requests[alias]
        slice_id = self.slices.get(alias, ("", ""))[1]
        outcome = str(a.get("outcome", "settled"))
        want = SETTLED if outcome == "settled" else frozenset({Outcome(outcome)})
        self.touched = list(self.fleet.brokers)
        result = await wait_settled(
            self.fleet,
            self.scenario.lowers,
            sp,
            slice_id=slice_id,
            request_id=request_id,
            timeout_s=float(a.get("timeout_s", 0)),
            want=want,
            exclusive=bool(a.get("exclusive", False)),
        )
        if not result.reached:
            raise StepFailed(f"expected {outcome} at every SP, got {result.verdict.describe()}")
        self.touched = []
        return f"{result.verdict.describe()} after {result.seconds:.2f} s ({result.polls} reads of every SP)"

    def exits(self) -> tuple[list[Exit], list[Exit]]:
        """Brokers that ended since the last step: (injected crashes and kills, unexpected deaths)."""
        told: list[Exit] = []
        unexpected: list[Exit] = []
        for ex in self.fleet.exits():
            (told if ex.crashed or ex.expected else unexpected).append(ex)
        return told, unexpected

    async def _probe(self, step: Step) -> str:
        """Send traffic through the slices' leaf namespaces and check reachability, order, isolation, shaping."""
        a = step.args
        views = []
        for alias in a["slices"]:
            sp, slice_id = self.slices.get(alias, (a["sp"], ""))
            if not slice_id:
                raise StepFailed(f"slice {alias!r} was never reserved (its request failed)")
            try:
                views.append(await read_view(self.fleet, self.prefix, sp, slice_id, alias))
            except FedError as exc:
                raise StepFailed(str(exc)) from None
        results = await probe.probe(views, a.get("checks", probe.CHECKS))
        for r in results:
            mark = "[green]✓[/]" if r.passed else "[red]✗[/]"
            console.print(f"    {mark} {r.check} {r.slice}: [dim]{r.detail}[/]")
        failed = [r for r in results if not r.passed]
        if failed:
            raise StepFailed("; ".join(f"{r.check} {r.slice}: {r.detail}" for r in failed))
        return "; ".join(f"{r.check} {r.slice} ok" + (f" ({r.value:.1f} Mbit/s)" if r.value else "") for r in results)

    async def _expect_openstack(self, a: Mapping[str, Any]) -> str:
        """Count the SP's networks in Neutron and consumers in Placement, as OpenStack itself reports them."""
        from scenarios.openstack_checks import holdings

        found = await asyncio.to_thread(holdings, self.scenario.sp(a["sp"]).settings.get("domains") or [])
        if not found:
            raise StepFailed(f"{a['sp']} has no OpenStack domain")
        detail = "; ".join(h.describe() for h in found)
        for key, got in (
            ("networks", sum(len(h.networks) for h in found)),
            ("consumers", sum(len(h.consumers) for h in found)),
        ):
            if a.get(key) is not None and got != a[key]:
                raise StepFailed(f"expected {a[key]} {key} in OpenStack, found {got}: {detail}")
        return detail

    async def _slice_step(self, step: Step) -> str:
        a = step.args
        stub = self.fleet[a["sp"]].slices
        alias = str(a.get("as") or a.get("slice"))
        try:
            if step.action == "request":
                assert step.request is not None
                request_id = str(a.get("request_id") or f"{self.scenario.name}-{alias}")
                self.requests[alias] = (a["sp"], request_id)
                msg: pb.Slice = await stub.Reserve(
                    pb.ReserveRequest(
                        request_id=request_id, request=step.request, hold_time_s=int(a.get("hold_time_s", 0))
                    ),
                    timeout=CALL_TIMEOUT_S,
                )
                self.slices[alias] = (a["sp"], msg.id)
            else:
                _, slice_id = self.slices.get(alias, (a["sp"], ""))
                if not slice_id:
                    raise StepFailed(f"slice {alias!r} was never reserved (its request failed)")
                rpc = {
                    "commit": "Commit",
                    "abort": "Abort",
                    "activate": "Activate",
                    "deactivate": "Deactivate",
                    "terminate": "Terminate",
                }
                method = getattr(stub, rpc.get(step.action, "Get"))
                msg = await method(pb.SliceRef(slice_id=slice_id), timeout=CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            return self._check_error(step, exc)
        self.last[alias] = msg
        return self._check_slice(step, alias, msg)

    def _check_error(self, step: Step, exc: grpc.aio.AioRpcError) -> str:
        got = f"{exc.code().name}: {exc.details()}"
        want = step.expect.error
        if want is None:
            raise StepFailed(f"expected success, got {got}")
        if exc.code().name != want:
            raise StepFailed(f"expected {want}, got {got}")
        if step.expect.message_contains and step.expect.message_contains not in (exc.details() or ""):
            raise StepFailed(f"expected a message containing {step.expect.message_contains!r}, got {got}")
        return f"refused as expected — {got}"

    def _check_slice(self, step: Step, alias: str, msg: pb.Slice) -> str:
        e = step.expect
        state = _state(msg.state)
        leaves = leaf_sps(msg.segments)
        if e.error:
            raise StepFailed(f"expected {e.error}, got slice {msg.id} in {state}")
        if e.state and state != e.state:
            reason = f" ({msg.reason})" if msg.reason else ""
            raise StepFailed(f"expected state {e.state}, got {state}{reason}")
        if e.health is not None:
            health = pb.SliceHealth.Name(msg.health).removeprefix("SLICE_HEALTH_")
            if health != e.health:
                raise StepFailed(f"expected health {e.health}, got {health}")
        if e.leaf_sps_min is not None and len(leaves) < e.leaf_sps_min:
            raise StepFailed(f"expected at least {e.leaf_sps_min} leaf SPs, got {leaves}")
        missing = [sp for sp in e.leaf_sps_include if sp not in leaves]
        if missing:
            raise StepFailed(f"expected leaf SPs to include {missing}, got {leaves}")
        crossed = [sp for sp in e.leaf_sps_exclude if sp in leaves]
        if crossed:
            raise StepFailed(f"expected leaf SPs to avoid {crossed}, got {leaves}")
        if e.same_slice_as is not None:
            other = self.slices.get(e.same_slice_as, ("", ""))[1]
            if msg.id != other:
                raise StepFailed(f"expected the slice of {e.same_slice_as!r} ({other}), got {msg.id}")
        if e.labels_agree:
            self._check_labels(msg)
        return f"{msg.id} {state} via {' → '.join(leaves) or '-'}"

    def _check_labels(self, msg: pb.Slice) -> None:
        labels = _labels(msg.segments)
        checked = 0
        for port, label in labels.items():
            peer = self.scenario.ports.get(port)
            if peer is None or peer not in labels:
                continue
            checked += 1
            if labels[peer] != label and not ({port, peer} & self.scenario.swapping):
                raise StepFailed(f"labels disagree on link {port}={label} ~ {peer}={labels[peer]}")
        if checked == 0:
            raise StepFailed("labels_agree: the slice crosses no inter-domain link whose labels could be compared")

    async def final_slices(self) -> list[SliceResult]:
        """Every slice the scenario created, as its owner SP reports it now."""
        out = []
        seen: set[str] = set()
        for alias, (sp, slice_id) in self.slices.items():
            if slice_id in seen:  # a repeated request id names the same slice twice
                continue
            seen.add(slice_id)
            msg = self.last.get(alias)
            broker = self.fleet.brokers.get(sp)
            if broker is not None and broker.running():
                try:
                    msg = await broker.slices.Get(pb.SliceRef(slice_id=slice_id), timeout=10)
                except grpc.aio.AioRpcError as exc:
                    console.print(f"  [yellow]could not read back {alias} from {sp}: {exc.code().name}[/]")
            if msg is not None:
                out.append(SliceResult(alias, msg.id, _state(msg.state), leaf_sps(msg.segments), sp))
        return out


async def _openstack_services(scenario: Scenario, workdir: Path) -> LoopbackCloud | None:
    """Point OpenStack leaves at services: ``$OS_CLIENT_CONFIG_FILE``, else ``fedbroker openstack up``'s,
    else start them here (returned, to be stopped after the run)."""
    from scenarios.openstack_checks import needs_openstack

    if not needs_openstack([sp.settings for sp in scenario.sps]) or os.environ.get("OS_CLIENT_CONFIG_FILE"):
        return None
    info = read_info(default_run_dir())
    services = None
    if info is None:
        console.print("  starting Keystone, Placement and Neutron on loopback (a first run installs them from PyPI)")
        services = LoopbackCloud(workdir / "openstack", say=lambda text: console.print(f"  {text}"))
        info = await asyncio.to_thread(services.start)
    os.environ["OS_CLIENT_CONFIG_FILE"] = info.clouds_file  # the brokers inherit it
    return services


def _postgres(scenario: Scenario) -> PostgresServer | None:
    """A throw-away PostgreSQL for SPs whose store is ``postgresql`` with no dsn (None when none is)."""
    if not scenario.uses_postgresql:
        return None
    bindir = find_bindir()
    if bindir is None:
        raise ServicesError(
            "an SP keeps its store in PostgreSQL and the run starts one, but initdb and pg_ctl are not installed "
            "(Debian: apt-get install postgresql); or give the SP's store a dsn"
        )
    server = PostgresServer(bindir)
    try:
        server.start()
    except RuntimeError as exc:
        server.stop()
        raise ServicesError(f"could not start PostgreSQL for the run: {exc}") from None
    return server


async def run_scenario(
    scenario: Scenario, workdir: Path, *, rest: bool = False
) -> tuple[list[StepResult], list[SliceResult], Fleet]:
    """Run a scenario in ``workdir``; return step results and slices. Every process is stopped.

    ``rest``: every SP also serves its REST API (the addresses are in ``fleet``'s brokers after).
    """
    fleet = Fleet(workdir)
    run = Run(scenario, fleet, rest=rest)
    results: list[StepResult] = []
    slices: list[SliceResult] = []
    failed = False
    services: LoopbackCloud | None = None
    try:
        t0 = time.monotonic()
        try:
            services = await _openstack_services(scenario, workdir)
            run.postgres = await asyncio.to_thread(_postgres, scenario)
            if run.postgres is not None:
                console.print(f"  PostgreSQL on 127.0.0.1:{run.postgres.port} (a throw-away server for this run)")
            await run.start()
            results.append(StepResult("start the federation", True, time.monotonic() - t0, f"{len(scenario.sps)} SPs"))
            console.print(f"[green]✓[/] start the federation ({time.monotonic() - t0:.2f} s)")
        except (StartError, ServicesError, OSError, grpc.aio.AioRpcError) as exc:
            results.append(StepResult("start the federation", False, time.monotonic() - t0, str(exc)))
            console.print(f"[red]✗ start the federation[/]\n{exc}")
            failed = True
        for step in scenario.steps:
            if failed and not step.always:
                results.append(StepResult(step.name, False, 0.0, "skipped after an earlier failure"))
                console.print(f"[dim]- {step.name} (skipped)[/]")
                continue
            t0 = time.monotonic()
            try:
                detail = await run.step(step)
                ok = True
            except (StepFailed, StartError, TimeoutError) as exc:
                detail, ok = str(exc), False
            except grpc.aio.AioRpcError as exc:
                detail, ok = f"{exc.code().name}: {exc.details()}", False
            told, unexpected = run.exits()
            if told:
                detail += " (" + "; ".join(ex.describe() for ex in told) + ")"
            if unexpected:
                detail, ok = f"{detail}; " + "; ".join(ex.describe() for ex in unexpected), False
                run.touched = sorted({*run.touched, *(ex.sp_id for ex in unexpected)})
            took = time.monotonic() - t0
            results.append(StepResult(step.name, ok, took, detail))
            if ok:
                console.print(f"[green]✓[/] {step.name} ({took:.2f} s) [dim]{detail}[/]")
            else:
                failed = True
                console.print(f"[red]✗ {step.name}[/] ({took:.2f} s)\n  {detail}")
                for sp in run.touched:
                    if sp in fleet.brokers:
                        console.print(f"  [dim]--- last lines of {sp}'s log ---\n{fleet[sp].log_tail(15)}[/]")
        thawed = fleet.thaw_all()  # a frozen broker would make every read-back wait for its timeout
        if thawed:
            console.print(f"  [dim]resumed (SIGCONT) {', '.join(thawed)} before reading back and stopping[/]")
        slices = await run.final_slices()
    finally:
        fleet.thaw_all()
        if run.alerts is not None:
            await run.alerts.close()
        await fleet.stop_all()
        if scenario.uses_dataplane:
            results.append(await _sweep(run.prefix))
            netlink.shutdown_worker()
        if services is not None:
            await asyncio.to_thread(services.stop)
        if run.postgres is not None:
            await asyncio.to_thread(run.postgres.stop)
    return results, slices, fleet


async def _sweep(prefix: str) -> StepResult:
    """After every broker stopped: remove whatever the data plane left; the run fails if there was anything."""
    t0 = time.monotonic()
    removed = await netlink.call(netlink.clean, prefix)
    took = time.monotonic() - t0
    if removed:
        detail = f"{len(removed)} objects were left under prefix {prefix} and removed: " + ", ".join(map(str, removed))
        console.print(f"[red]✗ the data plane left nothing behind[/]\n  {detail}")
        return StepResult("the data plane left nothing behind", False, took, detail)
    console.print(f"[green]✓[/] the data plane left nothing behind [dim]prefix {prefix}[/]")
    return StepResult("the data plane left nothing behind", True, took, f"nothing under prefix {prefix}")


async def read_view(fleet: Fleet, prefix: str, sp: str, slice_id: str, alias: str) -> probe.SliceView:
    """Where a slice's traffic goes on the data plane under ``prefix``, from its read-back at ``sp``.

    Raises ``FedError`` naming what is missing (a segment without its namespaces, an endpoint
    without an address).
    """
    msg: pb.Slice = await fleet[sp].slices.Get(pb.SliceRef(slice_id=slice_id), timeout=CALL_TIMEOUT_S)
    addresses = {x.endpoint: x.address for x in msg.addresses}
    segments = local_segments(msg.segments)
    return slice_view(netlink.Names(prefix), alias, segments, addresses, msg.request.bandwidth_mbps)


def local_segments(segments: Iterable[pb.Segment]) -> list[LocalSegment]:
    """The leaf domains' segments of a slice, in path order, from a read-back's nested segments."""
    out: list[LocalSegment] = []
    for seg in segments:
        if seg.local:
            out.append(LocalSegment(seg.domain, seg.child_ref, seg.ingress, seg.egress, tuple(seg.functions)))
        else:
            out.extend(local_segments(seg.children))
    return out


def main(argv: list[str]) -> int:
    """``run FILE [--report-json OUT] [--keep]``."""
    parser = argparse.ArgumentParser(prog="fedbroker scenario", description="run a federation scenario")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("run", help="run a scenario file")
    p.add_argument("file", type=Path)
    p.add_argument("--report-json", type=Path, help="write the JSON report here")
    p.add_argument("--keep", action="store_true", help="keep the work folder (configs, data, logs)")
    ns = parser.parse_args(argv)
    try:
        scenario = load_scenario(ns.file)
    except ConfigError as exc:
        console.print(f"[red]error:[/] {exc}")
        return 2
    workdir = Path(tempfile.mkdtemp(prefix=f"fedbroker-{scenario.name}-"))
    console.print(f"[bold]scenario {scenario.name}[/]: {scenario.description.strip()}")
    console.print(f"  work folder {workdir}")
    console.print("  security: mutual TLS, one EdDSA token per call, a lab CA and account books in the work folder")
    try:
        results, slices, fleet = asyncio.run(run_scenario(scenario, workdir, rest=True))
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted; every broker was stopped; work folder kept: {workdir}[/]")
        return 130
    passed = bool(results) and all(r.passed for r in results)
    sps = [SpResult(b.name, b.address, b.rest_address) for b in fleet.brokers.values()]
    render_report(scenario.name, passed, results, slices, console, sps)
    if ns.report_json:
        report = report_json(scenario.name, passed, results, slices, sps)
        ns.report_json.write_text(json.dumps(report, indent=2) + "\n")
        console.print(f"  report written to {ns.report_json}")
    if passed and not ns.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        console.print(f"  work folder kept: {workdir} (broker configs, data and logs per SP)")
    return 0 if passed else 1

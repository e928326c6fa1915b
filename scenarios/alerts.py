"""Scenario steps of issue 14: ``degrade``/``cut``/``restore`` infrastructure, ``expect_alert`` at an SP.

The runner reads every SP's Watch (as its operator) from the start of the run, so an ``expect_alert``
sees alerts that arrived before the step began; it counts only those after the last fault step.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc

from domain_agents.netns import LocalSegment
from fedbroker.v1 import northsouth_pb2 as pb
from fedbroker.v1 import northsouth_pb2_grpc as pb_grpc
from scenarios.processes import Fleet
from wim import netlink

CALL_TIMEOUT_S = 10.0


class AlertStepFailed(Exception):
    """An alert step did not hold."""


@dataclass
class AlertLog:
    """Every alert each SP put on its Watch during the run, with the (monotonic) time it arrived."""

    fleet: Fleet
    events: dict[str, list[tuple[float, pb.SliceEvent]]] = field(default_factory=dict)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    #: When the last degrade/cut/restore step acted.
    mark: float = 0.0
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def start(self, sps: Iterable[str]) -> None:
        """Follow each SP's Watch (reconnecting after a kill or restart) until ``close``."""
        for sp in sps:
            self.events.setdefault(sp, [])
            self._tasks.append(asyncio.get_running_loop().create_task(self._follow(sp)))

    async def _follow(self, sp: str) -> None:
        while True:
            broker = self.fleet.brokers.get(sp)
            channel = broker.operator_channel if broker is not None else None
            if channel is None:  # not (yet, or no longer) running
                await asyncio.sleep(0.2)
                continue
            try:
                async for ev in pb_grpc.SlicesStub(channel).Watch(pb.WatchRequest()):
                    if ev.HasField("alert"):
                        self.events[sp].append((time.monotonic(), ev))
                        arrived, self._arrived = self._arrived, asyncio.Event()
                        arrived.set()
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.2)

    async def close(self) -> None:
        """Stop following."""
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t

    async def expect(self, sp: str, slice_id: str, a: Mapping[str, Any]) -> str:
        """Wait (bounded by ``within_s`` from the last fault step) for a matching alert at ``sp``."""
        status = pb.ALERT_STATUS_FIRING if a.get("status", "firing") == "firing" else pb.ALERT_STATUS_RESOLVED
        within = float(a.get("within_s", 3))
        deadline = self.mark + within

        def matching() -> list[tuple[float, pb.SliceEvent]]:
            return [
                (t, e)
                for t, e in self.events.get(sp, [])
                if t >= self.mark
                and e.slice_id == slice_id
                and e.alert.status == status
                and ("cause" not in a or e.alert.cause == a["cause"])
            ]

        while not matching() and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), max(0.0, deadline - time.monotonic()))
        found = matching()
        if not found:
            seen = [f"{e.alert.cause} {e.alert.status} from {e.alert.source_sp}" for _, e in self.events.get(sp, [])]
            raise AlertStepFailed(f"no {a.get('status', 'firing')} alert at {sp} within {within:g} s (seen: {seen})")
        t, ev = found[0]
        if "source_sp" in a and ev.alert.source_sp != a["source_sp"]:
            raise AlertStepFailed(f"the alert at {sp} names {ev.alert.source_sp} as its source, not {a['source_sp']}")
        if a.get("count") is not None:
            await asyncio.sleep(0.3)  # duplicates would be on their way
            if len(matching()) != a["count"]:
                raise AlertStepFailed(f"{len(matching())} {a.get('status', 'firing')} alerts at {sp}, not {a['count']}")
        x = ev.alert
        return (
            f"{x.cause} {a.get('status', 'firing')} at {sp} after {(t - self.mark) * 1000:.0f} ms: {x.metric} "
            f"{x.value:g} {x.comparison} {x.threshold:g} ({x.severity}) from {x.source_sp}"
        )


def slice_id_at(msg: pb.Slice, owner: str, sp: str) -> str:
    """The id ``sp`` knows the slice by, walking a read-back from its owner down (``""`` when it is not on the path)."""
    if sp == owner:
        return msg.id

    def walk(segments: Iterable[pb.Segment]) -> str:
        for seg in segments:
            if not seg.local and seg.sp_id == sp:
                return seg.child_ref
            found = walk(seg.children)
            if found:
                return found
        return ""

    return walk(msg.segments)


async def condition(fleet: Fleet, action: str, a: Mapping[str, Any]) -> str:
    """``degrade``/``cut``/``restore`` of an emulated (or netns) domain's link or pop, through the SP's operator."""
    domain = str(a.get("domain", a["sp"]))
    req = pb.ConditionRequest(domain=domain, target=str(a["target"]))
    if action == "degrade":
        req.added_latency_ms = float(a.get("latency_ms", 0))
        req.loss = float(a.get("loss", 0))
    elif action == "cut":
        req.down = True
    else:
        req.restore = True
    stub = pb_grpc.MonitoringStub(fleet[a["sp"]].operator_channel)
    reply = await stub.SetCondition(req, timeout=CALL_TIMEOUT_S)
    return f"{action} {domain}:{a['target']} at {a['sp']} ({reply.segments} active segment(s))"


async def set_link(prefix: str, action: str, a: Mapping[str, Any], segments: list[LocalSegment]) -> str:
    """``cut``/``restore`` on a real data plane: a slice's border veth at ``port``, or the WIM underlay there."""
    names = netlink.Names(prefix)
    up = action == "restore"
    if "underlay" in a:
        port = str(a["underlay"])
        ns, ifname = names.port_ns(port), names.ifname("underlay", port)
    else:
        port = str(a["port"])
        seg = next((s for s in segments if port in (s.src, s.dst)), None)
        if seg is None:
            raise AlertStepFailed(f"the slice has no leaf segment at port {port}")
        ns, ifname = names.port_ns(port), names.ifname("port-b", seg.domain, seg.key, port)
    try:
        await netlink.call(netlink.set_up, ns, ifname, up)
    except (OSError, RuntimeError) as exc:
        raise AlertStepFailed(f"cannot set {ifname} in {ns} {'up' if up else 'down'}: {exc}") from None
    what = "underlay" if "underlay" in a else "border veth"
    return f"{what} at {port} ({ns} {ifname}) {'up' if up else 'down'}"


__all__ = ["AlertLog", "AlertStepFailed", "condition", "set_link", "slice_id_at"]

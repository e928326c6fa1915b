"""``fedbroker watch``, ``fedbroker slice alerts`` and ``fedbroker monitoring …``: the customer's and operator's
view of federated SLA monitoring (issue 14).

``watch --json`` prints one JSON object per line per event (the contract in DESIGN.md)::

    {"kind": "state", "slice_id": "T-…", "state": "ACTIVE", "at": "…", "detail": ""}
    {"kind": "alert", "slice_id": "T-…", "state": "ACTIVE", "at": "…", "cause": "latency",
     "metric": "latency_ms", "value": 502.0, "threshold": 100.0, "comparison": ">",
     "severity": "critical", "status": "firing", "source_sp": "M1", "detail": "…"}
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from typing import Any

import grpc
from rich.table import Table

from broker.cli.client import add_client_args, emit, state_name, with_channel
from broker.cli.output import out, table_time, timestamp_text
from fedbroker.v1 import northsouth_pb2 as pb
from fedbroker.v1 import northsouth_pb2_grpc as pb_grpc


def status_name(value: int) -> str:
    """``firing`` or ``resolved``."""
    return pb.AlertStatus.Name(value).removeprefix("ALERT_STATUS_").lower()  # type: ignore[arg-type]


def health_name(value: int) -> str:
    """``HEALTHY`` or ``DEGRADED`` (``-`` when the broker did not say)."""
    name = pb.SliceHealth.Name(value).removeprefix("SLICE_HEALTH_")  # type: ignore[arg-type]
    return "-" if name == "UNSPECIFIED" else name


def event_json(ev: pb.SliceEvent) -> dict[str, Any]:
    """One Watch event as the ``watch --json`` line."""
    line: dict[str, Any] = {
        "kind": "alert" if ev.HasField("alert") else "state",
        "slice_id": ev.slice_id,
        "state": state_name(ev.state),
        "at": timestamp_text(ev.at),
        "detail": ev.detail,
    }
    if ev.HasField("alert"):
        a = ev.alert
        line.update(
            cause=a.cause,
            metric=a.metric,
            value=a.value,
            threshold=a.threshold,
            comparison=a.comparison,
            severity=a.severity,
            status=status_name(a.status),
            source_sp=a.source_sp,
        )
    return line


def alert_text(a: pb.Alert) -> str:
    """One alert on one line."""
    return (
        f"{status_name(a.status).upper()} {a.severity} {a.cause}: {a.metric} {a.value:g} {a.comparison} "
        f"{a.threshold:g} from {a.source_sp}"
    )


async def _watch(ns: argparse.Namespace) -> int:
    async def run(channel: grpc.aio.Channel) -> int:
        stub = pb_grpc.SlicesStub(channel)
        seen = 0
        stream = stub.Watch(pb.WatchRequest(slice_id=ns.slice or "", initial=ns.initial))
        async with asyncio.timeout(ns.timeout or None):
            async for ev in stream:
                if ns.json:
                    print(json.dumps(event_json(ev), ensure_ascii=False), flush=True)
                elif ev.HasField("alert"):
                    out.print(f"{table_time(ev.at)}  {ev.slice_id}  [bold]{alert_text(ev.alert)}[/]", highlight=False)
                else:
                    out.print(f"{table_time(ev.at)}  {ev.slice_id}  {state_name(ev.state)}  {ev.detail}")
                seen += 1
                if ns.count and seen >= ns.count:
                    stream.cancel()
                    break
        return 0

    with contextlib.suppress(TimeoutError):
        return await with_channel(ns, run)
    return 0


async def _alerts(ns: argparse.Namespace) -> int:
    async def run(channel: grpc.aio.Channel) -> pb.ListAlertsResponse:
        reply: pb.ListAlertsResponse = await pb_grpc.MonitoringStub(channel).ListAlerts(
            pb.SliceRef(slice_id=ns.slice_id)
        )
        return reply

    msg = await with_channel(ns, run)

    def printer(m: pb.ListAlertsResponse) -> None:
        table = Table(title=f"alerts of slice {ns.slice_id}", title_justify="left")
        for col in ("status", "severity", "cause", "metric", "value", "threshold", "source SP", "at"):
            table.add_column(col)
        for a in [*m.open, *m.recent]:
            table.add_row(
                status_name(a.status),
                a.severity,
                a.cause,
                a.metric,
                f"{a.value:g}",
                f"{a.comparison} {a.threshold:g}",
                a.source_sp,
                table_time(a.at),
            )
        out.print(table)
        for r in m.rules:
            out.print(f"rule {r.name}: {r.metric} {r.comparison} {r.threshold:g} for {r.for_s:g} s ({r.severity})")

    emit(msg, ns.json, printer)
    return 0


async def _rule(ns: argparse.Namespace) -> int:
    rule = pb.AlertRule(
        name=ns.name, metric=ns.metric, comparison=ns.comparison, threshold=ns.threshold, for_s=ns.for_s
    )

    async def run(channel: grpc.aio.Channel) -> pb.AlertRule:
        reply: pb.AlertRule = await pb_grpc.MonitoringStub(channel).AddRule(
            pb.AddRuleRequest(slice_id=ns.slice_id, rule=rule)
        )
        return reply

    emit(await with_channel(ns, run), ns.json, lambda r: out.print(f"rule {r.name} added"))
    return 0


async def _mode(ns: argparse.Namespace) -> int:
    async def run(channel: grpc.aio.Channel) -> pb.MonitoringModeResponse:
        reply: pb.MonitoringModeResponse = await pb_grpc.MonitoringStub(channel).SetMode(
            pb.MonitoringModeRequest(mode=ns.mode, delta=ns.delta)
        )
        return reply

    emit(await with_channel(ns, run), ns.json, lambda r: out.print(f"monitoring {r.mode} (delta {r.delta:g})"))
    return 0


async def _condition(ns: argparse.Namespace) -> int:
    req = pb.ConditionRequest(
        domain=ns.domain,
        target=ns.target,
        added_latency_ms=ns.latency,
        loss=ns.loss,
        down=ns.down,
        restore=ns.restore,
    )

    async def run(channel: grpc.aio.Channel) -> pb.ConditionResponse:
        reply: pb.ConditionResponse = await pb_grpc.MonitoringStub(channel).SetCondition(req)
        return reply

    emit(await with_channel(ns, run), ns.json, lambda r: out.print(f"{r.segments} active segment(s) touched"))
    return 0


def add_slice_commands(ssub: Any) -> None:
    """``slice alerts ID`` and ``slice rule ID …`` (called from the ``slice`` group)."""
    al = add_client_args(ssub.add_parser("alerts", help="a slice's open and recent SLA alerts, and its rules"))
    al.add_argument("slice_id", metavar="SLICE_ID", help="the slice's id, as `slice list` prints it")
    al.set_defaults(handler=_alerts)
    ru = add_client_args(ssub.add_parser("rule", help="add a rule to an active slice (metric comparison threshold)"))
    ru.add_argument("slice_id", metavar="SLICE_ID", help="the slice's id, as `slice list` prints it")
    ru.add_argument("name", metavar="NAME", help="the rule's name (letters, digits, -, _, .)")
    ru.add_argument("metric", choices=["latency_ms", "loss", "link_up", "bandwidth_mbps"], help="what is compared")
    ru.add_argument("comparison", choices=[">", ">=", "<", "<="], help="fires when METRIC compares so")
    ru.add_argument("threshold", metavar="THRESHOLD", type=float, help="a finite number from 0")
    ru.add_argument("--for", dest="for_s", type=float, default=0.0, help="seconds the condition must hold")
    ru.set_defaults(handler=_rule)


def register(sub: Any) -> None:
    """Add ``watch`` and ``monitoring`` to the command's sub-parsers."""
    w = add_client_args(sub.add_parser("watch", help="stream a broker's slice state changes and SLA alerts"))
    w.add_argument("--slice", default="", help="only this slice")
    w.add_argument("--initial", action="store_true", help="first the current state of the slices")
    w.add_argument("--count", type=int, default=0, help="stop after this many events (0: never)")
    w.add_argument("--timeout", type=float, default=0.0, help="stop after this many seconds (0: never)")
    w.set_defaults(handler=_watch)
    m = sub.add_parser("monitoring", help="an SP's monitoring: mode (normal/skeleton), lab conditions")
    msub = m.add_subparsers(dest="monitoring_cmd", required=True)
    mo = add_client_args(msub.add_parser("mode", help="switch monitoring at run time (operator)"))
    mo.add_argument("mode", choices=["normal", "skeleton"], help="skeleton: link state only, values past a delta")
    mo.add_argument("--delta", type=float, default=0.0, help="skeleton: count a value only when it moved by more")
    mo.set_defaults(handler=_mode)
    co = add_client_args(msub.add_parser("condition", help="degrade, cut or restore an emulated link or pop"))
    co.add_argument("domain", metavar="DOMAIN", help="an emulated or netns domain of the broker")
    co.add_argument("target", metavar="TARGET", help="a link 'pop-a/pop-b' or a pop")
    co.add_argument("--latency", type=float, default=0.0, help="extra latency, ms")
    co.add_argument("--loss", type=float, default=0.0, help="loss, 0..1")
    co.add_argument("--down", action="store_true")
    co.add_argument("--restore", action="store_true")
    co.set_defaults(handler=_condition)


__all__ = ["add_slice_commands", "event_json", "health_name", "register"]

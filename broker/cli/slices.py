"""``fedbroker slice …`` and ``fedbroker usage``: order, inspect and release slices at a broker."""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.tree import Tree

from broker.api import codec
from broker.cli.client import STATE_NAMES, add_client_args, emit, state_name, with_stub
from broker.cli.monitor import add_slice_commands, alert_text, health_name
from broker.cli.output import err, out, table_time
from broker.descriptors import load_yaml
from fedbroker.v1 import northsouth_pb2 as pb
from fedbroker.v1 import northsouth_pb2_grpc as pb_grpc


def _print_slice(msg: pb.Slice) -> None:
    table = Table(title=f"slice {msg.id}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("state", state_name(msg.state))
    table.add_row("health", health_name(msg.health))
    for a in msg.alerts:
        table.add_row("alert", alert_text(a))
    table.add_row("owner SP", msg.sp_id)
    table.add_row("request id", msg.request_id)
    table.add_row("path", f"{msg.request.src} → {msg.request.dst}")
    table.add_row("bandwidth", f"{msg.request.bandwidth_mbps} Mb/s")
    if msg.request.HasField("latency_budget_ms"):
        table.add_row("latency budget", f"{msg.request.latency_budget_ms:g} ms")
    if msg.request.chain:
        table.add_row("chain", " → ".join(msg.request.chain))
    table.add_row("leaf SPs", ", ".join(codec.leaf_sps(msg.segments)) or "-")
    if msg.addresses:
        table.add_row("addresses", ", ".join(f"{a.endpoint}={a.address}" for a in msg.addresses))
    if msg.reason:
        table.add_row("reason", msg.reason)
    out.print(table)
    tree = Tree(f"[bold]{msg.sp_id}[/]")

    def add(node: Tree, segs: Sequence[pb.Segment]) -> None:
        for s in segs:
            labels = " ".join(f"{pl.port}={pl.label}" for pl in s.labels)
            fns = f" fn={','.join(s.functions)}" if s.functions else ""
            kind = "domain" if s.local else "SP"
            branch = node.add(
                f"{kind} [bold]{s.domain}[/] {state_name(s.state)}  {s.ingress} → {s.egress}  {s.subnet}{fns}  {labels}"
            )
            add(branch, s.children)

    add(tree, msg.segments)
    out.print(tree)


def _read_request(path: str) -> pb.SliceRequest:
    # Imported here: pydantic costs ~80 ms at import, which `serve` and the other commands need not pay.
    from broker.api.request_file import slice_request_from_data

    return slice_request_from_data(load_yaml(Path(path)), path=path)


async def _slice_request(ns: argparse.Namespace) -> int:
    req = _read_request(ns.file)
    request_id = ns.request_id or f"cli-{uuid.uuid4().hex[:12]}"

    async def run(stub: pb_grpc.SlicesStub) -> pb.Slice:
        # One call: the broker reserves, commits and activates (the two phases stay in the federation).
        then = pb.RESERVE_THEN_HOLD if ns.hold_only else pb.RESERVE_THEN_COMMIT_AND_ACTIVATE
        if not ns.json:
            what = "reserving" if ns.hold_only else "ordering (reserve, commit, activate)"
            err.print(f"{what} at {ns.broker} (request id {request_id}) …")
        msg: pb.Slice = await stub.Reserve(
            pb.ReserveRequest(request_id=request_id, request=req, hold_time_s=ns.hold_time, then=then)
        )
        return msg

    msg = await with_stub(ns, run)
    emit(msg, ns.json, _print_slice)
    return 0


def _print_plan(msg: pb.Slice) -> None:
    plan = msg.plan
    req = msg.request
    head = Table(title=f"plan at {msg.sp_id} (dry run: nothing held)", show_header=False, title_justify="left")
    head.add_column(style="bold")
    head.add_column()
    head.add_row("request", f"{req.src} → {req.dst}, {req.bandwidth_mbps} Mb/s")
    head.add_row("path", " → ".join(plan.path))
    head.add_row(
        "latency",
        f"{plan.total_latency_ms:g} ms"
        + (f" of {req.latency_budget_ms:g}" if req.HasField("latency_budget_ms") else ""),
    )
    head.add_row("cost", f"{plan.money_per_hour:g} per hour, {plan.hops} segment(s)")
    if plan.placements:
        head.add_row("chain", ", ".join(f"{p.type}@{p.domain}/{p.site}" for p in plan.placements))
    out.print(head)
    segs = Table(title="segments", title_justify="left")
    for col in (
        "#",
        "domain",
        "ingress → egress",
        "transit ms",
        "share ms",
        "QoS",
        "isolation",
        "subnet",
        "labels",
        "fn",
    ):
        segs.add_column(col)
    for s in plan.segments:
        labels = " ".join(
            f"{c.port}={','.join(f'{r.first}-{r.last}' if r.first != r.last else str(r.first) for r in c.labels)}"
            for c in s.port_constraints
        )
        segs.add_row(
            str(s.index),
            s.domain,
            f"{s.ingress} → {s.egress}",
            f"{s.transit_latency_ms:g}",
            f"{s.latency_share_ms:g}",
            ",".join(f"{k}={v}" for k, v in sorted(s.qos_native.items())) or "-",
            s.isolation or "-",
            s.subnet,
            labels or "-",
            ",".join(s.functions) or "-",
        )
    out.print(segs)
    if plan.links:
        links = Table(title="inter-domain links (stitched by this SP)", title_justify="left")
        for col in ("a", "b", "candidates", "preferred", "swap"):
            links.add_column(col)
        for ln in plan.links:
            cands = ",".join(f"{r.first}-{r.last}" if r.first != r.last else str(r.first) for r in ln.candidates)
            swap = "/".join(x for x, on in ((ln.a_domain, ln.a_can_swap), (ln.b_domain, ln.b_can_swap)) if on)
            links.add_row(ln.a_port, ln.b_port, cands, str(ln.preferred), swap or "-")
        out.print(links)


async def _slice_plan(ns: argparse.Namespace) -> int:
    req = _read_request(ns.file)
    msg = await with_stub(ns, lambda stub: stub.Reserve(pb.ReserveRequest(request=req, dry_run=True)))
    emit(msg, ns.json, _print_plan)
    return 0


async def _slice_op(ns: argparse.Namespace) -> int:
    rpc = _OPS[ns.slice_cmd][0]
    msg = await with_stub(ns, lambda stub: getattr(stub, rpc)(pb.SliceRef(slice_id=ns.slice_id)))
    emit(msg, ns.json, _print_slice)
    return 0


async def _slice_list(ns: argparse.Namespace) -> int:
    states = [pb.SliceState.Value(f"SLICE_STATE_{s}") for s in ns.state or []]

    async def every_page(stub: pb_grpc.SlicesStub) -> pb.ListResponse:
        # The broker answers a page at a time (at most 500 slices or 2 MiB); the command shows all.
        out = pb.ListResponse()
        token = ""
        while True:
            page = await stub.List(pb.ListRequest(states=states, page_token=token))
            out.slices.extend(page.slices)
            token = page.next_page_token
            if not token:
                return out

    msg = await with_stub(ns, every_page)

    def printer(m: pb.ListResponse) -> None:
        table = Table(title=f"slices at {ns.broker}", title_justify="left")
        table.add_column("id", no_wrap=True)
        for col in ("state", "health", "src → dst", "Mb/s", "leaf SPs", "updated"):
            table.add_column(col)
        for s in m.slices:
            table.add_row(
                s.id,
                state_name(s.state),
                health_name(s.health),
                f"{s.request.src} → {s.request.dst}",
                str(s.request.bandwidth_mbps),
                ", ".join(codec.leaf_sps(s.segments)),
                table_time(s.updated_at),
            )
        out.print(table)

    emit(msg, ns.json, printer, drop=("next_page_token",))  # every page was followed
    return 0


async def _usage(ns: argparse.Namespace) -> int:
    msg = await with_stub(ns, lambda stub: stub.GetUsage(pb.GetUsageRequest()))

    def printer(u: pb.Usage) -> None:
        table = Table(title=f"holdings of SP {u.sp_id}", title_justify="left")
        for col in ("domain", "Mb/s", "labels", "function slots", "addresses"):
            table.add_column(col)
        for d in u.domains:
            table.add_row(d.domain, str(d.bandwidth_mbps), str(d.labels), str(d.function_slots), str(d.addresses))
        table.add_row("WIM", str(u.wim_bandwidth_mbps), str(u.wim_labels), "-", f"{u.wim_services} services")
        out.print(table)
        out.print(f"slices holding resources: {u.holding_slices}")

    emit(msg, ns.json, printer)
    return 0


_FILE_HELP = "YAML slice request (its fields below), e.g. scenarios/examples/request.yaml"


class _RequestFileHelp(argparse.Action):
    """``--help`` that lists a request file's fields, read from the model only when help is asked for."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        # Imported here: pydantic costs ~80 ms at import, which the other commands need not pay.
        from broker.api.request_file import fields_help

        parser.epilog = fields_help()
        parser.print_help()
        parser.exit()


_OPS = {
    "show": ("Get", "show a slice with its per-domain segments"),
    "terminate": ("Terminate", "release a slice everywhere"),
    "commit": ("Commit", "commit a held slice"),
    "abort": ("Abort", "release a held slice"),
    "activate": ("Activate", "activate a committed slice"),
    "deactivate": ("Deactivate", "take an active slice out of service, keeping its reservation (COMMITTED)"),
}


def register(sub: Any) -> None:
    """Add ``slice`` and ``usage`` to the command's sub-parsers."""
    s = sub.add_parser("slice", help="order and inspect slices at a broker")
    ssub = s.add_subparsers(dest="slice_cmd", required=True)
    r = add_client_args(
        ssub.add_parser(
            "request",
            help="reserve, commit and activate a slice from a YAML file",
            add_help=False,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    r.add_argument("-h", "--help", action=_RequestFileHelp, help="show this help, with the fields of FILE, and exit")
    r.add_argument("file", metavar="FILE", help=_FILE_HELP)
    r.add_argument("--request-id", default="", help="idempotency key (default: a new one)")
    r.add_argument("--hold-time", type=int, default=0, help="hold time in seconds (default: the broker's)")
    r.add_argument("--hold-only", action="store_true", help="only reserve; commit later with 'slice commit'")
    r.set_defaults(handler=_slice_request)
    for name, (_, text) in _OPS.items():
        op = add_client_args(ssub.add_parser(name, help=text))
        op.add_argument(
            "slice_id", metavar="SLICE_ID", help="the slice's id, as `slice list` and `slice request` print it"
        )
        op.set_defaults(handler=_slice_op)
    pl = add_client_args(
        ssub.add_parser(
            "plan",
            help="show how a broker would decompose a request (dry run, holds nothing)",
            add_help=False,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    pl.add_argument("-h", "--help", action=_RequestFileHelp, help="show this help, with the fields of FILE, and exit")
    pl.add_argument("file", metavar="FILE", help=_FILE_HELP)
    pl.set_defaults(handler=_slice_plan)
    lp = add_client_args(ssub.add_parser("list", help="list slices"))
    lp.add_argument("--state", action="append", choices=STATE_NAMES, help="only this state (repeatable)")
    lp.set_defaults(handler=_slice_list)
    add_slice_commands(ssub)
    add_client_args(sub.add_parser("usage", help="what a broker holds now")).set_defaults(handler=_usage)

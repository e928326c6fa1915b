"""The ``fedbroker`` command: run a broker, order and inspect slices, run scenarios."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf import json_format
from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from broker import codec
from broker.child_agent import REQUESTER_METADATA
from broker.config import ConfigError, load_config, load_yaml
from fedbroker.v1 import northsouth_pb2 as pb
from fedbroker.v1 import northsouth_pb2_grpc as pb_grpc
from slicing.errors import FedError

T = TypeVar("T")
DEFAULT_BROKER = "127.0.0.1:50061"
STATE_NAMES = [
    n.removeprefix("SLICE_STATE_")
    for n in pb.SliceState.keys()  # noqa: SIM118 - an EnumTypeWrapper, not a dict
    if not n.endswith("UNSPECIFIED")
]

out = Console()
err = Console(stderr=True)


def _state(value: int) -> str:
    return pb.SliceState.Name(value).removeprefix("SLICE_STATE_")  # type: ignore[arg-type]


# --- request files ----------------------------------------------------------------------------

_SLICE_KEYS = {
    "name",
    "src",
    "dst",
    "bandwidth_mbps",
    "latency_budget_ms",
    "chain",
    "subnet",
    "port_constraints",
}


def _label_ranges(value: Any, path: str) -> list[pb.LabelRange]:
    items = value if isinstance(value, list) else [value]
    ranges = []
    for i, item in enumerate(items):
        text = str(item)
        first, _, last = text.partition("-")
        if not first.strip().isdigit() or (last and not last.strip().isdigit()):
            raise ConfigError(f"{path}[{i}]: expected a label or 'FIRST-LAST', got {item!r}")
        ranges.append(pb.LabelRange(first=int(first), last=int(last or first)))
    return ranges


def slice_request_from_data(data: Any, path: str = "slice") -> pb.SliceRequest:
    """A ``SliceRequest`` from a parsed YAML mapping; errors name the path of the bad field."""
    if isinstance(data, dict) and set(data) == {"slice"}:
        data, path = data["slice"], f"{path}"
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must be a mapping of slice fields")
    unknown = sorted(set(data) - _SLICE_KEYS)
    if unknown:
        raise ConfigError(f"{path}.{unknown[0]}: unknown field (known: {', '.join(sorted(_SLICE_KEYS))})")
    msg = pb.SliceRequest()
    try:
        for key in ("name", "src", "dst", "subnet"):
            if key in data:
                setattr(msg, key, str(data[key]))
        if "bandwidth_mbps" in data:
            msg.bandwidth_mbps = int(data["bandwidth_mbps"])
        if "latency_budget_ms" in data:
            msg.latency_budget_ms = float(data["latency_budget_ms"])
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    chain = data.get("chain") or []
    if not isinstance(chain, list):
        raise ConfigError(f"{path}.chain: must be a list of function types")
    msg.chain.extend(str(c) for c in chain)
    for i, pc in enumerate(data.get("port_constraints") or []):
        cpath = f"{path}.port_constraints[{i}]"
        if not isinstance(pc, dict) or "port" not in pc or "labels" not in pc:
            raise ConfigError(f"{cpath}: needs port and labels")
        msg.port_constraints.add(
            port=str(pc["port"]),
            labels=_label_ranges(pc["labels"], f"{cpath}.labels"),
            preferred=int(pc.get("preferred", 0)),
        )
    return msg


# --- client calls -----------------------------------------------------------------------------


async def _with_stub(address: str, call: Callable[[pb_grpc.SlicesStub], Awaitable[T]]) -> T:
    async with grpc.aio.insecure_channel(address) as channel:
        return await call(pb_grpc.SlicesStub(channel))


def _metadata() -> tuple[tuple[str, str], ...]:
    return ((REQUESTER_METADATA, os.environ.get("FEDBROKER_REQUESTER", os.environ.get("USER", "cli"))),)


def _print_slice(msg: pb.Slice) -> None:
    table = Table(title=f"slice {msg.id}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("state", _state(msg.state))
    table.add_row("owner SP", msg.sp_id)
    table.add_row("request id", msg.request_id)
    table.add_row("path", f"{msg.request.src} → {msg.request.dst}")
    table.add_row("bandwidth", f"{msg.request.bandwidth_mbps} Mb/s")
    if msg.request.latency_budget_ms:
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
                f"{kind} [bold]{s.domain}[/] {_state(s.state)}  {s.ingress} → {s.egress}  {s.subnet}{fns}  {labels}"
            )
            add(branch, s.children)

    add(tree, msg.segments)
    out.print(tree)


def _emit(msg: Any, as_json: bool, printer: Callable[[Any], None]) -> None:
    if as_json:
        print(
            json.dumps(
                json_format.MessageToDict(
                    msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
                ),
                indent=2,
            )
        )
    else:
        printer(msg)


async def _slice_request(ns: argparse.Namespace) -> int:
    req = slice_request_from_data(load_yaml(Path(ns.file)), path=ns.file)
    request_id = ns.request_id or f"cli-{uuid.uuid4().hex[:12]}"
    md = _metadata()

    async def run(stub: pb_grpc.SlicesStub) -> pb.Slice:
        if not ns.json:
            err.print(f"reserving at {ns.broker} (request id {request_id}) …")
        msg: pb.Slice = await stub.Reserve(
            pb.ReserveRequest(request_id=request_id, request=req, hold_time_s=ns.hold_time), metadata=md
        )
        if ns.hold_only:
            return msg
        for rpc in ("Commit", "Activate"):
            if not ns.json:
                err.print(f"{rpc.lower()} {msg.id} …")
            msg = await getattr(stub, rpc)(pb.SliceRef(slice_id=msg.id), metadata=md)
            assert isinstance(msg, pb.Slice)
        return msg

    msg = await _with_stub(ns.broker, run)
    _emit(msg, ns.json, _print_slice)
    return 0


async def _slice_op(ns: argparse.Namespace) -> int:
    rpc = {
        "show": "Get",
        "terminate": "Terminate",
        "commit": "Commit",
        "abort": "Abort",
        "activate": "Activate",
    }[ns.slice_cmd]
    msg = await _with_stub(
        ns.broker, lambda stub: getattr(stub, rpc)(pb.SliceRef(slice_id=ns.slice_id), metadata=_metadata())
    )
    _emit(msg, ns.json, _print_slice)
    return 0


async def _slice_list(ns: argparse.Namespace) -> int:
    states = [pb.SliceState.Value(f"SLICE_STATE_{s}") for s in ns.state or []]
    msg = await _with_stub(ns.broker, lambda stub: stub.List(pb.ListRequest(states=states), metadata=_metadata()))

    def printer(m: pb.ListResponse) -> None:
        table = Table(title=f"slices at {ns.broker}", title_justify="left")
        table.add_column("id", no_wrap=True)
        for col in ("state", "src → dst", "Mb/s", "leaf SPs", "updated"):
            table.add_column(col)
        for s in m.slices:
            table.add_row(
                s.id,
                _state(s.state),
                f"{s.request.src} → {s.request.dst}",
                str(s.request.bandwidth_mbps),
                ", ".join(codec.leaf_sps(s.segments)),
                s.updated_at.ToDatetime().strftime("%Y-%m-%d %H:%M:%S"),
            )
        out.print(table)

    _emit(msg, ns.json, printer)
    return 0


async def _usage(ns: argparse.Namespace) -> int:
    msg = await _with_stub(ns.broker, lambda stub: stub.GetUsage(pb.GetUsageRequest(), metadata=_metadata()))

    def printer(u: pb.Usage) -> None:
        table = Table(title=f"holdings of SP {u.sp_id}", title_justify="left")
        for col in ("domain", "Mb/s", "labels", "function slots", "addresses"):
            table.add_column(col)
        for d in u.domains:
            table.add_row(d.domain, str(d.bandwidth_mbps), str(d.labels), str(d.function_slots), str(d.addresses))
        table.add_row("WIM", str(u.wim_bandwidth_mbps), str(u.wim_labels), "-", f"{u.wim_services} services")
        out.print(table)
        out.print(f"slices holding resources: {u.holding_slices}")

    _emit(msg, ns.json, printer)
    return 0


def _serve(ns: argparse.Namespace) -> int:
    from broker.app import serve

    config = load_config(Path(ns.config))
    logging.basicConfig(
        level=ns.log_level.upper(),
        format=f"%(asctime)s %(levelname)s {config.sp_id} %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        asyncio.run(serve(config))
    except FedError as exc:  # e.g. a domain's cloud refused the login: say which setting, no traceback
        err.print(f"[red]error:[/] {config.sp_id} cannot start: {exc}")
        return 1
    return 0


def _scenario(ns: argparse.Namespace, rest: list[str]) -> int:
    from scenarios.runner import main as scenario_main

    status: int = scenario_main(rest)
    return status


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``fedbroker``."""
    parser = argparse.ArgumentParser(prog="fedbroker", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("serve", help="run one SP's broker")
    p.add_argument("--config", required=True, help="the SP's YAML config")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])

    s = sub.add_parser("slice", help="order and inspect slices at a broker")
    ssub = s.add_subparsers(dest="slice_cmd", required=True)

    def client(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--broker",
            default=os.environ.get("FEDBROKER_BROKER", DEFAULT_BROKER),
            help=f"broker address HOST:PORT (default $FEDBROKER_BROKER or {DEFAULT_BROKER})",
        )
        p.add_argument("--json", action="store_true", help="print JSON instead of tables")
        return p

    r = client(ssub.add_parser("request", help="reserve, commit and activate a slice from a YAML file"))
    r.add_argument("file")
    r.add_argument("--request-id", default="", help="idempotency key (default: a new one)")
    r.add_argument("--hold-time", type=int, default=0, help="hold time in seconds (default: the broker's)")
    r.add_argument("--hold-only", action="store_true", help="only reserve; commit later with 'slice commit'")
    for name, text in (
        ("show", "show a slice with its per-domain segments"),
        ("terminate", "release a slice everywhere"),
        ("commit", "commit a held slice"),
        ("abort", "release a held slice"),
        ("activate", "activate a committed slice"),
    ):
        client(ssub.add_parser(name, help=text)).add_argument("slice_id")
    lp = client(ssub.add_parser("list", help="list slices"))
    lp.add_argument("--state", action="append", choices=STATE_NAMES, help="only this state (repeatable)")

    client(sub.add_parser("usage", help="what a broker holds now"))

    sc = sub.add_parser("scenario", help="run a federation scenario (see scenarios/README.md)")
    sc.add_argument("scenario_args", nargs=argparse.REMAINDER, help="run FILE [--report-json OUT] [--keep]")

    op = sub.add_parser("openstack", help="real Keystone, Placement and Neutron on loopback (for OpenStack leaves)")
    op.add_argument("openstack_args", nargs=argparse.REMAINDER, help="up|down|status|install [--dir DIR]")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fedbroker`` console script."""
    parser = build_parser()
    ns = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        if ns.cmd == "serve":
            return _serve(ns)
        if ns.cmd == "scenario":
            return _scenario(ns, list(ns.scenario_args))
        if ns.cmd == "openstack":
            from scenarios.openstack_services import main as openstack_main

            return openstack_main(list(ns.openstack_args))
        if ns.cmd == "usage":
            return asyncio.run(_usage(ns))
        if ns.slice_cmd == "request":
            return asyncio.run(_slice_request(ns))
        if ns.slice_cmd == "list":
            return asyncio.run(_slice_list(ns))
        return asyncio.run(_slice_op(ns))
    except ConfigError as exc:
        err.print(f"[red]error:[/] {exc}")
        return 2
    except grpc.aio.AioRpcError as exc:
        err.print(f"[red]{exc.code().name}:[/] {exc.details()}")
        return 1
    except KeyboardInterrupt:
        return 130

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
    "reverse_bandwidth_mbps",
    "qos_class",
    "isolation",
    "include_sps",
    "exclude_sps",
    "max_price_per_hour",
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
        if "reverse_bandwidth_mbps" in data:
            msg.reverse_bandwidth_mbps = int(data["reverse_bandwidth_mbps"])
        if "max_price_per_hour" in data:
            msg.max_price_per_hour = float(data["max_price_per_hour"])
        for key in ("qos_class", "isolation"):
            if key in data:
                setattr(msg, key, str(data[key]))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    for key in ("include_sps", "exclude_sps"):
        value = data.get(key) or []
        if not isinstance(value, list):
            raise ConfigError(f"{path}.{key}: must be a list of SP ids")
        getattr(msg, key).extend(str(v) for v in value)
    chain = data.get("chain") or []
    if not isinstance(chain, list):
        raise ConfigError(f"{path}.chain: must be a list of function types (or {{type, throughput_mbps}})")
    throughputs: list[int] = []
    for i, fn in enumerate(chain):
        if isinstance(fn, dict):  # {type: firewall, throughput_mbps: 500}
            extra = sorted(set(fn) - {"type", "throughput_mbps"})
            if extra or "type" not in fn:
                raise ConfigError(f"{path}.chain[{i}]: needs type (and optionally throughput_mbps), not {extra}")
            try:
                throughputs.append(int(fn.get("throughput_mbps", 0)))
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{path}.chain[{i}].throughput_mbps: {exc}") from None
            msg.chain.append(str(fn["type"]))
        else:
            throughputs.append(0)
            msg.chain.append(str(fn))
    if any(throughputs):
        msg.chain_throughput_mbps.extend(throughputs)
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


def _print_plan(msg: pb.Slice) -> None:
    plan = msg.plan
    req = msg.request
    head = Table(title=f"plan at {msg.sp_id} (dry run: nothing held)", show_header=False, title_justify="left")
    head.add_column(style="bold")
    head.add_column()
    head.add_row("request", f"{req.src} → {req.dst}, {req.bandwidth_mbps} Mb/s")
    head.add_row("path", " → ".join(plan.path))
    head.add_row(
        "latency", f"{plan.total_latency_ms:g} ms" + (f" of {req.latency_budget_ms:g}" if req.latency_budget_ms else "")
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
    req = slice_request_from_data(load_yaml(Path(ns.file)), path=ns.file)
    msg = await _with_stub(
        ns.broker,
        lambda stub: stub.Reserve(pb.ReserveRequest(request=req, dry_run=True), metadata=_metadata()),
    )
    _emit(msg, ns.json, _print_plan)
    return 0


def _print_explanation(exc: grpc.aio.AioRpcError) -> None:
    """The explanation tree a broker sent with a refusal: which SP refused what, level by level."""
    from broker.status import explanation

    tree = explanation(exc)
    if tree is None or not tree.causes:
        return
    root = Tree(f"[bold]{tree.constraint or tree.code.value}[/]")

    def add(node: Tree, causes: Sequence[Any]) -> None:
        for c in causes:
            where = f"[bold]{c.domain}[/] " if c.domain else ""
            what = f"{c.constraint}: " if c.constraint and not c.message.startswith(c.constraint) else ""
            add(node.add(f"{where}{c.code.value} {what}{c.message}"), c.causes)

    add(root, tree.causes)
    err.print(root)


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


def _keys_init(ns: argparse.Namespace) -> int:
    from broker.keys import init_key

    path = Path(ns.out)
    try:
        public = init_key(path, force=ns.force)
    except FileExistsError as exc:
        err.print(f"[red]error:[/] {exc}")
        return 2
    err.print(f"private key written to {path} (mode 0600), public key to {path.with_suffix('.pub')}")
    err.print("upper-SPs trust it with, in their config:  lower_sps: [{id: …, address: …, keys: [<the line below>]}]")
    print(public)
    return 0


def _catalog_validate(ns: argparse.Namespace) -> int:
    from capability_catalog.authoring import validate_authoring

    data = load_yaml(Path(ns.file))
    if not isinstance(data, dict):
        err.print(f"[red]{ns.file}:[/] the note must be a mapping")
        return 1
    problems = validate_authoring(data)
    for problem in problems:
        print(f"{ns.file}: {problem}")
    if problems:
        err.print(f"[red]{len(problems)} problem(s)[/]")
        return 1
    err.print(f"[green]{ns.file}: valid[/] (note of SP {data.get('sp_id')})")
    return 0


async def _catalog_show(ns: argparse.Namespace) -> int:
    async with grpc.aio.insecure_channel(ns.broker) as channel:
        msg = await pb_grpc.CapabilitiesStub(channel).GetCatalog(pb.GetCatalogRequest(), metadata=_metadata())

    def printer(m: pb.GetCatalogResponse) -> None:
        table = Table(title=f"capability notes at {ns.broker}", title_justify="left")
        for col in ("note of", "version", "expires", "endpoints", "ports", "functions", "held as"):
            table.add_column(col)
        rows = [(m.own, "published (signed)")] if m.HasField("own") else []
        rows += [(n, "received") for n in m.lower]
        for note, role in rows:
            table.add_row(
                note.sp_id,
                str(note.version),
                note.expires_at.ToDatetime().strftime("%Y-%m-%d %H:%M:%S"),
                ", ".join(e.id for e in note.endpoints),
                ", ".join(p.id for p in note.ports),
                ", ".join(sorted({f.type for f in note.functions})),
                role,
            )
        out.print(table)
        if m.rejected:
            rej = Table(title="refused notes", title_justify="left")
            for col in ("from", "version", "reason", "detail"):
                rej.add_column(col)
            for r in m.rejected:
                rej.add_row(r.sp_id, str(r.version), r.reason, r.detail)
            out.print(rej)

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
    asyncio.run(serve(config))
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
    pl = client(ssub.add_parser("plan", help="show how a broker would decompose a request (dry run, holds nothing)"))
    pl.add_argument("file")
    lp = client(ssub.add_parser("list", help="list slices"))
    lp.add_argument("--state", action="append", choices=STATE_NAMES, help="only this state (repeatable)")

    client(sub.add_parser("usage", help="what a broker holds now"))

    k = sub.add_parser("keys", help="signing keys of an SP")
    ksub = k.add_subparsers(dest="keys_cmd", required=True)
    ki = ksub.add_parser("init", help="create an SP's Ed25519 key pair (FILE and FILE.pub)")
    ki.add_argument("--out", required=True, help="private key file to write, e.g. keys/L1.key")
    ki.add_argument("--force", action="store_true", help="replace an existing key")

    cat = sub.add_parser("catalog", help="capability notes")
    csub = cat.add_subparsers(dest="catalog_cmd", required=True)
    client(csub.add_parser("show", help="the notes a broker publishes, holds and refused"))
    cv = csub.add_parser("validate", help="check a capability note in the YAML authoring format")
    cv.add_argument("file")

    sc = sub.add_parser("scenario", help="run a federation scenario (see scenarios/README.md)")
    sc.add_argument("scenario_args", nargs=argparse.REMAINDER, help="run FILE [--report-json OUT] [--keep]")
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
        if ns.cmd == "usage":
            return asyncio.run(_usage(ns))
        if ns.cmd == "keys":
            return _keys_init(ns)
        if ns.cmd == "catalog" and ns.catalog_cmd == "validate":
            return _catalog_validate(ns)
        if ns.cmd == "catalog":
            return asyncio.run(_catalog_show(ns))
        if ns.slice_cmd == "request":
            return asyncio.run(_slice_request(ns))
        if ns.slice_cmd == "list":
            return asyncio.run(_slice_list(ns))
        if ns.slice_cmd == "plan":
            return asyncio.run(_slice_plan(ns))
        return asyncio.run(_slice_op(ns))
    except ConfigError as exc:
        err.print(f"[red]error:[/] {exc}")
        return 2
    except grpc.aio.AioRpcError as exc:
        err.print(f"[red]{exc.code().name}:[/] {exc.details()}")
        _print_explanation(exc)
        return 1
    except KeyboardInterrupt:
        return 130

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
from broker.auth import ClientIdentity, server_identity
from broker.config import ConfigError, load_config, load_yaml
from broker.keys import load_key
from broker.pki import TlsFiles
from broker.tokens import TokenMinter
from fedbroker.v1 import northsouth_pb2 as pb
from fedbroker.v1 import northsouth_pb2_grpc as pb_grpc
from slicing.errors import FedError

T = TypeVar("T")
DEFAULT_BROKER = "127.0.0.1:50061"
DEFAULT_CREDS = "pki"
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


def client_identity(ns: argparse.Namespace) -> ClientIdentity:
    """Who the CLI is: TLS files and a token source from ``--creds``/``--as`` or the explicit file options."""
    creds = Path(ns.creds)
    name = ns.as_user
    tls = None
    if not ns.insecure:
        files = (
            Path(ns.ca or creds / "ca.crt"),
            Path(ns.cert or creds / f"{name}.crt"),
            Path(ns.key or creds / f"{name}.key"),
        )
        for flag, path in zip(("--ca", "--cert", "--key"), files, strict=True):
            if not path.is_file():
                raise ConfigError(
                    f"{flag}: cannot read {path} (make credentials with `fedbroker certs init --out {creds} "
                    f"--client {name}:operator`, or pass --creds/--as)"
                )
        tls = TlsFiles.read(*files)
    if ns.token:
        return ClientIdentity(name, tls, session_token=ns.token)
    key_path = Path(ns.token_key or creds / f"{name}.ed25519")
    if not key_path.is_file():
        raise ConfigError(f"--token-key: cannot read {key_path} (or pass a session token from `fedbroker login`)")
    return ClientIdentity(name, tls, TokenMinter(load_key(key_path), name))


def _audience(ns: argparse.Namespace, identity: ClientIdentity) -> str:
    if ns.sp:
        return str(ns.sp)
    if identity.tls is None:
        raise ConfigError("--sp: give the broker's SP id (with --insecure it cannot be read from its certificate)")
    try:
        return server_identity(ns.broker, identity)
    except OSError as exc:
        raise ConfigError(f"--broker: cannot reach {ns.broker} over TLS: {exc}") from None


async def _with_channel(ns: argparse.Namespace, call: Callable[[grpc.aio.Channel], Awaitable[T]]) -> T:
    identity = client_identity(ns)
    audience = await asyncio.to_thread(_audience, ns, identity)
    async with identity.channel(ns.broker, audience) as channel:
        return await call(channel)


async def _with_stub(ns: argparse.Namespace, call: Callable[[pb_grpc.SlicesStub], Awaitable[T]]) -> T:
    return await _with_channel(ns, lambda channel: call(pb_grpc.SlicesStub(channel)))


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

    async def run(stub: pb_grpc.SlicesStub) -> pb.Slice:
        if not ns.json:
            err.print(f"reserving at {ns.broker} (request id {request_id}) …")
        msg: pb.Slice = await stub.Reserve(
            pb.ReserveRequest(request_id=request_id, request=req, hold_time_s=ns.hold_time)
        )
        if ns.hold_only:
            return msg
        for rpc in ("Commit", "Activate"):
            if not ns.json:
                err.print(f"{rpc.lower()} {msg.id} …")
            msg = await getattr(stub, rpc)(pb.SliceRef(slice_id=msg.id))
            assert isinstance(msg, pb.Slice)
        return msg

    msg = await _with_stub(ns, run)
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
    msg = await _with_stub(ns, lambda stub: stub.Reserve(pb.ReserveRequest(request=req, dry_run=True)))
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
    msg = await _with_stub(ns, lambda stub: getattr(stub, rpc)(pb.SliceRef(slice_id=ns.slice_id)))
    _emit(msg, ns.json, _print_slice)
    return 0


async def _slice_list(ns: argparse.Namespace) -> int:
    states = [pb.SliceState.Value(f"SLICE_STATE_{s}") for s in ns.state or []]
    msg = await _with_stub(ns, lambda stub: stub.List(pb.ListRequest(states=states)))

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
    msg = await _with_stub(ns, lambda stub: stub.GetUsage(pb.GetUsageRequest()))

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


def _certs_init(ns: argparse.Namespace) -> int:
    from broker.accounts import Account, AccountBook, AccountKind, Role, dump_accounts
    from broker.keys import write_key
    from broker.pki import load_or_create_authority
    from capability_catalog.signing import generate_key

    out_dir = Path(ns.out)
    ca = load_or_create_authority(out_dir)
    for sp in ns.sp or []:
        ca.issue_to(out_dir, sp, server=True, hosts=ns.host or ())
        err.print(f"SP {sp}: {out_dir / sp}.crt, {out_dir / sp}.key")
    accounts_path = out_dir / "accounts.yaml"
    accounts: dict[str, Account] = {a.id: a for a in AccountBook(accounts_path).all()}
    for spec in ns.client or []:
        name, _, role_text = spec.partition(":")
        try:
            role = Role(role_text or "customer")
        except ValueError:
            err.print(f"[red]error:[/] --client {spec}: role must be one of {', '.join(Role)}")
            return 2
        if name not in (ns.sp or []):  # an SP's server certificate also serves it as a client
            ca.issue_to(out_dir, name, server=False)
        public = write_key(out_dir / f"{name}.ed25519", generate_key())
        kind = AccountKind.SERVICE if role is Role.PEER_SP else AccountKind.USER
        old = accounts.get(name)
        accounts[name] = Account(name, kind, role, (public,), old.password_hash if old else "")
        err.print(f"client {name} ({role}): {out_dir / name}.crt/.key, token key {out_dir / name}.ed25519")
    if ns.client:
        import yaml

        accounts_path.write_text(yaml.safe_dump(dump_accounts(list(accounts.values())), sort_keys=False))
        err.print(f"accounts written to {accounts_path} (point security.accounts_file at it)")
    err.print(f"CA: {out_dir / 'ca.crt'} (its key ca.key stays with whoever issues certificates)")
    return 0


def _hash_password(ns: argparse.Namespace) -> int:
    import getpass

    from broker.accounts import hash_password

    password = sys.stdin.readline().rstrip("\n") if not sys.stdin.isatty() else getpass.getpass("password: ")
    if not password:
        err.print("[red]error:[/] empty password")
        return 2
    print(hash_password(password))
    return 0


def _login(ns: argparse.Namespace) -> int:
    import getpass
    import urllib.error
    import urllib.request

    identity = client_identity(ns)
    password = os.environ.get("FEDBROKER_PASSWORD") or getpass.getpass(f"password for {ns.as_user}: ")
    ctx = identity.ssl_context() if identity.tls is not None else None
    body = json.dumps({"user": ns.as_user, "password": password}).encode()
    scheme = "http" if identity.tls is None else "https"
    req = urllib.request.Request(  # noqa: S310 - the scheme is fixed above
        f"{scheme}://{ns.url}/login", data=body, headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:  # noqa: S310
            answer = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        err.print(f"[red]login refused ({exc.code}):[/] {exc.read().decode(errors='replace')}")
        return 1
    except OSError as exc:
        err.print(f"[red]error:[/] cannot reach {ns.url}: {exc}")
        return 1
    err.print(
        f"session token for {ns.as_user}, valid until {answer['expires_at']} (pass it as --token or $FEDBROKER_TOKEN)"
    )
    print(answer["token"])
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


async def _catalog_offer(ns: argparse.Namespace) -> int:
    from capability_catalog.authoring import parse_policy

    data = load_yaml(Path(ns.file))
    offer, problems = parse_policy(data if data is not None else {}, "offer")
    for problem in problems:
        print(f"{ns.file}: {problem}")
    if problems:
        err.print(f"[red]{len(problems)} problem(s); nothing sent[/]")
        return 1
    request = pb.SetOfferRequest(domain=ns.domain, offer=codec.offer_to_pb(offer))
    reply = await _with_channel(ns, lambda channel: pb_grpc.CapabilitiesStub(channel).SetOffer(request, timeout=10))

    def printer(m: pb.SetOfferResponse) -> None:
        state = "withdrawn" if offer.withdrawn else "published"
        out.print(f"offer of {m.note.sp_id} {state}: note version {m.note.version}")

    _emit(reply, ns.json, printer)
    return 0


async def _catalog_show(ns: argparse.Namespace) -> int:
    msg = await _with_channel(ns, lambda channel: pb_grpc.CapabilitiesStub(channel).GetCatalog(pb.GetCatalogRequest()))

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
    try:
        asyncio.run(serve(config, insecure=ns.insecure))
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
    p.add_argument("--insecure", action="store_true", help="serve plaintext gRPC, no TLS (logs a warning)")

    s = sub.add_parser("slice", help="order and inspect slices at a broker")
    ssub = s.add_subparsers(dest="slice_cmd", required=True)

    def identity(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        env = os.environ.get
        p.add_argument(
            "--creds",
            default=env("FEDBROKER_CREDS", DEFAULT_CREDS),
            help=f"folder made by `certs init` (default $FEDBROKER_CREDS or {DEFAULT_CREDS})",
        )
        p.add_argument(
            "--as",
            dest="as_user",
            default=env("FEDBROKER_USER", "operator"),
            help="account to act as: uses CREDS/ca.crt, NAME.crt, NAME.key, NAME.ed25519 (default $FEDBROKER_USER "
            "or operator)",
        )
        p.add_argument("--ca", help="CA certificate (default CREDS/ca.crt)")
        p.add_argument("--cert", help="client certificate (default CREDS/NAME.crt)")
        p.add_argument("--key", help="client TLS key (default CREDS/NAME.key)")
        p.add_argument("--token-key", help="Ed25519 key signing one token per call (default CREDS/NAME.ed25519)")
        p.add_argument(
            "--token", default=env("FEDBROKER_TOKEN", ""), help="a session token from `fedbroker login` instead"
        )
        p.add_argument("--insecure", action="store_true", help="plaintext, for a broker served with --insecure")
        return p

    def client(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--broker",
            default=os.environ.get("FEDBROKER_BROKER", DEFAULT_BROKER),
            help=f"broker address HOST:PORT (default $FEDBROKER_BROKER or {DEFAULT_BROKER})",
        )
        p.add_argument(
            "--sp",
            default=os.environ.get("FEDBROKER_SP", ""),
            help="the broker's SP id (default: from its certificate)",
        )
        p.add_argument("--json", action="store_true", help="print JSON instead of tables")
        return identity(p)

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

    ce = sub.add_parser("certs", help="a lab certificate authority")
    cesub = ce.add_subparsers(dest="certs_cmd", required=True)
    ci = cesub.add_parser("init", help="a CA (kept if OUT has one) and certificates for SPs and clients")
    ci.add_argument("--out", required=True, help="folder for ca.crt/ca.key, NAME.crt/NAME.key, accounts.yaml")
    ci.add_argument("--sp", action="append", help="an SP's server certificate (repeatable)")
    ci.add_argument(
        "--client",
        action="append",
        help="NAME[:ROLE]: a client certificate, a token key NAME.ed25519 and an account (role customer, operator "
        "or peer-sp; default customer; repeatable)",
    )
    ci.add_argument("--host", action="append", help="extra host name or address in SP certificates (repeatable)")

    ac = sub.add_parser("accounts", help="account helpers")
    acsub = ac.add_subparsers(dest="accounts_cmd", required=True)
    acsub.add_parser("hash-password", help="read a password (stdin or prompt), print its scrypt hash")

    lg = identity(sub.add_parser("login", help="get a session token from a broker's login endpoint"))
    lg.add_argument("--url", required=True, help="HOST:PORT of the login endpoint (security.login_listen)")

    cat = sub.add_parser("catalog", help="capability notes")
    csub = cat.add_subparsers(dest="catalog_cmd", required=True)
    client(csub.add_parser("show", help="the notes a broker publishes, holds and refused"))
    cv = csub.add_parser("validate", help="check a capability note in the YAML authoring format")
    cv.add_argument("file")
    co = csub.add_parser("offer", help="edit a local domain's offer (QoS, isolation, pools, price, withdrawn)")
    client(co)
    co.add_argument("--domain", required=True, help="the local domain whose offer changes")
    co.add_argument("file", help="YAML with the offer policy (capability_catalog/AUTHORING.md)")

    dp = sub.add_parser("dataplane", help="the Linux data plane: find or remove what is left (needs root)")
    dsub = dp.add_subparsers(dest="dataplane_cmd", required=True)
    for name, text in (
        ("audit", "list namespaces and interfaces left under the prefix; exit 1 if there are any"),
        ("clean", "remove everything under the prefix"),
    ):
        d = dsub.add_parser(name, help=text)
        d.add_argument("--prefix", default="fb", help="an installation's prefix (default: every fedbroker one)")
    sc = sub.add_parser("scenario", help="run a federation scenario (see scenarios/README.md)")
    sc.add_argument("scenario_args", nargs=argparse.REMAINDER, help="run FILE [--report-json OUT] [--keep]")

    op = sub.add_parser("openstack", help="real Keystone, Placement and Neutron on loopback (for OpenStack leaves)")
    op.add_argument("openstack_args", nargs=argparse.REMAINDER, help="up|down|status|install [--dir DIR]")
    return parser


def _dataplane(ns: argparse.Namespace) -> int:
    """``dataplane audit|clean [--prefix P]``: what the data plane left behind under a prefix."""
    from wim import netlink

    try:
        prefix = netlink.check_prefix(ns.prefix, "--prefix")
    except FedError as exc:
        raise ConfigError(str(exc)) from None
    if ns.dataplane_cmd == "clean":
        removed = netlink.clean(prefix)
        for item in removed:
            print(f"removed {item}")
        err.print(f"{len(removed)} objects removed under prefix {prefix}")
        return 0
    left = netlink.leftovers(prefix)
    for item in left:
        print(item)
    if left:
        err.print(f"[red]{len(left)} objects left under prefix {prefix}[/]")
        return 1
    err.print(f"nothing left under prefix {prefix}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fedbroker`` console script."""
    parser = build_parser()
    ns = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        if ns.cmd == "serve":
            return _serve(ns)
        if ns.cmd == "scenario":
            return _scenario(ns, list(ns.scenario_args))
        if ns.cmd == "dataplane":
            return _dataplane(ns)
        if ns.cmd == "openstack":
            from scenarios.openstack_services import main as openstack_main

            return openstack_main(list(ns.openstack_args))
        if ns.cmd == "usage":
            return asyncio.run(_usage(ns))
        if ns.cmd == "keys":
            return _keys_init(ns)
        if ns.cmd == "certs":
            return _certs_init(ns)
        if ns.cmd == "accounts":
            return _hash_password(ns)
        if ns.cmd == "login":
            return _login(ns)
        if ns.cmd == "catalog" and ns.catalog_cmd == "validate":
            return _catalog_validate(ns)
        if ns.cmd == "catalog" and ns.catalog_cmd == "offer":
            return asyncio.run(_catalog_offer(ns))
        if ns.cmd == "catalog":
            return asyncio.run(_catalog_show(ns))
        if ns.slice_cmd == "request":
            return asyncio.run(_slice_request(ns))
        if ns.slice_cmd == "list":
            return asyncio.run(_slice_list(ns))
        if ns.slice_cmd == "plan":
            return asyncio.run(_slice_plan(ns))
        return asyncio.run(_slice_op(ns))
    except (ConfigError, ValueError) as exc:
        err.print(f"[red]error:[/] {exc}")
        return 2
    except grpc.aio.AioRpcError as exc:
        err.print(f"[red]{exc.code().name}:[/] {exc.details()}")
        _print_explanation(exc)
        return 1
    except KeyboardInterrupt:
        return 130

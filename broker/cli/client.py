"""What every client command shares: who the CLI is, the channel to a broker, output, errors."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf import json_format
from rich.console import Console
from rich.tree import Tree

from broker.descriptors import ConfigError
from broker.security.auth import ClientIdentity, server_identity
from broker.security.keys import load_key
from broker.security.pki import TlsFiles
from broker.security.tokens import TokenMinter
from fedbroker.v1 import northsouth_pb2 as pb
from fedbroker.v1 import northsouth_pb2_grpc as pb_grpc

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


def state_name(value: int) -> str:
    """A wire slice state as the tables print it (``HELD``, not ``SLICE_STATE_HELD``)."""
    return pb.SliceState.Name(value).removeprefix("SLICE_STATE_")  # type: ignore[arg-type]


def address(text: str) -> str:
    """An argparse type: ``HOST:PORT`` with a port from 1 to 65535 (the error says what to give)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (a port from 1 to 65535), e.g. {DEFAULT_BROKER}")
    return text


def add_identity_args(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options that say who the CLI acts as: credentials folder, account, TLS files, token."""
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
    p.add_argument("--token", default=env("FEDBROKER_TOKEN", ""), help="a session token from `fedbroker login` instead")
    p.add_argument("--insecure", action="store_true", help="plaintext, for a broker served with --insecure")
    return p


def add_client_args(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of a command that calls a broker: its address, its SP id, JSON output, and the identity."""
    p.add_argument(
        "--broker",
        type=address,
        default=os.environ.get("FEDBROKER_BROKER", DEFAULT_BROKER),
        help=f"broker address HOST:PORT (default $FEDBROKER_BROKER or {DEFAULT_BROKER})",
    )
    p.add_argument(
        "--sp",
        default=os.environ.get("FEDBROKER_SP", ""),
        help="the broker's SP id (default: from its certificate)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    return add_identity_args(p)


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


async def with_channel(ns: argparse.Namespace, call: Callable[[grpc.aio.Channel], Awaitable[T]]) -> T:
    identity = client_identity(ns)
    audience = await asyncio.to_thread(_audience, ns, identity)
    async with identity.channel(ns.broker, audience) as channel:
        return await call(channel)


async def with_stub(ns: argparse.Namespace, call: Callable[[pb_grpc.SlicesStub], Awaitable[T]]) -> T:
    return await with_channel(ns, lambda channel: call(pb_grpc.SlicesStub(channel)))


def emit(msg: Any, as_json: bool, printer: Callable[[Any], None], *, drop: Sequence[str] = ()) -> None:
    """Print a reply: as JSON (every field, proto names, less the ``drop`` ones) or through ``printer``."""
    if as_json:
        data = json_format.MessageToDict(
            msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
        for key in drop:
            data.pop(key, None)
        print(json.dumps(data, indent=2))
    else:
        printer(msg)


def print_explanation(exc: grpc.aio.AioRpcError) -> None:
    """The explanation tree a broker sent with a refusal: which SP refused what, level by level."""
    from broker.api.status import explanation

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

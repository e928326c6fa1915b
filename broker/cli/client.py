"""What every client command shares: who the CLI is, the channel to a broker, output, errors."""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc
from rich.tree import Tree

from broker.cli.output import err, message_json, print_json
from broker.descriptors import ConfigError
from broker.security.auth import ClientIdentity, server_identity
from broker.security.keys import load_key
from broker.security.pki import TlsFiles
from broker.security.tokens import TokenMinter, claimed_subject
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


def state_name(value: int) -> str:
    """A wire slice state as the tables print it (``HELD``, not ``SLICE_STATE_HELD``)."""
    return pb.SliceState.Name(value).removeprefix("SLICE_STATE_")  # type: ignore[arg-type]


def address(text: str) -> str:
    """An argparse type: ``HOST:PORT`` with a port from 1 to 65535 (the error says what to give)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (a port from 1 to 65535), e.g. {DEFAULT_BROKER}")
    return text


def add_identity_args(
    p: argparse.ArgumentParser, *, tokens: bool = True, session: bool = True
) -> argparse.ArgumentParser:
    """The options that say who the CLI acts as: credentials folder, account, TLS files, and the token.

    ``tokens``: the key that signs call tokens; ``session``: a session token instead (``--token``).
    """
    env = os.environ.get
    p.add_argument(
        "--creds",
        default=env("FEDBROKER_CREDS", DEFAULT_CREDS),
        help=f"folder made by `certs init` (default $FEDBROKER_CREDS or {DEFAULT_CREDS})",
    )
    files = "NAME.crt, NAME.key, NAME.ed25519" if tokens else "NAME.crt, NAME.key"
    p.add_argument(
        "--as",
        dest="as_user",
        default=env("FEDBROKER_USER", "operator"),
        metavar="NAME",
        help=f"account to act as: uses CREDS/ca.crt, {files} (default $FEDBROKER_USER or operator)",
    )
    p.add_argument("--ca", metavar="FILE", help="CA certificate (default CREDS/ca.crt)")
    p.add_argument("--cert", metavar="FILE", help="client certificate (default CREDS/NAME.crt)")
    p.add_argument("--key", metavar="FILE", help="client TLS key (default CREDS/NAME.key)")
    if tokens:
        p.add_argument(
            "--token-key", metavar="FILE", help="Ed25519 key signing one token per call (default CREDS/NAME.ed25519)"
        )
    if tokens and session:
        p.add_argument(
            "--token",
            default=None,
            help="a session token from `fedbroker login` instead (default $FEDBROKER_TOKEN, used only when it "
            "is NAME's)",
        )
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


def client_identity(ns: argparse.Namespace, *, tokens: bool = True) -> ClientIdentity:
    """Who the CLI is: TLS files and (``tokens``) a token source from ``--creds``/``--as`` or the file options."""
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
    if not tokens:
        return ClientIdentity(name, tls)
    token = session_token(ns)
    if token:
        return ClientIdentity(name, tls, session_token=token)
    key_path = Path(ns.token_key or creds / f"{name}.ed25519")
    if not key_path.is_file():
        raise ConfigError(f"--token-key: cannot read {key_path} (or pass a session token from `fedbroker login`)")
    return ClientIdentity(name, tls, TokenMinter(load_key(key_path), name))


def session_token(ns: argparse.Namespace) -> str:
    """The session token to call with: ``--token``, else ``$FEDBROKER_TOKEN`` when it is ``--as``'s.

    An exported token is another user's as soon as ``--as`` names someone else: it would be refused
    (a token's subject must be the certificate's name), so it is set aside with a warning that says so.
    """
    if getattr(ns, "token", None) is not None:
        return str(ns.token)
    token = os.environ.get("FEDBROKER_TOKEN", "")
    if not token:
        return ""
    owner = claimed_subject(token)
    if owner and owner != ns.as_user:
        err.print(
            f"[yellow]warning:[/] $FEDBROKER_TOKEN holds a session token of {owner}, not of {ns.as_user} (--as): "
            f"not using it; {ns.as_user} signs its own tokens. Unset FEDBROKER_TOKEN, or pass --as {owner}.",
            highlight=False,
        )
        return ""
    return token


def audience(ns: argparse.Namespace, identity: ClientIdentity) -> str:
    """The SP id of the broker to call (the token audience): ``--sp``, or the name in the broker's certificate."""
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
    sp = await asyncio.to_thread(audience, ns, identity)
    async with identity.channel(ns.broker, sp) as channel:
        return await call(channel)


async def with_stub(ns: argparse.Namespace, call: Callable[[pb_grpc.SlicesStub], Awaitable[T]]) -> T:
    return await with_channel(ns, lambda channel: call(pb_grpc.SlicesStub(channel)))


def emit(msg: Any, as_json: bool, printer: Callable[[Any], None], *, drop: Sequence[str] = ()) -> None:
    """Print a reply: as typed JSON (every field, proto names, less the ``drop`` ones; ``broker.cli.output``)
    or through ``printer``."""
    if as_json:
        data = message_json(msg)
        for key in drop:
            data.pop(key, None)
        print_json(data)
    else:
        printer(msg)


def transport_hint(ns: argparse.Namespace, exc: grpc.aio.AioRpcError) -> str:
    """What to do when a broker could not be reached because of how the CLI called, or ''."""
    if exc.code() is not grpc.StatusCode.UNAVAILABLE:
        return ""
    details = exc.details() or ""
    broker = str(getattr(ns, "broker", ""))
    if "ALPN" in details:
        return (
            f"{broker} speaks TLS but not gRPC: is it the login endpoint (security.login_listen)? --broker takes the "
            "broker's gRPC address (its `listen`); the login port is for `fedbroker login --url`"
        )
    if getattr(ns, "insecure", False) and broker and _speaks_tls(broker):
        return f"{broker} serves TLS: drop --insecure (it is only for a broker run with `serve --insecure`)"
    return ""


def _speaks_tls(address: str) -> bool:
    """Whether the server at ``address`` answers a TLS handshake (certificates not checked: only the protocol)."""
    import socket
    import ssl

    host, _, port = address.rpartition(":")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((host.strip("[]"), int(port)), timeout=2) as sock,
            ctx.wrap_socket(sock) as tls,
        ):
            tls.do_handshake()
        return True
    except ssl.SSLError as exc:  # an alert (e.g. no client certificate) is still TLS speaking
        return "ALERT" in str(exc.reason or "").upper() or "CERTIFICATE" in str(exc.reason or "").upper()
    except OSError:
        return False


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

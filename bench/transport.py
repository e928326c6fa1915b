"""The one place where the benchmarks open gRPC channels, bind ports and name the caller.

Brokers are started only through ``scenarios.processes.Fleet``, with mutual TLS and per-call EdDSA
tokens on, and their channels come from it. This module covers what the Fleet does not: the echo
server of the transport floor and the channel the harness opens to it. The floor runs over mutual
TLS with its own lab CA (P-256 certificates, as the Fleet's), so floor and brokers share the same
transport security; the floor carries no token, because a token check is broker work, and the ratio
is meant to show what the broker adds over its round trips.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from broker.security.pki import load_or_create_authority

#: Channel arguments, as gRPC takes them.
Options = Sequence[tuple[str, Any]]
ECHO_NAME = "bench-echo"
CLIENT_NAME = "bench-client"


def prepare_tls(folder: Path) -> None:
    """A lab CA and certificates for the echo server and its one client, in ``folder/pki``."""
    pki = folder / "pki"
    ca = load_or_create_authority(pki)
    if not (pki / f"{ECHO_NAME}.crt").exists():
        ca.issue_to(pki, ECHO_NAME, server=True)
        ca.issue_to(pki, CLIENT_NAME, server=False)


def _read(folder: Path, name: str) -> bytes:
    return (folder / "pki" / name).read_bytes()


def add_server_port(server: grpc.aio.Server, address: str, folder: Path) -> int:
    """Bind ``server`` to ``address`` (``host:0`` for an ephemeral port) over mutual TLS; returns the port."""
    creds = grpc.ssl_server_credentials(
        [(_read(folder, f"{ECHO_NAME}.key"), _read(folder, f"{ECHO_NAME}.crt"))],
        root_certificates=_read(folder, "ca.crt"),
        require_client_auth=True,
    )
    return int(server.add_secure_port(address, creds))


def client_channel(address: str, folder: Path, options: Options = ()) -> grpc.aio.Channel:
    """A mutual-TLS channel to the echo server the harness started itself (with more channel arguments)."""
    creds = grpc.ssl_channel_credentials(
        root_certificates=_read(folder, "ca.crt"),
        private_key=_read(folder, f"{CLIENT_NAME}.key"),
        certificate_chain=_read(folder, f"{CLIENT_NAME}.crt"),
    )
    return grpc.aio.secure_channel(address, creds, options=[("grpc.ssl_target_name_override", ECHO_NAME), *options])

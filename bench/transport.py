"""The one place where the benchmarks open gRPC channels, bind ports and name the caller.

Brokers are started only through ``scenarios.processes.Fleet``, and their channels come from it;
this module covers what the Fleet does not: the echo server of the transport floor, the channel the
harness opens to it, and the metadata every benchmark call carries. When the Fleet turns mTLS and
tokens on, these three functions are the only ones to change, so the floor keeps the same security
as the brokers it is compared with.
"""

from __future__ import annotations

import grpc

REQUESTER_METADATA = "x-fedbroker-requester"
BENCH_REQUESTER = "bench"


def add_server_port(server: grpc.aio.Server, address: str) -> int:
    """Bind ``server`` to ``address`` (``host:0`` for an ephemeral port); returns the port."""
    return int(server.add_insecure_port(address))


def client_channel(address: str) -> grpc.aio.Channel:
    """A channel to a server the harness started itself (the echo server)."""
    return grpc.aio.insecure_channel(address)


def call_metadata() -> tuple[tuple[str, str], ...]:
    """Metadata on every call the harness makes to a broker: who is asking."""
    return ((REQUESTER_METADATA, BENCH_REQUESTER),)

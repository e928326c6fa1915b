"""What gRPC's channel arguments change in the cost of a round trip (issue 17, item 2: "keep-alive
and channel options tuned").

Each variant is a pair of option sets, one for the client channel and one for the server, on the
transport floor's echo (``bench.echo``: mutual TLS, the Reserve exchange's bytes). Every variant's
server runs at once, and each round measures every variant in turn, so drift in the machine's load
hits them alike. The figures, in the unit of ``grpc_cpu_ms_per_rpc`` (client + server CPU per
exchange):

* ``channel_cpu_ms_per_rpc_<variant>``: ``throughput_clients`` calls in flight (the throughput run's load);
* ``channel_cpu_ms_per_rpc_seq_<variant>``: one call at a time;
* ``channel_rtt_ms_<variant>``: the median round trip of the one-at-a-time calls.

The variants (``variants()``) are the broker's own options (``broker``: message limits, reconnect
pacing; ``broker.security.auth``), each candidate on top of them (``keepalive``: what the pings
cost), and gRPC's defaults (``stock``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path

import grpc

from bench.echo import Echo, echo_request, echo_server
from bench.measures import RPC_TIMEOUT_S, CpuMeter, Figures
from bench.sessions import REPLY_BYTES, REQUEST_BYTES, concurrently
from bench.sizes import Sizes
from bench.stats import median
from bench.transport import Options
from broker.security import auth

#: HTTP/2 keep-alive, a candidate the broker does not use: each side pings a connection quiet for
#: ``KEEPALIVE_TIME_MS`` and gives up after ``KEEPALIVE_TIMEOUT_MS``. It costs nothing measurable
#: here, but on grpcio 1.85 a call to a frozen peer (SIGSTOP) with these options still ran to its
#: deadline (40 s) instead of failing after the ping's timeout, so it buys no liveness either; the
#: broker's call deadlines and its reconciler are what find a frozen lower SP.
KEEPALIVE_TIME_MS, KEEPALIVE_TIMEOUT_MS = 10_000, 5_000
KEEPALIVE_CLIENT: Options = (
    ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
    ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
)
#: The server's side: it pings its callers alike, and lets them ping it that often (its default would
#: call a ping every 10 s abuse and close the connection with GOAWAY ``too_many_pings``).
KEEPALIVE_SERVER: Options = (
    *KEEPALIVE_CLIENT,
    ("grpc.http2.min_recv_ping_interval_without_data_ms", KEEPALIVE_TIME_MS // 2),
    ("grpc.http2.max_ping_strikes", 0),
)


@dataclass(frozen=True)
class Variant:
    """A named pair of option sets: the client channel's and the server's."""

    name: str
    client: Options = ()
    server: Options = ()


def _broker(client: Options = (), server: Options = ()) -> tuple[Options, Options]:
    """The broker's own option sets, with ``client`` and ``server`` on top (gRPC takes the last of a name)."""
    return [*auth.channel_options(), *client], [*auth.SERVER_OPTIONS, *server]


def variants() -> tuple[Variant, ...]:
    """The option sets compared: gRPC's defaults, the broker's, and each candidate over the broker's."""
    both: dict[str, Options] = {
        "no_bdp_probe": [("grpc.http2.bdp_probe", 0)],
        "no_channelz": [("grpc.enable_channelz", 0)],
        "target_latency": [("grpc.optimization_target", "latency")],
        "target_throughput": [("grpc.optimization_target", "throughput")],
    }
    candidates: dict[str, tuple[Options, Options]] = {
        "broker": _broker(),
        "keepalive": _broker(KEEPALIVE_CLIENT, KEEPALIVE_SERVER),
        "no_retries": _broker([("grpc.enable_retries", 0)]),
        **{name: _broker(options, options) for name, options in both.items()},
    }
    return (Variant("stock"), *(Variant(name, c, s) for name, (c, s) in candidates.items()))


async def channel_costs(root: Path, sizes: Sizes) -> Figures:
    """CPU per round trip under each variant's options, interleaved over ``sizes.rounds`` rounds."""
    exchange = echo_request(REQUEST_BYTES, REPLY_BYTES)
    clients = sizes.throughput_clients
    per_client = max(1, sizes.floor_per_round // clients)
    each = variants()
    async with contextlib.AsyncExitStack() as stack:
        echoes: dict[str, Echo] = {}
        for v in each:
            echoes[v.name] = await stack.enter_async_context(
                echo_server(root / f"channel-{v.name}", v.server, v.client)
            )
        for echo in echoes.values():
            for _ in range(sizes.warmup):
                await echo.call(exchange, timeout=RPC_TIMEOUT_S)
        many = {name: CpuMeter([e.pid]) for name, e in echoes.items()}
        seq = {name: CpuMeter([e.pid]) for name, e in echoes.items()}
        rtts: dict[str, list[float]] = {name: [] for name in echoes}
        for r in range(sizes.rounds):
            order = list(echoes.items())
            order = order[r % len(order) :] + order[: r % len(order)]  # a different first each round
            for name, echo in order:
                call = echo.call

                def one(call: grpc.aio.UnaryUnaryMultiCallable = call) -> Awaitable[object]:
                    return call(exchange, timeout=RPC_TIMEOUT_S)  # type: ignore[no-any-return]

                with many[name].span():
                    await concurrently(clients, per_client, one)
                with seq[name].span():
                    for _ in range(sizes.floor_per_round):
                        t0 = time.perf_counter()
                        await call(exchange, timeout=RPC_TIMEOUT_S)
                        rtts[name].append(time.perf_counter() - t0)
    concurrent_calls = sizes.rounds * clients * per_client
    sequential_calls = sizes.rounds * sizes.floor_per_round
    figures: Figures = {}
    for name in many:
        figures[f"channel_cpu_ms_per_rpc_{name}"] = many[name].used * 1000.0 / concurrent_calls
        figures[f"channel_cpu_ms_per_rpc_seq_{name}"] = seq[name].used * 1000.0 / sequential_calls
        figures[f"channel_rtt_ms_{name}"] = median(rtts[name]) * 1000.0
    return figures


__all__ = ["Variant", "channel_costs", "variants"]

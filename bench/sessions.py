"""What a broker-to-broker call could cost if it were not a unary call with a fresh token (issue 17, item 2).

Measured on the transport floor's echo server (``bench.echo``, mutual TLS, the Reserve exchange's
bytes), in the unit of ``grpc_cpu_ms_per_rpc`` (client + server CPU per exchange):

* ``grpc_cpu_ms_per_rpc_concurrent``: unary calls, ``throughput_clients`` in flight (the load of the
  throughput run), against the one-at-a-time figure ``grpc_cpu_ms_per_rpc``;
* ``stream_cpu_ms_per_msg`` and ``stream_rtt_ms``: the same exchange as one request message and one
  reply message on a long-lived bidirectional stream, one at a time (what a north–south session per
  upper/lower pair would carry instead of a call);
* ``stream_cpu_ms_per_msg_concurrent``: the same with ``throughput_clients`` exchanges in flight on
  the one stream (written one after the other, answered in order);
* ``token_cpu_ms_per_call``: minting one call token (the caller) and verifying it (the callee), the
  per-call work a session authenticated once at open would drop; ``token_verify_ms``, the callee's part.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc

from bench.echo import echo_request, echo_server
from bench.measures import RPC_TIMEOUT_S, CpuMeter, Figures
from bench.sizes import Sizes
from bench.stats import median
from broker.security.tokens import TokenMinter, TokenVerifier, TrustedKey
from capability_catalog.signing import generate_key, key_id_of

#: The Reserve exchange's sizes through one broker (``floor_request_bytes``, ``floor_reply_bytes``).
REQUEST_BYTES, REPLY_BYTES = 46, 264


class StreamClient:
    """Exchanges over one bidirectional stream: writes one at a time, replies matched in order."""

    def __init__(self, call: grpc.aio.StreamStreamCall) -> None:
        self._call = call
        self._waiting: collections.deque[asyncio.Future[bytes]] = collections.deque()
        self._writing = asyncio.Lock()
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        while (reply := await self._call.read()) is not grpc.aio.EOF:
            self._waiting.popleft().set_result(bytes(reply))
        for waiter in self._waiting:
            waiter.set_exception(ConnectionError("the stream ended"))

    async def ask(self, request: bytes) -> bytes:
        """One request message; its reply message."""
        answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        async with self._writing:
            self._waiting.append(answer)
            await self._call.write(request)
        return await asyncio.wait_for(answer, RPC_TIMEOUT_S)

    async def close(self) -> None:
        """Half-close and wait for the server's end."""
        await self._call.done_writing()
        await self._reader


async def concurrently(clients: int, per_client: int, one: Callable[[], Awaitable[object]]) -> None:
    """``clients`` workers, each awaiting ``one()`` ``per_client`` times, all at once."""

    async def worker() -> None:
        for _ in range(per_client):
            await one()

    await asyncio.gather(*(worker() for _ in range(clients)))


def _token_costs(n: int) -> tuple[float, float]:
    """CPU ms of minting plus verifying one call token, and of verifying alone (in this process)."""
    key = generate_key()
    minter = TokenMinter(key, "M1")
    trusted = TrustedKey("M1", key.public_key())
    kid = key_id_of(key.public_key())
    verifier = TokenVerifier("L1", lambda k: trusted if k == kid else None)
    tokens = []
    start = time.process_time()
    for _ in range(n):
        tokens.append(minter.mint("L1"))
    minted = time.process_time() - start
    start = time.process_time()
    for token in tokens:
        verifier.verify(token)
    verified = time.process_time() - start
    return (minted + verified) * 1000.0 / n, verified * 1000.0 / n


async def session_costs(root: Path, sizes: Sizes) -> Figures:
    """Unary calls against stream messages on the echo server, and the token work per call."""
    exchange = echo_request(REQUEST_BYTES, REPLY_BYTES)
    n = sizes.rounds * sizes.floor_per_round
    clients = sizes.throughput_clients
    per_round = max(1, n // clients // sizes.rounds)  # each client's exchanges in one round, in flight together
    async with echo_server(root / "session-echo") as echo:
        stream = StreamClient(echo.session(timeout=600))
        for _ in range(sizes.warmup):
            await echo.call(exchange, timeout=RPC_TIMEOUT_S)
            await stream.ask(exchange)
        unary_cpu, stream_cpu = CpuMeter([echo.pid]), CpuMeter([echo.pid])
        unary_many, stream_many = CpuMeter([echo.pid]), CpuMeter([echo.pid])
        rtts: list[float] = []
        for _ in range(sizes.rounds):  # interleaved, so drift in the machine's load hits each alike
            with unary_many.span():
                await concurrently(clients, per_round, lambda: echo.call(exchange))
            with stream_cpu.span():
                for _ in range(sizes.floor_per_round):
                    t0 = time.perf_counter()
                    await stream.ask(exchange)
                    rtts.append(time.perf_counter() - t0)
            with stream_many.span():
                await concurrently(clients, per_round, lambda: stream.ask(exchange))
            with unary_cpu.span():
                for _ in range(sizes.floor_per_round):
                    await echo.call(exchange, timeout=RPC_TIMEOUT_S)
        await stream.close()
    many = sizes.rounds * clients * per_round
    token_ms, verify_ms = await asyncio.to_thread(_token_costs, n)
    return {
        "grpc_cpu_ms_per_rpc_sequential": unary_cpu.used * 1000.0 / n,
        "grpc_cpu_ms_per_rpc_concurrent": unary_many.used * 1000.0 / many,
        "stream_cpu_ms_per_msg": stream_cpu.used * 1000.0 / n,
        "stream_cpu_ms_per_msg_concurrent": stream_many.used * 1000.0 / many,
        "stream_rtt_ms": median(rtts) * 1000.0,
        "token_cpu_ms_per_call": token_ms,
        "token_verify_ms": verify_ms,
    }

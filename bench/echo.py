"""The transport floor's server: a plain ``grpc.aio`` unary echo in its own OS process.

One generic handler, ``/bench.Echo/Echo``, with no (de)serialisation: the request is raw bytes whose
first four (big-endian) name the size of the reply, which is that many zero bytes. The harness sends
requests and asks for replies of the sizes of the broker's own Reserve and Commit messages, so the
floor carries the same bytes over the same stack (grpc.aio, HTTP/2, loopback, one process per side).

Run as ``python -m bench.echo ADDRESS_FILE [OPTIONS_JSON]``: it binds ``127.0.0.1:0``, writes its
address to the file once it serves, and runs until SIGTERM. ``OPTIONS_JSON``, a list of
``[name, value]`` pairs, are the server's channel arguments (``bench.channels`` compares sets of them).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc

from bench import transport
from bench.transport import Options

METHOD = "/bench.Echo/Echo"
#: The same echo as messages on one long-lived bidirectional stream: each request answered in order.
SESSION_METHOD = "/bench.Echo/Session"
_SIZE_BYTES = 4
START_TIMEOUT_S = 15.0


async def _echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return bytes(int.from_bytes(request[:_SIZE_BYTES], "big"))


async def _session(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    async for request in requests:
        yield bytes(int.from_bytes(request[:_SIZE_BYTES], "big"))


def echo_request(request_bytes: int, reply_bytes: int) -> bytes:
    """A request of ``request_bytes`` bytes asking for a reply of ``reply_bytes``."""
    return reply_bytes.to_bytes(_SIZE_BYTES, "big") + bytes(max(0, request_bytes - _SIZE_BYTES))


async def serve(address_file: Path, options: Options = ()) -> None:
    """Serve the echo until SIGTERM; write the bound address to ``address_file``."""
    server = grpc.aio.server(options=list(options))
    handler = grpc.method_handlers_generic_handler(
        "bench.Echo",
        {
            "Echo": grpc.unary_unary_rpc_method_handler(_echo),
            "Session": grpc.stream_stream_rpc_method_handler(_session),
        },
    )
    server.add_generic_rpc_handlers((handler,))
    port = transport.add_server_port(server, "127.0.0.1:0", address_file.parent)
    await server.start()
    tmp = address_file.with_suffix(".tmp")
    tmp.write_text(f"127.0.0.1:{port}\n", encoding="utf-8")
    os.replace(tmp, address_file)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(0.5)


def _spawn(folder: Path, options: Options) -> tuple[subprocess.Popen[bytes], Path]:
    folder.mkdir(parents=True, exist_ok=True)
    transport.prepare_tls(folder)
    address_file = folder / "echo.address"
    address_file.unlink(missing_ok=True)
    with (folder / "echo.log").open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.echo", str(address_file), json.dumps([list(o) for o in options])],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return proc, address_file


@dataclass(frozen=True)
class Echo:
    """A running echo server: the call (request bytes in, reply bytes out), its stream, the server's process id."""

    call: grpc.aio.UnaryUnaryMultiCallable
    session: grpc.aio.StreamStreamMultiCallable
    pid: int


@contextlib.asynccontextmanager
async def echo_server(folder: Path, server_options: Options = (), client_options: Options = ()) -> AsyncIterator[Echo]:
    """Start the echo server (``server_options``); yield it, its channel with ``client_options``; stop it after."""
    proc, address_file = _spawn(folder, server_options)
    channel: grpc.aio.Channel | None = None
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not address_file.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"echo server did not start (see {folder / 'echo.log'})")
            await asyncio.sleep(0.02)
        channel = transport.client_channel(address_file.read_text().strip(), folder, client_options)
        yield Echo(channel.unary_unary(METHOD), channel.stream_stream(SESSION_METHOD), proc.pid)
    finally:
        if channel is not None:
            await channel.close()
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


if __name__ == "__main__":
    given = json.loads(sys.argv[2]) if len(sys.argv) > 2 else []
    asyncio.run(serve(Path(sys.argv[1]), [(str(name), value) for name, value in given]))

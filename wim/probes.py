"""In-namespace probes: latency and loss by ICMP echo, and interface counters, from a worker process.

Like link state (``wim.linkwatch``), probing runs in a worker of its own, ``python -m wim.probes``:
the broker never forks or enters a namespace itself. The worker opens each socket *inside* the
namespace it probes (``setns`` on its one thread, the socket, ``setns`` back: a socket stays in the
namespace it was made in), so one process probes every namespace of an agent. Requests and answers
are JSON lines, matched by id::

    stdin  {"id": 1, "op": "ping", "ns": "fb3k9x-probe-…", "dst": "169.254.0.2", "count": 3, "timeout_s": 0.5}
    stdout {"id": 1, "sent": 3, "received": 3, "rtt_ms": [0.05, 0.04, 0.04]}
    stdin  {"id": 2, "op": "counters", "ends": [["fb3k9x-pop-…", "fb3k9xh…"], …]}
    stdout {"id": 2, "counters": [[1234, 999, 0, 0], null, …]}   rx/tx bytes, rx/tx dropped; null: not there
    stdout {"id": 3, "error": "…"}      a request that could not be done

A ping round is bounded: ``count`` echo requests, one after another, each waiting at most
``timeout_s`` for its reply (raw ICMP, root). Counters are the kernel's 64-bit interface statistics
(netlink ``RTM_GETLINK``, ``IFLA_STATS64``), one dump per namespace. The worker ends when its stdin
closes, so it never outlives its broker.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import statistics
import struct
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from wim.netlink import entered
from wim.workers import LineWorker

log = logging.getLogger(__name__)
#: Bounds of one ping round, whatever a caller asks.
MAX_COUNT = 20
MAX_TIMEOUT_S = 5.0
#: How long the broker's side waits for any answer before it calls the worker stuck.
ANSWER_TIMEOUT_S = 30.0
ICMP_ECHO_REQUEST = 8
ICMP_ECHO_REPLY = 0
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
COUNTER_FIELDS = ("rx_bytes", "tx_bytes", "rx_dropped", "tx_dropped")


@dataclass(frozen=True)
class PingResult:
    """One ping round: requests sent, replies received, and each reply's round-trip time."""

    sent: int
    received: int
    rtt_ms: tuple[float, ...] = ()

    @property
    def loss(self) -> float:
        """The share of requests that got no reply (0..1)."""
        return 1.0 - self.received / self.sent if self.sent else 0.0

    @property
    def one_way_ms(self) -> float | None:
        """Half the median round trip (the one-way latency a segment's share is set in); None without a reply.

        The median: one reply delayed by something else (a busy host) does not make a round breach,
        a delay every request meets (a queue on the path) does.
        """
        return statistics.median(self.rtt_ms) / 2 if self.rtt_ms else None


@dataclass(frozen=True)
class Counters:
    """The kernel's counters of one interface, or the sums over several."""

    rx_bytes: int = 0
    tx_bytes: int = 0
    rx_dropped: int = 0
    tx_dropped: int = 0

    @property
    def dropped(self) -> int:
        """Frames dropped at the interface(s), both directions."""
        return self.rx_dropped + self.tx_dropped

    def __add__(self, other: Counters) -> Counters:
        return Counters(*(getattr(self, k) + getattr(other, k) for k in COUNTER_FIELDS))


def total(found: Iterable[Counters | None]) -> Counters:
    """The sums over the interfaces that were found."""
    out = Counters()
    for c in found:
        if c is not None:
            out += c
    return out


class ProbeError(RuntimeError):
    """The worker could not do a probe (no such namespace, the worker died, no answer)."""


class Prober(LineWorker):
    """The broker's side of the probe worker: ``ping`` and ``counters``, each awaited on its own."""

    module = "wim.probes"

    def __init__(self) -> None:
        super().__init__()
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next = 0

    async def _ask(self, msg: dict[str, object]) -> dict[str, Any]:
        self._next += 1
        ident = self._next
        answer = self._pending[ident] = asyncio.get_running_loop().create_future()
        try:
            await self._send({"id": ident, **msg})
            got: dict[str, Any] = await asyncio.wait_for(answer, ANSWER_TIMEOUT_S)
        except (TimeoutError, ConnectionError) as exc:
            raise ProbeError(f"the probe worker did not answer ({exc or 'timeout'})") from None
        finally:
            self._pending.pop(ident, None)
        if "error" in got:
            raise ProbeError(str(got["error"]))
        return got

    async def ping(self, ns: str, dst: str, count: int = 3, timeout_s: float = 0.5) -> PingResult:
        """``count`` echo requests from namespace ``ns`` to ``dst``, one after another."""
        got = await self._ask({"op": "ping", "ns": ns, "dst": dst, "count": count, "timeout_s": timeout_s})
        return PingResult(int(got["sent"]), int(got["received"]), tuple(float(x) for x in got["rtt_ms"]))

    async def counters(self, ends: Sequence[tuple[str, str]]) -> list[Counters | None]:
        """The counters of each (namespace, interface) in ``ends``, in order; None for one not found."""
        got = await self._ask({"op": "counters", "ends": [list(e) for e in ends]})
        return [None if row is None else Counters(*(int(x) for x in row)) for row in got["counters"]]

    def _heard(self, raw: dict[str, Any]) -> None:
        try:
            waiting = self._pending.get(int(raw["id"]))
        except (KeyError, TypeError, ValueError):
            return
        if waiting is not None and not waiting.done():
            waiting.set_result(raw)

    def _ended(self) -> None:
        for waiting in self._pending.values():  # the worker died: nobody answers these
            if not waiting.done():
                waiting.set_result({"error": "the probe worker ended"})


# --- the worker process ----------------------------------------------------------------------------


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    acc: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while acc >> 16:
        acc = (acc & 0xFFFF) + (acc >> 16)
    return ~acc & 0xFFFF


def echo_request(ident: int, seq: int, payload: bytes) -> bytes:
    """An ICMP echo request with its checksum."""
    head = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, 0, ident, seq)
    return struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, checksum(head + payload), ident, seq) + payload


def echo_reply_of(packet: bytes) -> tuple[int, int] | None:
    """(identifier, sequence) of an IPv4 packet that carries an ICMP echo reply; None for anything else."""
    if len(packet) < 20:
        return None
    start = (packet[0] & 0x0F) * 4
    if len(packet) < start + 8 or packet[start] != ICMP_ECHO_REPLY:
        return None
    ident, seq = struct.unpack_from("!HH", packet, start + 4)
    return ident, seq


_ident = os.getpid() & 0xFFFF


async def _readable(sock: socket.socket, wait_s: float) -> bool:
    """Whether ``sock`` has something to read within ``wait_s``."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(sock.fileno(), wake)
    try:
        await asyncio.wait_for(ready, wait_s)
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(sock.fileno())
    return True


def _arrived_ns(ancillary: list[tuple[int, int, bytes]]) -> int | None:
    """The kernel's receive time (``SO_TIMESTAMPNS``, wall clock) in the ancillary data, if there."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            sec, nsec = struct.unpack_from("qq", data)
            return int(sec * 1_000_000_000 + nsec)
    return None


async def ping(ns: str, dst: str, count: int, timeout_s: float) -> dict[str, object]:
    """``count`` echo requests to ``dst`` from a raw socket made inside ``ns``, each awaited at most ``timeout_s``.

    A reply's time is the kernel's receive timestamp, so a worker that wakes late neither adds to it
    nor loses a reply that came in time.
    """
    global _ident
    count = max(1, min(int(count), MAX_COUNT))
    timeout_s = max(0.01, min(float(timeout_s), MAX_TIMEOUT_S))
    with entered(ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    sock.setblocking(False)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    loop = asyncio.get_running_loop()
    _ident = (_ident + 1) & 0xFFFF  # one identifier per round: a late reply of an earlier round never counts
    ident = _ident
    rtts: list[float] = []
    try:
        for seq in range(count):
            packet = echo_request(ident, seq, struct.pack("!d", time.time()))
            sent_ns, sent_at = time.time_ns(), time.monotonic()
            await loop.sock_sendto(sock, packet, (dst, 0))
            deadline = sent_at + timeout_s
            while True:
                try:  # what is queued first: a reply that came in time counts, however late this wakes
                    data, ancillary, _, _ = sock.recvmsg(2048, 256)
                except BlockingIOError:
                    left = deadline - time.monotonic()
                    if left <= 0 or not await _readable(sock, left):
                        break
                    continue
                if echo_reply_of(data) == (ident, seq):
                    rtt_ms = ((_arrived_ns(ancillary) or time.time_ns()) - sent_ns) / 1e6
                    if rtt_ms <= timeout_s * 1000:
                        rtts.append(max(0.0, rtt_ms))
                    break
                if time.monotonic() > deadline + timeout_s:  # a stream of other ICMP: stop reading it all
                    break
    finally:
        sock.close()
    return {"sent": count, "received": len(rtts), "rtt_ms": [round(r, 4) for r in rtts]}


def read_counters(ends: Sequence[tuple[str, str]]) -> list[list[int] | None]:
    """``COUNTER_FIELDS`` of each interface (None when it or its namespace is not there), one dump per namespace."""
    from pyroute2 import IPRoute

    stats: dict[tuple[str, str], list[int]] = {}
    for ns in sorted({ns for ns, _ in ends}):
        try:
            with entered(ns):
                ipr = IPRoute()
        except OSError:  # the namespace is gone: none of its interfaces is there
            continue
        try:
            for link in ipr.get_links():
                raw = dict(link.get_attr("IFLA_STATS64") or {})
                stats[(ns, str(link.get_attr("IFLA_IFNAME")))] = [int(raw.get(k, 0)) for k in COUNTER_FIELDS]
        finally:
            ipr.close()
    return [stats.get(end) for end in ends]


async def _answer(raw: dict[str, Any]) -> None:
    from pyroute2.netlink.exceptions import NetlinkError

    ident = raw.get("id")
    try:
        if raw.get("op") == "ping":
            out = await ping(str(raw["ns"]), str(raw["dst"]), int(raw["count"]), float(raw["timeout_s"]))
        elif raw.get("op") == "counters":
            ends = [(str(ns), str(i)) for ns, i in raw["ends"]]
            # In a thread of its own: pyroute2's blocking socket runs an event loop, and setns is per thread.
            out = {"counters": await asyncio.to_thread(read_counters, ends)}
        else:
            out = {"error": f"unknown op {str(raw.get('op'))[:20]!r}"}
    except (OSError, RuntimeError, ValueError, KeyError, TypeError, NetlinkError) as exc:
        out = {"error": f"{type(exc).__name__}: {exc}"}
    sys.stdout.write(json.dumps({"id": ident, **out}) + "\n")
    sys.stdout.flush()


async def _serve() -> None:
    import pyroute2  # noqa: F401 - paid at start (the broker warms the worker up), not at the first probe

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    running: set[asyncio.Task[None]] = set()
    while line := await reader.readline():
        try:
            raw = json.loads(line)
        except ValueError:
            continue
        if not isinstance(raw, dict):
            continue
        task = loop.create_task(_answer(raw))
        running.add(task)
        task.add_done_callback(running.discard)
    for task in running:
        task.cancel()


if __name__ == "__main__":
    asyncio.run(_serve())

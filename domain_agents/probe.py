"""Proof by traffic: a probe that runs inside a slice's endpoint namespaces and reads its functions' counters.

Four checks, each bounded in packets and time, all on namespaces the data plane made:

* ``reachability`` — UDP request/answer from the source to the destination and back;
* ``order`` — for each function in turn, its ``out`` interface is taken down and a burst is sent:
  exactly the functions up to that one count the burst, those after it count nothing; with all up,
  every function counts it. Packets therefore pass the functions in chain order;
* ``isolation`` — an endpoint of one slice gets no answer from an endpoint of another, whatever
  their addresses (the two slices may use the same customer subnet);
* ``shaping`` — a UDP blast at twice the slice's rate (about 1.5 s, at most 5 s) arrives at the destination at
  the slice's rate, within ±20 % (read from the destination interface's kernel counters).

The traffic is made by short-lived child processes (``python -m domain_agents.probe --netns NS ...``)
that enter the namespace with ``setns`` before opening a socket; the parent only starts them and
reads their one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/var/run/netns"
PROBE_PORT = 47000
SHAPING_TOLERANCE = 0.20
#: Bytes a UDP datagram adds on the way to the tbf qdisc: Ethernet 14 + IPv4 20 + UDP 8.
FRAME_OVERHEAD = 42
PAYLOAD = 1200
ORDER_BURST = 40
CHILD_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class ProbeEndpoint:
    """An endpoint of a slice: its terminal id, its namespace, its bare address, its slice interface."""

    terminal: str
    netns: str
    address: str
    interface: str


@dataclass(frozen=True)
class ProbeFunction:
    """A network function of a slice: its type, domain, namespace and two interfaces."""

    type: str
    domain: str
    netns: str
    in_if: str
    out_if: str


@dataclass(frozen=True)
class SliceView:
    """What the probe needs of one slice."""

    name: str
    src: ProbeEndpoint
    dst: ProbeEndpoint
    functions: tuple[ProbeFunction, ...]
    bandwidth_mbps: int


@dataclass(frozen=True)
class ProbeResult:
    """The outcome of one check; ``value`` carries a measurement when there is one (Mbit/s for shaping)."""

    check: str
    slice: str
    passed: bool
    detail: str
    value: float | None = None


# --- child processes ---------------------------------------------------------------------------------


async def _spawn(ns: str, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "domain_agents.probe",
        "--netns",
        ns,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def _finish(proc: asyncio.subprocess.Process, timeout_s: float = CHILD_TIMEOUT_S) -> dict[str, float]:
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=timeout_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise RuntimeError(f"probe child did not finish within {timeout_s:g} s") from None
    if proc.returncode != 0:
        raise RuntimeError(f"probe child failed ({proc.returncode}): {err.decode(errors='replace').strip()[-400:]}")
    lines = [ln for ln in out.decode().splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError("probe child printed no result")
    result: dict[str, float] = json.loads(lines[-1])
    return result


async def _server(ns: str, *args: str) -> asyncio.subprocess.Process:
    """Start a child that binds first and says ``ready`` before the caller sends anything."""
    proc = await _spawn(ns, *args)
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=CHILD_TIMEOUT_S)
    except TimeoutError:
        line = b""
    if line.strip() != b"ready":
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        _, err = await proc.communicate()
        raise RuntimeError(f"probe server in {ns} did not start: {err.decode(errors='replace').strip()[-400:]}")
    return proc


async def _ask(src: ProbeEndpoint, dst: ProbeEndpoint, count: int, timeout_s: float) -> int:
    """Answers ``src`` got from an echo server in ``dst``'s namespace for ``count`` requests."""
    server = await _server(dst.netns, "echo", "--bind", dst.address, "--seconds", str(count * timeout_s + 3))
    try:
        # Only answers signed with the server's namespace count: another namespace holding the same
        # address (slices may overlap) never passes for the one asked.
        client = await _spawn(
            src.netns,
            "ask",
            "--to",
            dst.address,
            "--count",
            str(count),
            "--timeout",
            str(timeout_s),
            "--expect",
            dst.netns,
        )
        result = await _finish(client)
    finally:
        with contextlib.suppress(ProcessLookupError):
            server.kill()
        await server.wait()
    return int(result["replies"])


# --- checks --------------------------------------------------------------------------------------------


async def reachability(view: SliceView, count: int = 5) -> ProbeResult:
    """Source and destination answer each other (at most one request of ``count`` may go unanswered)."""
    there, back = await asyncio.gather(_ask(view.src, view.dst, count, 0.5), _ask(view.dst, view.src, count, 0.5))
    ok = there >= count - 1 and back >= count - 1
    detail = (
        f"{view.src.terminal} {view.src.address} → {view.dst.terminal} {view.dst.address}: {there}/{count} answered;"
        f" back: {back}/{count}"
    )
    return ProbeResult("reachability", view.name, ok, detail)


# The parent side imports ``wim.netlink`` (and so pyroute2) where it needs it: a child only enters a
# namespace and opens a socket, and two dozen children each importing pyroute2 would cost seconds.


def _read_counts(functions: Sequence[ProbeFunction]) -> list[int]:
    from wim import netlink

    return [netlink.counters(f.netns, f.in_if)["rx_packets"] for f in functions]


async def _function_counts(view: SliceView) -> list[int]:
    from wim import netlink

    return await netlink.call(_read_counts, view.functions)


async def _burst_counts(view: SliceView, burst: int) -> list[int]:
    before = await _function_counts(view)
    sender = await _spawn(view.src.netns, "send", "--to", view.dst.address, "--count", str(burst))
    await _finish(sender)
    await asyncio.sleep(0.2)  # let the last frames cross the chain
    after = await _function_counts(view)
    return [b - a for a, b in zip(before, after, strict=True)]


async def order(view: SliceView, burst: int = ORDER_BURST) -> ProbeResult:
    """Packets pass the functions in chain order: blocking after function k, only functions 0..k count."""
    if not view.functions:
        return ProbeResult("order", view.name, False, "the slice has no functions to check")
    from wim import netlink

    noise = burst // 4  # ARP and the like may cross a function; a burst is far more
    lines = []
    ok = True
    for k, fn in enumerate(view.functions):
        await netlink.call(netlink.set_up, fn.netns, fn.out_if, False)
        try:
            counts = await _burst_counts(view, burst)
        finally:
            await netlink.call(netlink.set_up, fn.netns, fn.out_if, True)
        want = [j <= k for j in range(len(view.functions))]
        good = all((c >= burst) if reached else (c <= noise) for c, reached in zip(counts, want, strict=True))
        ok = ok and good
        lines.append(f"stopped after {fn.type}@{fn.domain}: counts {counts}{'' if good else ' (wrong)'}")
    await asyncio.sleep(0.3)  # the bridge port of the function that was down forwards again
    counts = await _burst_counts(view, burst)
    good = all(c >= burst for c in counts)
    ok = ok and good
    chain = " → ".join(f"{f.type}@{f.domain}" for f in view.functions)
    lines.append(f"all up: counts {counts}{'' if good else ' (wrong)'}")
    return ProbeResult("order", view.name, ok, f"{chain}, burst {burst}: " + "; ".join(lines))


async def isolation(a: SliceView, b: SliceView, count: int = 3) -> ProbeResult:
    """No endpoint of ``a`` gets an answer from an endpoint of ``b``, and the other way round."""
    pairs = [(a.src, b.dst), (a.dst, b.src), (b.src, a.dst), (b.dst, a.src)]
    # Each pair has its own server namespace, so the pairs run at once.
    answers = await asyncio.gather(*(_ask(x, y, count, 0.3) for x, y in pairs))
    leaked = sum(answers)
    lines = [
        f"{x.terminal} {x.address} → {y.terminal} {y.address}: {got}/{count}"
        for (x, y), got in zip(pairs, answers, strict=True)
    ]
    return ProbeResult("isolation", f"{a.name}|{b.name}", leaked == 0, f"{a.name} vs {b.name}: " + "; ".join(lines))


def _rx_sample(ns: str, ifname: str) -> tuple[float, int]:
    from wim import netlink

    return time.monotonic(), netlink.counters(ns, ifname)["rx_bytes"]


async def shaping(view: SliceView, window_s: float = 1.0, tolerance: float = SHAPING_TOLERANCE) -> ProbeResult:
    """A blast at twice the rate arrives at the slice's rate within ``tolerance``.

    The arrival rate is read from the kernel's counters of the destination's interface over a window
    that opens once the blast flows (the bucket's first burst spent), so a slow or starved receiving
    process does not lower it. The blast is bounded: it stops after at most ``window_s`` + 4 s.
    """
    from wim import netlink

    asked, dst = view.bandwidth_mbps, view.dst
    sink = await _server(dst.netns, "sink", "--bind", dst.address, "--seconds", str(window_s + 5))
    blaster = await _spawn(
        view.src.netns, "blast", "--to", dst.address, "--mbps", str(2 * asked), "--seconds", str(window_s + 4)
    )
    try:
        _, first = await netlink.call(_rx_sample, dst.netns, dst.interface)
        deadline = time.monotonic() + 4.0
        while (await netlink.call(_rx_sample, dst.netns, dst.interface))[1] - first < 64 * 1024:
            if time.monotonic() > deadline:
                return ProbeResult("shaping", view.name, False, "the blast did not arrive within 4 s", 0.0)
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        t1, b1 = await netlink.call(_rx_sample, dst.netns, dst.interface)
        await asyncio.sleep(window_s)
        t2, b2 = await netlink.call(_rx_sample, dst.netns, dst.interface)
    finally:
        for proc in (blaster, sink):
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    mbps = (b2 - b1) * 8 / (t2 - t1) / 1e6
    ok = abs(mbps - asked) <= tolerance * asked
    detail = (
        f"asked {asked} Mbit/s; offered {2 * asked} Mbit/s; received {mbps:.1f} Mbit/s over {t2 - t1:.2f} s"
        f" ({(mbps - asked) / asked:+.0%}, tolerance ±{tolerance:.0%})"
    )
    return ProbeResult("shaping", view.name, ok, detail, mbps)


CHECKS = ("reachability", "order", "isolation", "shaping")


async def probe(views: Sequence[SliceView], checks: Sequence[str] = CHECKS) -> list[ProbeResult]:
    """Run the checks on every slice (isolation on every pair), one after another."""
    results: list[ProbeResult] = []
    for view in views:
        if "reachability" in checks:
            results.append(await reachability(view))
        if "order" in checks and view.functions:
            results.append(await order(view))
    if "isolation" in checks:
        for i, a in enumerate(views):
            for b in views[i + 1 :]:
                results.append(await isolation(a, b))
    if "shaping" in checks:
        for view in views:
            results.append(await shaping(view))
    return results


# --- the child side: runs inside a namespace ------------------------------------------------------------


def _child(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m domain_agents.probe")
    parser.add_argument("--netns", required=True)
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("echo", "sink"):
        p = sub.add_parser(name)
        p.add_argument("--bind", required=True)
        p.add_argument("--seconds", type=float, required=True)
    p = sub.add_parser("ask")
    p.add_argument("--to", required=True)
    p.add_argument("--expect", required=True, help="the namespace whose answers count")
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--timeout", type=float, required=True)
    p = sub.add_parser("send")
    p.add_argument("--to", required=True)
    p.add_argument("--count", type=int, required=True)
    p = sub.add_parser("blast")
    p.add_argument("--to", required=True)
    p.add_argument("--mbps", type=float, required=True)
    p.add_argument("--seconds", type=float, required=True)
    ns = parser.parse_args(argv)

    _enter(ns.netns)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        if ns.cmd in ("echo", "sink"):
            sock.bind((ns.bind, PROBE_PORT))
            sock.settimeout(0.1)
            print("ready", flush=True)
            out = _echo(sock, ns.seconds, ns.netns) if ns.cmd == "echo" else _sink(sock, ns.seconds)
        elif ns.cmd == "ask":
            out = _asker(sock, ns.to, ns.count, ns.timeout, ns.expect)
        elif ns.cmd == "send":
            for i in range(ns.count):
                sock.sendto(f"burst {i}".encode().ljust(64, b"."), (ns.to, PROBE_PORT))
                time.sleep(0.002)
            out = {"sent": ns.count}
        else:
            out = _blast(sock, ns.to, ns.mbps, ns.seconds)
    finally:
        sock.close()
    print(json.dumps(out), flush=True)
    return 0


def _enter(name: str) -> None:
    """Move this (single-threaded) process into the named network namespace."""
    fd = os.open(os.path.join(NETNS_RUN_DIR, name), os.O_RDONLY)
    try:
        if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into {name}: {os.strerror(err)}")
    finally:
        os.close(fd)


def _echo(sock: socket.socket, seconds: float, tag: str) -> dict[str, float]:
    echoed = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            data, peer = sock.recvfrom(2048)
        except TimeoutError:
            continue
        sock.sendto(data + b"|" + tag.encode(), peer)
        echoed += 1
    return {"echoed": echoed}


def _sink(sock: socket.socket, seconds: float) -> dict[str, float]:
    packets, nbytes, first, last = 0, 0, 0.0, 0.0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            data = sock.recv(4096)
        except TimeoutError:
            continue
        now = time.monotonic()
        if packets == 0:
            first = now
        last = now
        packets += 1
        nbytes += len(data)
    return {"packets": packets, "bytes": nbytes, "first": first, "last": last}


def _asker(sock: socket.socket, to: str, count: int, timeout: float, expect: str) -> dict[str, float]:
    replies = 0
    for i in range(count):
        nonce = f"ask {os.getpid()} {i}".encode()
        sock.sendto(nonce, (to, PROBE_PORT))
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                data = sock.recv(2048)
            except (TimeoutError, ConnectionRefusedError):
                break
            if data == nonce + b"|" + expect.encode():
                replies += 1
                break
    return {"sent": count, "replies": replies}


def _blast(sock: socket.socket, to: str, mbps: float, seconds: float) -> dict[str, float]:
    payload = b"x" * PAYLOAD
    interval = (PAYLOAD + FRAME_OVERHEAD) * 8 / (mbps * 1e6)
    start = time.monotonic()
    sent = 0
    while (now := time.monotonic()) - start < seconds:
        due = start + sent * interval
        if now < due:
            time.sleep(min(due - now, 0.001))
            continue
        with contextlib.suppress(BlockingIOError, ConnectionRefusedError):
            sock.sendto(payload, (to, PROBE_PORT))
        sent += 1
    took = time.monotonic() - start
    return {"packets": sent, "mbps": sent * (PAYLOAD + FRAME_OVERHEAD) * 8 / took / 1e6}


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))

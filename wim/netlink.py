"""Netlink plumbing of fedbroker's data plane: network namespaces, veths, bridges, over pyroute2.

What every object is called (the installation's prefix, namespace and interface names) is
``wim.names``, re-exported here.

All calls here block. Async callers run them with ``call``, in one worker process of their own
(``python -m wim.netlink``): pyroute2 forks to enter namespaces, and a fork of a process that runs
gRPC threads aborts, so a broker never forks itself. One worker also serialises every change this
process makes.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import errno
import os
import pickle
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from pyroute2 import IPRoute, netns
from pyroute2.netlink.exceptions import NetlinkError

# Re-exported: callers that use netlink name its objects and check prefixes through it.
from wim.names import FAMILY_PREFIX as FAMILY_PREFIX
from wim.names import Names as Names
from wim.names import check_prefix as check_prefix

#: Slices carry ordinary Ethernet frames; underlays are wider so that VXLAN needs no fragmentation.
SLICE_MTU = 1500
UNDERLAY_MTU = 1600
RT_SCOPE_LINK = 253
CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/var/run/netns"
NUD_PERMANENT = 0x80
#: arp_ignore 8: answer no ARP request at all (a probe end talks to its one peer by a static entry).
ARP_IGNORE_ALL = 8


T = TypeVar("T")
_HEADER = struct.Struct("!I")


class _Worker:
    """The data-plane worker: ``python -m wim.netlink`` answering pickled calls over its stdin and stdout.

    It imports little (no gRPC), and it ends when its stdin closes, so it never outlives its broker,
    even one killed with SIGKILL. Both ends of the pipe are this package's own code.
    """

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def _start(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "wim.netlink"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
            )
            atexit.register(self.stop)
        return self._proc

    def request(self, fn: Callable[..., T], args: tuple[object, ...]) -> T:
        """Run ``fn(*args)`` in the worker; its exception is raised here."""
        with self._lock:
            proc = self._start()
            assert proc.stdin is not None and proc.stdout is not None
            data = pickle.dumps((fn, args))
            try:
                proc.stdin.write(_HEADER.pack(len(data)) + data)
                proc.stdin.flush()
                ok, value = _receive(proc.stdout)
            except (OSError, EOFError) as exc:
                self.stop()
                raise OSError(f"the data-plane worker process died ({exc})") from None
        if ok:
            return value  # type: ignore[no-any-return]
        raise value

    def stop(self) -> None:
        """Close the worker's stdin (it exits) and reap it."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            if proc.stdin is not None:
                proc.stdin.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _receive(stream: Any) -> Any:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise EOFError("no answer")
    (size,) = _HEADER.unpack(header)
    return pickle.loads(stream.read(size))  # noqa: S301 - our own worker over a private pipe


_worker = _Worker()


async def call(fn: Callable[..., T], *args: object) -> T:
    """Run a blocking netlink function (module-level, picklable arguments) in the data-plane worker."""
    return await asyncio.to_thread(_worker.request, fn, args)


def shutdown_worker() -> None:
    """Stop the worker process (a new one starts with the next ``call``)."""
    _worker.stop()


def _serve() -> None:
    """The worker's loop: one pickled call in, one pickled ``(ok, value)`` out, until stdin closes."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but answers goes to the pipe
    while True:
        try:
            fn, args = _receive(stdin)
        except EOFError:
            return
        try:
            out: tuple[bool, object] = (True, fn(*args))
        except Exception as exc:
            out = (False, exc)
        try:
            data = pickle.dumps(out)
            pickle.loads(data)  # noqa: S301 - an exception that cannot be rebuilt is sent as text
        except Exception:
            data = pickle.dumps((False, RuntimeError(f"{type(out[1]).__name__}: {out[1]}")))
        stdout.write(_HEADER.pack(len(data)) + data)
        stdout.flush()


# --- namespaces ----------------------------------------------------------------------------------


def namespaces() -> list[str]:
    """Names of every named network namespace (``ip netns list``)."""
    return sorted(str(n) for n in netns.listnetns())


def ns_exists(name: str) -> bool:
    """True when the named namespace exists."""
    return name in netns.listnetns()


def ensure_ns(name: str) -> bool:
    """Create the namespace (with its loopback up) unless it exists; True when it was created."""
    if ns_exists(name):
        return False
    try:
        netns.create(name)
    except OSError as exc:
        if exc.errno != errno.EEXIST:
            raise
        return False
    _quiet_ipv6(name)
    with in_ns(name) as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
    return True


def _quiet_ipv6(name: str) -> None:
    """Switch IPv6 off in the namespace before any interface exists.

    Slices here carry IPv4; IPv6 would make every bridge and veth send router solicitations and
    multicast reports for seconds, noise that crosses the functions and blurs the probe's counts.
    """
    netns.pushns(name)
    try:
        for scope in ("all", "default"):
            with (
                contextlib.suppress(FileNotFoundError),
                open(f"/proc/sys/net/ipv6/conf/{scope}/disable_ipv6", "w") as fh,
            ):
                fh.write("1")
    finally:
        netns.popns()


def remove_ns(name: str) -> bool:
    """Remove the namespace (and every interface in it); True when it existed."""
    if not ns_exists(name):
        return False
    with contextlib.suppress(FileNotFoundError):
        netns.remove(name)
    return True


_libc: Any = None


def _setns(fd: int, what: str) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns into {what}: {os.strerror(err)}")


@contextlib.contextmanager
def entered(name: str) -> Iterator[None]:
    """Run the block in the named namespace (this thread only), then come back (``FileNotFoundError``: no such one).

    A socket made inside stays in that namespace after the block. Keep the block to socket creation:
    nothing in it may wait on another thread.
    """
    target = os.open(os.path.join(NETNS_RUN_DIR, name), os.O_RDONLY)
    try:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            _setns(target, name)
            try:
                yield
            finally:
                _setns(home, "this thread's own namespace")
        finally:
            os.close(home)
    finally:
        os.close(target)


@contextlib.contextmanager
def in_ns(name: str) -> Iterator[Any]:
    """A netlink socket inside an existing namespace (``FileNotFoundError`` when it does not exist).

    Made by entering the namespace for the socket's creation (``entered``), not by pyroute2's
    ``netns=``, which forks a helper per socket: ten times slower, and under load its helper can
    miss pyroute2's answer deadline ("no response from the child").
    """
    with entered(name):
        ipr = IPRoute()
    try:
        yield ipr
    finally:
        ipr.close()


# --- links -----------------------------------------------------------------------------------------


def link_index(ipr: Any, ifname: str) -> int | None:
    """The interface's index in the socket's namespace, or None."""
    found = ipr.link_lookup(ifname=ifname)
    return int(found[0]) if found else None


def link_exists(ns: str, ifname: str) -> bool:
    """True when the namespace exists and holds the interface."""
    if not ns_exists(ns):
        return False
    try:
        with in_ns(ns) as ipr:
            return link_index(ipr, ifname) is not None
    except FileNotFoundError:
        return False


def ensure_bridge(ns: str, ifname: str) -> int:
    """Create an up bridge unless it exists; return its index."""
    with in_ns(ns) as ipr:
        idx = link_index(ipr, ifname)
        if idx is None:
            ipr.link("add", ifname=ifname, kind="bridge")
            idx = link_index(ipr, ifname)
            assert idx is not None
        ipr.link("set", index=idx, state="up")
        return idx


def ensure_veth(ns_a: str, name_a: str, ns_b: str, name_b: str, mtu: int = SLICE_MTU) -> None:
    """A veth pair with one end in each namespace, both up; kept as is when both ends exist.

    An end ``a`` without its peer in ``ns_b`` is a leftover (``ns_b`` was removed and made again
    before the kernel's asynchronous clean-up of the old namespace reached this pair): it is
    deleted and the pair made anew.
    """
    with in_ns(ns_a) as ipr:
        idx = link_index(ipr, name_a)
        if idx is not None:
            if link_exists(ns_b, name_b):
                return
            _delete(ipr, idx)
        ipr.link("add", ifname=name_a, kind="veth", peer={"ifname": name_b, "net_ns_fd": ns_b})
        idx = link_index(ipr, name_a)
        assert idx is not None
        ipr.link("set", index=idx, mtu=mtu, state="up")
    with in_ns(ns_b) as ipr:
        idx = link_index(ipr, name_b)
        assert idx is not None
        ipr.link("set", index=idx, mtu=mtu, state="up")


def attach(ns: str, ifname: str, bridge: str) -> None:
    """Make the interface a port of the bridge, both in ``ns``."""
    with in_ns(ns) as ipr:
        idx, br = link_index(ipr, ifname), link_index(ipr, bridge)
        if idx is None or br is None:
            raise FileNotFoundError(f"{ifname if idx is None else bridge} is not in namespace {ns}")
        ipr.link("set", index=idx, master=br, state="up")


def _on_link(ns: str, ifname: str, act: Callable[[Any, int], bool]) -> bool:
    """``act(socket, index)`` when the namespace and the interface exist; False otherwise."""
    if not ns_exists(ns):
        return False
    try:
        with in_ns(ns) as ipr:
            idx = link_index(ipr, ifname)
            return False if idx is None else act(ipr, idx)
    except FileNotFoundError:
        return False


def _delete(ipr: Any, idx: int) -> bool:
    try:
        ipr.link("del", index=idx)
    except NetlinkError as exc:
        if exc.code == errno.ENODEV:
            return False
        raise
    return True


def delete_link(ns: str, ifname: str) -> bool:
    """Delete the interface (a veth takes its peer along); True when it existed."""
    return _on_link(ns, ifname, _delete)


def set_up(ns: str, ifname: str, up: bool) -> None:
    """Bring an interface up or down (a function that forwards nothing, for the probe)."""
    with in_ns(ns) as ipr:
        idx = link_index(ipr, ifname)
        if idx is None:
            raise FileNotFoundError(f"{ifname} is not in namespace {ns}")
        ipr.link("set", index=idx, state="up" if up else "down")


def counters(ns: str, ifname: str) -> dict[str, int]:
    """The interface's 64-bit counters (``rx_packets``, ``tx_packets``, ``rx_bytes``, ...)."""
    with in_ns(ns) as ipr:
        idx = link_index(ipr, ifname)
        if idx is None:
            raise FileNotFoundError(f"{ifname} is not in namespace {ns}")
        stats = ipr.get_links(idx)[0].get_attr("IFLA_STATS64")
        return {k: int(v) for k, v in dict(stats).items() if isinstance(v, int)}


def is_up(ns: str, ifname: str) -> bool:
    """True when the interface exists and is administratively up."""
    return _on_link(ns, ifname, lambda ipr, idx: bool(ipr.get_links(idx)[0]["flags"] & 1))


def set_address(ns: str, ifname: str, cidr: str) -> None:
    """Give the interface an address and send everything else on-link through it.

    A slice is one L2 segment whose endpoints hold addresses from different pieces of the customer
    subnet, so an endpoint reaches its peers through an on-link default route.
    """
    address, _, plen = cidr.partition("/")
    with in_ns(ns) as ipr:
        idx = link_index(ipr, ifname)
        if idx is None:
            raise FileNotFoundError(f"{ifname} is not in namespace {ns}")
        have = {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=idx)}
        if address not in have:
            ipr.addr("add", index=idx, address=address, prefixlen=int(plen or 32))
        with contextlib.suppress(NetlinkError):  # EEXIST: the route is there already
            ipr.route("add", dst="0.0.0.0/0", oif=idx, scope=RT_SCOPE_LINK)


def set_probe_end(ns: str, ifname: str, mac: str, cidr: str, peer: str, peer_mac: str) -> None:
    """Make ``ifname`` in ``ns`` one end of a segment probe: a fixed MAC, an address, its peer by a static entry.

    The probe ends sit on a slice's bridges, one L2 domain with the customer's hosts and every other
    SP's probe ends, all holding the same link-local pair. So an end neither asks nor answers ARP:
    its peer's MAC is a permanent neighbour entry, and frames for any other MAC are not its own.
    """
    address, _, plen = cidr.partition("/")
    netns.pushns(ns)
    try:
        with open("/proc/sys/net/ipv4/conf/all/arp_ignore", "w") as fh:
            fh.write(str(ARP_IGNORE_ALL))
    finally:
        netns.popns()
    with in_ns(ns) as ipr:
        idx = link_index(ipr, ifname)
        if idx is None:
            raise FileNotFoundError(f"{ifname} is not in namespace {ns}")
        ipr.link("set", index=idx, address=mac, state="up")
        have = {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=idx)}
        if address not in have:
            ipr.addr("add", index=idx, address=address, prefixlen=int(plen or 32))
        ipr.neigh("replace", dst=peer, lladdr=peer_mac, ifindex=idx, state=NUD_PERMANENT)


# --- what is left ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Leftover:
    """Something under a prefix that exists now: a namespace, or an interface in the root namespace."""

    kind: str  # "netns" or "link"
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.name}"


def leftovers(prefix: str = FAMILY_PREFIX) -> list[Leftover]:
    """Every namespace named ``<prefix>-...`` and every root-namespace interface named ``<prefix>...``."""
    found = [Leftover("netns", n) for n in namespaces() if n.startswith(f"{prefix}-") or n == prefix]
    with IPRoute() as ipr:
        for link in ipr.get_links():
            name = str(link.get_attr("IFLA_IFNAME"))
            if name.startswith(prefix):
                found.append(Leftover("link", name))
    return found


def clean(prefix: str = FAMILY_PREFIX) -> list[Leftover]:
    """Remove everything ``leftovers`` finds; return what was removed."""
    found = leftovers(prefix)
    for item in found:
        if item.kind == "netns":
            remove_ns(item.name)
        else:
            with IPRoute() as ipr:
                idx = link_index(ipr, item.name)
                if idx is not None:
                    with contextlib.suppress(NetlinkError):
                        ipr.link("del", index=idx)
    return found


if __name__ == "__main__":
    _serve()

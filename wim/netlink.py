"""Names and netlink plumbing of fedbroker's data plane: network namespaces, veths, bridges, over pyroute2.

Every object the data plane makes carries the installation's *prefix* (``fb`` followed by up to four
lower-case letters or digits, e.g. ``fb3k9x``), so two test runs, two SPs or two slices never collide
and ``fedbroker dataplane audit`` can find what was left behind:

* namespaces are called ``<prefix>-<kind>-<readable>-<hash>``: the hash makes them unique, the
  readable part helps a person reading ``ip netns list``;
* interfaces are called ``<prefix><role letter><hash>`` and fit the kernel's 15-character limit.

Names derive from (prefix, domain or port id, pop, segment key, ...), never from a counter, so the
process that stitches a border (the upper-SP's WIM) finds what another process (the leaf's domain
agent) made without asking it: a border port's namespace is ``Names.port_ns(port)`` and a slice's
bridge in it ``Names.port_bridge(port, label)``.

All calls here block. Async callers run them with ``call``, in one worker process of their own
(``python -m wim.netlink``): pyroute2 forks to enter namespaces, and a fork of a process that runs
gRPC threads aborts, so a broker never forks itself. One worker also serialises every change this
process makes.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import errno
import hashlib
import pickle
import re
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from pyroute2 import IPRoute, netns
from pyroute2.netlink.exceptions import NetlinkError

from slicing.errors import InvalidArgument

#: The family prefix: every installation's prefix starts with it, so the default audit sees all of them.
FAMILY_PREFIX = "fb"
PREFIX_PATTERN = re.compile(r"^fb[a-z0-9]{0,4}$")
IFNAMSIZ = 15
#: Slices carry ordinary Ethernet frames; underlays are wider so that VXLAN needs no fragmentation.
SLICE_MTU = 1500
UNDERLAY_MTU = 1600
_READABLE = re.compile(r"[^A-Za-z0-9_.-]+")
RT_SCOPE_LINK = 253


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


def check_prefix(prefix: str, path: str = "dataplane.prefix") -> str:
    """The prefix itself when valid; ``InvalidArgument`` naming ``path`` otherwise."""
    if not isinstance(prefix, str) or not PREFIX_PATTERN.match(prefix):
        raise InvalidArgument(path, f"must be 'fb' followed by up to 4 lower-case letters or digits (got {prefix!r})")
    return prefix


def _digest(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()


@dataclass(frozen=True)
class Names:
    """Derives every namespace and interface name of one installation from its prefix."""

    prefix: str = FAMILY_PREFIX

    def __post_init__(self) -> None:
        check_prefix(self.prefix)

    def netns(self, kind: str, *parts: object) -> str:
        """A namespace name: prefix, kind, a readable hint, and a hash of everything."""
        hint = _READABLE.sub("_", "-".join(str(p) for p in parts))[:32]
        return f"{self.prefix}-{kind}-{hint}-{_digest(self.prefix, kind, *parts)[:8]}"

    def ifname(self, role: str, *parts: object) -> str:
        """An interface name of at most 15 characters: prefix, the role's first letter, a hash."""
        room = IFNAMSIZ - len(self.prefix) - 1
        return f"{self.prefix}{role[0]}{_digest(self.prefix, role, *parts)[:room]}"

    # --- the names other processes need --------------------------------------------------------

    def pop_ns(self, domain: str, pop: str) -> str:
        """The namespace of a leaf domain's pop."""
        return self.netns("pop", domain, pop)

    def port_ns(self, port: str) -> str:
        """The border namespace of a border port (port ids are global)."""
        return self.netns("port", port)

    def port_bridge(self, port: str, label: int) -> str:
        """The bridge, in the port's border namespace, of the slice that crosses ``port`` with ``label``."""
        return self.ifname("border-bridge", port, label)

    def endpoint_ns(self, domain: str, key: str, endpoint: str) -> str:
        """The namespace standing for ``endpoint`` in the segment ``key`` of ``domain``."""
        return self.netns("ep", domain, endpoint, key)

    def endpoint_if(self, domain: str, key: str, endpoint: str) -> str:
        """The slice interface inside an endpoint namespace."""
        return self.ifname("ep-inner", domain, key, endpoint)

    def function_ns(self, domain: str, key: str, index: int) -> str:
        """The namespace of the ``index``-th function of the segment ``key`` of ``domain``."""
        return self.netns("fn", domain, index, key)

    def function_ifs(self, domain: str, key: str, index: int) -> tuple[str, str]:
        """The function's interface towards the slice's source, and the one towards its destination."""
        return self.ifname("in", domain, key, index), self.ifname("out", domain, key, index)


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
    with IPRoute(netns=name, flags=0) as ipr:
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


@contextlib.contextmanager
def in_ns(name: str) -> Iterator[Any]:
    """A netlink socket inside an existing namespace (``FileNotFoundError`` when it does not exist)."""
    ipr = IPRoute(netns=name, flags=0)
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

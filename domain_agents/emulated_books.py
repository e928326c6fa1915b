"""What an emulated domain holds: each segment's allocation (its handle) and the books that add them up.

The handle is the allocation itself as JSON (``Allocation.to_handle``; the format is shown in
``domain_agents.emulated``), so a restarted broker rebuilds the books from the handles it kept.
``Condition`` is what a lab makes a link or pop do (``fedbroker`` lab commands, the monitoring tests).
"""

from __future__ import annotations

import ipaddress
import json
from collections import Counter
from collections.abc import Container
from dataclasses import dataclass, field

from capability_catalog.model import TerminalId
from domain_agents.emulated_config import _pair
from slicing.errors import InvalidArgument

HANDLE_VERSION = 1

# --- allocations and their handle ------------------------------------------------------------


@dataclass(frozen=True)
class Allocation:
    """What one segment holds; its JSON form is the handle."""

    domain: str
    key: str
    bandwidth_mbps: int
    links: tuple[tuple[str, str], ...] = ()
    terminals: tuple[TerminalId, ...] = ()
    slots: tuple[tuple[str, str], ...] = ()  # (pop, function type), one per function
    labels: tuple[tuple[TerminalId, int], ...] = ()
    addresses: tuple[tuple[TerminalId, str], ...] = ()

    def to_handle(self) -> str:
        bw = self.bandwidth_mbps
        return json.dumps(
            {
                "v": HANDLE_VERSION,
                "domain": self.domain,
                "key": self.key,
                "bandwidth_mbps": bw,
                "links": [{"a": a, "b": b, "mbps": bw} for a, b in self.links],
                "terminals": {t: bw for t in self.terminals},
                "slots": [{"pop": p, "type": t} for p, t in self.slots],
                "labels": dict(self.labels),
                "addresses": dict(self.addresses),
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_handle(cls, handle: str) -> Allocation:
        """Parse a handle; ``InvalidArgument("handle", ...)`` when it is not one of ours."""
        try:
            raw = json.loads(handle)
            if not isinstance(raw, dict) or raw.get("v") != HANDLE_VERSION:
                raise TypeError("not a version-1 emulated-domain handle")
            bw = raw["bandwidth_mbps"]
            if not isinstance(bw, int) or isinstance(bw, bool):
                raise TypeError("bandwidth_mbps")
            return cls(
                domain=str(raw["domain"]),
                key=str(raw["key"]),
                bandwidth_mbps=bw,
                links=tuple(_pair(str(x["a"]), str(x["b"])) for x in raw["links"]),
                terminals=tuple(TerminalId(str(t)) for t in raw["terminals"]),
                slots=tuple((str(x["pop"]), str(x["type"])) for x in raw["slots"]),
                labels=tuple((TerminalId(str(p)), as_int(v)) for p, v in raw["labels"].items()),
                addresses=tuple((TerminalId(str(e)), str(a)) for e, a in raw["addresses"].items()),
            )
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise InvalidArgument("handle", f"not an emulated-domain handle ({exc})") from None


@dataclass(frozen=True)
class Condition:
    """What a lab makes a link or pop do: extra latency, loss (0..1), or down."""

    added_latency_ms: float = 0.0
    loss: float = 0.0
    down: bool = False

    def __post_init__(self) -> None:
        for name, v, high in (("added_latency_ms", self.added_latency_ms, 1e6), ("loss", self.loss, 1.0)):
            if not (0.0 <= v <= high):  # also false for NaN
                raise InvalidArgument(name, f"must be between 0 and {high:g}, got {v}")


def as_int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"label {value!r} is not an integer")
    return value


IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def host_span(subnet: IpNetwork) -> tuple[int, int]:
    """The hosts of ``subnet`` as a range of integers [first, end): what ``subnet.hosts()`` yields."""
    low, high = int(subnet.network_address), int(subnet.broadcast_address)
    if subnet.num_addresses <= 2:  # /31, /32, /127, /128: every address is a host
        return low, high + 1
    if subnet.version == 4:  # neither the network nor the broadcast address
        return low + 1, high
    return low + 1, high + 1  # IPv6: all but the Subnet-Router anycast (the network address)


@dataclass
class Books:
    """Everything held in the domain, as counters (restored holdings may exceed a shrunk capacity)."""

    links: Counter[tuple[str, str]] = field(default_factory=Counter)
    terminals: Counter[str] = field(default_factory=Counter)
    slots: Counter[tuple[str, str]] = field(default_factory=Counter)
    labels: dict[str, dict[int, str]] = field(default_factory=dict)  # port -> label -> key
    addresses: dict[str, str] = field(default_factory=dict)  # bare address -> key
    # Per subnet asked of ``free_host``: how many of its hosts, from the first, are surely held (each
    # is in ``addresses``). The search for a free one starts there, not at the subnet's first host,
    # which made every reservation read every address held (a domain with 10,000 slices).
    held_prefix: dict[IpNetwork, int] = field(default_factory=dict, compare=False, repr=False)

    def free_host(self, subnet: IpNetwork, skip: Container[str] = ()) -> str | None:
        """The lowest host of ``subnet`` that is neither held nor in ``skip`` (bare), or None."""
        first, end = host_span(subnet)
        start = self.held_prefix.get(subnet, 0)
        make = type(subnet.network_address)
        prefix_ends = False
        for n in range(first + start, end):
            bare = str(make(n))
            if bare in self.addresses:
                continue
            if not prefix_ends:
                self.held_prefix[subnet] = n - first
                prefix_ends = True
            if bare not in skip:
                return bare
        if not prefix_ends:
            self.held_prefix[subnet] = end - first
        return None

    def _freed(self, bare: str) -> None:
        """An address was let go: the subnets whose held prefix it was in start below it again."""
        if not self.held_prefix:
            return
        try:
            addr = ipaddress.ip_address(bare)
        except ValueError:
            return
        for subnet, held in self.held_prefix.items():
            if addr.version == subnet.version and addr in subnet:
                offset = int(addr) - host_span(subnet)[0]
                if 0 <= offset < held:
                    self.held_prefix[subnet] = offset

    def apply(self, a: Allocation) -> None:
        for link in a.links:
            self.links[link] += a.bandwidth_mbps
        for t in a.terminals:
            self.terminals[t] += a.bandwidth_mbps
        for slot in a.slots:
            self.slots[slot] += 1
        for port, label in a.labels:
            self.labels.setdefault(port, {})[label] = a.key
        for _, addr in a.addresses:
            self.addresses[addr.split("/")[0]] = a.key

    def release(self, a: Allocation) -> None:
        for link in a.links:
            self.links[link] -= a.bandwidth_mbps
        for t in a.terminals:
            self.terminals[t] -= a.bandwidth_mbps
        for slot in a.slots:
            self.slots[slot] -= 1
        for port, label in a.labels:
            held = self.labels.get(port, {})
            if held.get(label) == a.key:
                del held[label]
        for _, addr in a.addresses:
            bare = addr.split("/")[0]
            if self.addresses.get(bare) == a.key:
                del self.addresses[bare]
                self._freed(bare)
        self.links = +self.links  # drop zero counts
        self.terminals = +self.terminals
        self.slots = +self.slots

"""The names of fedbroker's data plane, derived from an installation's prefix (no netlink here).

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

Kept apart from ``wim.netlink`` so that reading a config (``dataplane.prefix``) does not load pyroute2.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from slicing.errors import InvalidArgument

#: The family prefix: every installation's prefix starts with it, so the default audit sees all of them.
FAMILY_PREFIX = "fb"
PREFIX_PATTERN = re.compile(r"^fb[a-z0-9]{0,4}$")
IFNAMSIZ = 15
_READABLE = re.compile(r"[^A-Za-z0-9_.-]+")


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

    def probe_ns(self, domain: str, key: str, side: str) -> str:
        """The namespace at one end (``a`` at the source, ``b`` at the destination) that probes the segment."""
        return self.netns("probe", domain, key, side)

    def probe_ifs(self, domain: str, key: str, side: str) -> tuple[str, str]:
        """The probe end's veth: the end on the segment's bridge (in the pop), and the one in the probe namespace."""
        return self.ifname("probe-pop", domain, key, side), self.ifname("probe-inner", domain, key, side)

    def probe_mac(self, domain: str, key: str, side: str) -> str:
        """A fixed, locally administered MAC for a probe end, so the other end's neighbour entry survives a rebuild."""
        raw = _digest(self.prefix, "probe-mac", domain, key, side)[:10]
        return "02:" + ":".join(raw[i : i + 2] for i in range(0, 10, 2))


__all__ = ["FAMILY_PREFIX", "IFNAMSIZ", "PREFIX_PATTERN", "Names", "check_prefix"]

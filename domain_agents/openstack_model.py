"""What the OpenStack domain agent and its openstacksdk verbs share, with no openstacksdk import.

Broker configs are parsed without loading openstacksdk; only a running agent needs it.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from capability_catalog.model import TerminalId
from slicing.errors import InvalidArgument, ResourceExhausted, Unavailable

PLACEMENT_VERSION = "1.38"  # consumer_type on allocations
CONSUMER_TYPE = "FEDBROKER"
COMMITTED_TAG = "fedbroker:committed"
BANDWIDTH = "CUSTOM_FED_BANDWIDTH_MBPS"
FUNCTION_SLOTS = "CUSTOM_FED_FUNCTION_SLOTS"


RES_PREFIX = "fedbroker-res:"
HOLD_PREFIX = "fedbroker-hold-until:"
NAME_PREFIX = "fedbroker-"
#: How long one call to Keystone, Placement or Neutron may take before it counts as unanswered.
DEFAULT_API_TIMEOUT_S = 5.0
_UUID_LEN = 36


def reservation_tag(consumer: str) -> str:
    """The tag every Neutron resource of one reservation carries."""
    return f"{RES_PREFIX}{consumer}"


def hold_tag(until: int) -> str:
    """The tag that records when a reservation's hold ends (epoch seconds)."""
    return f"{HOLD_PREFIX}{until}"


def domain_tag(domain: str) -> str:
    """The tag every Neutron resource a domain's agent made carries."""
    return f"fedbroker-domain:{domain}"


def object_name(domain: str, consumer: str, terminal: str = "") -> str:
    """The name of a reservation's network and subnet (``terminal`` empty) or of its port for ``terminal``.

    Neutron 29 takes no tags in a create request (measured: ``Attribute 'tags' not allowed in POST``
    for networks and subnets; on ports they are accepted and dropped), so the name is what makes an
    object findable from the reservation from its first call on; the tags follow in a second call.
    """
    base = f"{NAME_PREFIX}{domain}-{consumer}"
    return (f"{base}:{terminal}" if terminal else base)[:255]


def name_prefix(domain: str) -> str:
    """What the name of every Neutron object a domain's agent made starts with."""
    return f"{NAME_PREFIX}{domain}-"


def consumer_of_name(domain: str, name: str | None) -> str | None:
    """The consumer a Neutron object's name marks it as made for by ``domain``, or None when not ours."""
    prefix = name_prefix(domain)
    if not name or not name.startswith(prefix):
        return None
    rest = name[len(prefix) :]
    consumer, tail = rest[:_UUID_LEN], rest[_UUID_LEN:]
    if tail and not tail.startswith(":"):
        return None  # another domain whose id starts with this one's and a dash
    try:
        return str(uuid.UUID(consumer)) if len(consumer) == _UUID_LEN else None
    except ValueError:
        return None


def consumer_of(domain: str, resource: Any) -> str | None:
    """The consumer a Neutron object belongs to, by its reservation tag or else by its name."""
    tags = tags_of(resource)
    if domain_tag(domain) in tags:
        found = next((t.removeprefix(RES_PREFIX) for t in tags if t.startswith(RES_PREFIX)), None)
        if found:
            return found
    return consumer_of_name(domain, getattr(resource, "name", None))


class NoAnswer(Unavailable):
    """An OpenStack service did not answer in time: whether the call took effect is unknown."""


class VniInUse(ResourceExhausted):
    """Neutron refused a VNI as already in use (someone took it since the last scan)."""

    def __init__(self, vni: int, detail: str) -> None:
        super().__init__(f"VNI {vni} is in use in Neutron ({detail})")
        self.vni = vni


@dataclass(frozen=True)
class Credentials:
    """How to reach the cloud: a clouds.yaml entry or inline Keystone settings, and how long a call may take."""

    cloud: str = ""
    clouds_file: str = ""
    auth: Mapping[str, str] | None = None
    path: str = "domains[?]"  # the config path, for error messages
    # Every HTTP request to Keystone, Placement or Neutron gives up after this long (NoAnswer).
    api_timeout_s: float = DEFAULT_API_TIMEOUT_S

    def setting(self) -> str:
        """The config path of the setting that carries the credentials."""
        return f"{self.path}.{'cloud' if self.cloud else 'auth'}"


@dataclass(frozen=True)
class PortSpec:
    """One Neutron port to make on the segment's network: for a terminal, with an address or not."""

    terminal: TerminalId
    with_address: bool


@dataclass(frozen=True)
class NetworkSpec:
    """What one segment needs in Neutron."""

    name: str
    consumer: str
    domain: str
    vnis: tuple[int, ...]  # one vxlan segment per VNI; none: Neutron picks from its tenant range
    subnet: str
    ports: tuple[PortSpec, ...]
    hold_until: int
    key: str = ""  # the order key, for people reading Neutron (in each object's description)


@dataclass(frozen=True)
class MadeNetwork:
    """What Neutron made for a segment."""

    network_id: str
    port_ids: Mapping[TerminalId, str]
    addresses: Mapping[TerminalId, str]


def dump_handle(data: Mapping[str, object]) -> str:
    """A compact, stable JSON handle."""
    return json.dumps(data, separators=(",", ":"), sort_keys=True)


def tags_of(resource: Any) -> Sequence[str]:
    """A Neutron resource's tags."""
    return list(getattr(resource, "tags", None) or ())


#: The version of the handle a segment's JSON carries.
HANDLE_VERSION = 1


@dataclass(frozen=True)
class Made:
    """What one segment holds in OpenStack; its JSON is the handle."""

    domain: str
    key: str
    consumer: str
    network_id: str
    bandwidth_mbps: int
    pops: tuple[str, ...]
    slots: tuple[tuple[str, str], ...]
    labels: tuple[tuple[TerminalId, int], ...]
    addresses: tuple[tuple[TerminalId, str], ...]
    resources: Mapping[str, Mapping[str, int]] = field(default_factory=dict)  # pop -> class -> amount

    def to_handle(self) -> str:
        return dump_handle(
            {
                "v": HANDLE_VERSION,
                "kind": "openstack",
                "domain": self.domain,
                "key": self.key,
                "consumer": self.consumer,
                "network": self.network_id,
                "bandwidth_mbps": self.bandwidth_mbps,
                "pops": list(self.pops),
                "slots": [{"pop": p, "type": t} for p, t in self.slots],
                "labels": dict(self.labels),
                "addresses": dict(self.addresses),
                "resources": {pop: dict(res) for pop, res in self.resources.items()},
            }
        )

    @classmethod
    def from_handle(cls, handle: str) -> Made:
        """Parse a handle; ``InvalidArgument("handle", ...)`` when it is not an OpenStack-domain handle."""
        try:
            raw = json.loads(handle)
            if not isinstance(raw, dict) or raw.get("v") != HANDLE_VERSION or raw.get("kind") != "openstack":
                raise TypeError("not a version-1 OpenStack-domain handle")
            return cls(
                domain=str(raw["domain"]),
                key=str(raw["key"]),
                consumer=str(uuid.UUID(str(raw["consumer"]))),
                network_id=str(raw["network"]),
                bandwidth_mbps=int(raw["bandwidth_mbps"]),
                pops=tuple(str(p) for p in raw["pops"]),
                slots=tuple((str(s["pop"]), str(s["type"])) for s in raw["slots"]),
                labels=tuple((TerminalId(str(p)), int(v)) for p, v in raw["labels"].items()),
                addresses=tuple((TerminalId(str(e)), str(a)) for e, a in raw["addresses"].items()),
                resources={str(p): {str(c): int(n) for c, n in r.items()} for p, r in raw["resources"].items()},
            )
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise InvalidArgument("handle", f"not an OpenStack-domain handle ({exc})") from None


_CONSUMERS = uuid.UUID("6f1c1f8e-51f4-4c1e-9b0e-3d7d1c2f0a11")  # namespace of fedbroker consumer uuids


def consumer_id(domain: str, key: str) -> str:
    """The Placement consumer (and reservation tag) of one order: stable, so a retry finds it."""
    return str(uuid.uuid5(_CONSUMERS, f"{domain}/{key}"))


def created_at(obj: Any) -> float:
    """When Neutron made an object (its ``created_at``, UTC), in epoch seconds; now when it does not say."""
    raw = getattr(obj, "created_at", None)
    try:
        return datetime.fromisoformat(str(raw).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return time.time()

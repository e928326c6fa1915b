"""What the OpenStack domain agent and its openstacksdk verbs share, with no openstacksdk import.

Broker configs are parsed without loading openstacksdk; only a running agent needs it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from capability_catalog.model import TerminalId
from slicing.errors import ResourceExhausted

PLACEMENT_VERSION = "1.38"  # consumer_type on allocations
CONSUMER_TYPE = "FEDBROKER"
COMMITTED_TAG = "fedbroker:committed"
BANDWIDTH = "CUSTOM_FED_BANDWIDTH_MBPS"
FUNCTION_SLOTS = "CUSTOM_FED_FUNCTION_SLOTS"


RES_PREFIX = "fedbroker-res:"
HOLD_PREFIX = "fedbroker-hold-until:"


def reservation_tag(consumer: str) -> str:
    """The tag every Neutron resource of one reservation carries."""
    return f"{RES_PREFIX}{consumer}"


def hold_tag(until: int) -> str:
    """The tag that records when a reservation's hold ends (epoch seconds)."""
    return f"{HOLD_PREFIX}{until}"


def domain_tag(domain: str) -> str:
    """The tag every Neutron resource a domain's agent made carries."""
    return f"fedbroker-domain:{domain}"


class VniInUse(ResourceExhausted):
    """Neutron refused a VNI as already in use (someone took it since the last scan)."""

    def __init__(self, vni: int, detail: str) -> None:
        super().__init__(f"VNI {vni} is in use in Neutron ({detail})")
        self.vni = vni


@dataclass(frozen=True)
class Credentials:
    """How to log in to Keystone: a clouds.yaml entry, or inline settings (password or app credential)."""

    cloud: str = ""
    clouds_file: str = ""
    auth: Mapping[str, str] | None = None
    path: str = "domains[?]"  # the config path, for error messages

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

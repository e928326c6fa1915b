"""The YAML authoring format of a capability note, for lower-SP operators: its bounds and the offer policy.

``capability_catalog/AUTHORING.md`` documents the format with an example. The format's schema
is at the edge, in ``schemas/note.py`` (strict pydantic models: ``parse_note``, ``parse_policy``,
``validate_authoring``), so the catalog's core stays free of the schema library; this module keeps
what the core needs of the format: the bounds of its numbers, the values of the well-known QoS
mechanisms, and the *offer policy* (QoS classes, isolation, address pools, transit policy, price,
withdrawal), which an operator may change on a running broker, with its authoring form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from capability_catalog.model import Isolation, QosClass

#: Bounds of a note's real numbers: far above any real offer, far below where the canonical
#: encoding's integer micro-units overflow (an offer of 1e308 or inf once froze the note feed).
MAX_DELAY_MS = 3_600_000.0
MAX_PRICE_PER_MBPS_HOUR = 1e6
#: The values each well-known QoS mechanism allows (others are free text).
NATIVE_RANGES: dict[str, tuple[int, int]] = {"dscp": (0, 63), "mpls_tc": (0, 7), "pcp": (0, 7), "5qi": (1, 255)}


@dataclass(frozen=True)
class OfferPolicy:
    """What an operator states about an offer beyond the infrastructure's own facts."""

    qos_classes: tuple[QosClass, ...] = ()
    isolation: tuple[Isolation, ...] = ()
    address_pools: tuple[str, ...] = ()
    transit_policy: tuple[tuple[str, str], ...] = ()
    price_per_mbps_hour: float | None = None
    # A withdrawn offer is published with no endpoints, ports or functions: nothing to buy.
    withdrawn: bool = False


def policy_to_dict(policy: OfferPolicy) -> dict[str, Any]:
    """An offer policy in its authoring form (what ``parse_policy`` reads back)."""
    out: dict[str, Any] = {
        "qos_classes": [
            {"name": q.name, "native": dict(q.native), "delay_ms": q.delay_ms, "loss": q.loss}
            for q in policy.qos_classes
        ],
        "isolation": [str(i) for i in policy.isolation],
        "address_pools": list(policy.address_pools),
        "transit_policy": [[a, b] for a, b in policy.transit_policy],
        "withdrawn": policy.withdrawn,
    }
    if policy.price_per_mbps_hour is not None:
        out["price_per_mbps_hour"] = policy.price_per_mbps_hour
    return out

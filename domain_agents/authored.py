"""A leaf domain serving a note file (``domains[i].note_file``): its offer, and how long it may be served.

The note file's times are absolute where the author fixed them: a file that states ``expires_at``
(or ``issued_at``, from which ``valid_for_s`` counts) caps every note the domain serves, so no note
published lasts past that time, and once it has passed the domain publishes nothing more: its last
note expires at the SPs above, as any expired note does, and a warning says which file to renew. A
file that states only ``valid_for_s`` (or nothing) gives each note served that lifetime from its
issue, re-issued for as long as the broker runs.

Both the emulated (and netns) and the OpenStack domain agents serve notes through these helpers.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Mapping
from typing import NoReturn

from capability_catalog.authoring import OfferPolicy
from capability_catalog.model import CapabilityNote, SpId

log = logging.getLogger(__name__)

#: The shortest pause between two notes re-issued for their validity alone.
MIN_REFRESH_S = 0.05


def fixes_expiry(data: Mapping[str, object]) -> bool:
    """Whether a note file fixes when it expires (it states ``expires_at``, or ``issued_at``)."""
    return "expires_at" in data or "issued_at" in data


def offer_of(note: CapabilityNote) -> OfferPolicy:
    """The offer policy an authored note states: its QoS classes, isolation, pools, transit policy, price."""
    return OfferPolicy(
        qos_classes=note.qos_classes,
        isolation=note.isolation,
        address_pools=note.address_pools,
        transit_policy=note.transit_policy,
        price_per_mbps_hour=note.price_per_mbps_hour,
    )


def live_header(
    sp_id: SpId,
    offer: OfferPolicy,
    now: float,
    *,
    ttl_s: float,
    until: float | None,
    previous: CapabilityNote | None,
    authored: CapabilityNote | None,
) -> CapabilityNote:
    """A leaf's note issued ``now`` with its offer policy and nothing to sell yet (the agent adds its capacity).

    Its version is above ``previous``'s and never below the note file's; it expires ``ttl_s`` later,
    never after ``until`` (the file's cap).
    """
    version = int(now * 1000)
    if previous is not None:
        version = max(version, previous.version + 1)
    if authored is not None:
        version = max(version, authored.version)  # the file's version is a floor
    return CapabilityNote(
        sp_id=sp_id,
        version=version,
        issued_at=now,
        expires_at=expiry(now, ttl_s, until),
        qos_classes=offer.qos_classes,
        isolation=offer.isolation,
        address_pools=offer.address_pools,
        transit_policy=offer.transit_policy,
        price_per_mbps_hour=offer.price_per_mbps_hour,
    )


def expiry(now: float, ttl_s: float, until: float | None) -> float:
    """When a note issued ``now`` expires: ``ttl_s`` later, never after ``until`` (the file's cap)."""
    return now + ttl_s if until is None else min(now + ttl_s, until)


def refresh_at(note: CapabilityNote, until: float | None) -> float:
    """When ``note`` is re-issued for its validity: at half its lifetime, or at the cap it reached."""
    if until is not None and note.expires_at >= until:
        return until  # no later note can last longer: wake at the cap, to stop
    return note.issued_at + max(MIN_REFRESH_S, (note.expires_at - note.issued_at) / 2)


def refresh_in(note: CapabilityNote, until: float | None, now: float) -> float:
    """How long from ``now`` until ``note`` is re-issued for its validity (``refresh_at``)."""
    return max(MIN_REFRESH_S, refresh_at(note, until) - now)


def past(until: float | None, now: float) -> bool:
    """Whether the file's cap has passed: the domain then publishes nothing more."""
    return until is not None and now >= until


def _when(t: float) -> str:
    if not math.isfinite(t):
        return str(t)
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) + f" ({t:.0f})"


def expired_warning(domain: str, field: str, file: str | None, until: float | None) -> str:
    """What the log says when a domain's note file has expired."""
    at = _when(until if until is not None else math.nan)
    return (
        f"domain {domain}: the note file {file} ({field}) expired at {at}; the domain offers nothing "
        f"more and its last note expires at the SPs above. Write a new note file with a later expires_at "
        f"(check it with `fedbroker catalog validate`) and restart the broker"
    )


async def stop_serving(domain: str, field: str, file: str | None, until: float | None) -> NoReturn:
    """Warn that the note file expired, then publish nothing more (wait until the feed is cancelled)."""
    log.warning("%s", expired_warning(domain, field, file, until))
    await asyncio.Event().wait()
    raise AssertionError("unreachable")  # pragma: no cover


__all__ = [
    "MIN_REFRESH_S",
    "expired_warning",
    "expiry",
    "fixes_expiry",
    "live_header",
    "offer_of",
    "past",
    "refresh_at",
    "refresh_in",
    "stop_serving",
]

"""Operators' edits of their local domains' offers: applied at once, persisted, re-applied on start.

An edit replaces the offer policy of one local domain (QoS classes, isolation, address pools,
transit policy, price, withdrawal). The domain re-publishes its note at once, and the note climbs
the hierarchy through the normal feed. Edits live in ``offers.json`` in the data directory, written
atomically, so a restarted broker publishes what its operator last said, not its config's default.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Protocol

from capability_catalog.authoring import OfferPolicy, policy_to_dict
from capability_catalog.model import CapabilityNote
from slicing.errors import FailedPrecondition, NotFound

log = logging.getLogger(__name__)


class OfferingAgent(Protocol):
    """A local domain agent whose offer an operator may edit."""

    @property
    def offer(self) -> OfferPolicy:
        """The offer policy in force."""
        ...

    def set_offer(self, offer: OfferPolicy) -> CapabilityNote:
        """Replace the offer and publish a new note version."""
        ...


class OfferDesk:
    """The operator's edits of local domains' offers."""

    def __init__(
        self,
        agents: Mapping[str, OfferingAgent],
        path: Path,
        *,
        read_policy: Callable[[object, str], tuple[OfferPolicy, list[str]]],
        replicated: bool = False,
    ) -> None:
        # read_policy: the edge's schema of the offer's authoring form (schemas.note.parse_policy);
        # the core takes it as a parameter, so it stays free of the schema library.
        self._agents = dict(agents)
        self._path = path
        self._read_policy = read_policy
        self._saved: dict[str, object] = {}  # what offers.json holds, in its authoring form
        # Replicas share the store, not offers.json: an edit at one would not reach the others.
        self._replicated = replicated

    def restore(self) -> None:
        """Re-apply the persisted edits (a file that does not parse is reported and left alone)."""
        if not self._path.exists():
            return
        try:
            saved = json.loads(self._path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.error("%s: cannot read saved offers (%s); publishing the configured offers", self._path, exc)
            return
        if not isinstance(saved, dict):
            log.error("%s: not a mapping of domain to offer; publishing the configured offers", self._path)
            return
        self._saved = dict(saved)
        for domain, raw in saved.items():
            offer, problems = self._read_policy(raw, f"{self._path.name}.{domain}")
            if problems or domain not in self._agents:
                log.error("%s: saved offer of %s not applied: %s", self._path, domain, problems or "unknown domain")
                continue
            self._agents[domain].set_offer(offer)
            log.info("offer of %s restored from %s", domain, self._path)

    def set(self, domain: str, offer: OfferPolicy) -> CapabilityNote:
        """Apply and persist an edit; ``NotFound`` for a domain this SP does not run."""
        agent = self._agents.get(domain)
        if agent is None:
            raise NotFound(
                f"domain '{domain}': not a local domain of this SP (local: {', '.join(sorted(self._agents))})"
            )
        if self._replicated:
            raise FailedPrecondition(
                f"domain '{domain}': this SP runs as replicas, which do not share offer edits yet (an edit here "
                "would not reach the other replicas' notes): change the domain's offer in the config file and "
                "restart each replica"
            )
        self._save(domain, offer)
        note = agent.set_offer(offer)
        log.info(
            "offer of %s edited: withdrawn=%s qos=%s isolation=%s price=%s; note version %d published",
            domain,
            offer.withdrawn,
            [q.name for q in offer.qos_classes],
            [str(i) for i in offer.isolation],
            offer.price_per_mbps_hour,
            note.version,
        )
        return note

    def withdrawn(self) -> dict[str, bool]:
        """Each local domain, and whether its offer is withdrawn now."""
        return {domain: agent.offer.withdrawn for domain, agent in sorted(self._agents.items())}

    def set_withdrawn(self, domain: str, withdrawn: bool) -> CapabilityNote:
        """Withdraw a local domain's offer (published with nothing to buy) or publish it again, the rest kept."""
        agent = self._agents.get(domain)
        current = agent.offer if agent is not None else OfferPolicy()
        return self.set(domain, replace(current, withdrawn=withdrawn))  # set names an unknown domain

    def _save(self, domain: str, offer: OfferPolicy) -> None:
        self._saved[domain] = policy_to_dict(offer)
        tmp = self._path.with_suffix(".tmp")
        # allow_nan=False: a non-finite number must never reach the file (it once came back as Infinity).
        tmp.write_text(json.dumps(self._saved, indent=2, sort_keys=True, allow_nan=False), encoding="utf-8")
        os.replace(tmp, self._path)

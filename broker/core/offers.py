"""Operators' edits of their local domains' offers: applied at once, persisted, re-applied on start.

An edit replaces the offer policy of one local domain (QoS classes, isolation, address pools,
transit policy, price, withdrawal). The domain re-publishes its note at once, and the note climbs
the hierarchy through the normal feed. Edits live in ``offers.json`` in the data directory, written
atomically, so a restarted broker publishes what its operator last said, not its config's default.

An SP run as replicas keeps its edits in the store they share instead (``OfferEdits``): an edit at
any replica is numbered there, and every replica applies the newest edit of each domain within
``FOLLOW_S`` (``OfferDesk.follow``), so all of them publish the same offer; two edits at once at two
replicas end as the later-numbered one everywhere. A replica's own ``offers.json`` from before it
had replicas is carried into the store once, for the domains the store has no edit of.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Protocol

from capability_catalog.authoring import OfferPolicy, policy_to_dict
from capability_catalog.model import CapabilityNote
from slicing.errors import NotFound

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


class OfferEdits(Protocol):
    """Where replicas of one SP keep their operators' offer edits (the SP's shared store)."""

    def offer_edits(self) -> dict[str, tuple[int, str]]:
        """Each domain's offer as last edited at any replica: (edit number, policy JSON)."""
        ...

    def save_offer_edit(self, domain: str, policy: str, at: float) -> int:
        """Keep a domain's edited offer for every replica; its edit number."""
        ...


#: How often a replica looks for offer edits made at another one.
FOLLOW_S = 0.5


class OfferDesk:
    """The operator's edits of local domains' offers."""

    def __init__(
        self,
        agents: Mapping[str, OfferingAgent],
        path: Path,
        *,
        read_policy: Callable[[object, str], tuple[OfferPolicy, list[str]]],
        shared: OfferEdits | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # read_policy: the edge's schema of the offer's authoring form (schemas.note.parse_policy);
        # the core takes it as a parameter, so it stays free of the schema library.
        self._agents = dict(agents)
        self._path = path
        self._read_policy = read_policy
        self._saved: dict[str, object] = {}  # what offers.json holds, in its authoring form
        # Replicas share the store, not offers.json: an edit at one reaches the others through it.
        self._shared = shared
        self._clock = clock
        self._applied: dict[str, int] = {}  # with a shared store: the edit number each domain shows here

    def restore(self) -> None:
        """Re-apply the persisted edits (a file that does not parse is reported and left alone)."""
        self._restore_file()
        if self._shared is not None:
            self._carry_file_over()
            self.catch_up()

    def _carry_file_over(self) -> None:
        """Edits of ``offers.json`` (from before this SP had replicas) the shared store has none of: kept there."""
        assert self._shared is not None
        edited = self._shared.offer_edits()
        for domain, raw in sorted(self._saved.items()):
            if domain in self._agents and domain not in edited:
                number = self._shared.save_offer_edit(domain, _text(raw), self._clock())
                log.info("offer of %s: carried from %s into the replicas' store (edit %d)", domain, self._path, number)

    def catch_up(self) -> list[str]:
        """Apply each domain's newest edit in the shared store that this replica does not show yet; the domains."""
        if self._shared is None:
            return []
        changed = []
        for domain, (number, text) in sorted(self._shared.offer_edits().items()):
            if number <= self._applied.get(domain, 0) or domain not in self._agents:
                continue
            self._applied[domain] = number
            try:
                raw = json.loads(text)
            except ValueError as exc:
                log.error("offer edit %d of %s in the store does not parse (%s); not applied", number, domain, exc)
                continue
            offer, problems = self._read_policy(raw, f"offer_edits.{domain}")
            if problems:
                log.error("offer edit %d of %s in the store not applied: %s", number, domain, problems)
                continue
            note = self._agents[domain].set_offer(offer)
            changed.append(domain)
            log.info("offer of %s: edit %d (made at a replica) applied; note version %d", domain, number, note.version)
        return changed

    async def follow(self, every_s: float = FOLLOW_S) -> None:
        """With replicas, apply the edits the others make, until cancelled (a store that fails is retried)."""
        if self._shared is None:
            return
        while True:
            await asyncio.sleep(every_s)
            try:
                self.catch_up()
            except Exception as exc:  # the store is down for a moment: the next look tries again
                log.warning("offer edits: cannot read the replicas' store (%s); trying again", exc)

    def _restore_file(self) -> None:
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
        if self._shared is not None:
            # Numbered in the store first: the other replicas apply it from there, this one at once.
            self._applied[domain] = self._shared.save_offer_edit(domain, _text(policy_to_dict(offer)), self._clock())
        else:
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


def _text(raw: object) -> str:
    # allow_nan=False: a non-finite number must never be kept (it once came back as Infinity).
    return json.dumps(raw, sort_keys=True, allow_nan=False)

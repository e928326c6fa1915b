"""An OpenStack domain's configuration: cloud credentials, PoPs as Placement providers, links, terminals, functions.

Parsed from the ``domains[i]`` mapping of a broker config by the strict schema of ``schemas/domain.py``,
then checked as a whole with the emulated domain's pieces; every error names the path of the bad field.

A ``note_file`` (AUTHORING.md) is served as by an emulated domain (``domain_agents/authored.py``):
the note's offer and validity are the domain's, its figures the share sold, with the live capacity
Placement and Neutron report applied.

Besides the cloud, PoPs and terminals: ``api_timeout_s`` (default 5) bounds every HTTP request to
Keystone, Placement and Neutron, so a hung service makes the call fail ``UNAVAILABLE`` naming it
instead of blocking a Reserve; keep it well under the broker's ``lower_timeout_s``.
``sweep_grace_s`` (default 60) is how long past its hold (or, for an object that never got its tags,
past its creation) a reservation nobody holds is left before the sweep removes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from capability_catalog.authoring import OfferPolicy
from capability_catalog.model import (
    CapabilityNote,
    LabelType,
    SpId,
)
from domain_agents.authored import offer_of
from domain_agents.emulated_config import (
    PlacedEndpoint,
    PlacedPort,
    _at,
    known_pop,
    placed_terminals,
    terminal_pop,
    validated,
)
from domain_agents.openstack_model import (
    DEFAULT_API_TIMEOUT_S,
    Credentials,
)
from schemas.domain import OpenStackDomainFile
from slicing.errors import InvalidArgument

if TYPE_CHECKING:  # openstacksdk loads only when an agent connects, not when a config is read
    pass

DEFAULT_NOTE_TTL_S = 3600.0
DEFAULT_POLL_S = 15.0
#: How long after its hold ended (or, carrying no tags, after it was made) an object nobody holds is swept.
DEFAULT_SWEEP_GRACE_S = 60.0
#: What an OpenStack domain's notes state beyond the cloud's facts without a note file: nothing.
NO_OFFER = OfferPolicy()


# --- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Pop:
    """A PoP: a Placement resource provider, optionally with the inventory the agent keeps on it."""

    name: str
    resource_provider: str
    inventory: Mapping[str, int] | None = None


@dataclass(frozen=True)
class PopLatency:
    """An internal link between two PoPs, for routing (its bandwidth is the PoPs' own)."""

    a: str
    b: str
    latency_ms: float


@dataclass(frozen=True)
class FunctionSpec:
    """A network function type a PoP hosts, and what one instance costs in Placement."""

    pop: str
    type: str
    vcpu: int = 1
    memory_mb: int = 512


@dataclass(frozen=True)
class OpenStackDomainConfig:
    """One OpenStack-backed domain as declared in a broker config (validated by ``from_dict``)."""

    id: SpId
    credentials: Credentials
    pops: tuple[Pop, ...]
    links: tuple[PopLatency, ...] = ()
    endpoints: tuple[PlacedEndpoint, ...] = ()
    ports: tuple[PlacedPort, ...] = ()
    functions: tuple[FunctionSpec, ...] = ()
    note_ttl_s: float = DEFAULT_NOTE_TTL_S
    poll_s: float = DEFAULT_POLL_S
    sweep_grace_s: float = DEFAULT_SWEEP_GRACE_S
    #: What the domain's notes state beyond the cloud's facts: none, unless a note file gives it.
    offer: OfferPolicy = NO_OFFER
    #: ``note_file`` as written in the config, where it is set, the note read from it and its cap (as emulated).
    note_file: str | None = None
    note_field: str = ""
    authored: CapabilityNote | None = None
    note_expires_at: float | None = None

    @property
    def api_timeout_s(self) -> float:
        """How long one call to Keystone, Placement or Neutron may take (``api_timeout_s`` in the config)."""
        return self.credentials.api_timeout_s

    @classmethod
    def from_dict(cls, d: Mapping[str, object], path: str) -> OpenStackDomainConfig:
        """Validate a parsed config mapping; errors are ``InvalidArgument`` naming the field path."""
        return _openstack_domain(d, path)

    def pop_of(self, terminal: str) -> str | None:
        """The PoP a terminal sits at, or None when the domain has no such terminal."""
        return terminal_pop(self.endpoints, self.ports, terminal)


def with_authored(
    cfg: OpenStackDomainConfig, note: CapabilityNote, until: float | None = None
) -> OpenStackDomainConfig:
    """``cfg`` serving ``note`` (its ``note_file``): the note's offer and validity; ``until`` the file's cap."""
    ttl = note.expires_at - note.issued_at
    return replace(cfg, authored=note, offer=offer_of(note), note_ttl_s=ttl, note_expires_at=until)


def _openstack_domain(d: object, at: str) -> OpenStackDomainConfig:
    m = validated(OpenStackDomainFile, d, at)
    if m.note_file is not None and isinstance(d, Mapping) and "note_ttl_s" in d:
        raise InvalidArgument(
            _at(at, "note_ttl_s"), "the note file states this (valid_for_s); give it there, not also here"
        )
    timeout = m.api_timeout_s if m.api_timeout_s is not None else DEFAULT_API_TIMEOUT_S
    creds = replace(_credentials(m, at), api_timeout_s=timeout)
    if not m.pops:
        raise InvalidArgument(_at(at, "pops"), "required, a non-empty list of PoPs")
    names = tuple(p.name for p in m.pops)
    if len(set(names)) != len(names):
        raise InvalidArgument(_at(at, "pops"), "a PoP name is listed twice")
    pops = tuple(
        Pop(p.name, p.resource_provider or f"{m.id}-{p.name}", dict(p.inventory) if p.inventory is not None else None)
        for p in m.pops
    )
    links = tuple(
        PopLatency(
            known_pop(x.a, names, _at(_at(_at(at, "links"), i), "a")),
            known_pop(x.b, names, _at(_at(_at(at, "links"), i), "b")),
            x.latency_ms,
        )
        for i, x in enumerate(m.links or ())
    )
    endpoints, ports = placed_terminals(m.endpoints or (), m.ports or (), names, at)
    for i, p in enumerate(ports):
        if p.port.label_type is not LabelType.VXLAN_VNI:
            raise InvalidArgument(_at(_at(_at(at, "ports"), i), "label_type"), "an OpenStack port uses vxlan-vni")
    functions = tuple(
        FunctionSpec(known_pop(f.pop, names, _at(_at(_at(at, "functions"), i), "pop")), f.type, f.vcpu, f.memory_mb)
        for i, f in enumerate(m.functions or ())
    )
    return OpenStackDomainConfig(
        id=SpId(m.id),
        credentials=creds,
        pops=pops,
        links=links,
        endpoints=endpoints,
        ports=ports,
        functions=functions,
        note_ttl_s=m.note_ttl_s,
        poll_s=m.poll_s,
        sweep_grace_s=m.sweep_grace_s,
        note_file=m.note_file,
        note_field=_at(at, "note_file"),
    )


def _credentials(m: OpenStackDomainFile, at: str) -> Credentials:
    if (m.cloud is None) == (m.auth is None):
        raise InvalidArgument(
            _at(at, "auth"), "give either 'cloud' (a clouds.yaml entry) or 'auth' (Keystone settings)"
        )
    if m.cloud is not None:
        return Credentials(cloud=m.cloud, clouds_file=m.clouds_file, path=at)
    assert m.auth is not None
    values = {k: v for k, v in m.auth.model_dump().items() if v is not None}
    has_password = "username" in values and "password" in values
    has_app = "application_credential_id" in values and "application_credential_secret" in values
    if not (has_password or has_app):
        raise InvalidArgument(
            _at(at, "auth"),
            "needs username and password, or application_credential_id and application_credential_secret",
        )
    if has_app and "auth_type" not in values:
        values["auth_type"] = "v3applicationcredential"
    return Credentials(auth=values, path=at)

"""An OpenStack domain's configuration: cloud credentials, PoPs as Placement providers, links, terminals, functions.

Parsed from the ``domains[i]`` mapping of a broker config with the emulated domain's parser pieces;
every error names the path of the bad field.

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

from capability_catalog.model import (
    LabelType,
    SpId,
)
from domain_agents.emulated_config import PlacedEndpoint, PlacedPort, _at, _Parser, terminal_pop
from domain_agents.openstack_model import (
    DEFAULT_API_TIMEOUT_S,
    Credentials,
)
from slicing.errors import InvalidArgument

if TYPE_CHECKING:  # openstacksdk loads only when an agent connects, not when a config is read
    pass

DEFAULT_NOTE_TTL_S = 3600.0
DEFAULT_POLL_S = 15.0
#: How long after its hold ended (or, carrying no tags, after it was made) an object nobody holds is swept.
DEFAULT_SWEEP_GRACE_S = 60.0


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

    @property
    def api_timeout_s(self) -> float:
        """How long one call to Keystone, Placement or Neutron may take (``api_timeout_s`` in the config)."""
        return self.credentials.api_timeout_s

    @classmethod
    def from_dict(cls, d: Mapping[str, object], path: str) -> OpenStackDomainConfig:
        """Validate a parsed config mapping; errors are ``InvalidArgument`` naming the field path."""
        return _OpenStackParser(path).openstack_domain(d)

    def pop_of(self, terminal: str) -> str | None:
        """The PoP a terminal sits at, or None when the domain has no such terminal."""
        return terminal_pop(self.endpoints, self.ports, terminal)


_AUTH_KEYS = (
    "auth_url",
    "username",
    "password",
    "project_name",
    "project_id",
    "user_domain_name",
    "project_domain_name",
    "region_name",
    "application_credential_id",
    "application_credential_secret",
    "auth_type",
)


class _OpenStackParser(_Parser):
    """The emulated parser's endpoint/port/label checks, plus PoPs, credentials and function costs."""

    _OS_DOMAIN = (
        "id",
        "type",
        "note_ttl_s",
        "poll_s",
        "api_timeout_s",
        "sweep_grace_s",
        "cloud",
        "clouds_file",
        "auth",
        "pops",
        "links",
        "endpoints",
        "ports",
        "functions",
    )
    _OS_POP = ("name", "resource_provider", "inventory")
    _OS_LINK = ("a", "b", "latency_ms")
    _OS_FUNCTION = ("pop", "type", "vcpu", "memory_mb")

    def openstack_domain(self, d: object) -> OpenStackDomainConfig:
        at = self.path
        m = self._mapping(d, at, self._OS_DOMAIN)
        sp_id = self._str(m, "id", at)
        if m.get("type") != "openstack":
            raise InvalidArgument(_at(at, "type"), f"must be 'openstack', got {m.get('type')!r}")
        ttl = self._positive(m, "note_ttl_s", DEFAULT_NOTE_TTL_S, at)
        poll = self._positive(m, "poll_s", DEFAULT_POLL_S, at)
        grace = self._positive(m, "sweep_grace_s", DEFAULT_SWEEP_GRACE_S, at)
        timeout = self._positive(m, "api_timeout_s", DEFAULT_API_TIMEOUT_S, at)
        creds = replace(self._credentials(m, at), api_timeout_s=timeout)
        pops = tuple(self._os_pop(x, _at(_at(at, "pops"), i), sp_id) for i, x in self._items(m, "pops", at))
        if not pops:
            raise InvalidArgument(_at(at, "pops"), "required, a non-empty list of PoPs")
        names = tuple(p.name for p in pops)
        if len(set(names)) != len(names):
            raise InvalidArgument(_at(at, "pops"), "a PoP name is listed twice")
        links = tuple(self._os_link(x, _at(_at(at, "links"), i), names) for i, x in self._items(m, "links", at))
        endpoints = tuple(
            self._endpoint(x, _at(_at(at, "endpoints"), i), names) for i, x in self._items(m, "endpoints", at)
        )
        ports = tuple(self._port(x, _at(_at(at, "ports"), i), names) for i, x in self._items(m, "ports", at))
        seen: dict[str, str] = {}
        for i, e in enumerate(endpoints):
            self._unique(seen, e.endpoint.id, _at(_at(_at(at, "endpoints"), i), "id"))
        for i, p in enumerate(ports):
            self._unique(seen, p.port.id, _at(_at(_at(at, "ports"), i), "id"))
            if p.port.label_type is not LabelType.VXLAN_VNI:
                raise InvalidArgument(_at(_at(_at(at, "ports"), i), "label_type"), "an OpenStack port uses vxlan-vni")
        functions = tuple(
            self._os_function(x, _at(_at(at, "functions"), i), names) for i, x in self._items(m, "functions", at)
        )
        return OpenStackDomainConfig(
            id=SpId(sp_id),
            credentials=creds,
            pops=pops,
            links=links,
            endpoints=endpoints,
            ports=ports,
            functions=functions,
            note_ttl_s=ttl,
            poll_s=poll,
            sweep_grace_s=grace,
        )

    @staticmethod
    def _positive(m: Mapping[str, object], key: str, default: float, at: str) -> float:
        value = m.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise InvalidArgument(_at(at, key), f"must be a positive number, got {value!r}")
        return float(value)

    def _credentials(self, m: Mapping[str, object], at: str) -> Credentials:
        cloud, auth = m.get("cloud"), m.get("auth")
        if (cloud is None) == (auth is None):
            raise InvalidArgument(
                _at(at, "auth"), "give either 'cloud' (a clouds.yaml entry) or 'auth' (Keystone settings)"
            )
        if cloud is not None:
            name = self._str(m, "cloud", at)
            files = m.get("clouds_file", "")
            if not isinstance(files, str):
                raise InvalidArgument(_at(at, "clouds_file"), "must be a path")
            return Credentials(cloud=name, clouds_file=files, path=at)
        a = self._mapping(auth, _at(at, "auth"), _AUTH_KEYS)
        if "auth_url" not in a:
            raise InvalidArgument(_at(_at(at, "auth"), "auth_url"), "required, Keystone's URL")
        has_password = "username" in a and "password" in a
        has_app = "application_credential_id" in a and "application_credential_secret" in a
        if not (has_password or has_app):
            raise InvalidArgument(
                _at(at, "auth"),
                "needs username and password, or application_credential_id and application_credential_secret",
            )
        values = {str(k): str(v) for k, v in a.items()}
        if has_app and "auth_type" not in values:
            values["auth_type"] = "v3applicationcredential"
        return Credentials(auth=values, path=at)

    def _os_pop(self, x: object, at: str, sp_id: str) -> Pop:
        m = self._mapping(x, at, self._OS_POP)
        name = self._str(m, "name", at)
        rp = self._str(m, "resource_provider", at, default=f"{sp_id}-{name}") or f"{sp_id}-{name}"
        raw = m.get("inventory")
        if raw is None:
            return Pop(name, rp)
        inv = self._mapping(raw, _at(at, "inventory"), tuple(str(k) for k in raw) if isinstance(raw, Mapping) else ())
        out: dict[str, int] = {}
        for cls in inv:
            if not str(cls).replace("_", "").isalnum() or str(cls) != str(cls).upper():
                raise InvalidArgument(_at(_at(at, "inventory"), str(cls)), "a resource class is UPPER_CASE")
            out[str(cls)] = self._int(inv, str(cls), _at(at, "inventory"))
        return Pop(name, rp, out)

    def _os_link(self, x: object, at: str, pops: tuple[str, ...]) -> PopLatency:
        m = self._mapping(x, at, self._OS_LINK)
        a, b = self._pop(m, "a", at, pops), self._pop(m, "b", at, pops)
        if a == b:
            raise InvalidArgument(_at(at, "b"), f"a link must join two different pops (both are '{a}')")
        latency = m.get("latency_ms")
        if isinstance(latency, bool) or not isinstance(latency, int | float) or latency < 0:
            raise InvalidArgument(_at(at, "latency_ms"), f"must be a non-negative number (got {latency!r})")
        return PopLatency(a, b, float(latency))

    def _os_function(self, x: object, at: str, pops: tuple[str, ...]) -> FunctionSpec:
        m = self._mapping(x, at, self._OS_FUNCTION)
        return FunctionSpec(
            pop=self._pop(m, "pop", at, pops),
            type=self._str(m, "type", at),
            vcpu=self._int(m, "vcpu", at) if "vcpu" in m else 1,
            memory_mb=self._int(m, "memory_mb", at) if "memory_mb" in m else 512,
        )

"""The SP's YAML configuration, read through one safe loader; every error names its path."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from broker.descriptors import ConfigError, load_yaml
from broker.security.tokens import MAX_CALL_TTL_S, MAX_SESSION_TTL_S
from capability_catalog.signing import public_key_from_text
from domain_agents.emulated_config import EmulatedDomainConfig, parse_netns_domain
from domain_agents.openstack_config import OpenStackDomainConfig
from slicing.errors import FedError
from wim.names import FAMILY_PREFIX, check_prefix

if TYPE_CHECKING:
    from schemas.broker import BrokerFile, SecurityEntry

#: The ``type`` of a domain entry (``schemas.broker`` holds the format's names; read when a config is).
DOMAIN_KINDS = ("emulated", "netns", "openstack")

#: A leaf domain's configuration, by its ``type``.
DomainConfig = EmulatedDomainConfig | OpenStackDomainConfig


@dataclass(frozen=True)
class LowerSp:
    """A lower-SP this broker buys from, and the public keys its notes must be signed with."""

    id: str
    address: str
    keys: tuple[str, ...] = ()
    #: Every address the lower SP answers at (its replicas); ``address`` is the first.
    addresses: tuple[str, ...] = ()

    @property
    def target(self) -> str:
        """The gRPC target: the address, or a static list of them (``ipv4:A,B``) for client-side balancing."""
        return channel_target(self.addresses or (self.address,))

    @property
    def balanced(self) -> bool:
        """Whether calls are spread over several replicas."""
        return len(self.addresses) > 1


def _ip_literal(address: str) -> int:
    """4 or 6 for an ``IP:PORT`` (``[v6]:PORT``) address, 0 for a host name."""
    host, _, _ = address.rpartition(":")
    try:
        return ipaddress.ip_address(host.strip("[]")).version
    except ValueError:
        return 0


def channel_target(addresses: Sequence[str]) -> str:
    """One address as it is; several as gRPC's static list of one family (it resolves no host names)."""
    if len(addresses) == 1:
        return addresses[0]
    family = _ip_literal(addresses[0])
    return f"ipv{family}:" + ",".join(addresses)


@dataclass(frozen=True)
class WimConfig:
    """Which WIM driver stitches this broker's inter-domain links."""

    driver: str = "memory"
    capacity_mbps: Mapping[str, int] | None = None


@dataclass(frozen=True)
class SecurityConfig:
    """Transport and token settings: the TLS files, the account book, the login endpoint, token lives."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    accounts_file: Path | None = None
    login_listen: str = ""
    call_ttl_s: float = 60.0
    session_ttl_s: float = 600.0


@dataclass(frozen=True)
class DataplaneConfig:
    """The installation's data-plane prefix: every namespace and interface the SP makes starts with it."""

    prefix: str = FAMILY_PREFIX


@dataclass(frozen=True)
class RetentionConfig:
    """How long and how many FAILED slice records are kept (they hold nothing; they answer repeats and List).

    A day, as payment APIs keep idempotency keys, and at most 1,000: a caller whose requests keep
    failing cannot make the store (and every List) grow without bound.
    """

    failed_s: float = 86_400.0
    failed_max: int = 1_000
    #: The REST API's events kept, the newest, for SSE clients that reconnect (``Last-Event-ID``).
    events_max: int = 10_000


@dataclass(frozen=True)
class StoreConfig:
    """Where the SP keeps its slices: ``sqlite`` (``state.db`` in the data directory) or ``postgresql``."""

    backend: str = "sqlite"
    dsn: str = ""
    #: Several broker processes of this SP share the database (PostgreSQL only).
    replicas: bool = False


@dataclass(frozen=True)
class BrokerConfig:
    """One SP's broker configuration."""

    sp_id: str
    listen: str
    data_dir: Path
    hold_time_s: float = 120.0
    lower_timeout_s: float = 10.0
    # An activation some SP below has not confirmed by then is undone (back to COMMITTED); None:
    # ten times lower_timeout_s.
    activation_timeout_s: float | None = None
    note_ttl_s: float = 3600.0
    lower_sps: tuple[LowerSp, ...] = ()
    domains: tuple[DomainConfig, ...] = ()
    wim: WimConfig = WimConfig()
    source: Path | None = None
    key_file: Path | None = None
    security: SecurityConfig = SecurityConfig()
    # Fault injection for tests and scenarios (broker/core/faults.py); None: no injection points armed.
    faults_file: Path | None = None
    # How often the reconciler retries what some SP below has not confirmed, and compares holdings.
    reconcile_interval_s: float = 2.0
    # Prometheus text at /metrics: plaintext on loopback only, else HTTPS with the SP's certificate.
    metrics_listen: str = ""
    # The REST API: HTTPS with the SP's certificate and client certificates (plaintext on loopback
    # only, under --insecure); hub callbacks go to loopback or to these hosts.
    rest_listen: str = ""
    rest_callback_hosts: tuple[str, ...] = ()
    # The monitoring mode at start (normal or skeleton) and the skeleton delta; switchable at run time.
    monitoring_mode: str = "normal"
    monitoring_delta: float = 0.0
    # The hysteresis window: how long a condition must stay clear before its alert resolves.
    monitoring_clear_s: float = 1.0
    # Data-plane probing of each netns segment and linux WIM service: period, echo requests, reply timeout.
    probe_interval_s: float = 2.0
    probe_count: int = 3
    probe_timeout_s: float = 0.5

    @property
    def accounts_path(self) -> Path:
        """The account book (default: ``accounts.yaml`` in the data directory)."""
        return self.security.accounts_file or self.data_dir / "accounts.yaml"

    @property
    def audit_log_path(self) -> Path:
        """Where every state-changing call is recorded, one JSON line each."""
        return self.data_dir / "audit.log"

    @property
    def signing_key_path(self) -> Path:
        """The SP's Ed25519 private key (default: ``sp.key`` in the data directory)."""
        return self.key_file or self.data_dir / "sp.key"

    domain_kinds: Mapping[str, str] | None = None  # domain id -> "emulated" | "netns" | "openstack"
    dataplane: DataplaneConfig = DataplaneConfig()
    retention: RetentionConfig = RetentionConfig()
    store: StoreConfig = StoreConfig()


def _problem(where: str, found: list[str]) -> ConfigError:
    """The first problem as the error (its path as ``field``), every other one on a line of its own."""
    path, _, _ = found[0].partition(": ")
    return ConfigError(where + "\n".join(found), field=path)


def _validated(data: Any, where: str) -> BrokerFile:
    # The model is built when a config is read, not when the module is imported.
    from pydantic import ValidationError

    from schemas.broker import ALLOWED, BrokerFile
    from schemas.problems import problems

    try:
        return BrokerFile.model_validate(data)
    except ValidationError as exc:
        found = problems(exc, root=BrokerFile, allowed=ALLOWED)
    # The config's own words for a key it does not know.
    raise _problem(where, [p.replace(": unknown key (known:", ": unknown setting (known:", 1) for p in found])


def _security(m: SecurityEntry, base: Path, where: str) -> SecurityConfig:
    for key, limit in (("call_ttl_s", MAX_CALL_TTL_S), ("session_ttl_s", MAX_SESSION_TTL_S)):
        value = getattr(m, key)
        if value > limit:
            path = f"security.{key}"
            raise ConfigError(f"{where}{path}: tokens are short-lived: at most {limit:g} s, got {value:g}", field=path)
    return SecurityConfig(
        ca=base / m.ca if m.ca else None,
        cert=base / m.cert if m.cert else None,
        key=base / m.key if m.key else None,
        accounts_file=base / m.accounts_file if m.accounts_file else None,
        login_listen=m.login_listen,
        call_ttl_s=m.call_ttl_s,
        session_ttl_s=m.session_ttl_s,
    )


def _lowers(m: BrokerFile, where: str, seen_ids: set[str]) -> list[LowerSp]:
    lowers = []
    for i, entry in enumerate(m.lower_sps):
        path = f"lower_sps[{i}]"
        for j, key in enumerate(entry.keys):
            try:
                public_key_from_text(key)
            except ValueError as exc:
                raise ConfigError(f"{where}{path}.keys[{j}]: {exc}", field=f"{path}.keys[{j}]") from None
        if entry.id in seen_ids:
            raise ConfigError(f"{where}{path}.id: '{entry.id}' is used twice", field=f"{path}.id")
        seen_ids.add(entry.id)
        addresses = _addresses(entry.address, entry.addresses, where, path)
        lowers.append(LowerSp(entry.id, addresses[0], tuple(entry.keys), addresses if len(addresses) > 1 else ()))
    return lowers


def _addresses(address: str | None, addresses: list[str] | None, where: str, field: str) -> tuple[str, ...]:
    """A lower-SP entry's addresses: ``address``, or ``addresses`` (IP literals of one family when several)."""
    path = f"{where}{field}"
    if address and addresses:
        raise ConfigError(f"{path}: give address or addresses, not both", field=f"{field}.addresses")
    if not address and not addresses:
        raise ConfigError(
            f"{path}.address: required, the lower-SP's HOST:PORT (or addresses: a list of them, for a lower SP "
            "run as replicas)",
            field=f"{field}.address",
        )
    found = tuple(addresses or (str(address),))
    if len(set(found)) != len(found):
        raise ConfigError(f"{path}.addresses: an address is listed twice", field=f"{field}.addresses")
    if len(found) > 1:
        families = [_ip_literal(a) for a in found]
        for k, family in enumerate(families):
            if family == 0 or family != families[0]:
                say = "an IP address and port" if family == 0 else f"of one address family (IPv{families[0]})"
                raise ConfigError(
                    f"{path}.addresses[{k}]: {found[k]!r}: with several addresses each must be {say}, "
                    "as gRPC's static address list resolves no host names",
                    field=f"{field}.addresses[{k}]",
                )
    return found


#: Why a domain of each kind cannot be shared by replicas (an emulated domain's books are in the store).
_UNSHARED = {
    "netns": "is network namespaces and processes on one host's kernel, which another host cannot reach",
    "openstack": "is driven by one process that keeps the cloud's ids of what it made in memory (not yet shared)",
}


def _check_replicas(m: BrokerFile, kinds: Mapping[str, str], where: str) -> None:
    """Replicas share only what is in the database: refuse what one process keeps for itself."""
    why = ""
    unshared = [(dom, kind) for dom, kind in kinds.items() if kind in _UNSHARED]
    if m.store.backend != "postgresql":
        why = "needs backend postgresql (replicas share one database; a SQLite file belongs to one process)"
    elif unshared:
        dom, kind = unshared[0]
        why = f"domain {dom!r} ({kind}) {_UNSHARED[kind]}: only emulated domains can be run by replicas"
    elif m.wim.driver == "linux":
        why = "the linux WIM driver stitches on one host's kernel: replicas need the memory WIM"
    elif m.wim.capacity_mbps:
        why = "wim.capacity_mbps is counted in each process: replicas would each allow it"
    if why:
        raise ConfigError(f"{where}store.replicas: {why}", field="store.replicas")


def _domains(m: BrokerFile, where: str, seen_ids: set[str]) -> tuple[list[DomainConfig], dict[str, str]]:
    domains: list[DomainConfig] = []
    kinds: dict[str, str] = {}
    for i, entry in enumerate(m.domains):
        kind = entry.get("type", "emulated")
        if kind not in DOMAIN_KINDS:
            known = ", ".join(DOMAIN_KINDS)
            path = f"domains[{i}].type"
            raise ConfigError(f"{where}{path}: unknown domain agent {kind!r} (known: {known})", field=path)
        try:
            dom: DomainConfig
            if kind == "netns":
                dom = parse_netns_domain(entry, f"domains[{i}]")
            elif kind == "openstack":
                dom = OpenStackDomainConfig.from_dict(entry, f"domains[{i}]")
            else:
                dom = EmulatedDomainConfig.from_dict(entry, f"domains[{i}]")
        except FedError as exc:
            raise ConfigError(f"{where}{exc}", field=exc.field or "") from None
        except ValueError as exc:
            raise ConfigError(f"{where}{exc}", field=f"domains[{i}]") from None
        if dom.id in seen_ids:
            path = f"domains[{i}].id"
            raise ConfigError(f"{where}{path}: '{dom.id}' is used twice", field=path)
        seen_ids.add(dom.id)
        domains.append(dom)
        kinds[dom.id] = str(kind)
    return domains, kinds


def parse_config(data: Any, source: Path | None = None) -> BrokerConfig:
    """Validate a parsed YAML document into a ``BrokerConfig``; relative paths are to the file's folder.

    The strict model of ``schemas/broker.py`` checks every setting's type and range (not coerced:
    ``"10"`` and ``true`` are no seconds) and refuses unknown keys, naming the known ones; the
    ``ConfigError`` names the first bad setting's path (also as ``field``) and lists every other.
    """
    where = f"{source}: " if source else ""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}the document must be a mapping")
    m = _validated(data, where)
    base = source.parent if source else Path.cwd()
    seen_ids: set[str] = set()  # a leaf's only domain may share the SP id
    lowers = _lowers(m, where, seen_ids)
    domains, kinds = _domains(m, where, seen_ids)
    if not lowers and not domains:
        raise ConfigError(f"{where}an SP needs lower_sps (to recurse) or domains (as a leaf); it has neither")
    try:
        dataplane = DataplaneConfig(
            prefix=check_prefix(FAMILY_PREFIX if m.dataplane.prefix is None else m.dataplane.prefix)
        )
    except FedError as exc:
        raise ConfigError(f"{where}{exc}", field="dataplane.prefix") from None
    if m.store.backend == "postgresql" and not m.store.dsn:
        raise ConfigError(
            f"{where}store.dsn: required with backend postgresql, a libpq connection string "
            "(for example 'host=db.example port=5432 dbname=fedbroker_m1 user=fedbroker')",
            field="store.dsn",
        )
    if m.store.backend == "sqlite" and m.store.dsn:
        raise ConfigError(
            f"{where}store.dsn: only for backend postgresql; the sqlite store is state.db in data_dir",
            field="store.dsn",
        )
    if m.store.replicas:
        _check_replicas(m, kinds, where)
    return BrokerConfig(
        sp_id=m.sp_id,
        listen=m.listen,
        data_dir=base / (m.data_dir or f"data-{m.sp_id}"),
        hold_time_s=m.hold_time_s,
        lower_timeout_s=m.lower_timeout_s,
        activation_timeout_s=m.activation_timeout_s,
        note_ttl_s=m.note_ttl_s,
        lower_sps=tuple(lowers),
        domains=tuple(domains),
        wim=WimConfig(driver=m.wim.driver, capacity_mbps=m.wim.capacity_mbps),
        source=source,
        key_file=base / m.key_file if m.key_file else None,
        faults_file=base / m.faults_file if m.faults_file else None,
        reconcile_interval_s=m.reconcile_interval_s,
        security=_security(m.security, base, where),
        domain_kinds=kinds,
        dataplane=dataplane,
        retention=RetentionConfig(
            failed_s=m.retention.failed_s, failed_max=m.retention.failed_max, events_max=m.retention.events_max
        ),
        metrics_listen=m.metrics_listen,
        rest_listen=m.rest_listen,
        rest_callback_hosts=tuple(m.rest_callback_hosts),
        monitoring_mode=m.monitoring.mode,
        monitoring_delta=m.monitoring.delta,
        monitoring_clear_s=m.monitoring.clear_s,
        store=StoreConfig(backend=m.store.backend, dsn=m.store.dsn or "", replicas=m.store.replicas),
        probe_interval_s=m.monitoring.probe_interval_s,
        probe_count=m.monitoring.probe_count,
        probe_timeout_s=m.monitoring.probe_timeout_s,
    )


def load_config(path: Path) -> BrokerConfig:
    """Read and validate a broker config file."""
    return parse_config(load_yaml(path), source=path.resolve())

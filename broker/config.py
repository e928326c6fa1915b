"""The SP's YAML configuration, read through one safe loader; every error names its path."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker.descriptors import ConfigError, load_yaml
from broker.security.tokens import MAX_CALL_TTL_S, MAX_SESSION_TTL_S
from capability_catalog.signing import public_key_from_text
from domain_agents.emulated_config import EmulatedDomainConfig, parse_netns_domain
from domain_agents.openstack_config import OpenStackDomainConfig
from slicing.errors import FedError
from wim.names import FAMILY_PREFIX, check_prefix

DOMAIN_KINDS = ("emulated", "netns", "openstack")
WIM_DRIVERS = ("memory", "linux")

#: A leaf domain's configuration, by its ``type``.
DomainConfig = EmulatedDomainConfig | OpenStackDomainConfig


@dataclass(frozen=True)
class LowerSp:
    """A lower-SP this broker buys from, and the public keys its notes must be signed with."""

    id: str
    address: str
    keys: tuple[str, ...] = ()


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
    # The monitoring mode at start (normal or skeleton) and the skeleton delta; switchable at run time.
    monitoring_mode: str = "normal"
    monitoring_delta: float = 0.0
    # The hysteresis window: how long a condition must stay clear before its alert resolves.
    monitoring_clear_s: float = 1.0

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


_TOP_KEYS = {
    "sp_id",
    "faults_file",
    "reconcile_interval_s",
    "listen",
    "data_dir",
    "key_file",
    "hold_time_s",
    "lower_timeout_s",
    "activation_timeout_s",
    "note_ttl_s",
    "lower_sps",
    "domains",
    "wim",
    "security",
    "dataplane",
    "retention",
    "metrics_listen",
    "monitoring",
}
_SECURITY_KEYS = {"ca", "cert", "key", "accounts_file", "login_listen", "call_ttl_s", "session_ttl_s"}


def _req_str(d: Mapping[str, Any], key: str, path: str) -> str:
    value = d.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{path}{key}: required, a non-empty string")
    return value


def _positive(d: Mapping[str, Any], key: str, default: float, path: str) -> float:
    value = d.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"{path}{key}: must be a positive number, got {value!r}")
    return float(value)


def _security(data: Any, base: Path, where: str) -> SecurityConfig:
    if data is None:
        return SecurityConfig()
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}security: must be a mapping")
    extra = sorted(set(data) - _SECURITY_KEYS)
    if extra:
        raise ConfigError(f"{where}security.{extra[0]}: unknown setting (known: {', '.join(sorted(_SECURITY_KEYS))})")
    paths: dict[str, Path | None] = {}
    for key in ("ca", "cert", "key", "accounts_file"):
        value = data.get(key)
        if value is not None and (not isinstance(value, str) or not value):
            raise ConfigError(f"{where}security.{key}: must be a file path")
        paths[key] = base / value if value else None
    given = [k for k in ("ca", "cert", "key") if paths[k] is not None]
    if given and len(given) != 3:
        raise ConfigError(f"{where}security: give ca, cert and key together (only {', '.join(given)} given)")
    login = data.get("login_listen", "")
    if not isinstance(login, str) or (login and ":" not in login):
        raise ConfigError(f"{where}security.login_listen: expected HOST:PORT, got {login!r}")
    return SecurityConfig(
        ca=paths["ca"],
        cert=paths["cert"],
        key=paths["key"],
        accounts_file=paths["accounts_file"],
        login_listen=login,
        call_ttl_s=_at_most(
            _positive(data, "call_ttl_s", 60.0, f"{where}security."), MAX_CALL_TTL_S, where, "call_ttl_s"
        ),
        session_ttl_s=_at_most(
            _positive(data, "session_ttl_s", 600.0, f"{where}security."), MAX_SESSION_TTL_S, where, "session_ttl_s"
        ),
    )


def _at_most(value: float, limit: float, where: str, key: str) -> float:
    if value > limit:
        raise ConfigError(f"{where}security.{key}: tokens are short-lived: at most {limit:g} s, got {value:g}")
    return value


def parse_config(data: Any, source: Path | None = None) -> BrokerConfig:
    """Validate a parsed YAML document into a ``BrokerConfig``; relative paths are to the file's folder."""
    where = f"{source}: " if source else ""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}the document must be a mapping")
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise ConfigError(f"{where}{unknown[0]}: unknown setting (known: {', '.join(sorted(_TOP_KEYS))})")
    sp_id = _req_str(data, "sp_id", where)
    listen = str(data.get("listen", "127.0.0.1:0"))
    if ":" not in listen:
        raise ConfigError(f"{where}listen: expected HOST:PORT, got {listen!r}")
    base = source.parent if source else Path.cwd()
    data_dir = base / str(data.get("data_dir", f"data-{sp_id}"))
    lowers = []
    seen_ids: set[str] = set()  # a leaf's only domain may share the SP id
    raw_lowers = data.get("lower_sps") or []
    if not isinstance(raw_lowers, list):
        raise ConfigError(f"{where}lower_sps: must be a list")
    for i, entry in enumerate(raw_lowers):
        path = f"{where}lower_sps[{i}]."
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{path[:-1]}: must be a mapping with id and address")
        extra = sorted(set(entry) - {"id", "address", "keys"})
        if extra:
            raise ConfigError(f"{path}{extra[0]}: unknown setting")
        keys = entry.get("keys")
        if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
            raise ConfigError(
                f"{path}keys: required, the public keys this lower-SP signs its notes with "
                "(as printed by `fedbroker keys init`)"
            )
        for j, key in enumerate(keys):
            try:
                public_key_from_text(key)
            except ValueError as exc:
                raise ConfigError(f"{path}keys[{j}]: {exc}") from None
        lower = LowerSp(_req_str(entry, "id", path), _req_str(entry, "address", path), tuple(keys))
        if lower.id in seen_ids:
            raise ConfigError(f"{path}id: '{lower.id}' is used twice")
        seen_ids.add(lower.id)
        lowers.append(lower)
    domains = []
    kinds: dict[str, str] = {}
    raw_domains = data.get("domains") or []
    if not isinstance(raw_domains, list):
        raise ConfigError(f"{where}domains: must be a list")
    for i, entry in enumerate(raw_domains):
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where}domains[{i}]: must be a mapping")
        kind = entry.get("type", "emulated")
        if kind not in DOMAIN_KINDS:
            known = ", ".join(DOMAIN_KINDS)
            raise ConfigError(f"{where}domains[{i}].type: unknown domain agent {kind!r} (known: {known})")
        try:
            dom: DomainConfig
            if kind == "netns":
                dom = parse_netns_domain(entry, f"domains[{i}]")
            elif kind == "openstack":
                dom = OpenStackDomainConfig.from_dict(entry, f"domains[{i}]")
            else:
                dom = EmulatedDomainConfig.from_dict(entry, f"domains[{i}]")
        except (FedError, ValueError) as exc:
            raise ConfigError(f"{where}{exc}") from None
        if dom.id in seen_ids:
            raise ConfigError(f"{where}domains[{i}].id: '{dom.id}' is used twice")
        seen_ids.add(dom.id)
        domains.append(dom)
        kinds[dom.id] = str(kind)
    if not lowers and not domains:
        raise ConfigError(f"{where}an SP needs lower_sps (to recurse) or domains (as a leaf); it has neither")
    raw_wim = data.get("wim") or {}
    if not isinstance(raw_wim, Mapping):
        raise ConfigError(f"{where}wim: must be a mapping")
    driver = raw_wim.get("driver", "memory")
    if driver not in WIM_DRIVERS:
        raise ConfigError(f"{where}wim.driver: unknown driver {driver!r} (known: {', '.join(WIM_DRIVERS)})")
    extra = sorted(set(raw_wim) - {"driver", "capacity_mbps"})
    if extra:
        raise ConfigError(f"{where}wim.{extra[0]}: unknown setting")
    dataplane = _dataplane(data.get("dataplane"), where)
    retention = _retention(data.get("retention"), where)
    metrics_listen = str(data.get("metrics_listen") or "")
    if metrics_listen and ":" not in metrics_listen:
        raise ConfigError(f"{where}metrics_listen: expected HOST:PORT, got {metrics_listen!r}")
    mode, delta, clear_s = _monitoring(data.get("monitoring"), where)
    return BrokerConfig(
        sp_id=sp_id,
        listen=listen,
        data_dir=data_dir,
        hold_time_s=_positive(data, "hold_time_s", 120.0, where),
        lower_timeout_s=_positive(data, "lower_timeout_s", 10.0, where),
        activation_timeout_s=(
            _positive(data, "activation_timeout_s", 0, where) if "activation_timeout_s" in data else None
        ),
        note_ttl_s=_positive(data, "note_ttl_s", 3600.0, where),
        lower_sps=tuple(lowers),
        domains=tuple(domains),
        wim=WimConfig(driver=driver, capacity_mbps=raw_wim.get("capacity_mbps")),
        source=source,
        key_file=base / str(data["key_file"]) if data.get("key_file") else None,
        faults_file=base / str(data["faults_file"]) if data.get("faults_file") else None,
        reconcile_interval_s=_positive(data, "reconcile_interval_s", 2.0, where),
        security=_security(data.get("security"), base, where),
        domain_kinds=kinds,
        dataplane=dataplane,
        retention=retention,
        metrics_listen=metrics_listen,
        monitoring_mode=mode,
        monitoring_delta=delta,
        monitoring_clear_s=clear_s,
    )


def _monitoring(raw: Any, where: str) -> tuple[str, float, float]:
    if raw is None:
        return "normal", 0.0, 1.0
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}monitoring: must be a mapping such as {{mode: skeleton, delta: 5}}")
    extra = sorted(set(raw) - {"mode", "delta", "clear_s"})
    if extra:
        raise ConfigError(f"{where}monitoring.{extra[0]}: unknown setting (known: clear_s, delta, mode)")
    clear_s = raw.get("clear_s", 1.0)
    if isinstance(clear_s, bool) or not isinstance(clear_s, int | float) or not 0 <= clear_s <= 3600:
        raise ConfigError(f"{where}monitoring.clear_s: seconds from 0 to 3600, got {clear_s!r}")
    mode = raw.get("mode", "normal")
    if mode not in ("normal", "skeleton"):
        raise ConfigError(f"{where}monitoring.mode: normal or skeleton, got {mode!r}")
    delta = raw.get("delta", 0.0)
    if isinstance(delta, bool) or not isinstance(delta, int | float) or not 0 <= delta < 1e12:
        raise ConfigError(f"{where}monitoring.delta: a finite number from 0, got {delta!r}")
    return str(mode), float(delta), float(clear_s)


def _retention(raw: Any, where: str) -> RetentionConfig:
    if raw is None:
        return RetentionConfig()
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}retention: must be a mapping such as {{failed_s: 86400, failed_max: 1000}}")
    extra = sorted(set(raw) - {"failed_s", "failed_max"})
    if extra:
        raise ConfigError(f"{where}retention.{extra[0]}: unknown setting (known: failed_max, failed_s)")
    failed_s = _positive(raw, "failed_s", RetentionConfig.failed_s, f"{where}retention.")
    failed_max = raw.get("failed_max", RetentionConfig.failed_max)
    if isinstance(failed_max, bool) or not isinstance(failed_max, int) or not 0 <= failed_max <= 1_000_000:
        raise ConfigError(f"{where}retention.failed_max: must be a whole number from 0 to 1000000, got {failed_max!r}")
    return RetentionConfig(failed_s=failed_s, failed_max=failed_max)


def _dataplane(raw: Any, where: str) -> DataplaneConfig:
    if raw is None:
        return DataplaneConfig()
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}dataplane: must be a mapping")
    extra = sorted(set(raw) - {"prefix"})
    if extra:
        raise ConfigError(f"{where}dataplane.{extra[0]}: unknown setting (known: prefix)")
    try:
        return DataplaneConfig(prefix=check_prefix(raw.get("prefix", FAMILY_PREFIX)))
    except FedError as exc:
        raise ConfigError(f"{where}{exc}") from None


def load_config(path: Path) -> BrokerConfig:
    """Read and validate a broker config file."""
    return parse_config(load_yaml(path), source=path.resolve())

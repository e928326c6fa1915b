"""A broker's config file (``fedbroker run --config``) as a strict pydantic model.

The model checks each setting's type and range where it stands (``hold_time_s: "10"`` or ``true``
is no number of seconds; unknown keys refused, naming the known ones). What needs more than one
field or the broker's own rules (the lower-SPs' keys, ids used once, the domain entries, token
lives, the data-plane prefix) ``broker/config.py`` checks on the validated model, which it maps
onto ``BrokerConfig``. Each ``domains[i]`` is a mapping here: its own schema (``schemas/domain.py``)
reads it, by its ``type``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, Field, model_validator

from schemas.checks import flag, host_port, listed, one_of, text, within
from schemas.problems import STRICT

WIM_DRIVERS = ("memory", "linux")
MONITORING_MODES = ("normal", "skeleton")
STORE_BACKENDS = ("sqlite", "postgresql")
KEYS_SAY = "the public keys this lower-SP signs its notes with (as printed by `fedbroker keys init`)"

#: What a field takes, said when it is missing (``sp_id: required, a non-empty string``).
ALLOWED: dict[str, str] = {
    "sp_id": "a non-empty string",
    "id": "a non-empty string",
    "address": "the lower-SP's HOST:PORT",
    "keys": KEYS_SAY,
}


def optional(check: Callable[[object], object]) -> Callable[[object], object]:
    """``check``, letting ``null`` through (the setting is then not given)."""
    return lambda value: value if value is None else check(value)


def or_default(default: object) -> Callable[[object], object]:
    """``null`` read as ``default`` (``wim:`` with nothing under it is the default WIM)."""
    return lambda value: default if value is None else value


def _or_null(schema: dict[str, Any]) -> None:
    """In the JSON Schema: the setting may be ``null`` too (and is then its default)."""
    kept = {k: schema.pop(k) for k in ("$ref", "type", "items", "additionalProperties") if k in schema}
    schema["anyOf"] = [kept, {"type": "null"}]


#: A setting whose ``null`` means its default (a mapping or list under it, or none at all).
OrNull = Field(json_schema_extra=_or_null)

Seconds = Annotated[float, within("must be a positive number", 0, low_open=True)]
Name = Annotated[str, BeforeValidator(text("required, a non-empty string"))]
FilePath = Annotated[str | None, BeforeValidator(optional(text("must be a file path")))]
HostPort = Annotated[str, BeforeValidator(host_port(empty=False))]
# pydantic runs the last BeforeValidator first: null becomes "" before the check.
HostPortOrNone = Annotated[str, BeforeValidator(host_port(empty=True)), BeforeValidator(or_default("")), OrNull]
PositiveInt = Annotated[int, within("must be a positive integer", 0, low_open=True, integer=True)]


class LowerSpEntry(BaseModel):
    """``lower_sps[]``: an SP this broker buys from, and the keys its notes are signed with."""

    model_config = STRICT
    id: Name
    # One of the two: ``address``, or ``addresses`` for a lower SP run as several replicas (calls are
    # spread over them and go to the others when one dies).
    address: Annotated[str | None, BeforeValidator(optional(text("must be the lower-SP's HOST:PORT")))] = None
    addresses: Annotated[
        list[HostPort] | None, BeforeValidator(optional(listed("a list of HOST:PORT", nonempty=True)))
    ] = None
    keys: Annotated[
        list[Annotated[str, BeforeValidator(text("must be a public key as printed by `fedbroker keys init`"))]],
        BeforeValidator(listed(f"required, {KEYS_SAY}", nonempty=True)),
    ]


class WimEntry(BaseModel):
    """``wim``: the driver that stitches inter-domain links, and the capacity of each border link."""

    model_config = STRICT
    driver: Annotated[str, BeforeValidator(one_of(WIM_DRIVERS, "unknown driver"))] = "memory"
    capacity_mbps: dict[str, PositiveInt] | None = None


class SecurityEntry(BaseModel):
    """``security``: TLS files, the account book, the login endpoint, token lives."""

    model_config = STRICT
    ca: FilePath = None
    cert: FilePath = None
    key: FilePath = None
    accounts_file: FilePath = None
    login_listen: HostPortOrNone = ""
    call_ttl_s: Seconds = 60.0
    session_ttl_s: Seconds = 600.0

    @model_validator(mode="after")
    def _tls_together(self) -> SecurityEntry:
        given = [k for k in ("ca", "cert", "key") if getattr(self, k)]
        if given and len(given) != 3:
            raise ValueError(f"give ca, cert and key together (only {', '.join(given)} given)")
        return self


class DataplaneEntry(BaseModel):
    """``dataplane``: the prefix of every namespace and interface the SP makes (checked by ``wim.names``)."""

    model_config = STRICT
    prefix: str | None = None


class RetentionEntry(BaseModel):
    """``retention``: how long and how many FAILED slice records are kept, and how many REST events."""

    model_config = STRICT
    failed_s: Seconds = 86_400.0
    failed_max: Annotated[int, within("must be a whole number from 0 to 1000000", 0, 1_000_000, integer=True)] = 1_000
    events_max: Annotated[int, within("must be a whole number from 1 to 1000000", 1, 1_000_000, integer=True)] = 10_000


class MonitoringEntry(BaseModel):
    """``monitoring``: the mode at start, the skeleton delta, the hysteresis window, and data-plane probing.

    ``probe_interval_s``, ``probe_count`` and ``probe_timeout_s``: how often a ``netns`` domain and a
    ``linux`` WIM probe each segment, with how many echo requests, each awaited how long.
    """

    model_config = STRICT
    mode: Annotated[str, BeforeValidator(one_of(MONITORING_MODES, "unknown mode"))] = "normal"
    delta: Annotated[float, within("a finite number from 0", 0, 1e12, high_open=True)] = 0.0
    clear_s: Annotated[float, within("seconds from 0 to 3600", 0, 3600)] = 1.0
    probe_interval_s: Annotated[float, within("seconds from 0.1 to 3600", 0.1, 3600)] = 2.0
    probe_count: Annotated[int, within("a whole number from 1 to 20", 1, 20, integer=True)] = 3
    probe_timeout_s: Annotated[float, within("seconds from 0.01 to 5", 0.01, 5)] = 0.5


class StoreEntry(BaseModel):
    """``store``: where the SP keeps its slices: ``sqlite`` (a file in data_dir) or ``postgresql`` (``dsn``)."""

    model_config = STRICT
    backend: Annotated[str, BeforeValidator(one_of(STORE_BACKENDS, "unknown store backend"))] = "sqlite"
    # A libpq connection string (``host=... port=... dbname=... user=...``) or URI; its password is
    # better kept out of the file (PGPASSWORD or ~/.pgpass, which libpq reads).
    dsn: Annotated[str | None, BeforeValidator(optional(text("must be a libpq connection string")))] = None
    # Several ``serve`` processes of this SP share the database (replicas): locks and state in it.
    replicas: Annotated[bool, BeforeValidator(flag)] = False


def _sub(model: type[BaseModel]) -> Any:
    """A mapping under a key, ``null`` meaning its defaults."""
    return Field(default_factory=model, json_schema_extra=_or_null)


class BrokerFile(BaseModel):
    """A broker config file."""

    model_config = STRICT
    sp_id: Name
    listen: HostPort = "127.0.0.1:0"
    data_dir: FilePath = None
    key_file: FilePath = None
    faults_file: FilePath = None
    hold_time_s: Seconds = 120.0
    lower_timeout_s: Seconds = 10.0
    # Absent (or null): ten times lower_timeout_s.
    activation_timeout_s: Seconds | None = None
    note_ttl_s: Seconds = 3600.0
    reconcile_interval_s: Seconds = 2.0
    lower_sps: Annotated[list[LowerSpEntry], BeforeValidator(or_default([])), OrNull] = Field(default_factory=list)
    # Each entry is read by its domain's schema (``schemas/domain.py``), chosen by its ``type``.
    domains: Annotated[list[dict[str, Any]], BeforeValidator(or_default([])), OrNull] = Field(default_factory=list)
    wim: Annotated[WimEntry, BeforeValidator(or_default({}))] = _sub(WimEntry)
    security: Annotated[SecurityEntry, BeforeValidator(or_default({}))] = _sub(SecurityEntry)
    dataplane: Annotated[DataplaneEntry, BeforeValidator(or_default({}))] = _sub(DataplaneEntry)
    retention: Annotated[RetentionEntry, BeforeValidator(or_default({}))] = _sub(RetentionEntry)
    monitoring: Annotated[MonitoringEntry, BeforeValidator(or_default({}))] = _sub(MonitoringEntry)
    metrics_listen: HostPortOrNone = ""
    # The REST API (TMF641/638/633 shapes, /openapi.json): HTTPS with client certificates.
    rest_listen: HostPortOrNone = ""
    # Hosts the REST hub may POST event callbacks to, besides loopback.
    rest_callback_hosts: Annotated[
        list[Annotated[str, BeforeValidator(text("must be a host name or address"))]],
        BeforeValidator(or_default([])),
        BeforeValidator(listed("a list of host names or addresses")),
        OrNull,
    ] = Field(default_factory=list)
    store: Annotated[StoreEntry, BeforeValidator(or_default({}))] = _sub(StoreEntry)


__all__ = [
    "ALLOWED",
    "MONITORING_MODES",
    "STORE_BACKENDS",
    "WIM_DRIVERS",
    "BrokerFile",
    "DataplaneEntry",
    "LowerSpEntry",
    "MonitoringEntry",
    "RetentionEntry",
    "SecurityEntry",
    "StoreEntry",
    "WimEntry",
]

"""The scenario format (``scenarios/README.md``) as strict pydantic models.

``ScenarioFile`` checks the document and each SP (its broker settings with the broker config's own
types, ``schemas/broker.py``); each step is a mapping with exactly one action, checked by that
action's model in ``STEP_MODELS`` (``{kill: L1}``, ``{sleep: 2}`` and the other shorthands are
read as their long forms first). Types are checked, not coerced (``timeout_s: "10"`` or ``true``
is no number of seconds), unknown keys are refused naming the known ones. What needs the whole
scenario (SP ids that exist, aliases of earlier requests, lower-SPs of the SP named, fault rules,
slice requests and offers in their own formats) ``scenarios/model.py`` checks on the validated
document.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, ClassVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    GetJsonSchemaHandler,
    WithJsonSchema,
    create_model,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from schemas.broker import FilePath, Seconds, StoreEntry, WimEntry, optional
from schemas.checks import flag, listed, one_of, text, within
from schemas.problems import STRICT, Below

ACTIONS = (
    "wait_catalog",
    "set_offer",
    "request",
    "commit",
    "abort",
    "activate",
    "deactivate",
    "terminate",
    "get",
    "expect_idle",
    "kill",
    "stop",
    "cont",
    "resume",
    "restart",
    "wait_crash",
    "faults",
    "partition",
    "heal",
    "expect_everywhere",
    "sleep",
    "probe",
    "dataplane_audit",
    "expect_openstack",
    "degrade",
    "cut",
    "restore",
    "expect_alert",
    "orders",
)
#: How a ``cut``/``restore`` names what it acts on: an emulated domain's link or pop, a netns slice's
#: border veth (the leaf's veth to the border port namespace), or the WIM underlay at a border port.
FAULT_TARGETS = ("target", "port", "underlay")
ALERT_STATUSES = ("firing", "resolved")
PROBE_CHECKS = ("reachability", "order", "isolation", "shaping")
#: What ``expect_everywhere`` may ask for; ``settled`` is any of released, committed, active;
#: "pending": an SP says it waits for an SP below (the truth while one is cut off).
OUTCOMES = ("released", "held", "committed", "active", "pending", "settled")
HEALTH = ("HEALTHY", "DEGRADED")
ERROR_CODES = (
    "INVALID_ARGUMENT",
    "UNAUTHENTICATED",
    "PERMISSION_DENIED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "UNAVAILABLE",
    "DEADLINE_EXCEEDED",
    "INTERNAL",
)
MAX_WAIT_S = 300.0
MAX_SLEEP_S = 60.0
MAX_REPLICAS = 5
MAX_ORDERS = 100_000
MAX_CONCURRENCY = 2_000
MAX_ORDERS_S = 3_600.0

#: What a field takes, said when it is missing.
ALLOWED: dict[str, str] = {
    "name": "a non-empty string",
    "id": "a non-empty string",
    "sps": "a non-empty list of SPs",
    "steps": "a non-empty list of steps",
    "sp": "the id of one of the scenario's SPs",
    "slice": "the alias of an earlier request",
    "as": "the alias this request's slice is known by",
    "from": "a non-empty list of lower-SP ids",
    "slices": "a non-empty list of slice aliases",
    "seconds": f"a number of seconds in (0, {MAX_SLEEP_S:g}]",
}

Name = Annotated[str, BeforeValidator(text("required, a non-empty string"))]
OptionalText = Annotated[str | None, BeforeValidator(optional(text("a string", empty=True)))]
Wait = Annotated[float, within(f"a number of seconds in (0, {MAX_WAIT_S:g}]", 0, MAX_WAIT_S, low_open=True)]
Count = Annotated[int | None, within("a non-negative count", 0, integer=True, check=optional)]
Flag = Annotated[bool, BeforeValidator(flag)]
Names = list[Name]


def _one_string_or_list(say: str, *, nonempty: bool) -> Callable[[object], object]:
    check = listed(say, nonempty=nonempty)
    return lambda value: check([value] if isinstance(value, str) else value)


_ONE_OR_LIST = WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]})
LowerList = Annotated[
    Names, BeforeValidator(_one_string_or_list("a list of lower-SP ids", nonempty=False)), _ONE_OR_LIST
]


class _Args(BaseModel):
    """An action's arguments; ``SHORT`` is the key a lone value (``kill: L1``) stands for."""

    model_config = STRICT
    SHORT: ClassVar[str] = ""
    SHORT_TYPES: ClassVar[tuple[type, ...]] = (str,)
    #: The JSON Schema of the lone value (``SHORT_TYPES`` may take more, to tell it what is wrong).
    SHORT_SCHEMA: ClassVar[dict[str, Any]] = {"type": "string"}

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: object) -> object:
        if cls.SHORT and isinstance(value, cls.SHORT_TYPES):
            return {cls.SHORT: value}
        return value

    @classmethod
    def __get_pydantic_json_schema__(cls, core: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        schema = handler(core)
        return {"anyOf": [schema, cls.SHORT_SCHEMA]} if cls.SHORT else schema


class SpArgs(_Args):
    """``kill``, ``stop``, ``cont``, ``resume``, ``restart``: an SP's process (``kill: L1``)."""

    SHORT = "sp"
    sp: Name


class WaitCrashArgs(SpArgs):
    """``wait_crash``: until the SP's process ends from an injected crash."""

    timeout_s: Wait = 10.0


class HealArgs(SpArgs):
    """``heal``: the SP reaches the lower-SPs it was cut off from (``from``; all when absent)."""

    from_: LowerList | None = Field(None, alias="from")


class PartitionArgs(_Args):
    """``partition``: the SP is cut off from some of its lower-SPs."""

    sp: Name
    from_: Annotated[
        Names, BeforeValidator(_one_string_or_list("a non-empty list of lower-SP ids", nonempty=True)), _ONE_OR_LIST
    ] = Field(alias="from")


class FaultsArgs(_Args):
    """``faults``: arm fault rules (as in the faults file) and partitions at an SP."""

    sp: Name
    rules: Annotated[list[dict[str, Any]], BeforeValidator(listed("a list of fault rules"))] = Field(
        default_factory=list
    )
    partitions: LowerList | None = None


class RequestArgs(_Args):
    """``request``: reserve a slice at an SP, known to later steps by its alias (``as``)."""

    sp: Name
    as_: Name = Field(alias="as")
    slice: dict[str, Any]
    request_id: Annotated[str | None, BeforeValidator(optional(text("a non-empty string")))] = None
    hold_time_s: Annotated[int, within("a whole number of seconds from 0", 0, integer=True)] = 0


class SliceArgs(_Args):
    """``commit``, ``abort``, ``activate``, ``deactivate``, ``terminate``, ``get``: a requested slice."""

    sp: Name
    slice: Name


class ExpectIdleArgs(_Args):
    """``expect_idle``: the SPs hold nothing (``expect_idle: all`` or a list of SP ids)."""

    SHORT = "sps"
    SHORT_TYPES = (str, list)
    SHORT_SCHEMA = {"anyOf": [{"const": "all"}, {"type": "array", "items": {"type": "string"}}]}
    sps: Annotated[str | Names, BeforeValidator(lambda v: v if v == "all" or isinstance(v, list) else _all(v))] = "all"


def _all(value: object) -> object:
    raise ValueError(f"'all' or a list of SP ids, got {value!r}")


class DataplaneAuditArgs(_Args):
    """``dataplane_audit``: nothing the run did not make is left in the kernel (no arguments)."""

    SHORT = "-"  # only for the schema: ``dataplane_audit:`` (null) is the step without arguments
    SHORT_TYPES = ()
    SHORT_SCHEMA = {"type": "null"}

    @model_validator(mode="before")
    @classmethod
    def _none(cls, value: object) -> object:
        return {} if value is None else value


class SleepArgs(_Args):
    """``sleep``: wait (``sleep: 2``)."""

    SHORT = "seconds"
    # Any lone value is meant as the seconds (``sleep: 1h`` is told it is no number).
    SHORT_TYPES = (int, float, str, list)
    SHORT_SCHEMA = {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_SLEEP_S}
    seconds: Annotated[float, within(f"a number of seconds in (0, {MAX_SLEEP_S:g}]", 0, MAX_SLEEP_S, low_open=True)]


class ExpectEverywhereArgs(_Args):
    """``expect_everywhere``: every SP the slice crosses agrees on its outcome (``expect_everywhere: s1``)."""

    SHORT = "slice"
    slice: Name
    outcome: Annotated[str, BeforeValidator(one_of(OUTCOMES, "unknown outcome"))] = "settled"
    timeout_s: Annotated[float, within(f"a number of seconds in [0, {MAX_WAIT_S:g}]", 0, MAX_WAIT_S)] = 0.0
    exclusive: Flag = False


class ProbeArgs(_Args):
    """``probe``: send traffic through slices' data planes and check it."""

    sp: Name
    slices: Annotated[Names, BeforeValidator(listed("a non-empty list of slice aliases", nonempty=True))]
    checks: Annotated[
        list[Annotated[str, BeforeValidator(one_of(PROBE_CHECKS, "unknown check"))]],
        BeforeValidator(listed(f"a non-empty list of {', '.join(PROBE_CHECKS)}", nonempty=True)),
    ] = Field(default_factory=lambda: list(PROBE_CHECKS))


class ExpectOpenstackArgs(_Args):
    """``expect_openstack``: how many networks and Placement consumers an OpenStack leaf has."""

    sp: Name
    networks: Count = None
    consumers: Count = None


_Target = Annotated[str | None, BeforeValidator(optional(text("a non-empty string")))]


class CutArgs(_Args):
    """``cut``, ``restore``: exactly one of target (emulated), port with slice (netns), underlay (WIM)."""

    sp: Name
    domain: OptionalText = None
    target: _Target = None
    port: _Target = None
    slice: _Target = None
    underlay: _Target = None
    latency_ms: Annotated[float, within("a number from 0 to 1e+06", 0, 1e6)] = 0.0
    loss: Annotated[float, within("a number from 0 to 1", 0, 1)] = 0.0

    @model_validator(mode="after")
    def _one_target(self) -> CutArgs:
        named = [k for k in FAULT_TARGETS if getattr(self, k) is not None]
        only = ("target",) if isinstance(self, DegradeArgs) else FAULT_TARGETS
        if len(named) != 1 or named[0] not in only:
            raise ValueError(f"needs exactly one of {', '.join(only)}")
        if named == ["port"] and self.slice is None:
            raise Below([f"slice: required, {ALLOWED['slice']} (a port is a slice's border veth)"])
        return self


class DegradeArgs(CutArgs):
    """``degrade``: an emulated domain's link or pop gets slower or lossy."""

    @model_validator(mode="after")
    def _something(self) -> DegradeArgs:
        if not (self.latency_ms or self.loss):
            raise ValueError("give latency_ms or loss (or both)")
        return self


class ExpectAlertArgs(_Args):
    """``expect_alert``: an alert about a slice reaches the SP."""

    sp: Name
    slice: Name
    status: Annotated[str, BeforeValidator(one_of(ALERT_STATUSES, "unknown status"))] = "firing"
    source_sp: OptionalText = None
    cause: OptionalText = None
    within_s: Wait = 3.0
    count: Count = None


class KillReplicaArgs(_Args):
    """``orders.kill``: one broker process (an SP ``M1``, or a replica ``T#2``) killed -9 during the orders."""

    SHORT = "sp"
    sp: Name
    after: Annotated[int, within("a whole number of answered orders from 0", 0, integer=True)] = 0
    # How long it stays down before it is started again (0: it stays down).
    restart_after_s: Annotated[float, within(f"a number of seconds in [0, {MAX_SLEEP_S:g}]", 0, MAX_SLEEP_S)] = 1.0


class OrdersArgs(_Args):
    """``orders``: many customers order slices (Reserve, then Commit) at an SP, spread over its replicas.

    Checked afterwards at every SP: each order one committed slice (none lost, none twice), every slice
    of the orders committed at every SP on its path or released everywhere, no label twice on a port,
    every request id answered with the same slice by every replica; then (``terminate``) all ended.
    """

    sp: Name
    slice: dict[str, Any]
    count: Annotated[int, within(f"a whole number from 1 to {MAX_ORDERS}", 1, MAX_ORDERS, integer=True)]
    concurrency: Annotated[
        int, within(f"a whole number from 1 to {MAX_CONCURRENCY}", 1, MAX_CONCURRENCY, integer=True)
    ] = 50
    hold_time_s: Annotated[int, within("a whole number of seconds from 1", 1, integer=True)] = 60
    # One process killed -9 during the orders, or several (each when its ``after`` is reached).
    kill: KillReplicaArgs | list[KillReplicaArgs] | None = None
    terminate: Flag = False
    # For all the orders together (the checks after them are bounded per call).
    timeout_s: Annotated[
        float, within(f"a number of seconds in (0, {MAX_ORDERS_S:g}]", 0, MAX_ORDERS_S, low_open=True)
    ] = 900.0


class WaitCatalogArgs(_Args):
    """``wait_catalog``: terminals appear in (or vanish from) the SP's catalog."""

    sp: Name
    terminals: Annotated[Names, BeforeValidator(listed("a list of terminal ids"))] = Field(default_factory=list)
    absent: Annotated[Names, BeforeValidator(listed("a list of terminal ids"))] = Field(default_factory=list)
    timeout_s: Wait = 30.0

    @model_validator(mode="after")
    def _something(self) -> WaitCatalogArgs:
        if not (self.terminals or self.absent):
            raise ValueError("needs terminals (to appear) or absent (to disappear), or both")
        return self


class SetOfferArgs(_Args):
    """``set_offer``: a domain's offer policy changes (``offer`` in the authoring format)."""

    sp: Name
    domain: OptionalText = None
    offer: dict[str, Any] = Field(default_factory=dict)


#: Each action's arguments.
ARGS: dict[str, type[_Args]] = {
    "wait_catalog": WaitCatalogArgs,
    "set_offer": SetOfferArgs,
    "request": RequestArgs,
    **dict.fromkeys(("commit", "abort", "activate", "deactivate", "terminate", "get"), SliceArgs),
    "expect_idle": ExpectIdleArgs,
    **dict.fromkeys(("kill", "stop", "cont", "resume", "restart"), SpArgs),
    "wait_crash": WaitCrashArgs,
    "faults": FaultsArgs,
    "partition": PartitionArgs,
    "heal": HealArgs,
    "expect_everywhere": ExpectEverywhereArgs,
    "sleep": SleepArgs,
    "probe": ProbeArgs,
    "dataplane_audit": DataplaneAuditArgs,
    "expect_openstack": ExpectOpenstackArgs,
    "degrade": DegradeArgs,
    "cut": CutArgs,
    "restore": CutArgs,
    "expect_alert": ExpectAlertArgs,
    "orders": OrdersArgs,
}


class ExpectFile(BaseModel):
    """A step's ``expect``: the state or error it must see, and what must hold of the slice."""

    model_config = STRICT
    state: OptionalText = None  # a SliceState name, checked by scenarios/model.py (it knows the API)
    error: Annotated[str | None, BeforeValidator(optional(one_of(ERROR_CODES, "unknown status code")))] = None
    message_contains: OptionalText = None
    leaf_sps_min: Count = None
    leaf_sps_include: Annotated[Names, BeforeValidator(listed("must be a list of SP ids"))] = Field(
        default_factory=list
    )
    leaf_sps_exclude: Annotated[Names, BeforeValidator(listed("must be a list of SP ids"))] = Field(
        default_factory=list
    )
    labels_agree: Flag = False
    same_slice_as: OptionalText = None
    health: Annotated[str | None, BeforeValidator(optional(one_of(HEALTH, "unknown health")))] = None

    @model_validator(mode="after")
    def _state_or_error(self) -> ExpectFile:
        if self.state and self.error:
            raise ValueError("expect either a state or an error, not both")
        return self


class StepBase(BaseModel):
    """What every step has besides its action: a name, what to expect, whether it runs after a failure."""

    model_config = STRICT
    name: OptionalText = None
    expect: ExpectFile | None = None
    always: Flag = False


def _step_model(action: str) -> type[StepBase]:
    # The action's key is required: it says which step this is (``dataplane_audit:`` may be null).
    fields: dict[str, Any] = {action: (ARGS[action], ...)}
    return create_model(f"Step_{action}", __base__=StepBase, **fields)


#: A step of each action: ``{<action>: <its arguments>, name, expect, always}``.
STEP_MODELS: dict[str, type[StepBase]] = {action: _step_model(action) for action in ACTIONS}


class SpFile(BaseModel):
    """``sps[]``: an SP of the federation, its lower-SPs, fault rules, and broker settings."""

    model_config = STRICT
    id: Name
    lower: Annotated[Names, BeforeValidator(listed("a list of SP ids"))] = Field(default_factory=list)
    # Rules as in the faults file (``fedbroker faults list``), read by broker.core.faults.
    faults: Annotated[list[dict[str, Any]], BeforeValidator(optional(listed("a list of fault rules")))] | None = None
    hold_time_s: Seconds | None = None
    lower_timeout_s: Seconds | None = None
    activation_timeout_s: Seconds | None = None
    note_ttl_s: Seconds | None = None
    reconcile_interval_s: Seconds | None = None
    # Each entry is a broker config's domains[i], read by its domain schema when the SP starts.
    domains: Annotated[list[dict[str, Any]], BeforeValidator(optional(listed("must be a list")))] | None = None
    wim: WimEntry | None = None
    # ``backend: postgresql`` without a ``dsn``: the runner starts a throw-away PostgreSQL for the run.
    store: StoreEntry | None = None
    # How many broker processes run this SP (one identity, one PostgreSQL database): ``T``, ``T#2``, ...
    replicas: Annotated[int, within(f"a whole number from 1 to {MAX_REPLICAS}", 1, MAX_REPLICAS, integer=True)] = 1


#: The broker settings an SP entry may carry (its config file's, as ``sps[i]`` states them).
SP_SETTINGS = tuple(k for k in SpFile.model_fields if k not in ("id", "lower", "faults", "replicas"))


class ScenarioFile(BaseModel):
    """A scenario: its SPs and its steps (each checked by its action's model, ``STEP_MODELS``)."""

    model_config = STRICT
    name: Name
    description: Annotated[str, BeforeValidator(text("a string", empty=True))] = ""
    sps: Annotated[list[SpFile], BeforeValidator(listed("a non-empty list of SPs", nonempty=True))]
    steps: Annotated[list[dict[str, Any]], BeforeValidator(listed("a non-empty list of steps", nonempty=True))]


__all__ = [
    "ACTIONS",
    "ALERT_STATUSES",
    "ALLOWED",
    "ARGS",
    "ERROR_CODES",
    "FAULT_TARGETS",
    "MAX_REPLICAS",
    "MAX_SLEEP_S",
    "MAX_WAIT_S",
    "OUTCOMES",
    "PROBE_CHECKS",
    "SP_SETTINGS",
    "STEP_MODELS",
    "ExpectFile",
    "FilePath",
    "ScenarioFile",
    "SpFile",
    "StepBase",
]

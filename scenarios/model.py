"""The scenario format: SPs of a federation and the steps to run against it. Errors name their path."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker.api.request_file import slice_request_from_data
from broker.core.faults import parse_rules
from broker.descriptors import ConfigError, load_yaml
from capability_catalog.authoring import OfferPolicy
from fedbroker.v1 import northsouth_pb2 as pb
from schemas.note import parse_policy

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
)
#: How a ``cut``/``restore`` names what it acts on: an emulated domain's link or pop, a netns slice's
#: border veth (the leaf's veth to the border port namespace), or the WIM underlay at a border port.
FAULT_TARGETS = ("target", "port", "underlay")
ALERT_STATUSES = ("firing", "resolved")
PROBE_CHECKS = ("reachability", "order", "isolation", "shaping")
STATES = {n.removeprefix("SLICE_STATE_") for n in pb.SliceState.keys() if not n.endswith("UNSPECIFIED")}  # noqa: SIM118
ERROR_CODES = {
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
}
_SP_SETTINGS = {
    "hold_time_s",
    "lower_timeout_s",
    "activation_timeout_s",
    "note_ttl_s",
    "reconcile_interval_s",
    "domains",
    "wim",
}
#: What ``expect_everywhere`` can ask for; ``settled`` is any of released, committed, active.
#: What expect_everywhere may ask for; "pending": an SP says it waits for an SP below (the truth while one is cut off).
OUTCOMES = ("released", "held", "committed", "active", "pending", "settled")
MAX_WAIT_S = 300.0
_EXPECT_KEYS = {
    "state",
    "error",
    "message_contains",
    "leaf_sps_min",
    "leaf_sps_include",
    "leaf_sps_exclude",
    "labels_agree",
    "same_slice_as",
    "health",
}
MAX_SLEEP_S = 60.0


class ScenarioError(ConfigError):
    """The scenario file is wrong; the message names the path of the bad field."""


@dataclass(frozen=True)
class SpSpec:
    """One SP of the federation."""

    id: str
    lower: tuple[str, ...]
    settings: Mapping[str, Any]
    faults: tuple[Mapping[str, Any], ...] = ()  # rules armed from the start (the SP's faults file)


@dataclass(frozen=True)
class Expect:
    """What a step must observe."""

    state: str | None = None
    error: str | None = None
    message_contains: str | None = None
    leaf_sps_min: int | None = None
    leaf_sps_include: tuple[str, ...] = ()
    leaf_sps_exclude: tuple[str, ...] = ()
    labels_agree: bool = False
    same_slice_as: str | None = None
    health: str | None = None  # HEALTHY or DEGRADED


@dataclass(frozen=True)
class Step:
    """One step: an action with its arguments and what to expect."""

    name: str
    action: str
    args: Mapping[str, Any]
    expect: Expect = Expect()
    always: bool = False
    request: pb.SliceRequest | None = None
    offer: OfferPolicy | None = None


@dataclass(frozen=True)
class Scenario:
    """A whole scenario."""

    name: str
    description: str
    sps: tuple[SpSpec, ...]
    steps: tuple[Step, ...]
    source: Path | None = None
    ports: Mapping[str, str] = field(default_factory=dict)  # port id -> peer port id, from leaf domains
    swapping: frozenset[str] = frozenset()

    @property
    def uses_dataplane(self) -> bool:
        """True when an SP has a ``netns`` domain or the ``linux`` WIM: the run then needs a data-plane prefix."""
        for sp in self.sps:
            wim = sp.settings.get("wim")
            if isinstance(wim, Mapping) and wim.get("driver") == "linux":
                return True
            for dom in sp.settings.get("domains") or []:
                if isinstance(dom, Mapping) and dom.get("type") == "netns":
                    return True
        return False

    def sp(self, sp_id: str) -> SpSpec:
        """The SP with that id."""
        return next(s for s in self.sps if s.id == sp_id)

    @property
    def lowers(self) -> dict[str, tuple[str, ...]]:
        """Each SP's lower-SPs."""
        return {s.id: s.lower for s in self.sps}

    @property
    def fault_sps(self) -> frozenset[str]:
        """SPs that get a faults file: those with ``faults`` rules, or named by a faults/partition/heal step."""
        named = {str(st.args["sp"]) for st in self.steps if st.action in ("faults", "partition", "heal")}
        return frozenset(named | {s.id for s in self.sps if s.faults})

    def start_order(self) -> list[list[str]]:
        """Start waves, bottom-up: each SP after all its lower-SPs; SPs of one wave start together."""
        started: set[str] = set()
        waves: list[list[str]] = []
        remaining = {s.id: set(s.lower) for s in self.sps}
        while remaining:
            wave = sorted(sp for sp, lowers in remaining.items() if lowers <= started)
            if not wave:
                raise ScenarioError(f"sps: the lower relation has a cycle among {sorted(remaining)}")
            waves.append(wave)
            started.update(wave)
            for sp in wave:
                del remaining[sp]
        return waves


def _mapping(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ScenarioError(f"{path}: must be a mapping")
    return value


def _str(d: Mapping[str, Any], key: str, path: str) -> str:
    value = d.get(key)
    if not isinstance(value, str) or not value:
        raise ScenarioError(f"{path}.{key}: required, a non-empty string")
    return value


def _unknown(d: Mapping[str, Any], known: set[str], path: str) -> None:
    extra = sorted(set(d) - known)
    if extra:
        raise ScenarioError(f"{path}.{extra[0]}: unknown key (known: {', '.join(sorted(known))})")


def _parse_rules(raw: Any, path: str, id_prefix: str) -> tuple[Mapping[str, Any], ...]:
    """Fault rules as in the faults file (``fedbroker faults list``), each given a run-unique id if it has none.

    A rule that fired is spent for good (``<faults file>.fired``), so ids must not repeat across steps.
    """
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ScenarioError(f"{path}: a list of fault rules")
    rules = []
    for j, r in enumerate(raw):
        if not isinstance(r, Mapping):
            raise ScenarioError(f"{path}[{j}]: must be a mapping")
        rules.append({**r, "id": str(r.get("id") or f"{id_prefix}r{j}")})
    try:
        parse_rules({"rules": rules}, "@")
    except ValueError as exc:
        raise ScenarioError(str(exc).replace("@.rules", path, 1)) from None
    return tuple(rules)


def _lower_list(args: Mapping[str, Any], key: str, path: str, lowers: tuple[str, ...], *, required: bool) -> list[str]:
    value = args.get(key)
    if value is None and not required:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or (required and not value):
        raise ScenarioError(f"{path}.{key}: a {'non-empty ' if required else ''}list of lower-SP ids")
    for j, lo in enumerate(value):
        if lo not in lowers:
            known = ", ".join(lowers) or "none"
            raise ScenarioError(f"{path}.{key}[{j}]: {lo!r} is not a lower-SP of {args['sp']} (its lower-SPs: {known})")
    return [str(lo) for lo in value]


def _parse_expect(raw: Any, path: str) -> Expect:
    if raw is None:
        return Expect()
    d = _mapping(raw, path)
    _unknown(d, _EXPECT_KEYS, path)
    state = d.get("state")
    if state is not None and state not in STATES:
        raise ScenarioError(f"{path}.state: unknown state {state!r} (known: {', '.join(sorted(STATES))})")
    error = d.get("error")
    if error is not None and error not in ERROR_CODES:
        raise ScenarioError(f"{path}.error: unknown status code {error!r}")
    if state and error:
        raise ScenarioError(f"{path}: expect either a state or an error, not both")
    minimum = d.get("leaf_sps_min")
    if minimum is not None and (not isinstance(minimum, int) or minimum < 0):
        raise ScenarioError(f"{path}.leaf_sps_min: must be a non-negative integer")
    include = d.get("leaf_sps_include", [])
    if not isinstance(include, list):
        raise ScenarioError(f"{path}.leaf_sps_include: must be a list of SP ids")
    avoided = d.get("leaf_sps_exclude", [])
    if not isinstance(avoided, list):
        raise ScenarioError(f"{path}.leaf_sps_exclude: must be a list of SP ids")
    health = d.get("health")
    if health is not None and health not in ("HEALTHY", "DEGRADED"):
        raise ScenarioError(f"{path}.health: HEALTHY or DEGRADED")
    return Expect(
        health=health,
        state=state,
        error=error,
        message_contains=d.get("message_contains"),
        leaf_sps_min=minimum,
        leaf_sps_include=tuple(include),
        leaf_sps_exclude=tuple(avoided),
        labels_agree=bool(d.get("labels_agree", False)),
        same_slice_as=d.get("same_slice_as"),
    )


def _parse_step(raw: Any, i: int, lowers: Mapping[str, tuple[str, ...]], aliases: set[str]) -> Step:
    path = f"steps[{i}]"
    d = _mapping(raw, path)
    actions = [a for a in ACTIONS if a in d]
    if len(actions) != 1:
        raise ScenarioError(f"{path}: needs exactly one action of {', '.join(ACTIONS)}; found {actions or 'none'}")
    action = actions[0]
    _unknown(d, {"name", "expect", "always", action}, path)
    args = d[action]
    apath = f"{path}.{action}"
    sp_ids = set(lowers)
    if action == "expect_idle":
        args = {"sps": args} if isinstance(args, str | list) else _mapping(args, apath)
        sps = args.get("sps", "all")
        if sps != "all":
            if not isinstance(sps, list):
                raise ScenarioError(f"{apath}.sps: 'all' or a list of SP ids")
            for j, sp in enumerate(sps):
                if sp not in sp_ids:
                    raise ScenarioError(f"{apath}.sps[{j}]: unknown SP {sp!r}")
    elif action == "dataplane_audit":
        args = _mapping(args or {}, apath)
        _unknown(args, set(), apath)
    elif action == "sleep":
        args = {"seconds": args} if isinstance(args, int | float) else _mapping(args, apath)
        secs = args.get("seconds")
        if isinstance(secs, bool) or not isinstance(secs, int | float) or not 0 < secs <= MAX_SLEEP_S:
            raise ScenarioError(f"{apath}.seconds: a number of seconds in (0, {MAX_SLEEP_S:g}]")
    elif action == "expect_everywhere":
        args = {"slice": args} if isinstance(args, str) else _mapping(args, apath)
        _unknown(args, {"slice", "outcome", "timeout_s", "exclusive"}, apath)
        alias = _str(args, "slice", apath)
        if alias not in aliases:
            raise ScenarioError(f"{apath}.slice: {alias!r} is not the alias of an earlier request")
        outcome = args.get("outcome", "settled")
        if outcome not in OUTCOMES:
            raise ScenarioError(f"{apath}.outcome: one of {', '.join(OUTCOMES)}")
        wait = args.get("timeout_s", 0)
        if isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 <= wait <= MAX_WAIT_S:
            raise ScenarioError(f"{apath}.timeout_s: a number of seconds in [0, {MAX_WAIT_S:g}]")
        if not isinstance(args.get("exclusive", False), bool):
            raise ScenarioError(f"{apath}.exclusive: true or false")
    else:
        simple = ("kill", "stop", "cont", "resume", "restart", "wait_crash", "heal")
        args = {"sp": args} if action in simple and isinstance(args, str) else args
        args = _mapping(args, apath)
        sp = _str(args, "sp", apath)
        if sp not in sp_ids:
            raise ScenarioError(f"{apath}.sp: unknown SP {sp!r} (known: {', '.join(sorted(sp_ids))})")
    if action == "faults":
        _unknown(args, {"sp", "rules", "partitions"}, apath)
        args = {
            "sp": args["sp"],
            "rules": list(_parse_rules(args.get("rules", []), f"{apath}.rules", f"{args['sp']}-s{i}")),
            "partitions": _lower_list(args, "partitions", apath, lowers[args["sp"]], required=False),
        }
    elif action == "partition":
        _unknown(args, {"sp", "from"}, apath)
        args = {"sp": args["sp"], "from": _lower_list(args, "from", apath, lowers[args["sp"]], required=True)}
    elif action == "heal":
        _unknown(args, {"sp", "from"}, apath)
        args = {"sp": args["sp"], "from": _lower_list(args, "from", apath, lowers[args["sp"]], required=False)}
    elif action == "wait_crash":
        _unknown(args, {"sp", "timeout_s"}, apath)
        wait = args.get("timeout_s", 10)
        if isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 < wait <= MAX_WAIT_S:
            raise ScenarioError(f"{apath}.timeout_s: a number of seconds in (0, {MAX_WAIT_S:g}]")
    elif action in ("kill", "stop", "cont", "resume", "restart"):
        _unknown(args, {"sp"}, apath)
    request = None
    offer: OfferPolicy | None = None
    if action == "request":
        _unknown(args, {"sp", "as", "slice", "request_id", "hold_time_s"}, apath)
        alias = _str(args, "as", apath)
        if alias in aliases:
            raise ScenarioError(f"{apath}.as: alias {alias!r} is used twice")
        aliases.add(alias)
        request = slice_request_from_data(_mapping(args.get("slice"), f"{apath}.slice"), path=f"{apath}.slice")
    elif action in ("commit", "abort", "activate", "deactivate", "terminate", "get"):
        _unknown(args, {"sp", "slice"}, apath)
        alias = _str(args, "slice", apath)
        if alias not in aliases:
            raise ScenarioError(f"{apath}.slice: {alias!r} is not the alias of an earlier request")
    elif action == "probe":
        _unknown(args, {"sp", "slices", "checks"}, apath)
        names = args.get("slices")
        if not isinstance(names, list) or not names:
            raise ScenarioError(f"{apath}.slices: a non-empty list of slice aliases")
        for j, alias in enumerate(names):
            if alias not in aliases:
                raise ScenarioError(f"{apath}.slices[{j}]: {alias!r} is not the alias of an earlier request")
        checks = args.get("checks", list(PROBE_CHECKS))
        if not isinstance(checks, list) or not checks:
            raise ScenarioError(f"{apath}.checks: a non-empty list of {', '.join(PROBE_CHECKS)}")
        for j, check in enumerate(checks):
            if check not in PROBE_CHECKS:
                raise ScenarioError(f"{apath}.checks[{j}]: unknown check {check!r} (known: {', '.join(PROBE_CHECKS)})")
    elif action == "expect_openstack":
        _unknown(args, {"sp", "networks", "consumers"}, apath)
        for key in ("networks", "consumers"):
            value = args.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ScenarioError(f"{apath}.{key}: a non-negative count")
    elif action in ("degrade", "cut", "restore"):
        args = _fault_args(action, args, apath, aliases)
    elif action == "expect_alert":
        _unknown(args, {"sp", "slice", "status", "source_sp", "cause", "within_s", "count"}, apath)
        alias = _str(args, "slice", apath)
        if alias not in aliases:
            raise ScenarioError(f"{apath}.slice: {alias!r} is not the alias of an earlier request")
        if args.get("status", "firing") not in ALERT_STATUSES:
            raise ScenarioError(f"{apath}.status: one of {', '.join(ALERT_STATUSES)}")
        wait = args.get("within_s", 3)
        if isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 < wait <= MAX_WAIT_S:
            raise ScenarioError(f"{apath}.within_s: a number of seconds in (0, {MAX_WAIT_S:g}]")
        count = args.get("count")
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
            raise ScenarioError(f"{apath}.count: a non-negative count")
        for key in ("source_sp", "cause"):
            if key in args and not isinstance(args[key], str):
                raise ScenarioError(f"{apath}.{key}: a string")
    elif action == "wait_catalog":
        _unknown(args, {"sp", "terminals", "absent", "timeout_s"}, apath)
        for key in ("terminals", "absent"):
            value = args.get(key, [])
            if not isinstance(value, list) or not all(isinstance(t, str) and t for t in value):
                raise ScenarioError(f"{apath}.{key}: a list of terminal ids")
        if not args.get("terminals") and not args.get("absent"):
            raise ScenarioError(f"{apath}: needs terminals (to appear) or absent (to disappear), or both")
    elif action == "set_offer":
        _unknown(args, {"sp", "domain", "offer"}, apath)
        offer, problems = parse_policy(args.get("offer", {}), f"{apath}.offer")
        if problems:
            raise ScenarioError(problems[0])
    expect = _parse_expect(d.get("expect"), f"{path}.expect")
    if expect.same_slice_as is not None and expect.same_slice_as not in aliases:
        raise ScenarioError(f"{path}.expect.same_slice_as: unknown alias {expect.same_slice_as!r}")
    return Step(
        name=str(d.get("name") or f"{action} #{i}"),
        action=action,
        args=args,
        expect=expect,
        always=bool(d.get("always", False)),
        request=request,
        offer=offer,
    )


def _fault_args(action: str, args: Mapping[str, Any], apath: str, aliases: set[str]) -> Mapping[str, Any]:
    """``degrade``/``cut``/``restore``: exactly one of target (emulated), port with slice (netns), underlay (WIM)."""
    _unknown(args, {"sp", "domain", "target", "port", "slice", "underlay", "latency_ms", "loss"}, apath)
    named = [k for k in FAULT_TARGETS if k in args]
    if len(named) != 1 or (action == "degrade" and named != ["target"]):
        allowed = "target" if action == "degrade" else ", ".join(FAULT_TARGETS)
        raise ScenarioError(f"{apath}: needs exactly one of {allowed}")
    for key in named:
        if not isinstance(args[key], str) or not args[key]:
            raise ScenarioError(f"{apath}.{key}: a non-empty string")
    if named == ["port"]:
        alias = _str(args, "slice", apath)
        if alias not in aliases:
            raise ScenarioError(f"{apath}.slice: {alias!r} is not the alias of an earlier request")
    for key, high in (("latency_ms", 1e6), ("loss", 1.0)):
        value = args.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= high:
            raise ScenarioError(f"{apath}.{key}: a number from 0 to {high:g}")
    if action == "degrade" and not (args.get("latency_ms") or args.get("loss")):
        raise ScenarioError(f"{apath}: give latency_ms or loss (or both)")
    return args


def parse_scenario(data: Any, source: Path | None = None) -> Scenario:
    """Validate a parsed scenario document."""
    d = _mapping(data, "scenario")
    _unknown(d, {"name", "description", "sps", "steps"}, "scenario")
    name = _str(d, "name", "scenario")
    raw_sps = d.get("sps")
    if not isinstance(raw_sps, list) or not raw_sps:
        raise ScenarioError("sps: a non-empty list of SPs")
    sps = []
    ids: set[str] = set()
    ports: dict[str, str] = {}
    swapping: set[str] = set()
    for i, raw in enumerate(raw_sps):
        path = f"sps[{i}]"
        sd = _mapping(raw, path)
        _unknown(sd, {"id", "lower", "faults", *_SP_SETTINGS}, path)
        sp_id = _str(sd, "id", path)
        if sp_id in ids:
            raise ScenarioError(f"{path}.id: {sp_id!r} is used twice")
        ids.add(sp_id)
        lower = sd.get("lower", [])
        if not isinstance(lower, list):
            raise ScenarioError(f"{path}.lower: a list of SP ids")
        if not lower and not sd.get("domains"):
            raise ScenarioError(f"{path}: an SP needs lower SPs or domains")
        for dom in sd.get("domains") or []:
            for port in (dom.get("ports") or []) if isinstance(dom, Mapping) else []:
                if isinstance(port, Mapping) and "id" in port:
                    ports[str(port["id"])] = str(port.get("peer_port", ""))
                    if port.get("can_swap"):
                        swapping.add(str(port["id"]))
        settings = {k: v for k, v in sd.items() if k in _SP_SETTINGS}
        faults = _parse_rules(sd.get("faults"), f"{path}.faults", f"{sp_id}-cfg")
        sps.append(SpSpec(sp_id, tuple(lower), settings, faults))
    for i, sp in enumerate(sps):
        for j, lo in enumerate(sp.lower):
            if lo not in ids:
                raise ScenarioError(f"sps[{i}].lower[{j}]: unknown SP {lo!r}")
    raw_steps = d.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise ScenarioError("steps: a non-empty list of steps")
    aliases: set[str] = set()
    lowers = {sp.id: sp.lower for sp in sps}
    steps = tuple(_parse_step(raw, i, lowers, aliases) for i, raw in enumerate(raw_steps))
    scenario = Scenario(name, str(d.get("description", "")), tuple(sps), steps, source, ports, frozenset(swapping))
    scenario.start_order()  # refuses cycles now, not half-way through a run
    return scenario


def load_scenario(path: Path) -> Scenario:
    """Read and validate a scenario file."""
    try:
        return parse_scenario(load_yaml(path), source=path)
    except ScenarioError as exc:
        raise ScenarioError(f"{path}: {exc}") from None
    except ConfigError as exc:
        if str(exc).startswith(str(path)):
            raise
        raise ScenarioError(f"{path}: {exc}") from None


def aliases(steps: Sequence[Step]) -> list[str]:
    """Aliases of every slice the scenario requests, in order."""
    return [str(s.args["as"]) for s in steps if s.action == "request"]

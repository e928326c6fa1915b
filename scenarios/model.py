"""The scenario format: SPs of a federation and the steps to run against it. Errors name their path.

The strict models of ``schemas/scenario.py`` check the document, each SP and each step (types not
coerced, unknown keys refused naming the known ones; every such problem told at once); what needs
the whole scenario (SP ids, aliases of earlier requests, lower-SPs, fault rules, slice requests,
offers) is checked here, on the validated document.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from broker.api.request_file import slice_request_from_data
from broker.core.faults import parse_rules
from broker.descriptors import ConfigError, load_yaml
from capability_catalog.authoring import OfferPolicy
from fedbroker.v1 import northsouth_pb2 as pb
from schemas.note import parse_policy
from schemas.problems import problems
from schemas.scenario import (
    ACTIONS,
    ALLOWED,
    SP_SETTINGS,
    STEP_MODELS,
    ExpectFile,
    ScenarioFile,
    StepBase,
)

STATES = {n.removeprefix("SLICE_STATE_") for n in pb.SliceState.keys() if not n.endswith("UNSPECIFIED")}  # noqa: SIM118


class ScenarioError(ConfigError):
    """The scenario file is wrong; the message names the path of the bad field."""


@dataclass(frozen=True)
class SpSpec:
    """One SP of the federation."""

    id: str
    lower: tuple[str, ...]
    settings: Mapping[str, Any]
    faults: tuple[Mapping[str, Any], ...] = ()  # rules armed from the start (the SP's faults file)
    replicas: int = 1  # broker processes of this SP: ``T``, then ``T#2``, ``T#3``, ... (one database)

    @property
    def processes(self) -> tuple[str, ...]:
        """The names of the SP's broker processes, as steps that act on a process name them."""
        return (self.id, *(f"{self.id}#{n}" for n in range(2, self.replicas + 1)))


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


#: Steps that act on (or read) one broker process: they may name an SP's replica (``T#2``).
PROCESS_ACTIONS = frozenset({"kill", "stop", "cont", "resume", "restart", "wait_crash", "wait_catalog"})


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
    def uses_postgresql(self) -> bool:
        """True when an SP keeps its store in PostgreSQL without naming a database: the run starts one."""
        return any(
            _store(sp.settings).get("backend") == "postgresql" and not _store(sp.settings).get("dsn") for sp in self.sps
        )

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


def _store(settings: Mapping[str, Any]) -> Mapping[str, Any]:
    store = settings.get("store")
    return store if isinstance(store, Mapping) else {}


def _problems(model: type[BaseModel], data: object, path: str) -> tuple[Any, list[str]]:
    """``data`` read by ``model``, or None and every problem as ``path: message``."""
    try:
        return model.model_validate(data), []
    except ValidationError as exc:
        return None, problems(exc, path, root=model, allowed=ALLOWED)


def _refuse(found: Sequence[str]) -> ScenarioError:
    """Every problem on a line of its own; the first one's path is the error's ``field``."""
    return ScenarioError("\n".join(found), field=found[0].partition(": ")[0])


def _known(alias: str, aliases: set[str], where: str) -> None:
    if alias not in aliases:
        raise ScenarioError(f"{where}: {alias!r} is not the alias of an earlier request", field=where)


def _parse_rules(raw: Any, path: str, id_prefix: str) -> tuple[Mapping[str, Any], ...]:
    """Fault rules as in the faults file (``fedbroker faults list``), each given a run-unique id if it has none.

    A rule that fired is spent for good (``<faults file>.fired``), so ids must not repeat across steps.
    """
    rules = [{**r, "id": str(r.get("id") or f"{id_prefix}r{j}")} for j, r in enumerate(raw or ())]
    try:
        parse_rules({"rules": rules}, "@")
    except ValueError as exc:
        raise ScenarioError(str(exc).replace("@.rules", path, 1)) from None
    return tuple(rules)


def _lower_list(names: Sequence[str], key: str, path: str, sp: str, lowers: tuple[str, ...]) -> list[str]:
    for j, lo in enumerate(names):
        if lo not in lowers:
            known = ", ".join(lowers) or "none"
            raise ScenarioError(f"{path}.{key}[{j}]: {lo!r} is not a lower-SP of {sp} (its lower-SPs: {known})")
    return list(names)


def _expect(m: ExpectFile | None, path: str, aliases: set[str]) -> Expect:
    if m is None:
        return Expect()
    if m.state is not None and m.state not in STATES:
        raise ScenarioError(f"{path}.state: unknown state {m.state!r} (known: {', '.join(sorted(STATES))})")
    if m.same_slice_as is not None and m.same_slice_as not in aliases:
        raise ScenarioError(f"{path}.same_slice_as: unknown alias {m.same_slice_as!r}")
    return Expect(
        health=m.health,
        state=m.state,
        error=m.error,
        message_contains=m.message_contains,
        leaf_sps_min=m.leaf_sps_min,
        leaf_sps_include=tuple(m.leaf_sps_include),
        leaf_sps_exclude=tuple(m.leaf_sps_exclude),
        labels_agree=m.labels_agree,
        same_slice_as=m.same_slice_as,
    )


def _process(name: str, where: str, processes: Mapping[str, str]) -> str:
    """The SP whose broker process ``name`` is (``T#2`` is T's second replica)."""
    if name not in processes:
        known = ", ".join(sorted(processes))
        raise ScenarioError(f"{where}: unknown SP or replica {name!r} (known: {known})", field=where)
    return processes[name]


def _step(
    m: StepBase,
    action: str,
    i: int,
    lowers: Mapping[str, tuple[str, ...]],
    aliases: set[str],
    processes: Mapping[str, str],
) -> Step:
    """A validated step, checked against the scenario: its SP, the aliases before it, the SP's lower-SPs.

    ``processes`` maps each broker process name (an SP id, or ``SP#n`` for its n-th replica) to its SP.
    """
    apath = f"steps[{i}].{action}"
    model = getattr(m, action)
    # The arguments as written (shorthands in their long form), for the runner.
    args: dict[str, Any] = model.model_dump(by_alias=True, exclude_unset=True)
    sp = str(args.get("sp", ""))
    if "sp" in args and action in PROCESS_ACTIONS:
        _process(sp, f"{apath}.sp", processes)
    elif "sp" in args and sp not in lowers:
        raise ScenarioError(f"{apath}.sp: unknown SP {sp!r} (known: {', '.join(sorted(lowers))})")
    if action == "expect_idle" and isinstance(model.sps, list):
        for j, name in enumerate(model.sps):
            if name not in lowers:
                raise ScenarioError(f"{apath}.sps[{j}]: unknown SP {name!r}")
    # A slice's alias (a ``cut`` of a port names the slice whose border veth it is).
    cuts_port = action not in ("degrade", "cut", "restore") or "port" in args
    names_alias = action not in ("request", "orders") and cuts_port
    if "slice" in args and names_alias:
        _known(args["slice"], aliases, f"{apath}.slice")
    for j, alias in enumerate(args["slices"] if action == "probe" else ()):
        _known(alias, aliases, f"{apath}.slices[{j}]")
    if action == "faults":
        args = {
            "sp": sp,
            "rules": list(_parse_rules(model.rules, f"{apath}.rules", f"{sp}-s{i}")),
            "partitions": _lower_list(model.partitions or [], "partitions", apath, sp, lowers[sp]),
        }
    elif action in ("partition", "heal"):
        args = {"sp": sp, "from": _lower_list(model.from_ or [], "from", apath, sp, lowers[sp])}
    request = None
    offer: OfferPolicy | None = None
    if action == "orders":
        request = slice_request_from_data(model.slice, path=f"{apath}.slice")
        args.setdefault("count", model.count)
        args["concurrency"] = model.concurrency
        args["hold_time_s"] = model.hold_time_s
        args["timeout_s"] = model.timeout_s
        kills = model.kill if isinstance(model.kill, list) else [] if model.kill is None else [model.kill]
        for j, kill in enumerate(kills):
            where = f"{apath}.kill" + (f"[{j}]" if isinstance(model.kill, list) else "")
            _process(kill.sp, f"{where}.sp", processes)
        args["kill"] = [kill.model_dump() for kill in kills]
    if action == "request":
        if model.as_ in aliases:
            raise ScenarioError(f"{apath}.as: alias {model.as_!r} is used twice")
        aliases.add(model.as_)
        request = slice_request_from_data(model.slice, path=f"{apath}.slice")
    elif action == "set_offer":
        offer, found = parse_policy(model.offer, f"{apath}.offer")
        if found:
            raise ScenarioError(found[0])
    return Step(
        name=m.name or f"{action} #{i}",
        action=action,
        args=args,
        expect=_expect(m.expect, f"steps[{i}].expect", aliases),
        always=m.always,
        request=request,
        offer=offer,
    )


def _validated_steps(raw_steps: Sequence[Mapping[str, Any]], found: list[str]) -> list[tuple[str, StepBase]]:
    """Each step read by its action's model; problems are added to ``found``."""
    steps = []
    for i, d in enumerate(raw_steps):
        actions = [a for a in ACTIONS if a in d]
        if len(actions) != 1:
            found.append(f"steps[{i}]: needs exactly one action of {', '.join(ACTIONS)}; found {actions or 'none'}")
            continue
        m, bad = _problems(STEP_MODELS[actions[0]], d, f"steps[{i}]")
        found.extend(bad)
        if m is not None:
            steps.append((actions[0], m))
    return steps


def parse_scenario(data: Any, source: Path | None = None) -> Scenario:
    """Validate a parsed scenario document: every problem of form (type, range, unknown key) told at once."""
    if not isinstance(data, Mapping):
        raise ScenarioError("scenario: must be a mapping", field="scenario")
    doc, found = _problems(ScenarioFile, data, "")
    # A top-level key is named as the scenario's (``scenario.name``), as the SPs and steps are by their lists.
    found = [p if p.startswith(("sps", "steps")) else f"scenario.{p}" for p in found]
    raw_steps = data.get("steps")
    valid_steps = (
        _validated_steps(raw_steps, found)
        if isinstance(raw_steps, list) and all(isinstance(d, Mapping) for d in raw_steps)
        else []
    )
    if found or doc is None:
        raise _refuse(found)
    sps = []
    ids: set[str] = set()
    ports: dict[str, str] = {}
    swapping: set[str] = set()
    for i, (sp, sd) in enumerate(zip(doc.sps, data["sps"], strict=True)):
        path = f"sps[{i}]"
        if sp.id in ids:
            raise ScenarioError(f"{path}.id: {sp.id!r} is used twice")
        ids.add(sp.id)
        if not sp.lower and not sp.domains:
            raise ScenarioError(f"{path}: an SP needs lower SPs or domains")
        for dom in sp.domains or []:
            for port in dom.get("ports") or []:
                if isinstance(port, Mapping) and "id" in port:
                    ports[str(port["id"])] = str(port.get("peer_port", ""))
                    if port.get("can_swap"):
                        swapping.add(str(port["id"]))
        settings = {k: v for k, v in sd.items() if k in SP_SETTINGS}
        faults = _parse_rules(sp.faults, f"{path}.faults", f"{sp.id}-cfg")
        if sp.replicas > 1 and (sp.store is None or sp.store.backend != "postgresql"):
            raise ScenarioError(
                f"{path}.replicas: {sp.replicas} processes of one SP share one database: "
                "give the SP `store: {backend: postgresql}` (the run starts a PostgreSQL when no dsn is given)",
                field=f"{path}.replicas",
            )
        if sp.replicas > 1:
            settings["store"] = {**settings["store"], "replicas": True}
        sps.append(SpSpec(sp.id, tuple(sp.lower), settings, faults, sp.replicas))
    for i, spec in enumerate(sps):
        for j, lo in enumerate(spec.lower):
            if lo not in ids:
                raise ScenarioError(f"sps[{i}].lower[{j}]: unknown SP {lo!r}")
    aliases: set[str] = set()
    lowers = {sp.id: sp.lower for sp in sps}
    processes = {name: sp.id for sp in sps for name in sp.processes}
    steps = tuple(_step(m, action, i, lowers, aliases, processes) for i, (action, m) in enumerate(valid_steps))
    scenario = Scenario(doc.name, doc.description, tuple(sps), steps, source, ports, frozenset(swapping))
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


__all__ = [
    "ACTIONS",
    "PROCESS_ACTIONS",
    "STATES",
    "Expect",
    "Scenario",
    "ScenarioError",
    "SpSpec",
    "Step",
    "aliases",
    "load_scenario",
    "parse_scenario",
]

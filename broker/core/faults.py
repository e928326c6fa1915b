"""Fault injection: named points in the broker's operations where a test makes it crash, hang or fail.

A broker started with ``faults_file`` in its config reads that JSON file whenever it changed (one
``stat`` per point reached; no file configured costs nothing) and acts on the first rule that matches::

    {"rules": [{"id": "r1", "point": "commit.task.after", "action": "crash", "occurrence": 1,
                "domain": "L3", "slice": "", "hang_s": 30, "code": "UNAVAILABLE"}],
     "partitions": ["L3"]}

* ``point``: one of ``POINTS`` (``fedbroker faults list``); ``domain`` / ``slice``: only hits for that
  child domain / a slice id starting with that text; ``occurrence``: fire at the n-th matching hit
  (1 = the first; 0 = every one).
* ``action``: ``crash`` (the process exits at once, as kill -9 would leave it: nothing flushed),
  ``hang`` (the operation sleeps ``hang_s``), ``fail`` (the point raises the error ``code``).
* A rule that fired is appended to ``<faults_file>.fired`` *before* it acts, so a broker restarted
  after a crash does not crash again on the same rule.
* ``partitions``: child SPs this broker cannot reach: every call to them fails UNAVAILABLE.

Only a file on the broker's own host can set faults: nothing on the wire can.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from slicing.errors import ErrorCode, Unavailable, error_for_code

log = logging.getLogger(__name__)

#: The operations that have injection points.
OPERATIONS = ("reserve", "commit", "abort", "activate", "deactivate", "terminate", "order")
_STAGES = {
    "start": "the operation is recorded (in flight), before any child is asked",
    "task.before": "before one child is asked (filter with domain)",
    "task.after": "after one child answered (filter with domain)",
    "done": "the final state is recorded, before the caller is answered",
}
#: Every injection point and what has happened when it is reached.
POINTS: dict[str, str] = {f"{op}.{stage}": what for op in OPERATIONS for stage, what in _STAGES.items()}
POINTS["commit.decided"] = "the commit decision is durable, before any child is told to commit"
# A one-call order (Reserve with then=COMMIT_AND_ACTIVATE) at the customer's SP, and CommitAndActivate
# below it: the commit and the activation go down as one step per child.
POINTS["order.start"] = (
    "held everywhere (at the customer's SP) or the CommitAndActivate arrived (below), before the decision"
)
POINTS["order.decided"] = "the commit-and-activate decision is durable, before any child is told"
POINTS["order.task.before"] = "before one child is told to commit and activate (filter with domain)"
POINTS["order.task.after"] = "after one child answered its commit and activation (filter with domain)"
POINTS["order.done"] = "the slice is recorded ACTIVE, before the caller is answered"
POINTS = dict(sorted(POINTS.items()))
#: The exit status of a crash, so a test can tell it from a real failure.
CRASH_EXIT_STATUS = 86
#: What each action does when its rule fires (``fedbroker faults list``).
ACTIONS: dict[str, str] = {
    "crash": f"the broker process exits at once with status {CRASH_EXIT_STATUS}, nothing flushed (as kill -9 would)",
    "hang": "the operation sleeps hang_s seconds at the point, then goes on",
    "fail": "the point raises the error named by code, as if that step had failed",
}
#: The fields of one rule of the faults file, and what each means.
RULE_FIELDS: dict[str, str] = {
    "id": "the rule's name, unique in the file; a one-shot rule that fired is listed by it in <file>.fired",
    "point": "an injection point (required)",
    "action": "crash, hang or fail (required)",
    "occurrence": "fire at the n-th matching hit, counted from when the file last changed (default 1; 0: every hit)",
    "domain": "only hits for this child domain or lower-SP id (default: any)",
    "slice": "only hits for slice ids starting with this text (default: any)",
    "hang_s": "seconds a hang lasts, 0 to 3600 (default 30)",
    "code": "the error a fail raises, a status code name such as UNAVAILABLE (default)",
}
#: The top-level keys of the faults file.
FILE_FIELDS: dict[str, str] = {
    "rules": "a list of rules; the first rule that matches a hit acts",
    "partitions": "child SP ids this broker cannot reach: every call to them fails UNAVAILABLE",
}


class FaultAction(StrEnum):
    """What a rule does when it fires."""

    CRASH = "crash"
    HANG = "hang"
    FAIL = "fail"


@dataclass(frozen=True)
class FaultRule:
    """One rule of the faults file."""

    id: str
    point: str
    action: FaultAction
    occurrence: int = 1
    domain: str = ""
    slice: str = ""
    hang_s: float = 30.0
    code: ErrorCode = ErrorCode.UNAVAILABLE

    def matches(self, point: str, slice_id: str, domain: str) -> bool:
        """Whether a hit at ``point`` for this slice and child counts for this rule."""
        return (
            self.point == point
            and (not self.domain or self.domain == domain)
            and (not self.slice or slice_id.startswith(self.slice))
        )


def parse_rules(raw: object, where: str) -> tuple[tuple[FaultRule, ...], frozenset[str]]:
    """Rules and partitions from the decoded faults file; ``ValueError`` naming the bad field."""
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: must be an object with 'rules' and 'partitions'")
    unknown = sorted(set(raw) - set(FILE_FIELDS))
    if unknown:
        raise ValueError(f"{where}.{unknown[0]}: unknown key (known: partitions, rules)")
    rules = []
    for i, r in enumerate(raw.get("rules") or []):
        at = f"{where}.rules[{i}]"
        if not isinstance(r, dict):
            raise ValueError(f"{at}: must be an object")
        extra = sorted(set(r) - set(RULE_FIELDS))
        if extra:
            raise ValueError(f"{at}.{extra[0]}: unknown key")
        point = str(r.get("point", ""))
        if point not in POINTS:
            raise ValueError(f"{at}.point: {point!r} is not an injection point (see `fedbroker faults list`)")
        try:
            action = FaultAction(str(r.get("action", "")))
        except ValueError:
            raise ValueError(f"{at}.action: must be one of {', '.join(FaultAction)}") from None
        try:
            code = ErrorCode(str(r.get("code", ErrorCode.UNAVAILABLE.value)))
        except ValueError:
            raise ValueError(f"{at}.code: must be one of {', '.join(c.value for c in ErrorCode)}") from None
        occurrence, hang_s = r.get("occurrence", 1), r.get("hang_s", 30.0)
        if not isinstance(occurrence, int) or isinstance(occurrence, bool) or occurrence < 0:
            raise ValueError(f"{at}.occurrence: must be an integer ≥ 0 (0: every hit)")
        if not isinstance(hang_s, int | float) or isinstance(hang_s, bool) or not 0 <= hang_s <= 3600:
            raise ValueError(f"{at}.hang_s: must be a number of seconds between 0 and 3600")
        rules.append(
            FaultRule(
                id=str(r.get("id") or f"rule{i}"),
                point=point,
                action=action,
                occurrence=occurrence,
                domain=str(r.get("domain", "")),
                slice=str(r.get("slice", "")),
                hang_s=float(hang_s),
                code=code,
            )
        )
    parts = raw.get("partitions") or []
    if not isinstance(parts, list) or not all(isinstance(p, str) for p in parts):
        raise ValueError(f"{where}.partitions: must be a list of SP ids")
    return tuple(rules), frozenset(parts)


class Faults:
    """The injection points of one broker; without a file every ``hit`` returns at once."""

    def __init__(
        self,
        path: Path | None = None,
        *,
        exit: Callable[[int], object] = os._exit,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._path = path
        self._exit = exit
        self._sleep = sleep
        self._mtime: int | None = None
        self._rules: tuple[FaultRule, ...] = ()
        self._partitions: frozenset[str] = frozenset()
        self._fired: set[str] = set()
        self._counts: dict[str, int] = {}

    @property
    def enabled(self) -> bool:
        """Whether a faults file is configured at all."""
        return self._path is not None

    def _reload(self) -> None:
        assert self._path is not None
        try:
            mtime = self._path.stat().st_mtime_ns
        except FileNotFoundError:
            mtime = -1
        if mtime == self._mtime:
            return
        self._mtime = mtime
        self._counts.clear()
        if mtime == -1:
            self._rules, self._partitions = (), frozenset()
            return
        try:
            raw = json.loads(self._path.read_text(encoding="utf-8"))
            self._rules, self._partitions = parse_rules(raw, str(self._path))
        except (OSError, ValueError) as exc:
            log.error("faults file ignored: %s", exc)
            self._rules, self._partitions = (), frozenset()
        fired = self._path.with_name(self._path.name + ".fired")
        self._fired = set(fired.read_text(encoding="utf-8").split()) if fired.exists() else set()
        if self._rules:
            log.warning("fault injection armed: %s", ", ".join(f"{r.id}={r.point}:{r.action}" for r in self._rules))

    def partitioned(self, domain: str) -> bool:
        """Whether calls to the child ``domain`` are cut off."""
        if self._path is None:
            return False
        self._reload()
        return domain in self._partitions

    def check_partition(self, domain: str) -> None:
        """Raise UNAVAILABLE when the child ``domain`` is partitioned away."""
        if self.partitioned(domain):
            raise Unavailable(f"lower-SP '{domain}' is unreachable (injected partition)", domain=domain)

    async def hit(self, point: str, slice_id: str = "", domain: str = "") -> None:
        """An operation reached ``point``: crash, hang or fail here when a rule says so."""
        if self._path is None:
            return
        assert point in POINTS, point
        self._reload()
        for rule in self._rules:
            if rule.id in self._fired or not rule.matches(point, slice_id, domain):
                continue
            n = self._counts[rule.id] = self._counts.get(rule.id, 0) + 1
            if rule.occurrence and n != rule.occurrence:
                continue
            await self._fire(rule, point, slice_id, domain)
            return

    async def _fire(self, rule: FaultRule, point: str, slice_id: str, domain: str) -> None:
        where = f"{point} (slice {slice_id or '-'}, child {domain or '-'})"
        if rule.occurrence:  # a one-shot rule is spent before it acts, so a restart does not repeat it
            assert self._path is not None
            self._fired.add(rule.id)
            fired = self._path.with_name(self._path.name + ".fired")
            with fired.open("a", encoding="utf-8") as fh:
                fh.write(rule.id + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        if rule.action is FaultAction.CRASH:
            log.critical("injected crash at %s (rule %s)", where, rule.id)
            self._exit(CRASH_EXIT_STATUS)
        elif rule.action is FaultAction.HANG:
            log.warning("injected hang of %g s at %s (rule %s)", rule.hang_s, where, rule.id)
            await self._sleep(rule.hang_s)
        else:
            log.warning("injected failure %s at %s (rule %s)", rule.code, where, rule.id)
            raise error_for_code(rule.code, f"injected failure at {point} (rule {rule.id})", domain=domain)


#: A broker without faults.
NO_FAULTS = Faults()

__all__ = [
    "ACTIONS",
    "CRASH_EXIT_STATUS",
    "FILE_FIELDS",
    "NO_FAULTS",
    "OPERATIONS",
    "POINTS",
    "RULE_FIELDS",
    "FaultAction",
    "FaultRule",
    "Faults",
    "parse_rules",
]

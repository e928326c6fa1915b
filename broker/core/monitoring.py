"""Federated SLA monitoring at one SP: rules, hysteresis, correlation. Pure: no I/O, time passed in.

What each SP does (issue 14; the SONATA lesson: metrics stay where they are measured, only alerts
travel):

* **Samples** of one segment's health (``Sample``: latency, loss, link state, bandwidth, byte and drop
  counters) come from this SP's own domain agents and WIM; they never leave the SP. The latest value of
  each is kept for this SP's ``/metrics`` (``latest``).
* **Rules** are derived from each slice's SLA at every SP that carries a segment of it
  (``sla_rules``: the segment's latency share, the slice's bandwidth, the loss of its QoS class, link
  state), plus rules a customer or operator adds (``Rule``, validated by ``check_rule``).
* **Hysteresis**: a rule fires once its condition held for ``for_s`` and resolves only once the value
  is back by ``margin`` for ``clear_s``; a value that flaps faster than ``clear_s`` fires once.
* **Correlation**: one alert per slice and cause (the rule name) at each level. Every contribution —
  a local segment's rule, or a child SP's alert for its part of the slice — is folded into it; the
  level's alert fires with the first contribution and resolves with the last.
* **End-to-end latency** at the SP that owns the slice: the sum of the segments' latencies (the value
  a child's alert carries, else the segment's share) against the slice's budget, from alerts only —
  never from a child's raw samples. Over the budget the alert is critical; a segment over its share
  while the sum still fits is a warning.

* **Kept across a restart**: what fires at this level because a child SP said so (``kept`` /
  ``restore``, persisted by the shim on every change, ``changed``), so a restarted mid-level SP answers
  its upper SP's "what fires?" as before, not with nothing while it re-learns from its children (which
  would resolve and fire again upstairs). Its own segments' contributions are measured again instead.

``Monitor`` returns the alerts to send instead of sending them; the shim (``broker.core.watchdog``)
feeds it samples and child alerts and calls ``tick`` at ``next_deadline``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

from slicing.errors import InvalidArgument


class Metric(StrEnum):
    """What a sample or rule measures, per segment."""

    LATENCY_MS = "latency_ms"
    LOSS = "loss"  # a fraction, 0..1
    LINK_UP = "link_up"  # 1 up, 0 down
    BANDWIDTH_MBPS = "bandwidth_mbps"  # what the segment can carry now
    BYTES = "bytes"  # what entered the segment at its terminals since it was built (a counter)
    DROPS = "drops"  # frames its interfaces dropped since it was built (a counter)


class Comparison(StrEnum):
    """How a rule compares a value with its threshold; the condition holds when the comparison is true."""

    GT = ">"
    GE = ">="
    LT = "<"
    LE = "<="

    def holds(self, value: float, threshold: float) -> bool:
        """Whether ``value`` breaches ``threshold``."""
        if self is Comparison.GT:
            return value > threshold
        if self is Comparison.GE:
            return value >= threshold
        if self is Comparison.LT:
            return value < threshold
        return value <= threshold

    @property
    def above(self) -> bool:
        """True for the comparisons that fire on high values."""
        return self in (Comparison.GT, Comparison.GE)


class Severity(StrEnum):
    """How bad an alert is."""

    WARNING = "warning"
    CRITICAL = "critical"


class AlertStatus(StrEnum):
    """An alert's transition."""

    FIRING = "firing"
    RESOLVED = "resolved"


class Health(StrEnum):
    """A slice's health marker, as ``Get`` and ``slice show`` show it."""

    HEALTHY = "HEALTHY"
    DEGRADED = "DEGRADED"


class Mode(StrEnum):
    """Monitoring mode of one SP (the operator's switch)."""

    NORMAL = "normal"
    # Agents measure link state only; any other value counts only when it moved by more than the delta.
    SKELETON = "skeleton"


#: Loss a slice tolerates when its QoS class names none.
DEFAULT_LOSS = 0.05
#: A bandwidth rule fires below this share of what the slice asked for.
BANDWIDTH_FLOOR = 0.9
#: Resolve margin, as a share of the threshold (and at least ``MIN_MARGIN`` in the metric's unit).
DEFAULT_MARGIN = 0.05
MIN_MARGIN = 1e-6
#: How long a condition must stay clear before its alert resolves (the hysteresis window).
DEFAULT_CLEAR_S = 1.0
#: Bounds for rule fields, so hostile values cannot make timers that never end.
MAX_FOR_S = 86_400.0
MAX_THRESHOLD = 1e12
MAX_RULES_PER_SLICE = 32
#: Slices whose children's alerts are kept until the slice is in service here (``hold_early``); oldest dropped.
MAX_EARLY_SLICES = 4096
#: How many resolved alerts per slice are kept for ``slice alerts``.
RECENT_PER_SLICE = 20
#: Names of the derived (SLA) rules; user rules take any other name.
SLA_NAMES = frozenset({"latency", "loss", "link", "bandwidth"})


@dataclass(frozen=True)
class Rule:
    """A threshold on one metric of each segment of a slice: ``metric comparison threshold`` for ``for_s``."""

    name: str
    metric: Metric
    comparison: Comparison
    threshold: float
    for_s: float = 0.0
    severity: Severity = Severity.WARNING
    margin: float = DEFAULT_MARGIN
    clear_s: float = DEFAULT_CLEAR_S

    def breached(self, value: float) -> bool:
        """The condition holds for ``value``."""
        return self.comparison.holds(value, self.threshold)

    def cleared(self, value: float) -> bool:
        """``value`` is back on the good side by the margin (the resolve side of the hysteresis)."""
        if self.margin == 0:
            return not self.breached(value)
        band = max(abs(self.threshold) * self.margin, MIN_MARGIN)
        if self.comparison.above:
            return value <= self.threshold - band
        return value >= self.threshold + band


def _finite(value: object, where: str, *, low: float = 0.0, high: float = MAX_THRESHOLD) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument(where, f"must be a number, got {type(value).__name__}")
    v = float(value)
    if math.isnan(v) or math.isinf(v):
        raise InvalidArgument(where, f"must be a finite number, got {v}")
    if v < low or v > high:
        raise InvalidArgument(where, f"must be between {low:g} and {high:g}, got {v:g}")
    return v


def check_rule(
    name: str,
    metric: str,
    comparison: str,
    threshold: object,
    for_s: object = 0.0,
    severity: str = "",
    where: str = "rule",
) -> Rule:
    """A user rule from untrusted fields; ``InvalidArgument`` names the field (``rule.threshold``)."""
    if not name or len(name) > 64 or not all(c.isalnum() or c in "-_." for c in name):
        raise InvalidArgument(f"{where}.name", "1 to 64 letters, digits, '-', '_' or '.'")
    if name in SLA_NAMES:
        raise InvalidArgument(f"{where}.name", f"'{name}' is a derived SLA rule's name; pick another")
    try:
        m = Metric(metric)
    except ValueError:
        raise InvalidArgument(f"{where}.metric", f"one of {', '.join(Metric)}, got {metric[:40]!r}") from None
    try:
        c = Comparison(comparison)
    except ValueError:
        known = ", ".join(Comparison)
        raise InvalidArgument(f"{where}.comparison", f"one of {known}, got {comparison[:8]!r}") from None
    t = _finite(threshold, f"{where}.threshold", high=1.0 if m in (Metric.LOSS, Metric.LINK_UP) else MAX_THRESHOLD)
    f = _finite(for_s, f"{where}.for_s", high=MAX_FOR_S)
    try:
        sev = Severity(severity or Severity.WARNING)
    except ValueError:
        raise InvalidArgument(f"{where}.severity", f"one of {', '.join(Severity)}, got {severity[:20]!r}") from None
    return Rule(name, m, c, t, for_s=f, severity=sev)


def rule_fields(rule: Rule) -> dict[str, object]:
    """A user rule as the plain fields ``check_rule`` reads back (what the store keeps)."""
    return {
        "name": rule.name,
        "metric": rule.metric.value,
        "comparison": rule.comparison.value,
        "threshold": rule.threshold,
        "for_s": rule.for_s,
        "severity": rule.severity.value,
    }


@dataclass(frozen=True)
class Sla:
    """What a slice promises at this SP: its budget, bandwidth, loss, and each segment's latency share."""

    latency_budget_ms: float | None
    bandwidth_mbps: int
    loss: float = DEFAULT_LOSS
    # Segment key (the child domain or lower-SP id) -> its latency share (ms).
    shares: Mapping[str, float] = field(default_factory=dict)


def sla_rules(sla: Sla, segment: str, *, for_s: float = 0.0, clear_s: float = DEFAULT_CLEAR_S) -> tuple[Rule, ...]:
    """The rules the SLA puts on one segment this SP measures itself."""
    c = clear_s
    rules = [
        Rule("link", Metric.LINK_UP, Comparison.LT, 1.0, severity=Severity.CRITICAL, margin=0.0, clear_s=c),
        Rule("loss", Metric.LOSS, Comparison.GT, sla.loss, for_s=for_s, clear_s=c),
    ]
    share = sla.shares.get(segment)
    # No budget, no latency promise: a segment of such a slice has no share (0), and "latency > 0"
    # would fire on any measured latency and never resolve.
    if sla.latency_budget_ms is not None and share is not None and math.isfinite(share) and share > 0:
        rules.append(Rule("latency", Metric.LATENCY_MS, Comparison.GT, share, for_s=for_s, clear_s=c))
    if sla.bandwidth_mbps > 0:
        floor = sla.bandwidth_mbps * BANDWIDTH_FLOOR
        rules.append(Rule("bandwidth", Metric.BANDWIDTH_MBPS, Comparison.LT, floor, for_s=for_s, clear_s=c))
    return tuple(rules)


@dataclass(frozen=True)
class Sample:
    """One measurement of one segment of a slice at this SP (never sent to another SP)."""

    slice_id: str
    segment: str
    metric: Metric
    value: float
    at: float


@dataclass(frozen=True)
class Alert:
    """A rule of a slice fired or resolved at one SP (the only monitoring message that crosses SPs).

    ``source_sp`` is what this SP knows as the source: itself for its own domains, else the child
    SP whose alert it folded in. Toward the SP above it is replaced by this SP (``seen_from_above``),
    so a subtree's internals stay hidden, as in its abstract note.
    """

    slice_id: str
    cause: str
    metric: Metric
    value: float
    threshold: float
    severity: Severity
    status: AlertStatus
    source_sp: str
    at: float
    comparison: Comparison = Comparison.GT
    detail: str = ""

    def seen_from_above(self, sp_id: str, slice_id: str | None = None) -> Alert:
        """The alert as the SP above reads it: this SP is the source; its slice id as the SP above knows it."""
        return replace(self, source_sp=sp_id, slice_id=self.slice_id if slice_id is None else slice_id)


@dataclass
class _Tracker:
    """Hysteresis of one rule on one segment."""

    rule: Rule
    breach_since: float | None = None
    clear_since: float | None = None
    firing: bool = False
    value: float = 0.0


@dataclass(frozen=True)
class _Contribution:
    value: float
    threshold: float
    severity: Severity
    source: str
    comparison: Comparison


@dataclass
class _LevelAlert:
    """This SP's one alert for a slice and cause, with everything folded into it."""

    metric: Metric
    contributions: dict[str, _Contribution] = field(default_factory=dict)
    sent: Alert | None = None


@dataclass
class _SliceWatch:
    sla: Sla
    rules: list[Rule] = field(default_factory=list)
    trackers: dict[tuple[str, str], _Tracker] = field(default_factory=dict)  # (segment, rule name)
    levels: dict[str, _LevelAlert] = field(default_factory=dict)  # by cause
    recent: list[Alert] = field(default_factory=list)
    last_value: dict[tuple[str, Metric], float] = field(default_factory=dict)


@dataclass
class Counters:
    """What the monitor did, for ``/metrics`` and the bench."""

    samples: int = 0
    skipped: int = 0
    fired: int = 0
    resolved: int = 0
    child_alerts: int = 0


class Monitor:
    """Rules, hysteresis and correlation of every watched slice at one SP."""

    def __init__(
        self, sp_id: str, *, mode: Mode = Mode.NORMAL, delta: float = 0.0, clear_s: float = DEFAULT_CLEAR_S
    ) -> None:
        self.sp_id = sp_id
        self.mode = mode
        self.delta = delta
        self.clear_s = clear_s
        self.counters = Counters()
        self._slices: dict[str, _SliceWatch] = {}
        #: Children's alerts for slices activating here, kept until they are watched: (child, cause) -> latest.
        self._early: dict[str, dict[tuple[str, str], Alert]] = {}
        #: Slices whose level alerts changed since ``changed`` was last called.
        self._changed: set[str] = set()

    # --- what is watched ------------------------------------------------------------------------

    def watch(self, slice_id: str, sla: Sla, local_segments: Iterable[str] = (), now: float = 0.0) -> list[Alert]:
        """Start (or refresh) watching a slice; ``local_segments`` are the segments this SP measures.

        Returns the alerts this level emits for what its children said while the slice was still
        activating here (``hold_early``): a child in service before its upper must not fire unheard.
        """
        w = self._slices.get(slice_id)
        if w is None:
            w = self._slices[slice_id] = _SliceWatch(sla)
        w.sla = sla
        for seg in local_segments:
            for rule in (*sla_rules(sla, seg, clear_s=self.clear_s), *w.rules):
                w.trackers.setdefault((seg, rule.name), _Tracker(rule))
        out: list[Alert] = []
        for (child, _), alert in self._early.pop(slice_id, {}).items():
            out += self.child_alert(slice_id, child, alert, now)
        return out

    def hold_early(self, slice_id: str, child: str, alert: Alert) -> None:
        """A child's alert for a slice not watched yet (activating here): kept for ``watch``, the latest per cause."""
        held = self._early.get(slice_id)
        if held is None:
            if len(self._early) >= MAX_EARLY_SLICES:
                self._early.pop(next(iter(self._early)))
            held = self._early[slice_id] = {}
        if alert.status is AlertStatus.FIRING:
            held[(child, alert.cause)] = alert
        else:
            held.pop((child, alert.cause), None)

    def forget(self, slice_id: str, *, keep_early: bool = False) -> None:
        """Stop watching a slice (it ended, or left service); nothing more is sent for it.

        ``keep_early``: it is activating, so what its children say meanwhile is kept for ``watch``.
        """
        if self._slices.pop(slice_id, None) is not None:
            self._changed.add(slice_id)
        if not keep_early:
            self._early.pop(slice_id, None)

    def watched(self) -> list[str]:
        """The slices watched now."""
        return list(self._slices)

    def add_rule(self, slice_id: str, rule: Rule) -> None:
        """A user rule on a watched slice, evaluated on every segment this SP measures."""
        w = self._slices.get(slice_id)
        if w is None:
            raise InvalidArgument("slice_id", f"slice '{slice_id}' is not in service here (rules need ACTIVE)")
        if len(w.rules) >= MAX_RULES_PER_SLICE and all(r.name != rule.name for r in w.rules):
            raise InvalidArgument("rule", f"at most {MAX_RULES_PER_SLICE} rules per slice")
        w.rules = [r for r in w.rules if r.name != rule.name] + [rule]
        segments = {seg for seg, _ in w.trackers}
        for seg in segments:
            w.trackers[(seg, rule.name)] = _Tracker(rule)

    def latest(self) -> dict[tuple[str, Metric], list[float]]:
        """The last value of each (segment, metric) this SP measured, one per watched slice on the segment."""
        out: dict[tuple[str, Metric], list[float]] = {}
        for w in self._slices.values():
            for key, value in w.last_value.items():
                out.setdefault(key, []).append(value)
        return out

    def rules(self, slice_id: str) -> list[Rule]:
        """The user rules of a slice."""
        w = self._slices.get(slice_id)
        return list(w.rules) if w else []

    # --- inputs ----------------------------------------------------------------------------------

    def observe(self, sample: Sample, now: float) -> list[Alert]:
        """A local measurement; returns the alerts this SP's level emits because of it."""
        w = self._slices.get(sample.slice_id)
        if w is None or not math.isfinite(sample.value):
            return []
        if self.mode is Mode.SKELETON and sample.metric is not Metric.LINK_UP:
            # Link state always counts; another value only when it moved by more than the delta.
            last = w.last_value.get((sample.segment, sample.metric))
            if last is not None and abs(sample.value - last) <= self.delta:
                self.counters.skipped += 1
                return []
        w.last_value[(sample.segment, sample.metric)] = sample.value
        self.counters.samples += 1
        out: list[Alert] = []
        for (seg, _), tr in w.trackers.items():
            if seg != sample.segment or tr.rule.metric is not sample.metric:
                continue
            tr.value = sample.value
            if tr.rule.breached(sample.value):
                tr.clear_since = None
                if tr.breach_since is None:
                    tr.breach_since = now
            else:
                tr.breach_since = None
                if tr.firing and tr.rule.cleared(sample.value) and tr.clear_since is None:
                    tr.clear_since = now
                elif not tr.rule.cleared(sample.value):
                    tr.clear_since = None  # inside the margin: neither breached nor clear
            out.extend(self._settle(sample.slice_id, w, seg, tr, now))
        return out

    def child_alert(self, slice_id: str, child: str, alert: Alert, now: float) -> list[Alert]:
        """An alert a child SP sent for its part of ``slice_id`` (already in this SP's slice id)."""
        w = self._slices.get(slice_id)
        if w is None:
            return []
        self.counters.child_alerts += 1
        key = f"child:{child}"
        if alert.status is AlertStatus.FIRING:
            c = _Contribution(alert.value, alert.threshold, alert.severity, child, alert.comparison)
            return self._fold(slice_id, w, alert.cause, alert.metric, key, c, now)
        return self._fold(slice_id, w, alert.cause, alert.metric, key, None, now)

    def sync_child(self, slice_id: str, child: str, open_alerts: list[Alert], now: float) -> list[Alert]:
        """What a child says fires now (after its stream reconnected): add those, drop its others."""
        w = self._slices.get(slice_id)
        if w is None:
            return []
        key = f"child:{child}"
        still = {a.cause for a in open_alerts}
        out: list[Alert] = []
        for cause, lv in list(w.levels.items()):
            if key in lv.contributions and cause not in still:
                out += self._fold(slice_id, w, cause, lv.metric, key, None, now)
        for a in open_alerts:
            out += self.child_alert(slice_id, child, a, now)
        return out

    def tick(self, now: float) -> list[Alert]:
        """Let time pass: rules whose for-duration or clear window ended fire or resolve."""
        out: list[Alert] = []
        for slice_id, w in list(self._slices.items()):
            for (seg, _), tr in w.trackers.items():
                out.extend(self._settle(slice_id, w, seg, tr, now))
        return out

    def next_deadline(self) -> float | None:
        """When ``tick`` may next have something to do (None: only a new input can change anything)."""
        times: list[float] = []
        for w in self._slices.values():
            for tr in w.trackers.values():
                if not tr.firing and tr.breach_since is not None:
                    times.append(tr.breach_since + tr.rule.for_s)
                if tr.firing and tr.clear_since is not None:
                    times.append(tr.clear_since + tr.rule.clear_s)
        return min(times) if times else None

    # --- kept across a restart ------------------------------------------------------------------

    def changed(self) -> set[str]:
        """The slices whose level alerts changed since the last call (what to persist again)."""
        out, self._changed = self._changed, set()
        return out

    def kept(self, slice_id: str) -> list[dict[str, object]]:
        """The level alerts of a slice that fire because a child said so, as plain data (for ``restore``)."""
        w = self._slices.get(slice_id)
        out: list[dict[str, object]] = []
        for cause, lv in sorted(w.levels.items()) if w else ():
            children = {k: c for k, c in lv.contributions.items() if k.startswith("child:")}
            if lv.sent is None or lv.sent.status is not AlertStatus.FIRING or not children:
                continue
            out.append(
                {
                    "cause": cause,
                    "metric": lv.metric.value,
                    "sent": _alert_fields(lv.sent),
                    "contributions": {
                        k: [c.value, c.threshold, c.severity.value, c.source, c.comparison.value]
                        for k, c in sorted(children.items())
                    },
                }
            )
        return out

    def restore(self, slice_id: str, kept: Iterable[Mapping[str, object]]) -> int:
        """Put back what ``kept`` said fires for a watched slice, sending nothing; returns how many were read.

        A kept alert that cannot be read is skipped: what the children say at their resync stands.
        """
        w = self._slices.get(slice_id)
        if w is None:
            return 0
        done = 0
        for body in kept:
            try:
                cause, metric = str(body["cause"]), Metric(str(body["metric"]))
                sent = _alert_of(body["sent"])
                raw = body["contributions"]
                if not isinstance(raw, Mapping):
                    raise TypeError("contributions")
                contributions = {
                    str(k): _Contribution(float(v), float(t), Severity(sv), str(src), Comparison(cmp))
                    for k, (v, t, sv, src, cmp) in raw.items()
                    if str(k).startswith("child:")
                }
            except (KeyError, TypeError, ValueError):
                continue
            if not contributions or (cause in w.levels and w.levels[cause].contributions):
                continue
            w.levels[cause] = _LevelAlert(metric, contributions, replace(sent, slice_id=slice_id))
            done += 1
        return done

    # --- outputs ---------------------------------------------------------------------------------

    def open_alerts(self, slice_id: str) -> list[Alert]:
        """The firing alerts of a slice at this level."""
        w = self._slices.get(slice_id)
        if w is None:
            return []
        return [lv.sent for lv in w.levels.values() if lv.sent is not None and lv.sent.status is AlertStatus.FIRING]

    def recent_alerts(self, slice_id: str) -> list[Alert]:
        """The slice's last resolved alerts, oldest first."""
        w = self._slices.get(slice_id)
        return list(w.recent) if w else []

    def health(self, slice_id: str) -> Health:
        """DEGRADED while an alert of the slice fires here."""
        return Health.DEGRADED if self.open_alerts(slice_id) else Health.HEALTHY

    def firing_count(self) -> int:
        """Alerts firing at this level now, over every slice."""
        return sum(len(self.open_alerts(s)) for s in self._slices)

    # --- internals -------------------------------------------------------------------------------

    def _settle(self, slice_id: str, w: _SliceWatch, seg: str, tr: _Tracker, now: float) -> list[Alert]:
        rule = tr.rule
        if not tr.firing and tr.breach_since is not None and now - tr.breach_since >= rule.for_s:
            tr.firing = True
            tr.clear_since = None
            c = _Contribution(tr.value, rule.threshold, rule.severity, self.sp_id, rule.comparison)
            return self._fold(slice_id, w, rule.name, rule.metric, f"local:{seg}", c, now)
        if tr.firing and tr.clear_since is not None and now - tr.clear_since >= rule.clear_s:
            tr.firing = False
            tr.clear_since = None
            return self._fold(slice_id, w, rule.name, rule.metric, f"local:{seg}", None, now)
        return []

    def _fold(
        self,
        slice_id: str,
        w: _SliceWatch,
        cause: str,
        metric: Metric,
        key: str,
        contribution: _Contribution | None,
        now: float,
    ) -> list[Alert]:
        """Add or drop one contribution to the level's alert; return what changed for the level above."""
        lv = w.levels.get(cause)
        if lv is None:
            lv = w.levels[cause] = _LevelAlert(metric)
        self._changed.add(slice_id)
        if contribution is None:
            lv.contributions.pop(key, None)
        else:
            lv.contributions[key] = contribution
        if not lv.contributions:
            if lv.sent is None or lv.sent.status is AlertStatus.RESOLVED:
                return []
            resolved = replace(lv.sent, status=AlertStatus.RESOLVED, at=now)
            lv.sent = resolved
            w.recent = [*w.recent, resolved][-RECENT_PER_SLICE:]
            self.counters.resolved += 1
            return [resolved]
        alert = self._summary(slice_id, w, cause, lv, now)
        previous = lv.sent
        if previous is not None and previous.status is AlertStatus.FIRING and previous.severity is alert.severity:
            lv.sent = replace(alert, at=previous.at)  # folded in: nothing new for the level above
            return []
        lv.sent = alert
        self.counters.fired += 1
        return [alert]

    def _summary(self, slice_id: str, w: _SliceWatch, cause: str, lv: _LevelAlert, now: float) -> Alert:
        contributions = sorted(lv.contributions.items())
        first = contributions[0][1]
        if lv.metric is Metric.LATENCY_MS and cause == "latency" and w.sla.latency_budget_ms is not None:
            # The end-to-end rule: every segment's latency (as its alert says, else its share) against the budget.
            reported = {k.split(":", 1)[1]: c.value for k, c in contributions}
            total = sum(reported.get(seg, share) for seg, share in w.sla.shares.items())
            total += sum(v for seg, v in reported.items() if seg not in w.sla.shares)
            budget = w.sla.latency_budget_ms
            severity = Severity.CRITICAL if total > budget else Severity.WARNING
            return Alert(
                slice_id,
                cause,
                lv.metric,
                total,
                budget,
                severity,
                AlertStatus.FIRING,
                first.source,
                now,
                Comparison.GT,
                detail=f"end-to-end {total:g} ms against a budget of {budget:g} ms",
            )
        _, worst = max(contributions, key=lambda kc: kc[1].value if kc[1].comparison.above else -kc[1].value)
        severity = max((c.severity for _, c in contributions), key=lambda s: s is Severity.CRITICAL)
        return Alert(
            slice_id,
            cause,
            lv.metric,
            worst.value,
            worst.threshold,
            severity,
            AlertStatus.FIRING,
            worst.source,
            now,
            worst.comparison,
        )


def _alert_fields(a: Alert) -> dict[str, object]:
    return {
        "cause": a.cause,
        "metric": a.metric.value,
        "value": a.value,
        "threshold": a.threshold,
        "severity": a.severity.value,
        "source_sp": a.source_sp,
        "at": a.at,
        "comparison": a.comparison.value,
        "detail": a.detail,
    }


def _alert_of(raw: object) -> Alert:
    if not isinstance(raw, Mapping):
        raise TypeError("an alert is a mapping")
    values = [float(raw[k]) for k in ("value", "threshold", "at")]
    if not all(math.isfinite(v) for v in values):
        raise ValueError("a kept alert has a non-finite value")
    return Alert(
        slice_id="",
        cause=str(raw["cause"]),
        metric=Metric(str(raw["metric"])),
        value=values[0],
        threshold=values[1],
        severity=Severity(str(raw["severity"])),
        status=AlertStatus.FIRING,
        source_sp=str(raw["source_sp"]),
        at=values[2],
        comparison=Comparison(str(raw["comparison"])),
        detail=str(raw.get("detail", "")),
    )


__all__ = [
    "Alert",
    "AlertStatus",
    "Comparison",
    "Counters",
    "Health",
    "Metric",
    "Mode",
    "Monitor",
    "Rule",
    "Sample",
    "Severity",
    "Sla",
    "check_rule",
    "rule_fields",
    "sla_rules",
]

"""The pure monitoring core: rules from the SLA, hysteresis, correlation, end-to-end latency (issue 14)."""

from __future__ import annotations

import math

import pytest

from broker.core.monitoring import (
    Alert,
    AlertStatus,
    Comparison,
    Health,
    Metric,
    Mode,
    Monitor,
    Sample,
    Severity,
    Sla,
    check_rule,
    sla_rules,
)
from slicing.errors import InvalidArgument

SLA = Sla(latency_budget_ms=20.0, bandwidth_mbps=100, shares={"A": 8.0, "B": 12.0})


def leaf() -> Monitor:
    m = Monitor("L1")
    m.watch("s1", Sla(latency_budget_ms=8.0, bandwidth_mbps=100, shares={"L1": 8.0}), ["L1"])
    return m


def lat(value: float, at: float) -> Sample:
    return Sample("s1", "L1", Metric.LATENCY_MS, value, at)


def test_latency_over_the_share_fires_once_and_resolves_after_the_clear_window() -> None:
    m = leaf()
    assert m.observe(lat(2.0, 0.0), 0.0) == []
    (fired,) = m.observe(lat(30.0, 1.0), 1.0)
    assert fired.status is AlertStatus.FIRING and fired.cause == "latency" and fired.source_sp == "L1"
    assert fired.value == 30.0 and fired.threshold == 8.0 and fired.severity is Severity.CRITICAL
    assert m.health("s1") is Health.DEGRADED
    assert m.observe(lat(31.0, 1.5), 1.5) == []  # still firing: nothing new
    assert m.observe(lat(2.0, 2.0), 2.0) == []  # clear, but the window has not passed
    assert m.next_deadline() == pytest.approx(3.0)
    (resolved,) = m.tick(3.0)
    assert resolved.status is AlertStatus.RESOLVED and m.health("s1") is Health.HEALTHY
    assert [a.status for a in m.recent_alerts("s1")] == [AlertStatus.RESOLVED]


def test_a_value_flapping_faster_than_the_clear_window_fires_at_most_once() -> None:
    m = leaf()
    out: list[Alert] = []
    t = 0.0
    for _ in range(50):
        out += m.observe(lat(30.0, t), t)
        t += 0.1
        out += m.observe(lat(2.0, t), t)
        t += 0.1
        out += m.tick(t)
    assert [a.status for a in out] == [AlertStatus.FIRING]
    out += m.tick(t + 1.0)
    assert [a.status for a in out] == [AlertStatus.FIRING, AlertStatus.RESOLVED]


def test_a_value_inside_the_margin_does_not_resolve() -> None:
    m = leaf()
    m.observe(lat(30.0, 0.0), 0.0)
    assert m.observe(lat(7.9, 1.0), 1.0) == []  # below 8 but within 5 %
    assert m.tick(10.0) == []
    assert m.health("s1") is Health.DEGRADED


def test_for_duration_delays_firing() -> None:
    m = leaf()
    m.add_rule("s1", check_rule("slow", "latency_ms", ">", 5.0, for_s=2.0))
    out = m.observe(lat(6.0, 0.0), 0.0)
    assert out == []
    assert m.next_deadline() == pytest.approx(2.0)
    (fired,) = m.tick(2.0)
    assert fired.cause == "slow"


def test_child_alerts_fold_into_one_alert_per_cause_with_the_end_to_end_latency() -> None:
    m = Monitor("M1")
    m.watch("s1", SLA)
    child = Alert("x", "latency", Metric.LATENCY_MS, 10.0, 8.0, Severity.CRITICAL, AlertStatus.FIRING, "A", 0.0)
    (first,) = m.child_alert("s1", "A", child, 1.0)
    # 10 (A, as it says) + 12 (B's share) = 22 > 20.
    assert first.value == 22.0 and first.threshold == 20.0 and first.severity is Severity.CRITICAL
    assert first.source_sp == "A"
    other = Alert("y", "latency", Metric.LATENCY_MS, 13.0, 12.0, Severity.CRITICAL, AlertStatus.FIRING, "B", 0.0)
    assert m.child_alert("s1", "B", other, 1.5) == []  # folded in: still one alert
    assert m.child_alert("s1", "A", Alert(**{**child.__dict__, "status": AlertStatus.RESOLVED}), 2.0) == []
    (resolved,) = m.child_alert("s1", "B", Alert(**{**other.__dict__, "status": AlertStatus.RESOLVED}), 3.0)
    assert resolved.status is AlertStatus.RESOLVED
    assert resolved.seen_from_above("M1", "T-1").source_sp == "M1"


def test_a_segment_over_its_share_within_the_budget_is_a_warning() -> None:
    m = Monitor("M1")
    m.watch("s1", SLA)
    child = Alert("x", "latency", Metric.LATENCY_MS, 9.0, 8.0, Severity.CRITICAL, AlertStatus.FIRING, "A", 0.0)
    sla = Sla(latency_budget_ms=30.0, bandwidth_mbps=100, shares={"A": 8.0, "B": 12.0})
    m.watch("s1", sla)
    (first,) = m.child_alert("s1", "A", child, 1.0)
    assert first.severity is Severity.WARNING and first.value == 21.0


def test_link_down_is_critical_and_skeleton_mode_counts_link_state_only() -> None:
    m = leaf()
    (down,) = m.observe(Sample("s1", "L1", Metric.LINK_UP, 0.0, 0.0), 0.0)
    assert down.cause == "link" and down.severity is Severity.CRITICAL and down.comparison is Comparison.LT
    s = Monitor("L1", mode=Mode.SKELETON, delta=5.0)
    s.watch("s1", Sla(latency_budget_ms=8.0, bandwidth_mbps=100, shares={"L1": 8.0}), ["L1"])
    assert s.observe(lat(2.0, 0.0), 0.0) == []
    assert s.observe(lat(6.0, 0.1), 0.1) == [] and s.counters.skipped == 1  # moved by 4, not more than 5
    assert len(s.observe(lat(30.0, 0.2), 0.2)) == 1  # moved by 28
    assert len(s.observe(Sample("s1", "L1", Metric.LINK_UP, 0.0, 0.3), 0.3)) == 1  # link state always counts


def test_an_unwatched_slice_and_non_finite_samples_emit_nothing() -> None:
    m = leaf()
    assert m.observe(Sample("other", "L1", Metric.LATENCY_MS, 99.0, 0.0), 0.0) == []
    assert m.observe(lat(math.nan, 0.0), 0.0) == []
    assert m.observe(lat(math.inf, 0.0), 0.0) == []
    m.forget("s1")
    assert m.observe(lat(99.0, 1.0), 1.0) == [] and m.watched() == []


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"threshold": math.nan}, "rule.threshold"),
        ({"threshold": math.inf}, "rule.threshold"),
        ({"threshold": -1.0}, "rule.threshold"),
        ({"threshold": True}, "rule.threshold"),
        ({"for_s": -0.5}, "rule.for_s"),
        ({"for_s": math.inf}, "rule.for_s"),
        ({"metric": "jitter"}, "rule.metric"),
        ({"comparison": "!="}, "rule.comparison"),
        ({"name": "latency"}, "rule.name"),
        ({"name": "a b"}, "rule.name"),
        ({"severity": "fatal"}, "rule.severity"),
        ({"metric": "loss", "threshold": 1.5}, "rule.threshold"),
    ],
)
def test_hostile_rule_fields_are_refused_naming_the_field(fields: dict[str, object], field: str) -> None:
    args: dict[str, object] = {"name": "r", "metric": "latency_ms", "comparison": ">", "threshold": 5.0}
    args.update(fields)
    with pytest.raises(InvalidArgument) as err:
        check_rule(**args)  # type: ignore[arg-type]
    assert err.value.field == field


def test_an_upper_sp_reads_the_sp_it_calls_as_the_source_and_an_operator_reads_the_child() -> None:
    from broker.api.servicers import seen_by
    from broker.security.accounts import Role
    from broker.security.auth import Principal

    a = Alert("m-1", "link", Metric.LINK_UP, 0.0, 1.0, Severity.CRITICAL, AlertStatus.FIRING, "L1", 0.0)
    assert seen_by(a, Principal("T", Role.PEER_SP), "M1").source_sp == "M1"  # the leaf stays hidden
    assert seen_by(a, Principal("ops", Role.OPERATOR), "M1").source_sp == "L1"
    assert seen_by(a, Principal("alice", Role.CUSTOMER), "M1").source_sp == "L1"


def test_child_alerts_for_a_slice_still_activating_fire_once_it_is_watched() -> None:
    m = Monitor("M1")
    firing = Alert("x", "latency", Metric.LATENCY_MS, 10.0, 8.0, Severity.CRITICAL, AlertStatus.FIRING, "A", 0.0)
    assert m.child_alert("s1", "A", firing, 1.0) == []  # not watched: nothing emitted, nothing kept
    m.hold_early("s1", "A", firing)
    m.forget("s1", keep_early=True)  # the ACTIVATING state change keeps it
    (replayed,) = m.watch("s1", SLA, now=2.0)
    assert replayed.status is AlertStatus.FIRING and replayed.source_sp == "A" and replayed.value == 22.0
    assert m.open_alerts("s1") == [replayed]
    assert m.watch("s1", SLA, now=3.0) == []  # replayed once


def test_an_early_alert_resolved_before_the_slice_is_watched_or_an_ended_slice_emits_nothing() -> None:
    m = Monitor("M1")
    firing = Alert("x", "latency", Metric.LATENCY_MS, 10.0, 8.0, Severity.CRITICAL, AlertStatus.FIRING, "A", 0.0)
    m.hold_early("s1", "A", firing)
    m.hold_early("s1", "A", Alert(**{**firing.__dict__, "status": AlertStatus.RESOLVED}))
    assert m.watch("s1", SLA) == []
    m.hold_early("s2", "A", firing)
    m.forget("s2")  # it ended (or fell back to COMMITTED): what its children said is gone
    assert m.watch("s2", SLA) == []


def test_early_alerts_are_kept_for_a_bounded_number_of_slices() -> None:
    from broker.core.monitoring import MAX_EARLY_SLICES

    m = Monitor("M1")
    firing = Alert("x", "latency", Metric.LATENCY_MS, 10.0, 8.0, Severity.CRITICAL, AlertStatus.FIRING, "A", 0.0)
    for i in range(MAX_EARLY_SLICES + 10):
        m.hold_early(f"s{i}", "A", firing)
    assert m.watch("s0", SLA) == []  # the oldest were dropped
    assert len(m.watch(f"s{MAX_EARLY_SLICES + 9}", SLA)) == 1


def test_what_fires_because_of_children_is_kept_and_a_restarted_monitor_neither_resolves_nor_fires_it_again() -> None:
    import json

    m = Monitor("M1")
    m.watch("s1", SLA, ["M1"])
    child = Alert("x", "latency", Metric.LATENCY_MS, 10.0, 8.0, Severity.CRITICAL, AlertStatus.FIRING, "A", 0.0)
    other = Alert("y", "latency", Metric.LATENCY_MS, 13.0, 12.0, Severity.CRITICAL, AlertStatus.FIRING, "B", 0.0)
    assert len(m.child_alert("s1", "A", child, 1.0)) == 1
    assert m.child_alert("s1", "B", other, 1.5) == []
    m.observe(Sample("s1", "M1", Metric.LINK_UP, 0.0, 2.0), 2.0)  # its own segment: measured again, not kept
    assert m.changed() == {"s1"} and m.changed() == set()
    kept = json.loads(json.dumps(m.kept("s1")))  # as the store keeps it
    assert [k["cause"] for k in kept] == ["latency"]
    before = [a for a in m.open_alerts("s1") if a.cause == "latency"]

    again = Monitor("M1")
    again.watch("s1", SLA, ["M1"])
    assert again.restore("s1", [*kept, {"cause": "bad"}, {"cause": "x", "metric": "loss", "sent": 1}]) == 1
    assert again.open_alerts("s1") == before and before[0].value == 23.0  # 10 (A) + 13 (B)
    assert again.restore("s1", kept) == 0  # a cause that is open already is not overwritten
    # The children's resync says the same: nothing to send. Then A stops, B stops: one resolve.
    assert again.sync_child("s1", "A", [child], 3.0) == []
    assert again.sync_child("s1", "B", [other], 3.0) == []
    assert again.sync_child("s1", "A", [], 4.0) == []
    (resolved,) = again.sync_child("s1", "B", [], 5.0)
    assert resolved.status is AlertStatus.RESOLVED and resolved.cause == "latency"
    assert again.kept("s1") == []
    again.forget("s1")
    assert "s1" in again.changed() and again.kept("s1") == []


def test_a_slice_without_a_latency_budget_gets_no_latency_rule_and_never_a_latency_alert() -> None:
    m = Monitor("L1")
    m.watch("s1", Sla(latency_budget_ms=None, bandwidth_mbps=100, shares={"L1": 0.0}), ["L1"])
    assert m.observe(lat(2.0, 0.0), 0.0) == [] and m.observe(lat(500.0, 1.0), 1.0) == []
    assert m.tick(5.0) == [] and m.health("s1") is Health.HEALTHY
    assert "latency" not in {r.name for r in sla_rules(Sla(None, 100, shares={"L1": 0.0}), "L1")}
    assert "latency" in {r.name for r in sla_rules(Sla(8.0, 100, shares={"L1": 8.0}), "L1")}

"""Federated SLA monitoring over real broker processes (issue 14): only alerts travel, one per cause.

T over M1 (L1, L2) and M2 (L3, L4); a slice L1.ep → L4.ep crosses all seven SPs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
import yaml

from fedbroker.v1 import northsouth_pb2 as pb
from fedbroker.v1 import northsouth_pb2_grpc as pb_grpc
from tests.integration.federation import Federation, leaf_domain, op, reserve, slice_request
from tests.integration.test_federation import chain_of_leaves

pytestmark = pytest.mark.integration

ACTIVE = pb.SLICE_STATE_ACTIVE
DEGRADED = pb.SLICE_HEALTH_DEGRADED
HEALTHY = pb.SLICE_HEALTH_HEALTHY
FIRING = pb.ALERT_STATUS_FIRING
RESOLVED = pb.ALERT_STATUS_RESOLVED
ROOT = Path(__file__).resolve().parents[2]
FEDBROKER = str(Path(sys.executable).with_name("fedbroker"))
ALL = ("T", "M1", "M2", "L1", "L2", "L3", "L4")
#: The window of healthy operation in which no monitoring message may travel upward (issue 14: a minute).
HEALTHY_WINDOW_S = 60.0


async def three_tier_slice(
    fed: Federation, budget_ms: float = 100.0, clear_s: dict[str, float] | None = None
) -> pb.Slice:
    names = ["L1", "L2", "L3", "L4"]
    for i, sp in enumerate(names):
        peers = {names[j]: "1000-1999" if j < i else "1500-2999" for j in (i - 1, i + 1) if 0 <= j < len(names)}
        extra = {"monitoring": {"clear_s": clear_s[sp]}} if clear_s and sp in clear_s else {}
        await fed.start(sp, domains=[leaf_domain(sp, peers)], **extra)
    await fed.start("M1", lowers=["L1", "L2"])
    await fed.start("M2", lowers=["L3", "L4"])
    top = await fed.start("T", lowers=["M1", "M2"])
    await fed.wait_terminals("T", ["L1.ep", "L4.ep"])
    held = await reserve(top, "mon", slice_request("L1.ep", "L4.ep", 100, latency_budget_ms=budget_ms))
    await op(top, "Commit", held.id)
    active = await op(top, "Activate", held.id)
    assert active.state == ACTIVE and active.health == HEALTHY
    return active


def monitoring(fed: Federation, sp: str) -> pb_grpc.MonitoringStub:
    return pb_grpc.MonitoringStub(fed.sps[sp].operator_channel)


async def health_at(fed: Federation, sp: str) -> int:
    """The health of the one slice the SP holds (as its operator reads it)."""
    listed = await fed.sps[sp].operator_slices.List(pb.ListRequest(), timeout=5)
    (only,) = [s for s in listed.slices if s.state == ACTIVE]
    return int(only.health)


class Recorder:
    """Every event of a Watch stream, with the time it arrived."""

    def __init__(self, stream: AsyncIterator[pb.SliceEvent]) -> None:
        self.events: list[tuple[float, pb.SliceEvent]] = []
        self._task = asyncio.get_running_loop().create_task(self._read(stream))

    async def _read(self, stream: AsyncIterator[pb.SliceEvent]) -> None:
        async for ev in stream:
            self.events.append((time.monotonic(), ev))

    def alerts(self) -> list[tuple[float, pb.SliceEvent]]:
        return [(t, e) for t, e in self.events if e.HasField("alert")]

    async def wait_alert(self, status: int, within_s: float) -> tuple[float, pb.SliceEvent]:
        for _ in range(int(within_s / 0.02)):
            found = [(t, e) for t, e in self.alerts() if e.alert.status == status]
            if found:
                return found[0]
            await asyncio.sleep(0.02)
        raise AssertionError(f"no alert with status {status} within {within_s} s: {self.events}")

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
            await self._task


async def test_a_degraded_leaf_link_raises_one_alert_at_the_top_naming_the_mid_sp_and_restoring_resolves_it(
    fed: Federation,
) -> None:
    active = await three_tier_slice(fed)
    top = fed.sps["T"]
    watch = Recorder(top.slices.Watch(pb.WatchRequest(slice_id=active.id)))
    mid_watch = Recorder(fed.sps["M1"].operator_slices.Watch(pb.WatchRequest()))
    await asyncio.sleep(0.3)  # the streams are open
    try:
        t0 = time.monotonic()
        touched = await monitoring(fed, "L1").SetCondition(
            pb.ConditionRequest(domain="L1", target="core/edge", added_latency_ms=500), timeout=5
        )
        assert touched.segments == 1
        at, fired = await watch.wait_alert(FIRING, within_s=3.0)
        assert at - t0 < 3.0
        a = fired.alert
        assert fired.slice_id == active.id and a.slice_id == active.id
        assert a.cause == "latency" and a.metric == "latency_ms" and a.severity == "critical"
        assert a.source_sp == "M1", a  # the SP one level down, never the hidden leaf
        assert a.value > a.threshold == pytest.approx(100.0)
        # M1's own operator sees its direct child as the source.
        _, mid_fired = await mid_watch.wait_alert(FIRING, within_s=3.0)
        assert mid_fired.alert.source_sp == "L1"

        # The health marker at every SP on the path, and only there.
        got = await op(top, "Get", active.id)
        assert got.health == DEGRADED and [x.cause for x in got.alerts] == ["latency"]
        for sp in ("T", "M1", "L1"):
            assert await health_at(fed, sp) == DEGRADED, sp
        for sp in ("M2", "L2", "L3", "L4"):
            assert await health_at(fed, sp) == HEALTHY, sp
        listed = await monitoring(fed, "T").ListAlerts(pb.SliceRef(slice_id=active.id), timeout=5)
        assert [x.source_sp for x in listed.open] == ["M1"]

        t1 = time.monotonic()
        await monitoring(fed, "L1").SetCondition(
            pb.ConditionRequest(domain="L1", target="core/edge", restore=True), timeout=5
        )
        at, resolved = await watch.wait_alert(RESOLVED, within_s=3.0)
        assert at - t1 < 3.0 and resolved.alert.source_sp == "M1"
        await asyncio.sleep(0.5)  # nothing more is on its way
        assert [e.alert.status for _, e in watch.alerts()] == [FIRING, RESOLVED]  # exactly one alert
        for sp in ALL:
            assert await health_at(fed, sp) == HEALTHY, sp
        listed = await monitoring(fed, "T").ListAlerts(pb.SliceRef(slice_id=active.id), timeout=5)
        assert not listed.open and [x.status for x in listed.recent] == [RESOLVED]
    finally:
        await watch.close()
        await mid_watch.close()
    await op(top, "Terminate", active.id)
    await fed.wait_idle()


@pytest.mark.timeout(240)
async def test_a_healthy_slice_sends_no_monitoring_message_upward(fed: Federation) -> None:
    active = await three_tier_slice(fed)
    # What each upper SP reads from its lower SPs is their Watch: read it at every SP, as an operator
    # (who sees every slice), over a window of healthy operation.
    watches = {sp: Recorder(fed.sps[sp].operator_slices.Watch(pb.WatchRequest())) for sp in ALL}
    try:
        await asyncio.sleep(HEALTHY_WINDOW_S)
        for sp, w in watches.items():
            assert w.events == [], (sp, w.events)
    finally:
        for w in watches.values():
            await w.close()
    got = await op(fed.sps["T"], "Get", active.id)
    assert got.health == HEALTHY and not got.alerts


async def test_an_alert_raised_below_while_the_top_is_still_activating_fires_at_the_top_once_it_is_active(
    fed: Federation,
) -> None:
    """M1 is in service and its leaf's link degrades while T still activates M2's side (T hangs 3 s after
    M1 confirmed): M1's alert reaches T before T's slice is ACTIVE, and must fire there once it is."""
    names = ["L1", "L2", "L3", "L4"]
    for i, sp in enumerate(names):
        peers = {names[j]: "1000-1999" if j < i else "1500-2999" for j in (i - 1, i + 1) if 0 <= j < len(names)}
        await fed.start(sp, domains=[leaf_domain(sp, peers)])
    await fed.start("M1", lowers=["L1", "L2"])
    await fed.start("M2", lowers=["L3", "L4"])
    top = await fed.fleet.start("T", {}, ["M1", "M2"], faults=[])
    await fed.wait_terminals("T", ["L1.ep", "L4.ep"])
    held = await reserve(top, "early", slice_request("L1.ep", "L4.ep", 100, latency_budget_ms=100.0))
    await op(top, "Commit", held.id)
    hang = {"id": "slow-top", "point": "activate.task.after", "action": "hang", "hang_s": 3, "domain": "M1"}
    fed.fleet.write_faults("T", [hang])
    watch = Recorder(top.slices.Watch(pb.WatchRequest(slice_id=held.id)))
    mid_watch = Recorder(fed.sps["M1"].operator_slices.Watch(pb.WatchRequest()))
    await asyncio.sleep(0.3)  # the streams are open
    activating = asyncio.get_running_loop().create_task(op(top, "Activate", held.id))
    try:
        for _ in range(200):  # M1's part in service (bounded: 10 s)
            listed = await fed.sps["M1"].operator_slices.List(pb.ListRequest(states=[ACTIVE]), timeout=5)
            if listed.slices:
                break
            await asyncio.sleep(0.05)
        assert listed.slices, "M1 never activated its part"
        await monitoring(fed, "L1").SetCondition(
            pb.ConditionRequest(domain="L1", target="core/edge", added_latency_ms=500), timeout=5
        )
        await mid_watch.wait_alert(FIRING, within_s=3.0)  # on its way to T, which is still activating
        assert not activating.done() and not watch.alerts()
        assert (await op(top, "Get", held.id)).state == pb.SLICE_STATE_ACTIVATING
        active = await activating
        assert active.state == ACTIVE
        _, fired = await watch.wait_alert(FIRING, within_s=3.0)
        assert fired.alert.cause == "latency" and fired.alert.source_sp == "M1", fired.alert
        assert (await op(top, "Get", held.id)).health == DEGRADED
        await monitoring(fed, "L1").SetCondition(
            pb.ConditionRequest(domain="L1", target="core/edge", restore=True), timeout=5
        )
        await watch.wait_alert(RESOLVED, within_s=5.0)
        await asyncio.sleep(0.3)
        assert [e.alert.status for _, e in watch.alerts()] == [FIRING, RESOLVED]
    finally:
        if not activating.done():
            activating.cancel()
        await watch.close()
        await mid_watch.close()
    await op(top, "Terminate", held.id)
    await fed.wait_idle()


async def test_a_customer_rule_added_at_the_top_is_evaluated_at_the_leaf_and_fires_at_the_top(fed: Federation) -> None:
    """The top measures nothing itself: a rule added there only works if every SP below gets it. A loss of
    2 % on L1's link is within the SLA's 5 % (no SLA alert) but over the customer's 1 %."""
    active = await three_tier_slice(fed)
    top = fed.sps["T"]
    watch = Recorder(top.slices.Watch(pb.WatchRequest(slice_id=active.id)))
    await asyncio.sleep(0.3)
    try:
        rule = pb.AlertRule(name="lossy", metric="loss", comparison=">", threshold=0.01, severity="warning")
        added = await pb_grpc.MonitoringStub(top.channel).AddRule(
            pb.AddRuleRequest(slice_id=active.id, rule=rule), timeout=10
        )
        assert added.name == "lossy"
        # Each SP on the path holds the rule for its part: M1 and L1 as their operator reads it.
        for sp in ("M1", "L1", "M2", "L4"):
            (mine,) = [s for s in (await fed.sps[sp].operator_slices.List(pb.ListRequest(), timeout=5)).slices]
            listed = await monitoring(fed, sp).ListAlerts(pb.SliceRef(slice_id=mine.id), timeout=5)
            assert [r.name for r in listed.rules] == ["lossy"], (sp, listed.rules)
        await monitoring(fed, "L1").SetCondition(
            pb.ConditionRequest(domain="L1", target="core/edge", loss=0.02), timeout=5
        )
        _, fired = await watch.wait_alert(FIRING, within_s=5.0)
        a = fired.alert
        assert a.cause == "lossy" and a.metric == "loss" and a.source_sp == "M1", a
        assert a.value == pytest.approx(0.02) and a.threshold == pytest.approx(0.01) and a.severity == "warning"
        await monitoring(fed, "L1").SetCondition(
            pb.ConditionRequest(domain="L1", target="core/edge", restore=True), timeout=5
        )
        await watch.wait_alert(RESOLVED, within_s=5.0)
        await asyncio.sleep(0.3)
        assert [(e.alert.cause, e.alert.status) for _, e in watch.alerts()] == [("lossy", FIRING), ("lossy", RESOLVED)]
        # The rule is kept where it is evaluated: L1 killed and restarted still fires it.
        fed.kill("L1")
        await fed.fleet.restart("L1")
        (mine,) = (await fed.sps["L1"].operator_slices.List(pb.ListRequest(), timeout=5)).slices
        listed = await monitoring(fed, "L1").ListAlerts(pb.SliceRef(slice_id=mine.id), timeout=5)
        assert [r.name for r in listed.rules] == ["lossy"], listed.rules
        for _ in range(100):  # M1's stream to the restarted L1 is back (bounded: 10 s)
            touched = await monitoring(fed, "L1").SetCondition(
                pb.ConditionRequest(domain="L1", target="core/edge", loss=0.02), timeout=5
            )
            await asyncio.sleep(0.1)
            if len(watch.alerts()) > 2:
                break
        assert touched.segments == 1  # in service again after the restart, so measured
        for _ in range(100):  # bounded: 5 s more
            if len(watch.alerts()) > 2:
                break
            await asyncio.sleep(0.05)
        (_, again), *_ = watch.alerts()[2:] or [(0.0, None)]
        assert again is not None, "the kept rule did not fire after L1's restart"
        assert (again.alert.cause, again.alert.status, again.alert.source_sp) == ("lossy", FIRING, "M1")
    finally:
        await watch.close()
    await op(top, "Terminate", active.id)
    await fed.wait_idle()


async def test_add_rule_with_a_lower_sp_down_is_unavailable_naming_it_and_adding_again_after_it_returns_works(
    fed: Federation,
) -> None:
    """M2 is down: the rule holds at T and on M1's side, the error names M2 (and only M2), and once M2 is
    back the same AddRule reaches it and its leaves, where it fires."""
    active = await three_tier_slice(fed)
    top = fed.sps["T"]
    rule = pb.AlertRule(name="lossy", metric="loss", comparison=">", threshold=0.01, severity="warning")
    fed.kill("M2")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await pb_grpc.MonitoringStub(top.channel).AddRule(pb.AddRuleRequest(slice_id=active.id, rule=rule), timeout=20)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, refused.value
    message = refused.value.details() or ""
    assert "M2" in message and "M1" not in message and "lossy" in message, message
    for sp in ("M1", "L1"):  # the side that answered holds it already
        (mine,) = (await fed.sps[sp].operator_slices.List(pb.ListRequest(), timeout=5)).slices
        listed = await monitoring(fed, sp).ListAlerts(pb.SliceRef(slice_id=mine.id), timeout=5)
        assert [r.name for r in listed.rules] == ["lossy"], (sp, listed.rules)

    await fed.restart("M2")
    added = None
    for _ in range(50):  # T's channel to M2 reconnects (bounded: about 10 s)
        try:
            added = await pb_grpc.MonitoringStub(top.channel).AddRule(
                pb.AddRuleRequest(slice_id=active.id, rule=rule), timeout=10
            )
            break
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE and "M2" in (exc.details() or ""), exc
            await asyncio.sleep(0.2)
    assert added is not None and added.name == "lossy"
    for sp in ("M2", "L3", "L4"):
        (mine,) = (await fed.sps[sp].operator_slices.List(pb.ListRequest(), timeout=5)).slices
        listed = await monitoring(fed, sp).ListAlerts(pb.SliceRef(slice_id=mine.id), timeout=5)
        assert [r.name for r in listed.rules] == ["lossy"], (sp, listed.rules)
    watch = Recorder(top.slices.Watch(pb.WatchRequest(slice_id=active.id)))
    try:
        await asyncio.sleep(0.3)
        await monitoring(fed, "L4").SetCondition(
            pb.ConditionRequest(domain="L4", target="core/edge", loss=0.02), timeout=5
        )
        _, fired = await watch.wait_alert(FIRING, within_s=5.0)
        assert (fired.alert.cause, fired.alert.source_sp) == ("lossy", "M2"), fired.alert
    finally:
        await watch.close()
    await op(top, "Terminate", active.id)
    await fed.wait_idle()


async def pop_down_at_l1(fed: Federation) -> tuple[pb.Slice, Recorder]:
    """The three-tier slice with L1's pop ``core`` down, and T's Watch of it once the alert fired there."""
    active = await three_tier_slice(fed)
    watch = Recorder(fed.sps["T"].slices.Watch(pb.WatchRequest(slice_id=active.id)))
    try:
        await asyncio.sleep(0.3)
        await monitoring(fed, "L1").SetCondition(pb.ConditionRequest(domain="L1", target="core", down=True), timeout=5)
        await watch.wait_alert(FIRING, within_s=3.0)
    except BaseException:
        await watch.close()
        raise
    return active, watch


def asked(fed: Federation, sp: str, lower: str) -> int:
    """How often ``sp`` has asked ``lower`` which alerts fire (its log, kept across its restarts)."""
    path = fed.sps[sp].log_path
    return path.read_text(errors="replace").count(f"asking {lower} which alerts fire") if path.exists() else 0


async def test_a_restarted_mid_sp_keeps_its_open_alerts_so_the_top_sees_no_flap_while_it_relearns(
    fed: Federation,
) -> None:
    """L1's link is down, so M1 and T fire. M1 restarts cut off from L1 (a partition): T asks it what fires
    before M1 can hear from L1 again. M1 answers from its store, so T neither resolves nor fires again; once
    the partition heals M1 learns the same from L1 (nothing new), and the cut's end resolves, once."""
    active, watch = await pop_down_at_l1(fed)
    top = fed.sps["T"]
    try:
        t_asked, m_asked = asked(fed, "T", "M1"), asked(fed, "M1", "L1")
        fed.kill("M1")
        config = fed.sps["M1"].config_path
        armed = {
            **yaml.safe_load(config.read_text()),
            "faults_file": str(fed.fleet.write_faults("M1", partitions=["L1"])),
        }
        config.write_text(yaml.safe_dump(armed))
        await fed.restart("M1")
        for _ in range(150):  # T's stream to the restarted M1 is back and it asked (bounded: 15 s)
            if asked(fed, "T", "M1") > t_asked:
                break
            await asyncio.sleep(0.1)
        assert asked(fed, "T", "M1") > t_asked, "T did not ask M1 after its restart"
        await asyncio.sleep(1.0)  # whatever T's question set off has arrived
        assert asked(fed, "M1", "L1") == m_asked  # M1 has not heard from L1: it answered from its store
        assert [(e.alert.cause, e.alert.status) for _, e in watch.alerts()] == [("link", FIRING)], watch.events
        assert await health_at(fed, "T") == DEGRADED and await health_at(fed, "M1") == DEGRADED
        (mine,) = (await fed.sps["M1"].operator_slices.List(pb.ListRequest(), timeout=5)).slices
        listed = await monitoring(fed, "M1").ListAlerts(pb.SliceRef(slice_id=mine.id), timeout=5)
        assert [(x.cause, x.source_sp) for x in listed.open] == [("link", "L1")]

        fed.fleet.write_faults("M1")
        for _ in range(150):  # M1 reaches L1 again and asks it (bounded: 15 s)
            if asked(fed, "M1", "L1") > m_asked:
                break
            await asyncio.sleep(0.1)
        assert asked(fed, "M1", "L1") > m_asked, "M1 did not ask L1 after the partition healed"
        await asyncio.sleep(1.0)
        assert [(e.alert.cause, e.alert.status) for _, e in watch.alerts()] == [("link", FIRING)], watch.events

        await monitoring(fed, "L1").SetCondition(
            pb.ConditionRequest(domain="L1", target="core", restore=True), timeout=5
        )
        _, resolved = await watch.wait_alert(RESOLVED, within_s=5.0)
        assert (resolved.alert.cause, resolved.alert.source_sp) == ("link", "M1")
        await asyncio.sleep(0.3)
        assert [e.alert.status for _, e in watch.alerts()] == [FIRING, RESOLVED]
    finally:
        await watch.close()
    await op(top, "Terminate", active.id)
    await fed.wait_idle()


async def test_a_cut_link_fires_once_however_often_it_flaps_within_the_hysteresis_window(fed: Federation) -> None:
    # L4 resolves only after 3 s clear: even on a loaded machine, five flaps fit in one window.
    active = await three_tier_slice(fed, clear_s={"L4": 3.0})
    top = fed.sps["T"]
    watch = Recorder(top.slices.Watch(pb.WatchRequest(slice_id=active.id)))
    await asyncio.sleep(0.3)
    lab = monitoring(fed, "L4")
    try:
        for _ in range(5):  # down and up every 0.1 s: faster than the 3 s clear window
            await lab.SetCondition(pb.ConditionRequest(domain="L4", target="core", down=True), timeout=5)
            await asyncio.sleep(0.05)
            await lab.SetCondition(pb.ConditionRequest(domain="L4", target="core", restore=True), timeout=5)
            await asyncio.sleep(0.05)
        _, fired = await watch.wait_alert(FIRING, within_s=3.0)
        assert fired.alert.cause == "link" and fired.alert.source_sp == "M2"
        await watch.wait_alert(RESOLVED, within_s=8.0)
        await asyncio.sleep(0.3)
        assert [e.alert.status for _, e in watch.alerts()] == [FIRING, RESOLVED]
    finally:
        await watch.close()


async def test_hostile_rule_values_are_refused_naming_the_field(fed: Federation) -> None:
    active = await three_tier_slice(fed)
    mon = pb_grpc.MonitoringStub(fed.sps["T"].channel)
    for rule, field in (
        (pb.AlertRule(name="r", metric="latency_ms", comparison=">", threshold=float("nan")), "rule.threshold"),
        (pb.AlertRule(name="r", metric="latency_ms", comparison=">", threshold=float("inf")), "rule.threshold"),
        (pb.AlertRule(name="r", metric="latency_ms", comparison=">", threshold=-1), "rule.threshold"),
        (pb.AlertRule(name="r", metric="latency_ms", comparison=">", threshold=5, for_s=-1), "rule.for_s"),
        (pb.AlertRule(name="r", metric="latency_ms", comparison=">", threshold=5, for_s=float("nan")), "rule.for_s"),
        (pb.AlertRule(name="r", metric="loss", comparison=">", threshold=2), "rule.threshold"),
        (pb.AlertRule(name="r", metric="jitter", comparison=">", threshold=5), "rule.metric"),
        (pb.AlertRule(name="r", metric="latency_ms", comparison="~", threshold=5), "rule.comparison"),
        (pb.AlertRule(name="", metric="latency_ms", comparison=">", threshold=5), "rule.name"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await mon.AddRule(pb.AddRuleRequest(slice_id=active.id, rule=rule), timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, rule
        assert field in (err.value.details() or ""), (rule, err.value.details())
    ok = await mon.AddRule(
        pb.AddRuleRequest(
            slice_id=active.id, rule=pb.AlertRule(name="slow", metric="latency_ms", comparison=">", threshold=50)
        ),
        timeout=5,
    )
    assert ok.name == "slow"
    lab = monitoring(fed, "L1")
    for bad in (
        pb.ConditionRequest(domain="L1", target="core/edge", loss=float("nan")),
        pb.ConditionRequest(domain="L1", target="core/edge", added_latency_ms=-5),
        pb.ConditionRequest(domain="L1", target="nowhere", down=True),
        pb.ConditionRequest(domain="L9", target="core", down=True),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await lab.SetCondition(bad, timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad


async def test_cli_watch_json_prints_one_alert_object_per_line_and_slice_alerts_lists_it(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    active = await three_tier_slice(fed)
    monkeypatch.setenv("FEDBROKER_CREDS", str(fed.fleet.pki_dir))
    top, leaf = fed.sps["T"].address, fed.sps["L1"].address
    watcher = await asyncio.create_subprocess_exec(
        FEDBROKER,
        *("watch", "--broker", top, "--slice", active.id, "--json", "--count", "2", "--timeout", "120"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await asyncio.sleep(2.0)  # the CLI process is up and its stream open
        cut = await cli("monitoring", "condition", "L1", "core/edge", "--down", "--broker", leaf, "--json")
        assert json.loads(cut)["segments"] == 1
        for _ in range(100):
            shown = await cli("slice", "show", active.id, "--broker", top)
            if "DEGRADED" in shown:
                break
            await asyncio.sleep(0.05)
        assert "DEGRADED" in shown and "link_up" in shown
        listed = json.loads(await cli("slice", "list", "--broker", top, "--json"))
        assert [s["health"] for s in listed["slices"]] == ["DEGRADED"]
        alerts = json.loads(await cli("slice", "alerts", active.id, "--broker", top, "--json"))
        assert [(a["cause"], a["source_sp"], a["status"]) for a in alerts["open"]] == [("link", "M1", "FIRING")]
        await cli("monitoring", "condition", "L1", "core/edge", "--restore", "--broker", leaf)
        # Each CLI call above is a fresh Python process (about a second on a loaded machine): the
        # watcher's own timeout is the bound, not a guess at how long they take.
        stdout, stderr = await asyncio.wait_for(watcher.communicate(), 130)
    finally:
        if watcher.returncode is None:
            watcher.kill()
            await watcher.wait()
    assert watcher.returncode == 0, stderr.decode()
    lines = [json.loads(line) for line in stdout.decode().splitlines()]
    assert [(x["kind"], x["status"]) for x in lines] == [("alert", "firing"), ("alert", "resolved")]
    for x in lines:
        assert x["slice_id"] == active.id and x["state"] == "ACTIVE" and x["source_sp"] == "M1"
        assert x["metric"] == "link_up" and x["threshold"] == 1.0 and x["severity"] == "critical"
        assert isinstance(x["value"], float)


async def cli(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        FEDBROKER, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, (args, stderr.decode())
    return stdout.decode()


async def test_metrics_are_served_on_loopback_and_parse_with_the_prometheus_text_parser(fed: Federation) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    await chain_of_leaves(fed, ["L1", "L2"])
    top = await fed.start("T", lowers=["L1", "L2"], metrics_listen="127.0.0.1:0")
    await fed.wait_terminals("T", ["L1.ep", "L2.ep"])
    held = await reserve(top, "m", slice_request("L1.ep", "L2.ep", 100, latency_budget_ms=100))
    await op(top, "Commit", held.id)
    await op(top, "Activate", held.id)
    await monitoring(fed, "L2").SetCondition(pb.ConditionRequest(domain="L2", target="edge", down=True), timeout=5)
    address = (top.data_dir / "metrics_address").read_text().strip()
    families: dict[str, Any] = {}
    async with aiohttp.ClientSession() as http:
        for _ in range(100):  # until the alert has climbed
            async with http.get(f"http://{address}/metrics", timeout=aiohttp.ClientTimeout(total=5)) as resp:
                assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
                text = await resp.text()
            families = {f.name: f for f in text_string_to_metric_families(text)}
            if families["fedbroker_alerts_firing"].samples[0].value == 1:
                break
            await asyncio.sleep(0.05)

    def value(family: str, **labels: str) -> float:
        found = [s.value for s in families[family].samples if all(s.labels.get(k) == v for k, v in labels.items())]
        assert found, (family, labels, families[family].samples)
        return float(found[0])

    assert value("fedbroker_alerts_firing") == 1
    assert value("fedbroker_slices", state="ACTIVE") == 1 and value("fedbroker_holds") == 1
    assert value("fedbroker_rpcs", method="Reserve", code="OK") == 1
    counts = [s for s in families["fedbroker_rpc_seconds"].samples if s.name == "fedbroker_rpc_seconds_count"]
    assert [s.value for s in counts if s.labels["method"] == "Activate"] == [1]
    assert value("fedbroker_note_version", sp="L1") >= 1
    assert value("fedbroker_segments_active", domain="L2") == 1
    assert value("fedbroker_segments_degraded", domain="L2") == 1
    assert value("fedbroker_segments_degraded", domain="L1") == 0
    assert value("fedbroker_alerts_emitted", status="firing") == 1
    # No slice id is a label: the cardinality is bounded by the configuration.
    assert held.id not in text


def test_metrics_listen_off_loopback_without_tls_is_refused() -> None:
    from broker.api.metrics import check_listen
    from broker.descriptors import ConfigError

    check_listen("127.0.0.1:9100", tls=False)
    check_listen("[::1]:9100", tls=False)
    check_listen("0.0.0.0:9100", tls=True)
    for bad in ("0.0.0.0:9100", "192.0.2.1:9100", "example.org:9100"):
        with pytest.raises(ConfigError, match="metrics_listen"):
            check_listen(bad, tls=False)


def test_the_monitoring_scenario_passes(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    run = subprocess.run(
        [FEDBROKER, "scenario", "run", str(ROOT / "scenarios" / "monitoring.yaml"), "--report-json", str(report)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout[-4000:]
    steps = {s["name"]: s for s in json.loads(report.read_text())["steps"]}
    assert "from M1" in steps["one latency alert reaches the top naming M1, not the leaf"]["detail"]


async def test_skeleton_mode_counts_link_state_only_and_switches_back_at_run_time(fed: Federation) -> None:
    await chain_of_leaves(fed, ["L1", "L2"])
    top = await fed.start("T", lowers=["L1", "L2"])
    await fed.wait_terminals("T", ["L1.ep", "L2.ep"])
    held = await reserve(top, "sk", slice_request("L1.ep", "L2.ep", 100, latency_budget_ms=100))
    await op(top, "Commit", held.id)
    await op(top, "Activate", held.id)
    watch = Recorder(top.slices.Watch(pb.WatchRequest(slice_id=held.id)))
    lab = monitoring(fed, "L2")
    try:
        await asyncio.sleep(0.3)
        mode = await lab.SetMode(pb.MonitoringModeRequest(mode="skeleton", delta=1.0), timeout=5)
        assert mode.mode == "skeleton"
        await lab.SetCondition(pb.ConditionRequest(domain="L2", target="edge", added_latency_ms=900), timeout=5)
        await asyncio.sleep(1.5)
        assert watch.alerts() == []  # latency is not measured in skeleton mode
        await lab.SetCondition(pb.ConditionRequest(domain="L2", target="edge", down=True), timeout=5)
        _, fired = await watch.wait_alert(FIRING, within_s=3.0)
        assert fired.alert.cause == "link" and fired.alert.source_sp == "L2"
        await lab.SetCondition(pb.ConditionRequest(domain="L2", target="edge", restore=True), timeout=5)
        await watch.wait_alert(RESOLVED, within_s=3.0)
        await lab.SetMode(pb.MonitoringModeRequest(mode="normal"), timeout=5)
        await lab.SetCondition(pb.ConditionRequest(domain="L2", target="edge", added_latency_ms=900), timeout=5)
        for _ in range(150):
            if any(e.alert.cause == "latency" for _, e in watch.alerts()):
                break
            await asyncio.sleep(0.02)
        assert [e.alert.cause for _, e in watch.alerts()] == ["link", "link", "latency"]
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await lab.SetMode(pb.MonitoringModeRequest(mode="off"), timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "mode" in (err.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await pb_grpc.MonitoringStub(top.channel).SetMode(pb.MonitoringModeRequest(mode="normal"), timeout=5)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED  # a customer may not switch it
    finally:
        await watch.close()


async def test_an_upper_sp_asks_again_what_fires_when_a_lower_sp_comes_back(fed: Federation) -> None:
    _, watch = await pop_down_at_l1(fed)
    try:
        # The leaf restarts without the lab's condition (it lives in memory): its link is up again, and
        # no resolved alert was ever sent. M1 asks L1 what fires when L1's stream is back, and resolves.
        fed.kill("L1")
        await fed.restart("L1")
        _, resolved = await watch.wait_alert(RESOLVED, within_s=15.0)
        assert resolved.alert.cause == "link" and resolved.alert.source_sp == "M1"
        assert await health_at(fed, "M1") == HEALTHY and await health_at(fed, "T") == HEALTHY
    finally:
        await watch.close()

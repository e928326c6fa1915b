"""The slice lifecycle core in one process: emulated domains, memory WIM, real planner, a fake clock."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from broker.core.lifecycle import SliceManager
from broker.core.workflow import TaskStatus
from broker.store.sqlite import SqliteStore
from capability_catalog.model import CapabilityNote, SpId, TerminalId
from domain_agents.base import DomainAgent, SegmentGrant, SegmentOrder
from domain_agents.emulated import EmulatedDomainAgent, EmulatedDomainConfig
from slicing.errors import AlreadyExists, FailedPrecondition, FedError, ResourceExhausted, Unavailable
from slicing.model import SliceRequest, SliceState
from tests.topology import leaf_domain
from wim.memory import MemoryWimDriver

S = SliceState


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class LabelSkewingAgent:
    """Delegates to a real agent but, for the first ``skews`` reservations, reports a label one higher."""

    def __init__(self, inner: EmulatedDomainAgent, skews: int) -> None:
        self._inner = inner
        self.skews = skews
        self.reserves = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    @property
    def domain_id(self) -> SpId:
        return self._inner.domain_id

    async def reserve(self, order: SegmentOrder) -> SegmentGrant:
        grant = await self._inner.reserve(order)
        self.reserves += 1
        if self.reserves <= self.skews:
            return replace(grant, labels={p: v + 1 for p, v in grant.labels.items()})
        return grant


@dataclass
class World:
    manager: SliceManager
    agents: dict[str, DomainAgent]
    wim: MemoryWimDriver
    clock: Clock
    store: SqliteStore
    notes: dict[SpId, CapabilityNote]

    def idle(self) -> bool:
        u = self.manager.usage()
        busy = [d for d in u.domains if d.bandwidth_mbps or d.labels or d.function_slots or d.addresses]
        return u.holding_slices == 0 and not busy and u.wim.services == 0


async def first_note(agent: DomainAgent) -> CapabilityNote:
    stream = agent.notes()
    assert isinstance(stream, AsyncIterator)
    note = await anext(stream)
    await stream.aclose()  # type: ignore[attr-defined]
    return note


def configs(**functions: dict[str, int]) -> list[EmulatedDomainConfig]:
    specs = [
        leaf_domain("L1", {"L2": "1000-1999"}, functions=functions.get("L1")),
        leaf_domain("L2", {"L1": "1500-2999", "L3": "1000-1999"}, functions=functions.get("L2")),
        leaf_domain("L3", {"L2": "1500-2999"}, functions=functions.get("L3")),
    ]
    return [EmulatedDomainConfig.from_dict(s, f"domains[{i}]") for i, s in enumerate(specs)]


async def make_world(
    tmp_path: Path,
    *,
    agents: Mapping[str, DomainAgent] | None = None,
    clock: Clock | None = None,
    **functions: dict[str, int],
) -> World:
    clock = clock or Clock()
    agents = dict(agents or {c.id: EmulatedDomainAgent(c, clock) for c in configs(**functions)})
    notes = {SpId(d): await first_note(a) for d, a in agents.items()}
    store = SqliteStore(tmp_path / "state.db")
    wim = MemoryWimDriver()
    manager = SliceManager(
        sp_id="T",
        store=store,
        agents=agents,
        local_domains=list(agents),
        wim=wim,
        notes=lambda: notes,
        clock=clock,
        default_hold_s=30,
    )
    return World(manager, agents, wim, clock, store, notes)


def req(mbps: int = 100, chain: tuple[str, ...] = ()) -> SliceRequest:
    return SliceRequest(src=TerminalId("L1.ep"), dst=TerminalId("L3.ep"), bandwidth_mbps=mbps, chain=chain)


async def test_full_lifecycle_holds_in_every_domain_then_releases_everything(tmp_path: Path) -> None:
    w = await make_world(tmp_path)
    rec = await w.manager.reserve("alice", "r1", req(250))
    assert rec.state is S.HELD
    assert [s.domain for s in rec.segments] == ["L1", "L2", "L3"]
    assert rec.hold_expires_at == w.clock.now + 30
    assert all(ln.labels_agree() for ln in rec.links)
    assert set(rec.addresses) == {"L1.ep", "L3.ep"}
    rec = await w.manager.commit(rec.id)
    assert rec.state is S.COMMITTED
    rec = await w.manager.activate(rec.id)
    assert rec.state is S.ACTIVE and w.wim.usage().services == 2
    assert w.manager.usage().holding_slices == 1
    rec = await w.manager.terminate(rec.id)
    assert rec.state is S.TERMINATED
    assert w.idle()
    ops = {t["operation"] for t in w.store.tasks(rec.id)}
    assert {"reserve", "commit", "activate", "terminate"} <= ops


async def test_labels_that_disagree_are_retried_with_other_labels(tmp_path: Path) -> None:
    clock = Clock()
    cfgs = configs()
    inner = {c.id: EmulatedDomainAgent(c, clock) for c in cfgs}
    skewing = LabelSkewingAgent(inner["L2"], skews=1)
    w = await make_world(tmp_path, agents={**inner, "L2": skewing}, clock=clock)  # type: ignore[dict-item]
    rec = await w.manager.reserve("alice", "r1", req())
    assert rec.state is S.HELD
    assert skewing.reserves == 2  # the first attempt disagreed and was released
    assert all(ln.label_a == ln.label_b for ln in rec.links)
    await w.manager.abort(rec.id)
    assert w.idle()


async def test_reserve_fails_and_holds_nothing_when_labels_never_agree(tmp_path: Path) -> None:
    clock = Clock()
    inner = {c.id: EmulatedDomainAgent(c, clock) for c in configs()}
    w = await make_world(
        tmp_path,
        agents={**inner, "L2": LabelSkewingAgent(inner["L2"], skews=99)},
        clock=clock,  # type: ignore[dict-item]
    )
    with pytest.raises(ResourceExhausted, match="did not agree"):
        await w.manager.reserve("alice", "r1", req())
    assert w.manager.slices()[0].state is S.FAILED
    assert w.idle()


async def test_reserve_releases_held_domains_when_one_refuses(tmp_path: Path) -> None:
    w = await make_world(tmp_path, L2={"firewall": 1})
    first = await w.manager.reserve("alice", "r1", req(chain=("firewall",)))
    before = {d: w.agents[d].usage() for d in ("L1", "L3")}
    with pytest.raises(ResourceExhausted) as info:
        await w.manager.reserve("alice", "r2", req(chain=("firewall",)))
    # The refusal was cranked back around; with no other route the error names it as its cause.
    assert info.value.constraint == "crankback"
    assert [c.domain for c in info.value.causes] == ["L2"]
    assert "no free 'firewall' function slot in domain L2" in info.value.message
    assert {d: w.agents[d].usage() for d in ("L1", "L3")} == before
    await w.manager.abort(first.id)
    assert w.idle()


async def test_hold_expiry_releases_every_domain(tmp_path: Path) -> None:
    w = await make_world(tmp_path)
    rec = await w.manager.reserve("alice", "r1", req(), hold_time_s=5)
    assert await w.manager.expire_due() == []
    w.clock.now += 5
    assert await w.manager.expire_due() == [rec.id]
    assert w.manager.get(rec.id).state is S.EXPIRED
    assert w.idle()
    with pytest.raises(FailedPrecondition):
        await w.manager.commit(rec.id)


async def test_commit_after_hold_time_is_refused_and_releases(tmp_path: Path) -> None:
    w = await make_world(tmp_path)
    rec = await w.manager.reserve("alice", "r1", req(), hold_time_s=5)
    w.clock.now += 6  # the expiry loop has not run yet
    with pytest.raises(FailedPrecondition, match="expired"):
        await w.manager.commit(rec.id)
    assert w.manager.get(rec.id).state is S.EXPIRED
    assert w.idle()


async def test_commit_a_domain_keeps_failing_is_retried_until_the_hold_time_then_released_everywhere(
    tmp_path: Path,
) -> None:
    clock = Clock()
    cfgs = configs()
    agents = {c.id: EmulatedDomainAgent(c, clock, fail_at="commit" if c.id == "L3" else None) for c in cfgs}
    w = await make_world(tmp_path, agents=agents, clock=clock)
    rec = await w.manager.reserve("alice", "r1", req())
    with pytest.raises(Unavailable, match="the commit is decided and goes on: L3 did not confirm"):
        await w.manager.commit(rec.id)
    # The decision stands: the others committed, the slice says whom it waits for.
    pending = w.manager.get(rec.id)
    assert pending.state is S.COMMITTING and pending.reason.endswith("[pending: L3]")
    assert {s.domain: s.state for s in pending.segments} == {"L1": S.COMMITTED, "L2": S.COMMITTED, "L3": S.HELD}
    with pytest.raises(Unavailable):  # a retry before the hold time is over: still waiting
        await w.manager.commit(rec.id)
    w.clock.now = pending.hold_expires_at + 1  # L3's hold is gone by now: everything is released
    with pytest.raises(Unavailable, match="did not confirm within the hold time"):
        await w.manager.commit(rec.id)
    assert w.manager.get(rec.id).state is S.FAILED
    assert w.idle()


async def test_same_request_id_returns_the_same_slice_and_a_different_request_is_refused(tmp_path: Path) -> None:
    w = await make_world(tmp_path)
    a = await w.manager.reserve("alice", "r1", req(100))
    b = await w.manager.reserve("alice", "r1", req(100))
    assert a.id == b.id and len(w.manager.slices()) == 1
    with pytest.raises(AlreadyExists, match="request_id 'r1'"):
        await w.manager.reserve("alice", "r1", req(101))
    other = await w.manager.reserve("bob", "r1", req(100))  # request ids are per requester
    assert other.id != a.id


async def test_state_machine_refuses_operations_in_the_wrong_state(tmp_path: Path) -> None:
    w = await make_world(tmp_path)
    rec = await w.manager.reserve("alice", "r1", req())
    with pytest.raises(FailedPrecondition, match="Activate needs COMMITTED"):
        await w.manager.activate(rec.id)
    await w.manager.commit(rec.id)
    with pytest.raises(FailedPrecondition, match="Abort needs HELD"):
        await w.manager.abort(rec.id)
    assert (await w.manager.commit(rec.id)).state is S.COMMITTED  # repeated commit is answered


async def test_recover_restores_domain_holdings_and_expires_lapsed_holds(tmp_path: Path) -> None:
    w = await make_world(tmp_path)
    kept = await w.manager.reserve("alice", "kept", req(300))
    await w.manager.commit(kept.id)
    await w.manager.activate(kept.id)
    lapsing = await w.manager.reserve("alice", "lapsing", req(100), hold_time_s=5)
    usage_before = {d: a.usage() for d, a in w.agents.items()}
    w.store.close()

    # A new process: fresh agents and WIM over the same database.
    w.clock.now += 10
    w2 = await make_world(tmp_path, clock=w.clock)
    await w2.manager.recover()
    assert w2.manager.get(kept.id).state is S.ACTIVE
    assert w2.manager.get(lapsing.id).state is S.EXPIRED
    after = {d: a.usage() for d, a in w2.agents.items()}
    for d in after:
        assert after[d].bandwidth_mbps == usage_before[d].bandwidth_mbps - 100
    assert w2.wim.usage().services == 2
    await w2.manager.terminate(kept.id)
    assert w2.idle()


# --- crankback, loop safety, dry run (issue 4) ----------------------------------------------------


def diamond_configs(*, refusing: tuple[str, ...] = ()) -> list[EmulatedDomainConfig]:
    """L1 → L3 via L2 (fast) or L4 (slow); domains in ``refusing`` refuse every reservation."""
    specs = [
        leaf_domain("L1", {"L2": "1000-1999", "L4": "1000-1999"}),
        leaf_domain("L2", {"L1": "1000-1999", "L3": "1000-1999"}),
        leaf_domain("L3", {"L2": "1000-1999", "L4": "1000-1999"}),
        leaf_domain("L4", {"L1": "1000-1999", "L3": "1000-1999"}),
    ]
    specs[3]["links"][0]["latency_ms"] = 5
    for spec in specs:
        if spec["id"] in refusing:
            spec["faults"] = {"fail_at": "reserve"}
    return [EmulatedDomainConfig.from_dict(s, f"domains[{i}]") for i, s in enumerate(specs)]


async def diamond_world(tmp_path: Path, refusing: tuple[str, ...] = ()) -> World:
    clock = Clock()
    agents = {c.id: EmulatedDomainAgent(c, clock) for c in diamond_configs(refusing=refusing)}
    return await make_world(tmp_path, agents=agents, clock=clock)  # type: ignore[arg-type]


async def test_refusal_at_a_domain_cranks_back_onto_the_alternative_and_holds_nothing_there(tmp_path: Path) -> None:
    w = await diamond_world(tmp_path, refusing=("L2",))
    assert [s.domain for s in w.manager.dry_run(req()).segments] == ["L1", "L2", "L3"]  # L2 is first choice

    rec = await w.manager.reserve("alice", "r1", req())

    assert rec.state is S.HELD
    assert [s.domain for s in rec.segments] == ["L1", "L4", "L3"]
    assert all(ln.labels_agree() for ln in rec.links)
    statuses = [(t["name"], t["status"]) for t in w.store.tasks(rec.id) if t["operation"] == "reserve"]
    assert ("reserve L2#1", "failed") in statuses
    assert w.agents["L2"].usage().bandwidth_mbps == 0
    await w.manager.abort(rec.id)
    assert w.idle()


async def test_crankback_gives_up_when_every_alternative_refuses_and_names_each_refusal(tmp_path: Path) -> None:
    w = await diamond_world(tmp_path, refusing=("L2", "L4"))

    with pytest.raises(ResourceExhausted) as info:
        await w.manager.reserve("alice", "r1", req())

    assert info.value.constraint == "crankback"
    assert [c.domain for c in info.value.causes] == ["L2", "L4"]
    assert "no route avoids the runs lower SPs refused" in info.value.message
    # The core says it in its final form (the edge only maps the code): each refusal first, once.
    message = info.value.message
    assert message.startswith("[L2] "), message
    assert message.count("[L2] ") == 1 and message.count("[L4] ") == 1, message
    assert message.endswith("crankback around 2 refusal(s))"), message
    assert w.manager.slices()[0].state is S.FAILED
    assert w.manager.slices()[0].reason == message
    assert w.idle()


async def test_request_whose_trace_holds_this_sp_is_refused_as_a_loop(tmp_path: Path) -> None:
    w = await make_world(tmp_path)

    with pytest.raises(FailedPrecondition, match=r"^loop: the request already passed through T") as info:
        await w.manager.reserve("alice", "r1", replace(req(), trace=("X", "T")))

    assert info.value.constraint == "loop"
    assert w.manager.slices() == []


async def test_sub_requests_carry_the_trace_with_this_sp_appended(tmp_path: Path) -> None:
    w = await make_world(tmp_path)
    rec = await w.manager.reserve("alice", "r1", replace(req(), trace=("C",)))
    assert all(s.request.trace == ("C", "T") for s in rec.segments)
    await w.manager.abort(rec.id)


async def test_dry_run_returns_the_plan_and_holds_or_records_nothing(tmp_path: Path) -> None:
    w = await make_world(tmp_path, L2={"firewall": 1})

    p = w.manager.dry_run(req(chain=("firewall",)))

    assert p.domains() == ["L1", "L2", "L3"]
    assert [(pl.type, pl.domain) for pl in p.placements] == [("firewall", "L2")]
    assert w.manager.slices() == []
    assert w.idle()


class PlanningRefusalAgent(LabelSkewingAgent):
    """Refuses every reservation as a lower SP's planner would: FAILED_PRECONDITION naming ``constraint``."""

    def __init__(self, inner: EmulatedDomainAgent, constraint: str) -> None:
        super().__init__(inner, 0)
        self.constraint = constraint

    async def reserve(self, order: SegmentOrder) -> SegmentGrant:
        raise FailedPrecondition(f"{self.constraint}: no route below", constraint=self.constraint)


async def test_a_childs_planning_refusal_cranks_back_onto_another_plan(tmp_path: Path) -> None:
    clock = Clock()
    agents: dict[str, DomainAgent] = {c.id: EmulatedDomainAgent(c, clock) for c in diamond_configs()}
    agents["L2"] = PlanningRefusalAgent(agents["L2"], "exclude")  # type: ignore[arg-type]
    w = await make_world(tmp_path, agents=agents, clock=clock)

    rec = await w.manager.reserve("alice", "r1", req())

    assert [s.domain for s in rec.segments] == ["L1", "L4", "L3"]
    await w.manager.abort(rec.id)
    assert w.idle()


async def test_a_childs_state_refusal_is_not_cranked_back(tmp_path: Path) -> None:
    clock = Clock()
    agents: dict[str, DomainAgent] = {c.id: EmulatedDomainAgent(c, clock) for c in diamond_configs()}
    agents["L2"] = PlanningRefusalAgent(agents["L2"], "")  # type: ignore[arg-type]
    w = await make_world(tmp_path, agents=agents, clock=clock)

    with pytest.raises(FailedPrecondition):
        await w.manager.reserve("alice", "r1", req())
    assert w.idle()


async def test_when_every_plan_is_refused_for_one_constraint_below_that_constraint_is_named(tmp_path: Path) -> None:
    clock = Clock()
    agents: dict[str, DomainAgent] = {c.id: EmulatedDomainAgent(c, clock) for c in diamond_configs()}
    for d in ("L2", "L4"):
        agents[d] = PlanningRefusalAgent(agents[d], "exclude")  # type: ignore[arg-type]
    w = await make_world(tmp_path, agents=agents, clock=clock)

    with pytest.raises(FedError) as info:
        await w.manager.reserve("alice", "r1", req())
    assert info.value.constraint == "exclude"
    assert [c.domain for c in info.value.causes] == ["L2", "L4"]
    assert w.idle()


class CountingConnection:
    """A SQLite connection that counts its commits and can be told to fail the next one (a disk error)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self.commits = 0
        self.fail_next_commit = False

    def execute(self, sql: str, args: Sequence[object] = ()) -> sqlite3.Cursor:
        if sql == "COMMIT":
            if self.fail_next_commit:
                self.fail_next_commit = False
                self._db.execute("ROLLBACK")
                raise sqlite3.OperationalError("disk I/O error")
            self.commits += 1
        return self._db.execute(sql, args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


def counting(store: SqliteStore) -> CountingConnection:
    conn = CountingConnection(store._db)
    store._db = conn  # type: ignore[assignment]
    return conn


async def test_each_step_of_an_operation_commits_once_whatever_it_writes(tmp_path: Path) -> None:
    """Reserve, Commit and Activate over three domains: the task log, the children's answers and the
    new state of a step go in one transaction (the write-ahead decisions before the children hear stay
    commits of their own)."""
    w = await make_world(tmp_path)
    conn = counting(w.store)
    rec = await w.manager.reserve("alice", "r1", req(10))
    # The slice RESERVING; its plan with the tasks about to run; the answers, the labels and HELD.
    assert conn.commits == 3
    conn.commits = 0
    rec = await w.manager.commit(rec.id)
    assert rec.state is S.COMMITTED and conn.commits == 2  # COMMITTING (decided), then the answers and COMMITTED
    conn.commits = 0
    rec = await w.manager.activate(rec.id)
    # ACTIVATING; the answers before the two stitches; each stitch as it is made; the log and ACTIVE.
    assert rec.state is S.ACTIVE and conn.commits == 5
    assert [t["status"] for t in w.store.tasks(rec.id) if t["operation"] == "reserve"] == ["done"] * 3
    assert {t["operation"] for t in w.store.tasks(rec.id)} == {"reserve", "commit", "activate"}
    reopened = SqliteStore(tmp_path / "state.db")
    assert reopened.get(rec.id) == w.store.get(rec.id)  # what memory says is what was committed
    reopened.close()


async def test_a_step_whose_commit_fails_leaves_memory_and_watchers_as_the_database_is(tmp_path: Path) -> None:
    w = await make_world(tmp_path)
    rec = await w.manager.reserve("alice", "r1", req(10))
    labels = w.store.used_link_labels()
    conn = counting(w.store)
    events = w.manager.watch()
    first = asyncio.ensure_future(anext(events))
    await asyncio.sleep(0)
    with pytest.raises(sqlite3.OperationalError), w.manager._batch():
        w.manager._save(replace(rec, state=S.COMMITTING, links=()))
        w.manager._log(rec.id, "commit", [TaskStatus(0, "commit L1", "done")])
        conn.fail_next_commit = True
    await asyncio.sleep(0.01)
    assert not first.done()  # no watcher heard of a state that was never stored
    assert w.manager.get(rec.id) == rec  # memory forgot what did not commit
    assert w.store.used_link_labels() == labels  # and the labels the links hold are back
    assert not [t for t in w.store.tasks(rec.id) if t["operation"] == "commit"]
    with w.manager._batch():
        w.manager._save(replace(rec, state=S.COMMITTING))
    assert (await asyncio.wait_for(first, 1)).state is S.COMMITTING  # told once committed
    await events.aclose()  # type: ignore[attr-defined]

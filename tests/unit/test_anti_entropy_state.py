"""Anti-entropy compares provisioning state too, not only what is held (issue 19, item 6).

A lower SP can hold a segment of a settled slice in another provisioning state than the slice has:
an Activate that crossed the compensating Deactivate, an operator there who took it out of service,
a lost Commit answer. The next anti-entropy pass brings it back to the slice's decision. The children
here are real emulated agents that the manager treats as lower SPs (not local domains), so each one
answers ``holdings`` with the state it really holds, as a lower SP's List does.
"""

from __future__ import annotations

from pathlib import Path

from broker.core.lifecycle import SliceManager
from broker.store.sqlite import SqliteStore
from capability_catalog.model import SpId
from domain_agents.emulated import EmulatedDomainAgent
from slicing.model import SliceState
from tests.unit.test_lifecycle import Clock, configs, first_note, req
from wim.memory import MemoryWimDriver

S = SliceState


async def _world(tmp_path: Path, *, local: bool = False) -> tuple[SliceManager, dict[str, EmulatedDomainAgent]]:
    clock = Clock()
    agents = {c.id: EmulatedDomainAgent(c, clock) for c in configs()}
    notes = {SpId(d): await first_note(a) for d, a in agents.items()}
    manager = SliceManager(
        sp_id="T",
        store=SqliteStore(tmp_path / "state.db"),
        agents=agents,
        local_domains=list(agents) if local else [],
        wim=MemoryWimDriver(),
        notes=lambda: notes,
        clock=clock,
        default_hold_s=30,
    )
    return manager, agents


def _states(manager: SliceManager, agents: dict[str, EmulatedDomainAgent], slice_id: str) -> dict[str, S]:
    rec = manager.get(slice_id)
    return {seg.domain: agents[seg.domain].state_of(seg.handle) for seg in rec.segments}


async def test_a_lower_sp_that_put_a_committed_slice_in_service_is_deactivated(tmp_path: Path) -> None:
    manager, agents = await _world(tmp_path)
    rec = await manager.commit((await manager.reserve("alice", "r1", req())).id)
    seg = next(s for s in rec.segments if s.domain == "L2")
    await agents["L2"].activate(seg.handle)  # an Activate that arrived after the compensating Deactivate
    assert _states(manager, agents, rec.id)["L2"] is S.ACTIVE
    assert await manager.anti_entropy("L2") == []  # nothing released: the segment is the slice's
    assert set(_states(manager, agents, rec.id).values()) == {S.COMMITTED}
    assert manager.get(rec.id).state is S.COMMITTED


async def test_a_lower_sp_that_took_an_active_slice_out_of_service_is_activated_again(tmp_path: Path) -> None:
    manager, agents = await _world(tmp_path)
    rec = await manager.commit((await manager.reserve("alice", "r1", req())).id)
    rec = await manager.activate(rec.id)
    seg = next(s for s in rec.segments if s.domain == "L3")
    await agents["L3"].deactivate(seg.handle)
    await manager.anti_entropy("L3")
    assert set(_states(manager, agents, rec.id).values()) == {S.ACTIVE}
    assert manager.get(rec.id).state is S.ACTIVE


async def test_a_lower_sp_that_still_holds_a_committed_segment_is_told_commit_again(tmp_path: Path) -> None:
    manager, agents = await _world(tmp_path)
    rec = await manager.commit((await manager.reserve("alice", "r1", req())).id)
    seg = next(s for s in rec.segments if s.domain == "L1")
    await agents["L1"].restore(seg.handle, committed=False)  # back to HELD, as if the Commit never arrived
    assert _states(manager, agents, rec.id)["L1"] is S.HELD
    await manager.anti_entropy("L1")
    assert set(_states(manager, agents, rec.id).values()) == {S.COMMITTED}


async def test_agreeing_children_and_busy_slices_are_left_alone(tmp_path: Path) -> None:
    manager, agents = await _world(tmp_path)
    rec = await manager.commit((await manager.reserve("alice", "r1", req())).id)
    for d in agents:
        assert await manager.anti_entropy(d) == []
    assert set(_states(manager, agents, rec.id).values()) == {S.COMMITTED}
    seg = next(s for s in rec.segments if s.domain == "L2")
    await agents["L2"].activate(seg.handle)
    async with manager.slice_lock(rec.id):  # an operation runs on the slice: it settles it, not anti-entropy
        await manager.anti_entropy("L2")
        assert _states(manager, agents, rec.id)["L2"] is S.ACTIVE
    await manager.anti_entropy("L2")
    assert _states(manager, agents, rec.id)["L2"] is S.COMMITTED


async def test_a_local_domain_is_not_realigned(tmp_path: Path) -> None:
    """A local domain's state is the broker's own word, not a lower SP's report: anti-entropy leaves it be."""
    manager, agents = await _world(tmp_path, local=True)
    rec = await manager.commit((await manager.reserve("alice", "r1", req())).id)
    rec = await manager.activate(rec.id)
    seg = next(s for s in rec.segments if s.domain == "L2")
    await agents["L2"].restore(seg.handle, committed=True)  # only held or committed at the agent now
    await manager.anti_entropy("L2")
    assert _states(manager, agents, rec.id)["L2"] is S.COMMITTED
    assert manager.get(rec.id).state is S.ACTIVE

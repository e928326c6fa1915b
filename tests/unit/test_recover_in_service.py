"""A restarted broker puts back in service what was in service (its local agents only restore holdings).

Before, an emulated leaf restored an ACTIVE slice's segment as COMMITTED: the slice said ACTIVE, but
the agent no longer measured it, so a degraded link under it raised no alert (issue 14), and a netns
segment whose namespaces were gone was not rebuilt.
"""

from __future__ import annotations

from pathlib import Path

from broker.core.lifecycle import SliceManager
from domain_agents.emulated import EmulatedDomainAgent
from domain_agents.emulated_books import Condition
from slicing.model import SliceState
from tests.unit.test_lifecycle import configs, make_world, req

S = SliceState


async def test_an_active_slice_is_in_service_and_measured_again_after_a_restart(tmp_path: Path) -> None:
    w = await make_world(tmp_path)
    active = await w.manager.activate((await w.manager.commit((await w.manager.reserve("a", "r1", req())).id)).id)
    held = await w.manager.commit((await w.manager.reserve("a", "r2", req())).id)  # committed, not in service
    assert active.state is S.ACTIVE and held.state is S.COMMITTED
    # The restart: new agents on the same store.
    agents = {c.id: EmulatedDomainAgent(c, w.clock) for c in configs()}
    after = SliceManager(
        sp_id="T",
        store=w.store,
        agents=agents,
        local_domains=list(agents),
        wim=w.wim,
        notes=lambda: w.notes,
        clock=w.clock,
    )
    await after.recover()
    for seg in after.get(active.id).segments:
        assert agents[seg.domain].state_of(seg.handle) is S.ACTIVE, seg.domain
    for seg in after.get(held.id).segments:
        assert agents[seg.domain].state_of(seg.handle) is S.COMMITTED, seg.domain
    # Measured again: a cut of L1's pop touches the active segment (and only it).
    assert agents["L1"].set_condition("core", Condition(down=True)) == 1

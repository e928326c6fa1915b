"""The contract every ``DomainAgent`` passes: subclass ``DomainAgentContract`` and provide ``make_agent``.

The suite reserves segments between one endpoint and one border port of the domain, so the
implementation under test names those terminals (and how much bandwidth a segment can get) in an
``AgentMaker``; ``make_agent`` must build a fresh agent over the same domain on every call, which
is how the restore test stands in for a broker restart.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest

from capability_catalog.model import CapabilityNote, LabelSet, TerminalId
from domain_agents.base import DomainAgent, DomainUsage, SegmentOrder
from slicing.errors import ErrorCode, FedError
from slicing.model import PortConstraint, SliceRequest

SUBNET = "10.77.0.0/24"


@dataclass(frozen=True)
class AgentMaker:
    """Builds fresh agents over one domain, and names the terminals the contract reserves between."""

    build: Callable[[], DomainAgent]
    endpoint: TerminalId
    port: TerminalId
    port_labels: LabelSet  # at least three labels
    max_mbps: int  # the most one endpoint-to-port segment can get; a larger one is refused

    def __call__(self) -> DomainAgent:
        return self.build()


def idle(agent: DomainAgent) -> DomainUsage:
    """The usage of an agent that holds nothing."""
    return DomainUsage(domain=agent.domain_id)


class DomainAgentContract:
    """Behaviour any ``DomainAgent`` must show; subclasses override the ``make_agent`` fixture."""

    @pytest.fixture
    def make_agent(self) -> AgentMaker:
        raise NotImplementedError("a contract subclass provides the make_agent fixture")

    @pytest.fixture
    async def agent(self, make_agent: AgentMaker) -> AsyncIterator[DomainAgent]:
        agent = make_agent()
        yield agent
        await agent.close()

    async def usage(self, agent: DomainAgent) -> DomainUsage:
        """What the implementation holds now, as the implementation itself keeps it.

        ``agent.usage()`` by default; an agent that keeps no accounting of its own (the lower-SP
        agent: the lower broker keeps it) overrides this to read it where it is.
        """
        return agent.usage()

    async def first_note(self, agent: DomainAgent) -> CapabilityNote:
        """The first note the agent's feed yields (an agent whose feed is signed overrides this to verify it)."""
        stream = agent.notes()
        note = await anext(stream)
        await stream.aclose()  # type: ignore[attr-defined]
        assert isinstance(note, CapabilityNote), type(note)
        return note

    async def in_service(self, agent: DomainAgent, handle: str) -> bool | None:
        """Whether the segment is in service as the implementation itself shows it (None: it cannot tell).

        An implementation with something to look at (a kernel, a cloud) overrides this, so the
        deactivate tests check what is really there, not only the agent's own word.
        """
        return None

    async def _assert_in_service(self, agent: DomainAgent, handle: str, up: bool) -> None:
        seen = await self.in_service(agent, handle)
        assert seen is None or seen is up, f"in service: expected {up}, the implementation shows {seen}"

    @staticmethod
    def order(
        maker: AgentMaker,
        key: str = "k1",
        mbps: int = 10,
        labels: LabelSet | None = None,
        preferred: int | None = None,
    ) -> SegmentOrder:
        constraints = () if labels is None else (PortConstraint(maker.port, labels, preferred),)
        request = SliceRequest(
            src=maker.endpoint, dst=maker.port, bandwidth_mbps=mbps, subnet=SUBNET, port_constraints=constraints
        )
        return SegmentOrder(key=key, request=request, hold_time_s=30)

    async def test_notes_yields_a_note_at_once_with_the_domain_id_and_its_terminals(
        self, make_agent: AgentMaker, agent: DomainAgent
    ) -> None:
        note = await self.first_note(agent)
        assert note.sp_id == agent.domain_id
        assert {make_agent.endpoint, make_agent.port} <= note.terminals()
        port = note.port(make_agent.port)
        assert port is not None and port.labels == make_agent.port_labels
        assert note.expires_at > note.issued_at

    async def test_reserve_grants_a_port_label_and_an_endpoint_address_in_the_subnet(
        self, make_agent: AgentMaker, agent: DomainAgent
    ) -> None:
        grant = await agent.reserve(self.order(make_agent))
        assert set(grant.labels) == {make_agent.port}
        assert grant.labels[make_agent.port] in make_agent.port_labels
        assert set(grant.addresses) == {make_agent.endpoint}
        assert grant.addresses[make_agent.endpoint].startswith("10.77.0.")
        assert (await self.usage(agent)).bandwidth_mbps > 0

    async def test_full_lifecycle_reserve_commit_activate_terminate_frees_everything(
        self, make_agent: AgentMaker, agent: DomainAgent
    ) -> None:
        grant = await agent.reserve(self.order(make_agent))
        await agent.commit(grant.handle)
        await agent.activate(grant.handle)
        assert await self.usage(agent) != idle(agent)
        await agent.terminate(grant.handle)
        assert await self.usage(agent) == idle(agent)

    async def test_deactivate_takes_an_active_segment_out_of_service_keeps_its_reservation_and_activate_works_again(
        self, make_agent: AgentMaker, agent: DomainAgent
    ) -> None:
        grant = await agent.reserve(self.order(make_agent))
        await agent.commit(grant.handle)
        await self._assert_in_service(agent, grant.handle, False)
        await agent.activate(grant.handle)
        await self._assert_in_service(agent, grant.handle, True)
        reserved = await self.usage(agent)
        await agent.deactivate(grant.handle)
        await self._assert_in_service(agent, grant.handle, False)
        assert await self.usage(agent) == reserved  # the reservation's accounting is kept
        await agent.deactivate(grant.handle)  # idempotent
        assert await self.usage(agent) == reserved
        label = grant.labels[make_agent.port]
        other = await agent.reserve(self.order(make_agent, key="k2", labels=make_agent.port_labels, preferred=label))
        assert other.labels[make_agent.port] != label  # the deactivated segment's label is still taken
        await agent.abort(other.handle)
        await agent.activate(grant.handle)  # provisioning again after a deactivation works
        await self._assert_in_service(agent, grant.handle, True)
        await agent.terminate(grant.handle)
        await self._assert_in_service(agent, grant.handle, False)
        assert await self.usage(agent) == idle(agent)

    async def test_deactivate_of_a_committed_segment_changes_nothing(
        self, make_agent: AgentMaker, agent: DomainAgent
    ) -> None:
        grant = await agent.reserve(self.order(make_agent))
        await agent.commit(grant.handle)
        reserved = await self.usage(agent)
        await agent.deactivate(grant.handle)  # an activation that never happened, compensated
        await self._assert_in_service(agent, grant.handle, False)
        assert await self.usage(agent) == reserved
        await agent.activate(grant.handle)
        await self._assert_in_service(agent, grant.handle, True)
        await agent.terminate(grant.handle)
        assert await self.usage(agent) == idle(agent)

    async def test_abort_of_a_held_segment_frees_everything(self, make_agent: AgentMaker, agent: DomainAgent) -> None:
        grant = await agent.reserve(self.order(make_agent))
        await agent.abort(grant.handle)
        assert await self.usage(agent) == idle(agent)
        label = grant.labels[make_agent.port]
        again = await agent.reserve(self.order(make_agent, key="k2", labels=LabelSet.single(label)))
        assert again.labels == grant.labels  # the label came back free

    async def test_reserve_with_the_same_key_returns_the_same_grant_and_holds_nothing_more(
        self, make_agent: AgentMaker, agent: DomainAgent
    ) -> None:
        first = await agent.reserve(self.order(make_agent))
        held = await self.usage(agent)
        second = await agent.reserve(self.order(make_agent))
        assert second == first
        assert await self.usage(agent) == held

    async def test_release_of_an_unknown_or_released_handle_is_a_no_op(
        self, make_agent: AgentMaker, agent: DomainAgent
    ) -> None:
        other = await agent.reserve(self.order(make_agent, key="other"))
        held = await self.usage(agent)
        grant = await agent.reserve(self.order(make_agent, key="gone"))
        await agent.abort(grant.handle)
        await agent.abort(grant.handle)
        await agent.terminate(grant.handle)
        await agent.abort("no-such-handle")
        await agent.terminate("no-such-handle")
        assert await self.usage(agent) == held
        await agent.terminate(other.handle)
        assert await self.usage(agent) == idle(agent)

    async def test_release_frees_a_segment_in_every_state_by_handle_or_by_order_key(
        self, make_agent: AgentMaker, agent: DomainAgent
    ) -> None:
        await agent.reserve(self.order(make_agent, key="held"))
        committed = await agent.reserve(self.order(make_agent, key="committed"))
        await agent.commit(committed.handle)
        active = await agent.reserve(self.order(make_agent, key="active"))
        await agent.commit(active.handle)
        await agent.activate(active.handle)
        await agent.release("held", "")  # the grant never came back to the caller: by key
        await agent.release("committed", committed.handle)
        await agent.release("active", active.handle)
        assert await self.usage(agent) == idle(agent)
        await agent.release("active", active.handle)  # idempotent
        await agent.release("never-seen", "")
        assert await self.usage(agent) == idle(agent)

    async def test_commit_of_an_unknown_handle_is_not_found(self, agent: DomainAgent) -> None:
        with pytest.raises(FedError) as info:
            await agent.commit("no-such-handle")
        assert info.value.code is ErrorCode.NOT_FOUND

    async def test_refused_reserve_holds_nothing_and_names_the_domain(
        self, make_agent: AgentMaker, agent: DomainAgent
    ) -> None:
        await agent.reserve(self.order(make_agent, key="small"))
        held = await self.usage(agent)
        with pytest.raises(FedError) as info:
            await agent.reserve(self.order(make_agent, key="big", mbps=make_agent.max_mbps + 1))
        assert info.value.code is ErrorCode.RESOURCE_EXHAUSTED
        assert info.value.domain == agent.domain_id
        assert await self.usage(agent) == held

    async def test_reserve_to_an_unknown_terminal_is_invalid_argument(
        self, make_agent: AgentMaker, agent: DomainAgent
    ) -> None:
        order = self.order(make_agent)
        bad = SegmentOrder(
            key="bad",
            request=SliceRequest(src=TerminalId("nowhere.ep"), dst=make_agent.port, bandwidth_mbps=10),
            hold_time_s=30,
        )
        with pytest.raises(FedError) as info:
            await agent.reserve(bad)
        assert info.value.code is ErrorCode.INVALID_ARGUMENT
        assert await self.usage(agent) == idle(agent)
        await agent.reserve(order)  # the agent still works

    async def test_preferred_label_is_chosen_when_free(self, make_agent: AgentMaker, agent: DomainAgent) -> None:
        third = list(make_agent.port_labels)[2]
        grant = await agent.reserve(self.order(make_agent, labels=make_agent.port_labels, preferred=third))
        assert grant.labels[make_agent.port] == third

    async def test_taken_preferred_label_gives_way_to_another_label_within_the_constraint(
        self, make_agent: AgentMaker, agent: DomainAgent
    ) -> None:
        first, second, third = list(make_agent.port_labels)[:3]
        allowed = LabelSet.of([*LabelSet.single(second).ranges, *LabelSet.single(third).ranges])
        taken = await agent.reserve(self.order(make_agent, key="a", labels=allowed, preferred=third))
        grant = await agent.reserve(self.order(make_agent, key="b", labels=allowed, preferred=third))
        assert taken.labels[make_agent.port] == third
        assert grant.labels[make_agent.port] == second
        assert first not in grant.labels.values()

    async def test_no_free_label_within_the_constraint_is_refused_naming_the_port(
        self, make_agent: AgentMaker, agent: DomainAgent
    ) -> None:
        only = LabelSet.single(list(make_agent.port_labels)[1])
        await agent.reserve(self.order(make_agent, key="a", labels=only))
        held = await self.usage(agent)
        with pytest.raises(FedError) as info:
            await agent.reserve(self.order(make_agent, key="b", labels=only))
        assert info.value.code is ErrorCode.RESOURCE_EXHAUSTED
        assert make_agent.port in str(info.value)
        assert await self.usage(agent) == held

    async def test_restore_on_a_fresh_agent_rebuilds_usage_and_the_handle_releases_it(
        self, make_agent: AgentMaker, agent: DomainAgent
    ) -> None:
        held = await agent.reserve(self.order(make_agent, key="held"))
        committed = await agent.reserve(self.order(make_agent, key="committed"))
        await agent.commit(committed.handle)
        before = await self.usage(agent)

        fresh = make_agent()
        await fresh.restore(held.handle, committed=False)
        await fresh.restore(committed.handle, committed=True)
        assert await self.usage(fresh) == before
        again = await fresh.reserve(self.order(make_agent, key="third"))
        assert again.labels[make_agent.port] not in {held.labels[make_agent.port], committed.labels[make_agent.port]}
        await fresh.abort(again.handle)
        await fresh.abort(held.handle)
        await fresh.terminate(committed.handle)
        assert await self.usage(fresh) == idle(fresh)
        await fresh.close()

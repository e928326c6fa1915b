"""The domain-agent contract, run on ``ChildBrokerAgent`` against a real lower broker (a process).

The emulated, netns and OpenStack agents pass ``DomainAgentContract`` on their own infrastructure; the
agent an upper SP uses for a lower SP must keep the same promises over the north–south API, as OpenNSA
runs one provider suite on its backend, its aggregator and a remote peer. What the contract reads as
usage and as "in service" is read at the lower broker itself (``GetUsage`` and ``Get`` as its
operator), not from the agent, which keeps no accounting of its own.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import grpc
import pytest

from broker.api.child_agent import ChildBrokerAgent
from broker.security.accounts import Role
from capability_catalog.model import CapabilityNote, LabelRange, LabelSet, TerminalId
from capability_catalog.signing import SignedNote, TrustStore, verify_note
from domain_agents.base import DomainAgent, DomainUsage, Held
from fedbroker.v1 import northsouth_pb2 as pb
from scenarios.processes import BrokerProcess
from slicing.model import SliceState
from tests.integration.federation import Federation, leaf_domain
from tests.unit.contract_domain_agent import AgentMaker, DomainAgentContract, idle

UPPER = "UP"  # the upper SP the agent acts for: a peer-SP account at the leaf, not a running broker


class TestChildBrokerAgentContract(DomainAgentContract):
    """Every contract test, with a fresh leaf broker per test."""

    leaf: BrokerProcess

    @pytest.fixture
    async def make_agent(self, tmp_path: Path) -> AsyncIterator[AgentMaker]:
        fed = Federation(tmp_path)
        try:
            domain = leaf_domain("L1", {"X": "1000-1009"}, link_mbps=800, port_mbps=800)
            self.leaf = leaf = await fed.start("L1", domains=[domain])
            ident = fed.fleet.grant("L1", UPPER, Role.PEER_SP)

            def build() -> DomainAgent:
                channel = ident.channel(leaf.address, "L1", server_name="L1", authenticate=False)
                return ChildBrokerAgent(
                    "L1",
                    leaf.address,
                    requester=UPPER,
                    timeout_s=10.0,
                    channel=channel,
                    auth=partial(ident.metadata, "L1"),
                )

            yield AgentMaker(
                build=build,
                endpoint=TerminalId("L1.ep"),
                port=TerminalId("L1.to-X"),
                port_labels=LabelSet.of([LabelRange(1000, 1009)]),
                max_mbps=800,
            )
        finally:
            await fed.close()

    async def usage(self, agent: DomainAgent) -> DomainUsage:
        reply = await self.leaf.operator_slices.GetUsage(pb.GetUsageRequest(), timeout=10)
        for d in reply.domains:
            if d.domain == "L1":
                return DomainUsage(
                    domain=agent.domain_id,
                    bandwidth_mbps=d.bandwidth_mbps,
                    labels=d.labels,
                    function_slots=d.function_slots,
                    addresses=d.addresses,
                )
        return idle(agent)

    async def in_service(self, agent: DomainAgent, handle: str) -> bool | None:
        try:
            got = await self.leaf.operator_slices.Get(pb.SliceRef(slice_id=handle), timeout=10)
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.NOT_FOUND, exc.details()
            return False
        return bool(got.state == pb.SLICE_STATE_ACTIVE)

    async def first_note(self, agent: DomainAgent) -> CapabilityNote:
        """The lower SP's notes come signed: the first one, verified with the leaf's key."""
        stream = agent.notes()
        signed = await anext(stream)
        await stream.aclose()  # type: ignore[attr-defined]
        assert isinstance(signed, SignedNote) and signed.signer == agent.domain_id
        trust = TrustStore.of({"L1": [self.leaf.public_key]})
        return verify_note(signed, trust, expected_sp="L1", held_version=None, now=time.time())

    async def test_holdings_list_what_the_lower_sp_holds_for_this_upper_by_order_key(
        self, make_agent: AgentMaker, agent: DomainAgent
    ) -> None:
        """What anti-entropy compares: every slice held for this upper, in every holding state, by key and state."""
        held = await agent.reserve(self.order(make_agent, key="h"))
        active = await agent.reserve(self.order(make_agent, key="a"))
        await agent.commit(active.handle)
        await agent.activate(active.handle)
        gone = await agent.reserve(self.order(make_agent, key="g"))
        await agent.abort(gone.handle)
        assert sorted(await agent.holdings()) == sorted(
            [Held("h", held.handle, SliceState.HELD), Held("a", active.handle, SliceState.ACTIVE)]
        )
        await agent.release("h", "")
        await agent.release("a", active.handle)
        assert list(await agent.holdings()) == []
        assert await self.usage(agent) == idle(agent)

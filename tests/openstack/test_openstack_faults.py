"""The OpenStack agent under faults of the real services: Neutron stopped (SIGSTOP) mid-call.

No mocks: the services are the session's real Keystone, Placement and Neutron, and Neutron is
frozen with SIGSTOP (its whole gunicorn process group) and thawed with SIGCONT.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import openstack.connection
import pytest

from domain_agents.openstack import OpenStackDomainAgent, consumer_id
from domain_agents.openstack_model import domain_tag
from scenarios.openstack_services import CloudInfo
from slicing.errors import Unavailable
from tests.openstack.helpers import (
    Clock,
    allocations,
    assert_nothing_left,
    config_of,
    networks,
    order,
    purge,
    subnets,
)

pytestmark = pytest.mark.openstack


@contextmanager
def neutron_stopped(info: CloudInfo) -> Iterator[None]:
    """Neutron frozen (SIGSTOP to its process group) for the block; thawed afterwards, whatever happens."""
    pgid = int(json.loads((Path(info.run_dir) / "pids.json").read_text())["neutron"])
    os.killpg(pgid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(pgid, signal.SIGCONT)


async def wait_for(check: Any, timeout_s: float, what: str) -> None:
    """Poll ``check()`` (blocking, off the loop) until true, at most ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not await asyncio.to_thread(check):
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout_s:g} s"
        await asyncio.sleep(0.2)


#: A busy machine may keep a service from answering one 3 s call at connect; the fault comes after.
PATIENCE_S = 30.0


@pytest.fixture
def quick(spec: dict[str, Any]) -> dict[str, Any]:
    """The test domain with a 3 s bound on every OpenStack call (a busy machine answers within it)."""
    return {**spec, "api_timeout_s": 3}


async def test_a_stopped_neutron_makes_reserve_unavailable_naming_it_in_time_and_its_late_network_is_released(
    quick: dict[str, Any], loopback_cloud: CloudInfo, admin: openstack.connection.Connection, sp: str
) -> None:
    agent = OpenStackDomainAgent(config_of(quick))
    await agent.connect(patience_s=PATIENCE_S)
    try:
        with neutron_stopped(loopback_cloud):
            t0 = time.monotonic()
            with pytest.raises(Unavailable) as info:
                await agent.reserve(order(sp))
            took = time.monotonic() - t0
        assert "Neutron did not answer within 3 s" in str(info.value) and info.value.domain == sp
        assert info.value.retryable
        # The create, then the look-up for what it may have made: two bounded calls.
        assert took < 10, f"the reserve took {took:.1f} s with every call bounded to 3 s"
        # The create Neutron was sent before it froze is carried out once it runs again: a network
        # no one tagged, findable only by its name.
        await wait_for(lambda: networks(admin, sp), 20, "the late network")
        (late,) = networks(admin, sp)
        assert domain_tag(sp) not in (late.tags or ())
        await agent.release("k1", "")  # what the broker core does for a reserve that got no answer
        assert_nothing_left(admin, sp)
    finally:
        await agent.close()


async def test_the_sweep_removes_an_untagged_network_named_as_ours_once_older_than_the_grace_time(
    quick: dict[str, Any], loopback_cloud: CloudInfo, admin: openstack.connection.Connection, sp: str
) -> None:
    crashed = OpenStackDomainAgent(config_of(quick))
    await crashed.connect(patience_s=PATIENCE_S)
    with neutron_stopped(loopback_cloud), pytest.raises(Unavailable):
        await crashed.reserve(order(sp, "orphan"))
    await crashed.close()  # the broker is gone; nobody will release the order by its key
    await wait_for(lambda: networks(admin, sp), 20, "the late network")

    clock = Clock()
    later = OpenStackDomainAgent(config_of({**quick, "sweep_grace_s": 30}), clock)
    try:
        await later.connect(patience_s=PATIENCE_S)
        assert await later.sweep() == []  # younger than the grace time: a reserve may still be tagging it
        assert len(networks(admin, sp)) == 1
        clock.now += 31
        assert await later.sweep() == [consumer_id(sp, "orphan")]
        assert_nothing_left(admin, sp)
        assert subnets(admin, sp) == [] and allocations(admin, consumer_id(sp, "orphan")) == {}
    finally:
        await later.close()


async def test_a_caller_that_gives_up_does_not_cut_the_reserve_in_half_and_a_release_of_the_order_waits_for_it(
    spec: dict[str, Any], admin: openstack.connection.Connection, sp: str
) -> None:
    agent = OpenStackDomainAgent(config_of(spec))
    await agent.connect()
    try:
        with pytest.raises(TimeoutError):  # the core's bound on the call, far shorter than the reserve
            await asyncio.wait_for(agent.reserve(order(sp)), 0.05)
        await agent.release("k1", "")
        assert_nothing_left(admin, sp)
        assert allocations(admin, consumer_id(sp, "k1")) == {}
        assert agent.usage().bandwidth_mbps == 0
    finally:
        await agent.close()
        purge(admin, sp)

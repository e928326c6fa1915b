"""The contract every ``WimDriver`` passes: subclass ``WimDriverContract`` and provide ``make_driver``.

``make_driver`` builds a fresh driver on every call (the restore test stands in for a restart) and
names two ports it can stitch, the first with a known bandwidth capacity.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from capability_catalog.model import LabelType
from slicing.errors import ErrorCode, FedError
from wim.base import ConnectionPoint, ConnectivitySpec, ServiceStatus, WimDriver, WimUsage

IDLE = WimUsage(services=0, labels=0, bandwidth_mbps=0)


@dataclass(frozen=True)
class DriverMaker:
    """Builds fresh drivers and names two ports they can stitch; ``port_a`` carries ``capacity_mbps``."""

    build: Callable[[], WimDriver]
    port_a: str
    port_b: str
    capacity_mbps: int

    def __call__(self) -> WimDriver:
        return self.build()


class WimDriverContract:
    """Behaviour any ``WimDriver`` must show; subclasses override the ``make_driver`` fixture."""

    @pytest.fixture
    def make_driver(self) -> DriverMaker:
        raise NotImplementedError("a contract subclass provides the make_driver fixture")

    @pytest.fixture
    def driver(self, make_driver: DriverMaker) -> WimDriver:
        return make_driver()

    @staticmethod
    def spec(maker: DriverMaker, key: str = "s1", label: int = 1000, mbps: int = 10) -> ConnectivitySpec:
        return ConnectivitySpec(
            key=key,
            points=(
                ConnectionPoint(maker.port_a, LabelType.VXLAN_VNI, label),
                ConnectionPoint(maker.port_b, LabelType.VXLAN_VNI, label),
            ),
            bandwidth_mbps=mbps,
        )

    async def test_create_returns_a_handle_that_is_active_and_listed(
        self, make_driver: DriverMaker, driver: WimDriver
    ) -> None:
        handle = await driver.create(self.spec(make_driver, mbps=25))
        assert await driver.status(handle) is ServiceStatus.ACTIVE
        assert await driver.list() == [handle]
        assert driver.usage() == WimUsage(services=1, labels=2, bandwidth_mbps=25)

    async def test_create_with_the_same_key_returns_the_same_handle_and_holds_nothing_more(
        self, make_driver: DriverMaker, driver: WimDriver
    ) -> None:
        first = await driver.create(self.spec(make_driver))
        assert await driver.create(self.spec(make_driver)) == first
        assert driver.usage().services == 1 and await driver.list() == [first]

    async def test_create_with_the_same_key_and_another_spec_is_already_exists(
        self, make_driver: DriverMaker, driver: WimDriver
    ) -> None:
        await driver.create(self.spec(make_driver, label=1000))
        with pytest.raises(FedError) as info:
            await driver.create(self.spec(make_driver, label=1001))
        assert info.value.code is ErrorCode.ALREADY_EXISTS
        assert driver.usage().services == 1

    async def test_label_used_by_another_service_is_refused_naming_port_and_label(
        self, make_driver: DriverMaker, driver: WimDriver
    ) -> None:
        await driver.create(self.spec(make_driver, key="s1", label=1000))
        before = driver.usage()
        with pytest.raises(FedError) as info:
            await driver.create(self.spec(make_driver, key="s2", label=1000))
        assert info.value.code is ErrorCode.RESOURCE_EXHAUSTED
        assert make_driver.port_a in str(info.value) and "1000" in str(info.value)
        assert driver.usage() == before and len(await driver.list()) == 1

    async def test_bandwidth_beyond_a_port_capacity_is_refused_and_nothing_is_created(
        self, make_driver: DriverMaker, driver: WimDriver
    ) -> None:
        cap = make_driver.capacity_mbps
        await driver.create(self.spec(make_driver, key="s1", label=1000, mbps=cap - 5))
        with pytest.raises(FedError) as info:
            await driver.create(self.spec(make_driver, key="s2", label=1001, mbps=6))
        assert info.value.code is ErrorCode.RESOURCE_EXHAUSTED and make_driver.port_a in str(info.value)
        assert driver.usage().services == 1
        await driver.create(self.spec(make_driver, key="s3", label=1002, mbps=5))  # exactly full is fine

    async def test_fewer_than_two_points_is_invalid_argument_on_points(
        self, make_driver: DriverMaker, driver: WimDriver
    ) -> None:
        one = ConnectivitySpec("s1", (ConnectionPoint(make_driver.port_a, LabelType.VXLAN_VNI, 1000),), 10)
        with pytest.raises(FedError) as info:
            await driver.create(one)
        assert info.value.code is ErrorCode.INVALID_ARGUMENT and "points" in str(info.value)
        assert driver.usage() == IDLE

    @pytest.mark.parametrize(("label_type", "label"), [(LabelType.VLAN, 4095), (LabelType.VXLAN_VNI, 0)])
    async def test_label_outside_its_type_limits_is_invalid_argument_naming_the_point(
        self, make_driver: DriverMaker, driver: WimDriver, label_type: LabelType, label: int
    ) -> None:
        bad = ConnectivitySpec(
            "s1",
            (
                ConnectionPoint(make_driver.port_a, label_type, 100),
                ConnectionPoint(make_driver.port_b, label_type, label),
            ),
            10,
        )
        with pytest.raises(FedError) as info:
            await driver.create(bad)
        assert info.value.code is ErrorCode.INVALID_ARGUMENT and "points[1].label" in str(info.value)
        assert driver.usage() == IDLE

    async def test_delete_frees_everything_and_is_idempotent(self, make_driver: DriverMaker, driver: WimDriver) -> None:
        handle = await driver.create(self.spec(make_driver))
        await driver.delete(handle)
        await driver.delete(handle)
        await driver.delete("no-such-handle")
        assert driver.usage() == IDLE and await driver.list() == []
        with pytest.raises(FedError) as info:
            await driver.status(handle)
        assert info.value.code is ErrorCode.NOT_FOUND
        await driver.create(self.spec(make_driver, key="s2"))  # the labels came back free

    async def test_status_of_an_unknown_handle_is_not_found(self, driver: WimDriver) -> None:
        with pytest.raises(FedError) as info:
            await driver.status("no-such-handle")
        assert info.value.code is ErrorCode.NOT_FOUND

    async def test_edit_moves_a_service_to_new_labels_and_bandwidth(
        self, make_driver: DriverMaker, driver: WimDriver
    ) -> None:
        handle = await driver.create(self.spec(make_driver, label=1000, mbps=10))
        await driver.edit(handle, self.spec(make_driver, label=1001, mbps=20))
        assert driver.usage() == WimUsage(services=1, labels=2, bandwidth_mbps=20)
        assert await driver.status(handle) is ServiceStatus.ACTIVE
        await driver.create(self.spec(make_driver, key="s2", label=1000))  # the old label is free again

    async def test_refused_edit_leaves_the_service_as_it_was(self, make_driver: DriverMaker, driver: WimDriver) -> None:
        handle = await driver.create(self.spec(make_driver, key="s1", label=1000))
        await driver.create(self.spec(make_driver, key="s2", label=1001))
        before = driver.usage()
        with pytest.raises(FedError) as info:
            await driver.edit(handle, self.spec(make_driver, key="s1", label=1001, mbps=10))
        assert info.value.code is ErrorCode.RESOURCE_EXHAUSTED
        assert driver.usage() == before
        with pytest.raises(FedError):
            await driver.create(self.spec(make_driver, key="s3", label=1000))  # s1 still holds 1000

    async def test_edit_of_an_unknown_handle_is_not_found(self, make_driver: DriverMaker, driver: WimDriver) -> None:
        handle = await driver.create(self.spec(make_driver))
        await driver.delete(handle)
        with pytest.raises(FedError) as info:
            await driver.edit(handle, self.spec(make_driver))
        assert info.value.code is ErrorCode.NOT_FOUND
        assert driver.usage() == IDLE

    async def test_restore_on_a_fresh_driver_rebuilds_services_and_usage(
        self, make_driver: DriverMaker, driver: WimDriver
    ) -> None:
        handles = [await driver.create(self.spec(make_driver, key=f"s{i}", label=1000 + i)) for i in range(2)]
        before = driver.usage()
        fresh = make_driver()
        for handle in handles:
            await fresh.restore(handle)
            await fresh.restore(handle)
        assert fresh.usage() == before and sorted(await fresh.list()) == sorted(handles)
        assert await fresh.status(handles[0]) is ServiceStatus.ACTIVE
        with pytest.raises(FedError):
            await fresh.create(self.spec(make_driver, key="s9", label=1000))
        for handle in handles:
            await fresh.delete(handle)
        assert fresh.usage() == IDLE

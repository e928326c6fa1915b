"""A small federation with an OpenStack leaf, for faults at the leaf: kill -9 of its broker, Neutron stopped.

``M`` (a mid-level SP) buys from ``<leaf>`` (real Keystone, Placement and Neutron) and ``<leaf>E``
(emulated); a slice ``<leaf>.mil → <leaf>E.vie`` crosses both. Every SP is its own process; the
checks read every broker (``scenarios.convergence``) and OpenStack itself (``openstack_holdings``):
what Neutron has of the leaf's domain, tagged or only named as its own, and the Placement consumers
on its providers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from domain_agents.openstack_model import consumer_of_name
from fedbroker.v1 import northsouth_pb2 as pb
from scenarios.convergence import SETTLED, Convergence, state_name, wait_settled
from scenarios.openstack_checks import OpenStackHoldings, holdings
from scenarios.openstack_services import CLOUD, CloudInfo
from scenarios.processes import Fleet

MID = "M"
_RPC = {
    "commit": "Commit",
    "abort": "Abort",
    "activate": "Activate",
    "deactivate": "Deactivate",
    "terminate": "Terminate",
}


@dataclass
class OpenStackFederation:
    """``M`` over an OpenStack leaf and an emulated one, with short holds and a quick reconciler."""

    root: Path
    cloud: CloudInfo
    leaf: str  # the OpenStack leaf's SP id, which is also its domain id
    vni_first: int  # the first of 50 VNIs the border between the leaves may use
    hold_time_s: int = 10
    reconcile_s: float = 0.5
    api_timeout_s: float = 3.0
    sweep_grace_s: float = 3.0
    call_timeout_s: float = 8.0
    fleet: Fleet = field(init=False)

    def __post_init__(self) -> None:
        self.fleet = Fleet(self.root, secure=False)

    @property
    def other(self) -> str:
        """The emulated leaf's id."""
        return f"{self.leaf}E"

    @property
    def lowers(self) -> Mapping[str, tuple[str, ...]]:
        """Who buys from whom."""
        return {MID: (self.leaf, self.other)}

    def domain(self) -> dict[str, Any]:
        """The OpenStack leaf's domain settings."""
        q = self.leaf
        return {
            "id": q,
            "type": "openstack",
            "cloud": CLOUD,
            "clouds_file": self.cloud.clouds_file,
            "note_ttl_s": 600,
            "poll_s": 1,
            "api_timeout_s": self.api_timeout_s,
            "sweep_grace_s": self.sweep_grace_s,
            "pops": [
                {"name": "zrh", "inventory": {"VCPU": 8, "MEMORY_MB": 8192, "CUSTOM_FED_BANDWIDTH_MBPS": 10000}},
                {"name": "mil", "inventory": {"VCPU": 8, "MEMORY_MB": 8192, "CUSTOM_FED_BANDWIDTH_MBPS": 10000}},
            ],
            "links": [{"a": "zrh", "b": "mil", "latency_ms": 4.5}],
            "endpoints": [{"id": f"{q}.mil", "pop": "zrh", "region": "it-milan", "capacity_mbps": 10000}],
            "ports": [
                {
                    "id": f"{q}.to-E",
                    "pop": "mil",
                    "peer_sp": self.other,
                    "peer_port": f"{self.other}.to-Q",
                    "label_type": "vxlan-vni",
                    "labels": [f"{self.vni_first}-{self.vni_first + 49}"],
                    "can_swap": False,
                    "capacity_mbps": 10000,
                }
            ],
        }

    def _emulated(self) -> dict[str, Any]:
        e = self.other
        return {
            "id": e,
            "type": "emulated",
            "pops": ["vie", "lnz"],
            "links": [{"a": "vie", "b": "lnz", "bandwidth_mbps": 10000, "latency_ms": 2.0}],
            "endpoints": [{"id": f"{e}.vie", "pop": "vie", "region": "at-vienna", "capacity_mbps": 10000}],
            "ports": [
                {
                    "id": f"{e}.to-Q",
                    "pop": "lnz",
                    "peer_sp": self.leaf,
                    "peer_port": f"{self.leaf}.to-E",
                    "label_type": "vxlan-vni",
                    "labels": [f"{self.vni_first}-{self.vni_first + 49}"],
                    "can_swap": False,
                    "capacity_mbps": 10000,
                }
            ],
            "functions": [],
        }

    def _common(self, lower_timeout_s: float) -> dict[str, Any]:
        return {
            "hold_time_s": self.hold_time_s,
            "lower_timeout_s": lower_timeout_s,
            "reconcile_interval_s": self.reconcile_s,
        }

    async def start(self) -> None:
        """Both leaves, then ``M``; wait until ``M`` publishes both leaves' endpoints."""
        # The leaf gives its agent a few bounded OpenStack calls' time; M gives the leaf more.
        leaf_timeout = 3 * self.api_timeout_s
        await asyncio.gather(
            self.fleet.start(self.leaf, {**self._common(leaf_timeout), "domains": [self.domain()]}),
            self.fleet.start(self.other, {**self._common(leaf_timeout), "domains": [self._emulated()]}),
        )
        await self.fleet.start(MID, self._common(leaf_timeout + 2), lowers=[self.leaf, self.other])
        await self.fleet.wait_terminals(MID, [f"{self.leaf}.mil", f"{self.other}.vie"], timeout_s=60)

    async def stop(self) -> None:
        """Every broker stops (frozen ones thawed first)."""
        self.fleet.thaw_all()
        await self.fleet.stop_all()

    def request(self, n: int) -> pb.SliceRequest:
        """Slice ``n``: the OpenStack leaf's endpoint to the emulated leaf's, on its own subnet."""
        return pb.SliceRequest(
            name=f"os-{n}",
            src=f"{self.leaf}.mil",
            dst=f"{self.other}.vie",
            bandwidth_mbps=10,
            subnet=f"10.{90 + n // 250}.{n % 250}.0/24",
        )

    async def call(
        self, operation: str, slice_id: str = "", *, n: int = 0, request_id: str = "", timeout_s: float | None = None
    ) -> tuple[str, str]:
        """The operation at ``M`` as the customer: (answer, slice id); the answer is a state or an error code.

        ``timeout_s`` (default ``call_timeout_s``) is the customer's deadline: a preparation before a
        fault may give a loaded machine longer than the call under test gets.
        """
        top = self.fleet[MID]
        timeout = self.call_timeout_s if timeout_s is None else timeout_s
        try:
            if operation == "reserve":
                msg: pb.Slice = await top.slices.Reserve(
                    pb.ReserveRequest(request_id=request_id, request=self.request(n), hold_time_s=self.hold_time_s),
                    timeout=timeout,
                )
            else:
                method = getattr(top.slices, _RPC[operation])
                msg = await method(pb.SliceRef(slice_id=slice_id), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            return exc.code().name, slice_id
        return state_name(msg.state), msg.id

    async def slice_id_of(self, request_id: str) -> str:
        """The id ``M`` gave the slice reserved under ``request_id`` ("" when it has none)."""
        listed = await self.fleet[MID].operator_slices.List(pb.ListRequest(), timeout=5)
        return next((s.id for s in listed.slices if s.request_id == request_id), "")

    async def state_at_mid(self, slice_id: str) -> str:
        """The slice's state at ``M``, as its operator reads it."""
        msg = await self.fleet[MID].operator_slices.Get(pb.SliceRef(slice_id=slice_id), timeout=5)
        return state_name(msg.state)

    async def settled(self, slice_id: str, request_id: str, timeout_s: float) -> Convergence:
        """Wait until every SP agrees on the slice (released, held, committed or active), bounded."""
        return await wait_settled(
            self.fleet,
            self.lowers,
            MID,
            slice_id=slice_id,
            request_id=request_id,
            timeout_s=timeout_s,
            want=SETTLED,
            exclusive=False,
            interval_s=0.25,
        )

    async def openstack(self) -> OpenStackHoldings:
        """What OpenStack holds of the leaf's domain, read straight from Neutron and Placement."""
        (found,) = await asyncio.to_thread(holdings, [self.domain()])
        return found

    def neutron_group(self) -> int:
        """The process group of the Neutron API server (gunicorn master and worker)."""
        return int(json.loads((Path(self.cloud.run_dir) / "pids.json").read_text())["neutron"])

    @contextlib.contextmanager
    def neutron_frozen(self) -> Iterator[None]:
        """Neutron stopped (SIGSTOP to its process group) for the block, thawed afterwards whatever happens."""
        group = self.neutron_group()
        os.killpg(group, signal.SIGSTOP)
        try:
            yield
        finally:
            os.killpg(group, signal.SIGCONT)


def consistent(found: OpenStackHoldings, holding: int, committed: int) -> str:
    """Why what OpenStack holds does not match ``holding`` segments (``committed`` of them committed); "" if it does.

    Each held segment is one network with one subnet and two ports, and one Placement consumer
    whose id the network's name carries; anything beyond that is held by no slice.
    """
    problems = []
    if len(found.networks) != holding:
        problems.append(f"{len(found.networks)} networks for {holding} holding slices")
    if len(found.consumers) != holding:
        problems.append(f"{len(found.consumers)} Placement consumers for {holding} holding slices")
    if found.subnets != holding or found.ports != 2 * holding:
        problems.append(f"{found.subnets} subnets and {found.ports} ports for {holding} networks")
    named = {consumer_of_name(found.domain, n.name) or n.name for n in found.networks}
    if named != set(found.consumers):
        problems.append(f"networks named for {sorted(named)} but Placement holds {sorted(found.consumers)}")
    if sum(n.committed for n in found.networks) != committed:
        problems.append(f"{sum(n.committed for n in found.networks)} committed networks for {committed} committed")
    return "; ".join(problems) + (f" ({found.describe()})" if problems else "")


__all__ = ["MID", "OpenStackFederation", "consistent"]

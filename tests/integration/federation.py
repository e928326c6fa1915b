"""Test harness over ``scenarios.processes.Fleet``: brokers as separate processes on loopback."""

from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedbroker.v1 import northsouth_pb2 as pb
from scenarios.processes import BrokerProcess, Fleet
from tests.topology import leaf_domain

__all__ = ["Federation", "leaf_domain", "line_peers", "op", "reserve", "slice_request"]


def line_peers(names: list[str], i: int) -> dict[str, str]:
    """The neighbours of leaf ``names[i]`` in a line of leaves, with overlapping VNI ranges toward each."""
    peers = {}
    if i > 0:
        peers[names[i - 1]] = "1000-1999"
    if i < len(names) - 1:
        peers[names[i + 1]] = "1500-2999"
    return peers


@dataclass
class Federation:
    """A fleet with test-friendly shortcuts."""

    root: Path

    def __post_init__(self) -> None:
        self.fleet = Fleet(self.root)

    @property
    def sps(self) -> dict[str, BrokerProcess]:
        """Brokers by SP id."""
        return self.fleet.brokers

    async def start(
        self,
        sp_id: str,
        *,
        domains: list[dict[str, Any]] | None = None,
        lowers: list[str] | None = None,
        **settings: Any,
    ) -> BrokerProcess:
        """Start a leaf (``domains``) or a recursing SP (``lowers``)."""
        if domains:
            settings["domains"] = domains
        return await self.fleet.start(sp_id, settings, lowers or ())

    async def wait_terminals(self, sp_id: str, terminals: list[str]) -> pb.CapabilityNote:
        """Wait until ``sp_id`` publishes ``terminals``."""
        return await self.fleet.wait_terminals(sp_id, terminals, timeout_s=15)

    def kill(self, sp_id: str, sig: signal.Signals = signal.SIGKILL) -> None:
        """Signal a broker (SIGKILL by default)."""
        self.fleet.signal(sp_id, sig)

    async def restart(self, sp_id: str) -> BrokerProcess:
        """Start a killed broker again on the same address and data."""
        return await self.fleet.restart(sp_id)

    async def usage(self, sp_id: str) -> pb.Usage:
        """What the SP holds now."""
        return await self.fleet.usage(sp_id)

    async def assert_idle(self, *sp_ids: str) -> None:
        """No SP named (default: all) holds a slice, bandwidth, label, slot, address or WIM service."""
        held = await self.fleet.holdings(sp_ids)
        assert not held, f"still held: {held}"

    async def wait_idle(self, *sp_ids: str, within_s: float = 15.0) -> None:
        """Wait (bounded) until no SP named (default: all) holds anything; fail naming what is still held."""
        held: dict[str, str] = {}
        for _ in range(int(within_s / 0.1)):
            held = await self.fleet.holdings(sp_ids)
            if not held:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"still held after {within_s:g} s: {held}")

    async def close(self) -> None:
        """Stop every broker."""
        await self.fleet.stop_all()


def slice_request(src: str, dst: str, mbps: int = 100, **fields: Any) -> pb.SliceRequest:
    """A slice request message."""
    return pb.SliceRequest(name=f"{src}-{dst}", src=src, dst=dst, bandwidth_mbps=mbps, **fields)


async def reserve(sp: BrokerProcess, request_id: str, req: pb.SliceRequest, hold_time_s: int = 60) -> pb.Slice:
    """Reserve at ``sp`` as the test requester."""
    return await sp.slices.Reserve(
        pb.ReserveRequest(request_id=request_id, request=req, hold_time_s=hold_time_s), timeout=30
    )


async def op(sp: BrokerProcess, rpc: str, slice_id: str) -> pb.Slice:
    """Call a lifecycle RPC by name on a slice."""
    method = getattr(sp.slices, rpc)
    reply: pb.Slice = await method(pb.SliceRef(slice_id=slice_id), timeout=30)
    return reply

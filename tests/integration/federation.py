"""Test harness: brokers as separate OS processes on loopback, ephemeral ports, temp data dirs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fedbroker.v1 import northsouth_pb2 as pb
from fedbroker.v1 import northsouth_pb2_grpc as pb_grpc
from tests.topology import leaf_domain

__all__ = ["Federation", "leaf_domain", "op", "reserve", "slice_request"]

FEDBROKER = Path(sys.executable).with_name("fedbroker")
START_TIMEOUT_S = 20.0
REQUESTER = (("x-fedbroker-requester", "tester"),)


@dataclass
class Sp:
    """One broker process."""

    sp_id: str
    config_path: Path
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    address: str = ""
    channel: grpc.aio.Channel | None = None

    @property
    def slices(self) -> pb_grpc.SlicesStub:
        """A Slices stub on this broker."""
        assert self.channel is not None
        return pb_grpc.SlicesStub(self.channel)

    @property
    def caps(self) -> pb_grpc.CapabilitiesStub:
        """A Capabilities stub on this broker."""
        assert self.channel is not None
        return pb_grpc.CapabilitiesStub(self.channel)

    def log_tail(self, lines: int = 40) -> str:
        """The last lines the broker logged."""
        with contextlib.suppress(FileNotFoundError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


@dataclass
class Federation:
    """Start brokers bottom-up, talk to them, and stop every one of them at the end."""

    root: Path
    sps: dict[str, Sp] = field(default_factory=dict)

    async def start(
        self,
        sp_id: str,
        *,
        domains: list[dict[str, Any]] | None = None,
        lowers: list[str] | None = None,
        **settings: Any,
    ) -> Sp:
        """Write the SP's config (lower-SP addresses from running brokers) and start it."""
        folder = self.root / sp_id
        folder.mkdir(parents=True, exist_ok=True)
        config: dict[str, Any] = {"sp_id": sp_id, "listen": "127.0.0.1:0", "data_dir": "data", **settings}
        if domains:
            config["domains"] = domains
        if lowers:
            config["lower_sps"] = [{"id": lo, "address": self.sps[lo].address} for lo in lowers]
        path = folder / "broker.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        sp = Sp(sp_id, path, folder / "data", folder / "broker.log")
        self.sps[sp_id] = sp
        await self._launch(sp)
        return sp

    async def _launch(self, sp: Sp) -> None:
        addr_file = sp.data_dir / "address"
        with contextlib.suppress(FileNotFoundError):
            addr_file.unlink()
        log = sp.log_path.open("ab")
        sp.proc = subprocess.Popen(
            [str(FEDBROKER), "serve", "--config", str(sp.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not addr_file.exists():
            if sp.proc.poll() is not None:
                raise RuntimeError(f"{sp.sp_id} exited with {sp.proc.returncode}:\n{sp.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{sp.sp_id} did not start in {START_TIMEOUT_S} s:\n{sp.log_tail()}")
            await asyncio.sleep(0.05)
        sp.address = addr_file.read_text().strip()
        if sp.channel is not None:
            await sp.channel.close()
        sp.channel = grpc.aio.insecure_channel(sp.address)
        health = health_pb2_grpc.HealthStub(sp.channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING

    async def wait_terminals(self, sp_id: str, terminals: list[str], timeout_s: float = 15.0) -> pb.CapabilityNote:
        """Wait until the SP's published note lists ``terminals`` (notes are pushed up level by level)."""
        deadline = time.monotonic() + timeout_s
        while True:
            cat = await self.sps[sp_id].caps.GetCatalog(pb.GetCatalogRequest(), timeout=5)
            have = {e.id for e in cat.own.endpoints} | {p.id for p in cat.own.ports}
            if set(terminals) <= have:
                return cat.own
            if time.monotonic() > deadline:
                raise TimeoutError(f"{sp_id} publishes {sorted(have)}, still missing {set(terminals) - have}")
            await asyncio.sleep(0.05)

    def kill(self, sp_id: str, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send a signal to a broker (SIGKILL by default) and, for SIGKILL, reap it."""
        proc = self.sps[sp_id].proc
        assert proc is not None
        proc.send_signal(sig)
        if sig is signal.SIGKILL:
            proc.wait(timeout=10)

    async def restart(self, sp_id: str) -> Sp:
        """Start a killed broker again with the same config, data and address (its uppers know it)."""
        sp = self.sps[sp_id]
        config = yaml.safe_load(sp.config_path.read_text())
        config["listen"] = sp.address
        sp.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        await self._launch(sp)
        return sp

    async def usage(self, sp_id: str) -> pb.Usage:
        """What the SP holds now."""
        return await self.sps[sp_id].slices.GetUsage(pb.GetUsageRequest(), timeout=5)

    async def assert_idle(self, *sp_ids: str) -> None:
        """No SP named holds anything: no slice, no bandwidth, label, slot, address or WIM service."""
        for sp_id in sp_ids or tuple(self.sps):
            u = await self.usage(sp_id)
            held = [d for d in u.domains if d.bandwidth_mbps or d.labels or d.function_slots or d.addresses]
            assert u.holding_slices == 0, f"{sp_id} holds {u.holding_slices} slices"
            assert not held, f"{sp_id} holds {held}"
            assert u.wim_services == u.wim_labels == u.wim_bandwidth_mbps == 0, f"{sp_id} WIM holds {u}"

    async def close(self) -> None:
        """Stop every broker (SIGTERM, then SIGKILL after a bounded wait)."""
        for sp in self.sps.values():
            if sp.channel is not None:
                await sp.channel.close()
            if sp.proc is not None and sp.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    sp.proc.send_signal(signal.SIGCONT)
                sp.proc.terminate()
        for sp in self.sps.values():
            if sp.proc is not None:
                try:
                    sp.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    sp.proc.kill()
                    sp.proc.wait(timeout=5)


def slice_request(src: str, dst: str, mbps: int = 100, **fields: Any) -> pb.SliceRequest:
    """A slice request message."""
    return pb.SliceRequest(name=f"{src}-{dst}", src=src, dst=dst, bandwidth_mbps=mbps, **fields)


async def reserve(sp: Sp, request_id: str, req: pb.SliceRequest, hold_time_s: int = 60) -> pb.Slice:
    """Reserve at ``sp`` as the test requester."""
    return await sp.slices.Reserve(
        pb.ReserveRequest(request_id=request_id, request=req, hold_time_s=hold_time_s), metadata=REQUESTER, timeout=30
    )


async def op(sp: Sp, rpc: str, slice_id: str) -> pb.Slice:
    """Call a lifecycle RPC by name on a slice."""
    method = getattr(sp.slices, rpc)
    return await method(pb.SliceRef(slice_id=slice_id), metadata=REQUESTER, timeout=30)  # type: ignore[no-any-return]

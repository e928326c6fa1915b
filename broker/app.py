"""One SP's broker process: assembles store, agents, WIM, catalog and servers, and owns their lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from broker.catalog import Catalog
from broker.child_agent import ChildBrokerAgent
from broker.config import BrokerConfig
from broker.lifecycle import SliceManager
from broker.server import CapabilitiesServicer, SlicesServicer
from broker.store import Store
from domain_agents.base import DomainAgent
from domain_agents.emulated import EmulatedDomainAgent
from domain_agents.openstack import OpenStackDomainAgent, OpenStackDomainConfig
from fedbroker.v1 import northsouth_pb2 as pb
from fedbroker.v1 import northsouth_pb2_grpc as pb_grpc
from wim.memory import MemoryWimDriver

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    pb.DESCRIPTOR.services_by_name["Slices"].full_name,
    pb.DESCRIPTOR.services_by_name["Capabilities"].full_name,
)
MAX_MESSAGE_BYTES = 4 * 1024 * 1024


class Broker:
    """A running broker: start it, read ``address``, stop it."""

    def __init__(self, config: BrokerConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._clock = clock
        self.store = Store(config.data_dir / "state.db")
        self.catalog = Catalog(config.sp_id, clock, config.note_ttl_s)
        agents: dict[str, DomainAgent] = {}
        for dom in config.domains:
            if isinstance(dom, OpenStackDomainConfig):
                agents[dom.id] = OpenStackDomainAgent(dom, clock)
            else:
                agents[dom.id] = EmulatedDomainAgent(dom, clock)
        for lower in config.lower_sps:
            agents[lower.id] = ChildBrokerAgent(
                lower.id, lower.address, requester=config.sp_id, timeout_s=config.lower_timeout_s
            )
        self.agents = agents
        self.wim = MemoryWimDriver(dict(config.wim.capacity_mbps or {}))
        self.manager = SliceManager(
            sp_id=config.sp_id,
            store=self.store,
            agents=agents,
            local_domains=[d.id for d in config.domains],
            wim=self.wim,
            notes=self.catalog.current,
            clock=clock,
            default_hold_s=config.hold_time_s,
        )
        self._server: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.address = ""

    def _spawn(self, coro: object, name: str) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro, name=name)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s died", task.get_name(), exc_info=task.exception())

    async def start(self) -> str:
        """Recover state, follow children's notes, serve; returns the bound address."""
        for agent in self.agents.values():
            if isinstance(agent, OpenStackDomainAgent):
                await agent.connect()  # a refused login stops the start, naming the setting
        await self.manager.recover()
        for agent in self.agents.values():
            self._spawn(self.catalog.follow(agent), f"follow-notes-{agent.domain_id}")
        self._spawn(self.manager.run_expiry(self._stop), "hold-expiry")
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 0),
            ]
        )
        pb_grpc.add_SlicesServicer_to_server(SlicesServicer(self.manager), server)
        pb_grpc.add_CapabilitiesServicer_to_server(CapabilitiesServicer(self.catalog), server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection((*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
        host, _, port = self.config.listen.rpartition(":")
        bound = server.add_insecure_port(f"{host}:{port}")
        if bound == 0:
            raise OSError(f"cannot listen on {self.config.listen}")
        await server.start()
        self._server = server
        self.address = f"{host}:{bound}"
        for name in ("", *SERVICE_NAMES):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._write_address()
        log.info("SP %s serving on %s (data in %s)", self.config.sp_id, self.address, self.config.data_dir)
        return self.address

    def _write_address(self) -> None:
        path = self.config.data_dir / "address"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.address + "\n", encoding="utf-8")
        os.replace(tmp, path)

    async def stop(self, grace_s: float = 2.0) -> None:
        """Stop serving, cancel background work, close connections and the store."""
        self._stop.set()
        with contextlib.suppress(Exception):
            await self._health.enter_graceful_shutdown()
        if self._server is not None:
            await self._server.stop(grace_s)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for agent in self.agents.values():
            await agent.close()
        with contextlib.suppress(FileNotFoundError):
            (self.config.data_dir / "address").unlink()
        self.store.close()

    async def wait(self) -> None:
        """Run until ``stop`` is called."""
        await self._stop.wait()


async def serve(config: BrokerConfig) -> None:
    """Run a broker until SIGTERM or SIGINT."""
    import signal

    broker = Broker(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, broker._stop.set)
    await broker.start()
    try:
        await broker.wait()
    finally:
        log.info("SP %s stopping", config.sp_id)
        await broker.stop()

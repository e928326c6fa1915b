"""A worker process of the data plane that speaks JSON lines: started on first use, ended with its stdin.

``wim.linkwatch`` (link state) and ``wim.probes`` (latency, loss, counters) each run one, so the
broker never forks or enters a namespace itself. The broker's side writes one JSON object per line
to the worker's stdin and hands every line the worker prints, decoded, to ``_heard``; ``Fanout``
hands what a worker reports on to every reader.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Fanout(Generic[T]):
    """Everything published, to every reader of ``items`` (bounded: a slow reader loses the oldest)."""

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._queues: set[asyncio.Queue[T]] = set()

    def publish(self, item: T) -> None:
        """Hand ``item`` to every reader now."""
        for q in list(self._queues):
            if q.full():
                q.get_nowait()
            q.put_nowait(item)

    async def items(self) -> AsyncIterator[T]:
        """What is published from now on, until cancelled."""
        q: asyncio.Queue[T] = asyncio.Queue(maxsize=self._size)
        self._queues.add(q)
        try:
            while True:
                yield await q.get()
        finally:
            self._queues.discard(q)


class LineWorker:
    """The broker's side of ``python -m <module>``: ``_send`` lines, ``_heard`` what comes back."""

    module = ""

    def __init__(self) -> None:
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def _started(self) -> asyncio.subprocess.Process:
        async with self._lock:
            if self._proc is None or self._proc.returncode is not None:
                self._proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", self.module, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
                )
                self._reader = asyncio.get_running_loop().create_task(self._read(self._proc))
            return self._proc

    async def warm_up(self) -> None:
        """Start the worker now (at broker start), not in the middle of the first use."""
        await self._started()

    async def _send(self, msg: dict[str, Any]) -> None:
        proc = await self._started()
        assert proc.stdin is not None
        proc.stdin.write((json.dumps(msg) + "\n").encode())
        await proc.stdin.drain()

    def _running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            try:
                raw = json.loads(line)
            except ValueError:
                continue
            if isinstance(raw, dict):
                self._heard(raw)
        self._ended()

    def _heard(self, raw: dict[str, Any]) -> None:
        """One line the worker printed."""

    def _ended(self) -> None:
        """The worker's output ended (it exited)."""

    async def close(self) -> None:
        """End the worker: its stdin closes, and it is killed if it does not exit within 2 s."""
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._proc is not None and self._proc.returncode is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            try:
                await asyncio.wait_for(self._proc.wait(), 2)
            except TimeoutError:
                self._proc.kill()
                await self._proc.wait()

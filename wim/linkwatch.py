"""Link state from netlink events, not polling: a watcher process that listens in each namespace watched.

The broker never forks (see ``wim.netlink``), so the listening happens in a worker of its own,
``python -m wim.linkwatch``, that subscribes to each watched namespace's link notifications
(RTNLGRP_LINK) and prints one JSON line per change of a watched interface::

    stdin  {"op": "watch", "key": "k1", "ns": "fb3k9x-pop-…", "ifname": "fb3k9xh…"}
           {"op": "unwatch", "key": "k1"}
    stdout {"key": "k1", "watching": true}     once the namespace's link notifications are heard
           {"key": "k1", "up": false}

An interface is up when it is administratively up and has carrier (IFF_UP and IFF_LOWER_UP): a veth
whose peer was set down loses its carrier, so both ends report down. A deleted interface is down.
Only changes are printed. Once the worker listens in the namespace it reads the interface once (one
netlink round trip per watch): one that is down already (a veth set down while the broker was away,
then watched again at its restart) is told at once; one that is up prints nothing.
``LinkWatcher.watch`` returns once that is done, so a link that dies right after it was watched is
told too. The worker ends when its stdin closes, so it never outlives its broker.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from wim.workers import Fanout, LineWorker

log = logging.getLogger(__name__)
#: How long ``watch`` waits for the worker to listen in a namespace before it goes on without (logged).
WATCH_READY_S = 10.0
IFF_UP = 0x1
IFF_LOWER_UP = 0x10000


@dataclass(frozen=True)
class LinkChange:
    """A watched interface went up or down."""

    key: str
    up: bool


class LinkWatcher(LineWorker):
    """The broker's side of the watcher process: ``watch``/``unwatch`` interfaces, read ``changes``."""

    module = "wim.linkwatch"

    def __init__(self) -> None:
        super().__init__()
        self._changes: Fanout[LinkChange] = Fanout()
        self._listening: dict[str, asyncio.Future[None]] = {}  # watches not yet heard, by key

    async def watch(self, key: str, ns: str, ifname: str) -> None:
        """Follow ``ifname`` in namespace ``ns`` under ``key``; returns once the worker listens there."""
        heard = self._listening[key] = asyncio.get_running_loop().create_future()
        try:
            await self._send({"op": "watch", "key": key, "ns": ns, "ifname": ifname})
            await asyncio.wait_for(asyncio.shield(heard), WATCH_READY_S)
        except TimeoutError:
            log.warning(
                "link watcher: not listening in %s after %.0f s; %s is watched once it is", ns, WATCH_READY_S, key
            )
        finally:
            if self._listening.get(key) is heard:
                del self._listening[key]

    async def unwatch(self, key: str) -> None:
        """Stop following ``key`` (before its interface is deleted on purpose)."""
        if self._running():
            await self._send({"op": "unwatch", "key": key})

    def _heard(self, raw: dict[str, Any]) -> None:
        try:
            if raw.get("watching"):
                heard = self._listening.get(str(raw["key"]))
                if heard is not None and not heard.done():
                    heard.set_result(None)
                return
            change = LinkChange(str(raw["key"]), bool(raw["up"]))
        except (KeyError, TypeError):
            return
        self._changes.publish(change)

    def changes(self) -> AsyncIterator[LinkChange]:
        """Every change of a watched interface, until cancelled."""
        return self._changes.items()


# --- the worker process ----------------------------------------------------------------------------


def _is_up(msg: Any) -> bool:
    return msg.get("event") != "RTM_DELLINK" and bool(msg["flags"] & IFF_UP) and bool(msg["flags"] & IFF_LOWER_UP)


class _Worker:
    def __init__(self) -> None:
        self.watched: dict[str, tuple[str, str]] = {}  # key -> (ns, ifname)
        self.state: dict[str, bool] = {}
        self.listeners: dict[str, asyncio.Task[None]] = {}

    def emit(self, key: str, up: bool) -> None:
        if self.state.get(key, True) == up:
            return
        self.state[key] = up
        self.say({"key": key, "up": up})

    @staticmethod
    def say(msg: dict[str, object]) -> None:
        sys.stdout.write(json.dumps(msg) + "\n")
        sys.stdout.flush()

    def keys_of(self, ns: str, ifname: str) -> list[str]:
        return [k for k, (n, i) in self.watched.items() if n == ns and i == ifname]

    async def listen(self, ns: str, ready: asyncio.Event) -> None:
        from pyroute2 import AsyncIPRoute

        try:
            async with AsyncIPRoute(netns=ns, flags=0) as ipr:  # flags=0: never create it
                await ipr.bind()
                ready.set()
                while True:
                    async for msg in ipr.get():
                        if msg.get("event") not in ("RTM_NEWLINK", "RTM_DELLINK"):
                            continue
                        for key in self.keys_of(ns, str(msg.get_attr("IFLA_IFNAME"))):
                            self.emit(key, _is_up(msg))
        except (OSError, RuntimeError) as exc:  # the namespace went away
            log.debug("namespace %s: %s", ns, exc)
        finally:
            ready.set()
            if self.listeners.get(ns) is asyncio.current_task():
                del self.listeners[ns]

    async def command(self, raw: dict[str, str]) -> None:
        key = raw.get("key", "")
        if raw.get("op") == "unwatch":
            gone = self.watched.pop(key, None)
            self.state.pop(key, None)
            if gone is not None and all(n != gone[0] for n, _ in self.watched.values()):
                # Nothing watched there any more: close the socket, which would keep a removed namespace alive.
                listener = self.listeners.pop(gone[0], None)
                if listener is not None:
                    listener.cancel()
            return
        ns, ifname = raw["ns"], raw["ifname"]
        self.watched[key] = (ns, ifname)
        self.state[key] = True
        if ns not in self.listeners:
            ready = asyncio.Event()
            self.listeners[ns] = asyncio.get_running_loop().create_task(self.listen(ns, ready))
            await ready.wait()
        # Listening now, so nothing is missed between this read and the next event.
        up = await self.read_state(ns, ifname)
        if up is not None:
            self.emit(key, up)
        self.say({"key": key, "watching": True})

    @staticmethod
    async def read_state(ns: str, ifname: str) -> bool | None:
        """Whether ``ifname`` in ``ns`` is up now (False when it does not exist; None when it cannot be read)."""
        from pyroute2 import AsyncIPRoute
        from pyroute2.netlink.exceptions import NetlinkError

        try:
            async with AsyncIPRoute(netns=ns, flags=0) as ipr:
                reply = await ipr.link("get", ifname=ifname)
                msgs = [m async for m in reply] if hasattr(reply, "__aiter__") else list(reply)
        except NetlinkError as exc:
            if exc.code == 19:  # ENODEV: no such interface, so not up
                return False
            log.debug("reading %s in %s: %s", ifname, ns, exc)
            return None
        except (OSError, RuntimeError) as exc:  # the namespace went away
            log.debug("reading %s in %s: %s", ifname, ns, exc)
            return None
        return bool(msgs) and _is_up(msgs[0])


async def _serve() -> None:
    import pyroute2  # noqa: F401 - paid at start (the broker warms the worker up), not at the first watch

    worker = _Worker()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        try:
            await worker.command(json.loads(line))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("linkwatch: bad command %r: %s", line[:200], exc)


if __name__ == "__main__":
    asyncio.run(_serve())

"""Issue 14 on a real data plane: link state from netlink events climbs as one alert naming the SP below."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from wim import netlink
from wim.linkwatch import LinkChange, LinkWatcher

pytestmark = pytest.mark.dataplane

ROOT = Path(__file__).resolve().parents[2]
FEDBROKER = Path(sys.executable).with_name("fedbroker")


def test_a_border_veth_and_a_wim_underlay_down_raise_an_alert_at_the_top_naming_the_mid_sp(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    scenario = ROOT / "scenarios" / "dataplane-monitoring.yaml"
    run = subprocess.run(
        [str(FEDBROKER), "scenario", "run", str(scenario), "--report-json", str(report)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout[-4000:]
    steps = {s["name"]: s for s in json.loads(report.read_text())["steps"]}
    for name in (
        "an alert reaches the top within 3 s naming M1, not L2",
        "an alert reaches the top within 3 s naming M1",
    ):
        assert steps[name]["passed"] and "from M1" in steps[name]["detail"], steps[name]
    for name in ("traffic flows again after the border veth is back", "traffic flows again after the underlay is back"):
        assert "reachability s1 ok" in steps[name]["detail"]
    prefix = steps["the data plane left nothing behind"]["detail"].rsplit(" ", 1)[-1]
    assert netlink.leftovers(prefix) == []


@contextlib.asynccontextmanager
async def link_watcher() -> AsyncIterator[tuple[LinkWatcher, asyncio.Queue[LinkChange]]]:
    """A link watcher and the queue of every change it tells; closed (worker and reader) afterwards."""
    watcher = LinkWatcher()
    seen: asyncio.Queue[LinkChange] = asyncio.Queue()

    async def read() -> None:
        async for change in watcher.changes():
            await seen.put(change)

    reader = asyncio.get_running_loop().create_task(read())
    try:
        yield watcher, seen
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        await watcher.close()


async def test_netlink_reports_a_veth_set_down_in_a_namespace_without_polling(prefix: str) -> None:
    ns = netlink.Names(prefix).netns("test", "lw")
    await netlink.call(netlink.ensure_ns, ns)
    await netlink.call(netlink.ensure_veth, ns, f"{prefix}a", ns, f"{prefix}b")
    async with link_watcher() as (watcher, seen):
        await watcher.warm_up()
        await watcher.watch("a", ns, f"{prefix}a")
        subprocess.run(["ip", "-n", ns, "link", "set", f"{prefix}b", "down"], check=True, timeout=10)
        first = await asyncio.wait_for(seen.get(), 10)
        assert (first.key, first.up) == ("a", False)  # the peer's end lost its carrier
        subprocess.run(["ip", "-n", ns, "link", "set", f"{prefix}b", "up"], check=True, timeout=10)
        again = await asyncio.wait_for(seen.get(), 10)
        assert (again.key, again.up) == ("a", True)
        assert seen.empty()


async def test_a_link_already_down_when_it_is_watched_is_told_at_once_and_an_up_one_says_nothing(prefix: str) -> None:
    """A broker restarted while a veth was down watches it again: "presumed up" would never tell."""
    ns = netlink.Names(prefix).netns("test", "lw2")
    await netlink.call(netlink.ensure_ns, ns)
    await netlink.call(netlink.ensure_veth, ns, f"{prefix}c", ns, f"{prefix}d")
    await netlink.call(netlink.ensure_veth, ns, f"{prefix}e", ns, f"{prefix}f")
    subprocess.run(["ip", "-n", ns, "link", "set", f"{prefix}d", "down"], check=True, timeout=10)
    async with link_watcher() as (watcher, seen):
        await watcher.watch("up", ns, f"{prefix}e")  # up with carrier: nothing to tell
        await watcher.watch("down", ns, f"{prefix}c")  # its peer is down: no carrier
        first = await asyncio.wait_for(seen.get(), 10)
        assert (first.key, first.up) == ("down", False)
        await watcher.watch("gone", ns, f"{prefix}nothere")  # no such interface: down
        second = await asyncio.wait_for(seen.get(), 10)
        assert (second.key, second.up) == ("gone", False)
        await asyncio.sleep(0.5)
        assert seen.empty()
        subprocess.run(["ip", "-n", ns, "link", "set", f"{prefix}d", "up"], check=True, timeout=10)
        back = await asyncio.wait_for(seen.get(), 10)
        assert (back.key, back.up) == ("down", True)

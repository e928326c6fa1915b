"""The web view of a mid-level SP in a real browser: the notes from below with version, age and expiry, a
refused note with its reason, and the resumed event stream after the page lost its connection."""

from __future__ import annotations

import re
import signal
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from broker.security.accounts import Role
from capability_catalog.signing import generate_key, public_key_to_text
from scenarios.processes import OPERATOR, Fleet
from tests.integration.rest import INVENTORY, ORDERING, RestClient, order_body, until
from tests.integration.test_web_view import SHOWN_MS, _require_browser, artefact, browser, open_page
from tests.topology import leaf_domain

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]
__all__ = ["browser"]  # the module's fixture, shared with test_web_view.py

SP = "T"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def fleet(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Fleet]:
    """T above L1 (trusted) and L2 (whose key T was told wrong: its notes are refused)."""
    _require_browser()
    fl = Fleet(tmp_path_factory.mktemp("web-fed"))
    try:
        await fl.start("L1", {"domains": [leaf_domain("L1", {"T": "100-199"})]})
        await fl.start("L2", {"domains": [leaf_domain("L2", {"T": "200-299"})]})
        fl.brokers["L2"].public_key = public_key_to_text(generate_key().public_key())  # not L2's key
        settings = {
            "domains": [leaf_domain("T", {"L1": "100-199", "L2": "200-299"})],
            "rest_listen": f"127.0.0.1:{_free_port()}",  # kept across the restart: the page reconnects to it
            "security": {"login_listen": "127.0.0.1:0"},
        }
        await fl.start(SP, settings, lowers=["L1", "L2"])
        for name, role in (("alice", Role.CUSTOMER), (OPERATOR, Role.OPERATOR)):
            fl.grant(SP, name, role, password=f"{name}-pw")
        yield fl
    finally:
        await fl.stop_all()


#: What a page logs while its broker restarts: the stream cut and refused, and 503 (UNAVAILABLE) while the
#: restarted broker has not heard its lower SPs again; 403 is the customer's refused federation view.
RESTART_ERRORS = (
    "ERR_INTERNET_DISCONNECTED",
    "ERR_CONNECTION_REFUSED",
    "ERR_INCOMPLETE_CHUNKED_ENCODING",
    "503",
    "403",
)


def assert_only_restart_errors(page: Any) -> None:
    """The page logged nothing but what a broker restart explains."""
    assert [e for e in page.js_errors if not any(x in e for x in RESTART_ERRORS)] == [], page.js_errors


async def order_across(client: RestClient, external_id: str) -> str:
    """A 1 Mb/s slice from T's endpoint to L1's, ordered over REST and completed: its id."""
    body = order_body(external_id, src="T.ep", dst="L1.ep", bandwidth_mbps=1)
    placed = await client.call("POST", f"{ORDERING}/serviceOrder", json=body)
    assert placed.status == 201, placed.body
    order = f"{ORDERING}/serviceOrder/{placed.body['id']}"
    done = await until(lambda: client.call("GET", order), lambda a: a.body["state"] == "completed")
    assert done.body["state"] == "completed", done.body
    return str(done.body["serviceOrderItem"][0]["service"]["id"])


async def test_the_operator_sees_each_note_from_below_with_its_age_and_expiry_and_the_refused_one(
    fleet: Fleet, browser: Any
) -> None:
    page = await open_page(browser, fleet, OPERATOR, SP)
    lower = '.sp[data-sp="L1"]'
    await page.wait_for_selector(lower, timeout=SHOWN_MS)
    text = await page.inner_text(lower)
    assert re.search(r"note v\d+, \d+ s old, expires in \d+ s", text), text
    assert "endpoints: L1.ep" in text and "borders with: T" in text
    await page.wait_for_selector(".refused:has-text('L2')", timeout=SHOWN_MS)
    refused = await page.inner_text(".refused")
    assert refused.startswith("refused L2 v") and "BAD_SIGNATURE" in refused, refused
    assert await page.locator('.sp[data-sp="L2"]').count() == 0  # a refused note is not shown as held
    assert "abstract note" in await page.inner_text("#federation")  # it says the picture ends at each note
    own = await page.inner_text('.sp.own[data-sp="T"]')
    assert "(this SP)" in own and "L1.ep" in own and "L2.ep" not in own, own
    await page.screenshot(path=str(artefact("web-federation.png")), full_page=True)
    assert page.js_errors == [], page.js_errors


async def test_a_page_that_lost_its_stream_across_a_broker_restart_shows_what_happened_meanwhile(
    fleet: Fleet, browser: Any
) -> None:
    page = await open_page(browser, fleet, "alice", SP)
    fleet.signal(SP, signal.SIGKILL)  # the page's stream breaks; its EventSource retries
    await fleet.wait_exit(SP)
    await page.wait_for_selector("#live.off", timeout=SHOWN_MS)
    await page.context.set_offline(True)  # and keeps failing, until the slice below has come and gone
    await fleet.restart(SP)  # on the same REST port (its config names it)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
        alice = RestClient(fleet, SP, "alice", http)
        slice_id = await order_across(alice, "web-away")
        assert (await alice.call("DELETE", f"{INVENTORY}/service/{slice_id}")).status == 204
        ended = await until(
            lambda: alice.call("GET", f"{INVENTORY}/service/{slice_id}"), lambda a: a.body["state"] == "terminated"
        )
        assert ended.body["state"] == "terminated"
    row = f'tr[data-slice="{slice_id}"]'
    assert await page.locator(row).count() == 0  # nothing reached the page meanwhile
    await page.context.set_offline(False)  # it reconnects with its Last-Event-ID: the missed events come
    await page.wait_for_selector("#live.on", timeout=SHOWN_MS)
    await page.wait_for_selector(f'{row} td[data-role="state"]:text-is("TERMINATED")', timeout=SHOWN_MS)
    assert_only_restart_errors(page)


async def test_a_stream_the_browser_gave_up_on_is_opened_again_by_the_page(fleet: Fleet, browser: Any) -> None:
    """An EventSource answered with an error status stops for good; the page opens a new stream itself (with
    a growing wait) and reads what happened while it was away."""
    page = await open_page(browser, fleet, "alice", SP)
    refused: list[str] = []

    async def unavailable(route: Any) -> None:
        refused.append(route.request.url)
        await route.fulfill(status=503, body="restarting")

    await page.route("**/serviceOrdering/v4/events?*", unavailable)
    fleet.signal(SP, signal.SIGKILL)  # the stream breaks; the browser's retry is answered 503: it gives up
    await fleet.wait_exit(SP)
    await page.wait_for_selector("#live.off", timeout=SHOWN_MS)
    await fleet.restart(SP)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
        slice_id = await order_across(RestClient(fleet, SP, "alice", http), "web-gave-up")
    # The browser's own retry made one request and stopped; every later one is the page's.
    assert await until(lambda: _count(refused), lambda n: n >= 3, timeout_s=30) >= 3, refused
    assert await page.locator(f'tr[data-slice="{slice_id}"]').count() == 0
    await page.unroute("**/serviceOrdering/v4/events?*")
    await page.wait_for_selector("#live.on", timeout=SHOWN_MS)
    await page.wait_for_selector(
        f'tr[data-slice="{slice_id}"] td[data-role="state"]:text-is("ACTIVE")', timeout=SHOWN_MS
    )
    assert len(refused) <= 6, refused  # it waited longer each time (1, 2, 4 … s), not a request a moment
    assert_only_restart_errors(page)


async def _count(seen: list[str]) -> int:
    return len(seen)

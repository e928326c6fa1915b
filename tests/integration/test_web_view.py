"""The web view in a real browser: headless Chromium from the distribution, driven by playwright.

The page is loaded over HTTPS with each user's client certificate and session token; it lists a
slice ordered through the REST API, shows its state change live when it is terminated, and a
customer sees no other customer's slice. A screenshot is written as an artefact
(``$FEDBROKER_ARTIFACTS``, default ``artifacts/`` at the repository root).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from broker.security.accounts import Role
from fedbroker.v1 import northsouth_pb2 as pb
from fedbroker.v1 import northsouth_pb2_grpc as pb_grpc
from scenarios.processes import OPERATOR, Fleet
from tests.conftest import require_or_skip
from tests.integration.rest import INVENTORY, ORDERING, RestClient, order_body, rest_address, until
from tests.topology import leaf_domain

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

SP = "L"
ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SLICE = {"src": "L.ep", "dst": "L.to-X", "bandwidth_mbps": 10}
#: How long the page may take to show what the broker did (a loaded CI machine is slow, not broken).
SHOWN_MS = 30_000


def _require_browser() -> None:
    try:
        import playwright  # noqa: F401
    except ImportError:
        found = False
    else:
        found = CHROMIUM is not None
    if not found and os.environ.get("CI") == "true":
        pytest.fail("CI=true but Chromium or playwright is missing (.ci/run installs chromium, make playwright)")
    require_or_skip("FEDBROKER_REQUIRE_BROWSER", found, "the browser test needs chromium and playwright")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def fleet(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Fleet]:
    _require_browser()
    fl = Fleet(tmp_path_factory.mktemp("web"))
    try:
        settings = {
            "domains": [leaf_domain(SP, {"X": "100-199"})],
            "rest_listen": "127.0.0.1:0",
            "security": {"login_listen": "127.0.0.1:0"},
        }
        await fl.start(SP, settings)
        for name, role in (("alice", Role.CUSTOMER), ("bob", Role.CUSTOMER), (OPERATOR, Role.OPERATOR)):
            fl.grant(SP, name, role, password=f"{name}-pw")  # after the start, which gave the operator none
        yield fl
    finally:
        await fl.stop_all()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def browser(fleet: Fleet) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        # As root (CI) Chromium needs --no-sandbox; nothing is fetched: the distribution's build is used.
        chromium = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            await chromium.close()


async def session_token(fleet: Fleet, name: str, sp: str = SP) -> str:
    """A session token from the SP's login endpoint, as ``fedbroker login`` gets one."""
    login = (fleet[sp].data_dir / "login_address").read_text().strip()
    ctx = fleet.identity(name).ssl_context()
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"https://{login}/login", json={"user": name, "password": f"{name}-pw"}, ssl=ctx) as reply,
    ):
        assert reply.status == 200, await reply.text()
        return str((await reply.json())["token"])


async def open_page(browser: Any, fleet: Fleet, name: str, sp: str = SP) -> Any:
    """A page of the web view as ``name``: their client certificate, their session token in the fragment."""
    base = f"https://{rest_address(fleet[sp])}"
    pki = fleet.pki_dir
    cert = {"origin": base, "certPath": str(pki / f"{name}.crt"), "keyPath": str(pki / f"{name}.key")}
    # The lab CA is not the browser's (so its errors are ignored); the client certificate is still required.
    context = await browser.new_context(ignore_https_errors=True, client_certificates=[cert])
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.js_errors = errors
    await page.goto(f"{base}/#token={await session_token(fleet, name, sp)}")
    await page.wait_for_selector("#live.on", timeout=SHOWN_MS)  # the event stream is connected
    return page


def artefact(name: str) -> Path:
    folder = Path(os.environ.get("FEDBROKER_ARTIFACTS", ROOT / "artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


async def test_the_page_lists_a_slice_and_shows_its_termination_live_and_only_to_its_owner(
    fleet: Fleet, browser: Any
) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
        alice_api = RestClient(fleet, SP, "alice", http)
        placed = await alice_api.call("POST", f"{ORDERING}/serviceOrder", json=order_body("web-1", **SLICE))
        assert placed.status == 201, placed.body
        order = f"{ORDERING}/serviceOrder/{placed.body['id']}"
        done = await until(lambda: alice_api.call("GET", order), lambda a: a.body["state"] == "completed")
        slice_id = done.body["serviceOrderItem"][0]["service"]["id"]

        alice = await open_page(browser, fleet, "alice")
        row = f'tr[data-slice="{slice_id}"]'
        await alice.wait_for_selector(f'{row} td[data-role="state"]:text-is("ACTIVE")', timeout=SHOWN_MS)
        assert "L.ep → L.to-X" in await alice.inner_text(row)
        assert "domain L" in await alice.inner_text(row)  # its per-domain segment
        assert "operators and peer SPs only" in await alice.inner_text("#federation")

        bob = await open_page(browser, fleet, "bob")
        await bob.wait_for_selector("#none:not([hidden])", timeout=SHOWN_MS)
        assert await bob.locator(row).count() == 0  # not alice's slice, not even its id

        operator = await open_page(browser, fleet, OPERATOR)
        await operator.wait_for_selector(f'{row} td[data-role="state"]:text-is("ACTIVE")', timeout=SHOWN_MS)
        await operator.wait_for_selector('.sp.own[data-sp="L"]', timeout=SHOWN_MS)  # the federation, from notes
        assert "note v" in await operator.inner_text('.sp.own[data-sp="L"]')

        gone = await alice_api.call("DELETE", f"{INVENTORY}/service/{slice_id}")  # not through the page
        assert gone.status == 204
        for page in (alice, operator):  # both pages follow, without a reload
            await page.wait_for_selector(f'{row} td[data-role="state"]:text-is("TERMINATED")', timeout=SHOWN_MS)
        shot = artefact("web-view.png")
        await operator.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 1000
        # The one refusal a customer's page meets is the federation's (operators and peer SPs only).
        expected = "the server responded with a status of 403"
        for page in (alice, bob):
            assert [e for e in page.js_errors if expected not in e] == [], page.js_errors
        assert operator.js_errors == [], operator.js_errors


async def test_an_operator_terminates_a_slice_from_the_page(fleet: Fleet, browser: Any) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
        alice_api = RestClient(fleet, SP, "alice", http)
        placed = await alice_api.call("POST", f"{ORDERING}/serviceOrder", json=order_body("web-2", **SLICE))
        order = f"{ORDERING}/serviceOrder/{placed.body['id']}"
        done = await until(lambda: alice_api.call("GET", order), lambda a: a.body["state"] == "completed")
        slice_id = done.body["serviceOrderItem"][0]["service"]["id"]
        operator = await open_page(browser, fleet, OPERATOR)
        row = f'tr[data-slice="{slice_id}"]'
        await operator.click(f'{row} button[data-role="terminate"]', timeout=SHOWN_MS)
        await operator.wait_for_selector(f'{row} td[data-role="state"]:text-is("TERMINATED")', timeout=SHOWN_MS)
        service = await alice_api.call("GET", f"{INVENTORY}/service/{slice_id}")
        assert service.body["state"] == "terminated"
        assert operator.js_errors == [], operator.js_errors


async def test_an_operator_withdraws_an_offer_and_publishes_it_again_from_the_page(fleet: Fleet, browser: Any) -> None:
    operator = await open_page(browser, fleet, OPERATOR)
    own = '.sp.own[data-sp="L"]'
    await operator.wait_for_selector(f"{own}:has-text('endpoints: L.ep')", timeout=SHOWN_MS)
    await operator.click('tr[data-domain="L"] button[data-role="toggle-offer"]', timeout=SHOWN_MS)
    await operator.wait_for_selector('tr[data-domain="L"] td[data-role="offer"]:text-is("withdrawn")', timeout=SHOWN_MS)
    # The withdrawn offer's note, as this SP publishes it now: nothing to buy.
    await operator.wait_for_selector(f"{own}:has-text('endpoints: -')", timeout=SHOWN_MS)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
        specs = await RestClient(fleet, SP, "alice", http).call(
            "GET", "/tmf-api/serviceCatalog/v4/serviceSpecification"
        )
        [spec] = specs.body
        src = next(c for c in spec["specCharacteristic"] if c["name"] == "src")
        assert src["serviceSpecCharacteristicValue"] == []  # a customer is offered no terminal
    await operator.click('tr[data-domain="L"] button[data-role="toggle-offer"]', timeout=SHOWN_MS)
    await operator.wait_for_selector(f"{own}:has-text('endpoints: L.ep')", timeout=SHOWN_MS)
    alice = await open_page(browser, fleet, "alice")
    assert await alice.locator("#offers").is_hidden()  # customers have no offers to edit
    assert operator.js_errors == [], operator.js_errors


async def test_an_alert_shows_on_the_page_while_it_fires(fleet: Fleet, browser: Any) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
        alice_api = RestClient(fleet, SP, "alice", http)
        # With a latency budget: a slice without one is held to 0 ms by the monitor once a link came back.
        body = order_body("web-3", **SLICE, latency_budget_ms=50)
        placed = await alice_api.call("POST", f"{ORDERING}/serviceOrder", json=body)
        order = f"{ORDERING}/serviceOrder/{placed.body['id']}"
        done = await until(lambda: alice_api.call("GET", order), lambda a: a.body["state"] == "completed")
        slice_id = done.body["serviceOrderItem"][0]["service"]["id"]
        alice = await open_page(browser, fleet, "alice")
        health = f'tr[data-slice="{slice_id}"] td[data-role="health"]'
        await alice.wait_for_selector(f"{health}:has-text('healthy')", timeout=SHOWN_MS)
        lab = pb_grpc.MonitoringStub(fleet[SP].operator_channel)
        try:
            await lab.SetCondition(pb.ConditionRequest(domain=SP, target="core", down=True), timeout=10)
            await alice.wait_for_selector(f"{health}:has-text('degraded')", timeout=SHOWN_MS)
            assert "from L" in await alice.inner_text(health)
        finally:
            await lab.SetCondition(pb.ConditionRequest(domain=SP, target="core", restore=True), timeout=10)
        await alice.wait_for_selector(f"{health}:has-text('healthy')", timeout=SHOWN_MS)
        await alice_api.call("DELETE", f"{INVENTORY}/service/{slice_id}")


async def test_a_user_logs_in_with_a_password_on_the_page_and_a_wrong_one_is_told(fleet: Fleet, browser: Any) -> None:
    base = f"https://{rest_address(fleet[SP])}"
    pki = fleet.pki_dir
    cert = {"origin": base, "certPath": str(pki / "bob.crt"), "keyPath": str(pki / "bob.key")}
    context = await browser.new_context(ignore_https_errors=True, client_certificates=[cert])
    page = await context.new_page()
    await page.goto(f"{base}/")  # no token anywhere: the page asks
    await page.wait_for_selector("#login:not([hidden])", timeout=SHOWN_MS)
    await page.fill("#user", "bob")
    await page.fill("#password", "wrong")
    await page.click("#log-in")
    await page.wait_for_selector("#error:has-text('bad user or password')", timeout=SHOWN_MS)
    assert await page.locator("#live.on").count() == 0
    await page.fill("#password", "bob-pw")
    await page.press("#password", "Enter")
    await page.wait_for_selector("#live.on", timeout=SHOWN_MS)  # logged in: the event stream is connected
    await page.wait_for_selector("#login[hidden]", state="attached", timeout=SHOWN_MS)
    assert await page.input_value("#password") == ""  # the password does not stay on the page
    await page.wait_for_selector("#none:not([hidden])", timeout=SHOWN_MS)  # bob has no slice; alice's are not his
    token = await page.evaluate("sessionStorage.getItem('fedbroker-token')")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
        bob = RestClient(fleet, SP, "bob", http)
        assert (await bob.call("GET", f"{ORDERING}/serviceOrder", token=token)).status == 200  # a session token
    await context.close()

"""The REST API over a real broker process: TMF641 orders, TMF638 services, TMF633 specifications, events.

One leaf SP with ``rest_listen``; customers alice and bob and the SP's operator call it over HTTPS
with their client certificates and a fresh call token per request, as gRPC callers do.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import pytest
import pytest_asyncio
from aiohttp import web
from openapi_spec_validator import validate

from broker.security.accounts import Role
from fedbroker.v1 import northsouth_pb2 as pb
from fedbroker.v1 import northsouth_pb2_grpc as pb_grpc
from scenarios.processes import Fleet
from tests.integration.rest import CATALOG, INVENTORY, ORDERING, Answer, RestClient, order_body, rest_address, until
from tests.topology import leaf_domain

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

SP = "L"
SLICE = {"src": "L.ep", "dst": "L.to-X", "bandwidth_mbps": 10}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def fleet(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Fleet]:
    """One leaf SP serving the REST API and a login endpoint, with a faults file the cancel test arms."""
    fl = Fleet(tmp_path_factory.mktemp("rest"))
    try:
        for name in ("alice", "bob"):
            fl.grant(SP, name, Role.CUSTOMER, password=f"{name}-pw")
        settings = {
            "domains": [leaf_domain(SP, {"X": "100-199"})],
            "rest_listen": "127.0.0.1:0",
            "security": {"login_listen": "127.0.0.1:0"},
        }
        await fl.start(SP, settings, faults=[])
        yield fl
    finally:
        await fl.stop_all()


async def settled(client: RestClient, order_id: str) -> Answer:
    """The order once it is in a state it does not leave (bounded wait)."""
    final = {"completed", "failed", "cancelled"}
    return await until(  # type: ignore[no-any-return]
        lambda: client.call("GET", f"{ORDERING}/serviceOrder/{order_id}"), lambda a: a.body["state"] in final
    )


def chars(service: dict[str, Any]) -> dict[str, Any]:
    return {c["name"]: c["value"] for c in service.get("serviceCharacteristic", [])}


async def test_an_order_is_carried_to_an_active_slice_and_its_service_shows_the_segments(alice: RestClient) -> None:
    placed = await alice.call("POST", f"{ORDERING}/serviceOrder", json=order_body("o-active", **SLICE))
    assert placed.status == 201, placed.body
    assert placed.body["state"] in ("acknowledged", "inProgress", "completed")
    assert placed.body["externalId"] == "o-active"
    got = await settled(alice, placed.body["id"])
    assert got.body["state"] == "completed", got.body
    assert got.body["completionDate"]
    service = got.body["serviceOrderItem"][0]["service"]
    assert service["state"] == "active" and chars(service)["sliceState"] == "ACTIVE"
    assert chars(service)["bandwidth_mbps"] == 10 and chars(service)["src"] == "L.ep"
    inv = await alice.call("GET", f"{INVENTORY}/service/{service['id']}")
    assert inv.status == 200
    [segment] = inv.body["supportingService"]
    assert chars(segment)["domain"] == SP and chars(segment)["sliceState"] == "ACTIVE"


async def test_the_external_id_replays_the_same_order_and_refuses_another_request(alice: RestClient) -> None:
    first = await alice.call("POST", f"{ORDERING}/serviceOrder", json=order_body("o-replay", **SLICE))
    again = await alice.call("POST", f"{ORDERING}/serviceOrder", json=order_body("o-replay", **SLICE))
    assert (first.status, again.status) == (201, 201)
    assert again.body["id"] == first.body["id"]
    other = await alice.call(
        "POST", f"{ORDERING}/serviceOrder", json=order_body("o-replay", **{**SLICE, "bandwidth_mbps": 11})
    )
    assert other.status == 409, other.body
    assert other.body["code"] == "ALREADY_EXISTS" and "o-replay" in other.body["reason"]
    listed = await alice.call("GET", f"{ORDERING}/serviceOrder?externalId=o-replay")
    assert [o["id"] for o in listed.body] == [first.body["id"]]


async def test_rest_and_grpc_are_one_api_the_external_id_is_the_request_id(fleet: Fleet, alice: RestClient) -> None:
    placed = await alice.call("POST", f"{ORDERING}/serviceOrder", json=order_body("o-both", hold_only=True, **SLICE))
    slice_id = placed.body["serviceOrderItem"][0]["service"]["id"]
    stub = pb_grpc.SlicesStub(fleet.channel(SP, "alice"))
    got = await stub.Get(pb.SliceRef(request_id="o-both"), timeout=10)
    assert got.id == slice_id and got.state == pb.SLICE_STATE_HELD
    request = pb.SliceRequest(name="s", src="L.ep", dst="L.to-X", bandwidth_mbps=10)
    replay = await stub.Reserve(pb.ReserveRequest(request_id="o-both", request=request), timeout=10)
    assert replay.id == slice_id  # the same key and request: the same answer, whichever API asks
    with pytest.raises(grpc.aio.AioRpcError) as info:
        other = pb.SliceRequest(name="s", src="L.ep", dst="L.to-X", bandwidth_mbps=11)
        await stub.Reserve(pb.ReserveRequest(request_id="o-both", request=other), timeout=10)
    assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
    await stub.Commit(pb.SliceRef(slice_id=slice_id), timeout=10)
    service = await alice.call("GET", f"{INVENTORY}/service/{slice_id}")
    assert chars(service.body)["sliceState"] == "COMMITTED"  # what gRPC did, REST reads


async def test_a_hold_only_order_completes_when_the_slice_is_held(alice: RestClient) -> None:
    placed = await alice.call("POST", f"{ORDERING}/serviceOrder", json=order_body("o-hold", hold_only=True, **SLICE))
    assert placed.status == 201
    got = await settled(alice, placed.body["id"])
    service = got.body["serviceOrderItem"][0]["service"]
    assert got.body["state"] == "completed" and chars(service)["sliceState"] == "HELD"
    assert service["state"] == "reserved"
    cancel = await alice.call(
        "POST", f"{ORDERING}/cancelServiceOrder", json={"serviceOrder": {"id": placed.body["id"]}}
    )
    assert cancel.status == 409 and "completed" in cancel.body["reason"]


async def test_a_refused_reserve_is_a_failed_order_with_the_reason(alice: RestClient) -> None:
    placed = await alice.call(
        "POST", f"{ORDERING}/serviceOrder", json=order_body("o-big", **{**SLICE, "bandwidth_mbps": 1_000_000})
    )
    assert placed.status == 201, placed.body
    assert placed.body["state"] == "failed"
    [why] = placed.body["errorMessage"]
    assert why["code"] == "RESOURCE_EXHAUSTED" and why["reason"]
    failed = await alice.call("GET", f"{ORDERING}/serviceOrder?state=failed&fields=state,externalId")
    assert {"id", "href", "state", "externalId", "@type"} >= set(failed.body[0]) and failed.body[0]["state"] == "failed"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (order_body("o-bad", **{**SLICE, "bandwidth_mbps": "ten"}), "bandwidth_mbps"),
        (order_body("o-bad", **{"src": "L.ep", "bandwidth_mbps": 10}), "dst"),
        (order_body("o-bad", **{**SLICE, "colour": "red"}), "colour"),
        (order_body("o-bad", **{**SLICE, "holdTimeS": -1}), "holdTimeS"),
        ({"externalId": "o-bad", "serviceOrderItem": []}, "serviceOrderItem"),
        ({"serviceOrderItem": [{"service": {}}]}, "externalId"),
    ],
)
async def test_a_bad_order_is_400_naming_the_field_and_leaves_no_order(
    alice: RestClient, body: dict[str, Any], field: str
) -> None:
    answer = await alice.call("POST", f"{ORDERING}/serviceOrder", json=body)
    assert answer.status == 400, answer.body
    assert answer.body["code"] == "INVALID_ARGUMENT" and field in answer.body["field"], answer.body
    assert (await alice.call("GET", f"{ORDERING}/serviceOrder?externalId=o-bad")).body == []


async def test_another_customers_order_and_service_are_not_found_in_the_same_words(
    alice: RestClient, bob: RestClient, operator: RestClient
) -> None:
    placed = await alice.call("POST", f"{ORDERING}/serviceOrder", json=order_body("o-mine", hold_only=True, **SLICE))
    order_id = placed.body["id"]
    slice_id = placed.body["serviceOrderItem"][0]["service"]["id"]
    theirs = await bob.call("GET", f"{ORDERING}/serviceOrder/{order_id}")
    missing = await bob.call("GET", f"{ORDERING}/serviceOrder/{'0' * len(order_id)}")
    assert theirs.status == missing.status == 404
    assert theirs.body["reason"].replace(order_id, "X") == missing.body["reason"].replace("0" * len(order_id), "X")
    for method in ("GET", "DELETE"):
        svc = await bob.call(method, f"{INVENTORY}/service/{slice_id}")
        gone = await bob.call(method, f"{INVENTORY}/service/{SP}-000000000000")
        assert svc.status == gone.status == 404
        assert svc.body["reason"].replace(slice_id, "X") == gone.body["reason"].replace(f"{SP}-000000000000", "X")
    cancel = await bob.call("POST", f"{ORDERING}/cancelServiceOrder", json={"serviceOrder": {"id": order_id}})
    assert cancel.status == 404
    assert order_id not in {o["id"] for o in (await bob.call("GET", f"{ORDERING}/serviceOrder")).body}
    assert slice_id not in {s["id"] for s in (await bob.call("GET", f"{INVENTORY}/service")).body}
    assert (await operator.call("GET", f"{ORDERING}/serviceOrder/{order_id}")).status == 200
    assert slice_id in {s["id"] for s in (await operator.call("GET", f"{INVENTORY}/service?limit=500")).body}


async def test_without_a_valid_token_every_operation_is_401(alice: RestClient) -> None:
    for token in ("", "not.a.token"):
        answer = await alice.call("GET", f"{ORDERING}/serviceOrder", token=token)
        assert answer.status == 401 and answer.body["code"] == "UNAUTHENTICATED"
    used = alice.token()
    assert (await alice.call("GET", f"{INVENTORY}/service", token=used)).status == 200
    replayed = await alice.call("GET", f"{INVENTORY}/service", token=used)
    assert replayed.status == 401  # a call token is accepted once, as on gRPC


async def test_a_session_token_serves_several_calls_but_only_from_its_users_certificate(
    fleet: Fleet, alice: RestClient, bob: RestClient, session: aiohttp.ClientSession
) -> None:
    login = (fleet[SP].data_dir / "login_address").read_text().strip()
    creds = {"user": "alice", "password": "alice-pw"}
    async with session.post(f"https://{login}/login", json=creds, ssl=alice.ssl()) as reply:
        assert reply.status == 200
        token = (await reply.json())["token"]
    for _ in range(2):
        assert (await alice.call("GET", f"{ORDERING}/serviceOrder", token=token)).status == 200
    stolen = await bob.call("GET", f"{ORDERING}/serviceOrder", token=token)
    assert stolen.status == 401 and "TLS peer" in stolen.body["reason"]


async def test_the_rest_login_gives_a_session_token_on_the_api_s_own_origin_without_a_bearer_token(
    fleet: Fleet, alice: RestClient, bob: RestClient, session: aiohttp.ClientSession
) -> None:
    url = "/fedbroker/v1/login"
    ok = await alice.call("POST", url, json={"user": "alice", "password": "alice-pw"}, token="")
    assert ok.status == 200, ok.body
    assert ok.body["token_type"] == "Bearer" and ok.body["expires_at"] > 0
    for _ in range(2):  # a session token: more than one call, from alice's certificate only
        assert (await alice.call("GET", f"{ORDERING}/serviceOrder", token=ok.body["token"])).status == 200
    assert (await bob.call("GET", f"{ORDERING}/serviceOrder", token=ok.body["token"])).status == 401
    wrong = await alice.call("POST", url, json={"user": "alice", "password": "nope"}, token="")
    unknown = await alice.call("POST", url, json={"user": "nobody", "password": "nope"}, token="")
    assert (
        wrong.status == 401
        and wrong.body["code"] == "UNAUTHENTICATED"
        and wrong.body["reason"] == "bad user or password"
    )
    assert unknown.status == 403 and unknown.body["field"] == "user"  # alice's certificate is not nobody's
    other = await alice.call("POST", url, json={"user": "bob", "password": "bob-pw"}, token="")
    assert other.status == 403 and "not 'bob'" in other.body["reason"]
    bad = await alice.call("POST", url, json={"user": "alice"}, token="")
    assert bad.status == 400 and bad.body["field"] == "password"
    # One failure count per user for both surfaces: guesses at the login endpoint lock the REST login too.
    fleet.grant(SP, "carol", Role.CUSTOMER, password="carol-pw")
    carol = RestClient(fleet, SP, "carol", session)
    login = (fleet[SP].data_dir / "login_address").read_text().strip()
    for i in range(5):
        async with session.post(
            f"https://{login}/login", json={"user": "carol", "password": f"guess-{i}"}, ssl=carol.ssl()
        ) as reply:
            assert reply.status == 401
    locked = await carol.call("POST", url, json={"user": "carol", "password": "carol-pw"}, token="")
    assert locked.status == 429 and locked.body["code"] == "RESOURCE_EXHAUSTED", locked.body
    lines = [json.loads(x) for x in fleet[SP].audit_path.read_text().splitlines()]
    assert [x["result"] for x in lines if x["rpc"] == "Login" and x["target"] == "carol"][-1] == "RESOURCE_EXHAUSTED"


async def test_a_browser_passes_its_session_token_as_a_query_parameter_to_the_event_stream_only(
    fleet: Fleet, alice: RestClient, bob: RestClient, session: aiohttp.ClientSession
) -> None:
    login = (fleet[SP].data_dir / "login_address").read_text().strip()
    creds = {"user": "alice", "password": "alice-pw"}
    async with session.post(f"https://{login}/login", json=creds, ssl=alice.ssl()) as reply:
        token = (await reply.json())["token"]
    url = f"{alice.base}{ORDERING}/events?initial=true&access_token={token}"
    async with session.get(url, ssl=alice.ssl()) as stream:
        assert stream.status == 200 and stream.content_type == "text/event-stream"
        assert await stream.content.readline() == b": connected\n"
        assert await stream.content.readline() == b"retry: 2000\n"  # a browser tries again soon after a break
    async with session.get(url, ssl=bob.ssl()) as stolen:  # bound to alice's certificate, as in a header
        assert stolen.status == 401
    ignored = await alice.call("GET", f"{ORDERING}/serviceOrder?access_token={token}", token="")
    assert ignored.status == 401  # other operations take the token from the Authorization header only


async def test_writes_are_audited_with_their_outcome_refusals_included(fleet: Fleet, alice: RestClient) -> None:
    placed = await alice.call("POST", f"{ORDERING}/serviceOrder", json=order_body("o-audit", hold_only=True, **SLICE))
    again = await alice.call("POST", f"{ORDERING}/serviceOrder", json=order_body("o-audit", **SLICE))
    assert (placed.status, again.status) == (201, 409)
    lines = [json.loads(x) for x in fleet[SP].audit_path.read_text().splitlines() if "o-audit" in x]
    assert [(x["rpc"], x["result"]) for x in lines] == [("Reserve", "OK"), ("Reserve", "ALREADY_EXISTS")], lines
    assert placed.body["id"] in lines[0]["detail"] and lines[0]["who"] == "alice" and lines[0]["target"] == "o-audit"


@pytest.mark.parametrize("depth", [900, 5000])
async def test_a_body_nested_too_deeply_is_400(alice: RestClient, depth: int) -> None:
    value = "[" * depth + "]" * depth
    chars = f'[{{"name": "src", "value": {value}}}]'
    raw = f'{{"externalId": "o-deep", "serviceOrderItem": [{{"service": {{"serviceCharacteristic": {chars}}}}}]}}'
    answer = await alice.call(
        "POST", f"{ORDERING}/serviceOrder", data=raw, headers_extra={"Content-Type": "application/json"}
    )
    assert answer.status == 400 and answer.body["code"] == "INVALID_ARGUMENT", answer.body


async def test_a_body_too_large_is_413_with_an_error_body(alice: RestClient) -> None:
    big = order_body("o-big-body", **SLICE)
    big["description"] = "x" * 100_000
    answer = await alice.call("POST", f"{ORDERING}/serviceOrder", json=big)
    assert answer.status == 413 and answer.body["status"] == "413"
    assert (await alice.call("GET", f"{ORDERING}/serviceOrder?externalId=o-big-body")).body == []


async def test_without_a_client_certificate_the_handshake_is_refused(
    fleet: Fleet, session: aiohttp.ClientSession
) -> None:
    import ssl

    ctx = ssl.create_default_context(cadata=(fleet.pki_dir / "ca.crt").read_text())
    with pytest.raises(aiohttp.ClientError):
        async with session.get(f"https://{rest_address(fleet[SP])}/openapi.json", ssl=ctx) as reply:
            await reply.read()


async def test_cancelling_an_order_in_progress_releases_its_slice(fleet: Fleet, alice: RestClient) -> None:
    # The desk commits and activates a held slice in one step (issue 17): hold it up after the decision.
    fleet.write_faults(SP, [{"id": "slow", "point": "order.decided", "action": "hang", "hang_s": 1.5, "occurrence": 1}])
    try:
        placed = await alice.call("POST", f"{ORDERING}/serviceOrder", json=order_body("o-cancel", **SLICE))
        order_id = placed.body["id"]
        busy = await until(
            lambda: alice.call("GET", f"{ORDERING}/serviceOrder/{order_id}"),
            lambda a: chars(a.body["serviceOrderItem"][0]["service"]).get("sliceState") == "COMMITTING",
        )
        assert busy.body["state"] == "inProgress", busy.body
        cancel = await alice.call("POST", f"{ORDERING}/cancelServiceOrder", json={"serviceOrder": {"id": order_id}})
        assert cancel.status == 201, cancel.body
        got = await settled(alice, order_id)
        assert got.body["state"] == "cancelled" and got.body["cancellationDate"]
        assert got.body["serviceOrderItem"][0]["service"]["state"] == "terminated"
        done = await alice.call("GET", f"{ORDERING}/cancelServiceOrder/{order_id}")
        assert done.status == 200 and done.body["state"] == "done"
    finally:
        fleet.write_faults(SP, [])


async def test_deleting_a_service_terminates_the_slice_and_the_order_stays_completed(alice: RestClient) -> None:
    placed = await alice.call("POST", f"{ORDERING}/serviceOrder", json=order_body("o-delete", **SLICE))
    got = await settled(alice, placed.body["id"])
    slice_id = got.body["serviceOrderItem"][0]["service"]["id"]
    assert (await alice.call("DELETE", f"{INVENTORY}/service/{slice_id}")).status == 204
    after = await alice.call("GET", f"{INVENTORY}/service/{slice_id}")
    assert after.body["state"] == "terminated" and chars(after.body)["sliceState"] == "TERMINATED"
    assert (await alice.call("GET", f"{ORDERING}/serviceOrder/{placed.body['id']}")).body["state"] == "completed"


async def test_the_specification_is_the_published_note(alice: RestClient) -> None:
    [spec] = (await alice.call("GET", f"{CATALOG}/serviceSpecification")).body
    one = await alice.call("GET", f"{CATALOG}/serviceSpecification/{spec['id']}")
    assert one.body == spec
    by_name = {c["name"]: c for c in spec["specCharacteristic"]}
    assert "L.ep" in {v["value"] for v in by_name["src"]["serviceSpecCharacteristicValue"]}
    assert {"holdOnly", "holdTimeS", "bandwidth_mbps"} <= set(by_name)
    assert (await alice.call("GET", f"{CATALOG}/serviceSpecification/nope")).status == 404


async def test_the_openapi_document_is_valid_and_names_every_route(alice: RestClient) -> None:
    answer = await alice.call("GET", "/openapi.json", token="")
    assert answer.status == 200
    validate(answer.body)
    assert f"{ORDERING}/serviceOrder" in answer.body["paths"] and answer.body["openapi"].startswith("3.1")


async def test_the_sse_stream_and_the_hub_carry_the_order_events(alice: RestClient, bob: RestClient) -> None:
    received: list[dict[str, Any]] = []
    got_one = asyncio.Event()

    async def callback(request: web.Request) -> web.Response:
        received.append(await request.json())
        got_one.set()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/cb", callback)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        refused = await alice.call("POST", f"{ORDERING}/hub", json={"callback": "http://192.0.2.1/cb"})
        assert refused.status == 400 and refused.body["field"] == "callback"
        hub = await alice.call("POST", f"{ORDERING}/hub", json={"callback": f"http://127.0.0.1:{port}/cb"})
        assert hub.status == 201
        assert (await bob.call("GET", f"{ORDERING}/hub/{hub.body['id']}")).status == 404
        lines: list[dict[str, Any]] = []

        async def read_stream() -> None:
            headers = {"Authorization": f"Bearer {alice.token()}"}
            async with alice._session.get(f"{alice.base}{ORDERING}/events", headers=headers, ssl=alice.ssl()) as reply:
                assert reply.headers["Content-Type"].startswith("text/event-stream")
                async for raw in reply.content:
                    if raw.startswith(b"data: "):
                        lines.append(json.loads(raw[6:]))
                        order = lines[-1]["event"].get("serviceOrder", {})
                        if order.get("externalId") == "o-events" and order.get("state") == "completed":
                            return

        reader = asyncio.ensure_future(read_stream())
        await asyncio.sleep(0.3)  # the stream is subscribed
        bobs = await bob.call("POST", f"{ORDERING}/serviceOrder", json=order_body("o-bob", hold_only=True, **SLICE))
        placed = await alice.call("POST", f"{ORDERING}/serviceOrder", json=order_body("o-events", **SLICE))
        await asyncio.wait_for(reader, 15)
        await asyncio.wait_for(got_one.wait(), 10)
        kinds = {e["eventType"] for e in lines}
        assert {"ServiceStateChangeEvent", "ServiceOrderStateChangeEvent"} <= kinds
        seen = {e["event"].get("serviceOrder", {}).get("id") for e in lines + received}
        assert placed.body["id"] in seen and bobs.body["id"] not in seen  # bob's order is not alice's business
        assert (await alice.call("DELETE", f"{ORDERING}/hub/{hub.body['id']}")).status == 204
    finally:
        await runner.cleanup()


async def test_no_request_of_this_module_hit_a_bug_in_the_broker(fleet: Fleet) -> None:
    """Last in the module: every answer above came from a handler, none from the 500 of an unexpected error."""
    bugs = [line for line in fleet[SP].log_path.read_text().splitlines() if " ERROR " in line]
    assert not bugs, "\n".join(bugs[:10])

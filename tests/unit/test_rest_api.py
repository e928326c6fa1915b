"""The REST API's edge without a network: its document, its error table, order decoding, attribute selection."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate

from broker.api import rest_models as m
from broker.api.metrics import check_listen
from broker.api.rest import HTTP_STATUS, selected
from broker.api.rest_events import check_callback
from broker.api.rest_openapi import ROUTES, document
from broker.api.rest_tmf import SERVICE_STATE, decode_order
from broker.descriptors import ConfigError
from slicing.errors import ErrorCode, InvalidArgument
from slicing.model import SliceState


def test_the_document_is_valid_openapi_3_1_and_describes_every_route() -> None:
    doc = document("T", "https://127.0.0.1:8443")
    validate(doc)
    assert doc["openapi"] == "3.1.0"
    for r in ROUTES:
        op = doc["paths"][r.path][r.method.lower()]
        assert op["operationId"] == r.operation_id
        assert str(r.ok) in op["responses"]
        for code in r.errors:  # every refusal is a documented TMF error body
            assert op["responses"][str(code)]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/Error"
            }
    assert len({r.operation_id for r in ROUTES}) == len(ROUTES)


def test_every_error_code_has_one_http_status_and_only_a_bug_is_500() -> None:
    assert set(HTTP_STATUS) == set(ErrorCode)
    assert [c for c, s in HTTP_STATUS.items() if s >= 500 and s not in (503, 504)] == [ErrorCode.INTERNAL]


def test_every_slice_state_is_a_service_state() -> None:
    assert set(SERVICE_STATE) == set(SliceState)
    assert set(SERVICE_STATE.values()) <= set(m.ServiceStateName.__args__)  # type: ignore[attr-defined]


def _order(*chars: tuple[str, Any], name: str = "") -> m.ServiceOrderCreate:
    return m.ServiceOrderCreate.model_validate(
        {
            "externalId": "k",
            "serviceOrderItem": [
                {"service": {"name": name, "serviceCharacteristic": [{"name": k, "value": v} for k, v in chars]}}
            ],
        }
    )


BASE = (("src", "L.ep"), ("dst", "L.to-X"), ("bandwidth_mbps", 10))


def test_an_order_item_decodes_to_the_slice_request_and_its_order_flags() -> None:
    chain = [{"type": "fw", "throughput_mbps": 5}]
    req, hold_only, hold = decode_order(
        _order(*BASE, ("chain", chain), ("holdOnly", True), ("holdTimeS", 30), name="mine")
    )
    assert (req.src, req.dst, req.bandwidth_mbps, req.name) == ("L.ep", "L.to-X", 10, "mine")
    assert req.chain == ("fw",) and req.chain_throughput_mbps == (5,)
    assert (hold_only, hold) == (True, 30.0)


@pytest.mark.parametrize(
    ("chars", "field"),
    [
        ((*BASE[:2], ("bandwidth_mbps", True)), "serviceCharacteristic.bandwidth_mbps"),
        ((*BASE, ("bandwidth_mbps", 5)), "serviceCharacteristic[3].name"),
        ((*BASE, ("holdOnly", "yes")), "serviceCharacteristic.holdOnly"),
        ((*BASE, ("holdTimeS", 10**7)), "serviceCharacteristic.holdTimeS"),
        ((*BASE, ("subnet", "10.0.0.0/99")), "serviceCharacteristic.subnet"),
        ((("src", "L.ep"), ("dst", "L.ep"), ("bandwidth_mbps", 1)), "serviceCharacteristic.dst"),
    ],
)
def test_a_bad_characteristic_is_refused_by_its_path(chars: tuple[tuple[str, Any], ...], field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        decode_order(_order(*chars))
    assert info.value.field == f"serviceOrderItem[0].service.{field}", info.value


def test_fields_keeps_the_named_attributes_and_always_the_id() -> None:
    body = {"id": "1", "href": "/x", "@type": "T", "state": "s", "other": 2}
    assert selected(body, "state") == {"id": "1", "href": "/x", "@type": "T", "state": "s"}
    assert selected(body, "") == body


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("http://127.0.0.1:9/cb", True),
        ("https://localhost/cb", True),
        ("http://[::1]:9/", True),
        ("http://hooks.example.org/cb", True),  # listed
        ("http://192.0.2.1/cb", False),
        ("http://10.0.0.1/cb", False),
        ("ftp://127.0.0.1/cb", False),
        ("http://127.0.0.1:99999/cb", False),
        ("127.0.0.1/cb", False),
    ],
)
def test_hub_callbacks_go_only_to_loopback_or_listed_hosts(url: str, ok: bool) -> None:
    if ok:
        assert check_callback(url, ["hooks.example.org"]) == url
    else:
        with pytest.raises(InvalidArgument) as info:
            check_callback(url, ["hooks.example.org"])
        assert info.value.field == "callback"


def test_a_plaintext_rest_listener_off_loopback_is_refused_naming_the_setting() -> None:
    check_listen("127.0.0.1:0", tls=False, setting="rest_listen")
    check_listen("0.0.0.0:8443", tls=True, setting="rest_listen")
    with pytest.raises(ConfigError) as info:
        check_listen("0.0.0.0:8443", tls=False, setting="rest_listen")
    assert info.value.field == "rest_listen" and str(info.value).startswith("rest_listen:")


def test_an_order_body_takes_tmf_polymorphism_attributes_but_refuses_unknown_ones() -> None:
    item = {"@type": "ServiceOrderItem", "service": {"@schemaLocation": "https://x/s", "serviceCharacteristic": []}}
    body = {"externalId": "k", "@baseType": "ServiceOrder", "serviceOrderItem": [item]}
    assert m.ServiceOrderCreate.model_validate(body).base_type == "ServiceOrder"
    with pytest.raises(ValueError, match="requestedStartDate"):
        m.ServiceOrderCreate.model_validate({**body, "requestedStartDate": "2026-01-01T00:00:00Z"})


def test_hold_only_orders_are_documented_in_the_openapi_document_and_the_readme() -> None:
    doc = document("T")
    assert "holdOnly: true" in doc["info"]["description"]
    create = doc["paths"]["/tmf-api/serviceOrdering/v4/serviceOrder"]["post"]
    assert "holdOnly" in create["summary"]
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    assert "`holdOnly: true`" in readme


def test_attribute_selection_reaches_inside_attributes_and_lists_and_keeps_ids() -> None:
    body = {
        "id": "o",
        "href": "/o",
        "@type": "ServiceOrder",
        "state": "completed",
        "note": "n",
        "serviceOrderItem": [{"id": "1", "state": "completed", "service": {"id": "s", "state": "active", "name": "x"}}],
    }
    assert selected(body, "") == body
    assert selected(body, "state") == {"id": "o", "href": "/o", "@type": "ServiceOrder", "state": "completed"}
    assert selected(body, " serviceOrderItem.service.state , note")["serviceOrderItem"] == [
        {"id": "1", "service": {"id": "s", "state": "active"}}
    ]
    assert selected(body, "serviceOrderItem")["serviceOrderItem"] == body["serviceOrderItem"]
    assert selected(body, "state.inner")["state"] == "completed"  # a plain value is sent whole
    assert "note" not in selected(body, "nothing")


def test_the_event_stream_documents_its_resume_parameters() -> None:
    op = document("T")["paths"]["/tmf-api/serviceOrdering/v4/events"]["get"]
    where = {(p["name"], p["in"]) for p in op["parameters"]}
    assert {("Last-Event-ID", "header"), ("lastEventId", "query")} <= where
    assert "event: reset" in op["responses"]["200"]["description"]


def test_only_the_login_operation_needs_no_bearer_token() -> None:
    doc = document("T")
    open_ops = [
        op["operationId"] for methods in doc["paths"].values() for op in methods.values() if op.get("security") == []
    ]
    assert open_ops == ["createSession"]
    assert doc["security"] == [{"bearer": []}]
    assert [r.operation_id for r in ROUTES if r.public] == ["createSession"]

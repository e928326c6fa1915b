"""The REST API's route table, and the OpenAPI 3.1 document built from it and the body models.

``ROUTES`` is the one list of operations: ``broker.api.rest`` registers each on the aiohttp router
under its path, and ``document`` describes each (parameters, request body, answers with their
schemas) from the same entry and the pydantic models of ``broker.api.rest_models``. An operation
added here is served and documented at once; there is no second list to forget.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from broker.api import rest_models as m
from broker.api.servicers import MAX_PAGE_SIZE

ORDERING = "/tmf-api/serviceOrdering/v4"
INVENTORY = "/tmf-api/serviceInventory/v4"
CATALOG = "/tmf-api/serviceCatalog/v4"
#: fedbroker's own resources beside the TMF ones (what the web view shows of the federation).
OWN = "/fedbroker/v1"
#: The most a list skips (``offset``): lists are read newest first and never scan without bound.
MAX_OFFSET = 10_000


@dataclass(frozen=True)
class Param:
    """A path or query parameter, with its JSON Schema."""

    name: str
    where: str  # "path" or "query"
    schema: dict[str, Any]
    description: str = ""


@dataclass(frozen=True)
class Route:
    """One operation: where it is served, what it reads and answers, and the role policy it is checked under."""

    method: str
    path: str
    operation_id: str
    rpc: str  # the entry of ``broker.security.auth.POLICY`` (and of the audit log) it is checked as
    summary: str
    tag: str
    ok: int = 200
    answer: type[BaseModel] | None = None
    many: bool = False  # the answer is a list of ``answer``
    body: type[BaseModel] | None = None
    params: tuple[Param, ...] = ()
    errors: tuple[int, ...] = ()
    media: str = "application/json"
    # The token may come as the ``access_token`` query parameter too: a browser's EventSource
    # cannot set an Authorization header.
    query_token: bool = False
    # No token: the operation is how a user gets one (the client certificate is still required).
    public: bool = False


ID = Param("id", "path", {"type": "string", "minLength": 1, "maxLength": 200}, "The resource's id")
OFFSET = Param("offset", "query", {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET}, "How many to skip")
LIMIT = Param(
    "limit", "query", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE}, "At most this many (default 100)"
)
FIELDS = Param(
    "fields",
    "query",
    {"type": "string", "maxLength": 512},
    "Comma-separated attributes to send, a dotted name for one inside another (serviceOrderItem.state); "
    "id, href and @type are always sent",
)
ORDER_STATE = Param(
    "state",
    "query",
    {"type": "string", "enum": list(m.OrderStateName.__args__)},  # type: ignore[attr-defined]
    "Only orders in this state",
)
SERVICE_STATE = Param(
    "state",
    "query",
    {"type": "string", "enum": list(m.ServiceStateName.__args__)},  # type: ignore[attr-defined]
    "Only services in this state",
)
EXTERNAL_ID = Param("externalId", "query", {"type": "string", "minLength": 1, "maxLength": 200}, "Only this order")
ACCESS_TOKEN = Param(
    "access_token",
    "query",
    {"type": "string", "maxLength": 4096},
    "The bearer token, for clients that cannot set an Authorization header (a browser's EventSource)",
)
INITIAL = Param(
    "initial", "query", {"type": "boolean"}, "Send every visible slice's current state first (default false)"
)
LAST_EVENT_ID = Param(
    "Last-Event-ID",
    "header",
    {"type": "string", "maxLength": 32},
    "Resume after this event (its `id:`): an EventSource sends it when it reconnects",
)
LAST_EVENT_ID_QUERY = Param(
    "lastEventId",
    "query",
    {"type": "string", "maxLength": 32},
    "Resume after this event, for clients that cannot set the Last-Event-ID header (the header wins)",
)
READ = (400, 401, 403)
WRITE = (400, 401, 403, 409, 413, 429, 503, 504)

ROUTES: tuple[Route, ...] = (
    Route(
        "POST",
        f"{ORDERING}/serviceOrder",
        "createServiceOrder",
        "Reserve",
        "Order a slice: one item, action add, whose service characteristics are the slice request's fields "
        "(holdOnly: true only holds it); or terminate one: one item, action delete, naming the service's id",
        "serviceOrder",
        ok=201,
        answer=m.ServiceOrderOut,
        body=m.ServiceOrderCreate,
        errors=WRITE,
    ),
    Route(
        "GET",
        f"{ORDERING}/serviceOrder",
        "listServiceOrder",
        "List",
        "The caller's orders (an operator: every order), newest first",
        "serviceOrder",
        answer=m.ServiceOrderOut,
        many=True,
        params=(FIELDS, OFFSET, LIMIT, ORDER_STATE, EXTERNAL_ID),
        errors=READ,
    ),
    Route(
        "GET",
        f"{ORDERING}/serviceOrder/{{id}}",
        "retrieveServiceOrder",
        "Get",
        "One order, its state read from its slice",
        "serviceOrder",
        answer=m.ServiceOrderOut,
        params=(ID, FIELDS),
        errors=(*READ, 404),
    ),
    Route(
        "POST",
        f"{ORDERING}/cancelServiceOrder",
        "createCancelServiceOrder",
        "Terminate",
        "Cancel an open order: its slice is released, whatever state it is in",
        "cancelServiceOrder",
        ok=201,
        answer=m.CancelServiceOrderOut,
        body=m.CancelServiceOrderCreate,
        errors=(*WRITE, 404),
    ),
    Route(
        "GET",
        f"{ORDERING}/cancelServiceOrder",
        "listCancelServiceOrder",
        "List",
        "The caller's cancellations (an operator: every one), newest first",
        "cancelServiceOrder",
        answer=m.CancelServiceOrderOut,
        many=True,
        params=(OFFSET, LIMIT),
        errors=READ,
    ),
    Route(
        "GET",
        f"{ORDERING}/cancelServiceOrder/{{id}}",
        "retrieveCancelServiceOrder",
        "Get",
        "A cancellation (its id is the order's)",
        "cancelServiceOrder",
        answer=m.CancelServiceOrderOut,
        params=(ID,),
        errors=(*READ, 404),
    ),
    Route(
        "POST",
        f"{ORDERING}/hub",
        "registerListener",
        "Subscribe",
        "Have every event about the caller's orders and services POSTed to a callback URL",
        "events",
        ok=201,
        answer=m.HubOut,
        body=m.HubCreate,
        errors=(400, 401, 403, 413, 429),
    ),
    Route(
        "GET",
        f"{ORDERING}/hub/{{id}}",
        "retrieveListener",
        "Subscribe",
        "One of the caller's subscriptions",
        "events",
        answer=m.HubOut,
        params=(ID,),
        errors=(*READ, 404),
    ),
    Route(
        "DELETE",
        f"{ORDERING}/hub/{{id}}",
        "unregisterListener",
        "Subscribe",
        "End a subscription",
        "events",
        ok=204,
        params=(ID,),
        errors=(*READ, 404),
    ),
    Route(
        "GET",
        f"{ORDERING}/events",
        "streamEvents",
        "Subscribe",
        "The same events as the hub, as a Server-Sent Events stream, each with its number as `id:`; "
        "resumed after Last-Event-ID with exactly the events missed, or `event: reset` when they are no longer kept",
        "events",
        answer=m.EventOut,
        params=(INITIAL, ACCESS_TOKEN, LAST_EVENT_ID, LAST_EVENT_ID_QUERY),
        errors=READ,
        media="text/event-stream",
        query_token=True,
    ),
    Route(
        "GET",
        f"{INVENTORY}/service",
        "listService",
        "List",
        "The caller's slices (an operator: every slice) with their per-domain segments, oldest first",
        "service",
        answer=m.ServiceOut,
        many=True,
        params=(FIELDS, OFFSET, LIMIT, SERVICE_STATE),
        errors=READ,
    ),
    Route(
        "GET",
        f"{INVENTORY}/service/{{id}}",
        "retrieveService",
        "Get",
        "One slice with its per-domain segments",
        "service",
        answer=m.ServiceOut,
        params=(ID, FIELDS),
        errors=(*READ, 404),
    ),
    Route(
        "DELETE",
        f"{INVENTORY}/service/{{id}}",
        "deleteService",
        "Terminate",
        "Terminate a slice: released everywhere, whatever its state",
        "service",
        ok=204,
        params=(ID,),
        errors=(*READ, 404, 409, 503, 504),
    ),
    Route(
        "GET",
        f"{OWN}/federation",
        "retrieveFederation",
        "GetCatalog",
        "This SP's note, the notes it holds from the SPs below (version, age, expiry) and those it refused",
        "federation",
        answer=m.FederationOut,
        errors=READ,
    ),
    Route(
        "GET",
        f"{OWN}/offer",
        "listOffer",
        "SetOffer",
        "This SP's local domains and whether each offer is withdrawn (operators only)",
        "federation",
        answer=m.OfferOut,
        many=True,
        errors=READ,
    ),
    Route(
        "PATCH",
        f"{OWN}/offer/{{id}}",
        "patchOffer",
        "SetOffer",
        "Withdraw a local domain's offer or publish it again; the new note is published at once (operators only)",
        "federation",
        answer=m.OfferOut,
        body=m.OfferChange,
        params=(ID,),
        errors=(400, 401, 403, 404, 413),
    ),
    Route(
        "POST",
        f"{OWN}/login",
        "createSession",
        "Login",
        "A session token for a user with a password, from their client certificate (no bearer token needed): "
        "what the web view's login asks, as `fedbroker login` does at the login endpoint",
        "session",
        answer=m.SessionOut,
        body=m.SessionCreate,
        errors=(400, 401, 403, 413, 429),
        public=True,
    ),
    Route(
        "GET",
        f"{CATALOG}/serviceSpecification",
        "listServiceSpecification",
        "ListSpecifications",
        "What this SP offers: its published capability note as service specifications",
        "serviceSpecification",
        answer=m.ServiceSpecificationOut,
        many=True,
        params=(FIELDS, OFFSET, LIMIT),
        errors=READ,
    ),
    Route(
        "GET",
        f"{CATALOG}/serviceSpecification/{{id}}",
        "retrieveServiceSpecification",
        "ListSpecifications",
        "One service specification",
        "serviceSpecification",
        answer=m.ServiceSpecificationOut,
        params=(ID, FIELDS),
        errors=(*READ, 404),
    ),
)

_REASONS = {
    200: "OK",
    201: "Created",
    204: "Deleted",
    400: "Bad request: the error names the field",
    401: "No or bad token, or no client certificate (login: a bad user or password)",
    403: "The caller's role may not do this",
    404: "No such resource (also another customer's, in the same words)",
    409: "Conflict: the key was used with another request, or the resource is in the wrong state",
    413: "The body is too large",
    429: "Too many subscriptions, no capacity left, or too many failed logins",
    503: "A lower SP did not answer",
    504: "A lower SP answered too late",
}


def _schemas() -> dict[str, Any]:
    models: list[type[BaseModel]] = [m.Error]
    for r in ROUTES:
        models.extend(x for x in (r.answer, r.body) if x is not None)
    unique = list(dict.fromkeys(models))
    modes = [(x, "validation" if x in {r.body for r in ROUTES} else "serialization") for x in unique]
    _, top = models_json_schema(modes, by_alias=True, ref_template="#/components/schemas/{model}")  # type: ignore[arg-type]
    return dict(top.get("$defs", {}))


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _operation(r: Route) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": r.operation_id, "summary": r.summary, "tags": [r.tag]}
    if r.params:
        op["parameters"] = [
            {
                "name": p.name,
                "in": p.where,
                "required": p.where == "path",
                "schema": p.schema,
                "description": p.description,
            }
            for p in r.params
        ]
    if r.body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(r.body)}}}
    answers: dict[str, Any] = {}
    if r.answer is None:
        answers[str(r.ok)] = {"description": _REASONS[r.ok]}
    elif r.media == "text/event-stream":
        answers[str(r.ok)] = {
            "description": (
                "First `id: N` alone (the newest event's number, no event), or `event: reset` (data: the reason, "
                "what to read again) when the events after Last-Event-ID are no longer kept; then one message per "
                "event: `event:` its eventType, `id:` its number (its eventId), `data:` the Event (JSON); "
                "`: keep-alive` comments meanwhile. With initial=true, each visible slice's state first, without `id:`"
            ),
            "content": {r.media: {"schema": {"type": "string"}, "x-event": _ref(r.answer)}},
        }
    else:
        schema = {"type": "array", "items": _ref(r.answer)} if r.many else _ref(r.answer)
        headers = {}
        if r.many:
            headers = {
                "X-Result-Count": {"schema": {"type": "integer"}, "description": "How many in this answer"},
            }
        answers[str(r.ok)] = {"description": _REASONS[r.ok], "content": {"application/json": {"schema": schema}}}
        if headers:
            answers[str(r.ok)]["headers"] = headers
    for code in r.errors:
        answers[str(code)] = {"description": _REASONS[code], "content": {"application/json": {"schema": _ref(m.Error)}}}
    op["responses"] = answers
    if r.public:
        op["security"] = []
    return op


def document(sp_id: str, server_url: str = "") -> dict[str, Any]:
    """The OpenAPI 3.1 document of this broker's REST API."""
    paths: dict[str, dict[str, Any]] = {}
    for r in ROUTES:
        paths.setdefault(r.path, {})[r.method.lower()] = _operation(r)
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": f"fedbroker {sp_id}: service ordering, inventory and catalog",
            "version": "1.0.0",
            "description": (
                "TMF641 serviceOrder, TMF638 service and TMF633 serviceSpecification shapes over this SP's "
                "slices. HTTPS with a client certificate; every operation needs a bearer token (a call token "
                "signed with the caller's key, or a session token from the login endpoint) whose subject is "
                "the certificate's name. An order's one item carries the slice request's fields as service "
                "characteristics (src, dst, bandwidth_mbps, ...); the characteristic holdOnly: true asks only "
                "for a hold (the order completes when the slice is HELD), holdTimeS sets the hold time."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
        "security": [{"bearer": []}],
    }
    if server_url:
        doc["servers"] = [{"url": server_url}]
    return doc


__all__ = ["CATALOG", "INVENTORY", "MAX_OFFSET", "ORDERING", "OWN", "ROUTES", "Param", "Route", "document"]

"""The REST API's bodies (TMF641 / TMF638 / TMF633 / hub shapes) as strict pydantic models.

One source of truth: the handlers build every answer through these models (``dump``) and read
every request body through them, and ``broker.api.rest_openapi`` publishes their JSON Schemas, so
what the document says and what the broker sends cannot drift. Requests are strict (types checked,
not coerced; unknown fields refused); answers leave out what is not set.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue

from broker.api.codec import MAX_ID_LEN

_IN = ConfigDict(strict=True, extra="forbid", frozen=True, populate_by_name=True)
_OUT = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
Text = Annotated[str, Field(max_length=1024)]
Id = Annotated[str, Field(min_length=1, max_length=MAX_ID_LEN)]

#: TMF641 v4 order states this broker uses (``broker.core.orders.OrderState``).
OrderStateName = Literal["acknowledged", "inProgress", "completed", "failed", "pendingCancellation", "cancelled"]
#: TMF638 service states, read from the slice's state (``broker.api.rest_tmf.SERVICE_STATE``).
ServiceStateName = Literal["designed", "reserved", "inactive", "active", "terminated"]


class TmfIn(BaseModel):
    """A request body: TMF's polymorphism attributes are taken (and not acted on); anything unknown is refused."""

    model_config = _IN
    type_: Annotated[str, Field(max_length=64)] = Field(default="", alias="@type")
    base_type: Annotated[str, Field(max_length=64)] = Field(default="", alias="@baseType")
    schema_location: Annotated[str, Field(max_length=1024)] = Field(default="", alias="@schemaLocation")


class Error(BaseModel):
    """A TMF error body: ``code`` the broker's error code, ``reason`` the one-line cause, ``field`` what was wrong."""

    model_config = _OUT
    code: str
    reason: str
    message: str = ""
    status: str
    field: str = ""
    type_: str = Field(default="Error", alias="@type")


class Characteristic(BaseModel):
    """A name-value pair describing a service (``value`` any JSON)."""

    model_config = _IN
    name: Annotated[str, Field(min_length=1, max_length=64)]
    value: JsonValue = None
    valueType: Annotated[str, Field(max_length=64)] = ""


class CharacteristicOut(BaseModel):
    """A characteristic as the broker tells it."""

    model_config = _OUT
    name: str
    value: JsonValue = None
    valueType: str = ""


class Ref(BaseModel):
    """A reference to another resource."""

    model_config = _OUT
    id: str
    href: str = ""
    name: str = ""
    type_: str = Field(default="", alias="@referredType")


class ServiceRefOrValue(TmfIn):
    """What an order item asks for: a new service described by characteristics (the slice request's fields),
    or (``delete``) the ``id`` of an existing one."""

    model_config = _IN
    id: Annotated[str, Field(max_length=MAX_ID_LEN)] = ""
    href: Annotated[str, Field(max_length=1024)] = ""
    name: Annotated[str, Field(max_length=MAX_ID_LEN)] = ""
    serviceCharacteristic: Annotated[list[Characteristic], Field(max_length=32)] = []
    serviceSpecification: dict[str, JsonValue] | None = None  # taken as information only


#: TMF641 v4 item actions: ``add`` and ``delete`` are taken, ``modify`` and ``noChange`` refused with what to do.
ItemAction = Literal["add", "modify", "delete", "noChange"]


def _one_item(items: list[Any]) -> list[Any]:
    if len(items) > 1:
        raise ValueError(
            f"has {len(items)} items; an order here carries exactly one (one slice): send one order per service"
        )
    return items


class ServiceOrderItemCreate(TmfIn):
    """The one item of an order: ``add`` a service described by characteristics, or ``delete`` one by id."""

    model_config = _IN
    id: Annotated[str, Field(max_length=64)] = "1"
    action: ItemAction = "add"
    quantity: Annotated[int, Field(ge=1, le=1)] = 1
    service: ServiceRefOrValue


class ServiceOrderCreate(TmfIn):
    """``POST /serviceOrder``: ``externalId`` is the idempotency key; exactly one item."""

    model_config = _IN
    externalId: Id
    description: Text = ""
    category: Annotated[str, Field(max_length=64)] = ""
    priority: Annotated[str, Field(max_length=8)] = ""
    serviceOrderItem: Annotated[
        list[ServiceOrderItemCreate],
        Field(min_length=1, json_schema_extra={"maxItems": 1}),
        AfterValidator(_one_item),
    ]


class ServiceOut(BaseModel):
    """A TMF638 service: a slice (or, under ``supportingService``, one of its per-domain segments)."""

    model_config = _OUT
    id: str
    href: str = ""
    name: str | None = None
    state: ServiceStateName | None = None
    category: str | None = None
    serviceType: str | None = None
    startDate: str | None = None
    serviceDate: str | None = None
    serviceCharacteristic: list[CharacteristicOut] | None = None
    supportingService: list[ServiceOut] | None = None
    serviceSpecification: Ref | None = None
    type_: str = Field(default="Service", alias="@type")


class ServiceOrderItemOut(BaseModel):
    """An order item as the broker tells it, with its service (the slice) as far as it exists."""

    model_config = _OUT
    id: str
    action: str = "add"
    quantity: int = 1
    state: OrderStateName
    service: ServiceOut
    type_: str = Field(default="ServiceOrderItem", alias="@type")


class ErrorMessage(BaseModel):
    """Why an order failed (TMF641 v4.1 ``errorMessage``)."""

    model_config = _OUT
    code: str = ""
    reason: str
    timestamp: str = ""
    type_: str = Field(default="ServiceOrderErrorMessage", alias="@type")


class ServiceOrderOut(BaseModel):
    """A TMF641 service order; with ``fields`` only the named ones (and ``id``, ``href``) are sent."""

    model_config = _OUT
    id: str
    href: str
    externalId: str | None = None
    description: str | None = None
    category: str | None = None
    priority: str | None = None
    state: OrderStateName | None = None
    orderDate: str | None = None
    completionDate: str | None = None
    cancellationDate: str | None = None
    serviceOrderItem: list[ServiceOrderItemOut] | None = None
    errorMessage: list[ErrorMessage] | None = None
    type_: str = Field(default="ServiceOrder", alias="@type")


class OrderRef(BaseModel):
    """The order a cancellation names."""

    model_config = _IN
    id: Id
    href: Annotated[str, Field(max_length=1024)] = ""
    type_: Annotated[str, Field(max_length=64)] = Field(default="", alias="@referredType")


class CancelServiceOrderCreate(TmfIn):
    """``POST /cancelServiceOrder``."""

    model_config = _IN
    serviceOrder: OrderRef
    cancellationReason: Text = ""


class CancelServiceOrderOut(BaseModel):
    """A cancellation: ``done`` once the order's slice is released, ``inProgress`` until then."""

    model_config = _OUT
    id: str
    href: str
    state: Literal["acknowledged", "inProgress", "done", "terminatedWithError"]
    serviceOrder: Ref
    effectiveCancellationDate: str | None = None
    type_: str = Field(default="CancelServiceOrder", alias="@type")


class SpecCharacteristic(BaseModel):
    """A characteristic a service specification takes, with the values this SP offers for it."""

    model_config = _OUT
    name: str
    description: str = ""
    valueType: str = ""
    configurable: bool = True
    minCardinality: int = 0
    serviceSpecCharacteristicValue: list[CharacteristicOut] = []


class ServiceSpecificationOut(BaseModel):
    """A TMF633 service specification: what this SP's published note offers."""

    model_config = _OUT
    id: str
    href: str
    name: str = ""
    description: str = ""
    version: str = ""
    lifecycleStatus: str = "Active"
    lastUpdate: str = ""
    validFor: dict[str, str] = {}
    specCharacteristic: list[SpecCharacteristic] = []
    type_: str = Field(default="ServiceSpecification", alias="@type")


class HubCreate(BaseModel):
    """``POST /hub``: where to send events (a URL on an allowed host), and an optional filter."""

    model_config = _IN
    callback: Annotated[str, Field(min_length=1, max_length=1024)]
    query: Annotated[str, Field(max_length=256)] = ""


class HubOut(BaseModel):
    """An event subscription."""

    model_config = _OUT
    id: str
    callback: str
    query: str = ""


class EventOut(BaseModel):
    """One event, as POSTed to hub callbacks and sent on the SSE stream."""

    model_config = _OUT
    eventId: str
    eventTime: str
    eventType: Literal["ServiceOrderStateChangeEvent", "ServiceStateChangeEvent", "ServiceAlertEvent"]
    event: dict[str, Any]


class PortOut(BaseModel):
    """A border port a note offers, and the SP on its other side."""

    model_config = _OUT
    id: str
    peerSp: str


class NoteOut(BaseModel):
    """A capability note as the web view shows it: who, which version, how old, until when, what it offers."""

    model_config = _OUT
    spId: str
    version: int
    issuedAt: str
    expiresAt: str
    ageS: float
    expiresInS: float
    endpoints: list[str] = []
    ports: list[PortOut] = []
    functions: list[str] = []
    qosClasses: list[str] = []


class RefusedNoteOut(BaseModel):
    """A note from below this SP refused, and why."""

    model_config = _OUT
    spId: str
    version: int
    reason: str
    detail: str = ""
    at: str


class FederationOut(BaseModel):
    """This SP's place in the federation: the note it publishes, the notes it holds from below, those it refused."""

    model_config = _OUT
    spId: str
    own: NoteOut | None = None
    lower: list[NoteOut] = []
    refused: list[RefusedNoteOut] = []


class OfferChange(BaseModel):
    """``PATCH /fedbroker/v1/offer/{domain}``: withdraw the domain's offer, or publish it again."""

    model_config = _IN
    withdrawn: bool


class OfferOut(BaseModel):
    """A local domain's offer: withdrawn or not, and the version of the note it publishes (after a change)."""

    model_config = _OUT
    domain: str
    withdrawn: bool
    noteVersion: int | None = None


class SessionCreate(BaseModel):
    """``POST /fedbroker/v1/login``: a user and their password (the client certificate must be theirs)."""

    model_config = _IN
    user: Annotated[str, Field(min_length=1, max_length=64)]
    password: Annotated[str, Field(max_length=1024)]


class SessionOut(BaseModel):
    """A session token: the bearer token for this user's calls, from their certificate, until ``expires_at``."""

    model_config = _OUT
    token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 - the scheme's name, not a secret
    expires_at: int


def dump(model: BaseModel) -> dict[str, Any]:
    """A model as the JSON the API sends (TMF names, nothing unset)."""
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


__all__ = [
    "CancelServiceOrderCreate",
    "CancelServiceOrderOut",
    "Characteristic",
    "CharacteristicOut",
    "Error",
    "ErrorMessage",
    "EventOut",
    "FederationOut",
    "HubCreate",
    "HubOut",
    "Ref",
    "ServiceOrderCreate",
    "ServiceOrderItemOut",
    "ServiceOrderOut",
    "ServiceOut",
    "ServiceSpecificationOut",
    "SessionCreate",
    "SessionOut",
    "dump",
]

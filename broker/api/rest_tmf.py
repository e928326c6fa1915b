"""REST handlers for TMF641 serviceOrder, TMF638 service and TMF633 serviceSpecification.

Each handler decodes, calls the core function the gRPC servicer calls (``OrderDesk.place`` around
``SliceManager.reserve``, ``terminate``, the store's pages, the catalog's own note) and encodes
through the models of ``broker.api.rest_models``. Tenancy is the servicers': a customer sees only
its own orders and slices, and another's is "does not exist" in the same words as a missing one.

An order's one item carries the slice request's fields as service characteristics, by the names of
a request file (``src``, ``dst``, ``bandwidth_mbps``, ``chain``, ...; ``fedbroker slice request
--help``), read by the same model, so an error names the characteristic as a request file's error
names the field. Two characteristics are the order's own: ``holdOnly`` (boolean) asks only for a
hold, and ``holdTimeS`` (seconds) sets how long it is held.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from aiohttp import web
from google.protobuf import json_format

from broker.api import codec
from broker.api import rest_models as m
from broker.api.request_file import ALLOWED, slice_request_from_data
from broker.api.rest import query_int, read_body, selected
from broker.api.rest_openapi import CATALOG, INVENTORY, MAX_OFFSET, ORDERING
from broker.api.servicers import MAX_PAGE_SIZE, owned_slice, seen_by
from broker.core.catalog import Catalog
from broker.core.lifecycle import SliceManager
from broker.core.monitoring import Alert, Monitor
from broker.core.orders import OrderDesk, OrderState, OrderView
from broker.core.records import SliceRecord
from broker.core.reservation import MAX_HOLD_TIME_S
from broker.core.storage import SliceStore
from broker.descriptors import ConfigError
from broker.security.auth import Principal
from fedbroker.v1 import northsouth_pb2 as pb
from slicing.errors import InvalidArgument, NotFound
from slicing.model import SliceRequest, SliceState

S = SliceState
HOLD_ONLY = "holdOnly"
HOLD_TIME = "holdTimeS"
DEFAULT_LIMIT = 100
#: A slice's state as a TMF638 service state (the exact state is the ``sliceState`` characteristic).
SERVICE_STATE: dict[SliceState, str] = {
    S.RESERVING: "designed",
    S.HELD: "reserved",
    S.COMMITTING: "reserved",
    S.COMMITTED: "inactive",
    S.ACTIVATING: "inactive",
    S.DEACTIVATING: "inactive",
    S.ACTIVE: "active",
    S.TERMINATING: "terminated",
    S.TERMINATED: "terminated",
    S.ABORTING: "terminated",
    S.ABORTED: "terminated",
    S.EXPIRED: "terminated",
    S.FAILED: "terminated",
}
_ITEM = "serviceOrderItem[0].service"
#: What to do instead of an item action this broker does not take.
_INSTEAD = {
    "modify": "a slice is not changed in place here: order the new one (action add), then delete the old one "
    "(action delete)",
    "noChange": "an order here adds or deletes a service: send action add or delete",
}


def iso(t: float) -> str:
    """A Unix time as ISO 8601 UTC."""
    return datetime.datetime.fromtimestamp(t, datetime.UTC).isoformat().replace("+00:00", "Z")


def _char(name: str, value: Any) -> m.CharacteristicOut:
    kind = "array" if isinstance(value, list) else "boolean" if isinstance(value, bool) else ""
    kind = kind or ("number" if isinstance(value, int | float) else "object" if isinstance(value, dict) else "string")
    return m.CharacteristicOut(name=name, value=value, valueType=kind)


def decode_order(body: m.ServiceOrderCreate) -> tuple[SliceRequest, bool, float]:
    """The slice request, hold-only flag and hold time an order's one item (action add) describes."""
    service = body.serviceOrderItem[0].service
    if service.id or service.href:
        raise InvalidArgument(
            f"{_ITEM}.id", "an add item describes a new service by its characteristics: leave out id and href"
        )
    path = f"{_ITEM}.serviceCharacteristic"
    data: dict[str, Any] = {}
    for i, c in enumerate(service.serviceCharacteristic):
        if c.name in data:
            raise InvalidArgument(f"{path}[{i}].name", f"'{c.name}' is given twice")
        data[c.name] = c.value
    hold_only = data.pop(HOLD_ONLY, False)
    if not isinstance(hold_only, bool):
        raise InvalidArgument(f"{path}.{HOLD_ONLY}", "must be true or false")
    hold_time = data.pop(HOLD_TIME, 0.0)
    if isinstance(hold_time, bool) or not isinstance(hold_time, int | float) or not 0 <= hold_time <= MAX_HOLD_TIME_S:
        raise InvalidArgument(
            f"{path}.{HOLD_TIME}", f"must be seconds from 0 (the SP's default) to {MAX_HOLD_TIME_S:g}"
        )
    if service.name and "name" not in data:
        data["name"] = service.name
    try:
        msg = slice_request_from_data(data, path)
    except ConfigError as exc:
        where, _, why = str(exc).partition("\n")[0].partition(": ")
        raise InvalidArgument(where, why) from None
    return codec.request_from_pb(msg, path), hold_only, float(hold_time)


def request_characteristics(req: pb.SliceRequest) -> list[m.CharacteristicOut]:
    """A slice request as characteristics, in the form an order takes them (what is set only)."""
    data: dict[str, Any] = json_format.MessageToDict(req, preserving_proto_field_name=True)
    throughputs = data.pop("chain_throughput_mbps", [])
    if throughputs:
        data["chain"] = [
            {"type": fn, "throughput_mbps": int(throughputs[i])} if i < len(throughputs) else fn
            for i, fn in enumerate(data.get("chain", []))
        ]
    for key in ("bandwidth_mbps", "reverse_bandwidth_mbps"):  # uint64 comes out of protobuf JSON as text
        if key in data:
            data[key] = int(data[key])
    data["port_constraints"] = [
        {
            "port": c.port,
            "labels": [f"{r.first}-{r.last}" if r.first != r.last else str(r.first) for r in c.labels],
            **({"preferred": c.preferred} if c.preferred else {}),
        }
        for c in req.port_constraints
    ]
    data.pop("trace", None)
    return [_char(k, v) for k, v in data.items() if v not in ([], "")]


def _segment_service(seg: Mapping[str, Any], sp_id: str, depth: int = 0) -> m.ServiceOut:
    state = SliceState(str(seg.get("state", "SLICE_STATE_RESERVING")).removeprefix("SLICE_STATE_"))
    chars = [
        _char("domain", seg.get("domain", "")),
        _char("spId", seg.get("spId", sp_id)),
        _char("local", bool(seg.get("local", False))),
        _char("sliceState", state.value),
        _char("ingress", seg.get("ingress", "")),
        _char("egress", seg.get("egress", "")),
    ]
    chars += [_char(k, seg[k]) for k in ("subnet", "functions", "labels", "latencyShareMs") if seg.get(k)]
    children = [_segment_service(c, sp_id, depth + 1) for c in seg.get("children", [])] if depth < 8 else []
    return m.ServiceOut(
        id=str(seg.get("childRef") or seg.get("domain", "")),
        name=str(seg.get("domain", "")),
        state=SERVICE_STATE[state],  # type: ignore[arg-type]
        category="segment",
        serviceCharacteristic=chars,
        supportingService=children or None,
    )


def alert_json(a: Alert) -> dict[str, Any]:
    """An SLA alert as the REST API tells it (in a service's ``alerts`` and in a ServiceAlertEvent)."""
    return {
        "metric": str(a.metric),
        "value": a.value,
        "threshold": a.threshold,
        "severity": str(a.severity),
        "status": str(a.status),
        "sourceSp": a.source_sp,
        "cause": a.cause,
    }


def alerts_seen(monitor: Monitor | None, rec: SliceRecord, principal: Principal, sp_id: str) -> list[Alert] | None:
    """The slice's firing alerts as ``principal`` may see them (a peer SP reads this SP as the source), or
    None when this broker does not monitor."""
    if monitor is None:
        return None
    return [seen_by(a, principal, sp_id) for a in monitor.open_alerts(rec.id)]


def service_of(rec: SliceRecord, sp_id: str, alerts: Sequence[Alert] | None = None) -> m.ServiceOut:
    """A slice as a TMF638 service, its per-domain segments (nested as far as lower SPs tell) supporting it,
    and (``alerts`` given) its health and firing alerts."""
    msg = codec.slice_to_pb(rec, sp_id)
    chars = [_char("sliceState", rec.state.value), _char("spId", sp_id), _char("requestId", rec.request_id)]
    chars += request_characteristics(msg.request)
    if rec.reason:
        chars.append(_char("reason", rec.reason))
    if rec.addresses:
        chars.append(_char("addresses", dict(sorted(rec.addresses.items()))))
    if rec.hold_expires_at and rec.state is S.HELD:
        chars.append(_char("holdExpiresAt", iso(rec.hold_expires_at)))
    if alerts is not None:
        chars.append(_char("health", "degraded" if alerts else "healthy"))
        chars.append(_char("alerts", [alert_json(a) for a in alerts]))
    segments = [_segment_service(json_format.MessageToDict(s), sp_id) for s in msg.segments]
    return m.ServiceOut(
        id=rec.id,
        href=f"{INVENTORY}/service/{rec.id}",
        name=rec.request.name or rec.id,
        state=SERVICE_STATE[rec.state],  # type: ignore[arg-type]
        category="network-slice",
        serviceType="fedbroker.slice",
        startDate=iso(rec.created_at),
        serviceDate=iso(rec.updated_at),
        serviceCharacteristic=chars,
        supportingService=segments,
        serviceSpecification=m.Ref(id=spec_id(sp_id), href=f"{CATALOG}/serviceSpecification/{spec_id(sp_id)}"),
    )


def order_of(view: OrderView, sp_id: str) -> m.ServiceOrderOut:
    """An order as TMF641 tells it, its one item the slice."""
    o, rec = view.order, view.slice
    service = service_of(rec, sp_id) if rec is not None else m.ServiceOut(id="", name="")
    done = o.completed_at or (rec.updated_at if rec is not None and view.state is OrderState.COMPLETED else 0.0)
    ended = view.state in (OrderState.FAILED, OrderState.CANCELLED) and rec is not None
    return m.ServiceOrderOut(
        id=o.id,
        href=f"{ORDERING}/serviceOrder/{o.id}",
        externalId=o.request_id,
        description=o.description or None,
        category="network-slice",
        state=view.state.value,
        orderDate=iso(o.created_at),
        completionDate=iso(done) if done else (iso(rec.updated_at) if ended and rec is not None else None),
        cancellationDate=iso(o.cancelled_at) if o.cancelled_at else None,
        serviceOrderItem=[
            m.ServiceOrderItemOut(
                id="1", action="delete" if o.delete_slice else "add", state=view.state.value, service=service
            )
        ],
        errorMessage=(
            [m.ErrorMessage(code=rec.error_code if rec else "", reason=view.reason, timestamp=iso(rec.updated_at))]
            if view.state is OrderState.FAILED and rec is not None
            else None
        ),
    )


def cancel_of(view: OrderView) -> m.CancelServiceOrderOut:
    """The cancellation of an order (its id is the order's)."""
    o = view.order
    state: Literal["done", "inProgress"] = "done" if view.state is OrderState.CANCELLED else "inProgress"
    return m.CancelServiceOrderOut(
        id=o.id,
        href=f"{ORDERING}/cancelServiceOrder/{o.id}",
        state=state,
        serviceOrder=m.Ref(id=o.id, href=f"{ORDERING}/serviceOrder/{o.id}", **{"@referredType": "ServiceOrder"}),
        effectiveCancellationDate=iso(view.slice.updated_at) if state == "done" and view.slice else None,
    )


def spec_id(sp_id: str) -> str:
    """The id of the one service specification an SP publishes: its slice offer."""
    return f"{sp_id}.slice"


def _spec_chars(note: Any) -> list[m.SpecCharacteristic]:
    values: dict[str, Iterable[Any]] = {
        "src": sorted(note.terminals()),
        "dst": sorted(note.terminals()),
        "chain": sorted({f.type for f in note.functions if f.slots > 0}),
        "qos_class": [q.name for q in note.qos_classes],
        "isolation": [str(i) for i in note.isolation],
    }
    out = [
        m.SpecCharacteristic(
            name=name,
            description=ALLOWED[name],
            minCardinality=1 if name in ("src", "dst", "bandwidth_mbps") else 0,
            serviceSpecCharacteristicValue=[_char(name, v) for v in values.get(name, ())],
        )
        for name in ALLOWED
    ]
    out.append(m.SpecCharacteristic(name=HOLD_ONLY, description="true: only hold the slice", valueType="boolean"))
    out.append(m.SpecCharacteristic(name=HOLD_TIME, description="seconds the slice is held", valueType="number"))
    return out


class TmfApi:
    """The order, service and specification handlers of one broker."""

    def __init__(
        self,
        sp_id: str,
        manager: SliceManager,
        orders: OrderDesk,
        store: SliceStore,
        catalog: Catalog,
        monitor: Monitor | None = None,
    ) -> None:
        self._sp = sp_id
        self._m = manager
        self._orders = orders
        self._store = store
        self._catalog = catalog
        self._monitor = monitor  # a slice's health and alerts (None: this broker does not monitor)

    def _service(self, rec: SliceRecord, principal: Principal) -> m.ServiceOut:
        return service_of(rec, self._sp, alerts_seen(self._monitor, rec, principal, self._sp))

    @staticmethod
    def _requester(principal: Principal) -> str | None:
        return None if principal.sees_all else principal.id

    # --- serviceOrder ---------------------------------------------------------------------------

    async def create_order(self, request: web.Request, principal: Principal) -> web.StreamResponse:
        """``POST /serviceOrder``: its one item adds a slice, or (action delete) terminates one."""
        body: m.ServiceOrderCreate = await read_body(request, m.ServiceOrderCreate)
        request["target"] = body.externalId
        codec.check_id(body.externalId, "externalId")
        item = body.serviceOrderItem[0]
        if item.action in _INSTEAD:
            raise InvalidArgument("serviceOrderItem[0].action", f"{item.action} is not taken: {_INSTEAD[item.action]}")
        if item.action == "delete":
            view = await self._delete(body, principal)
        else:
            req, hold_only, hold_time = decode_order(body)
            view = await self._orders.place(
                principal.id,
                body.externalId,
                req,
                hold_only=hold_only,
                hold_time_s=hold_time,
                description=body.description,
            )
        request["outcome"] = f"order {view.order.id} {view.state}"
        return web.json_response(m.dump(order_of(view, self._sp)), status=201)

    async def _delete(self, body: m.ServiceOrderCreate, principal: Principal) -> OrderView:
        service = body.serviceOrderItem[0].service
        if not service.id:
            raise InvalidArgument(f"{_ITEM}.id", "a delete item names the service to terminate: its id (GET /service)")
        if service.serviceCharacteristic:
            raise InvalidArgument(
                f"{_ITEM}.serviceCharacteristic", "a delete item names only the service's id; leave these out"
            )
        target = owned_slice(self._m, principal, pb.SliceRef(slice_id=service.id))
        return await self._orders.delete(principal.id, body.externalId, target, description=body.description)

    async def list_orders(self, request: web.Request, principal: Principal) -> web.StreamResponse:
        """``GET /serviceOrder``."""
        state = request.query.get("state")
        try:
            states = [OrderState(state)] if state is not None else []
        except ValueError:
            raise InvalidArgument("state", f"one of {', '.join(OrderState)}, got {str(state)[:30]!r}") from None
        external = request.query.get("externalId")
        if external is not None:
            codec.check_id(external, "externalId")
        views = self._orders.page(
            self._requester(principal),
            states=states,
            external_id=external or "",
            offset=query_int(request, "offset", 0, 0, MAX_OFFSET),
            limit=query_int(request, "limit", DEFAULT_LIMIT, 1, MAX_PAGE_SIZE),
        )
        fields = request.query.get("fields", "")
        out = [selected(m.dump(order_of(v, self._sp)), fields) for v in views]
        return web.json_response(out, headers={"X-Result-Count": str(len(out))})

    def _order(self, request: web.Request, principal: Principal) -> OrderView:
        order_id = request.match_info["id"]
        codec.check_id(order_id, "id")
        return self._orders.get(order_id, self._requester(principal))

    async def get_order(self, request: web.Request, principal: Principal) -> web.StreamResponse:
        """``GET /serviceOrder/{id}``."""
        body = m.dump(order_of(self._order(request, principal), self._sp))
        return web.json_response(selected(body, request.query.get("fields", "")))

    async def create_cancel(self, request: web.Request, principal: Principal) -> web.StreamResponse:
        """``POST /cancelServiceOrder``."""
        body: m.CancelServiceOrderCreate = await read_body(request, m.CancelServiceOrderCreate)
        request["target"] = body.serviceOrder.id
        codec.check_id(body.serviceOrder.id, "serviceOrder.id")
        view = await self._orders.cancel(body.serviceOrder.id, self._requester(principal))
        request["outcome"] = f"order {view.order.id} {view.state}"
        return web.json_response(m.dump(cancel_of(view)), status=201)

    async def list_cancels(self, request: web.Request, principal: Principal) -> web.StreamResponse:
        """``GET /cancelServiceOrder``: the cancellations of the caller's orders, newest first."""
        views = self._orders.page(
            self._requester(principal),
            states=(OrderState.PENDING_CANCELLATION, OrderState.CANCELLED),
            offset=query_int(request, "offset", 0, 0, MAX_OFFSET),
            limit=query_int(request, "limit", DEFAULT_LIMIT, 1, MAX_PAGE_SIZE),
        )
        out = [m.dump(cancel_of(v)) for v in views]
        return web.json_response(out, headers={"X-Result-Count": str(len(out))})

    async def get_cancel(self, request: web.Request, principal: Principal) -> web.StreamResponse:
        """``GET /cancelServiceOrder/{id}``: only an order that was cancelled has one."""
        view = self._order(request, principal)
        if not view.order.cancelled_at:
            raise NotFound(f"cancelServiceOrder '{view.order.id}' does not exist")
        return web.json_response(m.dump(cancel_of(view)))

    # --- service --------------------------------------------------------------------------------

    async def list_services(self, request: web.Request, principal: Principal) -> web.StreamResponse:
        """``GET /service``."""
        state = request.query.get("state")
        if state is not None and state not in SERVICE_STATE.values():
            known = ", ".join(sorted(set(SERVICE_STATE.values())))
            raise InvalidArgument("state", f"one of {known}, got {state[:30]!r}")
        states = [s for s, name in SERVICE_STATE.items() if name == state]
        offset = query_int(request, "offset", 0, 0, MAX_OFFSET)
        limit = query_int(request, "limit", DEFAULT_LIMIT, 1, MAX_PAGE_SIZE)
        recs = self._store.page(states, requester=self._requester(principal), limit=offset + limit)[offset:]
        fields = request.query.get("fields", "")
        out = [selected(m.dump(self._service(r, principal)), fields) for r in recs]
        return web.json_response(out, headers={"X-Result-Count": str(len(out))})

    def _slice(self, request: web.Request, principal: Principal) -> SliceRecord:
        return owned_slice(self._m, principal, pb.SliceRef(slice_id=request.match_info["id"]))

    async def get_service(self, request: web.Request, principal: Principal) -> web.StreamResponse:
        """``GET /service/{id}``."""
        body = m.dump(self._service(self._slice(request, principal), principal))
        return web.json_response(selected(body, request.query.get("fields", "")))

    async def delete_service(self, request: web.Request, principal: Principal) -> web.StreamResponse:
        """``DELETE /service/{id}``: gRPC's Terminate."""
        rec = await self._m.terminate(self._slice(request, principal).id)
        request["outcome"] = f"slice {rec.id} {rec.state}"
        return web.Response(status=204)

    # --- serviceSpecification -------------------------------------------------------------------

    def _specs(self) -> list[m.ServiceSpecificationOut]:
        note = self._catalog.own
        if note is None:
            return []
        sid = spec_id(self._sp)
        return [
            m.ServiceSpecificationOut(
                id=sid,
                href=f"{CATALOG}/serviceSpecification/{sid}",
                name=f"{self._sp} network slice",
                description=(
                    f"A network slice between the terminals {self._sp} offers, as its capability note "
                    f"version {note.version} tells; order it with these characteristics"
                ),
                version=str(note.version),
                lastUpdate=iso(note.issued_at),
                validFor={"startDateTime": iso(note.issued_at), "endDateTime": iso(note.expires_at)},
                specCharacteristic=_spec_chars(note),
            )
        ]

    async def list_specs(self, request: web.Request, principal: Principal) -> web.StreamResponse:
        """``GET /serviceSpecification``."""
        offset = query_int(request, "offset", 0, 0, MAX_OFFSET)
        limit = query_int(request, "limit", DEFAULT_LIMIT, 1, MAX_PAGE_SIZE)
        fields = request.query.get("fields", "")
        out = [selected(m.dump(s), fields) for s in self._specs()[offset : offset + limit]]
        return web.json_response(out, headers={"X-Result-Count": str(len(out))})

    async def get_spec(self, request: web.Request, principal: Principal) -> web.StreamResponse:
        """``GET /serviceSpecification/{id}``."""
        wanted = request.match_info["id"]
        for spec in self._specs():
            if spec.id == wanted:
                return web.json_response(selected(m.dump(spec), request.query.get("fields", "")))
        raise NotFound(f"serviceSpecification '{wanted[:200]}' does not exist")


__all__ = [
    "HOLD_ONLY",
    "HOLD_TIME",
    "SERVICE_STATE",
    "TmfApi",
    "alert_json",
    "alerts_seen",
    "decode_order",
    "order_of",
    "service_of",
]

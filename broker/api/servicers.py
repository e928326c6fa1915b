"""Thin gRPC servicers: authenticate, decode, call one core function, encode. Nothing else lives here.

Every method first asks the ``Gate`` who is calling (mutual TLS peer, token, role; see
``broker/security/auth.py``). Tenancy holds here too: a slice belongs to the account that reserved it, and
anyone else but the SP's operators is told it does not exist (``NOT_FOUND``, the same words as for
a slice that never existed), so nothing about other tenants leaks. State-changing calls are
written to the audit log with their outcome, refusals included.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TypeVar

import grpc

from broker.api import codec, handlers
from broker.api.status import status_trailer, to_grpc
from broker.core.catalog import Catalog
from broker.core.events import until_set
from broker.core.lifecycle import SliceManager
from broker.core.log_fields import log_fields
from broker.core.monitoring import Alert, Mode
from broker.core.offers import OfferDesk
from broker.core.records import SliceRecord
from broker.core.storage import SliceStore
from broker.core.watchdog import Watchdog
from broker.security.accounts import Role
from broker.security.audit import AuditLog
from broker.security.auth import Guard, Principal, tls_peer
from domain_agents.base import NotActivated
from domain_agents.emulated import EmulatedDomainAgent
from domain_agents.emulated_books import Condition
from fedbroker.v1 import northsouth_pb2 as pb
from fedbroker.v1 import northsouth_pb2_grpc as pb_grpc
from slicing.errors import FedError, InvalidArgument, NotFound

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_STATES = 16
#: The most slices in one List answer, and the default.
MAX_PAGE_SIZE = 500
#: A List answer stops before it passes this many bytes (the send limit is 4 MiB).
MAX_PAGE_BYTES = 2 * 1024 * 1024


#: The north–south services, by full name (for reflection).
SERVICE_NAMES = (
    pb.DESCRIPTOR.services_by_name["Slices"].full_name,
    pb.DESCRIPTOR.services_by_name["Capabilities"].full_name,
    pb.DESCRIPTOR.services_by_name["Monitoring"].full_name,
)


class Gate:
    """Authentication, error mapping and auditing around one servicer call."""

    def __init__(self, guard: Guard, audit: AuditLog, observe: Callable[[str, str, float], None] | None = None) -> None:
        self.guard = guard
        self.audit = audit
        self._observe = observe  # /metrics: (method, code, seconds) per answered call
        self._closing = asyncio.Event()

    def close_streams(self) -> None:
        """End every stream (Watch, SubscribeNotes) now, at shutdown.

        Streams never end on their own; left open, the server's grace time (meant for operations
        in flight) would be spent waiting for them. Their clients reconnect to the next broker.
        """
        self._closing.set()

    def streamed(self, source: AsyncIterator[T]) -> AsyncIterator[T]:
        """The items of ``source`` until it ends or ``close_streams`` is called."""
        return until_set(source, self._closing)

    async def answer(
        self,
        context: grpc.aio.ServicerContext,
        rpc: str,
        call: Callable[[Principal], Awaitable[T]],
        *,
        target: str = "",
        audited: bool = False,
        outcome: Callable[[T], str] = lambda _: "",
        slice_id: str = "",
        request_id: str = "",
    ) -> T:
        """Run ``call`` as the authenticated caller; a ``FedError`` becomes its gRPC status.

        What is logged meanwhile carries ``slice_id``, ``request_id`` and the caller as fields.
        """
        principal: Principal | None = None
        started = time.perf_counter()
        try:
            principal = self.guard.check(context, rpc)
            with log_fields(slice_id=slice_id[:200], request_id=request_id[:200], caller=principal.id):
                result = await call(principal)
        except FedError as exc:
            if self._observe is not None:
                self._observe(rpc, exc.code.value, time.perf_counter() - started)
            if audited:
                self.audit.record(rpc, principal, target, exc.code.value, str(exc), peer=tls_peer(context))
            # The status message is the one-line reason; the trailer carries the explanation tree.
            await context.abort(to_grpc(exc.code), str(exc), trailing_metadata=status_trailer(exc))
            raise AssertionError("unreachable") from exc  # context.abort raises
        except Exception as exc:  # a bug: still on the record, then gRPC answers UNKNOWN
            if self._observe is not None:
                self._observe(rpc, "UNKNOWN", time.perf_counter() - started)
            if audited:
                self.audit.record(rpc, principal, target, "INTERNAL", repr(exc), peer=tls_peer(context))
            raise
        if self._observe is not None:
            self._observe(rpc, "OK", time.perf_counter() - started)
        if audited:
            self.audit.record(rpc, principal, target, "OK", outcome(result))
        return result


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    """The caller's deadline on the broker's clock (``time.time``), or None when it set none."""
    left = context.time_remaining()
    return None if left is None else time.time() + left


def _no_such_slice(slice_id: str, request_id: str) -> NotFound:
    # Word for word what the core says about a slice that does not exist.
    if slice_id:
        return NotFound(f"slice '{slice_id}' does not exist")
    return NotFound(f"no slice was reserved with request_id '{request_id}'")


def _slice_outcome(msg: pb.Slice) -> str:
    if not msg.id and msg.HasField("plan"):  # a dry run holds nothing: say what it planned
        return f"dry run: plan over {' → '.join(s.domain for s in msg.plan.segments) or 'no segment'}"
    return f"slice {msg.id} {pb.SliceState.Name(msg.state).removeprefix('SLICE_STATE_')}"


def _reserve_target(request: pb.ReserveRequest) -> str:
    """What the audit line of a Reserve names: its request id, else what was asked."""
    if request.request_id:
        return request.request_id[:200]
    asked = f"{request.request.src[:80]} → {request.request.dst[:80]}"
    return f"dry run {asked}" if request.dry_run else f"no request_id, {asked}"


def owned_slice(manager: SliceManager, principal: Principal, ref: pb.SliceRef) -> SliceRecord:
    """The slice ``ref`` names, if ``principal`` may see it; another requester's slice is "not found",
    in the same words as a missing one (the one tenancy check of every servicer)."""
    codec.check_ref(ref)
    rec = manager.find(principal.id, ref.slice_id, ref.request_id)
    if not principal.owns(rec.requester):
        raise _no_such_slice(ref.slice_id, ref.request_id)
    return rec


class SlicesServicer(pb_grpc.SlicesServicer):
    """``fedbroker.v1.Slices``."""

    def __init__(
        self,
        manager: SliceManager,
        gate: Gate,
        store: SliceStore,
        explain: Callable[[FedError, str, str], FedError] = lambda exc, _src, _dst: exc,
        watchdog: Watchdog | None = None,
    ) -> None:
        self._m = manager
        self._gate = gate
        self._store = store  # read-only here: List pages straight from the store
        self._explain = explain  # a refused plan said better where the catalog knows more
        self._watchdog = watchdog

    def _encode(self, rec: SliceRecord) -> pb.Slice:
        msg = codec.slice_to_pb(rec, self._m.sp_id)
        if self._watchdog is not None:
            mon = self._watchdog.monitor
            msg.health = codec.health_to_pb(mon.health(rec.id))  # type: ignore[assignment]
            msg.alerts.extend(codec.alert_to_pb(a) for a in mon.open_alerts(rec.id))
        return msg

    def _owned(self, principal: Principal, ref: pb.SliceRef) -> SliceRecord:
        return owned_slice(self._m, principal, ref)

    async def Reserve(self, request: pb.ReserveRequest, context: grpc.aio.ServicerContext) -> pb.Slice:
        """Hold a slice."""

        async def call(principal: Principal) -> pb.Slice:
            codec.check_id(request.request_id, "request_id", required=not request.dry_run)
            req = codec.request_from_pb(request.request)
            then = codec.then_from_pb(request.then)
            try:
                if request.dry_run:
                    plan = self._m.dry_run(req)
                    return pb.Slice(sp_id=self._m.sp_id, request=codec.request_to_pb(req), plan=codec.plan_to_pb(plan))
                rec = await self._m.reserve(
                    principal.id,
                    request.request_id,
                    req,
                    float(request.hold_time_s),
                    deadline=_deadline(context),
                    then=then,
                )
            except FedError as exc:
                raise self._explain(exc, req.src, req.dst) from None
            return self._encode(rec)

        return await self._gate.answer(
            context,
            "Reserve",
            call,
            target=_reserve_target(request),
            audited=True,
            outcome=_slice_outcome,
            request_id=request.request_id,
        )

    async def _by_ref(
        self,
        rpc: str,
        ref: pb.SliceRef,
        context: grpc.aio.ServicerContext,
        op: Callable[[str], Awaitable[SliceRecord]] | None,
    ) -> pb.Slice:
        async def call(principal: Principal) -> pb.Slice:
            rec = self._owned(principal, ref)
            return self._encode(await op(rec.id) if op else rec)

        target = (ref.slice_id or ref.request_id)[:200]
        return await self._gate.answer(
            context,
            rpc,
            call,
            target=target,
            audited=op is not None,
            outcome=_slice_outcome,
            slice_id=ref.slice_id,
            request_id=ref.request_id,
        )

    async def Commit(self, request: pb.SliceRef, context: grpc.aio.ServicerContext) -> pb.Slice:
        """Commit a held slice."""
        return await self._by_ref("Commit", request, context, self._m.commit)

    async def Abort(self, request: pb.SliceRef, context: grpc.aio.ServicerContext) -> pb.Slice:
        """Release a held slice."""
        return await self._by_ref("Abort", request, context, self._m.abort)

    async def Activate(self, request: pb.SliceRef, context: grpc.aio.ServicerContext) -> pb.Slice:
        """Bring a committed slice into service."""
        return await self._by_ref("Activate", request, context, self._m.activate)

    async def Deactivate(self, request: pb.SliceRef, context: grpc.aio.ServicerContext) -> pb.Slice:
        """Take an active slice out of service and keep its reservation (COMMITTED again)."""
        return await self._by_ref("Deactivate", request, context, self._m.deactivate)

    async def CommitAndActivate(
        self, request: pb.SliceRef, context: grpc.aio.ServicerContext
    ) -> pb.CommitAndActivateResponse:
        """Commit a held slice and activate it: the commit's failure is the call's error, the activation's
        is in the answer (``activation_error``)."""

        async def call(principal: Principal) -> pb.CommitAndActivateResponse:
            rec = self._owned(principal, request)
            try:
                rec = await self._m.commit_and_activate(rec.id)
            except NotActivated as exc:
                reply = pb.CommitAndActivateResponse(slice=self._encode(self._m.get(rec.id)))
                reply.activation_error.CopyFrom(codec.error_to_detail(exc.error))
                return reply
            return pb.CommitAndActivateResponse(slice=self._encode(rec))

        def outcome(reply: pb.CommitAndActivateResponse) -> str:
            said = _slice_outcome(reply.slice)
            if reply.HasField("activation_error"):
                said += f", not activated: {reply.activation_error.code}"
            return said

        return await self._gate.answer(
            context,
            "CommitAndActivate",
            call,
            target=(request.slice_id or request.request_id)[:200],
            audited=True,
            outcome=outcome,
            slice_id=request.slice_id,
            request_id=request.request_id,
        )

    async def Terminate(self, request: pb.SliceRef, context: grpc.aio.ServicerContext) -> pb.Slice:
        """Release a slice everywhere, whatever its state; by request id also one whose Reserve never arrived."""

        async def call(principal: Principal) -> pb.Slice:
            codec.check_ref(request)
            if request.request_id and not request.slice_id:
                # An upper SP releasing an order it got no answer for: the Reserve may still be on its way.
                return self._encode(await self._m.cancel_request(principal.id, request.request_id))
            rec = self._owned(principal, request)
            return self._encode(await self._m.terminate(rec.id))

        target = (request.slice_id or request.request_id)[:200]
        return await self._gate.answer(
            context,
            "Terminate",
            call,
            target=target,
            audited=True,
            outcome=_slice_outcome,
            slice_id=request.slice_id,
            request_id=request.request_id,
        )

    async def Get(self, request: pb.SliceRef, context: grpc.aio.ServicerContext) -> pb.Slice:
        """Read a slice with its per-domain segments."""
        return await self._by_ref("Get", request, context, None)

    async def List(self, request: pb.ListRequest, context: grpc.aio.ServicerContext) -> pb.ListResponse:
        """List the caller's slices (an operator: all), optionally by state, a page at a time."""

        async def call(principal: Principal) -> pb.ListResponse:
            if len(request.states) > MAX_STATES:
                raise InvalidArgument("states", f"more than {MAX_STATES} states")
            states = [codec.state_from_pb(s, "states") for s in request.states]
            if request.page_size > MAX_PAGE_SIZE:
                raise InvalidArgument("page_size", f"at most {MAX_PAGE_SIZE} (0 for the default, {MAX_PAGE_SIZE})")
            size = request.page_size or MAX_PAGE_SIZE
            after = codec.page_token_from_text(request.page_token, "page_token")
            requester = None if principal.sees_all else principal.id
            # One more than asked, to know whether another page follows.
            recs = self._store.page(states, requester=requester, after=after, limit=size + 1)
            page: list[tuple[SliceRecord, pb.Slice]] = []
            total = 0
            for rec in recs[:size]:
                msg = self._encode(rec)
                total += msg.ByteSize()
                if page and total > MAX_PAGE_BYTES:  # the rest on the next page, so a page always fits
                    break
                page.append((rec, msg))
            reply = pb.ListResponse(slices=[msg for _, msg in page])
            if len(recs) > len(page):
                last = page[-1][0]
                reply.next_page_token = codec.page_token_to_text((last.created_at, last.id))
            return reply

        return await self._gate.answer(context, "List", call)

    async def Watch(
        self,
        request: pb.WatchRequest,
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.SliceEvent]:
        """Stream state changes of the caller's slices."""
        try:
            principal = self._gate.guard.check(context, "Watch")
            if request.slice_id:
                self._owned(principal, pb.SliceRef(slice_id=request.slice_id))
            if len(request.states) > MAX_STATES:
                raise InvalidArgument("states", f"more than {MAX_STATES} states")
            states = [codec.state_from_pb(s, "states") for s in request.states] or None
            # Headers now, not with the first event: a watcher's wait_for_connection (a lower SP's
            # upper, after a reconnect) returns at once, though nothing may happen for hours.
            await context.send_initial_metadata(())
            async for ev in self._gate.streamed(self._m.watch(request.slice_id, request.initial, states)):
                if not principal.sees_all and self._m.get(ev.slice_id).requester != principal.id:
                    continue
                msg = pb.SliceEvent(
                    slice_id=ev.slice_id,
                    state=codec.state_to_pb(ev.state),  # type: ignore[arg-type]
                    at=codec.ts(ev.at),
                    detail=ev.detail,
                )
                if ev.alert is not None:
                    msg.alert.CopyFrom(codec.alert_to_pb(seen_by(ev.alert, principal, self._m.sp_id)))
                yield msg
        except FedError as exc:
            await context.abort(to_grpc(exc.code), str(exc))

    async def GetUsage(self, request: pb.GetUsageRequest, context: grpc.aio.ServicerContext) -> pb.Usage:
        """What this broker holds now (operators only)."""

        async def call(principal: Principal) -> pb.Usage:
            u = self._m.usage()
            return pb.Usage(
                sp_id=self._m.sp_id,
                holding_slices=u.holding_slices,
                domains=[
                    pb.DomainUsage(
                        domain=d.domain,
                        bandwidth_mbps=d.bandwidth_mbps,
                        labels=d.labels,
                        function_slots=d.function_slots,
                        addresses=d.addresses,
                    )
                    for d in u.domains
                ],
                wim_services=u.wim.services,
                wim_labels=u.wim.labels,
                wim_bandwidth_mbps=u.wim.bandwidth_mbps,
            )

        return await self._gate.answer(context, "GetUsage", call)


def seen_by(alert: Alert, principal: Principal, sp_id: str) -> Alert:
    """An alert as the caller may see it: an upper SP reads this SP as its source, never the SPs below it."""
    return alert.seen_from_above(sp_id) if principal.role is Role.PEER_SP else alert


class MonitoringServicer(pb_grpc.MonitoringServicer):
    """``fedbroker.v1.Monitoring``: a slice's alerts and rules, the operator's lab conditions and mode."""

    def __init__(
        self, manager: SliceManager, watchdog: Watchdog, labs: Mapping[str, EmulatedDomainAgent], gate: Gate
    ) -> None:
        self._m = manager
        self._w = watchdog
        self._labs = labs
        self._gate = gate

    def _owned(self, principal: Principal, ref: pb.SliceRef) -> SliceRecord:
        return owned_slice(self._m, principal, ref)

    async def ListAlerts(self, request: pb.SliceRef, context: grpc.aio.ServicerContext) -> pb.ListAlertsResponse:
        """The slice's open and recently resolved alerts, and its user rules."""

        async def call(principal: Principal) -> pb.ListAlertsResponse:
            rec = self._owned(principal, request)
            mon = self._w.monitor
            return pb.ListAlertsResponse(
                open=[codec.alert_to_pb(seen_by(a, principal, self._m.sp_id)) for a in mon.open_alerts(rec.id)],
                recent=[codec.alert_to_pb(seen_by(a, principal, self._m.sp_id)) for a in mon.recent_alerts(rec.id)],
                rules=[codec.rule_to_pb(r) for r in mon.rules(rec.id)],
            )

        return await self._gate.answer(context, "ListAlerts", call, slice_id=request.slice_id)

    async def AddRule(self, request: pb.AddRuleRequest, context: grpc.aio.ServicerContext) -> pb.AlertRule:
        """Add (or replace, by name) a user rule on one of the caller's active slices."""

        async def call(principal: Principal) -> pb.AlertRule:
            rec = self._owned(principal, pb.SliceRef(slice_id=request.slice_id))
            rule = codec.rule_from_pb(request.rule)
            await self._w.add_rule(rec, rule)  # here, and pushed down to every lower SP on the path
            return codec.rule_to_pb(rule)

        return await self._gate.answer(
            context, "AddRule", call, target=request.slice_id[:200], audited=True, slice_id=request.slice_id
        )

    async def SetCondition(
        self, request: pb.ConditionRequest, context: grpc.aio.ServicerContext
    ) -> pb.ConditionResponse:
        """Degrade, cut or restore a link or pop of an emulated domain (a lab's fault injection)."""

        async def call(principal: Principal) -> pb.ConditionResponse:
            codec.check_id(request.domain, "domain")
            lab = self._labs.get(request.domain)
            if lab is None:
                raise InvalidArgument("domain", f"'{request.domain[:64]}' is not an emulated or netns domain here")
            cond = None if request.restore else Condition(request.added_latency_ms, request.loss, request.down)
            return pb.ConditionResponse(segments=lab.set_condition(request.target[:200], cond))

        return await self._gate.answer(
            context, "SetCondition", call, target=f"{request.domain[:64]}:{request.target[:64]}", audited=True
        )

    async def SetMode(
        self, request: pb.MonitoringModeRequest, context: grpc.aio.ServicerContext
    ) -> pb.MonitoringModeResponse:
        """Switch this SP's monitoring between normal and skeleton at run time."""

        async def call(principal: Principal) -> pb.MonitoringModeResponse:
            try:
                mode = Mode(request.mode)
            except ValueError:
                raise InvalidArgument("mode", f"one of {', '.join(Mode)}, got {request.mode[:20]!r}") from None
            if not (0.0 <= request.delta < 1e12):  # also false for NaN
                raise InvalidArgument("delta", f"must be a finite number from 0, got {request.delta}")
            self._w.set_mode(mode, request.delta)
            return pb.MonitoringModeResponse(mode=mode.value, delta=request.delta)

        return await self._gate.answer(context, "SetMode", call, target=request.mode[:20], audited=True)


class CapabilitiesServicer(pb_grpc.CapabilitiesServicer):
    """``fedbroker.v1.Capabilities``: the note feed upward."""

    def __init__(self, catalog: Catalog, offers: OfferDesk, gate: Gate) -> None:
        self._catalog = catalog
        self._offers = offers
        self._gate = gate

    async def SetOffer(self, request: pb.SetOfferRequest, context: grpc.aio.ServicerContext) -> pb.SetOfferResponse:
        """An operator's edit of a local domain's offer; the new note is published at once."""

        async def call(principal: Principal) -> pb.SetOfferResponse:
            codec.check_id(request.domain, "domain")
            offer = codec.offer_from_pb(request.offer)
            log.info("SetOffer for domain %s by %s", request.domain, principal.id)
            return pb.SetOfferResponse(note=codec.note_to_pb(self._offers.set(request.domain, offer)))

        return await self._gate.answer(
            context,
            "SetOffer",
            call,
            target=request.domain[:200],
            audited=True,
            outcome=lambda r: f"note version {r.note.version}",
        )

    async def SubscribeNotes(
        self,
        request: pb.SubscribeNotesRequest,
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.SignedNote]:
        """Push our signed note now and on every change, for as long as the subscriber listens."""
        try:
            principal = self._gate.guard.check(context, "SubscribeNotes")
        except FedError as exc:
            await context.abort(to_grpc(exc.code), str(exc))
            return
        log.info("subscriber %s follows our notes", principal.id)
        async for signed in self._gate.streamed(self._catalog.updates()):
            yield codec.signed_to_pb(signed)

    async def GetCatalog(
        self, request: pb.GetCatalogRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetCatalogResponse:
        """The note we publish and the notes we hold from below."""

        async def call(principal: Principal) -> pb.GetCatalogResponse:
            own, signed = self._catalog.own, self._catalog.own_signed
            return pb.GetCatalogResponse(
                own=codec.note_to_pb(own) if own else None,
                own_signed=codec.signed_to_pb(signed) if signed else None,
                lower=[codec.note_to_pb(n) for _, n in sorted(self._catalog.current().items())],
                rejected=[
                    pb.NoteRejection(
                        sp_id=r.sp_id, version=r.version, reason=r.reason, detail=r.detail, at=codec.ts(r.at)
                    )
                    for r in self._catalog.rejected
                ],
            )

        return await self._gate.answer(context, "GetCatalog", call)


def add_servicers(
    server: grpc.aio.Server,
    manager: SliceManager,
    catalog: Catalog,
    offers: OfferDesk,
    gate: Gate,
    store: SliceStore,
    watchdog: Watchdog | None = None,
    labs: Mapping[str, EmulatedDomainAgent] | None = None,
) -> None:
    """Register the north–south services on ``server``, every call through ``gate``.

    Not through the generated ``add_*_to_server``: ``broker.api.handlers`` decodes so that bytes
    that do not parse are ``INVALID_ARGUMENT`` with an audit line, not grpc's own ``UNKNOWN``.
    """
    services = pb.DESCRIPTOR.services_by_name
    slices = SlicesServicer(manager, gate, store, catalog.explain, watchdog)
    handlers.register(server, services["Slices"], slices, gate.guard, gate.audit)
    if watchdog is not None:
        monitoring = MonitoringServicer(manager, watchdog, labs or {}, gate)
        handlers.register(server, services["Monitoring"], monitoring, gate.guard, gate.audit)
    handlers.register(
        server, services["Capabilities"], CapabilitiesServicer(catalog, offers, gate), gate.guard, gate.audit
    )

"""Thin gRPC servicers: decode, call one core function, encode. Nothing else lives here."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import grpc

from broker import codec
from broker.catalog import Catalog
from broker.child_agent import REQUESTER_METADATA
from broker.lifecycle import SliceManager
from broker.offers import OfferDesk
from broker.status import status_trailer, to_grpc
from fedbroker.v1 import northsouth_pb2 as pb
from fedbroker.v1 import northsouth_pb2_grpc as pb_grpc
from slicing.errors import FedError

log = logging.getLogger(__name__)
T = TypeVar("T")
ANONYMOUS = "anonymous"


def requester_of(context: grpc.aio.ServicerContext) -> str:
    """Who is calling. Until authentication lands (issue 6) the caller names itself in metadata."""
    for key, value in context.invocation_metadata() or ():
        if key == REQUESTER_METADATA and isinstance(value, str) and value:
            return value
    return ANONYMOUS


async def _answer(context: grpc.aio.ServicerContext, call: Callable[[], Awaitable[T]]) -> T:
    try:
        return await call()
    except FedError as exc:
        # The status message is the one-line reason; the trailer carries the explanation tree.
        await context.abort(to_grpc(exc.code), str(exc), trailing_metadata=status_trailer(exc))
        raise AssertionError("unreachable") from exc  # context.abort raises


class SlicesServicer(pb_grpc.SlicesServicer):
    """``fedbroker.v1.Slices``."""

    def __init__(self, manager: SliceManager) -> None:
        self._m = manager

    def _encode(self, rec: object) -> pb.Slice:
        from broker.records import SliceRecord

        assert isinstance(rec, SliceRecord)
        return codec.slice_to_pb(rec, self._m.sp_id)

    async def Reserve(self, request: pb.ReserveRequest, context: grpc.aio.ServicerContext) -> pb.Slice:
        """Hold a slice."""

        async def call() -> pb.Slice:
            req = codec.request_from_pb(request.request)
            if request.dry_run:
                plan = self._m.dry_run(req)
                return pb.Slice(sp_id=self._m.sp_id, request=codec.request_to_pb(req), plan=codec.plan_to_pb(plan))
            rec = await self._m.reserve(requester_of(context), request.request_id, req, float(request.hold_time_s))
            return self._encode(rec)

        return await _answer(context, call)

    async def _by_ref(
        self,
        ref: pb.SliceRef,
        context: grpc.aio.ServicerContext,
        op: Callable[[str], Awaitable[object]] | None,
    ) -> pb.Slice:
        async def call() -> pb.Slice:
            rec = self._m.find(requester_of(context), ref.slice_id, ref.request_id)
            return self._encode(await op(rec.id) if op else rec)

        return await _answer(context, call)

    async def Commit(self, request: pb.SliceRef, context: grpc.aio.ServicerContext) -> pb.Slice:
        """Commit a held slice."""
        return await self._by_ref(request, context, self._m.commit)

    async def Abort(self, request: pb.SliceRef, context: grpc.aio.ServicerContext) -> pb.Slice:
        """Release a held slice."""
        return await self._by_ref(request, context, self._m.abort)

    async def Activate(self, request: pb.SliceRef, context: grpc.aio.ServicerContext) -> pb.Slice:
        """Bring a committed slice into service."""
        return await self._by_ref(request, context, self._m.activate)

    async def Terminate(self, request: pb.SliceRef, context: grpc.aio.ServicerContext) -> pb.Slice:
        """Release a slice everywhere."""
        return await self._by_ref(request, context, self._m.terminate)

    async def Get(self, request: pb.SliceRef, context: grpc.aio.ServicerContext) -> pb.Slice:
        """Read a slice with its per-domain segments."""
        return await self._by_ref(request, context, None)

    async def List(self, request: pb.ListRequest, context: grpc.aio.ServicerContext) -> pb.ListResponse:
        """List slices, optionally by state."""

        async def call() -> pb.ListResponse:
            states = [codec.state_from_pb(s) for s in request.states]
            return pb.ListResponse(slices=[self._encode(r) for r in self._m.slices(states)])

        return await _answer(context, call)

    async def Watch(
        self,
        request: pb.WatchRequest,
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.SliceEvent]:
        """Stream state changes."""
        try:
            if request.slice_id:
                self._m.get(request.slice_id)
            async for ev in self._m.watch(request.slice_id, request.initial):
                yield pb.SliceEvent(
                    slice_id=ev.slice_id,
                    state=codec.state_to_pb(ev.state),  # type: ignore[arg-type]
                    at=codec.ts(ev.at),
                    detail=ev.detail,
                )
        except FedError as exc:
            await context.abort(to_grpc(exc.code), str(exc))

    async def GetUsage(self, request: pb.GetUsageRequest, context: grpc.aio.ServicerContext) -> pb.Usage:
        """What this broker holds now."""
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


class CapabilitiesServicer(pb_grpc.CapabilitiesServicer):
    """``fedbroker.v1.Capabilities``: the note feed upward."""

    def __init__(self, catalog: Catalog, offers: OfferDesk) -> None:
        self._catalog = catalog
        self._offers = offers

    async def SetOffer(self, request: pb.SetOfferRequest, context: grpc.aio.ServicerContext) -> pb.SetOfferResponse:
        """An operator's edit of a local domain's offer; the new note is published at once."""

        async def call() -> pb.SetOfferResponse:
            offer = codec.offer_from_pb(request.offer)
            log.info("SetOffer for domain %s by %s", request.domain, requester_of(context))
            return pb.SetOfferResponse(note=codec.note_to_pb(self._offers.set(request.domain, offer)))

        return await _answer(context, call)

    async def SubscribeNotes(
        self,
        request: pb.SubscribeNotesRequest,
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.SignedNote]:
        """Push our signed note now and on every change, for as long as the subscriber listens."""
        log.info("subscriber %s follows our notes", request.subscriber or requester_of(context))
        async for signed in self._catalog.updates():
            yield codec.signed_to_pb(signed)

    async def GetCatalog(
        self, request: pb.GetCatalogRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetCatalogResponse:
        """The note we publish and the notes we hold from below."""
        own, signed = self._catalog.own, self._catalog.own_signed
        return pb.GetCatalogResponse(
            own=codec.note_to_pb(own) if own else None,
            own_signed=codec.signed_to_pb(signed) if signed else None,
            lower=[codec.note_to_pb(n) for _, n in sorted(self._catalog.current().items())],
            rejected=[
                pb.NoteRejection(sp_id=r.sp_id, version=r.version, reason=r.reason, detail=r.detail, at=codec.ts(r.at))
                for r in self._catalog.rejected
            ],
        )

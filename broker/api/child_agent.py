"""A lower-SP broker as one more ``DomainAgent``: the recursion of the federation is this class.

It lives in ``broker/`` (not ``domain_agents/``) because it speaks the north–south gRPC API, and
DESIGN.md keeps domain agents ignorant of other SPs. The core reserves, commits and aborts through
it exactly as through a local domain.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import grpc

from broker.api import codec
from broker.api.status import from_rpc_error
from broker.core.events import IN_FLIGHT
from broker.core.faults import NO_FAULTS, Faults
from broker.core.monitoring import Rule
from capability_catalog.model import SpId, TerminalId
from capability_catalog.signing import SignedNote
from domain_agents.base import (
    DomainUsage,
    Held,
    NotActivated,
    SegmentAlert,
    SegmentEvent,
    SegmentGrant,
    SegmentOrder,
)
from fedbroker.v1 import northsouth_pb2 as pb
from fedbroker.v1 import northsouth_pb2_grpc as pb_grpc
from slicing.errors import ErrorCode, FedError, error_for_code
from slicing.model import HOLDING_STATES, SliceState

log = logging.getLogger(__name__)
T = TypeVar("T")
#: What an upper SP watches at a lower SP: where its segments settle (held, committed, in service,
#: ended). The in-flight states (RESERVING, COMMITTING, ...) it learns from the answers to its own
#: calls and never acts on; not asking for them halves the events each segment sends up.
WATCHED = pb.WatchRequest(
    states=[pb.SliceState.ValueType(codec.state_to_pb(s)) for s in SliceState if s not in IN_FLIGHT]
)
#: Tries of one call at a lower SP with several addresses when the transport loses it, and the pause.
FAILOVER_TRIES = 3
FAILOVER_PAUSE_S = 0.1

Metadata = tuple[tuple[str, str], ...]


class ChildBrokerAgent:
    """Reserves segments at a lower-SP's broker over the north–south API."""

    def __init__(
        self,
        domain_id: str,
        address: str,
        *,
        requester: str,
        timeout_s: float = 10.0,
        channel: grpc.aio.Channel | None = None,
        auth: Callable[[str], Metadata] | None = None,
        faults: Faults = NO_FAULTS,
        failover: bool = False,
    ) -> None:
        self._domain_id = SpId(domain_id)
        # Several addresses (replicas): a call the transport lost is sent again, to another replica.
        self._failover = failover
        self.address = address
        self._requester = requester
        # Call metadata is made per call: a call token is accepted once, so each call mints its own.
        self._auth = auth or (lambda on_behalf_of: ())
        self._timeout_s = timeout_s
        self._faults = faults
        self._channel = channel or grpc.aio.insecure_channel(address)
        self._slices = pb_grpc.SlicesStub(self._channel)
        self._caps = pb_grpc.CapabilitiesStub(self._channel)
        self._last: dict[str, pb.Slice] = {}
        self._combined = True  # the lower SP takes CommitAndActivate (until it answers UNIMPLEMENTED)

    @property
    def domain_id(self) -> SpId:
        """The lower-SP's id."""
        return self._domain_id

    @property
    def _metadata(self) -> Metadata:
        return self._auth("")

    async def _call(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        self._faults.check_partition(self._domain_id)
        for attempt in range(FAILOVER_TRIES if self._failover else 1):
            try:
                return await call()
            except grpc.aio.AioRpcError as exc:
                # Every call here is idempotent (a Reserve by its order key), so one the transport
                # lost when a replica died goes again: the channel picks a replica that answers its
                # health checks. A broker's own answer (it starts "[sp]") or a deadline is final.
                lost = exc.code() is grpc.StatusCode.UNAVAILABLE and not (exc.details() or "").startswith("[")
                if not (lost and self._failover and attempt + 1 < FAILOVER_TRIES):
                    raise from_rpc_error(exc, self._domain_id) from None
                log.info("%s at %s: %s; sending it again to another replica", what, self._domain_id, exc.details())
                await asyncio.sleep(FAILOVER_PAUSE_S * (attempt + 1))
        raise AssertionError("unreachable: the last try returns or raises")

    async def notes(self) -> AsyncIterator[SignedNote]:
        """The lower-SP's signed notes as it pushes them; reconnects with bounded backoff until cancelled."""
        backoff = 0.05
        while True:
            try:
                stream = self._caps.SubscribeNotes(
                    pb.SubscribeNotesRequest(subscriber=self._requester), metadata=self._metadata
                )
                async for msg in stream:
                    backoff = 0.05
                    yield codec.signed_from_pb(msg)
                log.info("note stream from %s ended; reconnecting", self._domain_id)
            except grpc.aio.AioRpcError as exc:
                log.debug("note stream from %s at %s: %s", self._domain_id, self.address, exc.code().name)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    async def segment_events(self) -> AsyncIterator[SegmentEvent]:
        """The lower SP's state changes of this broker's slices (its Watch); reconnects with back-off.

        Yields ``SegmentEvent("")`` each time the stream (re)connects, so the caller can compare
        holdings with a lower SP that was away.
        """
        backoff = 0.05
        while True:
            if self._faults.partitioned(self._domain_id):
                await asyncio.sleep(backoff)
                continue
            try:
                stream = self._slices.Watch(WATCHED, metadata=self._metadata)
                await stream.wait_for_connection()
                backoff = 0.05
                yield SegmentEvent("")
                async for msg in stream:
                    if self._faults.partitioned(self._domain_id):
                        stream.cancel()
                        break
                    if msg.HasField("alert"):
                        alert = codec.segment_alert_from_pb(msg.alert)
                        yield SegmentEvent(msg.slice_id, None, msg.detail, alert=alert)
                        continue
                    yield SegmentEvent(msg.slice_id, codec.state_from_pb(msg.state), msg.detail)
            except grpc.aio.AioRpcError as exc:
                log.debug("watch stream from %s at %s: %s", self._domain_id, self.address, exc.code().name)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    def _remember(self, msg: pb.Slice) -> pb.Slice:
        self._last[msg.id] = msg
        return msg

    async def reserve(self, order: SegmentOrder) -> SegmentGrant:
        """Reserve at the lower-SP with the order key as its request id."""
        req = pb.ReserveRequest(
            request_id=order.key,
            request=codec.request_to_pb(order.request),
            hold_time_s=max(1, round(order.hold_time_s)),
        )
        timeout = self._timeout_s if order.timeout_s is None else min(self._timeout_s, order.timeout_s)
        msg = await self._call(
            "Reserve",
            lambda: self._slices.Reserve(req, timeout=timeout, metadata=self._auth(order.on_behalf_of)),
        )
        self._remember(msg)
        return SegmentGrant(
            handle=msg.id,
            labels={TerminalId(pl.port): pl.label for pl in msg.labels},
            addresses={TerminalId(a.endpoint): a.address for a in msg.addresses},
            detail=codec.segments_detail(msg),
        )

    async def _lifecycle(self, rpc: str, handle: str) -> None:
        method = getattr(self._slices, rpc)
        ref = pb.SliceRef(slice_id=handle)
        msg = await self._call(rpc, lambda: method(ref, timeout=self._timeout_s, metadata=self._metadata))
        self._remember(msg)

    async def commit(self, handle: str) -> None:
        """Commit the lower-SP's slice."""
        await self._lifecycle("Commit", handle)

    async def commit_and_activate(self, handle: str) -> None:
        """Commit the lower-SP's slice and activate it in one round trip (``CommitAndActivate``).

        A lower SP from before that call (UNIMPLEMENTED) is sent Commit, then Activate, from then on.
        Raises the commit's error as ``commit`` does; ``NotActivated`` once committed but not active.
        """
        if self._combined:
            self._faults.check_partition(self._domain_id)
            ref = pb.SliceRef(slice_id=handle)
            try:
                reply = await self._slices.CommitAndActivate(ref, timeout=self._timeout_s, metadata=self._metadata)
            except grpc.aio.AioRpcError as exc:
                if exc.code() is not grpc.StatusCode.UNIMPLEMENTED:
                    raise from_rpc_error(exc, self._domain_id) from None
                log.info("%s does not know CommitAndActivate: Commit, then Activate", self._domain_id)
                self._combined = False
            else:
                self._remember(reply.slice)
                if reply.HasField("activation_error"):
                    raise NotActivated(_relayed(reply.activation_error, self._domain_id))
                return
        await self.commit(handle)
        try:
            await self.activate(handle)
        except FedError as exc:
            raise NotActivated(exc) from exc

    async def abort(self, handle: str) -> None:
        """Abort the lower-SP's slice; one it no longer knows or already released is fine."""
        try:
            await self._lifecycle("Abort", handle)
        except FedError as exc:
            if exc.code.value not in ("NOT_FOUND", "FAILED_PRECONDITION"):
                raise
            log.info("abort at %s: %s (nothing held)", self._domain_id, exc)

    async def activate(self, handle: str) -> None:
        """Activate the lower-SP's slice."""
        await self._lifecycle("Activate", handle)

    async def deactivate(self, handle: str) -> None:
        """Deactivate the lower-SP's slice (idempotent there: a committed slice is answered as it is)."""
        await self._lifecycle("Deactivate", handle)

    async def terminate(self, handle: str) -> None:
        """Terminate the lower-SP's slice (idempotent there)."""
        try:
            await self._lifecycle("Terminate", handle)
        except FedError as exc:
            if exc.code.value != "NOT_FOUND":
                raise

    async def release(self, key: str, handle: str) -> None:
        """Terminate the lower-SP's slice by its id, or by the order key when its id never came back.

        The lower SP accepts Terminate in every state and answers only once it holds nothing (or with
        an error naming what it could not release yet); NOT_FOUND means it never saw the order. Asked
        by key before the Reserve itself arrived, the lower SP remembers the key as cancelled, so the
        late Reserve is refused instead of holding.
        """
        ref = pb.SliceRef(slice_id=handle) if handle else pb.SliceRef(request_id=key)
        try:
            msg = await self._call(
                "Terminate", lambda: self._slices.Terminate(ref, timeout=self._timeout_s, metadata=self._metadata)
            )
        except FedError as exc:
            if exc.code is not ErrorCode.NOT_FOUND:
                raise
            return
        self._last.pop(msg.id, None)

    async def holdings(self) -> Sequence[Held]:
        """(order key, slice id, state) of every slice the lower SP holds for this broker, by its own List."""
        states = [pb.SliceState.Value(f"SLICE_STATE_{s.value}") for s in sorted(HOLDING_STATES)]
        out: list[Held] = []
        token = ""
        for _ in range(1000):  # bounded: 500,000 slices
            req = pb.ListRequest(states=states, page_token=token)

            def page(r: pb.ListRequest = req) -> Awaitable[pb.ListResponse]:
                return self._slices.List(r, timeout=self._timeout_s, metadata=self._metadata)  # type: ignore[no-any-return]

            reply = await self._call("List", page)
            out.extend(Held(s.request_id, s.id, codec.state_from_pb(s.state)) for s in reply.slices)
            token = reply.next_page_token
            if not token:
                break
        return out

    async def open_alerts(self, handle: str) -> list[SegmentAlert]:
        """The alerts firing at the lower SP for its slice ``handle`` now (it names itself as their source)."""
        ref = pb.SliceRef(slice_id=handle)
        monitoring = pb_grpc.MonitoringStub(self._channel)
        reply = await self._call(
            "ListAlerts", lambda: monitoring.ListAlerts(ref, timeout=self._timeout_s, metadata=self._metadata)
        )
        return [codec.segment_alert_from_pb(a) for a in reply.open]

    async def add_rule(self, handle: str, rule: Rule) -> None:
        """Have the lower SP evaluate a user rule on its slice ``handle`` (it passes it further down)."""
        req = pb.AddRuleRequest(slice_id=handle, rule=codec.rule_to_pb(rule))
        monitoring = pb_grpc.MonitoringStub(self._channel)
        await self._call("AddRule", lambda: monitoring.AddRule(req, timeout=self._timeout_s, metadata=self._metadata))

    async def restore(self, handle: str, committed: bool) -> None:
        """Nothing to re-apply here: the lower-SP keeps its own state."""

    def describe(self, handle: str) -> tuple[Mapping[str, Any], ...]:
        """The lower-SP's segments as of its last answer about ``handle``."""
        msg = self._last.get(handle)
        return codec.segments_detail(msg) if msg is not None else ()

    def usage(self) -> DomainUsage:
        """A lower-SP's holdings are its own; ask it (``GetUsage``)."""
        return DomainUsage(domain=self._domain_id)

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()


def _relayed(detail: pb.ErrorDetail, domain: str) -> FedError:
    """A lower SP's error sent as a value, shaped as ``from_rpc_error`` shapes one sent as a status."""
    said = codec.error_from_detail(detail)
    return error_for_code(said.code, str(said), domain=domain, constraint=said.constraint, causes=said.causes)

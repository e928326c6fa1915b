"""Method handlers for the north–south services whose request decoding cannot end in ``UNKNOWN``.

grpc decodes a request before any servicer code runs. With the generated ``add_*_to_server`` a
message that does not parse makes grpc itself answer ``UNKNOWN`` ("Exception deserializing
request!"), before the token is checked and with no audit line. Here the deserializer never
raises: undecodable bytes become an ``Undecodable`` value, and the wrapped method then checks the
caller like any call (so an unauthenticated sender learns nothing more than ``UNAUTHENTICATED``),
writes an audit line and answers ``INVALID_ARGUMENT`` naming the message type. Handlers are built
from the service descriptor, so a method added to the ``.proto`` is covered without an edit here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message

from broker.api.status import to_grpc
from broker.security.audit import AuditLog
from broker.security.auth import Guard, Principal, tls_peer
from fedbroker.v1 import northsouth_pb2 as pb
from slicing.errors import FedError


@dataclass(frozen=True)
class Undecodable:
    """A request whose bytes did not parse as its message type."""

    type_name: str
    reason: str


def _deserializer(cls: type[Message]) -> Callable[[bytes], Message | Undecodable]:
    def decode(data: bytes) -> Message | Undecodable:
        try:
            return cls.FromString(data)
        except DecodeError as exc:
            return Undecodable(cls.DESCRIPTOR.full_name, str(exc) or "does not parse")

    return decode


async def refuse_undecodable(
    guard: Guard, audit: AuditLog, context: grpc.aio.ServicerContext, rpc: str, bad: Undecodable
) -> None:
    """Authenticate, audit and answer ``INVALID_ARGUMENT`` for a request that did not decode (always raises)."""
    principal: Principal | None = None
    try:
        principal = guard.check(context, rpc)
    except FedError as exc:
        audit.record(rpc, None, "", exc.code.value, str(exc), peer=tls_peer(context))
        await context.abort(to_grpc(exc.code), str(exc))
    why = f"request: not a valid {bad.type_name} message ({bad.reason[:200]}); send the protobuf encoding of it"
    audit.record(rpc, principal, "", "INVALID_ARGUMENT", why, peer=tls_peer(context))
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, why)


def _unary(
    method: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]], rpc: str, guard: Guard, audit: AuditLog
) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
    async def behaviour(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, Undecodable):
            await refuse_undecodable(guard, audit, context, rpc, request)
        return await method(request, context)

    return behaviour


def _streaming(
    method: Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]], rpc: str, guard: Guard, audit: AuditLog
) -> Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]]:
    async def behaviour(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        if isinstance(request, Undecodable):
            await refuse_undecodable(guard, audit, context, rpc, request)
            return
        async for item in method(request, context):
            yield item

    return behaviour


def register(
    server: grpc.aio.Server, service: ServiceDescriptor, servicer: object, guard: Guard, audit: AuditLog
) -> None:
    """Serve every method of ``service`` from ``servicer`` on ``server``, refusing undecodable requests cleanly."""
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for m in service.methods:
        request_cls: type[Message] = getattr(pb, m.input_type.name)
        response_cls: type[Message] = getattr(pb, m.output_type.name)
        method = getattr(servicer, m.name)
        decode, encode = _deserializer(request_cls), response_cls.SerializeToString
        if m.client_streaming:
            raise TypeError(f"{service.full_name}.{m.name}: client streaming is not supported here")
        if m.server_streaming:
            handlers[m.name] = grpc.unary_stream_rpc_method_handler(
                _streaming(method, m.name, guard, audit), request_deserializer=decode, response_serializer=encode
            )
        else:
            handlers[m.name] = grpc.unary_unary_rpc_method_handler(
                _unary(method, m.name, guard, audit), request_deserializer=decode, response_serializer=encode
            )
    # As the generated code does: the generic handler for lookup by name, plus the registered
    # handlers grpc finds without a lookup (its fast path).
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
    server.add_registered_method_handlers(service.full_name, handlers)

"""Server reflection that also finds methods and fields, as ``grpcurl describe Service.Method`` asks.

The stock servicer looks every symbol up with ``DescriptorPool.FindFileContainingSymbol``, which
in the upb protobuf runtime knows messages, enums and services but not a service's methods, so
``describe fedbroker.v1.Slices.Reserve`` answered NOT_FOUND ("Symbol not found") while
``describe fedbroker.v1.Slices`` worked. A name that is not found is retried as a member of its
parent (a method of a service, a field or nested type of a message).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc
from google.protobuf import descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc
from grpc_reflection.v1alpha._async import ReflectionServicer


class MemberReflectionServicer(ReflectionServicer):  # type: ignore[misc]
    """``grpc.reflection.v1alpha.ServerReflection`` that resolves ``Service.Method`` and ``Message.field``."""

    def _file_containing_symbol(self, request: Any, fully_qualified_name: str) -> Any:
        answer = super()._file_containing_symbol(request, fully_qualified_name)
        if not answer.HasField("error_response"):
            return answer
        parent, _, member = fully_qualified_name.rpartition(".")
        if parent and _has_member(self._pool, parent, member):
            return super()._file_containing_symbol(request, parent)
        return answer


def _has_member(pool: descriptor_pool.DescriptorPool, parent: str, member: str) -> bool:
    try:
        return member in pool.FindServiceByName(parent).methods_by_name
    except KeyError:
        pass
    try:
        message = pool.FindMessageTypeByName(parent)
    except KeyError:
        return False
    return member in message.fields_by_name or member in message.nested_types_by_name


def enable(service_names: Iterable[str], server: grpc.aio.Server) -> None:
    """Serve reflection for ``service_names`` (and reflection itself) on ``server``."""
    names = (*service_names, reflection.SERVICE_NAME)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(MemberReflectionServicer(names), server)

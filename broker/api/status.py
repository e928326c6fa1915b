"""The one table between fedbroker error codes and gRPC status codes, both ways."""

from __future__ import annotations

import grpc
from google.protobuf.any_pb2 import Any
from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from grpc_status import rpc_status

from broker.api import codec
from fedbroker.v1 import northsouth_pb2 as pb
from slicing.errors import ErrorCode, FedError, error_for_code

_TO_GRPC: dict[ErrorCode, grpc.StatusCode] = {
    ErrorCode.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    ErrorCode.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    ErrorCode.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorCode.ALREADY_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    ErrorCode.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorCode.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorCode.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorCode.DEADLINE_EXCEEDED: grpc.StatusCode.DEADLINE_EXCEEDED,
    ErrorCode.INTERNAL: grpc.StatusCode.INTERNAL,
}
_FROM_GRPC: dict[grpc.StatusCode, ErrorCode] = {v: k for k, v in _TO_GRPC.items()}


def to_grpc(code: ErrorCode) -> grpc.StatusCode:
    """The gRPC status code for a fedbroker error code."""
    return _TO_GRPC[code]


def status_trailer(exc: FedError) -> tuple[tuple[str, bytes], ...]:
    """The trailing metadata carrying ``exc`` as a ``google.rpc.Status`` with its explanation tree.

    The status holds one detail, a ``fedbroker.v1.ErrorDetail``: which SP raised what, on which
    constraint, and the lower-SP refusals under it. Stock clients read it with grpcio-status
    (``rpc_status.from_call``); fedbroker's own client with :func:`from_rpc_error`.
    """
    detail = Any()
    detail.Pack(codec.error_to_detail(exc))
    status = status_pb2.Status(code=to_grpc(exc.code).value[0], message=str(exc), details=[detail])
    return ((rpc_status.GRPC_DETAILS_METADATA_KEY, status.SerializeToString()),)


def explanation(err: grpc.aio.AioRpcError) -> FedError | None:
    """The explanation tree a broker sent with a failed call, if any."""
    for key, value in err.trailing_metadata() or ():
        if key != rpc_status.GRPC_DETAILS_METADATA_KEY or not isinstance(value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(value)
            for any_detail in status.details:
                detail = pb.ErrorDetail()
                if any_detail.Unpack(detail):
                    return codec.error_from_detail(detail)
        except DecodeError:
            return None
    return None


def from_rpc_error(err: grpc.aio.AioRpcError, domain: str) -> FedError:
    """Translate an error that came up from a lower-SP into the error tree, attributed to it."""
    status = err.code()
    code = _FROM_GRPC.get(status, ErrorCode.UNAVAILABLE if status is grpc.StatusCode.CANCELLED else ErrorCode.INTERNAL)
    details = err.details() or status.name
    # A broker's own errors start with "[domain]"; anything else came from the transport.
    relayed = details.startswith("[")
    if status is grpc.StatusCode.UNAVAILABLE and not relayed:
        details = f"lower-SP did not answer ({details})"
    elif status is grpc.StatusCode.DEADLINE_EXCEEDED and not relayed:
        details = f"lower-SP did not answer in time ({details})"
    tree = explanation(err)
    if tree is None:
        return error_for_code(code, details, domain=domain)
    # The lower-SP's own error becomes this node; what it named below stays as its causes.
    return error_for_code(code, details, domain=domain, constraint=tree.constraint, causes=tree.causes)

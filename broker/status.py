"""The one table between fedbroker error codes and gRPC status codes, both ways."""

from __future__ import annotations

import grpc

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
    return error_for_code(code, details, domain=domain)

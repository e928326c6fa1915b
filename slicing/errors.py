"""The one error tree of fedbroker.

::

    FedError (code, retryable, domain)
    ├── InvalidArgument     bad request; ``field`` names the offending field
    ├── NotFound
    ├── AlreadyExists
    ├── ResourceExhausted   no capacity, path or labels left
    ├── FailedPrecondition  wrong state for the operation
    ├── Unavailable         a lower-SP or domain did not answer (retryable)
    ├── DeadlineExceeded    a lower-SP answered too late (retryable)
    ├── Unauthenticated / PermissionDenied
    ├── Internal
    └── FanoutError         several children failed; ``causes`` names each

Codes are the gRPC status names; the broker maps them to and from gRPC status codes in one table.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum


class ErrorCode(StrEnum):
    """Stable error codes, equal to gRPC status code names."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    UNAVAILABLE = "UNAVAILABLE"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    INTERNAL = "INTERNAL"


class FedError(Exception):
    """Root of every fedbroker error: a stable code, a retryable flag, the domain that raised it."""

    code: ErrorCode = ErrorCode.INTERNAL
    retryable: bool = False

    def __init__(self, message: str, *, domain: str = "", field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.domain = domain
        self.field = field

    def __str__(self) -> str:
        prefix = f"[{self.domain}] " if self.domain else ""
        return f"{prefix}{self.message}"

    def in_domain(self, domain: str) -> FedError:
        """The same error attributed to ``domain`` (kept when already attributed)."""
        if not self.domain:
            self.domain = domain
        return self


class InvalidArgument(FedError):
    """The request is malformed; ``field`` names the bad field."""

    code = ErrorCode.INVALID_ARGUMENT

    def __init__(self, field: str, reason: str, *, domain: str = "") -> None:
        super().__init__(f"{field}: {reason}", domain=domain, field=field)


class NotFound(FedError):
    """No such slice, terminal or domain."""

    code = ErrorCode.NOT_FOUND


class AlreadyExists(FedError):
    """The id is taken (e.g. a request id reused with a different request)."""

    code = ErrorCode.ALREADY_EXISTS


class ResourceExhausted(FedError):
    """No capacity, path, function slot or label left."""

    code = ErrorCode.RESOURCE_EXHAUSTED


class FailedPrecondition(FedError):
    """The slice is in the wrong state for the operation."""

    code = ErrorCode.FAILED_PRECONDITION


class Unavailable(FedError):
    """A lower-SP or domain did not answer."""

    code = ErrorCode.UNAVAILABLE
    retryable = True


class DeadlineExceeded(FedError):
    """A lower-SP did not answer in time."""

    code = ErrorCode.DEADLINE_EXCEEDED
    retryable = True


class Unauthenticated(FedError):
    """No or bad credentials."""

    code = ErrorCode.UNAUTHENTICATED


class PermissionDenied(FedError):
    """The caller may not do this."""

    code = ErrorCode.PERMISSION_DENIED


class Internal(FedError):
    """A bug or an unexpected failure."""

    code = ErrorCode.INTERNAL


# Which code wins when several children fail at once: the most telling first.
_PRECEDENCE: tuple[ErrorCode, ...] = (
    ErrorCode.INVALID_ARGUMENT,
    ErrorCode.DEADLINE_EXCEEDED,
    ErrorCode.UNAVAILABLE,
    ErrorCode.RESOURCE_EXHAUSTED,
    ErrorCode.FAILED_PRECONDITION,
    ErrorCode.NOT_FOUND,
    ErrorCode.ALREADY_EXISTS,
    ErrorCode.PERMISSION_DENIED,
    ErrorCode.UNAUTHENTICATED,
    ErrorCode.INTERNAL,
)


class FanoutError(FedError):
    """Several children failed in one fan-out; the message names each failing domain."""

    def __init__(self, causes: Sequence[FedError]) -> None:
        self.causes = tuple(causes)
        codes = {c.code for c in self.causes}
        self.code = next((c for c in _PRECEDENCE if c in codes), ErrorCode.INTERNAL)
        self.retryable = all(c.retryable for c in self.causes)
        super().__init__("; ".join(str(c) for c in self.causes))


def error_for_code(code: ErrorCode, message: str, *, domain: str = "") -> FedError:
    """Build the error class for ``code`` (used for errors coming up from a lower-SP)."""
    cls = _BY_CODE.get(code, Internal)
    if cls is InvalidArgument:
        err: FedError = FedError(message, domain=domain)
        err.code = ErrorCode.INVALID_ARGUMENT
        return err
    return cls(message, domain=domain)


_BY_CODE: dict[ErrorCode, type[FedError]] = {
    ErrorCode.INVALID_ARGUMENT: InvalidArgument,
    ErrorCode.NOT_FOUND: NotFound,
    ErrorCode.ALREADY_EXISTS: AlreadyExists,
    ErrorCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    ErrorCode.FAILED_PRECONDITION: FailedPrecondition,
    ErrorCode.UNAVAILABLE: Unavailable,
    ErrorCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    ErrorCode.UNAUTHENTICATED: Unauthenticated,
    ErrorCode.PERMISSION_DENIED: PermissionDenied,
    ErrorCode.INTERNAL: Internal,
}

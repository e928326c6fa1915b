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

Every error is also a node of an explanation tree: ``domain`` says which SP (or local domain) raised
it, ``constraint`` which constraint cut off the last candidate (a ``Constraint`` value, empty when
it is not about one), and ``causes`` the errors one level down that led to it (the refusals a
crankback worked around, or each failing child of a fan-out). The broker sends the tree across the
API in the ``google.rpc.Status`` details (``fedbroker.v1.ErrorDetail``), so an upper-SP and the
customer see which SP refused what, level by level.
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


class Constraint(StrEnum):
    """The constraints an explanation can name (the prefix of a planner's refusal message)."""

    PATH = "path"
    EXCLUDE = "exclude"
    INCLUDE = "include"
    TRANSIT_POLICY = "transit-policy"
    ISOLATION = "isolation"
    QOS = "qos"
    BANDWIDTH = "bandwidth"
    LABELS = "labels"
    CHAIN = "chain"
    LATENCY = "latency"
    PRICE = "price"
    ADDRESSES = "addresses"
    LOOP = "loop"
    CRANKBACK = "crankback"


class FedError(Exception):
    """Root of every fedbroker error: a stable code, a retryable flag, the domain that raised it."""

    code: ErrorCode = ErrorCode.INTERNAL
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        domain: str = "",
        field: str = "",
        constraint: str = "",
        causes: Sequence[FedError] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.domain = domain
        self.field = field
        self.constraint = constraint
        self.causes: tuple[FedError, ...] = tuple(causes)

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
        codes = {c.code for c in causes}
        self.code = next((c for c in _PRECEDENCE if c in codes), ErrorCode.INTERNAL)
        self.retryable = all(c.retryable for c in causes)
        super().__init__("; ".join(str(c) for c in causes), causes=causes)


def root_causes(err: FedError) -> list[FedError]:
    """The errors at the bottom of ``err``'s tree (itself when it has no causes), each said once."""
    return _roots([err]) if err.causes else [err]


def _roots(errors: Sequence[FedError]) -> list[FedError]:
    seen: dict[tuple[str, str], FedError] = {}
    for err in errors:
        for root in _roots(err.causes) if err.causes else [err]:
            seen.setdefault((root.domain, root.message), root)
    return list(seen.values())


def crankback_refusal(code: ErrorCode, tried: str, refusals: Sequence[FedError], *, constraint: str) -> FedError:
    """How a reservation that cranked back around ``refusals`` fails: the real causes first, once.

    Each refusal already says the same of the level below, so listing the refusals would repeat a
    cause three levels down three times, with the cause last. The message names the distinct root
    causes, then what this level tried: ``[L2] no slot (crankback: 4 plans were refused below;
    crankback around 2 refusal(s))``; the tree (``causes``) keeps every refusal as it came.
    """
    roots = "; ".join(str(r) for r in _roots(refusals))
    return error_for_code(
        code, f"{roots} ({tried}; crankback around {len(refusals)} refusal(s))", constraint=constraint, causes=refusals
    )


def error_for_code(
    code: ErrorCode, message: str, *, domain: str = "", constraint: str = "", causes: Sequence[FedError] = ()
) -> FedError:
    """Build the error class for ``code`` (used for errors coming up from a lower-SP)."""
    cls = _BY_CODE.get(code, Internal)
    if cls is InvalidArgument:
        err: FedError = FedError(message, domain=domain, constraint=constraint, causes=causes)
        err.code = ErrorCode.INVALID_ARGUMENT
        return err
    return cls(message, domain=domain, constraint=constraint, causes=causes)


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

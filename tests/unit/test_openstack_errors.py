"""openstacksdk / keystoneauth exceptions become the fedbroker error tree, with what was being done."""

from __future__ import annotations

import openstack.exceptions
import pytest
from keystoneauth1 import exceptions as ks_exc

from domain_agents.openstack_cloud import translate
from slicing.errors import (
    ErrorCode,
    FedError,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)


def http(status: int, details: str = "why") -> openstack.exceptions.HttpException:
    return openstack.exceptions.HttpException(message="x", http_status=status, details=details)


@pytest.mark.parametrize(
    ("exc", "kind", "retryable"),
    [
        (http(401), Unauthenticated, False),
        (http(403), PermissionDenied, False),
        (http(404), NotFound, False),
        (http(409, "No more IP addresses available on network n1."), ResourceExhausted, False),
        (http(409, "something else is in the way"), Unavailable, True),
        (http(400), Internal, False),
        (http(503), Unavailable, True),
        (ks_exc.ConnectFailure("refused"), Unavailable, True),
        (ValueError("odd"), Internal, False),
    ],
)
def test_each_failure_maps_to_its_error_class(exc: Exception, kind: type[FedError], retryable: bool) -> None:
    err = translate(exc, "making network n1")
    assert type(err) is kind and err.retryable is retryable
    assert str(err).startswith("making network n1: ")


def test_a_400_about_a_named_field_is_invalid_argument_naming_it() -> None:
    err = translate(http(400, "Invalid input for cidr"), "making subnet", field="request.subnet")
    assert isinstance(err, InvalidArgument) and err.field == "request.subnet" and "Invalid input for cidr" in str(err)


def test_a_login_refusal_wrapped_by_openstacksdk_is_unauthenticated() -> None:
    try:
        try:
            raise ks_exc.Unauthorized("The request you have made requires authentication.", http_status=401)
        except ks_exc.Unauthorized as inner:
            raise openstack.exceptions.SDKException(str(inner))  # noqa: B904 - how openstacksdk does it
    except openstack.exceptions.SDKException as outer:
        err = translate(outer, "logging in")
    assert err.code is ErrorCode.UNAUTHENTICATED and "Keystone refused the credentials" in str(err)

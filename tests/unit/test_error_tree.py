"""The explanation tree across the API: google.rpc.Status details holding a fedbroker.v1.ErrorDetail."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import status_pb2
from grpc.aio import AioRpcError, Metadata
from grpc_status import rpc_status

from broker.api.status import explanation, from_rpc_error, status_trailer
from broker.cli.client import print_explanation as _print_explanation
from fedbroker.v1 import northsouth_pb2 as pb
from slicing.errors import ErrorCode, FailedPrecondition, ResourceExhausted


def refusal() -> ResourceExhausted:
    leaf = ResourceExhausted("injected failure at reserve", domain="L2")
    mid = ResourceExhausted("crankback: no route avoids the runs lower SPs refused", domain="M", causes=[leaf])
    mid.constraint = "crankback"
    return ResourceExhausted("crankback: 4 plans were refused below", constraint="crankback", causes=[mid])


def rpc_error(exc: ResourceExhausted | FailedPrecondition) -> AioRpcError:
    return AioRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, Metadata(), Metadata(*status_trailer(exc)), str(exc))


def test_trailer_is_a_standard_google_rpc_status_with_one_error_detail() -> None:
    ((key, blob),) = status_trailer(refusal())
    assert key == rpc_status.GRPC_DETAILS_METADATA_KEY == "grpc-status-details-bin"
    status = status_pb2.Status.FromString(blob)
    assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert status.message == "crankback: 4 plans were refused below"
    detail = pb.ErrorDetail()
    assert status.details[0].Unpack(detail)
    assert (detail.constraint, detail.causes[0].sp_id, detail.causes[0].causes[0].sp_id) == ("crankback", "M", "L2")


def test_tree_survives_the_round_trip_level_by_level() -> None:
    tree = explanation(rpc_error(refusal()))
    assert tree is not None and tree.code is ErrorCode.RESOURCE_EXHAUSTED and tree.constraint == "crankback"
    (mid,) = tree.causes
    (leaf,) = mid.causes
    assert (mid.domain, mid.constraint) == ("M", "crankback")
    assert (leaf.domain, leaf.message, leaf.causes) == ("L2", "injected failure at reserve", ())


def test_relayed_error_is_attributed_to_the_child_and_keeps_the_causes_below() -> None:
    err = from_rpc_error(rpc_error(refusal()), domain="M1")
    assert err.domain == "M1" and err.constraint == "crankback"
    assert [c.domain for c in err.causes] == ["M"] and err.causes[0].causes[0].domain == "L2"


def test_error_without_details_is_translated_as_before() -> None:
    plain = AioRpcError(grpc.StatusCode.UNAVAILABLE, Metadata(), Metadata(), "connection refused")
    assert explanation(plain) is None
    err = from_rpc_error(plain, domain="L1")
    assert err.code is ErrorCode.UNAVAILABLE and err.causes == () and "did not answer" in err.message


def test_cli_prints_the_tree_of_refusals(capsys: pytest.CaptureFixture[str]) -> None:
    _print_explanation(rpc_error(refusal()))
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "crankback"
    assert "M RESOURCE_EXHAUSTED crankback: no route avoids" in lines[1]
    assert "L2 RESOURCE_EXHAUSTED injected failure at reserve" in lines[2]


def test_a_crankback_message_says_the_real_cause_first_and_once() -> None:
    # Made where the reservation fails (broker/core/reservation.py), so the edge only maps its code.
    from slicing.errors import crankback_refusal

    leaf = ResourceExhausted("injected failure at reserve", domain="L2")
    tried = "crankback: no route avoids the runs lower SPs refused"
    low = crankback_refusal(leaf.code, tried, [leaf], constraint="crankback").in_domain("L2")
    mid = crankback_refusal(low.code, tried, [low], constraint="crankback").in_domain("M")

    top = crankback_refusal(mid.code, "crankback: 4 plans were refused below", [mid, mid], constraint="crankback")

    assert (
        top.message == "[L2] injected failure at reserve (crankback: 4 plans were refused below; crankback "
        "around 2 refusal(s))"
    )
    assert mid.message == f"[L2] injected failure at reserve ({tried}; crankback around 1 refusal(s))"
    assert top.causes == (mid, mid) or list(top.causes) == [mid, mid]
    assert top.constraint == "crankback" and top.code is ErrorCode.RESOURCE_EXHAUSTED

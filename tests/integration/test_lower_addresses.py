"""A lower SP listed at several addresses (issue 16, item 4): calls go where it answers, and follow it.

The upper's entry for L1 lists two addresses; L1 runs at the first, nothing listens at the second.
gRPC balances over the addresses whose health check answers, so the dead one takes no call. Then L1
is killed and started again at the second address: the upper's next calls reach it there, with no
change to the upper's config, and a slice reserved before the move is committed and terminated
through the new address.
"""

from __future__ import annotations

import asyncio
import socket

import grpc
import pytest
import yaml

from fedbroker.v1 import northsouth_pb2 as pb
from tests.integration.federation import Federation, leaf_domain, op, reserve, slice_request

pytestmark = pytest.mark.integration


def _free_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


async def _until_reserved(top: object, request_id: str, req: pb.SliceRequest) -> pb.Slice:
    """Reserve while the upper's channel is still finding L1 (bounded, 10 s); a refused try is a FAILED
    record that its request id would answer again, so each try has an id of its own."""
    last: grpc.aio.AioRpcError | None = None
    for attempt in range(50):
        try:
            return await reserve(top, f"{request_id}-{attempt}", req)  # type: ignore[arg-type]
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            last = exc
        await asyncio.sleep(0.2)
    raise AssertionError(f"still UNAVAILABLE after 10 s: {last}")


async def test_an_upper_reaches_a_lower_sp_at_whichever_of_its_addresses_it_answers(fed: Federation) -> None:
    await fed.start("L1", domains=[leaf_domain("L1", {"L2": "1000-1999"})])
    await fed.start("L2", domains=[leaf_domain("L2", {"L1": "1000-1999"})])
    spare = _free_address()
    top = await fed.fleet.start("T", {}, ["L1", "L2"], spare_addresses={"L1": [spare]})
    entry = yaml.safe_load(top.config_path.read_text())["lower_sps"][0]
    assert entry["addresses"] == [fed.sps["L1"].address, spare]
    await fed.wait_terminals("T", ["L1.ep", "L2.ep"])

    req = slice_request("L1.ep", "L2.ep", 100)
    before = await reserve(top, "moved-1", req)  # the dead address takes no call
    assert before.state == pb.SLICE_STATE_HELD
    for i in range(5):
        held = await reserve(top, f"spread-{i}", req)
        assert held.state == pb.SLICE_STATE_HELD
        assert (await op(top, "Abort", held.id)).state == pb.SLICE_STATE_ABORTED

    fed.kill("L1")
    await fed.fleet.wait_exit("L1")
    moved = await fed.fleet.restart("L1", listen=spare)
    assert moved.address == spare

    after = await _until_reserved(top, "moved-2", req)
    assert after.state == pb.SLICE_STATE_HELD
    assert (await op(top, "Commit", before.id)).state == pb.SLICE_STATE_COMMITTED  # reserved before the move
    for slice_id in (before.id, after.id):
        assert (await op(top, "Terminate", slice_id)).state == pb.SLICE_STATE_TERMINATED
    await fed.wait_idle()
    log = top.log_path.read_text()
    assert "Traceback" not in log

"""Labels cannot run out by mistake: a port whose lower SP holds labels its upper SP never heard of
still carries every slice it has room for (issue 19, item 7)."""

from __future__ import annotations

import random

import pytest

from fedbroker.v1 import northsouth_pb2 as pb
from tests.integration.federation import Federation, leaf_domain, op, reserve, slice_request

pytestmark = pytest.mark.integration

LEAKED = 50
SLICES = 200


async def test_two_hundred_slices_through_a_port_with_fifty_labels_leaked_by_hand(fed: Federation) -> None:
    await fed.start("L1", domains=[leaf_domain("L1", {"L2": "1000-1999"})])
    l2 = await fed.start("L2", domains=[leaf_domain("L2", {"L1": "1000-1999"})])
    top = await fed.start("T", lowers=["L1", "L2"])
    await fed.wait_terminals("T", ["L1.ep", "L2.ep"])
    # Someone reserves 50 of L2's 1,000 labels toward L1 straight at L2: T knows nothing of them.
    rng = random.Random(19)
    leaked = sorted(rng.sample(range(1000, 1200), LEAKED))
    for label in leaked:
        req = slice_request("L2.to-L1", "L2.ep", mbps=1)
        req.port_constraints.add(port="L2.to-L1", labels=[pb.LabelRange(first=label, last=label)])
        held = await reserve(l2, f"leak-{label}", req, hold_time_s=600)
        assert [pl.label for pl in held.labels if pl.port == "L2.to-L1"] == [label]
    labels = []
    for i in range(SLICES):
        held = await reserve(top, f"s{i}", slice_request("L1.ep", "L2.ep", mbps=10))
        committed = await op(top, "Commit", held.id)
        assert committed.state == pb.SLICE_STATE_COMMITTED
        by_port = {pl.port: pl.label for seg in committed.segments for pl in seg.labels}
        assert by_port["L1.to-L2"] == by_port["L2.to-L1"], by_port
        labels.append(by_port["L2.to-L1"])
    assert len(set(labels)) == SLICES and not set(labels) & set(leaked)

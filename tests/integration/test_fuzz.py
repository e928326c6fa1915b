"""The fuzz harness: mutated valid messages and random bytes against a real broker over mTLS (issue 18).

Every call carries a freshly minted token, so the broker decodes and checks each one for real.
The guarantee: no ``UNKNOWN``, no ``INTERNAL``, no crash, and nothing left held: every fuzzed
Reserve that a broker accepts is aborted at once, and afterwards the broker holds nothing and
lists no live slice. Bounded in count and time; ``make test`` runs 10,000 requests, ``make fuzz``
a million (``FEDBROKER_FUZZ_REQUESTS``, ``FEDBROKER_FUZZ_SECONDS``, ``FEDBROKER_FUZZ_SEED``).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from pathlib import Path

import grpc
import pytest

from broker.security.accounts import Role
from fedbroker.v1 import northsouth_pb2 as pb
from fedbroker.v1 import northsouth_pb2_grpc as pb_grpc
from scenarios.processes import Fleet
from tests.topology import leaf_domain

SP = "L"
REQUESTS = int(os.environ.get("FEDBROKER_FUZZ_REQUESTS", "10000"))
SECONDS = float(os.environ.get("FEDBROKER_FUZZ_SECONDS", "240"))

pytestmark = [pytest.mark.integration, pytest.mark.timeout(SECONDS + 100)]
SEED = int(os.environ.get("FEDBROKER_FUZZ_SEED", str(time.time_ns() % 2**32)))
CONCURRENCY = 8
FORBIDDEN = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}

_VALID = pb.SliceRequest(
    name="s", src="L.ep", dst="L.to-X", bandwidth_mbps=10, latency_budget_ms=50, chain=["fw"], subnet="10.9.0.0/24"
)
#: One valid message per method: what the mutations start from.
CORPUS: dict[str, bytes] = {
    "Slices/Reserve": pb.ReserveRequest(request_id="fz", request=_VALID, hold_time_s=30).SerializeToString(),
    "Slices/Get": pb.SliceRef(slice_id="L-0123456789ab").SerializeToString(),
    "Slices/Commit": pb.SliceRef(request_id="fz").SerializeToString(),
    "Slices/Abort": pb.SliceRef(slice_id="L-0123456789ab").SerializeToString(),
    "Slices/Activate": pb.SliceRef(slice_id="L-0123456789ab").SerializeToString(),
    "Slices/Deactivate": pb.SliceRef(slice_id="L-0123456789ab").SerializeToString(),
    "Slices/Terminate": pb.SliceRef(request_id="fz").SerializeToString(),
    "Slices/List": pb.ListRequest(states=[pb.SLICE_STATE_HELD], page_size=5).SerializeToString(),
    "Slices/GetUsage": pb.GetUsageRequest().SerializeToString(),
    "Capabilities/GetCatalog": pb.GetCatalogRequest().SerializeToString(),
    "Capabilities/SetOffer": pb.SetOfferRequest(
        domain="L", offer=pb.OfferPolicy(price_per_mbps_hour=1.0, isolation=["vxlan"])
    ).SerializeToString(),
}


def mutate(rng: random.Random, data: bytes) -> bytes:
    """A few random edits of ``data``: flips, inserts, deletes, truncation, interesting bytes; or pure noise."""
    if rng.random() < 0.1:
        return rng.randbytes(rng.randint(0, 64))
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(5)
        pos = rng.randint(0, len(buf))
        if op == 0 and buf:
            buf[min(pos, len(buf) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1:
            buf[pos:pos] = bytes([rng.choice([0x00, 0x7F, 0x80, 0xFF, 0x0A, 0x12, 0x3A])])
        elif op == 2 and buf:
            del buf[pos : pos + rng.randint(1, 4)]
        elif op == 3:
            buf = buf[:pos]
        else:  # a huge or negative varint, or an 8-byte double of inf/nan/1e308, at a random place
            buf[pos:pos] = rng.choice(
                [
                    b"\xff" * 9 + b"\x01",
                    b"\x80" * 10,
                    b"\x7f\xf0" + b"\x00" * 6,
                    b"\x00" * 6 + b"\xf8\x7f",
                    b"\x7f\xef\xff",
                ]
            )
    return bytes(buf)


async def test_fuzzed_requests_never_answer_unknown_or_internal_nor_crash_nor_hold(tmp_path: Path) -> None:
    fl = Fleet(tmp_path)
    try:
        broker = await fl.start(SP, {"domains": [leaf_domain(SP, {"X": "100-199"}, functions={"fw": 4})]})
        fl.grant(SP, "customer", Role.CUSTOMER)
        ident = fl.identity("customer")
        channel = fl.channel(SP, "customer", authenticate=False)  # tokens minted per call below
        stub = pb_grpc.SlicesStub(channel)
        calls = {m: channel.unary_unary(f"/fedbroker.v1.{m}") for m in CORPUS}
        methods = sorted(CORPUS)
        rng = random.Random(SEED)
        seen: Counter[str] = Counter()
        bad: list[str] = []
        sent = 0
        deadline = time.monotonic() + SECONDS

        async def one(method: str, payload: bytes) -> None:
            try:
                reply = await calls[method](payload, metadata=ident.metadata(SP), timeout=20)
                seen["OK"] += 1
                if method == "Slices/Reserve":
                    msg = pb.Slice.FromString(reply)
                    if msg.id:  # held: release at once, so the fuzz changes nothing
                        await stub.Abort(pb.SliceRef(slice_id=msg.id), metadata=ident.metadata(SP), timeout=20)
            except grpc.aio.AioRpcError as exc:
                seen[exc.code().name] += 1
                if exc.code() in FORBIDDEN:
                    bad.append(f"{method} {payload.hex()}: {exc.code().name} {exc.details()}")

        while sent < REQUESTS and time.monotonic() < deadline:
            batch = []
            for _ in range(min(CONCURRENCY * 4, REQUESTS - sent)):
                method = rng.choice(methods)
                batch.append(one(method, mutate(rng, CORPUS[method])))
            sent += len(batch)
            await asyncio.gather(*batch)
        print(f"fuzz: seed {SEED}, {sent} requests, {dict(seen)}")
        assert not bad, f"seed {SEED}: {bad[:5]}"
        assert broker.running(), broker.log_tail()
        assert sent >= min(REQUESTS, 10_000), f"only {sent} requests within {SECONDS:g} s"
        assert await fl.holdings([SP]) == {}
        live = {pb.SLICE_STATE_RESERVING, pb.SLICE_STATE_HELD, pb.SLICE_STATE_COMMITTED, pb.SLICE_STATE_ACTIVE}
        listed = await broker.operator_slices.List(pb.ListRequest(states=list(live)), timeout=10)
        assert not listed.slices
        assert "Traceback" not in broker.log_tail(200), broker.log_tail(200)
    finally:
        await fl.stop_all()

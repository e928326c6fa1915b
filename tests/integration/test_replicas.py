"""One SP as three broker processes on one PostgreSQL database (issue 16, ``store: {replicas: true}``).

The top SP ``T`` runs as three replicas over two leaves (each its own process); customers spread
their orders (Reserve, then Commit) over the replicas, and when a replica does not answer they send
the same request again to the next one, as a client of a replicated service does. One replica is
killed -9 in the middle of the orders and started again. Afterwards, read at every process:

* every order is one slice (none lost, none twice), and every replica answers its request id with
  the same slice;
* every slice is committed at T and at both leaves, or released everywhere;
* no VNI is used twice on the leaves' link;
* terminating through any replica leaves nothing held anywhere;
* a customer watching one replica hears every slice committed and terminated, by whichever replica.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections import Counter
from pathlib import Path

import grpc
import psycopg
import pytest
import yaml

from fedbroker.v1 import northsouth_pb2 as pb
from scenarios.postgres import PostgresServer
from scenarios.processes import BrokerProcess
from tests.conftest import require_postgresql
from tests.integration.federation import Federation, leaf_domain, slice_request
from tests.integration.test_cli import cli

pytestmark = pytest.mark.integration

ORDERS = 90
CUSTOMERS = 9
RETRY = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}


class Refused(Exception):
    """A running replica answered with an error: the answer for this request, not a replica down."""


#: How gRPC says the process at the other end is gone (not what a broker answers).
_TRANSPORT = ("failed to connect", "Socket closed", "Connection reset", "Broken pipe", "Connection refused")


async def _call(replicas: list[BrokerProcess], first: int, rpc: str, request: object) -> pb.Slice:
    """``rpc`` at replica ``first``, then at the next ones while a replica is down (bounded)."""
    last: grpc.aio.AioRpcError | None = None
    for attempt in range(15):
        broker = replicas[(first + attempt) % len(replicas)]
        if not broker.running() or broker.channel is None:
            continue
        channel = broker.channel
        try:
            reply: pb.Slice = await getattr(broker.slices, rpc)(request, timeout=10)
            return reply
        except asyncio.CancelledError:
            # A restart closes the channel it replaces, which cancels the calls still on it (a call
            # that began just before the new channel was set). That is a replica gone, not an answer;
            # a cancellation of this task itself goes on up.
            current = asyncio.current_task()
            if (current is not None and current.cancelling()) or broker.channel is channel:
                raise
            await asyncio.sleep(0.2)
            continue
        except grpc.aio.AioRpcError as exc:
            gone = not broker.running() or any(t in (exc.details() or "") for t in _TRANSPORT)
            if exc.code() not in RETRY or not gone:
                raise Refused(f"{rpc} at {broker.sp_id}#{broker.replica}: {exc.code().name}: {exc.details()}") from exc
            last = exc
        await asyncio.sleep(0.2)
    raise AssertionError(f"{rpc}: no replica answered: {last}")


async def test_three_replicas_of_the_top_share_orders_and_survive_a_kill(
    fed: Federation, postgres_server: PostgresServer
) -> None:
    dsn = postgres_server.new_database()
    await fed.start("L1", domains=[leaf_domain("L1", {"L2": "1000-1999"})])
    await fed.start("L2", domains=[leaf_domain("L2", {"L1": "1000-1999"})])
    await fed.start("T", lowers=["L1", "L2"], store={"backend": "postgresql", "dsn": dsn, "replicas": True})
    for n in (2, 3):
        await fed.fleet.start_replica("T", n)
    names = ["T", "T#2", "T#3"]
    for name in names:
        await fed.wait_terminals(name, ["L1.ep", "L2.ep"])
    replicas = [fed.sps[name] for name in names]

    # A customer watching the third replica, which runs few of the operations: it must hear them all.
    seen: dict[str, list[int]] = {}

    async def watch() -> None:
        async for ev in replicas[2].slices.Watch(pb.WatchRequest()):
            seen.setdefault(ev.slice_id, []).append(ev.state)

    watcher = asyncio.ensure_future(watch())
    await asyncio.sleep(0.2)  # subscribed before the first order
    counter = itertools.count()
    answered: dict[str, pb.Slice] = {}
    refused: dict[str, str] = {}
    req = slice_request("L1.ep", "L2.ep", 10)
    killed = asyncio.Event()

    async def customer() -> None:
        while (i := next(counter)) < ORDERS:
            for attempt in range(3):  # a reservation the kill interrupted fails: order again, under a new id
                rid = f"order-{i}" if attempt == 0 else f"order-{i}.{attempt}"
                try:
                    held = await _call(
                        replicas, i, "Reserve", pb.ReserveRequest(request_id=rid, request=req, hold_time_s=60)
                    )
                except Refused as why:
                    refused[rid] = str(why)
                    continue
                assert held.state == pb.SLICE_STATE_HELD, (rid, pb.SliceState.Name(held.state))
                answered[rid] = await _call(replicas, i + 1, "Commit", pb.SliceRef(slice_id=held.id))
                break
            if i == ORDERS // 3 and not killed.is_set():
                killed.set()
                fed.kill("T#2")  # in the middle of other customers' calls

    async with asyncio.TaskGroup() as group:
        for _ in range(CUSTOMERS):
            group.create_task(customer())
        await killed.wait()
        await fed.fleet.restart("T#2")  # back while the rest of the orders go on

    # Every order answered COMMITTED (a commit that met the kill was repeated elsewhere and rolled on).
    assert len(answered) == ORDERS, refused
    states = Counter(pb.SliceState.Name(s.state) for s in answered.values())
    assert states == {"SLICE_STATE_COMMITTED": ORDERS}, states
    ids = {rid: s.id for rid, s in answered.items()}
    assert len(set(ids.values())) == ORDERS  # one slice per order
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT request_id, id, state FROM slices WHERE request_id LIKE 'order-%'").fetchall()
    stored = {r[0]: (r[1], r[2]) for r in rows}
    assert {rid: stored[rid][0] for rid in ids} == ids  # none lost, none twice
    assert {stored[rid][1] for rid in ids} == {"COMMITTED"}
    # Only what the kill interrupted was refused, and it ended FAILED (released), never half held.
    assert all("interrupted" in why or "stopped" in why for why in refused.values()), refused
    assert set(stored) == set(ids) | set(refused) and {stored[rid][1] for rid in refused} <= {"FAILED"}, stored

    # The same request id at every replica: the same slice, in the same state.
    for rid in list(ids)[:: ORDERS // 10]:
        for broker in replicas:
            again = await broker.slices.Reserve(
                pb.ReserveRequest(request_id=rid, request=req, hold_time_s=60), timeout=10
            )
            assert (again.id, again.state) == (ids[rid], pb.SLICE_STATE_COMMITTED), (rid, broker.replica)

    # The leaves hold exactly the committed slices, and no VNI twice on their link.
    for leaf in ("L1", "L2"):
        usage = await fed.usage(leaf)
        assert usage.holding_slices == ORDERS, (leaf, usage.holding_slices)
    vnis = []
    for slice_id in ids.values():
        got = await replicas[0].slices.Get(pb.SliceRef(slice_id=slice_id), timeout=10)
        vnis.append(next(pl.label for seg in got.segments for pl in seg.labels if pl.port == "L1.to-L2"))
    assert len(set(vnis)) == ORDERS, Counter(vnis).most_common(3)

    # Terminate through any replica: nothing held anywhere afterwards.
    for k, slice_id in enumerate(ids.values()):
        ended = await _call(replicas, k, "Terminate", pb.SliceRef(slice_id=slice_id))
        assert ended.state == pb.SLICE_STATE_TERMINATED
    await fed.wait_idle("L1", "L2", "T")

    # The watcher of the third replica heard every slice committed and terminated, whoever did it.
    def unheard() -> list[str]:
        want = (pb.SLICE_STATE_COMMITTED, pb.SLICE_STATE_TERMINATED)
        return [sid for sid in ids.values() if not all(w in seen.get(sid, []) for w in want)]

    for _ in range(50):  # the last notices may still be on their way (bounded: 5 s)
        if not unheard():
            break
        await asyncio.sleep(0.1)
    watcher.cancel()
    assert not unheard(), {sid: seen.get(sid) for sid in unheard()[:3]}


def _scaled(tmp_path: Path, orders: int) -> Path:
    """``scenarios/replicas.yaml`` with ``orders`` orders and its kills at the same fractions of them."""
    doc = yaml.safe_load(Path("scenarios/replicas.yaml").read_text())
    step = next(s["orders"] for s in doc["steps"] if "orders" in s)
    full = step["count"]
    step["count"] = orders
    step["concurrency"] = min(step["concurrency"], max(10, orders // 5))
    for kill in step["kill"]:
        kill["after"] = kill["after"] * orders // full
    path = tmp_path / "replicas.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.mark.timeout(1600)
@pytest.mark.parametrize(
    "orders",
    [
        120,  # make test: the same federation, kills and checks, at 120 orders (about a minute)
        pytest.param(1000, marks=pytest.mark.sweep),  # make sweep: the file as it is (about 7 minutes)
    ],
)
def test_the_replicas_scenario_passes_with_kills_at_three_levels(tmp_path: Path, orders: int) -> None:
    """``scenarios/replicas.yaml`` as a person runs it: T#2, M1#2 and L4#2 killed -9 in turn during the orders."""
    require_postgresql()  # the run starts its own PostgreSQL from the distribution's programs
    scenario = Path("scenarios/replicas.yaml") if orders == 1000 else _scaled(tmp_path, orders)
    report_path = tmp_path / "report.json"
    run = cli("scenario", "run", str(scenario.resolve()), "--report-json", str(report_path), timeout=1500)
    report = json.loads(report_path.read_text())
    failed = [f"{s['name']}: {s['detail'][:2000]}" for s in report["steps"] if not s["passed"]]
    assert run.returncode == 0 and report["passed"], failed or run.stderr[-3000:]
    detail = next(s["detail"] for s in report["steps"] if "orders at T" in s["detail"])
    assert f"{orders} orders at T over 3 processes" in detail and f": {orders} committed in" in detail, detail
    for victim, after in (("T#2", 300), ("M1#2", 500), ("L4#2", 700)):
        killed = re.search(rf"{re.escape(victim)} killed -9 after (\d+) answered, back after", detail)
        assert killed and int(killed.group(1)) >= after * orders // 1000, detail
    assert f"{orders} terminated" in detail and "answered the same slice" in detail, detail
    # Every process of the run is in the report, replicas by their own names.
    assert {sp["id"] for sp in report["sps"]} == {"T", "T#2", "T#3", "M1", "M1#2", "M2", "L1", "L2", "L3", "L4", "L4#2"}


async def test_a_mid_level_sps_replicas_publish_one_note(fed: Federation, postgres_server: PostgresServer) -> None:
    """Two replicas of M build the same abstract note from the same notes below, and keep agreeing as it changes."""
    dsn = postgres_server.new_database()
    await fed.start("L1", domains=[leaf_domain("L1", {"L2": "1000-1999"})])
    await fed.start("L2", domains=[leaf_domain("L2", {"L1": "1000-1999"})])
    await fed.start("M", lowers=["L1", "L2"], store={"backend": "postgresql", "dsn": dsn, "replicas": True})
    await fed.fleet.start_replica("M", 2)
    top = await fed.start("T", lowers=["M"])  # lists both of M's addresses
    assert len(yaml.safe_load(top.config_path.read_text())["lower_sps"][0]["addresses"]) == 2

    def content(note: pb.CapabilityNote) -> bytes:
        same = pb.CapabilityNote()
        same.CopyFrom(note)
        for moving in ("version", "issued_at", "expires_at", "provenance"):
            same.ClearField(moving)  # when it was issued, not what it says
        return same.SerializeToString(deterministic=True)

    async def agree(want_free_below: int | None = None) -> list[pb.CapabilityNote]:
        notes: list[pb.CapabilityNote] = []
        for _ in range(100):  # bounded: 10 s for a note to climb and be rebuilt at both replicas
            notes = [(await fed.sps[n].caps.GetCatalog(pb.GetCatalogRequest(), timeout=10)).own for n in ("M", "M#2")]
            widest = max(max((t.bandwidth_mbps for t in n.transit), default=0) for n in notes)
            if content(notes[0]) == content(notes[1]) and (want_free_below is None or widest < want_free_below):
                return notes
            await asyncio.sleep(0.1)
        raise AssertionError(f"M and M#2 publish different notes: {notes}")

    first = await agree()
    assert {e.id for e in first[0].endpoints} == {"L1.ep", "L2.ep"}
    full = max(t.bandwidth_mbps for t in first[0].transit)
    # A slice through one replica changes what both sell; each says the same after.
    held = await fed.sps["M#2"].slices.Reserve(
        pb.ReserveRequest(request_id="one", request=slice_request("L1.ep", "L2.ep", full // 2), hold_time_s=60),
        timeout=10,
    )
    assert held.state == pb.SLICE_STATE_HELD
    await agree(want_free_below=full)


async def test_an_offer_edit_at_one_replica_is_published_by_the_others_and_kept_across_a_restart(
    fed: Federation, postgres_server: PostgresServer
) -> None:
    """The operator withdraws L's offer at L#1: L#2 publishes nothing to buy too, the SP above stops
    selling L's endpoint, and L#2 restarted still publishes the withdrawn offer; published again at L#2,
    both sell it again."""
    from broker.api import codec
    from capability_catalog.authoring import OfferPolicy

    dsn = postgres_server.new_database()
    await fed.start(
        "L",
        domains=[leaf_domain("L", {"T": "1000-1999"})],
        store={"backend": "postgresql", "dsn": dsn, "replicas": True},
    )
    await fed.fleet.start_replica("L", 2)
    await fed.start("T", lowers=["L"], domains=[leaf_domain("T", {"L": "1000-1999"})])
    await fed.fleet.wait_terminals("T", ["L.ep"], timeout_s=20)

    async def sells(name: str) -> bool:
        for _ in range(20):  # a replica just restarted may refuse a first connection while it starts serving
            try:
                own = (await fed.sps[name].caps.GetCatalog(pb.GetCatalogRequest(), timeout=10)).own
                return bool(own.endpoints)
            except grpc.aio.AioRpcError as exc:
                if exc.code() is not grpc.StatusCode.UNAVAILABLE:
                    raise
                await asyncio.sleep(0.25)
        raise AssertionError(f"{name} did not answer GetCatalog for 5 s")

    async def until_both(selling: bool) -> None:
        for _ in range(100):  # bounded: 10 s (a replica looks for edits every half second)
            if [await sells("L"), await sells("L#2")] == [selling, selling]:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"L sells {await sells('L')}, L#2 sells {await sells('L#2')}; both should be {selling}")

    async def edit(name: str, withdrawn: bool) -> None:
        offer = codec.offer_to_pb(OfferPolicy(withdrawn=withdrawn))
        await fed.sps[name].caps.SetOffer(pb.SetOfferRequest(domain="L", offer=offer), timeout=10)

    await edit("L", withdrawn=True)
    await until_both(selling=False)
    await fed.fleet.wait_terminals("T", [], timeout_s=20, absent=["L.ep"])
    fed.kill("L#2")
    await fed.fleet.wait_exit("L#2")
    await fed.restart("L#2")
    assert not await sells("L#2")  # from its first note on
    await edit("L#2", withdrawn=False)
    await until_both(selling=True)
    await fed.fleet.wait_terminals("T", ["L.ep"], timeout_s=20)

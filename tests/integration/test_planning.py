"""Planning over real processes (issue 4): scenarios, the explanation tree across levels, dry runs."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest

from broker.api.status import explanation
from fedbroker.v1 import northsouth_pb2 as pb
from slicing.errors import ErrorCode, FedError
from tests.integration.federation import Federation, leaf_domain, reserve, slice_request
from tests.integration.test_cli import cli, leaf  # noqa: F401 - the fixture is used by name

pytestmark = pytest.mark.integration

ME = (("x-fedbroker-requester", "tester"),)


@pytest.mark.parametrize(
    ("scenario", "slices"),
    [
        ("constrained-path", {"cheap": ["L1", "L2", "L3"], "fast": ["L1", "L4", "L3"]}),
        ("crankback", {"s1": ["L1", "L4", "L3"]}),
    ],
)
def test_planning_scenario_passes_and_places_slices_as_expected(
    scenario: str, slices: dict[str, list[str]], tmp_path: Path
) -> None:
    report_path = tmp_path / "r.json"
    run = cli("scenario", "run", f"scenarios/{scenario}.yaml", "--report-json", str(report_path), timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert report["passed"] is True and all(step["passed"] for step in report["steps"])
    assert {s["alias"]: s["domains"] for s in report["slices"]} == slices


def _walk(err: FedError) -> list[FedError]:
    return [err, *(x for c in err.causes for x in _walk(c))]


async def test_refusal_two_levels_down_comes_up_as_a_structured_error_tree(fed: Federation) -> None:
    # T over M over L1 - L2 - L3; L2 refuses every reservation and there is no other way.
    await fed.start("L1", domains=[leaf_domain("L1", {"L2": "1000-1999"})])
    l2 = leaf_domain("L2", {"L1": "1000-1999", "L3": "1000-1999"})
    l2["faults"] = {"fail_at": "reserve"}
    await fed.start("L2", domains=[l2])
    await fed.start("L3", domains=[leaf_domain("L3", {"L2": "1000-1999"})])
    await fed.start("M", lowers=["L1", "L2", "L3"])
    top = await fed.start("T", lowers=["M"])
    await fed.wait_terminals("T", ["L1.ep", "L3.ep"])

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await reserve(top, "deep-refusal", slice_request("L1.ep", "L3.ep", 100))

    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    tree = explanation(info.value)
    assert tree is not None
    assert tree.constraint == "crankback" and tree.code is ErrorCode.RESOURCE_EXHAUSTED
    nodes = _walk(tree)
    # T cranked back around M; M around L2; the leaf's own refusal is at the bottom.
    assert [n.domain for n in tree.causes] == ["M"]
    assert any(n.domain == "L2" and n.message == "injected failure at reserve" for n in nodes)
    assert all(n.code is ErrorCode.RESOURCE_EXHAUSTED for n in nodes)
    # The message says the real cause first, once, then what was tried (the tree keeps the rest).
    said = info.value.details() or ""
    assert said.startswith("[L2] injected failure at reserve"), said
    assert said.count("injected failure at reserve") == 1 and "crankback around" in said
    await fed.assert_idle()


async def test_loop_in_the_trace_is_refused_by_the_sp_that_finds_itself(fed: Federation) -> None:
    await fed.start("L1", domains=[leaf_domain("L1", {"L2": "1000-1999"})])
    await fed.start("L2", domains=[leaf_domain("L2", {"L1": "1000-1999"})])
    top = await fed.start("T", lowers=["L1", "L2"])
    await fed.wait_terminals("T", ["L1.ep", "L2.ep"])
    req = slice_request("L1.ep", "L2.ep", 100)
    req.trace.extend(["X", "T"])

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await reserve(top, "looped", req)

    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert (info.value.details() or "").startswith("loop: the request already passed through T")
    tree = explanation(info.value)
    assert tree is not None and tree.constraint == "loop"


async def test_dry_run_returns_the_plan_with_shares_qos_labels_and_subnets_and_holds_nothing(fed: Federation) -> None:
    await fed.start("L1", domains=[leaf_domain("L1", {"L2": "1000-1999"})])
    await fed.start("L2", domains=[leaf_domain("L2", {"L1": "1500-2999"}, functions={"firewall": 1})])
    top = await fed.start("T", lowers=["L1", "L2"])
    await fed.wait_terminals("T", ["L1.ep", "L2.ep"])
    req = slice_request("L1.ep", "L2.ep", 100, latency_budget_ms=10.0, chain=["firewall"], qos_class="best-effort")

    msg = await top.slices.Reserve(pb.ReserveRequest(request=req, dry_run=True), metadata=ME)

    assert msg.id == "" and msg.state == pb.SLICE_STATE_UNSPECIFIED
    plan = msg.plan
    assert [s.domain for s in plan.segments] == ["L1", "L2"]
    assert list(plan.path) == ["L1.ep", "L1.to-L2", "L2.to-L1", "L2.ep"]
    assert sum(s.latency_share_ms for s in plan.segments) <= 10.0
    assert all(s.latency_share_ms >= s.transit_latency_ms > 0 for s in plan.segments)
    # Lower-SPs publish abstract QoS classes (the native mapping is their own business) ...
    assert all(dict(s.qos_native) == {} for s in plan.segments)
    assert [(p.type, p.domain) for p in plan.placements] == [("firewall", "L2")]
    assert plan.links[0].candidates[0].first == 1500 and plan.links[0].preferred == 1500
    assert {c.port for s in plan.segments for c in s.port_constraints} == {"L1.to-L2", "L2.to-L1"}
    assert len({s.subnet for s in plan.segments}) == 2
    assert (await top.slices.List(pb.ListRequest(), metadata=ME)).slices == []
    # ... and map the class into their domain's mechanism when they plan their own segment.
    below = slice_request("L2.to-L1", "L2.ep", 100, qos_class="best-effort", isolation="shared")
    leaf_plan = (await fed.sps["L2"].slices.Reserve(pb.ReserveRequest(request=below, dry_run=True), metadata=ME)).plan
    assert [(s.domain, dict(s.qos_native), s.isolation) for s in leaf_plan.segments] == [
        ("L2", {"dscp": "0"}, "shared")
    ]
    await fed.assert_idle()


async def test_slice_plan_command_prints_the_plan_as_a_table_and_as_json(leaf: str) -> None:  # noqa: F811
    table = cli("slice", "plan", "scenarios/examples/request.yaml", "--broker", leaf)
    assert table.returncode == 0, table.stderr
    assert "dry run: nothing held" in table.stdout and "demo-leaf.ams" in table.stdout
    as_json = cli("slice", "plan", "scenarios/examples/request.yaml", "--broker", leaf, "--json")
    plan = json.loads(as_json.stdout)["plan"]
    assert [s["domain"] for s in plan["segments"]] == ["demo-leaf"]
    assert plan["segments"][0]["functions"] == ["firewall"]
    usage = json.loads(cli("usage", "--broker", leaf, "--json").stdout)
    assert usage["holding_slices"] == 0 and usage["domains"][0]["bandwidth_mbps"] == 0
    assert isinstance(plan["total_latency_ms"], float) and isinstance(plan["segments"][0]["index"], int)

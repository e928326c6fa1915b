"""Planning through the hierarchy finds what flat planning finds (a differential, property-based test).

Random federations (``slicing.synthetic`` and the real GÉANT 2012, NORDUnet 2010 and Internet2
topologies in ``scenarios/data/topologyzoo``), random groupings of their leaf SPs into two to four
mid-level SPs under one top SP, random requests (bandwidth, latency budget, including the tightest
one the flat optimum meets, chain, price ceiling, an excluded leaf): the flat plan over every leaf
note and ``slicing.hierarchy.plan_through`` (the top plans over the mid-level SPs' abstract notes,
each mid-level SP over its leaves, crankback on refusals) must give the same verdict, the same
constraint named, and for an accepted slice the same money and latency.

Differences that the abstract view documents (``capability_catalog/AUTHORING.md``) are counted,
not failed, each recognised by what causes it:

* ``out-and-back``: the flat path leaves a mid-level SP and comes back in through the port it left
  by (a detour over one link and back, e.g. to reach a function); an abstract note has no entry
  from a port to itself.
* ``slot-twice``: the flat path crosses one leaf twice and both runs want its last slot, so the
  flat planner itself refuses at placement; the hierarchy finds a plan.
* ``exclude-below``: the request excludes a leaf. The top cannot see leaves, so it may pick an
  entry whose path crosses the excluded leaf; the mid-level SP refuses and the top re-plans around
  that run (crankback, at most four plans), which can end on a dearer plan, another constraint
  named or a refusal. Such a case is only required to be sound: nothing realised crosses the
  excluded leaf, exceeds the budget or the price ceiling (checked for every accepted case).

Every other case must agree exactly. Figures (``derandomize=True``, so every run gives the same):
540 cases, 535 agree exactly (269 accepted with equal money and latency; refused alike: 164
bandwidth, 42 path, 27 latency, 21 chain, 12 price), 5 ``exclude-below``. A longer run of the same
generator (2,400 cases, 200 federations) agreed exactly on 2,384; 15 ``exclude-below``, 1
``out-and-back``, no ``slot-twice``.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from functools import cache
from pathlib import Path

import networkx as nx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capability_catalog.canonical import normalised
from capability_catalog.model import CapabilityNote, SpId
from slicing.errors import FedError
from slicing.hierarchy import Realised, Subtree, group, plan_through
from slicing.model import Plan, SliceRequest
from slicing.planner import plan
from slicing.synthetic import synthetic_notes, topology_notes

ZOO = Path(__file__).resolve().parents[2] / "scenarios" / "data" / "topologyzoo"
KINDS = ("synthetic", "synthetic", "Nordu2010", "Internet2", "Geant2012")
REQUESTS_PER_FEDERATION = 12
EXAMPLES = 45


@cache
def leaves_of(kind: str, seed: int) -> tuple[CapabilityNote, ...]:
    """The leaf notes of one federation, as a receiver sees them (canonical grid)."""
    if kind == "synthetic":
        notes = synthetic_notes(random.Random(seed).randint(6, 14), seed)
    else:
        notes = topology_notes(nx.read_graphml(ZOO / f"{kind}.graphml"), seed)
    return tuple(normalised(n) for n in notes.values())


@cache
def tree_of(kind: str, seed: int, assignment: tuple[int, ...], mids: int) -> Subtree:
    return group(SpId("T"), leaves_of(kind, seed), assignment, [SpId(f"M{i}") for i in range(mids)])


def verdict(run: object) -> tuple[str, object]:
    try:
        return "accepted", run() if callable(run) else run
    except FedError as exc:
        return "refused", exc


def mid_runs(p: Plan, tree: Subtree) -> list[tuple[SpId, str, str]]:
    """The flat path cut into maximal runs per mid-level SP: (mid, where it enters, where it leaves)."""
    mid_of = {leaf.sp_id: m.sp for m in tree.children if isinstance(m, Subtree) for leaf in m.children}  # type: ignore[union-attr]
    out: list[tuple[SpId, str, str]] = []
    for seg in p.segments:
        mid = mid_of[seg.domain]
        if out and out[-1][0] == mid:
            out[-1] = (mid, out[-1][1], seg.request.dst)
        else:
            out.append((mid, seg.request.src, seg.request.dst))
    return out


def compare(req: SliceRequest, leaves: dict[SpId, CapabilityNote], tree: Subtree) -> str:
    """``agree:...`` or ``explained:...``; raises AssertionError on an unexplained difference."""
    flat = verdict(lambda: plan(req, leaves))
    hier = verdict(lambda: plan_through(req, tree))
    if isinstance(hier[1], Realised):
        _assert_sound(req, hier[1])
    loop = isinstance(flat[1], Plan) and any(a == b for _, a, b in mid_runs(flat[1], tree))
    if isinstance(flat[1], Plan) and isinstance(hier[1], Realised):
        f, h = flat[1], hier[1]
        same_money = abs(f.cost.money_per_hour - h.money_per_hour) <= 1e-6 * max(1.0, f.cost.money_per_hour)
        if same_money and abs(f.total_latency_ms - h.latency_ms) <= 1e-6:
            return "agree:accepted"
    elif isinstance(flat[1], FedError) and isinstance(hier[1], FedError) and flat[1].constraint == hier[1].constraint:
        return f"agree:refused:{flat[1].constraint}"
    if req.exclude_sps:
        return "explained:exclude-below"
    if loop:
        return "explained:out-and-back"
    if isinstance(flat[1], FedError) and "no free slot left in" in str(flat[1]):
        return "explained:slot-twice"
    raise AssertionError(f"{req}: flat {flat}, hierarchy {hier}")


def _assert_sound(req: SliceRequest, h: Realised) -> None:
    """Whatever the hierarchy accepts keeps the request's promises at the leaves."""
    assert not {sp for sp, _, _ in h.leaf_runs} & set(req.exclude_sps), (req, h)
    if req.latency_budget_ms is not None:
        assert h.latency_ms <= req.latency_budget_ms + 1e-6, (req, h)
    if req.max_price_per_hour > 0:
        assert h.money_per_hour <= req.max_price_per_hour * (1 + 1e-9), (req, h)


def requests(rng: random.Random, leaves: dict[SpId, CapabilityNote]) -> list[SliceRequest]:
    eps = sorted(e.id for n in leaves.values() for e in n.endpoints)
    out = []
    for _ in range(REQUESTS_PER_FEDERATION):
        src, dst = rng.sample(eps, 2)
        req = SliceRequest(
            src,
            dst,
            rng.choice((100, 500, 1000, 2500, 5000)),
            latency_budget_ms=rng.choice((None, rng.uniform(0.5, 40.0))),
            chain=tuple(rng.choice(("fw", "nat")) for _ in range(rng.choice((0, 0, 1, 2)))),
            max_price_per_hour=rng.choice((0.0, 0.0, rng.uniform(5.0, 3000.0))),
            subnet="10.0.0.0/8",
        )
        mode = rng.random()
        if mode < 0.15:
            others = [sp for sp in sorted(leaves) if sp not in (src.split(".")[0], dst.split(".")[0])]
            req = dataclasses.replace(req, exclude_sps=(rng.choice(others),))
        elif mode < 0.4:  # the tightest budget: exactly the flat optimum's latency, no slack anywhere
            try:
                best = plan(dataclasses.replace(req, latency_budget_ms=None, max_price_per_hour=0.0), leaves)
            except FedError:
                pass
            else:
                if best.total_latency_ms > 0:
                    req = dataclasses.replace(req, latency_budget_ms=best.total_latency_ms, max_price_per_hour=0.0)
        out.append(req)
    return out


def test_planning_through_two_levels_agrees_with_flat_planning() -> None:
    tally: Counter[str] = Counter()

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
    @given(
        kind=st.sampled_from(KINDS),
        seed=st.integers(0, 3),
        mids=st.integers(2, 4),
        salt=st.integers(0, 2**32 - 1),
    )
    def case(kind: str, seed: int, mids: int, salt: int) -> None:
        leaves = leaves_of(kind, seed)
        rng = random.Random(salt)
        assignment = tuple(rng.randrange(mids) for _ in leaves)
        tree = tree_of(kind, seed, assignment, mids)
        by_sp = {n.sp_id: n for n in leaves}
        for req in requests(rng, by_sp):
            tally[compare(req, by_sp, tree)] += 1

    case()
    total = sum(tally.values())
    explained = sum(n for k, n in tally.items() if k.startswith("explained:"))
    print(f"hierarchy vs flat: {total} cases, {total - explained} agree exactly, {dict(sorted(tally.items()))}")
    assert total >= 500
    assert tally["agree:accepted"] >= 100  # the generator reaches accepted slices, not only refusals
    assert explained <= total // 50  # documented differences stay rare (under 2 %)

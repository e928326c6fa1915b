"""Property tests of the planner on random multi-domain graphs, against an independent brute force.

Every accepted plan is checked constraint by constraint; on graphs of up to 8 SPs its cost (money,
then latency) equals the best over every walk a brute force enumerates, and a refusal means the
brute force found nothing either. Latencies are whole milliseconds and prices whole cents, so sums
are exact and the comparison needs no tolerance beyond float printing.
"""

from __future__ import annotations

import ipaddress
import itertools
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capability_catalog.model import (
    BorderPort,
    CapabilityNote,
    Endpoint,
    FunctionOffer,
    Isolation,
    LabelRange,
    LabelSet,
    QosClass,
    SpId,
    TerminalId,
    Transit,
)
from slicing.errors import FedError, InvalidArgument
from slicing.model import Plan, SliceRequest
from slicing.planner import link_key, plan
from slicing.synthetic import synthetic_notes, synthetic_request

ISO = list(Isolation)
TYPES = ("fw", "nat")


@dataclass(frozen=True)
class Case:
    notes: dict[SpId, CapabilityNote]
    request: SliceRequest
    used: dict[tuple[str, str], set[int]]


def build_case(seed: int, n: int) -> Case:
    """A random federation of ``n`` SPs (some ports one-sided, some links thin or label-less) and a request."""
    rng = random.Random(seed)
    sps = [SpId(f"P{i}") for i in range(n)]
    pairs = [(a, b) for a, b in itertools.combinations(range(n), 2) if rng.random() < min(0.9, 3.2 / max(1, n - 1))]
    ports: dict[int, list[BorderPort]] = {i: [] for i in range(n)}
    for a, b in pairs:
        base = rng.choice((100, 200, 300))
        for x, y in ((a, b), (b, a)):
            lo = base + rng.choice((0, 0, 0, 0, 1, 50))
            ports[x].append(
                BorderPort(
                    TerminalId(f"{sps[x]}.to-{sps[y]}"),
                    sps[y],
                    TerminalId(f"{sps[y]}.to-{sps[x]}"),
                    labels=LabelSet((LabelRange(lo, lo + rng.choice((1, 2, 5))),)),
                    can_swap=rng.random() < 0.2,
                    capacity_mbps=rng.choice((50, *[1000] * 6)),
                )
            )
    notes: dict[SpId, CapabilityNote] = {}
    for i, sp in enumerate(sps):
        eps = (Endpoint(TerminalId(f"{sp}.ep")),) if rng.random() < 0.8 or i < 2 else ()
        terms = [e.id for e in eps] + [p.id for p in ports[i]]
        transit = []
        for a, b in itertools.combinations(terms, 2):
            for _ in range(rng.choice((0, 1, 1, 1, 1, 2))):  # some pairs missing, some stated twice
                transit.append(Transit(a, b, float(rng.randint(1, 9)), rng.choice((50, *[1000] * 6))))
        functions = tuple(
            FunctionOffer(t, f"{sp}-s", 2, rng.choice((0, 0, 150, 1000))) for t in TYPES if rng.random() < 0.4
        )
        policy: tuple[tuple[str, str], ...] = ()
        peers = [p.peer_sp for p in ports[i]]
        if len(peers) >= 2 and rng.random() < 0.15:
            policy = (tuple(rng.sample(peers, 2)),)  # type: ignore[assignment]
        notes[sp] = CapabilityNote(
            sp_id=sp,
            version=1,
            issued_at=0.0,
            expires_at=1e9,
            endpoints=eps,
            ports=tuple(ports[i]),
            transit=tuple(transit),
            functions=functions,
            qos_classes=tuple(
                QosClass(q, (("dscp", str(10 + i)),)) for q in ("be", "gold") if q == "be" or rng.random() < 0.9
            ),
            isolation=tuple(sorted(rng.sample(ISO, rng.randint(2, 4)), key=ISO.index)),
            transit_policy=policy,
            price_per_mbps_hour=rng.choice((None, 0.01, 0.02, 0.05, 0.1)),
        )
    endpoints = sorted(e.id for nt in notes.values() for e in nt.endpoints)
    src, dst = rng.sample(endpoints, 2)
    used: dict[tuple[str, str], set[int]] = {}
    for a, b in pairs:
        if rng.random() < 0.3:
            used[link_key(f"{sps[a]}.to-{sps[b]}", f"{sps[b]}.to-{sps[a]}")] = {rng.randint(100, 360)}
    chain = tuple(rng.choice(TYPES) for _ in range(rng.choice((0, 1, 1, 2))))
    middle = [s for s in sps if s not in (src.split(".")[0], dst.split(".")[0])]
    include = (rng.choice(middle),) if middle and rng.random() < 0.15 else ()
    request = SliceRequest(
        src=src,
        dst=dst,
        bandwidth_mbps=rng.choice((10, 100)),
        reverse_bandwidth_mbps=rng.choice((0, 0, 40, 200)),
        latency_budget_ms=rng.choice((None, None, 8.0, 15.0, 25.0)),
        chain=chain,
        chain_throughput_mbps=tuple(rng.choice((0, 100, 500)) for _ in chain),
        subnet="10.20.0.0/20",
        qos_class=rng.choice(("", "", "be", "gold")),
        isolation=rng.choice((None, None, None, *ISO[:3])),
        include_sps=include,
        exclude_sps=tuple(s for s in middle if s not in include and rng.random() < 0.1),
        max_price_per_hour=rng.choice((0.0, 0.0, 10.0, 30.0)),
    )
    return Case(notes, request, used)


# --- the brute force: every walk, every constraint checked from the notes directly ----------------


def _owner(notes: Mapping[SpId, CapabilityNote]) -> dict[str, SpId]:
    return {t: sp for sp, n in notes.items() for t in n.terminals()}


def _sp_allowed(note: CapabilityNote, req: SliceRequest) -> bool:
    if note.sp_id in req.exclude_sps:
        return False
    if req.qos_class and req.qos_class not in {q.name for q in note.qos_classes}:
        return False
    return req.isolation is None or any(ISO.index(i) >= ISO.index(req.isolation) for i in note.isolation)


def _fastest_transit(note: CapabilityNote, a: str, b: str, need: int) -> float | None:
    lats = [t.latency_ms for t in note.transit if {t.a, t.b} == {a, b} and a != b and t.bandwidth_mbps >= need]
    return min(lats) if lats else None


def _link_usable(pa: BorderPort, pb: BorderPort, need: int, taken: set[int]) -> bool:
    if min(pa.capacity_mbps, pb.capacity_mbps) < need:
        return False
    common = [x for x in pa.labels if x in pb.labels and x not in taken]
    if common:
        return True
    if not (pa.can_swap or pb.can_swap):
        return False
    return any(x not in taken for x in pa.labels) and any(x not in taken for x in pb.labels)


def _chain_fits(runs: Sequence[SpId], notes: Mapping[SpId, CapabilityNote], req: SliceRequest) -> bool:
    """Exhaustively: can the chain be assigned to runs in order, within each SP's slots over the walk?"""
    fns = req.functions()

    def place(k: int, at: int, used: dict[tuple[SpId, int], int]) -> bool:
        if k == len(fns):
            return True
        for r in range(at, len(runs)):
            sp = runs[r]
            for j, o in enumerate(notes[sp].functions):
                ok = o.type == fns[k].type and (o.throughput_mbps == 0 or o.throughput_mbps >= fns[k].throughput_mbps)
                if ok and o.slots - used.get((sp, j), 0) > 0:
                    used[(sp, j)] = used.get((sp, j), 0) + 1
                    if place(k + 1, r, used):
                        return True
                    used[(sp, j)] -= 1
        return False

    return place(0, 0, {})


def brute_force(case: Case, max_visits: int = 1) -> tuple[float, float] | None:
    """The least (money, latency) over walks that visit each entry terminal at most ``max_visits`` times."""
    notes, req = case.notes, case.request
    owner = _owner(notes)
    need = req.edge_mbps
    port_of = {p.id: p for n in notes.values() for p in n.ports}
    best: tuple[float, float] | None = None

    def peer_sp(t: str) -> str | None:
        p = port_of.get(t)
        return p.peer_sp if p is not None else None

    def walk(u: str, runs: list[SpId], lat: float, money: float, visits: dict[str, int]) -> None:
        nonlocal best
        if req.latency_budget_ms is not None and lat > req.latency_budget_ms:
            return
        if best is not None and (round(money, 6), lat) >= best:  # branch and bound: costs only grow
            return
        sp = owner[u]
        note = notes[sp]
        if not _sp_allowed(note, req):
            return
        for v in note.terminals():
            t_lat = _fastest_transit(note, u, v, need)
            if t_lat is None:
                continue
            run_money = (note.price_per_mbps_hour or 0.0) * (req.bandwidth_mbps + req.reverse_mbps)
            if v == req.dst:
                a, b = peer_sp(u), peer_sp(v)
                if note.transit_policy and a and b and not note.carries(a, b):
                    continue
                total_runs = [*runs, sp]
                t_total, m_total = lat + t_lat, money + run_money
                if req.latency_budget_ms is not None and t_total > req.latency_budget_ms:
                    continue
                if req.max_price_per_hour > 0 and m_total > req.max_price_per_hour + 1e-9:
                    continue
                if not set(req.include_sps) <= set(total_runs) or not _chain_fits(total_runs, notes, req):
                    continue
                cand = (round(m_total, 6), t_total)
                if best is None or cand < best:
                    best = cand
                continue
            pv = port_of.get(v)
            if pv is None or owner.get(pv.peer_port) is None:
                continue
            pw = port_of.get(pv.peer_port)
            if pw is None or pw.peer_port != v or owner[pw.id] == sp:
                continue
            if not _link_usable(pv, pw, need, case.used.get(link_key(v, pw.id), set())):
                continue
            a = peer_sp(u)
            if note.transit_policy and a and not note.carries(a, owner[pw.id]):
                continue
            if visits.get(pw.id, 0) >= max_visits:
                continue
            visits[pw.id] = visits.get(pw.id, 0) + 1
            walk(pw.id, [*runs, sp], lat + t_lat, money + run_money, visits)
            visits[pw.id] -= 1

    walk(req.src, [], 0.0, 0.0, {req.src: 1})
    return best


# --- what every accepted plan must satisfy --------------------------------------------------------


def check_plan(case: Case, p: Plan) -> None:
    notes, req = case.notes, case.request
    need = req.edge_mbps
    port_of = {pt.id: pt for n in notes.values() for pt in n.ports}
    assert p.segments[0].request.src == req.src and p.segments[-1].request.dst == req.dst
    for seg, nxt in itertools.pairwise(p.segments):  # consecutive segments meet over a declared link
        a, b = port_of[seg.request.dst], port_of[nxt.request.src]
        assert a.peer_port == b.id and b.peer_port == a.id
        assert min(a.capacity_mbps, b.capacity_mbps) >= need  # bandwidth on the link
    lats: list[float] = []
    for seg in p.segments:
        note = notes[seg.domain]
        lat = _fastest_transit(note, seg.request.src, seg.request.dst, need)
        assert lat is not None and lat == seg.transit_latency_ms  # bandwidth inside the SP
        lats.append(lat)
        assert seg.domain not in req.exclude_sps
        if req.qos_class:
            qos = note.qos_class(req.qos_class)
            assert qos is not None and seg.qos_native == qos.native
        if req.isolation is not None:
            assert seg.isolation in note.isolation and ISO.index(seg.isolation) >= ISO.index(req.isolation)
        assert seg.request.bandwidth_mbps == req.bandwidth_mbps and seg.request.reverse_mbps == req.reverse_mbps
    latency = math.fsum(lats)  # the planner sums latencies exactly, whatever their order
    assert p.total_latency_ms == latency
    if req.latency_budget_ms is not None:
        assert latency <= req.latency_budget_ms + 1e-6
        shares = [s.latency_share_ms for s in p.segments]
        assert math.fsum(shares) <= req.latency_budget_ms
        assert all(s.latency_share_ms >= s.transit_latency_ms for s in p.segments)
        assert all(s.request.latency_budget_ms == s.latency_share_ms for s in p.segments)
    assert set(req.include_sps) <= {s.domain for s in p.segments}
    if req.max_price_per_hour > 0:
        assert p.cost.money_per_hour <= req.max_price_per_hour + 1e-9
    # chain order: function i placed in a segment no earlier than function i-1, at an SP offering it
    assert [pl.index for pl in p.placements] == list(range(len(req.chain)))
    seg_of = []
    for i, seg in enumerate(p.segments):
        seg_of += [i] * len(seg.request.chain)
    assert seg_of == sorted(seg_of)
    assert tuple(t for s in p.segments for t in s.request.chain) == req.chain
    for pl, fn in zip(p.placements, req.functions(), strict=True):
        assert any(o.type == fn.type and o.site == pl.site for o in notes[pl.domain].functions)
    # labels: both ports of each link agree (or one swaps), nothing already taken
    constraints = {c.port: c for s in p.segments for c in s.request.port_constraints}
    for ln in p.links:
        ca, cb = constraints[ln.a_port], constraints[ln.b_port]
        taken = case.used.get(link_key(ln.a_port, ln.b_port), set())
        assert ca.labels and cb.labels
        assert not any(x in taken for x in itertools.chain(ca.labels, cb.labels))
        assert all(x in port_of[ln.a_port].labels for x in ca.labels)
        assert all(x in port_of[ln.b_port].labels for x in cb.labels)
        if not (ln.a_can_swap or ln.b_can_swap):
            assert ca.labels == cb.labels and ln.preferred in ca.labels
    # subnets: inside the slice's, pairwise disjoint
    whole = ipaddress.IPv4Network(req.subnet)
    nets = [ipaddress.IPv4Network(s.request.subnet) for s in p.segments]
    assert all(n.subnet_of(whole) for n in nets)
    assert all(not a.overlaps(b) for a, b in itertools.combinations(nets, 2))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 8))
def test_plan_is_valid_and_as_cheap_as_brute_force_on_small_graphs(seed: int, n: int) -> None:
    case = build_case(seed, n)
    best = brute_force(case)
    try:
        p = plan(case.request, case.notes, used_labels=case.used)
    except InvalidArgument as exc:  # only for a function type no note offers at all
        offered = {f.type for note in case.notes.values() for f in note.functions}
        assert exc.field.startswith("request.chain[") and set(case.request.chain) - offered, exc
        assert best is None
        return
    except FedError as exc:
        assert best is None, f"planner refused ({exc}) but a walk costs {best}"
        assert exc.constraint, "a refusal names the constraint"
        return
    check_plan(case, p)
    # The brute force enumerates walks entering each terminal at most once; a plan that re-enters
    # one (to fetch a function and come back) is outside that set and only checked for validity.
    entries = [s.request.src for s in p.segments]
    if len(entries) == len(set(entries)):
        assert best is not None, f"brute force found nothing, planner found {p.cost}"
        assert (round(p.cost.money_per_hour, 6), p.cost.latency_ms) == best
    elif best is not None:
        assert (round(p.cost.money_per_hour, 6), p.cost.latency_ms) <= best


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**16),
    n=st.integers(20, 150),
    budget=st.sampled_from([None, 15.0, 25.0, 40.0]),
    qos=st.sampled_from(["", "gold"]),
)
def test_plans_on_synthetic_federations_satisfy_every_constraint(
    seed: int, n: int, budget: float | None, qos: str
) -> None:
    notes = synthetic_notes(n, seed)
    request = synthetic_request(notes, seed + 1, latency_budget_ms=budget, qos_class=qos)
    try:
        p = plan(request, notes)
    except FedError as exc:
        assert exc.constraint in {"latency", "qos", "chain", "labels", "bandwidth", "path"}
        return
    check_plan(Case(notes, request, {}), p)


def _mean_latency(note: CapabilityNote) -> float:
    return math.fsum(t.latency_ms for t in note.transit) / len(note.transit) if note.transit else 0.0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(3, 8), where=st.floats(0.0, 1.0))
def test_budget_between_fastest_and_cheapest_gets_the_cheapest_path_within_it(seed: int, n: int, where: float) -> None:
    base = build_case(seed, n)
    # Fast SPs dear, slow ones cheap: the trade-off a latency budget has to settle.
    # Fewer other constraints, so that more cases have several routes to choose from.
    priced = {
        sp: replace(nt, price_per_mbps_hour=max(1, 12 - round(_mean_latency(nt))) / 100, transit_policy=())
        for sp, nt in base.notes.items()
    }
    request = replace(
        base.request,
        bandwidth_mbps=10,
        reverse_bandwidth_mbps=0,
        qos_class="",
        isolation=None,
        include_sps=(),
        exclude_sps=(),
        latency_budget_ms=None,
        max_price_per_hour=0.0,
    )
    base = Case(priced, request, {})
    free = {sp: replace(nt, price_per_mbps_hour=None) for sp, nt in base.notes.items()}
    try:
        cheapest = plan(request, base.notes, used_labels=base.used)
        fastest = plan(request, free, used_labels=base.used)  # unpriced: latency decides
    except FedError:
        return
    if cheapest.total_latency_ms <= fastest.total_latency_ms:
        return  # the cheapest path is also the fastest: nothing for a budget to trade off
    budget = float(
        math.floor(fastest.total_latency_ms + where * (cheapest.total_latency_ms - fastest.total_latency_ms))
    )
    case = Case(base.notes, replace(request, latency_budget_ms=max(budget, fastest.total_latency_ms)), base.used)
    p = plan(case.request, case.notes, used_labels=case.used)
    check_plan(case, p)
    best = brute_force(case)
    entries = [s.request.src for s in p.segments]
    if best is not None and len(entries) == len(set(entries)):
        assert (round(p.cost.money_per_hour, 6), p.cost.latency_ms) == best
    elif best is not None:
        assert (round(p.cost.money_per_hour, 6), p.cost.latency_ms) <= best

"""``python -m scenarios.zoo OUT.yaml``: the GÉANT hierarchy scenario, with expectations from flat planning.

GÉANT 2012 (``scenarios/data/topologyzoo``, CC BY 4.0, see its README): one leaf SP per node, one
pop each with its endpoint and a border port per neighbour (0 ms transit), the fibre latency (5 µs
per km between the nodes' coordinates) and capacity (the link speed) stated on both border ports;
prices drawn per leaf. The leaves are grouped west to east under three mid-level SPs under T.
Each request's expectation is what flat planning over every leaf's own note decides (the leaves
on the path, or the refusal), so running the scenario checks, once through real processes, that
planning through the hierarchy finds what flat planning finds.
"""

from __future__ import annotations

import random
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import networkx as nx
import yaml

from capability_catalog.model import SpId, TerminalId
from domain_agents.emulated import EmulatedDomainAgent
from domain_agents.emulated_config import EmulatedDomainConfig
from slicing.errors import FedError
from slicing.model import SliceRequest
from slicing.planner import plan
from slicing.synthetic import regional_groups, topology_notes

TOPOLOGY = Path(__file__).resolve().parent / "data" / "topologyzoo" / "Geant2012.graphml"
MIDS = 3


def leaf_domains(seed: int = 1) -> list[dict[str, Any]]:
    """The emulated domain of every GÉANT node, from the same notes the in-process tests use."""
    out = []
    for sp, note in topology_notes(nx.read_graphml(TOPOLOGY), seed, function_share=0.0).items():
        out.append(
            {
                "id": sp,
                "pops": ["p"],
                "links": [],
                "endpoints": [
                    {"id": e.id, "pop": "p", "region": e.region, "capacity_mbps": 100_000} for e in note.endpoints
                ],
                "ports": [
                    {
                        "id": p.id,
                        "pop": "p",
                        "peer_sp": p.peer_sp,
                        "peer_port": p.peer_port,
                        "labels": ["1000-1999"],
                        "capacity_mbps": p.capacity_mbps,
                        "latency_ms": p.latency_ms,
                    }
                    for p in note.ports
                ],
                "offer": {"price_per_mbps_hour": note.price_per_mbps_hour or 0.0},
            }
        )
    return out


def scenario(seed: int = 1, requests: int = 6) -> dict[str, Any]:
    """The scenario as data."""
    graph = nx.read_graphml(TOPOLOGY)
    domains = leaf_domains(seed)
    groups = regional_groups(graph, MIDS)
    notes = {
        SpId(d["id"]): EmulatedDomainAgent(EmulatedDomainConfig.from_dict(d, d["id"]), lambda: 0.0).note
        for d in domains
    }
    sps: list[dict[str, Any]] = [{"id": "T", "lower": [f"M{i}" for i in range(MIDS)]}]
    sps += [
        {"id": f"M{i}", "lower": [d["id"] for d, g in zip(domains, groups, strict=True) if g == i]} for i in range(MIDS)
    ]
    sps += [{"id": d["id"], "domains": [d]} for d in domains]
    endpoints = sorted(str(e.id) for n in notes.values() for e in n.endpoints)
    steps: list[dict[str, Any]] = [
        {"name": "T sees every endpoint", "wait_catalog": {"sp": "T", "terminals": endpoints}},
    ]
    rng = random.Random(seed)
    for k in range(requests):
        src, dst = rng.sample(endpoints, 2)
        req = SliceRequest(TerminalId(src), TerminalId(dst), 100, subnet=f"10.{20 + k}.0.0/16")
        fastest = plan(
            replace(req, latency_budget_ms=None), {sp: replace(n, price_per_mbps_hour=None) for sp, n in notes.items()}
        )
        # Every other request gets a budget just above the fastest path: cheap paths no longer fit.
        budget = (
            round(fastest.total_latency_ms * 1.05 + 0.01, 3)
            if k % 2
            else (round(fastest.total_latency_ms * 0.9, 3) if k == 4 else None)
        )
        req = replace(req, latency_budget_ms=budget)
        body: dict[str, Any] = {"name": f"r{k}", "src": src, "dst": dst, "bandwidth_mbps": 100, "subnet": req.subnet}
        if budget is not None:
            body["latency_budget_ms"] = budget
        step: dict[str, Any] = {
            "name": f"request {k}: {src} → {dst}",
            "request": {"sp": "T", "as": f"r{k}", "slice": body},
        }
        try:
            flat = plan(req, notes)
        except FedError as exc:
            step["expect"] = {"error": str(exc.code), "message_contains": f"{exc.constraint}:"}
            steps.append(step)
            continue
        leaves = sorted({s.domain for s in flat.segments})
        step["expect"] = {
            "state": "HELD",
            "leaf_sps_include": leaves,
            "leaf_sps_min": len(leaves),
            "labels_agree": True,
        }
        steps += [step, {"name": f"release {k}", "abort": {"sp": "T", "slice": f"r{k}"}}]
    steps.append({"name": "nothing stays held anywhere", "expect_idle": {"sps": "all"}, "always": True})
    return {
        "name": "geant-hierarchy",
        "description": "GÉANT 2012's 40 networks as leaf SPs under three regional mid-level SPs; each request "
        "is held on the leaves flat planning picks, or refused for the same constraint.",
        "sps": sps,
        "steps": steps,
    }


def main(argv: list[str] | None = None) -> int:
    """Write the scenario file."""
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0] if args else "scenarios/geant-hierarchy.yaml")
    header = "# Generated by `python -m scenarios.zoo` from scenarios/data/topologyzoo/Geant2012.graphml (CC BY 4.0).\n"
    out.write_text(header + yaml.safe_dump(scenario(), sort_keys=False, allow_unicode=True, width=120))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

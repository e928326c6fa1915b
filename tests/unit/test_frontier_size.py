"""The frontier cap is chosen by measurement: real groupings never reach it, and note sizes are known.

Measured (uncapped, ``capability_catalog.frontier.frontiers``) over GÉANT 2012, NORDUnet 2010,
Internet2 and synthetic federations, seeds 0-3, grouped into 2, 3 and 4 mid-level SPs: 55,647
frontiers (pair x route sequence); 41,702 held one path, 7,206 two, 606 three, 230 four, 113 five,
27 six (all GÉANT), and one GÉANT grouping into two mid-level SPs held seven; none more.
``FRONTIER_CAP`` = 8 therefore cuts nothing there and leaves one entry of headroom. Abstract note
sizes (canonical bytes) with 3-5 mid-level SPs: GÉANT largest 560,658 (13 leaves), median 29,256;
Internet2 largest 38,559; NORDUnet 18,995; synthetic (6-14 leaves) 73,200.
"""

from __future__ import annotations

import random

from capability_catalog.canonical import note_to_canonical
from capability_catalog.frontier import FRONTIER_CAP, frontiers, route_sequences
from capability_catalog.model import CapabilityNote, SpId, TerminalId
from tests.unit.test_hierarchy_vs_flat import leaves_of, tree_of


def exposed_of(children: dict[SpId, CapabilityNote]) -> list[TerminalId]:
    owner = {p.id: n.sp_id for n in children.values() for p in n.ports}
    ends = {e.id for n in children.values() for e in n.endpoints}
    ports = {p.id for n in children.values() for p in n.ports if owner.get(p.peer_port, n.sp_id) == n.sp_id}
    return sorted(ends | ports)


def test_no_frontier_of_a_real_grouping_reaches_the_cap() -> None:
    longest = 0
    for kind, seed, mids in (("Geant2012", 2, 2), ("Geant2012", 0, 3), ("Internet2", 1, 2), ("synthetic", 3, 2)):
        leaves = leaves_of(kind, seed)
        rng = random.Random(seed * 10 + mids)
        assignment = [rng.randrange(mids) for _ in leaves]
        for i in range(mids):
            children = {n.sp_id: n for n, k in zip(leaves, assignment, strict=True) if k == i}
            seqs = route_sequences({f.type for n in children.values() for f in n.functions if f.slots > 0})
            for front in frontiers(children, exposed_of(children), seqs).values():
                longest = max(longest, len(front))
    assert 2 <= longest < FRONTIER_CAP  # the view keeps more than one path, and the cap cuts none here


def test_mid_level_note_sizes_stay_within_a_grpc_message() -> None:
    leaves = leaves_of("Geant2012", 0)
    rng = random.Random(3)
    tree = tree_of("Geant2012", 0, tuple(rng.randrange(3) for _ in leaves), 3)
    sizes = {m.sp: len(note_to_canonical(m.note)) for m in tree.children}  # type: ignore[union-attr]
    print("note bytes per mid-level SP (GÉANT, 3 mid-level SPs):", sizes)
    assert max(sizes.values()) < 4 * 1024 * 1024  # gRPC's default receive limit

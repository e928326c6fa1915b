"""A leaf serving the note its operator wrote: the authored note with the domain's live capacity applied.

A leaf's domain may point at a note file in the authoring format (``AUTHORING.md``); what the
operator validated with ``fedbroker catalog validate`` is then what the leaf publishes. The
authored note says what is sold and how it is described (endpoint regions and locations, border
ports with their label ranges, local label ranges and link latency, transit latency between
terminals, function sites and per-instance throughput, QoS classes, validity); the domain says
how much of it is free now. Each note the domain issues is ``serve(authored, live)``:

* endpoints and border ports as authored (their capacity at most the domain's, their labels those
  of the authored ranges the domain has free);
* the authored figures of transit bandwidth and function instances are the share of the domain
  sold; what slices take off the domain comes off that share: published is the authored figure
  less what is taken (the domain's full figure less its free one), never below 0 nor above what
  the domain has free now (a cloud's other tenants take capacity too);
* transit latency as authored (a promise the domain must be able to keep); the domain's routed
  entries (a path through the pops of a function) for the terminals and function types the note
  sells, never faster nor wider than the authored transit of their pair;
* the offer policy (QoS, isolation, address pools, transit policy, price, withdrawal) from the
  live note, which is the domain's current offer: the file's at start, an operator's edit after.

``served_problems`` checks, before a broker starts, that the domain can keep every promise of the
authored note; each problem names the authored field (``transit[0].latency_ms: …``).
"""

from __future__ import annotations

from dataclasses import replace

from capability_catalog.model import CapabilityNote, Endpoint, FunctionOffer, LabelSet, Transit

#: Float sums of a path's latency may land a hair below the authored figure.
_LATENCY_SLACK_MS = 1e-9


def _plain(note: CapabilityNote) -> dict[frozenset[str], Transit]:
    return {frozenset((t.a, t.b)): t for t in note.transit if not t.functions}


def served_problems(authored: CapabilityNote, live: CapabilityNote) -> list[str]:
    """Every promise of ``authored`` that the domain (its note ``live`` with nothing held) cannot keep."""
    problems: list[str] = []
    if authored.sp_id != live.sp_id:
        problems.append(f"sp_id: '{authored.sp_id}' is not this domain's id '{live.sp_id}'")
    endpoints = {e.id: e for e in live.endpoints}
    for i, e in enumerate(authored.endpoints):
        have = endpoints.get(e.id)
        if have is None:
            known = ", ".join(sorted(endpoints)) or "none"
            problems.append(f"endpoints[{i}].id: '{e.id}' is not an endpoint of the domain (its endpoints: {known})")
        elif e.capacity_mbps > have.capacity_mbps:
            problems.append(
                f"endpoints[{i}].capacity_mbps: {e.capacity_mbps} is more than the domain's {have.capacity_mbps}"
            )
    ports = {p.id: p for p in live.ports}
    for i, p in enumerate(authored.ports):
        at = f"border_ports[{i}]"
        port = ports.get(p.id)
        if port is None:
            known = ", ".join(sorted(ports)) or "none"
            problems.append(f"{at}.id: '{p.id}' is not a border port of the domain (its ports: {known})")
            continue
        for name, mine, theirs in (
            ("peer_sp", p.peer_sp, port.peer_sp),
            ("peer_port", p.peer_port, port.peer_port),
            ("label_type", p.label_type, port.label_type),
            ("can_swap", p.can_swap, port.can_swap),
        ):
            if mine != theirs:
                problems.append(f"{at}.{name}: {mine!r} differs from the domain's port, which has {theirs!r}")
        if len(p.labels.intersect(port.labels)) != len(p.labels):
            problems.append(
                f"{at}.label_ranges: {_ranges(p.labels)} are not all among the labels the domain can use at "
                f"{p.id} ({_ranges(port.labels)})"
            )
        if p.capacity_mbps > port.capacity_mbps:
            problems.append(f"{at}.capacity_mbps: {p.capacity_mbps} is more than the domain's {port.capacity_mbps}")
    paths = _plain(live)
    for i, t in enumerate(authored.transit):
        path = paths.get(frozenset((t.a, t.b)))
        if path is None:
            if t.a in endpoints.keys() | ports.keys() and t.b in endpoints.keys() | ports.keys():
                problems.append(f"transit[{i}]: the domain has no path between {t.a} and {t.b}")
            continue  # an undeclared terminal is already named at its endpoint or port
        if t.latency_ms + _LATENCY_SLACK_MS < path.latency_ms:
            problems.append(
                f"transit[{i}].latency_ms: {t.latency_ms:g} is less than the domain's path between {t.a} and "
                f"{t.b} takes ({path.latency_ms:g} ms); promise at least that"
            )
        if t.bandwidth_mbps > path.bandwidth_mbps:
            problems.append(
                f"transit[{i}].bandwidth_mbps: {t.bandwidth_mbps} is more than the domain carries between {t.a} "
                f"and {t.b} ({path.bandwidth_mbps})"
            )
    slots = {(f.type, f.site): f for f in live.functions}
    for i, f in enumerate(authored.functions):
        have_fn = slots.get((f.type, f.site))
        if have_fn is None:
            known = ", ".join(f"{t} at {s}" for t, s in sorted(slots)) or "none"
            problems.append(f"hosting[{i}]: the domain hosts no {f.type} at {f.site} (it hosts: {known})")
        elif f.slots > have_fn.slots:
            problems.append(f"hosting[{i}].instances: {f.slots} is more than the domain's {have_fn.slots} slots")
    return problems


def serve(authored: CapabilityNote, live: CapabilityNote, full: CapabilityNote) -> CapabilityNote:
    """The note to publish now: ``authored`` with the offer of ``live`` and what is taken since ``full`` applied.

    ``full`` is the domain's note with nothing held, ``live`` its note now.
    """
    if not (live.endpoints or live.ports):  # withdrawn: sells nothing, whatever the file says
        return live
    endpoints = {e.id: e for e in live.endpoints}
    ports = {p.id: p for p in live.ports}
    served_endpoints = tuple(
        Endpoint(e.id, e.region, min(e.capacity_mbps, endpoints[e.id].capacity_mbps), e.location)
        for e in authored.endpoints
        if e.id in endpoints
    )
    # The labels sold that the domain has free now (a cloud's other networks may use some).
    served_ports = tuple(
        replace(
            p,
            capacity_mbps=min(p.capacity_mbps, ports[p.id].capacity_mbps),
            labels=p.labels.intersect(ports[p.id].labels),
        )
        for p in authored.ports
        if p.id in ports
    )
    sold = {t.id for t in served_endpoints} | {p.id for p in served_ports}
    paths, whole = _plain(live), _plain(full)
    transit: list[Transit] = []
    promised: dict[frozenset[str], Transit] = {}
    for t in authored.transit:
        key = frozenset((t.a, t.b))
        path = paths.get(key)
        if path is None or key not in whole or not key <= sold:
            continue
        taken = whole[key].bandwidth_mbps - path.bandwidth_mbps
        sold_pair = replace(t, bandwidth_mbps=max(0, min(t.bandwidth_mbps - taken, path.bandwidth_mbps)))
        transit.append(sold_pair)
        promised[key] = sold_pair
    free = {(f.type, f.site): f for f in live.functions}
    total = {(f.type, f.site): f.slots for f in full.functions}
    functions = tuple(
        FunctionOffer(
            f.type,
            f.site,
            # never more than is free now (a cloud's other tenants take capacity too)
            max(
                0,
                min(
                    f.slots - (total.get((f.type, f.site), 0) - free[(f.type, f.site)].slots),
                    free[(f.type, f.site)].slots,
                ),
            ),
            f.throughput_mbps,
            routed=free[(f.type, f.site)].routed,
        )
        for f in authored.functions
        if (f.type, f.site) in free
    )
    kinds = {f.type for f in functions}
    for t in live.transit:
        key = frozenset((t.a, t.b))
        # A routed entry is a path through function pops: offered only between sold terminals, for
        # sold function types, and only where the note sells the pair itself.
        if t.functions and key in promised and set(t.functions) <= kinds:
            pair = promised[key]
            transit.append(
                replace(
                    t,
                    latency_ms=max(t.latency_ms, pair.latency_ms),
                    bandwidth_mbps=min(t.bandwidth_mbps, pair.bandwidth_mbps),
                )
            )
    return replace(
        live,
        endpoints=served_endpoints,
        ports=served_ports,
        transit=tuple(transit),
        functions=functions,
    )


def _ranges(labels: LabelSet) -> str:
    return ", ".join(f"{r.first}-{r.last}" if r.first != r.last else str(r.first) for r in labels.ranges) or "none"


__all__ = ["serve", "served_problems"]

"""``fedbroker catalog …``: check a note file, edit a domain's offer, show the notes a broker holds."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.table import Table

from broker.api import codec
from broker.cli.client import add_client_args, emit, with_channel
from broker.cli.output import err, out, table_time
from broker.descriptors import load_yaml
from fedbroker.v1 import northsouth_pb2 as pb
from fedbroker.v1 import northsouth_pb2_grpc as pb_grpc


def _catalog_validate(ns: argparse.Namespace) -> int:
    from schemas.note import validate_authoring

    data = load_yaml(Path(ns.file))
    if not isinstance(data, dict):
        err.print(f"[red]{ns.file}:[/] the note must be a mapping")
        return 1
    problems = validate_authoring(data)
    for problem in problems:
        print(f"{ns.file}: {problem}")
    if problems:
        err.print(f"[red]{len(problems)} problem(s)[/]")
        return 1
    err.print(f"[green]{ns.file}: valid[/] (note of SP {data.get('sp_id')})")
    return 0


async def _catalog_offer(ns: argparse.Namespace) -> int:
    from schemas.note import parse_policy

    data = load_yaml(Path(ns.file))
    offer, problems = parse_policy(data if data is not None else {}, "offer")
    for problem in problems:
        print(f"{ns.file}: {problem}")
    if problems:
        err.print(f"[red]{len(problems)} problem(s); nothing sent[/]")
        return 1
    request = pb.SetOfferRequest(domain=ns.domain, offer=codec.offer_to_pb(offer))
    reply = await with_channel(ns, lambda channel: pb_grpc.CapabilitiesStub(channel).SetOffer(request, timeout=10))

    def printer(m: pb.SetOfferResponse) -> None:
        state = "withdrawn" if offer.withdrawn else "published"
        out.print(f"offer of {m.note.sp_id} {state}: note version {m.note.version}")

    emit(reply, ns.json, printer)
    return 0


async def _catalog_show(ns: argparse.Namespace) -> int:
    msg = await with_channel(ns, lambda channel: pb_grpc.CapabilitiesStub(channel).GetCatalog(pb.GetCatalogRequest()))

    def printer(m: pb.GetCatalogResponse) -> None:
        table = Table(title=f"capability notes at {ns.broker}", title_justify="left")
        for col in ("note of", "version", "expires", "endpoints", "ports", "functions", "held as"):
            table.add_column(col)
        rows = [(m.own, "published (signed)")] if m.HasField("own") else []
        rows += [(n, "received") for n in m.lower]
        for note, role in rows:
            table.add_row(
                note.sp_id,
                str(note.version),
                table_time(note.expires_at),
                ", ".join(e.id for e in note.endpoints),
                ", ".join(p.id for p in note.ports),
                ", ".join(sorted({f.type for f in note.functions})),
                role,
            )
        out.print(table)
        if m.rejected:
            rej = Table(title="refused notes", title_justify="left")
            for col in ("from", "version", "reason", "detail"):
                rej.add_column(col)
            for r in m.rejected:
                rej.add_row(r.sp_id, str(r.version), r.reason, r.detail)
            out.print(rej)

    emit(msg, ns.json, printer)
    return 0


def register(sub: Any) -> None:
    """Add ``catalog show|validate|offer`` to the command's sub-parsers."""
    cat = sub.add_parser("catalog", help="capability notes")
    csub = cat.add_subparsers(dest="catalog_cmd", required=True)
    add_client_args(csub.add_parser("show", help="the notes a broker publishes, holds and refused")).set_defaults(
        handler=_catalog_show
    )
    cv = csub.add_parser("validate", help="check a capability note in the YAML authoring format")
    cv.add_argument(
        "file", metavar="FILE", help="a note in the YAML authoring format (capability_catalog/AUTHORING.md)"
    )
    cv.set_defaults(handler=_catalog_validate)
    co = csub.add_parser("offer", help="edit a local domain's offer (QoS, isolation, pools, price, withdrawn)")
    add_client_args(co)
    co.add_argument("--domain", required=True, help="the local domain whose offer changes")
    co.add_argument("file", help="YAML with the offer policy (capability_catalog/AUTHORING.md)")
    co.set_defaults(handler=_catalog_offer)

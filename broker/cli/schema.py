"""``fedbroker schema note|broker|scenario``: the JSON Schema of a file format, from the models that read it."""

from __future__ import annotations

import argparse
from typing import Any

from broker.cli.output import print_json

#: The formats (``schemas.json_schema.KINDS``; named here so the parser is built without the models).
FORMATS = ("note", "broker", "scenario")
_WHAT = {
    "note": "a capability note in the authoring format (capability_catalog/AUTHORING.md)",
    "broker": "a broker config (fedbroker serve --config)",
    "scenario": "a scenario (fedbroker scenario run)",
}


def _schema(ns: argparse.Namespace) -> int:
    from schemas.json_schema import document_schema  # the models are built only for this command

    print_json(document_schema(ns.format))
    return 0


def register(sub: Any) -> None:
    """Add ``schema FORMAT`` to the command's sub-parsers."""
    p = sub.add_parser(
        "schema",
        help="print the JSON Schema of a file format",
        description="; ".join(f"{k}: {v}" for k, v in _WHAT.items()),
    )
    p.add_argument("format", metavar="FORMAT", choices=FORMATS, help=f"one of {', '.join(FORMATS)}")
    p.set_defaults(handler=_schema)

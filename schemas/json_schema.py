"""The JSON Schema of each file format, from the models that read it (``fedbroker schema KIND``).

The schema says the shapes, types and numeric ranges (the models state each range as constraints,
``schemas.checks.Ranged``, so ``minimum``/``exclusiveMinimum``/``maximum`` are printed); what a model
checks beyond them (ids used once, pops that exist, aliases of earlier requests, the bounds of a
label range written as text) only the broker's own reading checks, so a file the schema accepts may
still be refused, never the reverse for the formats' shapes and ranges.
"""

from __future__ import annotations

from typing import Any, Union

from pydantic import BaseModel, create_model

from schemas.broker import BrokerFile
from schemas.domain import EmulatedDomainFile, OpenStackDomainFile
from schemas.note import NoteFile
from schemas.scenario import STEP_MODELS, ScenarioFile

#: The formats, as ``fedbroker schema`` names them.
KINDS = ("note", "broker", "scenario")
_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def _document(kind: str) -> type[BaseModel]:
    """The model whose schema is the format's: a broker's domains and a scenario's steps by their own models."""
    if kind == "note":
        return NoteFile
    if kind == "broker":
        domain = Union[EmulatedDomainFile, OpenStackDomainFile]  # noqa: UP007 - built at run time
        fields: dict[str, Any] = {"domains": (list[domain] | None, None)}
        return create_model("BrokerConfig", __base__=BrokerFile, **fields)
    if kind == "scenario":
        step = Union[tuple(STEP_MODELS.values())]  # type: ignore[valid-type]  # noqa: UP007
        fields = {"steps": (list[step], ...)}  # type: ignore[valid-type]
        return create_model("Scenario", __base__=ScenarioFile, **fields)
    raise ValueError(f"unknown format {kind!r} (known: {', '.join(KINDS)})")


def document_schema(kind: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the ``kind`` format."""
    schema = _document(kind).model_json_schema()
    return {"$schema": _DIALECT, **schema}


__all__ = ["KINDS", "document_schema"]

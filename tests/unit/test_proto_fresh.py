"""The checked-in gRPC code must be what ``make proto`` generates from proto/ today."""

from __future__ import annotations

import re
from pathlib import Path

from tools.genproto import PROTO_ROOT, generate

# Lines that only record which protoc / grpcio-tools made the file; a newer tool is not staleness.
_VERSION_LINES = re.compile(
    r"^(# Protobuf Python Version:.*|GRPC_GENERATED_VERSION = .*|\s*\d+,\s*$|.*ValidateProtobufRuntimeVersion.*)$",
    re.M,
)


def _normalise(text: str) -> str:
    return _VERSION_LINES.sub("", text)


def test_generated_code_matches_proto_sources(tmp_path: Path) -> None:
    generate(tmp_path)
    fresh = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert fresh, "protoc produced nothing"
    for rel in fresh:
        checked_in = PROTO_ROOT / rel
        assert checked_in.exists(), f"{rel} is generated but not checked in: run `make proto`"
        assert _normalise(checked_in.read_text()) == _normalise((tmp_path / rel).read_text()), (
            f"{rel} is stale: run `make proto` and commit the result"
        )


def test_every_checked_in_generated_file_has_a_source(tmp_path: Path) -> None:
    generate(tmp_path)

    def sources(root: Path) -> set[Path]:  # what protoc writes (.py, .pyi), not what Python compiled from it
        return {p.relative_to(root) for p in root.rglob("*_pb2*.py*") if p.suffix in (".py", ".pyi")}

    generated, fresh = sources(PROTO_ROOT), sources(tmp_path)
    assert generated == fresh, f"orphaned generated files: {sorted(map(str, generated - fresh))}"

"""The CLI's help and output: every positional explained, typed JSON, JSON errors, wide pipes, zoned times."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from broker.api.request_file import SliceRequestFile
from broker.cli import build_parser, main
from broker.cli.output import message_json, table_time
from fedbroker.v1 import northsouth_pb2 as pb

FEDBROKER = str(Path(sys.executable).with_name("fedbroker"))


def _parsers(parser: argparse.ArgumentParser, path: str = "fedbroker") -> list[tuple[str, argparse.ArgumentParser]]:
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found += _parsers(child, f"{path} {name}")
    return found


def test_every_positional_argument_of_every_command_has_help_and_no_raw_placeholder() -> None:
    for path, parser in _parsers(build_parser()):
        for action in parser._actions:
            if action.option_strings:
                continue
            assert action.help, f"{path}: positional {action.dest!r} has no help"
            assert not action.dest.endswith("_args"), f"{path}: raw placeholder {action.dest}"
        usage = parser.format_usage()
        assert "_args" not in usage, f"{path}: {usage}"


def test_slice_request_help_names_every_field_of_the_request_model() -> None:
    shown = subprocess.run([FEDBROKER, "slice", "request", "--help"], capture_output=True, text=True, timeout=30)
    assert shown.returncode == 0, shown.stderr
    for name, info in SliceRequestFile.model_fields.items():
        assert f"  {name} (" in shown.stdout, name
        if info.is_required():
            assert f"  {name} (required)" in shown.stdout
    assert "FILE" in shown.stdout and "scenarios/examples/request.yaml" in shown.stdout


def test_login_help_lists_only_options_that_apply_and_version_is_printed(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["login", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "--url" in text and "--as" in text and "FEDBROKER_PASSWORD" in text
    options = text.split("options:", 1)[1]
    assert "--token " not in options and "--token-key" not in options and "NAME.ed25519" not in options
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("fedbroker 0.")


def test_json_of_a_slice_has_numbers_as_numbers_table_state_names_and_zoned_times() -> None:
    msg = pb.Slice(id="s-1", state=pb.SLICE_STATE_HELD, sp_id="L1")
    msg.request.bandwidth_mbps = 500
    msg.request.latency_budget_ms = 20.0
    msg.created_at.FromSeconds(1_764_071_403)
    msg.segments.add(domain="L1", state=pb.SLICE_STATE_ACTIVE)
    usage = message_json(pb.Usage(sp_id="L1", wim_bandwidth_mbps=7, domains=[pb.DomainUsage(bandwidth_mbps=500)]))

    data = message_json(msg)

    assert data["state"] == "HELD" and data["segments"][0]["state"] == "ACTIVE"
    assert data["request"]["bandwidth_mbps"] == 500 and data["request"]["latency_budget_ms"] == 20.0
    assert data["created_at"] == "2025-11-25T11:50:03+00:00"
    assert data["updated_at"] is None and data["plan"] is None
    assert usage["wim_bandwidth_mbps"] == 7 and usage["domains"][0]["bandwidth_mbps"] == 500
    assert json.loads(json.dumps(data)) == data  # plain JSON, nothing left as a protobuf value


def test_table_times_carry_their_zone() -> None:
    ts = Timestamp()
    ts.FromSeconds(1_764_071_403)
    assert table_time(ts) == "2025-11-25 11:50:03+00:00"
    assert table_time(Timestamp()) == "-"


def test_an_error_with_json_is_a_json_object_on_stdout_naming_the_field(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    status = main(["slice", "show", "s-1", "--json", "--creds", str(tmp_path / "none")])
    captured = capsys.readouterr()
    assert status == 2
    error = json.loads(captured.out)["error"]
    assert error["code"] == "INVALID_ARGUMENT" and error["field"] == "--ca" and "certs init" in error["message"]

    bad = tmp_path / "r.yaml"
    bad.write_text("src: a\ndst: b\nbandwidth_mbps: lots\n")
    assert main(["slice", "plan", str(bad), "--json"]) == 2
    error = json.loads(capsys.readouterr().out)["error"]
    assert error["field"] == "bandwidth_mbps" and "valid integer" in error["message"]


def test_a_bad_option_with_json_is_a_json_error_too(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["slice", "list", "--json", "--broker", "nonsense"])
    assert done.value.code == 2
    error = json.loads(capsys.readouterr().out)["error"]
    assert error["code"] == "INVALID_ARGUMENT" and error["field"] == "--broker" and "HOST:PORT" in error["message"]


def test_tables_are_not_cut_at_80_columns_when_piped() -> None:
    piped = subprocess.run([FEDBROKER, "faults", "list"], capture_output=True, text=True, timeout=30)
    assert piped.returncode == 0, piped.stderr
    row = next(line for line in piped.stdout.splitlines() if "reserve.start" in line)
    assert "before any child is asked" in row and len(row) > 80


def test_an_exported_session_token_of_another_user_is_set_aside_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from broker.cli.client import client_identity
    from broker.security.keys import load_key
    from broker.security.tokens import TokenMinter

    assert main(["certs", "init", "--out", str(tmp_path), "--client", "alice", "--client", "operator:operator"]) == 0
    alices = TokenMinter(load_key(tmp_path / "alice.ed25519"), "alice").mint("demo-leaf")
    monkeypatch.setenv("FEDBROKER_TOKEN", alices)
    capsys.readouterr()

    def identity(*argv: str) -> object:
        ns = build_parser().parse_args(["slice", "list", "--creds", str(tmp_path), *argv])
        return client_identity(ns)

    as_operator = identity("--as", "operator")
    warned = capsys.readouterr().err
    assert getattr(as_operator, "minter", None) is not None and getattr(as_operator, "session_token", "x") == ""
    assert "FEDBROKER_TOKEN" in warned and "alice" in warned and "operator" in warned
    as_alice = identity("--as", "alice")
    assert getattr(as_alice, "session_token", "") == alices and capsys.readouterr().err == ""
    explicit = identity("--as", "operator", "--token", "given")
    assert getattr(explicit, "session_token", "") == "given"


def test_token_prints_one_call_token_for_grpcurl(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import jwt

    assert main(["certs", "init", "--out", str(tmp_path), "--client", "alice"]) == 0
    capsys.readouterr()
    assert main(["token", "--creds", str(tmp_path), "--as", "alice", "--sp", "demo-leaf", "--ttl", "30"]) == 0
    printed = capsys.readouterr()
    claims = jwt.decode(printed.out.strip(), options={"verify_signature": False})
    assert claims["iss"] == claims["sub"] == "alice" and claims["aud"] == "demo-leaf"
    assert claims["exp"] - claims["iat"] == 30 and "grpcurl" in printed.err
    assert main(["token", "--creds", str(tmp_path), "--as", "alice", "--sp", "x", "--ttl", "999"]) == 2
    assert "--ttl: 999 is not from 1 to 300" in capsys.readouterr().err

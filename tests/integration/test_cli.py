"""The command line over real processes: the README walkthrough, scenario runs and their exit codes."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from broker.config import load_config
from scenarios.processes import Fleet

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
FEDBROKER = str(Path(sys.executable).with_name("fedbroker"))


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FEDBROKER, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.fixture
async def leaf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    """The example leaf SP, as in the README, but on an ephemeral port with data and credentials in tmp_path.

    The CLI finds the fleet's credentials through $FEDBROKER_CREDS and acts as its ``operator``.
    """
    example = yaml.safe_load((ROOT / "scenarios/examples/leaf.yaml").read_text())
    settings = {k: v for k, v in example.items() if k not in ("sp_id", "listen", "data_dir", "security", "rest_listen")}
    fleet = Fleet(tmp_path)
    monkeypatch.setenv("FEDBROKER_CREDS", str(fleet.pki_dir))
    try:
        broker = await fleet.start(example["sp_id"], settings)
        yield broker.address
    finally:
        await fleet.stop_all()


def test_example_leaf_config_is_valid_as_it_is() -> None:
    config = load_config(ROOT / "scenarios/examples/leaf.yaml")
    assert config.sp_id == "demo-leaf" and config.listen == "127.0.0.1:50061"
    assert config.domains and not config.lower_sps


async def test_readme_walkthrough_request_list_show_terminate(leaf: str) -> None:
    ordered = cli("slice", "request", "scenarios/examples/request.yaml", "--broker", leaf, "--json")
    assert ordered.returncode == 0, ordered.stderr
    slice_ = json.loads(ordered.stdout)
    assert slice_["state"] == "ACTIVE"  # as the tables print it
    assert [s["domain"] for s in slice_["segments"]] == ["demo-leaf"]
    assert slice_["segments"][0]["functions"] == ["firewall"]

    listed = json.loads(cli("slice", "list", "--broker", leaf, "--json").stdout)
    assert [s["id"] for s in listed["slices"]] == [slice_["id"]]
    shown = cli("slice", "show", slice_["id"], "--broker", leaf)
    assert shown.returncode == 0 and "ACTIVE" in shown.stdout and "demo-leaf.ams" in shown.stdout
    usage = json.loads(cli("usage", "--broker", leaf, "--json").stdout)
    assert usage["holding_slices"] == 1 and usage["domains"][0]["bandwidth_mbps"] == 500  # a number

    down = json.loads(cli("slice", "deactivate", slice_["id"], "--broker", leaf, "--json").stdout)
    assert down["state"] == "COMMITTED"  # out of service, still reserved
    assert json.loads(cli("usage", "--broker", leaf, "--json").stdout)["domains"][0]["bandwidth_mbps"] == 500
    shown = cli("slice", "show", slice_["id"], "--broker", leaf)
    assert shown.returncode == 0 and "COMMITTED" in shown.stdout
    assert json.loads(cli("slice", "activate", slice_["id"], "--broker", leaf, "--json").stdout)["state"] == "ACTIVE"

    ended = json.loads(cli("slice", "terminate", slice_["id"], "--broker", leaf, "--json").stdout)
    assert ended["state"] == "TERMINATED" and ended["updated_at"].endswith("+00:00")
    usage = json.loads(cli("usage", "--broker", leaf, "--json").stdout)
    assert usage["holding_slices"] == 0 and usage["domains"][0]["bandwidth_mbps"] == 0


async def test_cli_errors_name_the_status_and_reason(leaf: str, tmp_path: Path) -> None:
    missing = cli("slice", "show", "no-such-slice", "--broker", leaf)
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr and "no-such-slice" in missing.stderr
    as_json = cli("slice", "show", "no-such-slice", "--broker", leaf, "--json")
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout) == {
        "error": {"code": "NOT_FOUND", "message": "slice 'no-such-slice' does not exist", "field": ""}
    }
    odd = tmp_path / "odd.yaml"
    odd.write_text("src: demo-leaf.ams\ndst: nowhere.x\nbandwidth_mbps: 10\n")
    refused_json = json.loads(cli("slice", "plan", str(odd), "--broker", leaf, "--json").stdout)["error"]
    assert refused_json["code"] in {"NOT_FOUND", "INVALID_ARGUMENT"} and "nowhere.x" in refused_json["message"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("src: demo-leaf.ams\ndst: demo-leaf.par\nbandwidth_mbps: 0\n")
    refused = cli("slice", "request", str(bad), "--broker", leaf)
    # Checked at the edge before anything is sent: the file's field, and what it allows.
    assert refused.returncode == 2 and "bandwidth_mbps" in refused.stderr and "from 1 to" in refused.stderr
    bad.write_text("src: a\nsrc: b\n")
    dup = cli("slice", "request", str(bad), "--broker", leaf)
    assert dup.returncode == 2 and "duplicate key" in dup.stderr


def test_three_tier_demo_passes_and_reports_a_slice_across_three_or_more_leaves(tmp_path: Path) -> None:
    report_path = tmp_path / "r.json"
    run = cli("scenario", "run", "scenarios/three-tier.yaml", "--report-json", str(report_path), timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert report["scenario"] == "three-tier" and report["passed"] is True
    assert all(step["passed"] for step in report["steps"])
    assert all(isinstance(step["duration_s"], float) for step in report["steps"])
    assert any(len(s["domains"]) >= 3 and s["state"] == "TERMINATED" for s in report["slices"])
    # Every SP served its REST API while the run lasted, and the report says where.
    assert {sp["id"] for sp in report["sps"]} == {"T", "M1", "M2", "L1", "L2", "L3", "L4", "L5", "L6"}
    assert all(sp["rest"].startswith("https://127.0.0.1:") for sp in report["sps"])


def _write(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _two_leaves(name: str, steps: list[dict[str, Any]]) -> dict[str, Any]:
    from tests.topology import leaf_domain

    return {
        "name": name,
        "sps": [
            {"id": "T", "lower": ["A", "B"]},
            {"id": "A", "domains": [leaf_domain("A", {"B": "100-199"})]},
            {"id": "B", "domains": [leaf_domain("B", {"A": "150-299"})]},
        ],
        "steps": steps,
    }


def test_failed_expectation_exits_1_runs_only_cleanup_and_stops_every_broker(tmp_path: Path) -> None:
    name = f"fails-{tmp_path.name}"[:40]
    scenario = _write(
        tmp_path / "s.yaml",
        _two_leaves(
            name,
            [
                {"wait_catalog": {"sp": "T", "terminals": ["A.ep", "B.ep"]}},
                {
                    "name": "wrong on purpose",
                    "request": {"sp": "T", "as": "s", "slice": {"src": "A.ep", "dst": "B.ep", "bandwidth_mbps": 10}},
                    "expect": {"state": "ACTIVE"},
                },
                {"name": "not run", "commit": {"sp": "T", "slice": "s"}},
                {"name": "cleanup", "abort": {"sp": "T", "slice": "s"}, "always": True},
                {"name": "idle", "expect_idle": "all", "always": True},
            ],
        ),
    )
    report_path = tmp_path / "r.json"
    run = cli("scenario", "run", str(scenario), "--report-json", str(report_path))
    assert run.returncode == 1
    report = json.loads(report_path.read_text())
    assert report["passed"] is False
    steps = {s["name"]: s for s in report["steps"]}
    assert "expected state ACTIVE, got HELD" in steps["wrong on purpose"]["detail"]
    assert steps["not run"]["detail"] == "skipped after an earlier failure"
    assert steps["cleanup"]["passed"] and steps["idle"]["passed"]
    leftovers = subprocess.run(["pgrep", "-f", f"fedbroker-{name}"], capture_output=True, text=True)
    assert leftovers.stdout == "", f"brokers left running: {leftovers.stdout}"


def test_invalid_scenario_exits_2_naming_the_path(tmp_path: Path) -> None:
    scenario = _write(
        tmp_path / "s.yaml",
        _two_leaves("bad", [{"request": {"sp": "T", "as": "s", "slice": {"src": "A.ep", "bandwidth_mbps": "x"}}}]),
    )
    run = cli("scenario", "run", str(scenario))
    assert run.returncode == 2
    assert "steps[0].request.slice" in run.stderr


async def test_operator_edits_and_withdraws_an_offer_and_catalog_show_reflects_it(leaf: str, tmp_path: Path) -> None:
    offer = tmp_path / "offer.yaml"
    offer.write_text("isolation: [vrf]\nprice_per_mbps_hour: 0.25\nqos_classes: [{name: gold, native: {dscp: 46}}]\n")
    edited = cli("catalog", "offer", "--broker", leaf, "--domain", "demo-leaf", str(offer), "--json")
    assert edited.returncode == 0, edited.stderr
    note = json.loads(edited.stdout)["note"]
    assert note["isolation"] == ["vrf"] and note["price_per_mbps_hour"] == 0.25 and note["endpoints"]

    shown = json.loads(cli("catalog", "show", "--broker", leaf, "--json").stdout)
    held = shown["lower"][0]
    assert held["sp_id"] == "demo-leaf" and held["isolation"] == ["vrf"] and held["qos_classes"][0]["name"] == "gold"

    offer.write_text("withdrawn: true\n")
    assert cli("catalog", "offer", "--broker", leaf, "--domain", "demo-leaf", str(offer)).returncode == 0
    shown = json.loads(cli("catalog", "show", "--broker", leaf, "--json").stdout)
    assert shown["lower"][0]["sp_id"] == "demo-leaf" and shown["lower"][0]["isolation"] == []
    assert shown["lower"][0]["endpoints"] == [] and shown["lower"][0]["ports"] == []
    assert not (shown.get("own") or {}).get("endpoints")  # nothing of the withdrawn domain is published upward
    planned = cli("slice", "plan", "scenarios/examples/request.yaml", "--broker", leaf)
    assert planned.returncode == 1 and "unknown terminal" not in planned.stderr
    assert "'demo-leaf.ams' is withdrawn: demo-leaf no longer offers it" in planned.stderr

    offer.write_text("isolation: [telepathy]\n")
    bad = cli("catalog", "offer", "--broker", leaf, "--domain", "demo-leaf", str(offer))
    assert bad.returncode == 1 and "offer.isolation[0]: 'telepathy' is not one of" in bad.stdout
    offer.write_text("price_per_mbps_hour: 1\n")
    unknown = cli("catalog", "offer", "--broker", leaf, "--domain", "nowhere", str(offer))
    assert unknown.returncode != 0 and "NOT_FOUND" in unknown.stderr and "nowhere" in unknown.stderr


@contextlib.contextmanager
def served(config: Path, *extra: str) -> Iterator[tuple[str, Path]]:
    """``fedbroker serve`` as in the README; yields its address and log; always stopped."""
    log = config.with_suffix(".log")
    data = load_config(config).data_dir
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [FEDBROKER, "serve", "--config", str(config), *extra], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 20
        while not (data / "address").exists():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield (data / "address").read_text().strip(), log
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _lab_config(tmp_path: Path, security: dict[str, Any] | None) -> Path:
    example = yaml.safe_load((ROOT / "scenarios/examples/leaf.yaml").read_text())
    example.update(listen="127.0.0.1:0", data_dir=str(tmp_path / "data"))
    example.pop("security")
    example.pop("rest_listen")
    if security is not None:
        example["security"] = security
    return _write(tmp_path / "leaf.yaml", example)


def test_certs_init_then_serve_and_the_cli_authenticates_by_default(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    made = cli(
        "certs", "init", "--out", str(pki), "--sp", "demo-leaf", "--client", "operator:operator", "--client", "alice"
    )
    assert made.returncode == 0, made.stderr
    hashed = subprocess.run([FEDBROKER, "accounts", "hash-password"], input="pw\n", capture_output=True, text=True)
    accounts = yaml.safe_load((pki / "accounts.yaml").read_text())
    assert {(a["id"], a["role"]) for a in accounts["accounts"]} == {("operator", "operator"), ("alice", "customer")}
    for acc in accounts["accounts"]:
        acc["password_hash"] = hashed.stdout.strip()
    (pki / "accounts.yaml").write_text(yaml.safe_dump(accounts))
    security = {
        "ca": "pki/ca.crt",
        "cert": "pki/demo-leaf.crt",
        "key": "pki/demo-leaf.key",
        "accounts_file": "pki/accounts.yaml",
        "login_listen": "127.0.0.1:0",
    }
    with served(_lab_config(tmp_path, security)) as (address, _):
        ordered = cli(
            "slice", "request", "scenarios/examples/request.yaml", "--broker", address, "--creds", str(pki), "--json"
        )
        assert ordered.returncode == 0, ordered.stderr
        as_alice = ("--broker", address, "--creds", str(pki), "--as", "alice", "--json")
        assert json.loads(cli("slice", "list", *as_alice).stdout) == {"slices": []}  # the operator's, not hers
        denied = cli("usage", *as_alice)
        # with --json the error is JSON on stdout: {"error": {"code": "PERMISSION_DENIED", ...}}
        assert denied.returncode == 1 and json.loads(denied.stdout)["error"]["code"] == "PERMISSION_DENIED"
        login_at = (tmp_path / "data" / "login_address").read_text().strip()
        env = {**os.environ, "FEDBROKER_PASSWORD": "pw"}
        token = subprocess.run(
            [FEDBROKER, "login", "--url", login_at, "--creds", str(pki), "--as", "alice"],
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
        )
        assert token.returncode == 0, token.stderr
        listed = cli("slice", "list", *as_alice, "--token", token.stdout.strip())
        assert listed.returncode == 0 and json.loads(listed.stdout) == {"slices": []}
        plain = cli("slice", "list", "--broker", address, "--insecure", "--sp", "demo-leaf", "--creds", str(pki))
        assert plain.returncode == 1 and "UNAVAILABLE" in plain.stderr


def test_serve_without_tls_files_says_how_and_insecure_serves_plaintext_with_a_warning(tmp_path: Path) -> None:
    config = _lab_config(tmp_path, None)
    refused = subprocess.run([FEDBROKER, "serve", "--config", str(config)], capture_output=True, text=True, timeout=30)
    assert refused.returncode == 2 and "security.ca" in refused.stderr and "--insecure" in refused.stderr
    pki = tmp_path / "pki"
    assert cli("certs", "init", "--out", str(pki), "--client", "operator:operator").returncode == 0
    config = _lab_config(tmp_path, {"accounts_file": "pki/accounts.yaml"})
    with served(config, "--insecure") as (address, log):
        assert "PLAINTEXT" in log.read_text() and "WARNING" in log.read_text()
        used = cli("usage", "--broker", address, "--insecure", "--sp", "demo-leaf", "--creds", str(pki), "--json")
        assert used.returncode == 0, used.stderr
        assert json.loads(used.stdout)["sp_id"] == "demo-leaf"


def test_faults_list_is_a_console_command() -> None:
    listed = cli("faults", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    points = {p["point"] for p in json.loads(listed.stdout)["points"]}
    assert {"reserve.start", "commit.decided", "terminate.done"} <= points


def _tls_lab(tmp_path: Path) -> tuple[Path, Path]:
    """A lab CA, the leaf's certificate, an operator and a customer; the leaf's config over TLS with login."""
    pki = tmp_path / "pki"
    made = cli(
        "certs", "init", "--out", str(pki), "--sp", "demo-leaf", "--client", "operator:operator", "--client", "alice"
    )
    assert made.returncode == 0, made.stderr
    security = {
        "ca": "pki/ca.crt",
        "cert": "pki/demo-leaf.crt",
        "key": "pki/demo-leaf.key",
        "accounts_file": "pki/accounts.yaml",
        "login_listen": "127.0.0.1:0",
    }
    return pki, _lab_config(tmp_path, security)


def test_serve_log_format_json_has_the_ids_as_fields_and_no_grpc_core_lines(tmp_path: Path) -> None:
    pki, config = _tls_lab(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("GRPC_VERBOSITY", "GRPC_TRACE")}
    log = tmp_path / "serve.log"
    data = tmp_path / "data"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [FEDBROKER, "serve", "--config", str(config), "--log-format", "json"], stderr=sink, env=env
        )
    try:
        deadline = time.monotonic() + 20
        while not (data / "address").exists():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        address = (data / "address").read_text().strip()
        # A plaintext caller makes the C core log a failed handshake: it must not reach the log.
        plain = cli("usage", "--broker", address, "--insecure", "--sp", "demo-leaf", "--creds", str(pki))
        assert plain.returncode == 1, plain.stderr
        ordered = cli(
            "slice",
            "request",
            "scenarios/examples/request.yaml",
            "--broker",
            address,
            "--creds",
            str(pki),
            "--request-id",
            "r-log-1",
            "--json",
        )
        assert ordered.returncode == 0, ordered.stderr
        slice_id = json.loads(ordered.stdout)["id"]
        time.sleep(0.3)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    lines = [json.loads(line) for line in log.read_text().splitlines()]  # every line is one JSON object
    assert all(line["sp_id"] == "demo-leaf" and line["time"].endswith("+00:00") for line in lines)
    held = next(line for line in lines if line["message"].startswith(f"slice {slice_id} -> HELD"))
    assert held["slice_id"] == slice_id and held["request_id"] == "r-log-1" and held["caller"] == "operator"
    assert held["level"] == "INFO" and held["logger"] == "broker.core.lifecycle"


def test_insecure_against_tls_and_the_login_port_as_broker_say_what_to_do(tmp_path: Path) -> None:
    pki, config = _tls_lab(tmp_path)
    with served(config) as (address, _):
        login_at = (tmp_path / "data" / "login_address").read_text().strip()
        plain = cli("usage", "--broker", address, "--insecure", "--sp", "demo-leaf", "--creds", str(pki))
        assert plain.returncode == 1 and "UNAVAILABLE" in plain.stderr
        assert f"{address} serves TLS: drop --insecure" in plain.stderr
        wrong_port = cli("usage", "--broker", login_at, "--creds", str(pki))
        assert wrong_port.returncode == 1 and "login endpoint" in wrong_port.stderr
        assert "`listen`" in wrong_port.stderr and "fedbroker login --url" in wrong_port.stderr


def _walkthrough_blocks() -> list[list[str]]:
    """The shell blocks of the README's walkthrough, one command per entry (continuations joined)."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Walkthrough", 1)[1].split("\n## ", 1)[0]
    blocks = []
    for block in section.split("```sh\n")[1:]:
        text = block.split("```", 1)[0].replace("\\\n", " ")
        blocks.append([line.strip() for line in text.splitlines() if line.strip()])
    return blocks


def _grpc_list_with_token(address: str, pki: Path, token: str) -> int:
    """What the README's grpcurl call does, by a stock gRPC client: Slices/List as alice with the printed token."""
    import grpc

    from fedbroker.v1 import northsouth_pb2 as pb

    creds = grpc.ssl_channel_credentials(
        (pki / "ca.crt").read_bytes(), (pki / "alice.key").read_bytes(), (pki / "alice.crt").read_bytes()
    )
    with grpc.secure_channel(address, creds, options=[("grpc.ssl_target_name_override", "demo-leaf")]) as channel:
        call = channel.unary_unary(
            "/fedbroker.v1.Slices/List",
            request_serializer=pb.ListRequest.SerializeToString,
            response_deserializer=pb.ListResponse.FromString,
        )
        reply = call(pb.ListRequest(), metadata=[("authorization", f"Bearer {token}")], timeout=10)
        return len(reply.slices)


def test_the_readme_walkthrough_runs_literally_on_a_fresh_clone_as_its_customer(tmp_path: Path) -> None:
    """Every command of the README's walkthrough, in order, in a folder laid out as a fresh clone.

    Only the ports change (the fixed ones may be taken on a shared machine): the config listens on
    port 0, the commands' 127.0.0.1:50061 / :50062 become the bound addresses, and $FEDBROKER_BROKER
    (the default of --broker) is the bound one. grpcurl lines run
    when grpcurl is installed; otherwise the token they use is checked by a stock gRPC client.
    """
    import re
    import shutil

    clone = tmp_path / "clone"
    (clone / "scenarios" / "examples").mkdir(parents=True)
    (clone / ".venv").symlink_to(Path(sys.executable).parents[1])
    for name in ("leaf.yaml", "request.yaml", "order.json"):
        shutil.copy(ROOT / "scenarios" / "examples" / name, clone / "scenarios" / "examples" / name)
    leaf = clone / "scenarios" / "examples" / "leaf.yaml"
    leaf.write_text(
        leaf.read_text()
        .replace("listen: 127.0.0.1:50061", "listen: 127.0.0.1:0")
        .replace("login_listen: 127.0.0.1:50062", "login_listen: 127.0.0.1:0")
        .replace("rest_listen: 127.0.0.1:50063", "rest_listen: 127.0.0.1:0")
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEDBROKER_")}
    have_grpcurl = shutil.which("grpcurl") is not None
    blocks = _walkthrough_blocks()
    setup, *rest = blocks
    assert setup[0].startswith(".venv/bin/fedbroker certs init") and setup[1].startswith(".venv/bin/fedbroker serve")

    def sh(line: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", "-c", line], cwd=clone, env=env, capture_output=True, text=True, timeout=60)

    made = sh(setup[0])
    assert made.returncode == 0, made.stderr
    data = clone / "scenarios" / "examples" / "data-demo-leaf"
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(["bash", "-c", f"exec {setup[1]}"], cwd=clone, env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 20
        while not all((data / name).exists() for name in ("rest_address", "login_address", "address")):
            assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.05)
        address = (data / "address").read_text().strip()
        login = (data / "login_address").read_text().strip()
        rest_at = (data / "rest_address").read_text().strip()
        env["FEDBROKER_BROKER"] = address  # the commands' default broker, 127.0.0.1:50061 in the README
        slice_id = ""
        ran = []
        for line in [cmd for block in rest for cmd in block]:
            line = line.split("   #", 1)[0].strip()  # the README's trailing comments
            line = line.replace("127.0.0.1:50061", address).replace("127.0.0.1:50062", login)
            line = line.replace("127.0.0.1:50063", rest_at)
            line = line.replace("<slice-id>", slice_id)
            if line.startswith("grpcurl") and not have_grpcurl:
                token = re.search(r"\$\((.*?)\)", line)
                if token:
                    printed = sh(token.group(1))
                    assert printed.returncode == 0, printed.stderr
                    assert _grpc_list_with_token(address, clone / "pki", printed.stdout.strip()) == 1
                ran.append(line)
                continue
            name, is_export, value = "", line.startswith("export "), ""
            if is_export:
                name, _, value = line.removeprefix("export ").partition("=")
                done = sh(f'{name}={value}; printf %s "${name}"')
                assert done.returncode == 0, (line, done.stderr)
                env[name] = done.stdout
                ran.append(line)
                continue
            if line.startswith("unset "):
                for gone in line.split()[1:]:
                    env.pop(gone, None)
                ran.append(line)
                continue
            done = sh(line)
            assert done.returncode == 0, (line, done.stdout, done.stderr)
            ran.append(line)
            if " slice request " in line:
                slice_id = re.search(r"slice (\S+)", done.stdout).group(1)  # type: ignore[union-attr]
            if "slice list" in line and "FEDBROKER_TOKEN" not in env:
                assert slice_id in done.stdout or "terminate" in " ".join(ran)
            if "hash-password" in line:
                # The README's step in words: add the printed hash to alice's entry as password_hash.
                book = clone / "pki" / "accounts.yaml"
                accounts = yaml.safe_load(book.read_text())
                for account in accounts["accounts"]:
                    if account["id"] == "alice":
                        account["password_hash"] = done.stdout.strip()
                book.write_text(yaml.safe_dump(accounts, sort_keys=False))
            if " usage" in line:
                assert "demo-leaf" in done.stdout
            if line.startswith("curl") and "externalId=alice-order-1" in line:  # the REST order, read back
                assert json.loads(done.stdout)[0]["externalId"] == "alice-order-1", done.stdout
        assert any("login" in line for line in ran) and any("token" in line for line in ran)
        assert any(line.startswith("curl") and "order.json" in line for line in ran)
        assert slice_id and "slice terminate" in " ".join(ran)
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()

"""Mistakes at start-up and in the shell end in one clear line naming the setting, never a traceback (issue 18)."""

from __future__ import annotations

import io
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from broker.app import Broker, lock_data_dir
from broker.cli import main
from broker.config import load_config
from broker.descriptors import ConfigError
from tests.topology import leaf_domain


def config(tmp_path: Path, **extra: object) -> Path:
    path = tmp_path / "sp.yaml"
    path.write_text(yaml.safe_dump({"sp_id": "L1", "domains": [leaf_domain("L1")], **extra}))
    return path


def test_a_key_file_that_does_not_exist_is_refused_instead_of_creating_a_new_identity(tmp_path: Path) -> None:
    cfg = load_config(config(tmp_path, key_file="keys/typo.key"))
    with pytest.raises(
        ConfigError, match=r"key_file: .*typo\.key does not exist \(create it with `fedbroker keys init"
    ):
        Broker(cfg, insecure=True)
    assert not (tmp_path / "keys" / "typo.key").exists()


def test_without_key_file_the_key_is_made_in_the_data_directory(tmp_path: Path) -> None:
    broker = Broker(load_config(config(tmp_path)), insecure=True)
    assert (tmp_path / "data-L1" / "sp.key").exists()
    broker.store.close()
    broker.audit.close()
    broker._data_lock.close()


def test_an_accounts_file_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    cfg = load_config(config(tmp_path, security={"accounts_file": "nowhere.yaml"}))
    with pytest.raises(ConfigError, match=r"security\.accounts_file: cannot read .*nowhere\.yaml \(write it with"):
        Broker(cfg, insecure=True)


def test_a_second_broker_on_the_same_data_directory_is_refused_before_opening_it(tmp_path: Path) -> None:
    held = lock_data_dir(tmp_path / "data")
    try:
        code = (
            "import sys\nfrom pathlib import Path\nfrom broker.app import lock_data_dir\n"
            "try:\n    lock_data_dir(Path(sys.argv[1]))\nexcept ValueError as e:\n    print(e)\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path / "data")], capture_output=True, text=True, check=True
        ).stdout
        assert "is in use by another broker (pid" in out
    finally:
        held.close()
    lock_data_dir(tmp_path / "data").close()  # free again once the holder closed it


async def test_a_busy_port_names_the_listen_setting(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        broker = Broker(load_config(config(tmp_path, listen=f"127.0.0.1:{port}")), insecure=True)
        try:
            with pytest.raises(ConfigError, match=rf"listen: cannot listen on 127\.0\.0\.1:{port}: the port is in use"):
                await broker.start()
        finally:
            await broker.stop(0)


def test_login_with_empty_stdin_says_how_to_give_a_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("FEDBROKER_PASSWORD", raising=False)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    from broker.security.keys import write_key
    from capability_catalog.signing import generate_key

    write_key(tmp_path / "alice.ed25519", generate_key())
    code = main(["login", "--url", "127.0.0.1:1", "--as", "alice", "--insecure", "--creds", str(tmp_path)])
    assert code == 2
    assert "no password for alice" in capsys.readouterr().err


def test_a_closed_pipe_ends_the_command_quietly(tmp_path: Path) -> None:
    big = tmp_path / "note.yaml"
    note = Path(__file__).resolve().parents[2] / "scenarios" / "examples" / "note.yaml"
    big.write_text(note.read_text())
    # `keys init` prints one line; `--help` of the whole command prints many: read one byte and close.
    proc = subprocess.Popen(
        [sys.executable, "-m", "broker", "slice", "request", "--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.read(1)
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    proc.stderr.close()
    proc.wait(timeout=60)
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr


def test_dataplane_clean_without_a_prefix_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dataplane", "clean"]) == 2
    assert "--prefix: say which installation to clean" in capsys.readouterr().err

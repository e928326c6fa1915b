"""Broker configs: defaults, and every mistake named by file and path."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.config import ConfigError, load_config
from capability_catalog.signing import public_key_to_text
from tests.topology import leaf_domain

# A fixed key: the parameters below are part of the test ids, which must be the same in every
# pytest-xdist worker.
KEY = public_key_to_text(Ed25519PrivateKey.from_private_bytes(bytes(range(32))).public_key())
LOWER = f"{{id: A, address: 'x:1', keys: ['{KEY}']}}"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sp.yaml"
    path.write_text(text)
    return path


def test_leaf_config_gets_defaults_and_data_dir_relative_to_the_file(tmp_path: Path) -> None:
    import yaml

    path = write(tmp_path, yaml.safe_dump({"sp_id": "L1", "domains": [leaf_domain("L1")]}))
    cfg = load_config(path)
    assert cfg.listen == "127.0.0.1:0" and cfg.hold_time_s == 120 and cfg.lower_timeout_s == 10
    assert cfg.data_dir == tmp_path / "data-L1"
    assert cfg.domains[0].id == "L1" and cfg.wim.driver == "memory"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (f"sp_id: T\nlower_sps: [{LOWER}]\nlower_sps: []\n", "duplicate key 'lower_sps'"),
        ("sp_id: T\n", "needs lower_sps"),
        (f"sp_id: T\nlower_sps: [{{id: A, keys: ['{KEY}']}}]\n", "lower_sps[0].address"),
        ("sp_id: T\nlower_sps: [{id: A, address: 'x:1'}]\n", "lower_sps[0].keys: required"),
        ("sp_id: T\nlower_sps: [{id: A, address: 'x:1', keys: ['rsa:AAAA']}]\n", "lower_sps[0].keys[0]"),
        (f"sp_id: T\nlower_sps: [{LOWER}, {LOWER}]\n", "lower_sps[1].id"),
        (f"sp_id: T\nlower_sps: [{LOWER}]\nhold_time_s: -1\n", "hold_time_s"),
        (f"sp_id: T\nlower_sps: [{LOWER}]\nlisten: nowhere\n", "listen"),
        (f"sp_id: T\nlower_sps: [{LOWER}]\ncolour: blue\n", "colour: unknown setting"),
        (f"sp_id: T\nlower_sps: [{LOWER}]\nwim: {{driver: carrier-pigeon}}\n", "wim.driver"),
        (f"sp_id: T\nlower_sps: [{LOWER}]\ndataplane: {{prefix: eth0}}\n", "dataplane.prefix"),
        (f"sp_id: T\nlower_sps: [{LOWER}]\ndataplane: {{colour: 1}}\n", "dataplane.colour"),
        ("sp_id: L\ndomains: [{id: L, type: quantum}]\n", "domains[0].type"),
        ("sp_id: L\ndomains: [{id: L, type: openstack, pops: [{name: a}]}]\n", "domains[0].auth"),
        (
            "sp_id: L\ndomains: [{id: L, pops: [a], links: [{a: a, b: zz, bandwidth_mbps: 1, latency_ms: 1}]}]\n",
            "domains[0].links[0].b",
        ),
        (f"sp_id: T\nlower_sps: [{LOWER}]\nsecurity: {{ca: ca.crt}}\n", "security: give ca, cert and key together"),
        (f"sp_id: T\nlower_sps: [{LOWER}]\nsecurity: {{tls: on}}\n", "security.tls: unknown setting"),
        (f"sp_id: T\nlower_sps: [{LOWER}]\nsecurity: {{call_ttl_s: 86400}}\n", "security.call_ttl_s: tokens are short"),
        (f"sp_id: T\nlower_sps: [{LOWER}]\nsecurity: {{login_listen: 8443}}\n", "security.login_listen"),
        ("[1, 2]\n", "must be a mapping"),
        ("sp_id: [unclosed\n", "sp.yaml"),
    ],
)
def test_config_errors_name_the_file_and_the_path(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert needle in str(info.value)
    assert str(tmp_path) in str(info.value)


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")


def test_security_paths_are_relative_to_the_file_and_the_account_book_defaults_to_the_data_dir(tmp_path: Path) -> None:
    text = f"sp_id: T\nlower_sps: [{LOWER}]\nsecurity: {{ca: pki/ca.crt, cert: t.crt, key: t.key}}\n"
    cfg = load_config(write(tmp_path, text))
    assert cfg.security.ca == tmp_path / "pki/ca.crt" and cfg.security.key == tmp_path / "t.key"
    assert cfg.accounts_path == cfg.data_dir / "accounts.yaml" and cfg.security.call_ttl_s == 60

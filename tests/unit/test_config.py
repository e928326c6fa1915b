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
        (f"sp_id: T\nlower_sps: [{LOWER}]\nstore: {{backend: mongodb}}\n", "store.backend: unknown store backend"),
        (f"sp_id: T\nlower_sps: [{{id: A, keys: ['{KEY}'], addresses: []}}]\n", "lower_sps[0].addresses"),
        (
            f"sp_id: T\nlower_sps: [{{id: A, keys: ['{KEY}'], address: 'x:1', addresses: ['127.0.0.1:1']}}]\n",
            "lower_sps[0]: give address or addresses, not both",
        ),
        (
            f"sp_id: T\nlower_sps: [{{id: A, keys: ['{KEY}'], addresses: ['127.0.0.1:1', 'db.example:2']}}]\n",
            "lower_sps[0].addresses[1]: 'db.example:2': with several addresses each must be an IP address and port",
        ),
        (
            f"sp_id: T\nlower_sps: [{{id: A, keys: ['{KEY}'], addresses: ['127.0.0.1:1', '[::1]:2']}}]\n",
            "lower_sps[0].addresses[1]: '[::1]:2': with several addresses each must be of one address family (IPv4)",
        ),
        (f"sp_id: T\nlower_sps: [{LOWER}]\nstore: {{replicas: true}}\n", "store.replicas: needs backend postgresql"),
        (
            "sp_id: L\ndomains: [{id: L, type: netns, pops: [a], endpoints: [{id: L.ep, pop: a, capacity_mbps: 1}]}]\n"
            "store: {backend: postgresql, dsn: 'host=x', replicas: true}\n",
            "store.replicas: domain 'L' (netns) is network namespaces and processes on one host's kernel",
        ),
        (
            f"sp_id: T\nlower_sps: [{LOWER}]\nwim: {{driver: linux}}\n"
            "store: {backend: postgresql, dsn: 'host=x', replicas: true}\n",
            "store.replicas: the linux WIM driver stitches on one host's kernel",
        ),
        (f"sp_id: T\nlower_sps: [{LOWER}]\nstore: {{replicas: 'yes'}}\n", "store.replicas"),
        (
            f"sp_id: T\nlower_sps: [{{id: A, keys: ['{KEY}'], addresses: ['127.0.0.1:1', '127.0.0.1:1']}}]\n",
            "lower_sps[0].addresses: an address is listed twice",
        ),
        (f"sp_id: T\nlower_sps: [{LOWER}]\nstore: {{backend: postgresql}}\n", "store.dsn: required with backend"),
        (f"sp_id: T\nlower_sps: [{LOWER}]\nstore: {{dsn: 'host=x'}}\n", "store.dsn: only for backend postgresql"),
        (f"sp_id: T\nlower_sps: [{LOWER}]\nstore: {{backend: postgresql, dsn: 5}}\n", "store.dsn"),
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
        (f"sp_id: T\nlower_sps: [{LOWER}]\nrest_listen: 8443\n", "rest_listen"),
        (f"sp_id: T\nlower_sps: [{LOWER}]\nrest_callback_hosts: example.org\n", "rest_callback_hosts"),
        (f"sp_id: T\nlower_sps: [{LOWER}]\nrest_callback_hosts: [7]\n", "rest_callback_hosts[0]"),
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


@pytest.mark.parametrize(
    ("setting", "field", "needle"),
    [
        ("hold_time_s: '10'", "hold_time_s", "hold_time_s: must be a positive number, got '10'"),
        ("hold_time_s: true", "hold_time_s", "hold_time_s: must be a positive number, got True"),
        ("lower_timeout_s: [1]", "lower_timeout_s", "lower_timeout_s: must be a positive number, got [1]"),
        ("activation_timeout_s: 1h", "activation_timeout_s", "got '1h'"),
        ("data_dir: 5", "data_dir", "data_dir: must be a file path, got 5"),
        ("key_file: [sp.key]", "key_file", "key_file: must be a file path"),
        ("wim: {capacity_mbps: {A-B: '100'}}", "wim.capacity_mbps.A-B", "must be a positive integer, got '100'"),
        ("wim: {capacity_mbps: {A-B: 500.5}}", "wim.capacity_mbps.A-B", "must be a positive integer, got 500.5"),
        ("retention: {failed_max: 10.5}", "retention.failed_max", "from 0 to 1000000, got 10.5"),
        ("security: {session_ttl_s: '60'}", "security.session_ttl_s", "must be a positive number, got '60'"),
        ("security: {login_listen: 8443}", "security.login_listen", "expected HOST:PORT, got 8443"),
        ("monitoring: {mode: loud}", "monitoring.mode", "unknown mode 'loud' (known: normal, skeleton)"),
        ("sp_id: 7", "sp_id", "sp_id: required, a non-empty string, got 7"),
    ],
)
def test_a_wrong_type_is_refused_not_coerced_and_named_by_its_path(
    tmp_path: Path, setting: str, field: str, needle: str
) -> None:
    text = f"sp_id: T\nlower_sps: [{LOWER}]\n{setting}\n".replace("sp_id: T\n", "", setting.startswith("sp_id"))
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert info.value.field == field
    assert needle in str(info.value)


@pytest.mark.parametrize(
    ("text", "field", "known"),
    [
        (f"sp_id: T\nlower_sps: [{LOWER}]\ncolour: blue\n", "colour", "known: sp_id, listen, data_dir"),
        (
            f"sp_id: T\nlower_sps: [{LOWER[:-1]}, port: 1}}]\n",
            "lower_sps[0].port",
            "known: id, address, addresses, keys",
        ),
        (f"sp_id: T\nlower_sps: [{LOWER}]\nwim: {{drvier: linux}}\n", "wim.drvier", "known: driver, capacity_mbps"),
        (f"sp_id: T\nlower_sps: [{LOWER}]\nretention: {{days: 1}}\n", "retention.days", "known: failed_s, failed_max"),
    ],
)
def test_an_unknown_key_is_named_with_the_known_ones(tmp_path: Path, text: str, field: str, known: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert info.value.field == field
    assert f"{field}: unknown setting ({known}" in str(info.value)


def test_every_bad_setting_is_told_at_once_the_first_one_as_the_field(tmp_path: Path) -> None:
    text = f"sp_id: T\nlower_sps: [{LOWER}]\nhold_time_s: true\nsecurity: {{call_ttl_s: -1}}\nwim: {{driver: x}}\n"
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    lines = str(info.value).splitlines()
    assert info.value.field == "hold_time_s" and str(tmp_path) in lines[0]
    assert any(line.startswith("security.call_ttl_s: ") for line in lines)
    assert any(line.startswith("wim.driver: unknown driver 'x'") for line in lines)


def test_null_sections_are_the_defaults(tmp_path: Path) -> None:
    text = f"sp_id: T\nlower_sps: [{LOWER}]\nwim:\nsecurity:\nmetrics_listen:\nmonitoring:\ndomains:\n"
    cfg = load_config(write(tmp_path, text))
    assert cfg.wim.driver == "memory" and cfg.security.login_listen == "" and cfg.metrics_listen == ""
    assert cfg.rest_listen == "" and cfg.rest_callback_hosts == ()
    assert cfg.monitoring_mode == "normal" and cfg.domains == () and cfg.activation_timeout_s is None


def test_the_store_defaults_to_sqlite_and_postgresql_takes_its_dsn(tmp_path: Path) -> None:
    base = f"sp_id: T\nlower_sps: [{LOWER}]\n"
    assert load_config(write(tmp_path, base)).store.backend == "sqlite"
    cfg = load_config(write(tmp_path, base + "store: {backend: postgresql, dsn: 'host=127.0.0.1 dbname=t'}\n"))
    assert (cfg.store.backend, cfg.store.dsn) == ("postgresql", "host=127.0.0.1 dbname=t")


def test_a_lower_sp_at_several_addresses_is_one_balanced_target(tmp_path: Path) -> None:
    one = load_config(write(tmp_path, f"sp_id: T\nlower_sps: [{LOWER}]\n")).lower_sps[0]
    assert (one.target, one.balanced) == ("x:1", False)
    text = f"sp_id: T\nlower_sps: [{{id: A, keys: ['{KEY}'], addresses: ['127.0.0.1:1', '127.0.0.1:2']}}]\n"
    many = load_config(write(tmp_path, text)).lower_sps[0]
    assert (many.address, many.target, many.balanced) == ("127.0.0.1:1", "ipv4:127.0.0.1:1,127.0.0.1:2", True)
    text = f"sp_id: T\nlower_sps: [{{id: A, keys: ['{KEY}'], addresses: ['[::1]:1', '[::1]:2']}}]\n"
    assert load_config(write(tmp_path, text)).lower_sps[0].target == "ipv6:[::1]:1,[::1]:2"


def test_a_leaf_with_emulated_domains_may_run_as_replicas(tmp_path: Path) -> None:
    # Its books are in the shared store (issue 16); netns and OpenStack domains are refused (above).
    text = (
        "sp_id: L\ndomains: [{id: L, pops: [a], endpoints: [{id: L.ep, pop: a, capacity_mbps: 1}]}]\n"
        "store: {backend: postgresql, dsn: 'host=127.0.0.1 dbname=t', replicas: true}\n"
    )
    cfg = load_config(write(tmp_path, text))
    assert cfg.store.replicas and cfg.domain_kinds == {"L": "emulated"}

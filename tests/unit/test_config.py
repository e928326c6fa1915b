"""Broker configs: defaults, and every mistake named by file and path."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.config import ConfigError, load_config
from tests.topology import leaf_domain


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
        ("sp_id: T\nlower_sps: [{id: A, address: 'x:1'}]\nlower_sps: []\n", "duplicate key 'lower_sps'"),
        ("sp_id: T\n", "needs lower_sps"),
        ("sp_id: T\nlower_sps: [{id: A}]\n", "lower_sps[0].address"),
        ("sp_id: T\nlower_sps: [{id: A, address: 'x:1'}, {id: A, address: 'y:2'}]\n", "lower_sps[1].id"),
        ("sp_id: T\nlower_sps: [{id: A, address: 'x:1'}]\nhold_time_s: -1\n", "hold_time_s"),
        ("sp_id: T\nlower_sps: [{id: A, address: 'x:1'}]\nlisten: nowhere\n", "listen"),
        ("sp_id: T\nlower_sps: [{id: A, address: 'x:1'}]\nwim: {driver: linux}\n", "wim.driver"),
        ("sp_id: T\nlower_sps: [{id: A, address: 'x:1'}]\ncolour: blue\n", "colour: unknown setting"),
        ("sp_id: L\ndomains: [{id: L, type: quantum}]\n", "domains[0].type"),
        ("sp_id: L\ndomains: [{id: L, type: openstack, pops: [{name: a}]}]\n", "domains[0].auth"),
        (
            "sp_id: L\ndomains: [{id: L, pops: [a], links: [{a: a, b: zz, bandwidth_mbps: 1}]}]\n",
            "domains[0].links[0].b",
        ),
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

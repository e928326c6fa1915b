"""The OpenStack domain's configuration: what it reads, its defaults, and errors naming the field path."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from capability_catalog.model import LabelRange, LabelSet
from domain_agents.openstack import OpenStackDomainAgent, OpenStackDomainConfig, consumer_id
from slicing.errors import InvalidArgument


def spec() -> dict[str, Any]:
    return {
        "id": "L9",
        "type": "openstack",
        "cloud": "mycloud",
        "pops": [
            {"name": "zrh", "inventory": {"VCPU": 8, "CUSTOM_FED_BANDWIDTH_MBPS": 1000}},
            {"name": "gva", "resource_provider": "compute-gva"},
        ],
        "links": [{"a": "zrh", "b": "gva", "latency_ms": 3}],
        "endpoints": [{"id": "L9.zrh", "pop": "zrh", "capacity_mbps": 1000}],
        "ports": [
            {
                "id": "L9.to-L8",
                "pop": "gva",
                "peer_sp": "L8",
                "peer_port": "L8.to-L9",
                "labels": ["5000-5099"],
                "capacity_mbps": 1000,
            }
        ],
        "functions": [{"pop": "zrh", "type": "firewall", "vcpu": 2}],
    }


def parse(d: dict[str, Any]) -> OpenStackDomainConfig:
    return OpenStackDomainConfig.from_dict(d, "domains[2]")


def test_config_reads_pops_providers_inventories_links_ports_and_function_costs() -> None:
    cfg = parse(spec())
    assert cfg.id == "L9" and cfg.credentials.cloud == "mycloud" and cfg.credentials.setting() == "domains[2].cloud"
    assert [(p.name, p.resource_provider) for p in cfg.pops] == [("zrh", "L9-zrh"), ("gva", "compute-gva")]
    assert cfg.pops[0].inventory == {"VCPU": 8, "CUSTOM_FED_BANDWIDTH_MBPS": 1000} and cfg.pops[1].inventory is None
    assert cfg.links[0].latency_ms == 3.0
    assert cfg.ports[0].port.labels == LabelSet.of([LabelRange(5000, 5099)])
    assert (cfg.functions[0].vcpu, cfg.functions[0].memory_mb) == (2, 512)
    assert cfg.pop_of("L9.to-L8") == "gva" and cfg.pop_of("nowhere") is None


def test_inline_application_credentials_choose_the_application_credential_plugin() -> None:
    d = spec()
    del d["cloud"]
    d["auth"] = {"auth_url": "http://k:5000/v3", "application_credential_id": "i", "application_credential_secret": "s"}
    creds = parse(d).credentials
    assert creds.auth is not None and creds.auth["auth_type"] == "v3applicationcredential"
    assert creds.setting() == "domains[2].auth"


def _without(d: dict[str, Any], key: str) -> dict[str, Any]:
    d = copy.deepcopy(d)
    del d[key]
    return d


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        (lambda d: _without(d, "cloud"), "domains[2].auth", "either 'cloud'"),
        (lambda d: {**d, "auth": {"auth_url": "x"}}, "domains[2].auth", "either 'cloud'"),
        (lambda d: {**_without(d, "cloud"), "auth": {"auth_url": "x"}}, "domains[2].auth", "username and password"),
        (lambda d: {**_without(d, "cloud"), "auth": {"username": "u"}}, "domains[2].auth.auth_url", "required"),
        (lambda d: {**_without(d, "cloud"), "auth": {"colour": 1}}, "domains[2].auth.colour", "unknown key"),
        (lambda d: {**d, "pops": []}, "domains[2].pops", "non-empty"),
        (lambda d: {**d, "pops": [{"name": "a"}, {"name": "a"}]}, "domains[2].pops", "twice"),
        (
            lambda d: {**d, "pops": [{"name": "a", "inventory": {"vcpu": 1}}]},
            "domains[2].pops[0].inventory.vcpu",
            "UPPER",
        ),
        (lambda d: {**d, "poll_s": 0}, "domains[2].poll_s", "positive"),
        (lambda d: {**d, "links": [{"a": "zrh", "b": "zrh", "latency_ms": 1}]}, "domains[2].links[0].b", "different"),
        (lambda d: {**d, "functions": [{"pop": "bern", "type": "fw"}]}, "domains[2].functions[0].pop", "unknown pop"),
        (lambda d: {**d, "type": "emulated"}, "domains[2].type", "must be 'openstack'"),
    ],
)
def test_config_error_names_the_exact_field_path(change: Any, field: str, reason: str) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(reason)) as info:
        parse(change(spec()))
    assert info.value.field == field


def test_a_vlan_port_is_refused_because_neutron_segments_here_are_vxlan() -> None:
    d = spec()
    d["ports"][0].update(label_type="vlan", labels=[100])
    with pytest.raises(InvalidArgument, match="vxlan-vni") as info:
        parse(d)
    assert info.value.field == "domains[2].ports[0].label_type"


def test_consumer_ids_are_stable_per_domain_and_key() -> None:
    assert consumer_id("L9", "k") == consumer_id("L9", "k")
    assert len({consumer_id("L9", "k"), consumer_id("L9", "j"), consumer_id("L8", "k")}) == 3


async def test_a_handle_of_another_kind_is_refused_on_restore_and_ignored_on_release() -> None:
    agent = OpenStackDomainAgent(parse(spec()))
    with pytest.raises(InvalidArgument, match="not an OpenStack-domain handle") as info:
        await agent.restore('{"v": 1, "domain": "L9"}', committed=False)
    assert info.value.field == "handle"
    await agent.abort("not json")  # nothing of it can exist: no OpenStack call is made
    await agent.terminate('{"v": 1}')
    assert agent.usage().bandwidth_mbps == 0


class _Flaky:
    """A cloud factory that fails as told, counting its calls (no OpenStack needed)."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self, creds: Any) -> Any:
        self.calls += 1
        raise self.errors.pop(0) if len(self.errors) > 1 else self.errors[0]


async def test_connect_waits_for_a_cloud_that_does_not_answer_and_gives_up_after_its_patience() -> None:
    from domain_agents.openstack_model import NoAnswer
    from slicing.errors import Unauthenticated

    busy = _Flaky(NoAnswer("Placement did not answer within 3 s"))
    agent = OpenStackDomainAgent(parse(spec()), cloud_factory=busy)
    with pytest.raises(NoAnswer):
        await agent.connect()  # no patience: one try
    assert busy.calls == 1
    with pytest.raises(NoAnswer, match="did not answer"):
        await agent.connect(patience_s=1.2)  # pauses 0.5, then 0.7 (what is left): three tries
    assert busy.calls == 1 + 3
    # A refusal is never retried, whatever the patience: it names the setting at once.
    refused = _Flaky(NoAnswer("Keystone did not answer"), Unauthenticated("domains[2].cloud: wrong password"))
    agent = OpenStackDomainAgent(parse(spec()), cloud_factory=refused)
    with pytest.raises(Unauthenticated, match="wrong password"):
        await agent.connect(patience_s=30)
    assert refused.calls == 2

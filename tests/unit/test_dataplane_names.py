"""Data-plane names: derived, within the kernel's 15-character limit, distinct per prefix, slice and role."""

from __future__ import annotations

import pytest

from slicing.errors import InvalidArgument
from wim.names import IFNAMSIZ, Names, check_prefix


@pytest.mark.parametrize("prefix", ["fb", "fb3k9x"])
def test_interface_names_fit_the_kernel_limit_and_start_with_the_prefix(prefix: str) -> None:
    names = Names(prefix)
    for name in (
        names.port_bridge("L1.to-a-very-long-port-name-indeed", 16_000_000),
        names.endpoint_if("L1", "L1-0123456789ab.0.0", "L1.ams"),
        *names.function_ifs("L1", "L1-0123456789ab.0.0", 7),
    ):
        assert len(name) <= IFNAMSIZ and name.startswith(prefix)


def test_names_are_derived_so_another_process_finds_them_and_differ_per_prefix_and_slice() -> None:
    assert Names("fbaa").port_ns("L1.to-L2") == Names("fbaa").port_ns("L1.to-L2")
    assert Names("fbaa").port_ns("L1.to-L2") != Names("fbab").port_ns("L1.to-L2")
    assert Names("fbaa").port_bridge("L1.to-L2", 1000) != Names("fbaa").port_bridge("L1.to-L2", 1001)
    assert Names("fbaa").endpoint_ns("L1", "k1", "L1.ams") != Names("fbaa").endpoint_ns("L1", "k2", "L1.ams")
    assert len(set(Names("fbaa").function_ifs("L1", "k1", 0))) == 2
    assert Names("fbaa").pop_ns("L1", "ams").startswith("fbaa-pop-")


@pytest.mark.parametrize("bad", ["", "eth0", "fb-x", "fbtoolong", "FB12"])
def test_a_prefix_outside_the_family_is_refused_naming_the_field(bad: str) -> None:
    with pytest.raises(InvalidArgument, match=r"dataplane\.prefix"):
        check_prefix(bad)

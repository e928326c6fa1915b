"""Data-plane tests: root and network namespaces; each test gets its own prefix and leaves nothing behind."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from tests.conftest import require_dataplane


@pytest.fixture(autouse=True)
def _needs_root() -> None:
    """Skip without root, or fail under FEDBROKER_REQUIRE_DATAPLANE=1."""
    require_dataplane()


@pytest.fixture
def prefix() -> Iterator[str]:
    """A fresh data-plane prefix; everything made under it is removed after the test, pass or fail."""
    from wim import netlink

    value = f"fb{secrets.token_hex(2)}"
    try:
        yield value
    finally:
        netlink.clean(value)

"""Shared test helpers: tiers that must run under CI and may skip elsewhere."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from scenarios.postgres import PostgresServer, find_bindir


def require_or_skip(env_var: str, available: bool, reason: str) -> None:
    """Skip when ``available`` is false, unless ``env_var`` is set: then fail (CI must run the tier)."""
    if available:
        return
    if os.environ.get(env_var) == "1":
        pytest.fail(f"{env_var}=1 but {reason}")
    pytest.skip(reason)


def require_postgresql() -> None:
    """PostgreSQL tests need the server's programs; under FEDBROKER_REQUIRE_POSTGRESQL=1 or CI they never skip."""
    found = find_bindir() is not None
    if not found and os.environ.get("CI") == "true":
        pytest.fail("CI=true but PostgreSQL's initdb and pg_ctl are not installed (.ci/run installs them)")
    require_or_skip("FEDBROKER_REQUIRE_POSTGRESQL", found, "PostgreSQL (initdb, pg_ctl) is not installed")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throw-away PostgreSQL server for this test process (``scenarios/postgres.py``), removed at the end."""
    require_postgresql()
    bindir = find_bindir()
    assert bindir is not None
    server = PostgresServer(bindir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_dsn(postgres_server: PostgresServer) -> str:
    """The DSN of a new, empty database of the session's PostgreSQL server."""
    return postgres_server.new_database()


def require_dataplane() -> None:
    """Data-plane tests need root (and iproute2); under FEDBROKER_REQUIRE_DATAPLANE=1 they never skip."""
    require_or_skip("FEDBROKER_REQUIRE_DATAPLANE", os.geteuid() == 0, "data-plane tests need root")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (``make test`` runs two workers), keep together what shares one resource.

    The OpenStack tests share one set of services (a session fixture: one worker starts them once),
    the data-plane tests run one at a time, and each fault sweep runs federations side by side on
    its own; everything else is spread.
    """
    for item in items:
        parts = item.nodeid.split("/")
        if len(parts) > 2 and parts[1] == "openstack":
            item.add_marker(pytest.mark.xdist_group("openstack"))
        elif len(parts) > 2 and parts[1] == "dataplane":
            # Kernel work (namespaces, veths, packet counts) of two tests at once slows and skews both.
            item.add_marker(pytest.mark.xdist_group("dataplane"))
        elif item.get_closest_marker("sweep") is not None or item.get_closest_marker("exhaustive") is not None:
            item.add_marker(pytest.mark.xdist_group(f"sweep-{item.name}"))
    # The exhaustive sweep (about five minutes on its own) first: one worker runs it while the other works
    # through the rest, instead of it starting last and running alone.
    items.sort(key=lambda item: item.get_closest_marker("exhaustive") is None)

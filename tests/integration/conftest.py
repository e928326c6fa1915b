"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from scenarios.processes import OPERATOR, Fleet
from tests.integration.federation import Federation
from tests.integration.rest import RestClient


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    """An empty federation in ``tmp_path``; every broker started in it is stopped afterwards."""
    federation = Federation(tmp_path)
    try:
        yield federation
    finally:
        await federation.close()


# The REST modules' clients: each module defines a ``fleet`` fixture and its ``SP``.


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """One HTTP client session for a module's REST calls."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as s:
        yield s


def _client(request: pytest.FixtureRequest, fleet: Fleet, session: aiohttp.ClientSession, name: str) -> RestClient:
    return RestClient(fleet, request.module.SP, name, session)


@pytest.fixture
def alice(request: pytest.FixtureRequest, fleet: Fleet, session: aiohttp.ClientSession) -> RestClient:
    """The customer alice on the module's SP."""
    return _client(request, fleet, session, "alice")


@pytest.fixture
def bob(request: pytest.FixtureRequest, fleet: Fleet, session: aiohttp.ClientSession) -> RestClient:
    """The customer bob on the module's SP."""
    return _client(request, fleet, session, "bob")


@pytest.fixture
def operator(request: pytest.FixtureRequest, fleet: Fleet, session: aiohttp.ClientSession) -> RestClient:
    """The operator of the module's SP."""
    return _client(request, fleet, session, OPERATOR)

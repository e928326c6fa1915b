"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.integration.federation import Federation


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    """An empty federation in ``tmp_path``; every broker started in it is stopped afterwards."""
    federation = Federation(tmp_path)
    try:
        yield federation
    finally:
        await federation.close()

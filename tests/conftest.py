"""Shared test helpers: tiers that must run under CI and may skip elsewhere."""

from __future__ import annotations

import os

import pytest


def require_or_skip(env_var: str, available: bool, reason: str) -> None:
    """Skip when ``available`` is false, unless ``env_var`` is set: then fail (CI must run the tier)."""
    if available:
        return
    if os.environ.get(env_var) == "1":
        pytest.fail(f"{env_var}=1 but {reason}")
    pytest.skip(reason)


def require_dataplane() -> None:
    """Data-plane tests need root (and iproute2); under FEDBROKER_REQUIRE_DATAPLANE=1 they never skip."""
    require_or_skip("FEDBROKER_REQUIRE_DATAPLANE", os.geteuid() == 0, "data-plane tests need root")

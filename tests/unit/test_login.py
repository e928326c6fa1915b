"""The login endpoint under hostile use: the failure limit holds for concurrent guesses."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from broker.security.accounts import Account, AccountBook, AccountKind, Role, hash_password
from broker.security.audit import AuditLog
from broker.security.login import MAX_FAILURES, LoginEndpoint, SessionIssuer
from broker.security.tokens import TokenMinter
from capability_catalog.signing import generate_key


def endpoint(tmp_path: Path) -> LoginEndpoint:
    accounts = AccountBook(None, (Account("carol", AccountKind.USER, Role.CUSTOMER, (), hash_password("right")),))
    issuer = SessionIssuer(
        "L1",
        accounts,
        TokenMinter(generate_key(), "L1"),
        AuditLog("L1", tmp_path / "audit.log"),
        session_ttl_s=600,
        clock=lambda: 1_800_000_000.0,
    )
    return LoginEndpoint(issuer, ssl_context=None)


async def test_concurrent_wrong_passwords_are_checked_no_more_often_than_the_limit(tmp_path: Path) -> None:
    login = endpoint(tmp_path)
    address = await login.start("127.0.0.1:0")
    try:
        async with aiohttp.ClientSession() as http:

            async def guess(i: int) -> int:
                body = {"user": "carol", "password": f"guess-{i}"}
                async with http.post(f"http://{address}/login", json=body) as r:
                    return r.status

            statuses = await asyncio.gather(*(guess(i) for i in range(30)))
            async with http.post(f"http://{address}/login", json={"user": "carol", "password": "right"}) as r:
                locked_out_even_when_right = r.status
    finally:
        await login.stop()
    assert statuses.count(401) == MAX_FAILURES  # only these reached the password check
    assert statuses.count(429) == 30 - MAX_FAILURES
    assert locked_out_even_when_right == 429


async def test_a_right_password_does_not_count_as_a_failure(tmp_path: Path) -> None:
    login = endpoint(tmp_path)
    address = await login.start("127.0.0.1:0")
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(MAX_FAILURES + 2):
                async with http.post(f"http://{address}/login", json={"user": "carol", "password": "right"}) as r:
                    assert r.status == 200
    finally:
        await login.stop()

"""Contract test of the REST API: schemathesis against a live broker process, from its own /openapi.json.

Every operation (but the endless SSE stream, tested in ``test_rest.py``) gets a bounded number of
generated requests, valid ones and ones that break the document, each with a fresh call token over
HTTPS with a client certificate. Every answer must be no 5xx, carry a documented status and content
type, and match its documented schema; a request that breaks the document must be refused (4xx).
Failures are collected (not shrunk) so the report gives the counts: operations, examples, failures.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from openapi_spec_validator import validate
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import FailureGroup

from broker.security.accounts import Role
from scenarios.processes import OPERATOR, Fleet
from tests.integration.rest import rest_address
from tests.topology import leaf_domain

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

SP = "L"
#: Generated requests per operation and mode: small, so the whole run stays within seconds of CPU.
EXAMPLES = {GenerationMode.POSITIVE: 25, GenerationMode.NEGATIVE: 15}
SKIPPED = {"streamEvents"}  # never ends by design; its contract is checked in test_rest.py
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def fleet(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Fleet]:
    fl = Fleet(tmp_path_factory.mktemp("rest-contract"))
    try:
        fl.grant(SP, "alice", Role.CUSTOMER)
        await fl.start(SP, {"domains": [leaf_domain(SP, {"X": "100-199"})], "rest_listen": "127.0.0.1:0"})
        yield fl
    finally:
        await fl.stop_all()


@dataclass
class Tally:
    """What the run did: operations, requests sent, and each failure in words."""

    operations: list[str] = field(default_factory=list)
    examples: int = 0
    failures: list[str] = field(default_factory=list)
    statuses: Counter[tuple[str, str, int]] = field(default_factory=Counter)  # (mode, operation, status) -> how many


def fuzz(base: str, doc: dict[str, Any], token: Callable[[], str], tls: dict[str, Any], known: dict[str, str]) -> Tally:
    """Run every operation's generated cases against ``base``; blocking (requests), bounded.

    A read by id is also run with ``known[operationId]`` as the id (positive cases only), so real
    orders, slices and specifications are checked against the document, not only 404s.
    """
    schema = schemathesis.openapi.from_dict(doc)
    tally = Tally()

    def one_mode(op: Any, mode: GenerationMode, session: requests.Session, path: dict[str, str] | None) -> None:
        checks = CHECKS + ([negative_data_rejection] if mode is GenerationMode.NEGATIVE else [])

        @settings(
            max_examples=EXAMPLES[mode],
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=op.as_strategy(generation_mode=mode, path_parameters=path))
        def run(case: Any) -> None:
            tally.examples += 1
            headers = {"Authorization": f"Bearer {token()}"}
            response = case.call(base_url=base, session=session, headers=headers, timeout=10, **tls)
            tally.statuses[(mode.value, op.definition.raw["operationId"], response.status_code)] += 1
            try:
                case.validate_response(response, checks=checks, headers=headers, transport_kwargs=tls)
            except (AssertionError, FailureGroup) as exc:  # a failed check: kept as words, not shrunk
                tally.failures.append(f"{mode.value} {op.label}: {str(exc)[:800]}")

        run()

    with requests.Session() as session:
        for result in schema.get_all_operations():
            op = result.ok()
            if op.definition.raw.get("operationId") in SKIPPED:
                continue
            tally.operations.append(op.label)
            for mode in EXAMPLES:
                one_mode(op, mode, session, None)
            real = known.get(op.definition.raw["operationId"])
            if real is not None:
                one_mode(op, GenerationMode.POSITIVE, session, {"id": real})
    return tally


def _known_ids(base: str, token: Callable[[], str], tls: dict[str, Any], external_id: str) -> dict[str, str]:
    """Ids of real resources: an order's, its slice's, the specification's.

    (A cancellation needs an order still in progress; ``test_rest.py`` makes one with a fault.)
    """
    chars = [{"name": k, "value": v} for k, v in (("src", "L.ep"), ("dst", "L.to-X"), ("bandwidth_mbps", 5))]
    body = {"externalId": external_id, "serviceOrderItem": [{"service": {"serviceCharacteristic": chars}}]}
    auth = {"Authorization": f"Bearer {token()}"}
    order = requests.post(f"{base}/tmf-api/serviceOrdering/v4/serviceOrder", json=body, headers=auth, timeout=10, **tls)
    assert order.status_code == 201, order.text
    return {
        "retrieveServiceOrder": order.json()["id"],
        "retrieveService": order.json()["serviceOrderItem"][0]["service"]["id"],
        "retrieveServiceSpecification": f"{SP}.slice",
    }


@pytest.mark.parametrize("caller", ["alice", OPERATOR])
async def test_the_live_api_keeps_its_openapi_document(fleet: Fleet, caller: str) -> None:
    """As a customer (the operators' operations refuse), and as the SP's operator (they answer)."""
    broker = fleet[SP]
    base = f"https://{rest_address(broker)}"
    pki = fleet.pki_dir
    fleet.identity(caller)
    tls = {"verify": str(pki / "ca.crt"), "cert": (str(pki / f"{caller}.crt"), str(pki / f"{caller}.key"))}
    doc = await asyncio.to_thread(lambda: requests.get(f"{base}/openapi.json", timeout=10, **tls).json())  # type: ignore[arg-type]
    validate(doc)

    def token() -> str:
        return fleet.identity(caller).token(SP)

    known = await asyncio.to_thread(_known_ids, base, token, tls, f"contract-{caller}")
    if caller == OPERATOR:
        known["patchOffer"] = SP  # the SP's own domain: withdrawn and published by the generated bodies
    started = time.process_time()
    tally = await asyncio.to_thread(fuzz, base, doc, token, tls, known)
    spent = time.process_time() - started
    print(
        f"\nschemathesis as {caller}: {len(tally.operations)} operations, {tally.examples} examples, "
        f"{len(tally.failures)} failures, {spent:.1f} s CPU in the test process"
    )
    documented = sum(len(methods) for methods in doc["paths"].values())
    assert len(tally.operations) == documented - len(SKIPPED)
    assert tally.examples >= len(tally.operations) * 5
    print("  " + ", ".join(f"{mode} {op} {code}: {n}" for (mode, op, code), n in sorted(tally.statuses.items())))
    assert not tally.failures, "\n".join(tally.failures[:20])
    # The generated requests got past the gate (a fresh token each): not a run of 401s.
    answered = {op for (_, op, code) in tally.statuses if code < 300}
    assert {"listServiceOrder", "listService", "listServiceSpecification", *known} <= answered
    operators_only = {"retrieveFederation", "listOffer", "patchOffer"}
    assert operators_only <= answered if caller == OPERATOR else not operators_only & answered
    positive_401 = [key for key in tally.statuses if key[0] == "positive" and key[2] == 401]
    assert not positive_401  # negative cases break the auth too, and get their 401
    assert broker.running()
    bugs = [line for line in broker.log_path.read_text().splitlines() if " ERROR " in line]
    assert not bugs, "\n".join(bugs[:10])  # no answer was the 500 of an unexpected error

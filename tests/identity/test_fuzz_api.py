"""Schemathesis against the running platform's API, as its contract (proto/openapi.json) declares it, signed in
as an organization's admin: every operation, generated valid and invalid input; no answer is a 5xx, every
status is one the operation documents, and every body (the error body of a 4xx included) and content type
match the schema.

In `make test` this is the quick variant: a few deterministic examples per operation, the sign-in routes left
out (their failed attempts would throttle this address for the package's other tests). `make fuzz` runs the
full one: FUZZ_EXAMPLES per operation (default there 100), randomised, sign-in routes included. What a run
found and what was fixed: README, "Fuzzing the API"."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from browserfleet_devkit.devstack import Platform
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.result import Ok
from schemathesis.schemas import BaseSchema

from .conftest import bearer, new_org

pytestmark = pytest.mark.e2e

OPENAPI = Path(__file__).resolve().parents[2] / "proto" / "openapi.json"
FULL = os.environ.get("FUZZ_FULL") == "1"
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "100" if FULL else "3"))
# failed sign-ins count against the caller's address (auth's throttle): the quick run leaves them to the full one
SIGN_IN = ["/auth/login", "/auth/refresh", "/auth/mfa/verify", "/auth/mfa/enrol", "/auth/sso/exchange"]
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def fuzz_org(platform: Platform) -> dict[str, Any]:
    return new_org(platform, "Fuzz")


schema: BaseSchema = schemathesis.openapi.from_dict(json.loads(OPENAPI.read_text()))
if not FULL:
    schema = schema.exclude(path=SIGN_IN)


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not FULL,
    suppress_health_check=list(HealthCheck),
    database=None,
    # generated cases only: schemathesis's coverage phase (run under Phase.explicit) expands the recursive
    # step schemas (`if`, `repeat`) combinatorially and did not finish collecting one operation in minutes
    phases=[Phase.generate],
)
def test_api(case: Any, platform: Platform, fuzz_org: dict[str, Any]) -> None:
    response = case.call_and_validate(
        base_url=platform.gateway_url, headers=bearer(fuzz_org["admin"]), checks=CHECKS, timeout=30
    )
    ANSWERS.append((f"{case.method} {case.path}", response.status_code))


ANSWERS: list[tuple[str, int]] = []


def test_the_fuzz_reached_every_operation() -> None:
    """Runs after test_api (file order): the run asked every operation, and was not all refusals."""
    operations = set()
    for op in schema.get_all_operations():
        assert isinstance(op, Ok), op.err()  # every operation of the contract loads
        operations.add(op.ok().label)
    assert {label for label, _ in ANSWERS} == operations
    statuses = [status for _, status in ANSWERS]
    assert any(200 <= s < 300 for s in statuses) and any(400 <= s < 500 for s in statuses)
    print(f"fuzz: {len(operations)} operations, {len(ANSWERS)} requests, no 5xx, all conformant")

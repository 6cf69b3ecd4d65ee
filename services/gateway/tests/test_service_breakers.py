"""Service calls behind circuit breakers (upstream.GuardedRpc), on the real NATS with FakeServices standing in
for the services: a service that is not running or does not answer is a 503 naming it with Retry-After;
after SERVICE_BREAKER_FAILURES calls without an answer in time its calls fail fast without reaching it (so requests stop piling up
on it) until one probe passes after the cool-down; answers of any kind, errors included, keep it closed.
The breaker's state is in /metrics and in /health/ready (the `breakers` check: degraded while one is open). The breakers'
clock is the test's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from browserfleet_contracts import endpoints
from browserfleet_core.breaker import Breakers
from browserfleet_gateway.upstream import GuardedRpc
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from .conftest import Clock, FakeServices, Signer

COOLDOWN = 10.0


class Silent:
    """A scheduler that takes requests for task attempts and never answers them (a hung service)."""

    def __init__(self) -> None:
        self.calls = 0
        self.answer = False

    async def on_msg(self, msg: Msg) -> None:
        self.calls += 1
        if self.answer:
            await msg.respond(b"[]")


@pytest.fixture
async def silent(gateway_nc: NatsClient, services: FakeServices) -> AsyncIterator[Silent]:
    hung = Silent()
    sub = await services.nc.subscribe(endpoints.Scheduler.TASK_ATTEMPTS.subject, cb=hung.on_msg)
    await services.nc.flush()
    try:
        yield hung
    finally:
        await sub.unsubscribe()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def gateway_rpc(gateway_nc: NatsClient, clock: Clock) -> GuardedRpc:
    """`client`'s breakers: on the test's clock, opening after fewer calls than production's."""
    return GuardedRpc(
        gateway_nc, timeout=0.3, board=Breakers(), failures=3, cooldown_seconds=COOLDOWN, clock=clock
    )


def rpc_of(client: httpx.AsyncClient) -> GuardedRpc:
    app = client._transport.app  # type: ignore[attr-defined]
    rpc = app.state.gateway.rpc
    assert isinstance(rpc, GuardedRpc)
    return rpc


def admin(signer: Signer) -> dict[str, str]:
    return {"Authorization": f"Bearer {signer.token()}"}


def error(resp: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = resp.json()["error"]
    return body


async def test_a_service_that_is_not_running_is_a_503_naming_it(
    client: httpx.AsyncClient, signer: Signer
) -> None:
    resp = await client.get("/admin/webhooks", headers=admin(signer))  # no webhooks service in this test
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "1"
    assert error(resp)["code"] == "service_unavailable"
    assert error(resp)["message"].startswith("the webhooks service is not running")
    assert error(resp)["detail"] == [{"dependency": "webhooks", "retry_after": 1}]
    # NATS says "no responders" at once: nothing piles up, so the circuit stays closed (a rolling restart's
    # moment without a replica is not stretched into a cool-down)
    for _ in range(5):
        assert (await client.get("/admin/webhooks", headers=admin(signer))).status_code == 503
    assert rpc_of(client).board.snapshot()["service:webhooks"].state == "closed"


async def test_a_hung_service_opens_its_circuit_and_a_probe_closes_it(
    client: httpx.AsyncClient, clock: Clock, signer: Signer, silent: Silent
) -> None:
    url, headers = "/admin/tasks/t-1/attempts", admin(signer)
    timeouts = [await client.get(url, headers=headers) for _ in range(3)]
    assert [(r.status_code, error(r)["code"]) for r in timeouts] == [(503, "service_timeout")] * 3
    assert error(timeouts[0])["message"].startswith("the scheduler service did not answer in time")
    assert timeouts[2].headers["Retry-After"] == str(int(COOLDOWN))  # the third opened the circuit
    assert silent.calls == 3

    # open: fails fast, never reaches the service
    fast = await client.get(url, headers=headers)
    assert fast.status_code == 503 and error(fast)["code"] == "circuit_open"
    assert fast.headers["Retry-After"] == str(int(COOLDOWN))
    assert error(fast)["detail"] == [{"dependency": "scheduler", "retry_after": int(COOLDOWN)}]
    assert silent.calls == 3
    metrics = (await client.get("/metrics")).text
    assert 'browserfleet_circuit_breaker_state{breaker="service:scheduler"} 2.0' in metrics
    assert rpc_of(client).board.snapshot()["service:scheduler"].state == "open"
    ready = (await client.get("/health/ready")).json()  # the replica serves, degraded, naming the breaker
    assert ready["checks"]["breakers"] == {
        "status": "degraded",
        "detail": "open: service:scheduler",
        "critical": False,
    }
    # the other services' calls are not held up
    assert (await client.get("/auth/me", headers=headers)).status_code == 200

    # half-open after the cool-down: of five requests at once, one probes the service, four fail fast
    clock.t += COOLDOWN
    burst = await asyncio.gather(*(client.get(url, headers=headers) for _ in range(5)))
    codes = sorted(error(r)["code"] for r in burst)
    assert codes == ["circuit_open"] * 4 + ["service_timeout"] and silent.calls == 4
    assert (await client.get(url, headers=headers)).status_code == 503  # the failed probe reopened it
    assert silent.calls == 4

    # the service is back: the next probe closes the circuit and calls flow again
    silent.answer = True
    clock.t += COOLDOWN
    assert (await client.get(url, headers=headers)).status_code == 200
    assert (await client.get(url, headers=headers)).status_code == 200
    assert silent.calls == 6
    assert rpc_of(client).board.snapshot()["service:scheduler"].state == "closed"
    assert (await client.get("/health/ready")).json()["checks"]["breakers"]["status"] == "healthy"


async def test_error_answers_keep_the_circuit_closed(
    client: httpx.AsyncClient, signer: Signer, services: FakeServices
) -> None:
    for _ in range(5):  # the scheduler answers 404: it is up
        resp = await client.get("/api/v1/tasks/no-such-task", headers=admin(signer))
        assert resp.status_code == 404
    resp = await client.get("/api/v1/tasks", headers=admin(signer))
    assert resp.status_code == 200
    assert rpc_of(client).board.snapshot()["service:scheduler"].state == "closed"

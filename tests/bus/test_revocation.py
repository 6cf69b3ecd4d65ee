"""A removed worker is off the bus (issue 11, items 2 and 7): its open connection is cut at once (worker-gateway
kicks it through the system account when `workers.revoked` is broadcast), its reconnection and any new
connection with its key are refused, and the refusal says why in the server's log."""

from __future__ import annotations

import asyncio
import time

import pytest
from browserfleet_contracts import endpoints
from browserfleet_contracts.common import Actor, ById
from browserfleet_core.messaging import RpcClient
from nats.aio.client import Client as NatsClient

from .conftest import Bus, refused

pytestmark = pytest.mark.e2e


async def eventually(check: object, what: str, cap: float = 30.0) -> None:
    deadline = time.monotonic() + cap  # hang protection only
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


async def test_a_revoked_worker_is_cut_off_and_refused_with_the_reason(
    bus_platform: Bus, admin: NatsClient
) -> None:
    worker = await bus_platform.register(org_id=bus_platform.org_id, pool="edge", name="to-be-removed")
    seen: list[str] = []

    async def on_error(exc: Exception) -> None:
        seen.append(f"error: {exc}".lower())

    async def on_disconnect() -> None:
        seen.append("disconnected")

    nc = await bus_platform.as_worker(
        worker.key,
        error_cb=on_error,
        disconnected_cb=on_disconnect,
        reconnect_time_wait=0.2,
        max_reconnect_attempts=5,
    )
    try:
        assert nc.is_connected
        await RpcClient(admin).call(
            endpoints.Workers.REVOKE,
            ById(
                actor=Actor(org_id=bus_platform.org_id, user_id="bus-test", role="admin"), id=worker.worker_id
            ),
        )
        await eventually(
            lambda: "disconnected" in seen, f"the removed worker's connection stayed open: {seen}"
        )
        await eventually(
            lambda: any("authorization violation" in s for s in seen),
            f"its reconnection was not refused: {seen}",
        )
    finally:
        await nc.close()
    assert "authorization violation" in (await refused(bus_platform.url, token=worker.key)).lower()
    log = (bus_platform.platform.home / "nats.log").read_text()
    assert "Auth callout service returned an error: this worker was removed" in log


async def test_a_worker_that_never_was_is_refused_with_the_reason(bus_platform: Bus) -> None:
    assert (
        "authorization violation" in (await refused(bus_platform.url, token="sk_worker_" + "n" * 43)).lower()
    )
    log = (bus_platform.platform.home / "nats.log").read_text()
    assert "Auth callout service returned an error: unknown worker key" in log

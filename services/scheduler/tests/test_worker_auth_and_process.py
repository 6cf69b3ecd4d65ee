"""Worker authentication over NATS, and the service as a process."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
from browserfleet_contracts import endpoints
from browserfleet_contracts.common import ErrorBody
from browserfleet_contracts.workers import WorkerAuthRequest, WorkerIdentity
from browserfleet_core.errors import ServiceError
from browserfleet_core.messaging import ERROR_HEADER, RpcClient
from browserfleet_devkit.testing import service_process
from browserfleet_scheduler.workerauth import RpcWorkerAuthenticator
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from .conftest import WAIT_CAP

GOOD_KEY = "sk_worker_good"


async def test_rpc_authenticator_caches_successes_and_maps_401_to_none(nc: NatsClient) -> None:
    """The responder is a stand-in for the worker-gateway service's `svc.workers.authenticate`."""
    calls: list[str] = []
    identity = WorkerIdentity(worker_id="w-1", org_id=None, name="worker", tags=["gpu"])

    async def respond(msg: Msg) -> None:
        key = WorkerAuthRequest.model_validate_json(msg.data).worker_key
        calls.append(key)
        if key == GOOD_KEY:
            await msg.respond(identity.model_dump_json().encode())
        elif key == "sk_worker_broken":
            body = ErrorBody(status=500, code="internal_error", message="boom")
            await nc.publish(msg.reply, body.model_dump_json().encode(), headers={ERROR_HEADER: "500"})
        else:
            body = ErrorBody(status=401, code="unauthorized", message="unknown worker key")
            await nc.publish(msg.reply, body.model_dump_json().encode(), headers={ERROR_HEADER: "401"})

    sub = await nc.subscribe(
        endpoints.Workers.AUTHENTICATE.subject, queue=endpoints.Workers.QUEUE, cb=respond
    )
    now = [1000.0]
    auth = RpcWorkerAuthenticator(RpcClient(nc, timeout=5.0), ttl=30.0, clock=lambda: now[0])
    try:
        assert await auth.authenticate(GOOD_KEY) == identity
        assert await auth.authenticate(GOOD_KEY) == identity
        assert calls == [GOOD_KEY], "a fresh success is answered from the cache"
        now[0] += 31
        assert await auth.authenticate(GOOD_KEY) == identity
        assert calls == [GOOD_KEY, GOOD_KEY], "an expired entry asks worker-gateway again"

        assert await auth.authenticate("sk_worker_nope") is None
        assert await auth.authenticate("sk_worker_nope") is None
        assert calls.count("sk_worker_nope") == 2, "refusals are not cached"
        with pytest.raises(ServiceError):
            # an outage is not a refusal: the claim must fail loudly so the worker retries
            await auth.authenticate("sk_worker_broken")
    finally:
        await sub.unsubscribe()


async def test_service_process_starts_and_stops_cleanly(nats_url: str, migrated: str) -> None:
    env = {**os.environ, "NATS_URL": nats_url, "DATABASE_URL": migrated, "LOG_LEVEL": "INFO"}
    async with service_process("browserfleet_scheduler", env) as proc:
        assert proc.stdout is not None
        seen: list[bytes] = []

        async def ready() -> None:
            assert proc.stdout is not None
            while line := await proc.stdout.readline():
                seen.append(line)
                if b"scheduler serving" in line:
                    return
            raise AssertionError(b"".join(seen).decode(errors="replace"))

        await asyncio.wait_for(ready(), WAIT_CAP)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), WAIT_CAP) == 0

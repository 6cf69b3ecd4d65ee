"""browserfleet_sdk's client against the real gateway, served by uvicorn on 127.0.0.1 and connected to real
NATS; the services behind it are the in-test responders of conftest. The sync client runs in a thread so
those responders (on the test's event loop) can answer while it blocks."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import uvicorn
from browserfleet_contracts import endpoints, subjects
from browserfleet_contracts.tasks import ArtifactRef, GetTaskRequest, TaskPublic
from browserfleet_core.errors import NotFound, Unauthorized
from browserfleet_core.streams import ensure_streams
from browserfleet_gateway.app import create_app
from browserfleet_gateway.settings import GatewaySettings
from browserfleet_sdk.client import (
    AsyncBrowserfleetClient,
    BrowserfleetClient,
    BrowserfleetError,
    TaskTimeout,
)


@pytest.fixture
def served_gateway(nats_url: str) -> Iterator[str]:
    """The gateway as it runs in production: uvicorn, its own NATS connection, its own lifespan."""
    settings = GatewaySettings(nats_url=nats_url, jwks_min_refresh_seconds=0, max_body_bytes=65_536)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings), log_config=None, access_log=False, lifespan="on", http="httptools"
        )
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    pause = threading.Event()  # never set: only used to sleep between looks at the startup flag
    while not server.started and thread.is_alive():
        pause.wait(0.01)
    assert server.started, "gateway did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture
async def sdk(served_gateway: str, services: Any, signer: Any) -> AsyncIterator[BrowserfleetClient]:
    client = BrowserfleetClient(served_gateway, token=signer.token(org="org-a", role="admin"), timeout=10)
    try:
        yield client
    finally:
        client.close()


async def test_create_wait_and_download(sdk: BrowserfleetClient, services: Any, gateway_nc: Any) -> None:
    created = await asyncio.to_thread(sdk.create_task, goal="find the price", idempotency_key="abc")
    task_id = created["id"]
    assert created["kind"] == "agent"
    assert services.calls[-1][1]["idempotency_key"] == "abc"

    # The task finishes on the third poll: no clocks involved.
    polls = 0
    original = services.tasks[task_id]
    js = gateway_nc.jetstream()
    await ensure_streams(js)
    store = await js.object_store(subjects.ARTIFACTS_BUCKET)
    await store.put(f"{task_id}/1/page.pdf", b"%PDF-1.7 fake")

    async def get_task(payload: dict[str, Any]) -> TaskPublic:
        nonlocal polls
        req = GetTaskRequest.model_validate(payload)
        if req.actor.org_id != original.org_id:
            raise NotFound("task not found")
        polls += 1
        if polls < 3:
            return original.model_copy(update={"status": "running"})
        ref = ArtifactRef(
            name="page.pdf", object_name=f"{task_id}/1/page.pdf", content_type="application/pdf", size=13
        )
        return original.model_copy(
            update={"status": "completed", "result": {"price": "1"}, "artifacts": [ref]}
        )

    services.serve(endpoints.Scheduler.GET_TASK.subject, get_task)
    done = await asyncio.to_thread(sdk.wait_for_task, task_id, 30, poll_interval=0.01)
    assert done["status"] == "completed"
    assert polls == 3
    assert await asyncio.to_thread(sdk.download_artifact, task_id, "page.pdf") == b"%PDF-1.7 fake"
    page = await asyncio.to_thread(sdk.list_tasks)
    assert [t["id"] for t in page["items"]] == [task_id]


async def test_wait_for_task_times_out(sdk: BrowserfleetClient) -> None:
    created = await asyncio.to_thread(sdk.create_task, {"goal": "never ends"})
    with pytest.raises(TaskTimeout) as info:
        await asyncio.to_thread(sdk.wait_for_task, created["id"], 0)
    assert info.value.task["status"] == "queued"


async def test_errors_are_raised_with_status_code_and_field(sdk: BrowserfleetClient) -> None:
    with pytest.raises(BrowserfleetError) as info:
        await asyncio.to_thread(sdk.create_task, {"steps": [{"action": "click"}]})
    assert (info.value.status, info.value.code, info.value.field) == (
        422,
        "validation_error",
        "steps.0.click.selector",
    )
    with pytest.raises(BrowserfleetError) as info:
        await asyncio.to_thread(sdk.get_task, "someone-elses")
    assert info.value.status == 404
    sdk.token = None
    with pytest.raises(BrowserfleetError) as info:
        await asyncio.to_thread(sdk.list_tasks)
    assert (info.value.status, info.value.code) == (401, "missing_token")


async def test_login_sets_the_token(served_gateway: str, services: Any, signer: Any) -> None:
    async def login(payload: dict[str, Any]) -> Any:
        if payload["password"] != "right":
            raise Unauthorized("invalid email or password", code="invalid_credentials")
        return {
            "access_token": signer.token(),
            "refresh_token": "r-1",
            "expires_in": 900,
            "token_type": "bearer",
        }

    services.serve(endpoints.Auth.LOGIN.subject, login)
    with BrowserfleetClient(served_gateway) as bf:
        with pytest.raises(BrowserfleetError) as info:
            await asyncio.to_thread(bf.login, "a@example.com", "wrong")
        assert info.value.code == "invalid_credentials"
        await asyncio.to_thread(bf.login, "a@example.com", "right")
        assert bf.refresh_token == "r-1"
        me = await asyncio.to_thread(bf.me)
        assert me["user"]["id"] == "user-1"


async def test_async_client(served_gateway: str, services: Any, signer: Any) -> None:
    async with AsyncBrowserfleetClient(served_gateway, token=signer.token(org="org-a")) as bf:
        created = await bf.create_task(steps=[{"action": "navigate", "url": "https://example.com"}])
        assert (await bf.get_task(created["id"]))["id"] == created["id"]
        assert [t["id"] async for t in bf.iter_tasks()] == [created["id"]]
        with pytest.raises(BrowserfleetError) as info:
            await bf.put_credential("bad name", "v")
        assert (info.value.status, info.value.field) == (422, "name")
        ready = await bf.ready()
        # the stand-ins answer no svc.<name>.health: the gateway is up but degraded, and says which
        assert {"nats", "auth", "service:scheduler"} <= set(ready["checks"]), ready
        assert ready["status"] == "degraded" and ready["checks"]["service:scheduler"]["status"] != "healthy"

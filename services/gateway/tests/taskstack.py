"""The gateway with the REAL auth and scheduler services behind it (in-process brokers on the test's NATS
server, a database of the module's own), and what the task route tests do with it: create a task, wait for a
status, claim it as a worker, report its result on TASK_UPDATES.

The one stand-in: worker keys are checked by `KnownWorkers` instead of the worker-gateway service (the
scheduler's own tests inject the same), so a test can claim an attempt as a worker would.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
from browserfleet_auth.app import AuthApp
from browserfleet_auth.app import build as build_auth
from browserfleet_auth.settings import AuthSettings
from browserfleet_contracts import endpoints, subjects
from browserfleet_contracts.auth import BootstrapReply, BootstrapRequest
from browserfleet_contracts.tasks import (
    ClaimRequest,
    TaskUpdateMessage,
)
from browserfleet_contracts.workers import WorkerIdentity
from browserfleet_core import migrations
from browserfleet_core.messaging import RpcClient, connect
from browserfleet_core.streams import ensure_streams
from browserfleet_devkit.polling import eventually
from browserfleet_devkit.testing import QUICK_SCHEDULER
from browserfleet_gateway.app import create_app
from browserfleet_scheduler.app import PACKAGE as SCHEDULER
from browserfleet_scheduler.app import SchedulerApp
from browserfleet_scheduler.settings import SchedulerSettings
from fastapi import FastAPI
from nats.aio.client import Client as NatsClient
from nats.js.object_store import ObjectStore

from .conftest import gateway_settings

WAIT_CAP = 30.0  # hang protection only; nothing asserts on speed
STEPS = [{"action": "navigate", "url": "https://example.test/"}]


class KnownWorkers:
    """Stands in for worker-gateway's key check (see the module docstring)."""

    def __init__(self) -> None:
        self.keys: dict[str, WorkerIdentity] = {}

    def add(self) -> tuple[str, WorkerIdentity]:
        key = f"sk_worker_{uuid.uuid4().hex}"
        self.keys[key] = WorkerIdentity(worker_id=str(uuid.uuid4()), org_id=None, name="w", tags=[])
        return key, self.keys[key]

    async def authenticate(self, worker_key: str) -> WorkerIdentity | None:
        return self.keys.get(worker_key)


@dataclass
class Stack:
    app: FastAPI
    http: httpx.AsyncClient
    nc: NatsClient
    rpc: RpcClient
    workers: KnownWorkers
    admin: dict[str, str] = field(default_factory=dict)
    user: dict[str, str] = field(default_factory=dict)
    viewer: dict[str, str] = field(default_factory=dict)
    key: dict[str, str] = field(default_factory=dict)


def own_database(database_url: str) -> str:
    """A database of this module's own on the test server: auth's bootstrap must be the first here."""
    name = f"gw_tasks_{uuid.uuid4().hex[:8]}"
    parts = urlsplit(database_url)
    plain = urlunsplit(parts._replace(scheme="postgresql"))
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return urlunsplit(parts._replace(path=f"/{name}"))


async def login(http: httpx.AsyncClient, email: str, password: str) -> dict[str, str]:
    resp = await http.post("/auth/login", json={"email": email, "password": password})
    assert resp.status_code == 200, resp.text
    return {"Authorization": f"Bearer {resp.json()['access_token']}"}


@asynccontextmanager
async def open_stack(nats_url: str, database_url: str) -> AsyncIterator[Stack]:
    db = await asyncio.to_thread(own_database, database_url)
    await asyncio.to_thread(migrations.upgrade, "browserfleet_auth", db)
    await asyncio.to_thread(migrations.upgrade, SCHEDULER, db)
    auth: AuthApp = build_auth(AuthSettings(nats_url=nats_url, database_url=db))
    await auth.start()
    workers = KnownWorkers()
    scheduler = SchedulerApp(
        SchedulerSettings(
            nats_url=nats_url,
            database_url=db,
            # nothing here finishes the tasks it admits: the org's limit must not hold later tests back
            plan_concurrency={"free": 1000, "pro": 1000, "enterprise": 1000},
            default_org_concurrency=1000,
            **QUICK_SCHEDULER,
        ),
        authenticator=workers,
    )
    await scheduler.start()
    nc = await connect(nats_url, name="gw-tasks-test")
    # rate limits and login throttles off (gateway_settings): two modules sign in with these accounts
    app = create_app(gateway_settings(nats_url, rpc_timeout_seconds=10), nc=nc)
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw.test") as http,
        ):
            rpc = RpcClient(nc, timeout=10)
            boot: BootstrapReply = await rpc.call(endpoints.Auth.BOOTSTRAP, BootstrapRequest())
            assert boot.password, "this module's database is fresh"
            s = Stack(app=app, http=http, nc=nc, rpc=rpc, workers=workers)
            s.admin = await login(http, boot.admin_email, boot.password)
            for role in ("user", "viewer"):
                made = await http.post(
                    "/admin/users", headers=s.admin, json={"email": f"{role}@tasks.example", "role": role}
                )
                assert made.status_code == 201, made.text
                setattr(s, role, await login(http, made.json()["email"], made.json()["password"]))
            key = await http.post(
                "/admin/api-keys",
                headers=s.admin,
                json={"name": "ci", "scopes": ["tasks:read", "tasks:write"]},
            )
            s.key = {"Authorization": f"Bearer {key.json()['key']}"}
            yield s
    finally:
        await scheduler.stop()
        await auth.stop()
        await nc.close()


async def create_task(s: Stack, headers: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    resp = await s.http.post("/api/v1/tasks", headers=headers or s.admin, json={"steps": STEPS, **extra})
    assert resp.status_code == 201, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def status_of(s: Stack, task_id: str, *wanted: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        task: dict[str, Any] = (await s.http.get(f"/admin/tasks/{task_id}", headers=s.admin)).json()
        return task if task["status"] in wanted else None

    result: dict[str, Any] = await eventually(probe, f"task {task_id} {'/'.join(wanted)}", WAIT_CAP)
    return result


async def running_task(s: Stack, **extra: Any) -> tuple[dict[str, Any], WorkerIdentity]:
    """A task claimed by a (stand-in) worker, as a pulled dispatch would be."""
    task = await create_task(s, **extra)
    await status_of(s, task["id"], "assigned")
    key, identity = s.workers.add()
    claim = ClaimRequest(task_id=task["id"], attempt=1, worker_key=key, delivery=1)
    assert (await s.rpc.call(endpoints.Scheduler.CLAIM, claim)).granted
    return task, identity


async def publish_update(s: Stack, msg: TaskUpdateMessage, msg_id: str) -> None:
    js = s.nc.jetstream()
    await js.publish(
        subjects.task_update(msg.worker_id, msg.task_id),
        msg.model_dump_json().encode(),
        headers={"Nats-Msg-Id": msg_id},
    )


async def report_result(
    s: Stack, task: dict[str, Any], worker: WorkerIdentity, *, attempt: int = 1, **fields: Any
) -> None:
    """`worker` reports the result of the task's `attempt`, once, as it would on TASK_UPDATES."""
    msg = TaskUpdateMessage(
        task_id=task["id"], attempt=attempt, worker_id=worker.worker_id, kind="result", **fields
    )
    await publish_update(s, msg, f"{task['id']}:{attempt}:result")


async def artifact_store(s: Stack) -> ObjectStore:
    js = s.nc.jetstream()
    await ensure_streams(js)
    return await js.object_store(subjects.ARTIFACTS_BUCKET)


def error_of(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    err: dict[str, Any] = resp.json()["error"]
    return err

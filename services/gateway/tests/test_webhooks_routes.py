"""The webhooks routes against the REAL webhooks service (its broker on the test's NATS server, its schema
migrated in the test database): status codes, the fields a 422 names, 404 for another org, 403 below admin,
409 for a state conflict. Tokens are signed by the test signer (auth stood in by conftest's FakeServices for
the JWKS, as everywhere in this package). The customer's receiver is a local HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread
from typing import Any

import httpx
import pytest
from browserfleet_core.migrations import upgrade
from browserfleet_webhooks.app import WebhooksService
from browserfleet_webhooks.settings import WebhooksSettings

from .conftest import Signer

WAIT_CAP = 30.0  # hang protection only


@pytest.fixture(scope="module")
def receiver() -> Iterator[str]:
    """Stands in for a customer's webhook receiver on 127.0.0.1: answers every delivery 204."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            self.send_response(204)
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
async def webhooks(nats_url: str, database_url: str) -> AsyncIterator[WebhooksService]:
    upgrade("browserfleet_webhooks", database_url)
    svc = WebhooksService(
        WebhooksSettings(
            nats_url=nats_url,
            database_url=database_url,
            webhook_master_key=base64.b64encode(os.urandom(32)).decode(),
            webhook_allow_private_targets=True,
            webhook_retry_schedule=[0.0, 0.05],
            webhook_poll_seconds=0.05,
        )
    )
    await svc.start()
    await svc.broker.connection.flush()
    try:
        yield svc
    finally:
        await svc.stop()


def bearer(signer: Signer, org: str, role: str = "admin") -> dict[str, str]:
    return {"Authorization": f"Bearer {signer.token(org=org, role=role)}"}


def error(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body: dict[str, Any] = resp.json()["error"]
    return body


async def until(client: httpx.AsyncClient, url: str, headers: dict[str, str], done: Any) -> Any:
    async def poll() -> Any:
        while True:
            resp = await client.get(url, headers=headers)
            assert resp.status_code == 200, resp.text
            if done(resp.json()):
                return resp.json()
            await asyncio.sleep(0.05)

    return await asyncio.wait_for(poll(), WAIT_CAP)


async def test_the_event_catalog_is_public(client: httpx.AsyncClient, webhooks: WebhooksService) -> None:
    resp = await client.get("/api/v1/webhooks/event-types")  # no credential
    assert resp.status_code == 200, resp.text
    types = {t["type"]: t for t in resp.json()}
    assert {"task.completed", "worker.offline", "credential.deleted", "webhook.endpoint.disabled"} <= set(
        types
    )
    assert types["task.completed"]["schema"]["properties"]["task_id"]["type"] == "string"
    assert (types["task.log"]["webhooks"], types["task.completed"]["entity"]) == (False, "task")


async def test_an_endpoint_from_creation_to_replay(
    client: httpx.AsyncClient, signer: Signer, webhooks: WebhooksService, receiver: str
) -> None:
    org = f"org-{uuid.uuid4().hex[:8]}"
    admin = bearer(signer, org)
    unknown = error(
        await client.post(
            "/admin/webhooks", headers=admin, json={"url": receiver, "events": ["task.*", "task.boom"]}
        ),
        422,
    )
    assert unknown["field"] == "events.1" and "'task.boom' is not a known event type" in unknown["message"]
    assert (await client.get("/admin/webhooks", headers=admin)).json() == []  # nothing half-written

    created = await client.post(
        "/admin/webhooks", headers=admin, json={"url": receiver, "events": ["task.*"]}
    )
    assert created.status_code == 201, created.text
    ep = created.json()
    assert ep["secret"].startswith("whsec_") and ep["circuit"] == "closed"
    url = f"/admin/webhooks/{ep['id']}"

    changed = await client.patch(
        url, headers=admin, json={"description": "orders", "events": ["task.completed"]}
    )
    assert changed.status_code == 200 and changed.json()["events"] == ["task.completed"], changed.text
    assert (
        error(await client.patch(url, headers=admin, json={"events": ["nope.*"]}), 422)["field"] == "events.0"
    )
    assert error(await client.patch(url, headers=admin, json={}), 422)["code"] == "validation_error"
    assert (await client.get(url, headers=admin)).json()["description"] == "orders"

    shown = await client.get(f"{url}/secret", headers=admin)
    assert shown.json()["secret"] == ep["secret"], shown.text
    rotated = await client.post(f"{url}/secret/rotate", headers=admin)
    assert rotated.status_code == 200 and rotated.json()["previous_expires_at"], rotated.text
    assert (
        error(await client.post(f"{url}/secret/rotate", headers=admin), 409)["code"] == "rotation_in_overlap"
    )

    test = await client.post(f"{url}/test", headers=admin)
    assert test.status_code == 202 and test.json()["event_type"] == "webhook.test", test.text
    delivery = f"/admin/webhooks/deliveries/{test.json()['id']}"
    sent = await until(client, delivery, admin, lambda d: d["status"] == "succeeded")
    assert [a["status_code"] for a in sent["attempts"]] == [204]
    assert sent["payload"]["event"] == "webhook.test"
    listed = await client.get("/admin/webhooks/deliveries", headers=admin, params={"status": "succeeded"})
    assert [d["id"] for d in listed.json()] == [sent["id"]]

    again = await client.post(f"{delivery}/replay", headers=admin)
    assert again.status_code == 202 and again.json()["status"] == "pending", again.text
    await until(client, delivery, admin, lambda d: len(d["attempts"]) == 2 and d["status"] == "succeeded")
    job = await client.post(f"{url}/replay", headers=admin, json={"since": "2020-01-01T00:00:00Z"})
    assert job.status_code == 202, job.text
    done = await until(
        client, f"/admin/webhooks/replays/{job.json()['id']}", admin, lambda j: j["status"] == "completed"
    )
    assert (done["total"], done["replayed"]) == (0, 0)
    assert (
        error(await client.post(f"{url}/replay", headers=admin, json={"since": "2020-01-01T00:00:00"}), 422)[
            "field"
        ]
        == "since"
    )

    # a disabled endpoint takes no replay and no test event
    assert (await client.patch(url, headers=admin, json={"enabled": False})).json()["enabled"] is False
    assert error(await client.post(f"{delivery}/replay", headers=admin), 409)["code"] == "endpoint_disabled"
    assert error(await client.post(f"{url}/test", headers=admin), 409)["code"] == "endpoint_disabled"

    # another organization sees none of it, whatever its role; below admin nobody gets in
    other = bearer(signer, f"org-{uuid.uuid4().hex[:8]}")
    for path in (url, f"{url}/secret", delivery, f"/admin/webhooks/replays/{job.json()['id']}"):
        assert error(await client.get(path, headers=other), 404)["code"] == "not_found", path
    assert error(await client.post(f"{delivery}/replay", headers=other), 404)
    for role in ("user", "viewer"):
        assert error(await client.get(url, headers=bearer(signer, org, role)), 403)
        assert error(await client.get("/api/v1/org/webhook-secret", headers=bearer(signer, org, role)), 403)


async def test_the_organizations_secret_for_tasks_webhook_url(
    client: httpx.AsyncClient, signer: Signer, webhooks: WebhooksService
) -> None:
    admin = bearer(signer, f"org-{uuid.uuid4().hex[:8]}")
    first = await client.get("/api/v1/org/webhook-secret", headers=admin)
    assert first.status_code == 200 and first.json()["secret"].startswith("whsec_"), first.text
    rotated = await client.post("/api/v1/org/webhook-secret/rotate", headers=admin)
    assert rotated.status_code == 200 and rotated.json()["secret"] != first.json()["secret"]
    assert error(await client.post("/api/v1/org/webhook-secret/rotate", headers=admin), 409)
    assert (await client.get("/api/v1/org/webhook-secret", headers=admin)).json()["secret"] == rotated.json()[
        "secret"
    ]

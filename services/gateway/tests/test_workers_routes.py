"""Workers at the seed's paths, through the gateway to the REAL worker-gateway (in-process, on the test's NATS
server and database): the seed's request and response fields, pool invites, a worker's own routes with its
key, drain and remove, bad input naming the field, and the boundaries (roles, another org, another worker).
Users are tokens signed by a real key whose JWKS the stand-in auth serves (conftest.FakeServices)."""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from browserfleet_contracts import endpoints
from browserfleet_contracts.workers import Heartbeat
from browserfleet_core import migrations
from browserfleet_core.messaging import RpcClient
from browserfleet_worker_gateway import app as worker_gateway
from browserfleet_worker_gateway.runtime import WorkerGatewayRuntime
from browserfleet_worker_gateway.settings import WorkerGatewaySettings
from nats.aio.client import Client as NatsClient

from .conftest import Signer


def public_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")


@pytest.fixture(scope="module")
async def wg(nats_url: str, database_url: str) -> AsyncIterator[WorkerGatewayRuntime]:
    migrations.upgrade("browserfleet_worker_gateway", database_url)
    rt = worker_gateway.create_service(WorkerGatewaySettings(nats_url=nats_url, database_url=database_url))
    sweeper = await worker_gateway.start(rt)
    await rt.broker.connection.flush()
    yield rt
    await worker_gateway.stop(rt, sweeper)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Org:
    def __init__(self, signer: Signer) -> None:
        self.id = f"org-{uuid.uuid4().hex[:10]}"
        self.admin = bearer(signer.token(org=self.id, role="admin", sub=f"a-{self.id}"))
        self.user = bearer(signer.token(org=self.id, role="user", sub=f"u-{self.id}"))
        self.viewer = bearer(signer.token(org=self.id, role="viewer", sub=f"v-{self.id}"))


async def ok(resp: httpx.Response, status: int = 200) -> Any:
    assert resp.status_code == status, f"{resp.request.method} {resp.request.url}: {resp.text}"
    return resp.json() if resp.content else None


async def create_invite(client: httpx.AsyncClient, org: Org, **body: Any) -> dict[str, Any]:
    """An invite of `org`, made by its admin: POST /admin/workers/invite with `body`."""
    return await ok(await client.post("/admin/workers/invite", headers=org.admin, json=body), 201)


async def register(client: httpx.AsyncClient, code: str, hostname: str) -> dict[str, Any]:
    body = {
        "invite_code": code,
        "device_info": {"hostname": hostname, "platform": "darwin", "version": "1.0.0"},
        "public_key": public_key(),
    }
    return await ok(await client.post("/workers/register", json=body), 201)


async def test_the_seeds_worker_flow(
    wg: WorkerGatewayRuntime, client: httpx.AsyncClient, signer: Signer, gateway_nc: NatsClient
) -> None:
    org = Org(signer)
    # Step 1: admin generates a worker invitation code (the seed's body and answer)
    invite = await create_invite(
        client, org, name="Marketing Team Worker", capabilities=["web-automation", "data-extraction"]
    )
    assert invite["invite_code"] == invite["code"] and invite["multi_use"] is False
    # Step 2: the worker registers with it (the seed's body); answer: api_key and worker_id
    reg = await register(client, invite["invite_code"], "marketing-laptop-01")
    assert reg["api_key"].startswith("sk_worker_") and reg["worker_key"] == reg["api_key"]
    worker_id = reg["worker_id"]
    again = await client.post("/workers/register", json={"invite_code": invite["invite_code"]})
    assert again.status_code == 401 and again.json()["error"]["field"] == "invite_code"

    key = bearer(reg["api_key"])
    rpc = RpcClient(gateway_nc, timeout=5)
    await rpc.call(endpoints.Workers.HEARTBEAT, Heartbeat(worker_key=reg["api_key"], running_tasks=0))
    (listed,) = [
        w for w in await ok(await client.get("/admin/workers", headers=org.admin)) if w["id"] == worker_id
    ]
    assert listed["name"] == "Marketing Team Worker" and listed["status"] == "online" and listed["last_seen"]
    assert listed["tags"] == ["data-extraction", "web-automation"] and listed["pool"] == "default"
    assert listed["device_info"] == {
        "hostname": "marketing-laptop-01",
        "platform": "darwin",
        "version": "1.0.0",
    }
    assert listed["version"] == "1.0.0"

    # PUT /workers/:id/status, with the worker's own key
    shown = await ok(
        await client.put(
            f"/workers/{worker_id}/status", headers=key, json={"status": "error", "detail": "no disk"}
        )
    )
    assert (shown["status"], shown["status_detail"]) == ("error", "no disk")
    rotated = await ok(
        await client.put(f"/workers/{worker_id}/key", headers=key, json={"public_key": public_key()})
    )
    assert rotated["worker_id"] == worker_id and rotated["public_key"]

    # drain, then DELETE /admin/workers/:id: the key stops working at once
    drained = await ok(await client.post(f"/admin/workers/{worker_id}/drain", headers=org.admin))
    assert drained["status"] == "draining"
    assert (await client.delete(f"/admin/workers/{worker_id}", headers=org.admin)).status_code == 204
    refused = await client.put(f"/workers/{worker_id}/status", headers=key, json={"status": "online"})
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "worker_revoked"
    assert worker_id not in {w["id"] for w in await ok(await client.get("/admin/workers", headers=org.admin))}


async def test_two_replicas_of_one_pool_invite_are_two_workers(
    wg: WorkerGatewayRuntime, client: httpx.AsyncClient, signer: Signer
) -> None:
    org = Org(signer)
    invite = await create_invite(
        client, org, pool="office", tags=["intranet"], multi_use=True, ttl_seconds=86_400
    )
    one, two = [await register(client, invite["code"], f"replica-{i}") for i in (1, 2)]
    assert one["worker_id"] != two["worker_id"] and one["api_key"] != two["api_key"]
    assert one["pool"] == two["pool"] == f"office_{org.id}" and one["pool_name"] == "office"
    listed = [
        w for w in await ok(await client.get("/admin/workers", headers=org.admin)) if w["org_id"] == org.id
    ]
    assert sorted((w["name"], w["pool"], w["tags"][0]) for w in listed) == [
        ("replica-1", "office", "intranet"),
        ("replica-2", "office", "intranet"),
    ]
    (info,) = await ok(await client.get("/admin/workers/invites", headers=org.admin))
    assert (info["uses"], info["status"], "code" in info) == (2, "active", False)
    assert (await client.delete(f"/admin/workers/invites/{info['id']}", headers=org.admin)).status_code == 204
    late = await client.post("/workers/register", json={"invite_code": invite["code"]})
    assert late.status_code == 401 and "revoked" in late.json()["error"]["message"]
    # the replica leaves for good on a clean shutdown
    gone = await client.delete(f"/workers/{one['worker_id']}", headers=bearer(one["api_key"]))
    assert gone.status_code == 204
    left = {w["id"] for w in await ok(await client.get("/admin/workers", headers=org.admin))}
    assert one["worker_id"] not in left and two["worker_id"] in left


async def test_bad_input_names_the_field_and_creates_nothing(
    wg: WorkerGatewayRuntime, client: httpx.AsyncClient, signer: Signer
) -> None:
    org = Org(signer)
    body: dict[str, Any]  # request bodies: JSON objects of any shape
    field: str | None
    for body, field in (
        ({"pool": "Not_A_Pool"}, "pool"),
        ({"tags": ["Bad Tag"]}, "tags.0"),
        ({"multi_use": False, "max_uses": 3}, None),
        ({"ttl_seconds": 5}, "ttl_seconds"),
    ):
        resp = await client.post("/admin/workers/invite", headers=org.admin, json=body)
        assert resp.status_code == 422, (body, resp.text)
        if field:
            assert resp.json()["error"]["field"] == field, resp.text
    for body, field in (
        ({}, "invite_code"),
        ({"invite_code": "inv_x", "public_key": "short"}, "public_key"),
        ({"invite_code": "inv_x", "device_info": {"platform": "x" * 65}}, "device_info.platform"),
        ({"invite_code": "inv_x", "device_info": {"shoe_size": 44}}, "device_info.shoe_size"),
    ):
        resp = await client.post("/workers/register", json=body)
        assert (resp.status_code, resp.json()["error"]["field"]) == (422, field), resp.text
    unknown = await client.post("/workers/register", json={"invite_code": "inv_guessed"})
    assert unknown.status_code == 401 and unknown.json()["error"]["code"] == "invalid_invite"
    assert await ok(await client.get("/admin/workers/invites", headers=org.admin)) == []
    invite = await create_invite(client, org)
    reg = await register(client, invite["code"], "h")
    bad = await client.put(
        f"/workers/{reg['worker_id']}/status", headers=bearer(reg["api_key"]), json={"status": "asleep"}
    )
    assert (bad.status_code, bad.json()["error"]["field"]) == (422, "status")


async def test_the_boundaries(wg: WorkerGatewayRuntime, client: httpx.AsyncClient, signer: Signer) -> None:
    mine, theirs = Org(signer), Org(signer)
    invite = await create_invite(client, mine, multi_use=True)
    worker, other = await register(client, invite["code"], "w1"), await register(client, invite["code"], "w2")
    wid = worker["worker_id"]
    # viewers and users cannot invite, drain or remove
    for headers in (mine.viewer, mine.user):
        assert (await client.post("/admin/workers/invite", headers=headers, json={})).status_code == 403
        assert (await client.post(f"/admin/workers/{wid}/drain", headers=headers)).status_code == 403
        assert (await client.delete(f"/admin/workers/{wid}", headers=headers)).status_code == 403
    # another org's admin: a 404, as for a worker that exists nowhere
    for path, method in ((f"/admin/workers/{wid}/drain", "POST"), (f"/admin/workers/{wid}", "DELETE")):
        theirs_answer = await client.request(method, path, headers=theirs.admin)
        nowhere = await client.request(method, path.replace(wid, str(uuid.uuid4())), headers=theirs.admin)
        assert theirs_answer.status_code == nowhere.status_code == 404
        assert theirs_answer.json()["error"]["code"] == nowhere.json()["error"]["code"]
    assert wid not in (await client.get("/admin/workers", headers=theirs.admin)).text
    # a worker's routes take a worker key, for its own id only
    status = {"status": "online"}
    assert (await client.put(f"/workers/{wid}/status", headers=mine.admin, json=status)).status_code == 401
    assert (await client.put(f"/workers/{wid}/status", json=status)).status_code == 401
    stolen = await client.put(f"/workers/{wid}/status", headers=bearer(other["api_key"]), json=status)
    assert stolen.status_code == 404
    assert (await client.delete(f"/workers/{wid}", headers=bearer(other["api_key"]))).status_code == 404
    rotate = await client.put(
        f"/workers/{wid}/key", headers=bearer(other["api_key"]), json={"public_key": public_key()}
    )
    assert rotate.status_code == 404
    assert (
        await client.put(f"/workers/{wid}/status", headers=bearer(worker["api_key"]), json=status)
    ).status_code == 200

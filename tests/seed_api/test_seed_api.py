"""The seed's REST API, walked as its users wrote it, against the whole platform (tests/seed_api/conftest.py).

`SEED` is the seed's endpoint list as data: method, path (`:id` written `{id}`), the request body the seed
shows (or what our API needs where the seed shows none) and the answer fields it shows (dotted paths). The
walk calls each one in order, as the seed's users would, and fails on the first endpoint that is missing,
refuses the seed's body, or answers without one of the seed's fields. Extra fields are fine. A static check
first says which seed routes the gateway does not serve at all.

Bad input from the same issue runs on the same platform: a used `Idempotency-Key` with another body is a 409
naming it, and a task that runs past its timeout on a real worker ends `timed_out`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from browserfleet_contracts import endpoints
from browserfleet_contracts.tasks import ClaimRequest
from browserfleet_core.messaging import BusCredentials, RpcClient, connect
from browserfleet_gateway.app import create_app
from browserfleet_gateway.settings import GatewaySettings
from fastapi.routing import APIRoute, iter_route_contexts

from .conftest import Running

pytestmark = pytest.mark.e2e

WAIT_CAP = 120.0  # hang protection only; nothing asserts on speed
HTTP_POOL = (
    "seed-http"  # the walk's HTTP worker's own pool: the platform's Chromium worker never takes its tasks
)


@dataclass(frozen=True)
class Seed:
    method: str
    path: str
    body: dict[str, Any] | None = None  # `$name` values are filled from what earlier answers said
    returns: tuple[str, ...] = ()
    who: str = "admin"  # admin | api_key | worker | public
    status: int = 200


def _seed_task(task: str) -> dict[str, Any]:
    """A task as the seed's examples submit it, its webhook the stand-in receiver."""
    return {
        "task": task,
        "worker_tags": ["ecommerce", "data-extraction"],
        "priority": "high",
        "webhook_url": "$receiver_url",
    }


# The seed's list, in an order a user can walk it (each id exists before a route names it).
SEED: tuple[Seed, ...] = (
    Seed("GET", "/health", who="public", returns=("status", "timestamp", "uptime", "version")),
    Seed("GET", "/health/db", who="public", returns=("status",)),
    Seed(
        "POST",
        "/auth/login",
        body={"email": "$admin_email", "password": "$admin_password"},
        returns=("access_token", "refresh_token", "user.id", "user.name", "user.organization"),
        who="public",
    ),
    Seed("GET", "/auth/me", returns=("user.id", "user.name", "organization.name")),
    Seed(
        "POST",
        "/auth/refresh",
        body={"refresh_token": "$refresh_token"},
        returns=("access_token", "refresh_token"),
        who="public",
    ),
    Seed("GET", "/organizations", returns=("0.id", "0.name", "0.slug", "0.plan", "0.settings")),
    Seed(
        "POST",
        "/organizations",
        body={"name": "Acme Corp", "slug": "acme-corp", "plan": "pro", "settings": {}},
        returns=("id", "name", "slug", "plan", "settings", "created_at"),
        status=201,
    ),
    Seed("PUT", "/organizations/{id}", body={"plan": "enterprise"}, returns=("id", "plan")),
    Seed("DELETE", "/organizations/{id}", status=204),
    Seed(
        "POST",
        "/admin/credentials",
        body={"name": "SALESFORCE_PASSWORD", "value": "s3cret", "type": "password"},
        returns=("id", "name", "type", "created_at", "updated_at"),
        status=201,
    ),
    Seed("GET", "/admin/credentials", returns=("0.id", "0.name")),
    Seed(
        "PUT", "/admin/credentials/{id}", body={"value": "n3w-s3cret"}, returns=("id", "name", "updated_at")
    ),
    Seed("DELETE", "/admin/credentials/{id}", status=204),
    Seed(
        "POST",
        "/admin/workers/invite",
        # the seed's body, plus our `pool` (see HTTP_POOL) and the tag the seed's task asks for
        body={
            "name": "Marketing Team Worker",
            "capabilities": ["web-automation", "data-extraction", "ecommerce"],
            "pool": HTTP_POOL,
        },
        returns=("invite_code",),
        status=201,
    ),
    Seed(
        "POST",
        "/workers/register",
        body={
            "invite_code": "$invite_code",
            "device_info": {"hostname": "marketing-laptop-01", "platform": "darwin", "version": "1.0.0"},
        },
        returns=("api_key", "worker_id"),
        who="public",
        status=201,
    ),
    Seed("PUT", "/workers/{id}/status", body={"status": "online"}, returns=("id", "status"), who="worker"),
    Seed(
        "GET",
        "/admin/workers",
        returns=("0.id", "0.name", "0.status", "0.last_seen", "0.device_info", "0.created_at"),
    ),
    Seed(
        "POST",
        "/api/v1/tasks",
        body=_seed_task("Check competitor pricing on amazon.com"),
        returns=("id", "status", "priority", "worker_tags", "webhook_url"),
        who="api_key",
        status=201,
    ),
    Seed(
        "POST",
        "/admin/tasks",
        body=_seed_task("Login to salesforce and export leads"),
        returns=("id", "status", "priority", "worker_tags", "webhook_url", "created_at"),
        status=201,
    ),
    Seed("GET", "/admin/tasks", returns=("items.0.id", "items.0.status", "items.0.priority")),
    Seed("GET", "/admin/tasks/{id}", returns=("id", "status", "priority", "result", "error_message")),
    Seed(
        "POST",
        "/workers/tasks/{id}/result",
        body={"status": "success", "result": "Exported 150 leads to CSV", "execution_time": 45.2},
        returns=("task_id", "status"),
        who="worker",
    ),
    Seed("DELETE", "/admin/tasks/{id}", returns=("id", "status")),
    Seed("DELETE", "/admin/workers/{id}", status=204),
    Seed("POST", "/auth/logout", body={"refresh_token": "$refresh_token"}, who="public"),
)


def _served() -> set[tuple[str, str]]:
    app = create_app(GatewaySettings(nats_url="nats://unused.invalid:4222"))
    out = set()
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if isinstance(route, APIRoute):
            out |= {(m, route.path) for m in route.methods or ()}
    return out


def _path_template(path: str) -> str:
    """`/admin/tasks/{id}` as the gateway names its placeholder (`{task_id}`)."""
    parts = path.split("/")
    return "/".join("{}" if p.startswith("{") else p for p in parts)


def test_the_gateway_serves_every_seed_route() -> None:
    served = {(m, _path_template(p)) for m, p in _served()}
    missing = [f"{s.method} {s.path}" for s in SEED if (s.method, _path_template(s.path)) not in served]
    assert not missing, f"seed routes the gateway does not serve: {missing}"


def _field(body: Any, dotted: str) -> bool:
    here = body
    for part in dotted.split("."):
        if isinstance(here, list) and part.isdigit() and int(part) < len(here):
            here = here[int(part)]
        elif isinstance(here, dict) and part in here:
            here = here[part]
        else:
            return False
    return True


def _fill(value: Any, ctx: dict[str, Any]) -> Any:
    if isinstance(value, str) and value.startswith("$"):
        return ctx[value[1:]]
    if isinstance(value, dict):
        return {k: _fill(v, ctx) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, ctx) for v in value]
    return value


@dataclass
class Walk:
    running: Running
    http: httpx.Client
    ctx: dict[str, Any] = field(default_factory=dict)

    def headers(self, who: str) -> dict[str, str]:
        token = {"admin": "access_token", "api_key": "api_key", "worker": "worker_key"}.get(who)
        return {"Authorization": f"Bearer {self.ctx[token]}"} if token else {}

    def url(self, seed: Seed) -> str:
        ids = {
            "/organizations/": "org_id",
            "/admin/credentials/": "credential_id",
            "/admin/workers/": "worker_id",
            "/workers/tasks/": "task_id",
            "/workers/": "worker_id",
            "/admin/tasks/": "task_id",
        }
        if "{id}" not in seed.path:
            return seed.path
        prefix = next(p for p in ids if seed.path.startswith(p))
        return seed.path.replace("{id}", str(self.ctx[ids[prefix]]))

    def call(self, seed: Seed) -> Any:
        body = _fill(seed.body, self.ctx) if seed.body is not None else None
        resp = self.http.request(seed.method, self.url(seed), json=body, headers=self.headers(seed.who))
        where = f"{seed.method} {seed.path}: {resp.status_code} {resp.text[:500]}"
        assert resp.status_code == seed.status, where
        answer = resp.json() if resp.content else None
        missing = [f for f in seed.returns if not _field(answer, f)]
        assert not missing, f"{where}\nmissing the seed's fields {missing}"
        return answer

    def before(self, seed: Seed) -> None:
        """What the seed's users do between two calls (outside the REST list)."""
        if (seed.method, seed.path) == ("POST", "/workers/tasks/{id}/result"):
            # the worker claimed the task it was given (the claim is the bus's: this is a worker that also
            # speaks HTTP, as the seed's workers do over their socket)
            asyncio.run(self._claim_as_worker())

    def after(self, seed: Seed, answer: Any) -> None:
        key = (seed.method, seed.path)
        if key == ("POST", "/auth/login"):
            self.ctx.update(access_token=answer["access_token"], refresh_token=answer["refresh_token"])
            boot = self.running.platform.bootstrap
            assert boot is not None
            assert answer["user"]["organization"] == "Default" and answer["user"]["id"]
        elif key == ("POST", "/auth/refresh"):
            self.ctx.update(access_token=answer["access_token"], refresh_token=answer["refresh_token"])
        elif key == ("POST", "/organizations"):
            self.ctx["org_id"] = answer["id"]
        elif key == ("POST", "/admin/credentials"):
            self.ctx["credential_id"] = answer["id"]
        elif key == ("POST", "/admin/workers/invite"):
            self.ctx["invite_code"] = answer["invite_code"]
        elif key == ("POST", "/workers/register"):
            self.ctx.update(worker_key=answer["api_key"], worker_id=answer["worker_id"])
            assert answer["api_key"].startswith("sk_worker_")
        elif key == ("GET", "/admin/workers"):
            mine = next(w for w in answer if w["id"] == self.ctx["worker_id"])
            assert mine["device_info"]["hostname"] == "marketing-laptop-01"
            assert "data-extraction" in mine["tags"]
        elif key == ("POST", "/api/v1/tasks"):
            self.ctx["api_task_id"] = answer["id"]
        elif key == ("POST", "/admin/tasks"):
            self.ctx["task_id"] = answer["id"]
            assert (
                answer["kind"] == "agent" and answer["spec"]["goal"] == "Login to salesforce and export leads"
            )
        elif key == ("GET", "/admin/tasks"):
            ids = {t["id"] for t in answer["items"]}
            assert {self.ctx["task_id"], self.ctx["api_task_id"]} <= ids
        elif key == ("POST", "/workers/tasks/{id}/result"):
            assert (answer["status"], answer["recorded"]) == ("completed", True)
            task = self.http.get(
                self.url(Seed("GET", "/admin/tasks/{id}")), headers=self.headers("admin")
            ).json()
            assert task["result"] == {"result": "Exported 150 leads to CSV"}
            assert task["execution_time_seconds"] == 45.2 and task["worker_id"] == self.ctx["worker_id"]
            # the DELETE that follows cancels the other (still waiting) task
            self.ctx["task_id"] = self.ctx["api_task_id"]
        elif key == ("DELETE", "/admin/tasks/{id}"):
            assert answer["status"] == "cancelled"
        elif key == ("POST", "/auth/logout"):
            again = self.http.post("/auth/refresh", json={"refresh_token": self.ctx["refresh_token"]})
            assert again.status_code == 401, again.text

    async def _claim_as_worker(self) -> None:
        deadline = time.monotonic() + WAIT_CAP
        headers = self.headers("admin")
        while (
            self.http.get(f"/admin/tasks/{self.ctx['task_id']}", headers=headers).json()["status"]
            != "assigned"
        ):
            assert time.monotonic() < deadline, "the seed's task was never routed to the HTTP worker's pool"
            await asyncio.sleep(0.3)
        assert self.running.platform.nats_url
        nc = await connect(
            self.running.platform.nats_url,
            name="seed-http-worker",
            credentials=BusCredentials.worker(self.ctx["worker_key"]),
        )
        try:
            claim = ClaimRequest(
                task_id=self.ctx["task_id"], attempt=1, worker_key=self.ctx["worker_key"], delivery=1
            )
            reply = await RpcClient(nc, timeout=15).call(endpoints.Scheduler.CLAIM, claim)
            assert reply.granted, reply.reason
        finally:
            await nc.close()


def test_walk_the_seed_api(running: Running) -> None:
    boot = running.platform.bootstrap
    assert boot is not None and boot.password
    with httpx.Client(base_url=running.url, timeout=30) as http:
        walk = Walk(running, http)
        walk.ctx.update(
            admin_email=boot.admin_email,
            admin_password=boot.password,
            receiver_url=running.receiver.url + "/hook",
        )
        # the inbound example authenticates with an API key
        first = running.admin_login()
        made = http.post(
            "/admin/api-keys",
            headers={"Authorization": f"Bearer {first['access_token']}"},
            json={"name": "seed", "scopes": ["tasks:write", "tasks:read"]},
        )
        assert made.status_code == 201, made.text
        walk.ctx["api_key"] = made.json()["key"]
        for seed in SEED:
            walk.before(seed)
            walk.after(seed, walk.call(seed))


# --- bad input ------------------------------------------------------------------------------------------
def test_a_used_idempotency_key_with_another_body_is_409_naming_it(running: Running) -> None:
    auth = {"Authorization": f"Bearer {running.admin_login()['access_token']}"}
    key = f"order-{uuid.uuid4().hex[:8]}"
    tag = f"idem-{uuid.uuid4().hex[:8]}"  # no worker has it: the task waits, and only this test lists it
    body = {"steps": [{"action": "navigate", "url": running.site.url}], "worker_tags": [tag]}
    with httpx.Client(base_url=running.url, timeout=30) as http:
        first = http.post("/admin/tasks", headers={**auth, "Idempotency-Key": key}, json=body)
        again = http.post("/api/v1/tasks", headers={**auth, "Idempotency-Key": key}, json=body)
        other = http.post(
            "/api/v1/tasks", headers={**auth, "Idempotency-Key": key}, json={**body, "priority": "urgent"}
        )
        assert first.status_code == again.status_code == 201, again.text
        assert again.json()["id"] == first.json()["id"]
        assert other.status_code == 409, other.text
        error = other.json()["error"]
        assert (error["code"], error["field"]) == ("idempotency_key_reused", "Idempotency-Key")
        assert key in error["message"]
        listed = http.get("/admin/tasks", headers=auth, params={"tag": tag}).json()["items"]
        assert [t["id"] for t in listed] == [first.json()["id"]], "the refused request wrote nothing"
        assert http.delete(f"/admin/tasks/{first.json()['id']}", headers=auth).status_code == 200


def test_a_task_past_its_timeout_ends_timed_out(running: Running) -> None:
    """On the platform's real Chromium worker: the page never shows `#never`, the task's 8 s run out (long
    enough for the navigation on a busy machine, so it is the wait_for step that the timeout stops)."""
    auth = {"Authorization": f"Bearer {running.admin_login()['access_token']}"}
    body = {
        "steps": [
            {"action": "navigate", "url": running.site.url},
            {"action": "wait_for", "selector": "#never", "timeout_ms": 60_000},
        ],
        "timeout_seconds": 8,
        "max_attempts": 2,
    }
    with httpx.Client(base_url=running.url, timeout=30) as http:
        made = http.post("/api/v1/tasks", headers=auth, json=body)
        assert made.status_code == 201, made.text
        deadline = time.monotonic() + WAIT_CAP
        while (task := http.get(f"/api/v1/tasks/{made.json()['id']}", headers=auth).json())["status"] not in (
            "completed",
            "failed",
            "cancelled",
            "timed_out",
        ):
            assert time.monotonic() < deadline, task
            time.sleep(0.3)
        assert (task["status"], task["attempt"], task["error_step"]) == ("timed_out", 1, 1), task
        assert task["error_message"] == "timed out after 8 s"
        attempts = http.get(f"/admin/tasks/{task['id']}/attempts", headers=auth).json()
        assert [a["status"] for a in attempts] == ["timed_out"], "not retried"


def test_the_new_routes_name_the_field_of_a_bad_body_and_write_nothing(running: Running) -> None:
    auth = {"Authorization": f"Bearer {running.admin_login()['access_token']}"}
    with httpx.Client(base_url=running.url, timeout=30) as http:
        credential = http.post(
            "/admin/credentials", headers=auth, json={"name": "BAD_BODY", "value": "v"}
        ).json()
        invite = http.post("/admin/workers/invite", headers=auth, json={"name": "bad-body"}).json()
        worker = http.post("/workers/register", json={"invite_code": invite["invite_code"]}).json()
        task = http.post(
            "/admin/tasks", headers=auth, json={"goal": "nothing", "worker_tags": ["nobody-has-this"]}
        ).json()
        as_worker = {"Authorization": f"Bearer {worker['api_key']}"}
        cases = [
            ("PUT", f"/admin/credentials/{credential['id']}", auth, {"value": ""}, "value"),
            ("PUT", f"/admin/credentials/{credential['id']}", auth, {"type": "crystal"}, "type"),
            ("PUT", f"/admin/credentials/{credential['id']}", auth, {"name": "OTHER", "value": "x"}, "name"),
            ("POST", "/admin/tasks", auth, {"task": "x", "priority": "extreme"}, "priority"),
            ("POST", "/admin/credentials", auth, {"name": "has space", "value": "v"}, "name"),
            ("POST", f"/workers/tasks/{task['id']}/result", as_worker, {"status": "done"}, "status"),
            (
                "POST",
                f"/workers/tasks/{task['id']}/result",
                as_worker,
                {"status": "failed", "attempt": 0},
                "attempt",
            ),
        ]
        for method, path, headers, body, field_name in cases:
            resp = http.request(method, path, headers=headers, json=body)
            assert resp.status_code == 422, f"{method} {path} {body}: {resp.text}"
            assert resp.json()["error"]["field"] == field_name, f"{method} {path} {body}: {resp.text}"
        # a worker that never claimed the task: 404, like another org's; nothing changed
        resp = http.post(
            f"/workers/tasks/{task['id']}/result", headers=as_worker, json={"status": "completed"}
        )
        assert resp.status_code == 404, resp.text
        after = http.get(f"/admin/tasks/{task['id']}", headers=auth).json()
        assert after["status"] in ("queued", "assigned") and after["result"] is None
        listed = http.get("/admin/credentials", headers=auth).json()
        assert [c["updated_at"] for c in listed if c["id"] == credential["id"]] == [credential["updated_at"]]
        http.delete(f"/admin/tasks/{task['id']}", headers=auth)
        http.delete(f"/admin/credentials/{credential['id']}", headers=auth)

"""Tenant isolation on the whole platform, generated from the gateway's route table.

The platform runs exactly as `make dev` runs it (browserfleet_devkit.devstack.Platform: every service as its
own process, real NATS and PostgreSQL of this package's own via `provision()`), without workers. Org A is
the bootstrap organization; org B is created by the platform operator. Org A gets one object of every kind
(task, schedule, credential, webhook endpoint with a delivery and a replay job, worker, worker invite, API key,
user, browser profile). Then, for EVERY route whose path has an object id, and for every principal of org B
(admin, user, viewer, an API key holding every scope, and a worker of org B with its own key), the test reads,
updates or deletes org A's object through that route:

* the answer is 404, exactly as for an id that exists nowhere (same status and error code) -- or, where the
  route's access declaration refuses that principal whatever the object (a viewer on a mutation, a key
  without the scope, a non-admin on an admin route), 403, and where the route takes another kind of
  credential (a worker's key on a user's route, a user's on a worker's), 401, again the same as for an id
  that exists nowhere; either way the answer says nothing about org A's object;
* org A's objects are unchanged afterwards (re-read as org A's admin);
* no list route (every GET without an id) shows any of org A's ids or names to any principal of org B.

A new route with an id placeholder this test does not know fails `test_every_id_route_is_classified` until
it is given an org-A object below.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest
from browserfleet_devkit.devstack import Platform
from browserfleet_devkit.sites import QuietHandler
from browserfleet_devkit.testing import LoopbackHTTPServer
from browserfleet_gateway.app import create_app
from browserfleet_gateway.deps import AccessRule, access_rules
from browserfleet_gateway.settings import GatewaySettings
from fastapi.routing import APIRoute, iter_route_contexts

from ..platforms import NO_RATE_LIMITS, own_platform

WAIT_CAP = 60.0  # hang protection only; nothing asserts on speed
_ROLES = ("viewer", "user", "admin")
KEY_SCOPES = ["tasks:read", "tasks:write", "credentials:write", "webhooks:admin", "workers:admin"]


# --- the route table --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Route:
    method: str
    path: str
    rules: tuple[AccessRule, ...]

    @property
    def placeholders(self) -> list[str]:
        return [part[1:-1] for part in self.path.split("/") if part.startswith("{") and part.endswith("}")]


def _rules(dependant: Any) -> list[AccessRule]:
    found: list[AccessRule] = []
    rule = access_rules(dependant.call)
    if rule is not None:
        found.append(rule)
    for sub in dependant.dependencies:
        found += _rules(sub)
    return found


def route_table() -> list[Route]:
    app = create_app(GatewaySettings(nats_url="nats://unused.invalid:4222"))
    out = []
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if not isinstance(route, APIRoute):
            continue
        for method in sorted((route.methods or set()) - {"HEAD"}):
            out.append(Route(method, route.path, tuple(_rules(route.dependant))))
    return out


# public build files of the dashboard and the API docs: their placeholder names a file, never an org's object
STATIC_FILES = {"/app/{client_route:path}", "/assets/{name}", "/docs/static/{name}"}


def id_routes() -> list[Route]:
    return [
        r
        for r in route_table()
        if r.placeholders
        and not (r.path in STATIC_FILES and r.rules and all(rule.public for rule in r.rules))
    ]


def list_routes() -> list[Route]:
    return [
        r
        for r in route_table()
        if r.method == "GET" and not r.placeholders and not any(rule.public for rule in r.rules)
    ]


# Org A's object for each placeholder. `{name}` is per route: a credential's, an artifact's or a profile's name.
PLACEHOLDERS = {
    "task_id",
    "credential_id",
    "schedule_id",
    "endpoint_id",
    "key_id",
    "user_id",
    "org_id",
    "name",
    "worker_id",
    "invite_id",
    "delivery_id",
    "job_id",
    # SSO's public start names an org by slug: org A's without SSO answers as a slug that exists nowhere
    "org_slug",
}
# a valid X25519 public key (32 bytes, base64url), for the worker's key route
A_PUBLIC_KEY = "A" * 43
# A body the route accepts, so the request reaches the lookup instead of stopping at validation.
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("PUT", "/admin/schedules/{schedule_id}"): {"name": "taken over", "paused": True},
    ("PATCH", "/admin/users/{user_id}"): {"role": "viewer"},
    ("PUT", "/organizations/{org_id}"): {"plan": "enterprise"},
    ("PUT", "/workers/{worker_id}/status"): {"status": "error", "detail": "taken over"},
    ("PUT", "/workers/{worker_id}/key"): {"public_key": A_PUBLIC_KEY},
    ("PATCH", "/admin/webhooks/{endpoint_id}"): {"description": "taken over", "enabled": False},
    ("POST", "/admin/webhooks/{endpoint_id}/replay"): {"since": "2020-01-01T00:00:00Z"},
    ("PUT", "/admin/credentials/{credential_id}"): {"value": "taken over"},
    ("POST", "/workers/tasks/{task_id}/result"): {"status": "failed", "error_message": "taken over"},
}


def test_every_id_route_is_classified() -> None:
    routes = id_routes()
    assert routes, "the route table is empty: the walk over FastAPI's route contexts broke"
    unknown = {(r.method, r.path) for r in routes if not set(r.placeholders) <= PLACEHOLDERS}
    assert not unknown, f"id routes without an org-A object in this test: {sorted(unknown)}"
    for r in routes:
        assert r.rules, f"{r.method} {r.path} declares no access"
        if r.method in ("PUT", "PATCH"):
            assert (r.method, r.path) in BODIES, f"give {r.method} {r.path} a valid body in BODIES"


# --- the platform -----------------------------------------------------------------------------------
class Receiver(LoopbackHTTPServer):
    """Stands in for org A's webhook receiver on 127.0.0.1: accepts every delivery with 204."""

    def __init__(self) -> None:
        self.hits = 0
        receiver = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                self.read_body()
                receiver.hits += 1
                self.send_response(204)
                self.end_headers()

        super().__init__(Handler)

    @property
    def url(self) -> str:
        return f"{super().url}/hook"


@dataclass
class World:
    http: httpx.Client
    a_admin: dict[str, str]
    operator: dict[str, str]
    org_a: str
    objects: dict[str, str]  # placeholder -> org A's id
    names: dict[str, str]  # `{name}` per route prefix
    secrets: set[str]  # every id / name of org A that must never show to org B
    b: dict[str, tuple[str, dict[str, str]]] = field(default_factory=dict)  # label -> (kind:role, headers)
    b_worker: dict[str, str] = field(default_factory=dict)  # org B's worker's own key (worker routes)


def _ok(resp: httpx.Response, status: int = 200) -> Any:
    assert resp.status_code == status, f"{resp.request.method} {resp.request.url}: {resp.text}"
    return resp.json() if resp.content else None


def _login(http: httpx.Client, email: str, password: str) -> dict[str, str]:
    body = _ok(http.post("/auth/login", json={"email": email, "password": password}))
    return {"Authorization": f"Bearer {body['access_token']}"}


def _eventually(probe: Any, what: str) -> Any:
    deadline = time.monotonic() + WAIT_CAP
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with (
        Receiver() as receiver,
        own_platform(
            "bf_iso",
            tmp_path_factory.mktemp("home"),
            workers=0,
            env={"WEBHOOK_ALLOW_PRIVATE_TARGETS": "true", **NO_RATE_LIMITS},
            output=lambda _line: None,
        ) as platform,
        httpx.Client(base_url=platform.gateway_url, timeout=30) as http,
    ):
        assert platform.database_url  # the one `own_platform` made
        yield _populate(http, platform, receiver, platform.database_url)


A_PROFILE = "a-profile"


def _profile_of(database_url: str, org_id: str, name: str) -> None:
    """A browser profile of `org_id` as a worker's first lease leaves it (the vault's row, no state yet): no
    worker runs in this platform, and a profile exists only once a task has used it."""
    plain = urlunsplit(urlsplit(database_url)._replace(scheme="postgresql"))
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO vault.profiles (id, org_id, name, version, created_at, updated_at) "
            "VALUES (%s, %s, %s, 0, now(), now())",
            (str(uuid.uuid4()), org_id, name),
        )


def _populate(http: httpx.Client, platform: Platform, receiver: Receiver, database_url: str) -> World:
    boot = platform.bootstrap
    assert boot is not None and boot.password
    a = _login(http, boot.admin_email, boot.password)  # org A's admin (also the platform operator)
    # the endpoint first: org A's task.created must reach it (a delivery of org A's to look for)
    endpoint = _ok(
        http.post("/admin/webhooks", headers=a, json={"url": receiver.url, "events": ["task.*"]}), 201
    )
    task = _ok(
        http.post(
            "/api/v1/tasks",
            headers=a,
            json={"title": "a-task", "steps": [{"action": "navigate", "url": "https://a.example/"}]},
        ),
        201,
    )
    schedule = _ok(
        http.post(
            "/admin/schedules",
            headers=a,
            json={"name": "a-schedule", "cron": "0 0 1 1 *", "task": {"goal": "a yearly goal"}},
        ),
        201,
    )
    credential = _ok(
        http.post("/api/v1/credentials", headers=a, json={"name": "A_SECRET", "value": "a-value"}), 201
    )
    invite = _ok(http.post("/admin/workers/invite", headers=a, json={}), 201)
    worker = _ok(
        http.post("/workers/register", json={"invite_code": invite["code"], "name": "a-worker"}), 201
    )
    # a pool invite, still usable: revoking it is what the invite route would do
    pool_invite = _ok(
        http.post("/admin/workers/invite", headers=a, json={"pool": "a-pool", "multi_use": True}), 201
    )
    key = _ok(http.post("/admin/api-keys", headers=a, json={"name": "a-key", "scopes": KEY_SCOPES}), 201)
    user = _ok(
        http.post("/admin/users", headers=a, json={"email": "someone@org-a.example", "role": "user"}), 201
    )
    org_a = boot.org_id
    _profile_of(database_url, org_a, A_PROFILE)
    # org B, by the platform operator, with one principal of every kind
    org_b = _ok(
        http.post(
            "/organizations",
            headers=a,
            json={"name": "Org B", "slug": "org-b", "admin_email": "admin@org-b.example"},
        ),
        201,
    )
    world = World(
        http=http,
        a_admin=a,
        operator=a,
        org_a=org_a,
        objects={
            "task_id": task["id"],
            "credential_id": credential["id"],
            "schedule_id": schedule["id"],
            "endpoint_id": endpoint["id"],
            "key_id": key["id"],
            "user_id": user["id"],
            "org_id": org_a,
            "org_slug": _ok(http.get("/auth/me", headers=a), 200)["organization"]["slug"],
            "worker_id": worker["worker_id"],
            "invite_id": pool_invite["id"],
        },
        names={
            "/api/v1/credentials/": "A_SECRET",
            "/api/v1/tasks/": "screenshot.png",
            "/api/v1/profiles/": A_PROFILE,
        },
        secrets={
            task["id"],
            schedule["id"],
            credential["id"],
            "A_SECRET",
            A_PROFILE,
            endpoint["id"],
            receiver.url,
            worker["worker_id"],
            pool_invite["id"],
            key["id"],
            key["prefix"],
            user["id"],
            "someone@org-a.example",
            org_a,
        },
    )
    b_admin = _login(http, org_b["admin_email"], org_b["admin_password"])
    world.b["admin"] = ("user:admin", b_admin)
    for role in ("user", "viewer"):
        made = _ok(
            http.post("/admin/users", headers=b_admin, json={"email": f"{role}@org-b.example", "role": role}),
            201,
        )
        world.b[role] = (f"user:{role}", _login(http, made["email"], made["password"]))
    b_key = _ok(
        http.post("/admin/api-keys", headers=b_admin, json={"name": "b-key", "scopes": KEY_SCOPES}), 201
    )
    world.b["api key"] = ("api_key", {"Authorization": f"Bearer {b_key['key']}"})
    b_invite = _ok(http.post("/admin/workers/invite", headers=b_admin, json={}), 201)
    b_worker = _ok(http.post("/workers/register", json={"invite_code": b_invite["code"]}), 201)
    world.b_worker = {"Authorization": f"Bearer {b_worker['api_key']}"}
    # settle what moves by itself: the task admitted, org A's delivery made
    _eventually(
        lambda: _ok(http.get(f"/api/v1/tasks/{task['id']}", headers=a))["status"] == "assigned", "admission"
    )
    _eventually(
        lambda: [
            d
            for d in _ok(
                http.get("/admin/webhooks/deliveries", headers=a, params={"endpoint_id": endpoint["id"]})
            )
            if d.get("status") == "succeeded"
        ],
        "org A's webhook delivery",
    )
    delivered = _ok(http.get("/admin/webhooks/deliveries", headers=a, params={"endpoint_id": endpoint["id"]}))
    world.secrets |= {d["id"] for d in delivered}
    world.objects["delivery_id"] = delivered[0]["id"]
    job = _ok(
        http.post(
            f"/admin/webhooks/{endpoint['id']}/replay", headers=a, json={"since": "2020-01-01T00:00:00Z"}
        ),
        202,
    )
    world.objects["job_id"] = job["id"]
    _eventually(
        lambda: _ok(http.get(f"/admin/webhooks/replays/{job['id']}", headers=a))["status"] == "completed",
        "org A's replay job",
    )
    return world


def _url(world: World, route: Route, *, nowhere: bool = False) -> str:
    """The route with org A's objects in it, or (`nowhere`) with ids that exist in no organization."""
    url = route.path
    for name in route.placeholders:
        if name == "name":
            prefix = next(p for p in world.names if route.path.startswith(p))
            value = world.names[prefix] if not nowhere else f"Nothing_{uuid.uuid4().hex[:8]}"
        else:
            value = world.objects[name] if not nowhere else str(uuid.uuid4())
        url = url.replace("{" + name + "}", value)
    return url


def _expected(route: Route, kind: str) -> int:
    """What a principal of org B gets for org A's object (and for an object that exists nowhere)."""
    if route.rules and all(rule.public for rule in route.rules):
        return 404  # a public route reads no credential: anyone gets what a stranger gets
    if any(rule.worker for rule in route.rules) != (kind == "worker"):
        return 401  # the route takes another kind of credential
    return 403 if _refused_by_rule(route, kind) else 404


def _refused_by_rule(route: Route, kind: str) -> bool:
    """Does the route's access declaration refuse this principal whatever the object?"""
    for rule in route.rules:
        if rule.public or rule.worker:
            continue
        if kind == "api_key":
            if not set(rule.scopes) & set(KEY_SCOPES):
                return True
        else:
            role = kind.split(":", 1)[1]
            assert rule.min_role is not None
            if _ROLES.index(role) < _ROLES.index(rule.min_role):
                return True
    return False


def _snapshot(world: World) -> Any:
    o = world.objects
    of_a = [
        f"/api/v1/tasks/{o['task_id']}",
        f"/admin/tasks/{o['task_id']}/attempts",
        f"/admin/tasks/{o['task_id']}/logs",
        f"/admin/schedules/{o['schedule_id']}",
        "/api/v1/credentials",
        "/api/v1/profiles",
        "/admin/webhooks",
        f"/admin/webhooks/{o['endpoint_id']}/secret",
        f"/admin/webhooks/deliveries/{o['delivery_id']}",
        f"/admin/webhooks/replays/{o['job_id']}",
        "/admin/workers",
        "/admin/workers/invites",
        "/admin/api-keys",
        "/admin/users",
    ]
    seen = [_ok(world.http.get(path, headers=world.a_admin)) for path in of_a]
    orgs = _ok(world.http.get("/organizations", headers=world.operator))
    return seen, [x for x in orgs if x["id"] == world.org_a]


def test_org_b_gets_404_on_every_id_route_and_nothing_of_org_a_changes(world: World) -> None:
    before = _snapshot(world)
    checked = 0
    principals = {**world.b, "worker": ("worker", world.b_worker)}
    reached: dict[str, int] = dict.fromkeys(principals, 0)  # answers that came from a service's lookup
    for route in id_routes():
        body = BODIES.get((route.method, route.path))
        for label, (kind, headers) in principals.items():
            theirs = world.http.request(route.method, _url(world, route), headers=headers, json=body)
            nowhere = world.http.request(
                route.method, _url(world, route, nowhere=True), headers=headers, json=body
            )
            expected = _expected(route, kind)
            where = f"{route.method} {route.path} as org B's {label}: {theirs.text}"
            assert theirs.status_code == expected, where
            # indistinguishable from an object that exists nowhere
            assert nowhere.status_code == expected, f"{route.method} {route.path} (no such id) as {label}"
            assert theirs.json()["error"]["code"] == nowhere.json()["error"]["code"], where
            checked += 1
            # a public route answers everyone alike: only a service's lookup behind a credential counts here
            reached[label] += expected == 404 and not all(rule.public for rule in route.rules)
    assert checked >= len(id_routes()) * len(principals)
    # every principal got past the gateway's rules somewhere: the 404s were answered by the services
    worker_routes = [r for r in id_routes() if any(rule.worker for rule in r.rules)]
    assert worker_routes, "the worker's own routes are in the matrix"
    public_routes = [r for r in id_routes() if r.rules and all(rule.public for rule in r.rules)]
    assert reached["admin"] == len(id_routes()) - len(worker_routes) - len(public_routes), reached
    assert reached["worker"] == len(worker_routes) and all(reached.values()), reached
    assert _snapshot(world) == before, "org B changed something of org A"


def test_org_b_lists_never_show_org_a(world: World) -> None:
    routes = list_routes()
    assert any(r.path == "/admin/tasks" for r in routes) and any(r.path == "/admin/webhooks" for r in routes)
    endpoint = world.objects["endpoint_id"]
    for route in routes:
        for label, (_, headers) in world.b.items():
            # a filter naming org A's object (ignored by routes without it) must not open a door either
            resp = world.http.get(route.path, headers=headers, params={"endpoint_id": endpoint, "limit": 100})
            assert resp.status_code in (200, 403, 404, 422), f"{route.path} as {label}: {resp.text}"
            leaked = {s for s in world.secrets if s in _shown(world, route.path, resp)}
            assert not leaked, f"GET {route.path} shows org B's {label} org A's {leaked}"
    # ...while org A itself sees them (the check above is not vacuous)
    a = world.a_admin
    seen = " ".join(
        world.http.get(p, headers=a, params={"endpoint_id": endpoint}).text
        for p in (
            "/admin/tasks",
            "/admin/schedules",
            "/api/v1/credentials",
            "/api/v1/profiles",
            "/admin/webhooks",
            "/admin/webhooks/deliveries",
            "/admin/workers",
            "/admin/workers/invites",
            "/admin/api-keys",
            "/admin/users",
        )
    )
    assert all(s in seen for s in world.secrets - {world.org_a}), world.secrets - {
        s for s in world.secrets if s in seen
    }


def _shown(world: World, path: str, resp: httpx.Response) -> str:
    """What a list shows org B, less what org B itself sent: its audit log records its own calls, the refused
    ones against org A's ids (the matrix above) included, with the id it asked for as their target. An entry of
    org A's, or a successful call of B's naming A's object, still counts."""
    if not path.startswith("/admin/audit-log") or resp.status_code != 200:
        return resp.text
    # the log is a page of entries; its export, one entry a line
    entries = (
        resp.json()["items"]
        if path == "/admin/audit-log"
        else [json.loads(x) for x in resp.text.splitlines()]
    )
    assert entries, f"{path}: org B's own calls are not in its audit log"
    for entry in entries:
        assert entry["org_id"] != world.org_a, entry
        if entry["outcome"] != "success":
            entry["target"], entry["detail"] = None, {}
    return json.dumps(entries)


def test_the_principals_of_org_b_work(world: World) -> None:
    """Guards the matrix against passing for the wrong reason (a principal that is refused everything)."""
    for label, (_, headers) in world.b.items():
        resp = world.http.get("/admin/tasks", headers=headers)
        assert resp.status_code == 200, f"{label}: {resp.text}"
        assert resp.json()["items"] == []
    made = world.http.post(
        "/api/v1/tasks",
        headers=world.b["api key"][1],
        json={"steps": [{"action": "navigate", "url": "https://b.example/"}]},
    )
    task_b = _ok(made, 201)
    assert (
        _ok(world.http.get(f"/admin/tasks/{task_b['id']}", headers=world.b["viewer"][1]))["id"]
        == task_b["id"]
    )
    # and org A cannot see org B's task either
    assert world.http.get(f"/api/v1/tasks/{task_b['id']}", headers=world.a_admin).status_code == 404
    _ok(world.http.post(f"/api/v1/tasks/{task_b['id']}/cancel", headers=world.b["user"][1]))

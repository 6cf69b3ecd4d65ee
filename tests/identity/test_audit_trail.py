"""The audit trail on the whole platform: every state-changing route of proto/openapi.json leaves exactly one
entry for its call (so a new route that bypasses it fails here), each kind of change is one entry with who,
what, where from and how it ended, a refusal is an entry of the refused caller, nothing of a secret's value
reaches the log, the log filters and pages, and one organization's admin never reads another's."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from browserfleet_devkit.devstack import Platform

from .conftest import bearer, login, new_org, operator_login

pytestmark = pytest.mark.e2e

OPENAPI = Path(__file__).resolve().parents[2] / "proto" / "openapi.json"
STATE_CHANGING = ("post", "put", "patch", "delete")
# Routes whose calls are not entries of the gateway's, each with the reason. Anything else that changes
# state and leaves no entry fails the walk.
NOT_A_CALLERS_CHANGE = {
    ("POST", "/auth/login"): "sign-in: no caller yet; auth writes login.succeeded/failed itself",
    ("POST", "/auth/refresh"): "a session's own token rotation, no caller but the refresh token",
    ("POST", "/auth/logout"): "ends the presented refresh session; no bearer",
    ("POST", "/auth/mfa/verify"): "sign-in's second step: auth writes mfa.* entries itself",
    (
        "POST",
        "/auth/mfa/enrol",
    ): "sign-in's enrolment step (challenge token, no bearer): auth writes mfa.enrolled",
    ("POST", "/auth/sso/exchange"): "SSO sign-in's hand-off: auth writes sso.login itself",
    ("POST", "/workers/register"): "a worker redeeming its invite; no user or API key",
    ("POST", "/workers/tasks/{task_id}/result"): "a worker's own call (sk_worker key): no user or API key",
    ("DELETE", "/workers/{worker_id}"): "a worker's own call (sk_worker key): no user or API key",
    ("PUT", "/workers/{worker_id}/key"): "a worker's own call (sk_worker key): no user or API key",
    ("PUT", "/workers/{worker_id}/status"): "a worker's own call (sk_worker key): no user or API key",
}
MISSING_ID = "00000000-0000-4000-8000-000000000000"


def state_changing_routes() -> list[tuple[str, str]]:
    spec = json.loads(OPENAPI.read_text())
    return sorted(
        (method.upper(), path)
        for path, operations in spec["paths"].items()
        for method in operations
        if method in STATE_CHANGING
    )


def entries(url: str, who: dict[str, Any], **filters: Any) -> list[dict[str, Any]]:
    resp = httpx.get(f"{url}/admin/audit-log", params=filters, headers=bearer(who), timeout=30)
    assert resp.status_code == 200, resp.text
    items: list[dict[str, Any]] = resp.json()["items"]
    return items


def the_entry(url: str, who: dict[str, Any], resp: httpx.Response) -> dict[str, Any]:
    """The call's one entry, once closed: the gateway closes it as the answer leaves, without holding the
    answer, so right after the answer it may still be `pending` (or, for a call refused at the door, not yet
    written)."""
    deadline = time.monotonic() + 30  # hang protection, not a speed check
    while True:
        found = entries(url, who, request_id=resp.headers["x-request-id"])
        assert len(found) <= 1, (resp.request.method, resp.request.url.path, found)
        if found and found[0]["status"] is not None:
            return found[0]
        assert time.monotonic() < deadline, (resp.request.method, resp.request.url.path, found)
        time.sleep(0.05)


@pytest.fixture(scope="module")
def org_b(platform: Platform) -> dict[str, Any]:
    return new_org(platform, "Audit B")


def test_the_exemptions_name_real_routes() -> None:
    routes = set(state_changing_routes())
    assert set(NOT_A_CALLERS_CHANGE) <= routes, set(NOT_A_CALLERS_CHANGE) - routes


def test_every_state_changing_route_leaves_one_entry(platform: Platform, org_b: dict[str, Any]) -> None:
    url, admin = platform.gateway_url, org_b["admin"]
    me = httpx.get(f"{url}/auth/me", headers=bearer(admin), timeout=30).json()
    walked = 0
    for method, path in state_changing_routes():
        if (method, path) in NOT_A_CALLERS_CHANGE:
            continue
        # an id no row has: the call is refused or fails, and still is one entry (its begin precedes
        # the service); a body of {} is what a careless client sends
        concrete = re.sub(r"\{[^}]+\}", MISSING_ID, path)
        resp = httpx.request(method, f"{url}{concrete}", json={}, headers=bearer(admin), timeout=30)
        assert resp.status_code < 500, (method, path, resp.status_code, resp.text)
        entry = the_entry(url, admin, resp)
        assert entry["route"] == f"{method} {path}"
        assert entry["status"] == resp.status_code
        expected = (
            "success" if resp.status_code < 400 else "refused" if resp.status_code in (401, 403) else "failed"
        )
        assert entry["outcome"] == expected, (method, path, entry)
        assert entry["actor_user_id"] == me["user"]["id"]
        assert entry["org_id"] == org_b["org"]["id"]
        assert entry["client_ip"] == "127.0.0.1"
        walked += 1
    assert walked >= 40  # the walk covers the API, not a corner of it


def test_each_kind_of_change_is_one_entry_and_never_a_secret(
    platform: Platform, org_b: dict[str, Any]
) -> None:
    url, admin = platform.gateway_url, org_b["admin"]
    headers = bearer(admin)
    secret = "s3cr3t-value-never-logged"
    calls: dict[str, httpx.Response] = {}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as gw:
        calls["credential"] = gw.post("/api/v1/credentials", json={"name": "AUDIT_PW", "value": secret})
        calls["webhook"] = gw.post("/admin/webhooks", json={"url": "https://hooks.example.com/audit"})
        calls["api_key"] = gw.post("/admin/api-keys", json={"name": "audit", "scopes": ["tasks:read"]})
        calls["user"] = gw.post(
            "/admin/users",
            json={"email": "viewer-b@example.test", "role": "viewer", "password": secret + "-pw"},
        )
        viewer_id = calls["user"].json()["id"]
        calls["role"] = gw.patch(f"/admin/users/{viewer_id}", json={"role": "user"})
        calls["role_back"] = gw.patch(f"/admin/users/{viewer_id}", json={"role": "viewer"})
        calls["policy"] = gw.put("/api/v1/org/policy", json={"allowed_domains": ["example.com"]})
        calls["invite"] = gw.post("/admin/workers/invite", json={})
        calls["task"] = gw.post(
            "/api/v1/tasks", json={"steps": [{"action": "navigate", "url": "https://example.com/"}]}
        )
        assert calls["task"].status_code == 201, calls["task"].text
        calls["cancel"] = gw.post(f"/api/v1/tasks/{calls['task'].json()['id']}/cancel")
        calls["credential_delete"] = gw.delete("/api/v1/credentials/AUDIT_PW")
    for kind, resp in calls.items():
        assert resp.status_code < 300, (kind, resp.text)
        entry = the_entry(url, admin, resp)
        assert entry["outcome"] == "success", (kind, entry)
        assert entry["status"] == resp.status_code
    # auth's own detail of a change lands in the call's entry, not beside it
    assert the_entry(url, admin, calls["role"])["action"] == "user.role_changed"
    assert the_entry(url, admin, calls["api_key"])["action"] == "api_key.created"
    assert the_entry(url, admin, calls["task"])["target"] == calls["task"].json()["id"]
    whole_log = httpx.get(f"{url}/admin/audit-log/export", headers=headers, timeout=30)
    assert whole_log.status_code == 200
    assert secret not in whole_log.text
    assert calls["api_key"].json()["key"] not in whole_log.text

    # a refusal of permission is an entry of the refused caller
    viewer = login(url, "viewer-b@example.test", secret + "-pw")
    refused = httpx.post(
        f"{url}/api/v1/credentials", json={"name": "X", "value": secret}, headers=bearer(viewer)
    )
    assert refused.status_code == 403
    entry = the_entry(url, admin, refused)
    assert (entry["outcome"], entry["actor_user_id"], entry["status"]) == ("refused", viewer_id, 403)
    assert entry["detail"]["code"] == "insufficient_role"
    # ... and a viewer does not read the log
    assert httpx.get(f"{url}/admin/audit-log", headers=bearer(viewer)).status_code == 403


def test_the_log_filters_and_pages(platform: Platform, org_b: dict[str, Any]) -> None:
    url, admin = platform.gateway_url, org_b["admin"]
    everything = entries(url, admin, limit=1000)
    assert len(everything) >= 5
    seen: list[int] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = httpx.get(f"{url}/admin/audit-log", params=params, headers=bearer(admin)).json()
        seen += [e["id"] for e in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [e["id"] for e in everything]  # newest first, each once
    refused = entries(url, admin, outcome="refused")
    assert refused and all(e["outcome"] == "refused" for e in refused)
    one = everything[-1]
    assert one in entries(url, admin, actor_id=one["actor_user_id"], limit=1000)
    assert all(e["action"] == "user.role_changed" for e in entries(url, admin, action="user.role_changed"))
    bad = httpx.get(f"{url}/admin/audit-log", params={"outcome": "maybe"}, headers=bearer(admin))
    assert bad.status_code == 422
    for route in ("/admin/audit-log", "/admin/audit-log/export"):  # found by make fuzz: a NUL was a 500
        nul = httpx.get(f"{url}{route}", params={"target": "a\x00b"}, headers=bearer(admin))
        assert nul.status_code == 422, nul.text


def test_an_admin_reads_only_their_own_organizations_log(platform: Platform, org_b: dict[str, Any]) -> None:
    url = platform.gateway_url
    admin_a, admin_b = operator_login(platform), org_b["admin"]
    call_b = httpx.post(f"{url}/admin/workers/invite", json={}, headers=bearer(admin_b))
    assert call_b.status_code < 300
    rid = call_b.headers["x-request-id"]
    assert len(entries(url, admin_b, request_id=rid)) == 1
    assert entries(url, admin_a, request_id=rid) == []
    assert all(e["org_id"] != org_b["org"]["id"] for e in entries(url, admin_a, limit=1000))
    # the audit log has no org in its address and no route deletes an entry
    gone = httpx.delete(f"{url}/admin/audit-log", headers=bearer(admin_b))
    assert gone.status_code == 405
    assert len(entries(url, admin_b, request_id=rid)) == 1

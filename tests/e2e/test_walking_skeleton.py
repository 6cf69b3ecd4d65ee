"""The walking skeleton end to end: the platform started exactly as `make dev` starts it (devstack),
driven over HTTP like a client, real Chromium against a site on 127.0.0.1, a webhook receiver on
127.0.0.1, and the secret checked against every log line, result, event and webhook body.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from browserfleet_devkit.devstack import Platform
from browserfleet_devkit.testing import provision

from ..admin import admin_login
from .sites import ReceivedWebhook, TestSite, WebhookReceiver, verify_standard_webhook

pytestmark = pytest.mark.e2e

SITE_USER = "ada"
SITE_PASSWORD = "pw-Zq7!c0rrect-horse-e2e"  # the secret: must never show up anywhere but the site


class Running:
    def __init__(self, platform: Platform, lines: list[str]) -> None:
        self.platform = platform
        self.lines = lines
        self.http = httpx.Client(base_url=platform.gateway_url, timeout=30)

    def token(self) -> str:
        return str(admin_login(self.platform)["access_token"])


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    lines: list[str] = []
    with (
        provision("bf_e2e") as infra,  # its database; the platform runs its own authenticated NATS
        Platform(
            home=tmp_path_factory.mktemp("home"),
            database_url=infra.database_url,
            output=lines.append,
            env={"LOG_LEVEL": "DEBUG", "WEBHOOK_ALLOW_PRIVATE_TARGETS": "true"},
        ) as platform,
    ):
        yield Running(platform, lines)


def wait_for_task(
    http: httpx.Client, task_id: str, headers: dict[str, str], timeout: float = 90
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = http.get(f"/api/v1/tasks/{task_id}", headers=headers)
        assert r.status_code == 200, r.text
        task: dict[str, Any] = r.json()
        if task["status"] in ("completed", "failed", "cancelled", "timed_out"):
            return task
        time.sleep(0.3)
    raise AssertionError(f"task {task_id} did not finish: {task}")


def all_stream_payloads(nats_url: str, stream: str) -> list[bytes]:
    async def read() -> list[bytes]:
        import nats

        nc = await nats.connect(nats_url)
        try:
            js = nc.jetstream()
            info = await js.stream_info(stream)
            out = []
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                try:
                    out.append((await js.get_msg(stream, seq)).data or b"")
                except Exception:
                    continue
            return out
        finally:
            await nc.close()

    return asyncio.run(read())


def test_task_runs_end_to_end_and_the_secret_never_leaks(running: Running, tmp_path: Path) -> None:
    http = running.http
    auth = {"Authorization": f"Bearer {running.token()}"}

    me = http.get("/auth/me", headers=auth)
    assert me.status_code == 200 and me.json()["role"] == "admin"

    r = http.post("/api/v1/credentials", headers=auth, json={"name": "SITE_PASSWORD", "value": SITE_PASSWORD})
    assert r.status_code == 201, r.text
    assert SITE_PASSWORD not in r.text

    with TestSite(SITE_USER, SITE_PASSWORD) as site, WebhookReceiver() as receiver:
        r = http.post(
            "/admin/webhooks", headers=auth, json={"url": receiver.url + "/hook", "events": ["task.*"]}
        )
        assert r.status_code == 201, r.text
        webhook_secret = r.json()["secret"]
        assert webhook_secret.startswith("whsec_")

        steps = [
            *site.login_steps("SITE_PASSWORD"),
            {"action": "extract", "name": "welcome", "selector": "#welcome"},
            {
                "action": "extract",
                "name": "leads",
                "selector": "#leads tbody tr",
                "fields": {"name": ".name", "company": ".company", "score": ".score"},
            },
            {"action": "screenshot", "name": "leads", "full_page": True},
        ]
        # the seed's inbound example: the task's own events go to its webhook_url too, signed with the org's secret
        task_hook = receiver.url + "/task-result"
        body = {"title": "export leads", "steps": steps, "webhook_url": task_hook}
        r = http.post("/api/v1/tasks", headers=auth, json=body)
        assert r.status_code == 201, r.text
        task = wait_for_task(http, r.json()["id"], auth)

        assert task["status"] == "completed", task
        assert site.login_attempts == [True]
        extracted = task["result"]["extracted"]
        assert extracted["welcome"] == "Welcome back"
        assert extracted["leads"] == [
            {"name": "Ada Lovelace", "company": "Analytical Engines", "score": "97"},
            {"name": "Grace Hopper", "company": "COBOL Inc", "score": "93"},
            {"name": "Alan Turing", "company": "Bletchley", "score": "99"},
        ]
        assert task["execution_time_seconds"] > 0
        shot = next(a for a in task["artifacts"] if a["name"].startswith("leads"))
        png = http.get(f"/api/v1/tasks/{task['id']}/artifacts/{shot['name']}", headers=auth)
        assert png.status_code == 200 and png.content.startswith(b"\x89PNG\r\n\x1a\n")

        assert receiver.wait_for(lambda _: True, timeout=30), "no webhook arrived"

        def completed_on(path: str) -> list[ReceivedWebhook]:
            return [h for h in receiver.received if h.path == path and h.json()["event"] == "task.completed"]

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (completed_on("/hook") and completed_on("/task-result")):
            time.sleep(0.2)
        [hook] = completed_on("/hook")
        assert verify_standard_webhook(webhook_secret, hook.headers, hook.body)
        assert not verify_standard_webhook(webhook_secret, hook.headers, hook.body + b" ")
        assert hook.json()["data"]["task_id"] == task["id"]
        assert (
            hook.json()["type"] == "task.completed"
        )  # the Standard Webhooks field beside the seed's `event`
        [own] = completed_on("/task-result")
        org_secret = http.get("/api/v1/org/webhook-secret", headers=auth)
        assert org_secret.status_code == 200, org_secret.text
        assert verify_standard_webhook(org_secret.json()["secret"], own.headers, own.body)
        assert not verify_standard_webhook(webhook_secret, own.headers, own.body)
        assert (
            own.json()["data"]["task_id"] == task["id"]
            and own.headers["webhook-id"] == hook.headers["webhook-id"]
        )

        deliveries = http.get("/admin/webhooks/deliveries", headers=auth)
        assert deliveries.status_code == 200, deliveries.text
        assert any(d["status_code"] == 204 and d["attempt"] >= 1 for d in deliveries.json())

        # the secret reached the site, and nowhere else
        task_json = json.dumps(http.get(f"/api/v1/tasks/{task['id']}", headers=auth).json())
        assert SITE_PASSWORD not in task_json
        for h in receiver.received:
            assert SITE_PASSWORD.encode() not in h.body
    for stream in ("EVENTS", "TASK_UPDATES"):
        for payload in all_stream_payloads(running.platform.admin_url, stream):
            assert SITE_PASSWORD.encode() not in payload, f"secret in {stream}"
    assert any("task" in line for line in running.lines)
    leaked = [line for line in running.lines if SITE_PASSWORD in line]
    assert leaked == [], leaked


def test_a_failing_step_fails_the_task_with_its_reason(running: Running) -> None:
    auth = {"Authorization": f"Bearer {running.token()}"}
    with TestSite(SITE_USER, SITE_PASSWORD) as site:
        steps = [
            {"action": "navigate", "url": f"{site.url}/login"},
            {"action": "click", "selector": "#does-not-exist", "timeout_ms": 500},
        ]
        r = running.http.post("/api/v1/tasks", headers=auth, json={"steps": steps})
        assert r.status_code == 201, r.text
        task = wait_for_task(running.http, r.json()["id"], auth)
    assert task["status"] == "failed"
    assert task["error_step"] == 1
    assert "#does-not-exist" in task["error_message"]


def test_bad_input_is_refused_at_the_gateway(running: Running) -> None:
    http = running.http
    auth = {"Authorization": f"Bearer {running.token()}"}
    before = http.get("/api/v1/tasks", headers=auth).json()["items"]

    cases = [
        ({"steps": [{"action": "explode"}]}, "steps.0"),
        ({"steps": [{"action": "click"}]}, "selector"),
        ({"steps": [{"action": "navigate", "url": "file:///etc/passwd"}]}, "url"),
        ({"steps": [{"action": "fill", "selector": "#a", "value": "{{ secrets.NOPE }}"}]}, "steps"),
    ]
    for body, field in cases:
        r = http.post("/api/v1/tasks", headers=auth, json=body)
        assert r.status_code == 422, (body, r.text)
        assert field in (r.json()["error"]["field"] or ""), r.text

    huge = {"steps": [{"action": "fill", "selector": "#a", "value": "x" * 2_000_000}]}
    assert http.post("/api/v1/tasks", headers=auth, json=huge).status_code == 413
    assert http.get("/api/v1/tasks", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert http.get("/api/v1/tasks").status_code == 401
    assert http.get("/api/v1/tasks/00000000-0000-0000-0000-000000000000", headers=auth).status_code == 404
    assert http.get("/api/v1/tasks", headers=auth).json()["items"] == before


def test_workers_and_health(running: Running) -> None:
    http = running.http
    auth = {"Authorization": f"Bearer {running.token()}"}
    ready = http.get("/health/ready")
    assert ready.status_code == 200, ready.text
    assert {"nats", "auth", "service:scheduler"} <= set(ready.json()["checks"])
    # the gateway keeps no database: the services that do report theirs (browserfleet_core.health)
    assert ready.json()["services"]["scheduler"]["checks"]["database"]["status"] == "healthy"
    deadline = time.monotonic() + 20
    workers: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        workers = http.get("/admin/workers", headers=auth).json()
        if any(w["state"] in ("online", "busy") for w in workers):
            break
        time.sleep(0.5)
    assert any(w["state"] in ("online", "busy") for w in workers), workers
    invite = http.post("/admin/workers/invite", headers=auth, json={})
    assert invite.status_code == 201, invite.text
    code = invite.json()["code"]
    first = http.post("/workers/register", json={"invite_code": code, "name": "remote-1"})
    assert first.status_code == 201 and first.json()["worker_key"].startswith("sk_worker_")
    again = http.post("/workers/register", json={"invite_code": code, "name": "remote-2"})
    assert again.status_code == 401
    metrics = http.get("/metrics")
    assert metrics.status_code == 200 and "# TYPE" in metrics.text
    # every started service's loop is watched (runner.settle_heap; the worker's main): its timer has woken
    pages = {"gateway": metrics.text}
    for sp in running.platform.processes:
        if sp.metrics_port is not None and sp.name in ("scheduler", "worker"):
            pages[sp.name] = httpx.get(f"http://127.0.0.1:{sp.metrics_port}/metrics", timeout=10).text
    assert set(pages) == {"gateway", "scheduler", "worker"}, sorted(pages)
    for name, page in pages.items():
        lag = re.search(r"^browserfleet_event_loop_lag_seconds_count (\S+)$", page, re.MULTILINE)
        assert lag is not None and float(lag.group(1)) > 0, f"{name}: no event loop lag recorded"


def test_startup_probes_reach_every_service_and_write_nothing(running: Running) -> None:
    """`Platform.start()` returns once each service answers `{}` on its probe subject. That answer must be
    a refusal (JWKS, a read, aside), or the probe would create tasks, keys or endpoints at every start."""
    from browserfleet_devkit.devstack import READY_PROBES

    async def probe() -> dict[str, dict[str, Any]]:
        nc = await running.platform.connect_admin("probe-test")
        try:
            return {
                service: json.loads((await nc.request(subject, b"{}", timeout=5)).data)
                for service, subject in READY_PROBES.items()
            }
        finally:
            await nc.close()

    answers = asyncio.run(probe())
    assert set(answers) == {"auth", "scheduler", "vault", "webhooks", "worker-gateway"}
    assert "keys" in answers.pop("auth")
    for service, body in answers.items():
        assert body.get("status") == 422, f"{service} did not refuse an empty request: {body}"

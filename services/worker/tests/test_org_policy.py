"""The organization's policy at the worker, with real Chromium, the real NATS server and sites on 127.0.0.1.

* the org's allowed domains block a navigation and a sub-request the task's own list allows;
* `evaluate` is refused by default and runs when the org's policy allows it;
* a task's proxy and, when it names none, the org's proxy are really used, with the password the vault
  released (the vault and auth are stood in on their real subjects: other services);
* a blocked request is reported on TASK_UPDATES (`kind="security"`, under the worker's own id: the scheduler
  emits `security.request_blocked`) with the host and no secret, rate-limited;
* auth not answering fails the task with that cause instead of running it unrestricted.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import nats
import pytest
from browserfleet_contracts import endpoints, subjects
from browserfleet_contracts.auth import OrgPolicy
from browserfleet_contracts.events import RequestBlockedData
from browserfleet_contracts.tasks import TaskDispatch, TaskSpec, TaskUpdateMessage
from browserfleet_contracts.vault import ReleaseRequest
from browserfleet_core.streams import ensure_streams
from browserfleet_worker.browser import BrowserHost
from browserfleet_worker.execution import build_runner, execute
from browserfleet_worker.presence import Identity
from browserfleet_worker.runtime import WorkerRuntime
from browserfleet_worker.settings import WorkerSettings
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from .vault_stand import sealed_release

PROXY_PASSWORD = "pr0xy-Secret-9f2Kq"
TASK_PROXY_PASSWORD = "task-pr0xy-7Hh1w"


def dispatch(org_id: str, spec: dict[str, Any], task_id: str | None = None) -> TaskDispatch:
    return TaskDispatch(
        task_id=task_id or f"t-{uuid.uuid4().hex[:10]}",
        org_id=org_id,
        attempt=1,
        priority="normal",
        timeout_seconds=60,
        spec=TaskSpec.model_validate(spec),
    )


def settings(nats_url: str = "nats://unused.invalid:4222", **extra: Any) -> WorkerSettings:
    return WorkerSettings(
        nats_url=nats_url,
        worker_key="sk_worker_policy",
        browser_allow_networks=["127.0.0.1/32"],
        trace_on_failure=False,
        **extra,
    )


async def run_with(browser: BrowserHost, task: TaskDispatch, org: OrgPolicy, **extra: Any) -> tuple[Any, Any]:
    runner, policy = build_runner(settings(**extra), task, {}, org)
    async with browser.context(policy, accept_downloads=True) as ctx:
        return await runner.run(ctx), policy


# --- merge rules, in the browser --------------------------------------------------------------------
async def test_org_allowed_domains_block_what_the_task_allows(
    browser: BrowserHost, actions_site: str
) -> None:
    port = urlsplit(actions_site).port
    org = OrgPolicy(allowed_domains=["127.0.0.1"])
    # the task allows localhost; its organization does not: the navigation is refused
    nav = dispatch(
        "org-a",
        {
            "allowed_domains": ["localhost", "127.0.0.1"],
            "steps": [{"action": "navigate", "url": f"http://localhost:{port}/actions", "timeout_ms": 5000}],
        },
    )
    out, policy = await run_with(browser, nav, org)
    assert out.status == "failed"
    assert "navigation blocked: localhost is not in the organization's allowed domains" in out.error_message
    assert set(policy.blocked) == {("localhost", "localhost is not in the organization's allowed domains")}
    # a sub-request (an image on localhost) of an allowed page is refused too; the page still works
    sub = dispatch(
        "org-a",
        {
            "allowed_domains": ["localhost", "127.0.0.1"],
            "steps": [
                {
                    "action": "navigate",
                    "url": f"{actions_site}/img-elsewhere?src=http://localhost:{port}/x.png",
                },
                {"action": "extract", "name": "ok", "selector": "#ok"},
            ],
        },
    )
    out, _ = await run_with(browser, sub, org)
    assert out.status == "completed", out.error_message
    assert out.result["blocked"] == [
        {"host": "localhost", "reason": "localhost is not in the organization's allowed domains"}
    ]
    # without the org's list the same task reaches localhost (the test can fail: the org list is what blocks)
    out, _ = await run_with(browser, nav, OrgPolicy())
    assert out.status == "completed", out.error_message
    # and the task's own list still applies under an org that allows everything
    narrow = dispatch("org-a", {"allowed_domains": ["127.0.0.1"], "steps": nav.spec.model_dump()["steps"]})
    out, _ = await run_with(browser, narrow, OrgPolicy(allowed_domains=["localhost", "127.0.0.1"]))
    assert out.status == "failed" and "localhost is not in the task's allowed domains" in out.error_message


async def test_evaluate_runs_only_when_the_operator_or_the_org_allows_it(
    browser: BrowserHost, actions_site: str
) -> None:
    task = dispatch(
        "org-e",
        {
            "steps": [
                {"action": "navigate", "url": f"{actions_site}/actions"},
                {"action": "evaluate", "name": "title", "expression": "document.title"},
            ]
        },
    )
    refused, _ = await run_with(browser, task, OrgPolicy())
    assert refused.status == "failed"
    assert refused.error_message.endswith("evaluate is not allowed for this organization")
    allowed, _ = await run_with(browser, task, OrgPolicy(allow_evaluate=True))
    assert allowed.status == "completed", allowed.error_message
    assert allowed.result["extracted"]["title"] == "Actions"
    by_operator, _ = await run_with(browser, task, OrgPolicy(), allow_evaluate=True)  # ALLOW_EVALUATE=true
    assert by_operator.status == "completed", by_operator.error_message


# --- proxies, the vault and security events, through execution.execute -----------------------------
@dataclass
class ProxyLog:
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # method, target, credentials


class CustomerProxy:
    """Stands in for a customer's HTTP proxy (a third party): records every request line with the
    credentials it was given (Proxy-Authorization), then forwards plain HTTP or tunnels CONNECT."""

    def __init__(self) -> None:
        self.log = ProxyLog()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> CustomerProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 2)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            first, *lines = [line for line in head.split("\r\n") if line]
            method, target, version = first.split(" ", 2)
            creds = None
            for line in lines:
                name, _, value = line.partition(":")
                if name.strip().lower() == "proxy-authorization":
                    creds = base64.b64decode(value.strip().split(" ", 1)[1]).decode()
            self.log.requests.append((method, target, creds))
            if method == "CONNECT":
                host, _, port = target.rpartition(":")
                up_r, up_w = await asyncio.open_connection(host, int(port))
                writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            else:
                url = urlsplit(target)
                up_r, up_w = await asyncio.open_connection(url.hostname, url.port or 80)
                kept = [line for line in lines if not line.lower().startswith(("proxy-", "connection:"))]
                path = url.path + (f"?{url.query}" if url.query else "")
                request = "\r\n".join([f"{method} {path} {version}", *kept, "Connection: close"])
                up_w.write((request + "\r\n\r\n").encode("latin-1"))

            async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
                with contextlib.suppress(Exception):
                    while data := await src.read(65536):
                        dst.write(data)
                        await dst.drain()

            await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))
            up_w.close()
        except Exception:
            pass
        finally:
            writer.close()


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[NatsClient]:
    client = await nats.connect(nats_url)
    await ensure_streams(client.jetstream())
    yield client
    await client.close()


class Vault:
    """Stands in for the vault (another service) on `svc.vault.release`: records what was asked."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values
        self.asked: list[list[str]] = []

    async def release(self, msg: Msg) -> None:
        req = ReleaseRequest.model_validate_json(msg.data)
        self.asked.append(sorted(req.names))
        await msg.respond(sealed_release(req, {n: self.values[n] for n in req.names}, "w-policy"))


@pytest.fixture
async def vault(nc: NatsClient) -> AsyncIterator[Vault]:
    stand = Vault({"PROXY_PW": PROXY_PASSWORD, "TASK_PROXY_PW": TASK_PROXY_PASSWORD})
    sub = await nc.subscribe(endpoints.Vault.RELEASE.subject, cb=stand.release)
    yield stand
    await sub.unsubscribe()


def runtime(nc: NatsClient, browser: BrowserHost, nats_url: str) -> WorkerRuntime:
    return WorkerRuntime.create(
        settings(nats_url),
        nc,
        browser,
        Identity("sk_worker_policy", "w-policy", "default", X25519PrivateKey.generate()),
    )


async def test_the_org_proxy_and_a_task_proxy_are_used_with_the_vaults_password(
    nc: NatsClient, browser: BrowserHost, site: str, nats_url: str, vault: Vault, org_policies: Any
) -> None:
    org = f"org-{uuid.uuid4().hex[:8]}"
    steps = [
        {"action": "navigate", "url": f"{site}/echo?q=proxied"},
        {"action": "extract", "name": "echo", "selector": "#echo"},
    ]
    async with CustomerProxy() as org_proxy, CustomerProxy() as task_proxy:
        org_policies.policies[org] = OrgPolicy.model_validate(
            {"proxy": {"server": org_proxy.url, "username": "acme", "password": "{{ secrets.PROXY_PW }}"}}
        )
        rt = runtime(nc, browser, nats_url)
        # no proxy of its own: the org's proxy carries the task, with the password from the vault
        out = await execute(rt, dispatch(org, {"steps": steps}))
        assert out.status == "completed", out.error_message
        assert out.result["extracted"]["echo"] == "You typed: proxied"
        assert vault.asked == [["PROXY_PW"]]  # the worker asked for the org proxy's secret
        assert (org_policies.asked[-1]) == (org, "sk_worker_policy")
        assert ("GET", f"{site}/echo?q=proxied", f"acme:{PROXY_PASSWORD}") in org_proxy.log.requests
        assert task_proxy.log.requests == []
        used_by_org = len(org_proxy.log.requests)
        # the task's own proxy wins over the org's, and the org proxy's secret is then not even asked for
        own = {
            "server": task_proxy.url,
            "username": "{{ secrets.TASK_PROXY_PW }}",
            "password": "{{ secrets.TASK_PROXY_PW }}",
        }
        out = await execute(rt, dispatch(org, {"steps": steps, "proxy": own}))
        assert out.status == "completed", out.error_message
        assert vault.asked[-1] == ["TASK_PROXY_PW"]
        creds = {c for _, _, c in task_proxy.log.requests}
        assert creds == {f"{TASK_PROXY_PASSWORD}:{TASK_PROXY_PASSWORD}"}
        assert len(org_proxy.log.requests) == used_by_org
        # the values never reach the result
        assert PROXY_PASSWORD not in json.dumps(out.result) and TASK_PROXY_PASSWORD not in json.dumps(
            out.result
        )


async def test_a_proxy_on_an_internal_address_is_refused(
    nc: NatsClient, browser: BrowserHost, site: str, nats_url: str, org_policies: Any
) -> None:
    """An org admin (or a task) cannot use "proxy" to reach the worker's network: the upstream proxy is held
    to the internal-address rule like any host (here 10.0.0.1, not in BROWSER_ALLOW_NETWORKS)."""
    org = f"org-{uuid.uuid4().hex[:8]}"
    org_policies.policies[org] = OrgPolicy.model_validate({"proxy": {"server": "http://10.0.0.1:3128"}})
    out = await execute(
        runtime(nc, browser, nats_url),
        dispatch(org, {"steps": [{"action": "navigate", "url": f"{site}/login", "timeout_ms": 5000}]}),
    )
    assert out.status == "failed"
    assert "the upstream proxy 10.0.0.1 resolves to a private address 10.0.0.1" in (out.error_message or "")


async def test_blocked_requests_are_reported_with_the_host_and_no_secret(
    nc: NatsClient,
    browser: BrowserHost,
    actions_site: str,
    nats_url: str,
    vault: Vault,
    org_policies: Any,
) -> None:
    org = f"org-{uuid.uuid4().hex[:8]}"
    port = urlsplit(actions_site).port
    org_policies.policies[org] = OrgPolicy(allowed_domains=["127.0.0.1"])
    seen: list[Msg] = []

    async def on_event(msg: Msg) -> None:
        seen.append(msg)

    sub = await nc.subscribe(subjects.task_update("w-policy", "*"), cb=on_event)
    # the secret sits in the blocked URL's query string and path: neither may reach the event
    task = dispatch(
        org,
        {
            "steps": [
                {
                    "action": "navigate",
                    "url": f"{actions_site}/img-elsewhere?src=http://localhost:{port}/"
                    "{{ secrets.TASK_PROXY_PW }}.png?token={{ secrets.PROXY_PW }}",
                },
                {"action": "extract", "name": "ok", "selector": "#ok"},
            ]
        },
    )
    out = await execute(runtime(nc, browser, nats_url), task)
    assert out.status == "completed", out.error_message
    for _ in range(100):
        if seen:
            break
        await asyncio.sleep(0.05)
    await sub.unsubscribe()
    reports = [m for m in seen if TaskUpdateMessage.model_validate_json(m.data).kind == "security"]
    assert len(reports) == 1, [m.data for m in seen]
    update = TaskUpdateMessage.model_validate_json(reports[0].data)
    data = RequestBlockedData.model_validate(update.security)
    assert (update.task_id, update.worker_id, reports[0].subject) == (
        task.task_id,
        "w-policy",
        subjects.task_update("w-policy", task.task_id),
    )
    assert (data.task_id, data.attempt, data.kind, data.host) == (task.task_id, 1, "domain", "localhost")
    assert data.reason == "localhost is not in the organization's allowed domains"
    assert data.url == f"http://localhost:{port}/***.png"  # no query string, the secret in the path masked
    assert (
        PROXY_PASSWORD.encode() not in reports[0].data and TASK_PROXY_PASSWORD.encode() not in reports[0].data
    )
    # it is on TASK_UPDATES under its own message id (a re-publication would be dropped); a worker may not
    # publish on EVENTS (the scheduler emits the event once it has checked the claimant)
    assert reports[0].headers is not None
    assert reports[0].headers["Nats-Msg-Id"] == f"{task.task_id}:1:security:1"


async def test_a_hostile_page_cannot_flood_events(nc: NatsClient, org_policies: Any) -> None:
    """Past EVENTS_PER_ATTEMPT blocked requests of one attempt, the rest become one summary report."""
    from browserfleet_worker.orgpolicy import SecurityEvents

    org = f"org-{uuid.uuid4().hex[:8]}"
    seen: list[tuple[str, TaskUpdateMessage]] = []

    async def on_event(msg: Msg) -> None:
        seen.append(
            ((msg.headers or {}).get("Nats-Msg-Id", ""), TaskUpdateMessage.model_validate_json(msg.data))
        )

    sub = await nc.subscribe(subjects.task_update("w-flood", "t-flood"), cb=on_event)
    task = dispatch(org, {"steps": []}, task_id="t-flood")
    events = SecurityEvents(nc.jetstream(), task, {}, worker_id="w-flood", limit=3)
    for i in range(50):
        events.blocked(
            f"h{i % 7}.example", f"h{i % 7}.example is not in the task's allowed domains", None, "domain"
        )
    events.blocked("nowhere.example", "cannot resolve nowhere.example", None, "dns")  # not a security event
    await events.close()
    for _ in range(100):
        if len(seen) >= 4:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)
    await sub.unsubscribe()
    assert [msg_id for msg_id, _ in seen] == [f"t-flood:1:security:{n}" for n in ("1", "2", "3", "summary")]
    summary = RequestBlockedData.model_validate(seen[-1][1].security)
    assert summary.summary and summary.suppressed == 47 and summary.kind == "summary"
    assert summary.hosts == [f"h{i}.example" for i in (3, 4, 5, 6, 0, 1, 2)]


async def test_auth_not_answering_fails_the_task_rather_than_running_it_unrestricted(
    nc: NatsClient, browser: BrowserHost, site: str, nats_url: str, org_policies: Any
) -> None:
    org = f"org-{uuid.uuid4().hex[:8]}"
    org_policies.down.add(org)
    out = await execute(
        runtime(nc, browser, nats_url),
        dispatch(org, {"steps": [{"action": "navigate", "url": f"{site}/login"}]}),
    )
    assert out.status == "failed"
    assert out.error_message == (
        "the organization's policy could not be read, so the task did not run: auth did not answer in time"
    )

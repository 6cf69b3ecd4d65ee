"""The organization's event stream on the whole platform, started as `make dev` starts it (devstack.Platform:
every service its own process on the authenticated bus, real NATS, PostgreSQL, auth and one worker with
Chromium). Events here are the platform's own: `task.created` from real submissions, `task.started` /
`task.log` / `task.completed` from a real run against a page on 127.0.0.1.

Access tokens live 30 s on this platform (ACCESS_TOKEN_TTL_SECONDS, auth's minimum): a socket opened with
the first token at start-up must be ended at its expiry, which the last test checks; every other socket
signs in afresh.

The gateway-level tests (services/gateway/tests/test_events_ws.py) cover the protocol's corners; these check
that the real services feed it and that real credentials open, scope and end it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import websockets
from browserfleet_contracts.eventstream import CloseCode
from browserfleet_devkit.devstack import Platform
from browserfleet_devkit.sites import OnePageSite
from websockets.asyncio.client import ClientConnection

from ..platforms import own_platform

pytestmark = pytest.mark.e2e

WAIT_CAP = 90.0  # hang protection only; nothing asserts on speed
TOKEN_TTL = 30
NOWHERE = ["no-such-pool-tag"]  # tasks that stay queued: no pool has this tag, so no worker runs them


# a customer's website on 127.0.0.1: one page with a title and a heading
PAGE = b"<!doctype html><title>Live stream</title><h1 id='h'>watched</h1>"


@dataclass
class Running:
    platform: Platform
    http: httpx.AsyncClient
    org_a: str
    org_b: str
    b_admin: tuple[str, str]  # email, password
    expiring: ClientConnection
    expiring_hello: dict[str, Any]
    # everything it receives, read as it comes, and when it was closed
    expiring_read: asyncio.Task[tuple[list[dict[str, Any]], datetime]]
    lines: list[str] = field(default_factory=list)
    _tokens: dict[str, tuple[str, float]] = field(default_factory=dict)

    @property
    def ws_url(self) -> str:
        return self.platform.gateway_url.replace("http://", "ws://")

    async def token(self, org: str = "a") -> str:
        """A token of org "a"'s or "b"'s admin with at least 20 of its 30 s left (a sign-in costs an argon2
        verification, so fresh ones are reused)."""
        cached = self._tokens.get(org)
        if cached is not None and time.monotonic() - cached[1] < TOKEN_TTL - 20:
            return cached[0]
        if org == "a":
            boot = self.platform.bootstrap
            assert boot is not None and boot.password
            email, password = boot.admin_email, boot.password
        else:
            email, password = self.b_admin
        at = time.monotonic()
        r = await self.http.post("/auth/login", json={"email": email, "password": password})
        assert r.status_code == 200, r.text
        self._tokens[org] = (str(r.json()["access_token"]), at)
        return self._tokens[org][0]

    async def connect(
        self, credential: str | None = None, path: str = "/api/v1/events/ws"
    ) -> ClientConnection:
        headers = {"Authorization": f"Bearer {credential}"} if credential else None
        return await websockets.connect(f"{self.ws_url}{path}", additional_headers=headers)


@contextlib.asynccontextmanager
async def kept_signed_in(r: Running, sockets: list[tuple[ClientConnection, str]]) -> AsyncIterator[None]:
    """Sends each user socket a fresh token as AUTH every 10 s, as a long-lived client does with 30 s tokens
    (the reply, AUTHENTICATED, carries no `seq` and is skipped by `events_until`)."""

    async def renew() -> None:
        while True:
            await asyncio.sleep(10)
            for ws, org in sockets:
                await ws.send(json.dumps({"type": "AUTH", "token": await r.token(org)}))

    task = asyncio.create_task(renew())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def recv(ws: ClientConnection) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), WAIT_CAP))
    return doc


async def subscribe(ws: ClientConnection, org: str, **fields: Any) -> dict[str, Any]:
    hello = await recv(ws)
    assert hello["type"] == "AUTHENTICATED", hello
    await ws.send(json.dumps({"type": "SUBSCRIBE", "channel": f"org:{org}", **fields}))
    while True:
        msg = await recv(ws)
        if msg["type"] == "SUBSCRIBED":
            return msg


async def events_until(ws: ClientConnection, done: Any) -> list[dict[str, Any]]:
    """Event messages, in arrival order, until `done(received)` is true."""
    got: list[dict[str, Any]] = []
    while not done(got):
        msg = await recv(ws)
        if "seq" in msg and msg["type"] != "SUBSCRIBED":
            got.append(msg)
    return got


@pytest.fixture(scope="module")
async def running(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Running]:
    lines: list[str] = []
    # its own embedded NATS, authenticated as `make dev` runs it: the gateway reads EVENTS, replays and keeps
    # tickets under its own bus identity's permissions. Started from a thread: `Platform.start` runs an event
    # loop, and this fixture's is running here.
    with own_platform(
        "bf_ws",
        tmp_path_factory.mktemp("home"),
        start=False,
        output=lines.append,
        env={
            "ACCESS_TOKEN_TTL_SECONDS": str(TOKEN_TTL),
            "RATE_LIMIT_PER_SECOND": "0",  # hundreds of submissions from one user, at once
            "LOGIN_RATE_PER_SECOND": "0",  # every socket signs in afresh
        },
    ) as platform:
        await asyncio.to_thread(platform.start)
        try:
            async with httpx.AsyncClient(base_url=platform.gateway_url, timeout=30) as http:
                boot = platform.bootstrap
                assert boot is not None and boot.password
                r = await http.post(
                    "/auth/login", json={"email": boot.admin_email, "password": boot.password}
                )
                first = str(r.json()["access_token"])
                auth = {"Authorization": f"Bearer {first}"}
                org_b = await http.post(
                    "/organizations",
                    headers=auth,
                    json={"name": "Org B", "slug": "org-b", "admin_email": "admin@org-b.example"},
                )
                assert org_b.status_code == 201, org_b.text
                b = org_b.json()
                ws_url = platform.gateway_url.replace("http://", "ws://")
                expiring = await websockets.connect(f"{ws_url}/api/v1/events/ws", additional_headers=auth)
                hello = json.loads(await expiring.recv())
                await expiring.send(json.dumps({"type": "SUBSCRIBE", "channel": f"org:{boot.org_id}"}))
                reader = asyncio.create_task(_drain_timed(expiring))
                yield Running(
                    platform=platform,
                    http=http,
                    org_a=boot.org_id,
                    org_b=b["id"],
                    b_admin=(b["admin_email"], b["admin_password"]),
                    expiring=expiring,
                    expiring_hello=hello,
                    expiring_read=reader,
                    lines=lines,
                )
        finally:
            await asyncio.to_thread(platform.stop)


async def _submit(r: Running, org: str, count: int, label: str) -> list[str]:
    """`count` tasks of org `org` ("a" or "b") that stay queued; signs in again for every batch (tokens live
    30 s here, and a busy machine may take longer than that for hundreds)."""

    async def one(auth: dict[str, str], i: int) -> str:
        body = {
            "title": f"{label}-{i}",
            "worker_tags": NOWHERE,
            "steps": [{"action": "navigate", "url": "http://127.0.0.1:9/"}],
        }
        resp = await r.http.post("/api/v1/tasks", headers=auth, json=body)
        assert resp.status_code == 201, resp.text
        return str(resp.json()["id"])

    ids: list[str] = []
    for start in range(0, count, 25):
        auth = {"Authorization": f"Bearer {await r.token(org)}"}
        ids += await asyncio.gather(*(one(auth, i) for i in range(start, min(count, start + 25))))
    return ids


async def test_an_org_never_sees_another_orgs_events_over_hundreds(running: Running) -> None:
    r = running
    token_a, token_b = await r.token("a"), await r.token("b")
    key = await r.http.post(
        "/admin/api-keys",
        headers={"Authorization": f"Bearer {token_b}"},
        json={"name": "stream", "scopes": ["tasks:read"]},
    )
    assert key.status_code == 201, key.text
    a = await r.connect(token_a)
    b_user = await r.connect(token_b)
    b_key = await r.connect(key.json()["key"])  # programs: an API key with tasks:read
    await subscribe(a, r.org_a, types=["task.created"])
    await subscribe(b_user, r.org_b, types=["task.created"])
    await subscribe(b_key, r.org_b, types=["task.created"])
    # org B asks for org A's channel, then follows one of org A's tasks by id: refused, and nothing comes
    await b_user.send(json.dumps({"type": "SUBSCRIBE", "channel": f"org:{r.org_a}"}))
    assert (await recv(b_user))["code"] == "forbidden_channel"
    async with kept_signed_in(r, [(a, "a"), (b_user, "b")]):
        ids_a, ids_b = await asyncio.gather(_submit(r, "a", 200, "a"), _submit(r, "b", 100, "b"))
        spy = await r.connect(await r.token("b"))
        await subscribe(spy, r.org_b, task_id=ids_a[0])

        got_a = await events_until(a, lambda got: len(got) >= 200)
        got_b = await events_until(b_user, lambda got: len(got) >= 100)
        got_key = await events_until(b_key, lambda got: len(got) >= 100)
        assert sorted(m["task_id"] for m in got_a) == sorted(ids_a)
        assert sorted(m["task_id"] for m in got_b) == sorted(ids_b)
        assert [m["seq"] for m in got_key] == [m["seq"] for m in got_b]
        for got in (got_a, got_b):
            seqs = [m["seq"] for m in got]
            assert seqs == sorted(set(seqs)), "out of order or twice"
        # a fence of org B's: whatever org A's might still have reached org B's sockets came before it
        fence = (await _submit(r, "b", 1, "fence"))[0]
        for ws in (b_user, b_key):
            extra = await events_until(ws, lambda got: bool(got) and got[-1]["task_id"] == fence)
            assert [m["task_id"] for m in extra] == [fence]
    await spy.send(json.dumps({"type": "PING"}))
    assert (await recv(spy))["type"] == "PONG"  # the spy's filter let nothing of org A through
    for ws in (a, b_user, b_key, spy):
        await ws.close()


async def test_a_browser_watches_a_real_run_with_its_logs_and_resumes(running: Running) -> None:
    r = running
    token = await r.token("a")
    auth = {"Authorization": f"Bearer {token}"}
    ticket = await r.http.post("/api/v1/events/ticket", headers=auth)
    assert ticket.status_code == 201, ticket.text
    path = f"/api/v1/events/ws?ticket={ticket.json()['ticket']}"
    with OnePageSite(PAGE) as site:
        task = await r.http.post(
            "/api/v1/tasks",
            headers=auth,
            json={
                "title": "watched",
                "steps": [
                    {"action": "navigate", "url": site.url},
                    {"action": "extract", "name": "heading", "selector": "#h"},
                    {"action": "screenshot"},
                ],
            },
        )
        assert task.status_code == 201, task.text
        task_id = task.json()["id"]
        ws = await r.connect(path=path)  # the browser's way in: a single-use ticket
        start = await subscribe(ws, r.org_a, types=["task.*", "task.log"], task_id=task_id, since=0)
        assert start["since"] == 0
        got = await events_until(ws, lambda got: any(m.get("status") == "completed" for m in got))
    changes = [(m["event"], m["status"]) for m in got if m["type"] == "TASK_STATUS_CHANGE"]
    assert changes == [
        ("task.created", "queued"),
        ("task.started", "running"),
        ("task.completed", "completed"),
    ]
    logs = [line for m in got if m["type"] == "TASK_LOG" for line in m["lines"]]
    assert logs and all(m["task_id"] == task_id and m["attempt"] == 1 for m in got if m["type"] == "TASK_LOG")
    assert [line["seq"] for line in logs] == sorted({line["seq"] for line in logs}), "a log line twice"
    assert any("navigate" in line["message"] for line in logs)
    seqs = [m["seq"] for m in got]
    assert seqs == sorted(set(seqs))
    completed = next(m for m in got if m.get("status") == "completed")
    assert completed["data"]["result"]["extracted"]["heading"] == "watched"
    await ws.close()

    # the ticket was used up
    again = await r.connect(path=path)
    assert (await recv(again))["code"] == "invalid_ticket"
    await _closed(again, CloseCode.UNAUTHORIZED)

    # resuming from the middle gives the rest exactly once
    middle = seqs[len(seqs) // 2]
    ws = await r.connect(await r.token("a"))
    await subscribe(ws, r.org_a, types=["task.*", "task.log"], task_id=task_id, since=middle)
    rest = await events_until(ws, lambda got: bool(got) and got[-1]["seq"] == seqs[-1])
    assert [m["seq"] for m in rest] == [s for s in seqs if s > middle]
    await ws.close()


async def test_the_first_token_ends_its_stream_at_expiry(running: Running) -> None:
    """Opened at start-up with the first token (TTL 30 s); it is closed 4401 with `token_expired` when that
    token expires, not before and not never."""
    r = running
    expires_at = datetime.fromisoformat(r.expiring_hello["expires_at"])
    seen, closed = await asyncio.wait_for(r.expiring_read, WAIT_CAP)
    rcvd = r.expiring.protocol.close_rcvd
    assert rcvd is not None and (rcvd.code, rcvd.reason) == (CloseCode.UNAUTHORIZED, "token expired")
    assert seen[-1]["type"] == "ERROR" and seen[-1]["code"] == "token_expired"
    assert closed >= expires_at  # not before the token's own expiry
    assert (r.expiring_hello["org_id"], r.expiring_hello["kind"]) == (r.org_a, "user")
    assert any(m["type"] == "TASK_STATUS_CHANGE" for m in seen)  # it did stream until then


async def _drain(ws: ClientConnection) -> list[dict[str, Any]]:
    """Every message until the server closes the socket."""
    seen: list[dict[str, Any]] = []
    try:
        while True:
            seen.append(json.loads(await asyncio.wait_for(ws.recv(), WAIT_CAP)))
    except websockets.ConnectionClosed:
        return seen


async def _drain_timed(ws: ClientConnection) -> tuple[list[dict[str, Any]], datetime]:
    seen = await _drain(ws)
    return seen, datetime.now(UTC)


async def _closed(ws: ClientConnection, code: int) -> None:
    await _drain(ws)
    rcvd = ws.protocol.close_rcvd
    assert rcvd is not None and rcvd.code == code

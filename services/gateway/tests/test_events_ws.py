"""The event stream at the gateway's edge: uvicorn on 127.0.0.1, real NATS with the EVENTS stream, events
published as the services publish them; auth stood in by the conftest's responders (real Ed25519 tokens).

What the whole platform adds (real auth, scheduler and worker) is in tests/ws."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import websockets
from browserfleet_contracts import subjects
from browserfleet_contracts.auth import ApiKeyRevoked, UserChanged, UserState
from browserfleet_contracts.eventstream import CloseCode

from .conftest import Signer
from .wsfixtures import WAIT_CAP, Served, closed_with, recv, recv_type, served, subscribe

ORG_A, ORG_B = "org-a", "org-b"


@pytest.fixture(scope="module")
async def gw(nats_url: str) -> AsyncIterator[Served]:
    async with served(nats_url, Signer(), ws_auth_timeout_seconds=1.0) as s:
        yield s


async def _events(ws: Any, count: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while len(out) < count:
        msg = await recv(ws)
        if "seq" in msg and msg["type"] != "SUBSCRIBED":
            out.append(msg)
    return out


# --- tenant isolation ----------------------------------------------------------------------------
async def test_an_org_never_receives_another_orgs_events_over_hundreds(gw: Served) -> None:
    a = await gw.connect(gw.token(org=ORG_A))
    b = await gw.connect(gw.token(org=ORG_B))
    await subscribe(a, ORG_A)
    start = (await subscribe(b, ORG_B))["seq"]
    # org B also tries org A's channel and org A's task id: refused, and nothing of org A follows
    await b.send(json.dumps({"type": "SUBSCRIBE", "channel": f"org:{ORG_A}"}))
    assert (await recv_type(b, "ERROR"))["code"] == "forbidden_channel"
    published: dict[str, list[int]] = {ORG_A: [], ORG_B: []}
    for i in range(300):
        org = ORG_A if i % 3 else ORG_B  # org A: 200, org B: 100, interleaved
        published[org].append(await gw.publish_task(org, f"{org}-task-{i}"))
    got_a = await _events(a, 200)
    got_b = await _events(b, 100)
    assert [m["seq"] for m in got_a] == published[ORG_A]
    assert [m["seq"] for m in got_b] == published[ORG_B]
    assert all(m["task_id"].startswith(ORG_B) for m in got_b)
    # a replay is scoped the same way: org B resuming from before all of them gets only its own
    await b.close()
    b = await gw.connect(gw.token(org=ORG_B))
    await subscribe(b, ORG_B, since=start)
    assert [m["seq"] for m in await _events(b, 100)] == published[ORG_B]
    fence = await gw.publish_task(ORG_B, "fence")
    assert (await _events(b, 1))[0]["seq"] == fence  # nothing of org A came in between
    for ws in (a, b):
        await ws.close()


# --- resume ------------------------------------------------------------------------------------------
async def test_resume_after_reconnect_has_no_gap_and_no_duplicate(gw: Served) -> None:
    """Events keep coming while the client drops and resumes (several times, at random moments of its
    replay's hand-over to the live stream): it sees every event of its org once, in order."""
    published: list[int] = []
    done = asyncio.Event()

    async def publisher() -> None:
        for i in range(600):
            org = ORG_A if i % 2 else ORG_B
            seq = await gw.publish_task(org, f"t{i}")
            if org == ORG_A:
                published.append(seq)
            if i % 20 == 0:
                await asyncio.sleep(0.01)
        done.set()

    ws = await gw.connect(gw.token(org=ORG_A))
    last = (await subscribe(ws, ORG_A))["seq"]
    seen: list[int] = []
    pub = asyncio.create_task(publisher())
    for round_ in range(8):
        for _ in range(10 + 7 * round_):
            msg = await recv(ws)
            if msg["type"] == "TASK_STATUS_CHANGE":
                seen.append(msg["seq"])
        await ws.close()
        ws = await gw.connect(gw.token(org=ORG_A))
        await subscribe(ws, ORG_A, since=seen[-1] if seen else last)
    await asyncio.wait_for(done.wait(), WAIT_CAP)
    await pub
    while not seen or seen[-1] < published[-1]:
        msg = await recv(ws)
        if msg["type"] == "TASK_STATUS_CHANGE":
            seen.append(msg["seq"])
    await ws.close()
    assert len(seen) == len(set(seen)), "an event arrived twice"
    assert seen == published, "an event was lost or came out of order"


async def test_resume_from_the_current_position_replays_nothing(gw: Served) -> None:
    ws = await gw.connect(gw.token(org=ORG_A))
    now = (await subscribe(ws, ORG_A))["seq"]
    await ws.close()
    ws = await gw.connect(gw.token(org=ORG_A))
    sub = await subscribe(ws, ORG_A, since=now)
    assert (sub["since"], sub["gap"]) == (now, False)
    seq = await gw.publish_task(ORG_A, "next")
    assert (await _events(ws, 1))[0]["seq"] == seq
    await ws.send(json.dumps({"type": "SUBSCRIBE", "channel": f"org:{ORG_A}", "since": seq + 1000}))
    err = await recv_type(ws, "ERROR")
    assert (err["code"], err["field"]) == ("invalid_since", "since")
    await ws.close()


async def test_the_gateway_reads_events_only_while_a_socket_is_subscribed(nats_url: str, gw: Served) -> None:
    """A gateway nobody watches through does not receive every organization's events; the first subscriber
    starts its consumer without losing what a resuming client missed meanwhile."""
    # the module's gateway's signer: its stand-in auth answers the key lookups of both
    async with served(nats_url, gw.signer, gw.api_keys, ws_hub_idle_seconds=0.3) as gw:
        hub = gw.app.state.gateway.events.hub
        position = hub.position
        unread = [await gw.publish_task(ORG_A, f"unwatched-{i}") for i in range(5)]
        await asyncio.sleep(0.2)
        assert hub.position == position, "events were read with no socket subscribed"
        assert not hub.reading

        ws = await gw.connect(gw.token(org=ORG_A))
        sub = await subscribe(ws, ORG_A, since=unread[0] - 1)
        assert hub.reading and sub["seq"] >= unread[-1]
        live = await gw.publish_task(ORG_A, "watched")
        assert [m["seq"] for m in await _events(ws, 6)] == [*unread, live]
        await ws.close()

        for _ in range(int(WAIT_CAP / 0.05)):  # the last subscriber left: it stops after the idle time
            if not hub.reading:
                break
            await asyncio.sleep(0.05)
        assert not hub.reading, "the hub kept reading EVENTS with no socket subscribed"
        missed = await gw.publish_task(ORG_A, "missed")
        ws = await gw.connect(gw.token(org=ORG_A))
        await subscribe(ws, ORG_A, since=live)
        after = await gw.publish_task(ORG_A, "after")
        assert [m["seq"] for m in await _events(ws, 2)] == [missed, after]
        await ws.close()


# --- filters -----------------------------------------------------------------------------------------
async def test_filters_by_type_and_task_and_logs_only_when_named(gw: Served) -> None:
    everything = await gw.connect(gw.token(org=ORG_A))
    one_task = await gw.connect(gw.token(org=ORG_A))
    completions = await gw.connect(gw.token(org=ORG_A))
    await subscribe(everything, ORG_A)
    await subscribe(one_task, ORG_A, types=["task.*", "task.log"], task_id="t-1")
    await subscribe(completions, ORG_A, types=["task.completed", "security.*"])
    log_data = {
        "task_id": "t-1",
        "attempt": 1,
        "lines": [{"seq": 0, "level": "info", "message": "hi", "ts": "2030-01-01T00:00:00Z"}],
    }
    seqs = [
        await gw.publish_task(ORG_A, "t-1", "created"),
        await gw.publish(ORG_A, "task.log", log_data),
        await gw.publish_task(ORG_A, "t-2", "completed"),
        await gw.publish_task(ORG_A, "t-1", "completed"),
        await gw.publish(ORG_A, "security.request_blocked", {"task_id": "t-2", "host": "x"}),
    ]
    fence = await gw.publish_task(ORG_A, "t-1", "cancelled")
    got = await _events(everything, 5)  # `*` (no types) leaves task.log out
    assert [m["seq"] for m in got] == [seqs[0], seqs[2], seqs[3], seqs[4], fence]
    assert got[3]["type"] == "EVENT" and got[3]["event"] == "security.request_blocked"
    got = await _events(one_task, 4)
    assert [m["seq"] for m in got] == [seqs[0], seqs[1], seqs[3], fence]
    assert got[1]["type"] == "TASK_LOG" and got[1]["lines"][0]["message"] == "hi"
    got = await _events(completions, 3)
    assert [m["seq"] for m in got] == [seqs[2], seqs[3], seqs[4]]
    for ws in (everything, one_task, completions):
        await ws.close()


# --- backpressure ------------------------------------------------------------------------------------
async def test_a_client_that_never_reads_is_dropped_and_slows_no_one(nats_url: str, gw: Served) -> None:
    async with served(nats_url, gw.signer, gw.api_keys, ws_send_queue=16, ws_close_grace_seconds=60) as gw:
        slow = await _never_reading(gw)
        fast = await gw.connect(gw.token(), ping_interval=None)
        await subscribe(slow, ORG_A)
        await subscribe(fast, ORG_A)
        slow_session = _session_of(gw.sessions(), slow)
        published: list[int] = []
        received: list[int] = []

        async def read_fast() -> None:
            while True:
                msg = await recv(fast)
                if msg["type"] == "EVENT":
                    received.append(msg["seq"])

        reader = asyncio.create_task(read_fast())
        pad = uuid.uuid4().hex * 512  # 16 KiB an event
        while not slow_session.ended and len(published) < 3000:
            published.append(await gw.publish(ORG_A, "security.request_blocked", {"pad": pad}))
        assert slow_session.ended, "the client that reads nothing was never dropped"
        fence = await gw.publish(ORG_A, "security.request_blocked", {"pad": "fence"})
        while fence not in received:
            await asyncio.sleep(0.01)
            assert not reader.done()
        reader.cancel()
        assert received == [*published, fence], "the reading client lost events to the slow one"
        # the slow client, reading at last, finds a prefix of the stream in order, then the close that says why
        code, reason, seen = await closed_with(slow)
        got = [m["seq"] for m in seen if m["type"] == "EVENT"]
        assert got == published[: len(got)] and len(got) < len(published)
        assert code == CloseCode.SLOW_CONSUMER and "since" in reason
        await fast.close()


async def test_a_dropped_client_that_still_reads_nothing_is_cut_off(nats_url: str, gw: Served) -> None:
    """No close frame can reach a client that reads nothing: after the grace period its connection is cut,
    so it keeps no buffers on the gateway."""
    async with served(nats_url, gw.signer, gw.api_keys, ws_send_queue=4, ws_close_grace_seconds=0.5) as gw:
        slow = await _never_reading(gw)
        await subscribe(slow, ORG_A)
        session = _session_of(gw.sessions(), slow)
        held = gw.connections()
        pad = uuid.uuid4().hex * 512
        sent = 0
        while not session.ended and sent < 3000:
            await gw.publish(ORG_A, "security.request_blocked", {"pad": pad})
            sent += 1
        assert session.ended
        deadline = asyncio.get_running_loop().time() + WAIT_CAP
        while gw.connections() >= held:
            assert asyncio.get_running_loop().time() < deadline, "the dropped client's connection was kept"
            await asyncio.sleep(0.05)
        code, _, _ = await closed_with(slow)
        # Cut off. The bytes the two kernels had taken before the cut may end with the 4008 close frame
        # (the clean run on a busy machine once delivered it); nothing the gateway still held reaches it.
        assert code in (None, CloseCode.SLOW_CONSUMER)


async def _never_reading(gw: Served) -> Any:
    """A client that reads nothing and keeps a tiny receive buffer, so backpressure reaches the gateway."""
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", int(gw.url.rsplit(":", 1)[1])))
    return await websockets.connect(
        f"{gw.url}/api/v1/events/ws",
        sock=raw,
        additional_headers={"Authorization": f"Bearer {gw.token()}"},
        max_queue=1,
        compression=None,
        ping_interval=None,
    )


def _session_of(sessions: list[Any], ws: Any) -> Any:
    port = ws.local_address[1]
    return next(s for s in sessions if s.ws.client and s.ws.client.port == port)


# --- credentials -----------------------------------------------------------------------------------
async def test_credentials_refused_with_a_close_code_that_says_why(gw: Served) -> None:
    cases = [
        ("garbage", CloseCode.UNAUTHORIZED),
        (gw.token(ttl=-120), CloseCode.UNAUTHORIZED),  # expired
        (gw.api_key(ORG_A, ["tasks:write"])[0], CloseCode.FORBIDDEN),  # a key without the read scope
        ("sk_api_unknown", CloseCode.UNAUTHORIZED),
    ]
    for token, expected in cases:
        ws = await gw.connect(token)
        code, reason, seen = await closed_with(ws)
        assert seen and (code, seen[0]["type"]) == (expected, "ERROR"), (token[:12], code, reason, seen)
        assert reason
    # nothing sent at all: 4408 after the auth timeout; something else first: 4401
    ws = await gw.connect()
    assert (await closed_with(ws))[0] == CloseCode.TIMEOUT
    ws = await gw.connect()
    await ws.send(json.dumps({"type": "SUBSCRIBE", "channel": f"org:{ORG_A}"}))
    assert (await closed_with(ws))[0] == CloseCode.UNAUTHORIZED


async def test_auth_message_api_key_and_the_short_path(gw: Served) -> None:
    ws = await gw.connect(path="/ws")
    await ws.send(json.dumps({"type": "AUTH", "token": gw.token(org=ORG_B, role="admin")}))
    hello = await recv(ws)
    assert (hello["type"], hello["org_id"], hello["role"], hello["kind"]) == (
        "AUTHENTICATED",
        ORG_B,
        "admin",
        "user",
    )
    await ws.close()
    key, _ = gw.api_key(ORG_B, ["tasks:read"])
    ws = await gw.connect(key)
    sub = await subscribe(ws, ORG_B)
    seq = await gw.publish_task(ORG_B, "k")
    assert (await _events(ws, 1))[0]["seq"] == seq and sub["channel"] == f"org:{ORG_B}"
    await ws.close()


async def test_the_stream_ends_when_the_token_expires(gw: Served) -> None:
    ws = await gw.connect(gw.token(ttl=2))
    hello = await recv(ws)
    assert hello["expires_at"] is not None
    await ws.send(json.dumps({"type": "SUBSCRIBE", "channel": f"org:{ORG_A}"}))
    await recv_type(ws, "SUBSCRIBED")
    code, reason, seen = await closed_with(ws)
    assert code == CloseCode.UNAUTHORIZED and reason == "token expired"
    assert seen[-1] == {
        "type": "ERROR",
        "code": "token_expired",
        "message": seen[-1]["message"],
        "field": None,
    }


async def test_a_fresh_token_sent_as_auth_keeps_the_stream_open(gw: Served) -> None:
    ws = await gw.connect(gw.token(ttl=2, sub="renewer"))
    await recv_type(ws, "AUTHENTICATED")
    other = gw.token(ttl=300, sub="someone-else")
    await ws.send(json.dumps({"type": "AUTH", "token": other}))
    assert (await recv_type(ws, "ERROR"))["code"] == "principal_mismatch"
    await ws.send(json.dumps({"type": "AUTH", "token": gw.token(ttl=300, sub="renewer")}))
    renewed = await recv_type(ws, "AUTHENTICATED")
    assert datetime.fromisoformat(renewed["expires_at"]) > datetime.now(UTC) + timedelta(seconds=60)
    await asyncio.sleep(3)  # past the first token's expiry
    await ws.send(json.dumps({"type": "PING"}))
    assert (await recv_type(ws, "PONG"))["type"] == "PONG"
    await ws.close()


async def test_an_api_key_socket_ends_at_the_keys_expiry_and_at_its_revocation(gw: Served) -> None:
    soon, _ = gw.api_key(ORG_A, ["tasks:read"], expires_at=datetime.now(UTC) + timedelta(seconds=2))
    ws = await gw.connect(soon)
    await recv_type(ws, "AUTHENTICATED")
    code, _, seen = await closed_with(ws)
    assert code == CloseCode.UNAUTHORIZED and seen[-1]["code"] == "token_expired"

    key, key_id = gw.api_key(ORG_A, ["tasks:read"])
    ws = await gw.connect(key)
    await subscribe(ws, ORG_A)
    notice = ApiKeyRevoked(key_id=key_id, org_id=ORG_A)
    await gw.nc.publish(subjects.API_KEY_REVOKED, notice.model_dump_json().encode())
    code, reason, _ = await closed_with(ws)
    assert (code, reason) == (CloseCode.UNAUTHORIZED, "API key revoked")


async def test_a_deactivated_or_signed_out_users_sockets_end(gw: Served) -> None:
    """auth's `auth.user.changed` ends the user's sockets at once, as it refuses their next request."""
    for user, change, reason in (
        ("leaver", {"active": False}, "user deactivated"),
        ("signed-out", {"active": True, "valid_after": time.time() + 5}, "token revoked: sign in again"),
    ):
        mine = await gw.connect(gw.token(sub=user))
        ticket = await _ticket(gw, gw.token(sub=user))
        via_ticket = await gw.connect(path=f"/api/v1/events/ws?ticket={ticket}")
        bystander = await gw.connect(gw.token(sub=f"{user}-colleague"))
        for ws in (mine, via_ticket, bystander):
            await subscribe(ws, ORG_A)
        notice = UserChanged(org_id=ORG_A, state=UserState(user_id=user, org_id=ORG_A, **change))
        await gw.nc.publish(subjects.USER_CHANGED, notice.model_dump_json().encode())
        for ws in (mine, via_ticket):
            assert (await closed_with(ws))[:2] == (CloseCode.UNAUTHORIZED, reason)
        await bystander.send(json.dumps({"type": "PING"}))
        assert (await recv_type(bystander, "PONG"))["type"] == "PONG"
        await bystander.close()


async def _ticket(gw: Served, token: str) -> str:
    async with httpx.AsyncClient(base_url=gw.http) as http:
        r = await http.post("/api/v1/events/ticket", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 201, r.text
        return str(r.json()["ticket"])


async def test_a_deleted_organizations_sockets_end(gw: Served) -> None:
    ws = await gw.connect(gw.token(org="org-gone"))
    await subscribe(ws, "org-gone", types=["task.*"])
    await gw.publish("org-gone", "organization.deleted", {"organization_id": "org-gone", "slug": "gone"})
    code, reason, _ = await closed_with(ws)
    assert (code, reason) == (CloseCode.UNAUTHORIZED, "organization deleted")


# --- tickets -----------------------------------------------------------------------------------------
async def test_a_ticket_works_once(gw: Served) -> None:
    async with httpx.AsyncClient(base_url=gw.http) as http:
        assert (await http.post("/api/v1/events/ticket")).status_code == 401
        key, _ = gw.api_key(ORG_A, ["tasks:write"])
        r = await http.post("/api/v1/events/ticket", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 403
        r = await http.post(
            "/api/v1/events/ticket", headers={"Authorization": f"Bearer {gw.token(org=ORG_B)}"}
        )
        assert r.status_code == 201, r.text
        ticket = r.json()["ticket"]
        assert r.json()["expires_in"] == gw.settings.ws_ticket_seconds
        # two sockets race for one ticket: exactly one is let in
        first, second = await asyncio.gather(
            gw.connect(path=f"/api/v1/events/ws?ticket={ticket}"),
            gw.connect(path=f"/api/v1/events/ws?ticket={ticket}"),
        )
        outcomes = await asyncio.gather(recv(first), recv(second))
        assert sorted(m["type"] for m in outcomes) == ["AUTHENTICATED", "ERROR"]
        winner = first if outcomes[0]["type"] == "AUTHENTICATED" else second
        loser = second if winner is first else first
        assert next(m for m in outcomes if m["type"] == "AUTHENTICATED")["org_id"] == ORG_B
        assert (await closed_with(loser))[0] == CloseCode.UNAUTHORIZED
        ws = await gw.connect(path=f"/api/v1/events/ws?ticket={ticket}")
        assert (await closed_with(ws))[:2] == (CloseCode.UNAUTHORIZED, "unknown, used or expired ticket")
        ws = await gw.connect(path="/api/v1/events/ws?ticket=wst_made-up")
        assert (await closed_with(ws))[0] == CloseCode.UNAUTHORIZED
        await winner.close()


async def test_a_ticket_expires(nats_url: str, gw: Served) -> None:
    async with (
        served(nats_url, gw.signer, gw.api_keys, ws_ticket_seconds=1) as gw,
        httpx.AsyncClient(base_url=gw.http) as http,
    ):
        r = await http.post("/api/v1/events/ticket", headers={"Authorization": f"Bearer {gw.token()}"})
        assert r.status_code == 201, r.text
        await asyncio.sleep(1.5)
        ws = await gw.connect(path=f"/api/v1/events/ws?ticket={r.json()['ticket']}")
        assert (await closed_with(ws))[0] == CloseCode.UNAUTHORIZED


# --- bad input and abuse -----------------------------------------------------------------------------
async def test_malformed_frames_get_an_error_and_the_socket_lives_on(gw: Served) -> None:
    ws = await gw.connect(gw.token())
    await recv_type(ws, "AUTHENTICATED")
    cases: list[tuple[str | bytes, str, str | None]] = [
        ("{not json", "invalid_json", None),
        ("[1, 2]", "invalid_message", None),
        ('{"no": "type"}', "unknown_type", "type"),
        ('{"type": "HELLO"}', "unknown_type", "type"),
        ('{"type": "SUBSCRIBE"}', "invalid_message", "channel"),
        (
            '{"type": "SUBSCRIBE", "channel": "org:org-a", "types": ["task.*", "TASK!"]}',
            "invalid_message",
            "types",
        ),
        ('{"type": "SUBSCRIBE", "channel": "org:org-a", "since": -5}', "invalid_message", "since"),
        ('{"type": "SUBSCRIBE", "channel": "org:org-a", "task_id": "a/b"}', "invalid_message", "task_id"),
        ('{"type": "UNSUBSCRIBE", "channel": "org:org-b"}', "forbidden_channel", "channel"),
        (b"\x00\x01binary", "invalid_message", None),
    ]
    for frame, code, field in cases:
        await ws.send(frame)
        err = await recv_type(ws, "ERROR")
        assert (err["code"], err["field"]) == (code, field), (frame, err)
    await ws.send(json.dumps({"type": "PING"}))
    assert (await recv(ws))["type"] == "PONG"
    # a frame over the limit is not read at all: 1009
    await ws.send(json.dumps({"type": "PING", "pad": "x" * gw.settings.ws_max_message_bytes}))
    assert (await closed_with(ws))[0] == CloseCode.MESSAGE_TOO_BIG


async def test_a_flood_of_subscribes_is_limited_then_closed(gw: Served) -> None:
    ws = await gw.connect(gw.token())
    await recv_type(ws, "AUTHENTICATED")
    for _ in range(60):
        await ws.send(json.dumps({"type": "SUBSCRIBE", "channel": f"org:{ORG_A}"}))
    code, reason, seen = await closed_with(ws)
    assert code == CloseCode.TOO_MANY_MESSAGES and reason == "too many messages"
    kinds = [m.get("code") or m["type"] for m in seen]
    assert kinds.count("SUBSCRIBED") == gw.settings.ws_subscribes_burst and "rate_limited" in kinds


async def test_sockets_that_never_authenticate_count_towards_the_gateways_limit(
    nats_url: str, gw: Served
) -> None:
    async with served(
        nats_url, gw.signer, gw.api_keys, ws_max_connections=2, ws_auth_timeout_seconds=1
    ) as gw:
        silent = [await gw.connect(), await gw.connect()]  # accepted, never authenticating
        await asyncio.sleep(0.2)
        third = await gw.connect(gw.token())
        assert (await closed_with(third))[0] == CloseCode.TRY_AGAIN_LATER
        for ws in silent:
            assert (await closed_with(ws))[0] == CloseCode.TIMEOUT


async def test_idle_sockets_close_and_sockets_per_user_are_capped(nats_url: str, gw: Served) -> None:
    async with served(
        nats_url, gw.signer, gw.api_keys, ws_idle_timeout_seconds=1.0, ws_max_connections_per_principal=2
    ) as gw:
        idle = await gw.connect(gw.token())
        pinging = await gw.connect(gw.token())
        await recv_type(pinging, "AUTHENTICATED")
        third = await gw.connect(gw.token())
        code, _, seen = await closed_with(third)
        assert code == CloseCode.TOO_MANY_MESSAGES and seen[-1]["code"] == "too_many_sockets"
        for _ in range(6):  # 1.5 s of PINGs every 0.25 s: never idle
            await pinging.send(json.dumps({"type": "PING"}))
            await recv_type(pinging, "PONG")
            await asyncio.sleep(0.25)
        code, reason, _ = await closed_with(idle)
        assert code == CloseCode.TIMEOUT and "idle" in reason
        await pinging.close()

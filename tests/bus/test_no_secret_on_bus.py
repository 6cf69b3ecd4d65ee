"""What the bus carries during a task that uses a vault secret, read in full by the privileged test client
(`admin`, subscribed to `>`): the secret's value appears in no message, body or header, in any of its usual
encodings (plain, URL-encoded, base64 at every alignment, JSON-escaped once or twice). The release did
travel: sealed to the worker's registered key (issue 11, item 5), on the holder's inbox, as a box only that
key opens."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import urllib.parse

import httpx
import pytest
from browserfleet_contracts import bus, endpoints
from browserfleet_contracts.vault import ReleaseReply
from browserfleet_contracts.workers import WorkerAuthRequest, WorkerIdentity
from browserfleet_core.messaging import RpcClient
from nats.aio.msg import Msg

from ..e2e.sites import TestSite
from .conftest import Bus

pytestmark = pytest.mark.e2e

SITE_USER = "ada"
# must travel in no readable form; `"` and `\\` make its JSON-escaped forms differ from the plain one
SECRET = 'pw-Bus!"s3cret\\horse-9Q'


def _base64_cores(raw: bytes) -> list[bytes]:
    """What base64 of any message holding `raw` must contain, wherever `raw` starts: for each of the three
    alignments, the characters that depend on `raw`'s bytes alone."""
    cores = []
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        for shift in range(3):
            text = encode(b"\0" * shift + raw)
            start = 4 if shift else 0  # the first group mixes in what came before
            end = len(text) - (4 if (shift + len(raw)) % 3 else 0)  # the last one what comes after
            cores.append(text[start:end].rstrip(b"="))
    return cores


def forms(value: str) -> list[bytes]:
    raw = value.encode()
    once = json.dumps(value)[1:-1]
    return [
        raw,
        urllib.parse.quote(value, safe="").encode(),
        urllib.parse.quote_plus(value).encode(),
        *_base64_cores(raw),
        once.encode(),
        json.dumps(once)[1:-1].encode(),  # a JSON document carried inside another as a string
    ]


def login(bus_: Bus) -> dict[str, str]:
    boot = bus_.platform.bootstrap
    assert boot is not None and boot.password
    r = httpx.post(
        f"{bus_.platform.gateway_url}/auth/login",
        json={"email": boot.admin_email, "password": boot.password},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


async def test_no_credential_value_on_the_bus_in_any_form(bus_platform: Bus) -> None:
    gw = bus_platform.platform.gateway_url
    auth = login(bus_platform)
    async with httpx.AsyncClient(base_url=gw, timeout=30) as http:
        r = await http.post("/api/v1/credentials", headers=auth, json={"name": "BUS_SECRET", "value": SECRET})
        assert r.status_code == 201, r.text

        carried: list[Msg] = []

        async def record(msg: Msg) -> None:
            carried.append(msg)

        admin = await bus_platform.admin()
        await admin.subscribe(">", cb=record)
        await admin.flush()
        try:
            with TestSite(SITE_USER, SECRET) as site:
                steps = [*site.login_steps("BUS_SECRET"), {"action": "screenshot", "name": "leads"}]
                r = await http.post("/api/v1/tasks", headers=auth, json={"steps": steps})
                assert r.status_code == 201, r.text
                task_id = r.json()["id"]
                deadline = time.monotonic() + 120  # hang protection only
                while True:
                    task = (await http.get(f"/api/v1/tasks/{task_id}", headers=auth)).json()
                    if task["status"] in ("completed", "failed", "cancelled", "timed_out"):
                        break
                    if time.monotonic() >= deadline:  # say where it stuck: the platform's last lines
                        print("\n".join(bus_platform.lines[-80:]))
                    assert time.monotonic() < deadline, (task["status"], task.get("status_detail"), task)
                    await asyncio.sleep(0.3)
                assert task["status"] == "completed", task
                assert site.login_attempts == [True]
            # everything the task caused has been read: its completion event passed through here
            await admin.flush()
        finally:
            await admin.close()

    holder = task["worker_id"]
    assert holder
    saved = json.loads((bus_platform.platform.home / "workers" / "worker" / "worker.json").read_text())
    assert saved["worker_id"] == holder
    assert len(carried) > 20  # the whole task was read (claim, release, updates, events, artifacts)
    leaks = [
        msg.subject
        for msg in carried
        if any(
            form in msg.data or any(form in v.encode() for v in (msg.headers or {}).values())
            for form in forms(SECRET)
        )
    ]
    assert leaks == [], f"the secret travelled in readable form on {leaks}"

    # the release did cross the bus, to the holder's inbox, sealed to the key the holder has registered now
    admin = await bus_platform.admin()
    try:
        identity: WorkerIdentity = await RpcClient(admin).call(
            endpoints.Workers.AUTHENTICATE, WorkerAuthRequest(worker_key=saved["worker_key"])
        )
    finally:
        await admin.close()
    inbox = bus.worker_inbox_prefix(saved["worker_key"]) + "."
    releases = [msg for msg in carried if msg.subject.startswith(inbox) and b'"sealed"' in msg.data]
    boxes = [ReleaseReply.model_validate_json(msg.data).sealed for msg in releases]
    assert [box.to for box in boxes] == [identity.public_key], boxes

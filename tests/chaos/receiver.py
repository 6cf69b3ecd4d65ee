"""Stands in for a customer's webhook receiver (a third party), on 127.0.0.1 only, as the webhooks README
tells customers to write one: it checks each request's Standard Webhooks signature against the raw body,
handles each `webhook-id` once and answers 204. Here it also counts: every delivery, every duplicate it
suppressed, every bad signature.

It runs as a process of its own (`python -m tests.chaos.receiver`), as a customer's receiver would: sharing
the chaos run's interpreter, it answered late or dropped connections whenever the run itself was busy, and
the run measured itself instead of the platform. A second port controls it: POST /secret, /down (the hooks
socket is closed, so deliveries meet a refused connection as with a receiver that is gone), /up (listening
again on the same port), and GET /records?after=N (what it handled, in order). `Receiver` is the chaos
run's side: it starts the process and mirrors its records into an `Inbox`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from browserfleet_devkit.processes import stop_process
from browserfleet_devkit.sites import QuietHandler


@dataclass
class Inbox:
    """What reached the receiver, across its downs and ups."""

    secret: str = ""
    first_seen: dict[str, float] = field(default_factory=dict)  # webhook-id -> when it was handled
    types: dict[str, str] = field(default_factory=dict)  # webhook-id -> event type
    deliveries: int = 0
    duplicates: int = 0
    bad_signatures: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def verify(self, headers: Any, body: bytes) -> bool:
        msg_id, stamp = headers.get("webhook-id", ""), headers.get("webhook-timestamp", "")
        if not self.secret:
            return False
        key = base64.b64decode(self.secret.removeprefix("whsec_"))
        expected = base64.b64encode(
            hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
        ).decode()
        offered = [s.split(",", 1)[-1] for s in headers.get("webhook-signature", "").split()]
        return bool(msg_id) and any(hmac.compare_digest(expected, s) for s in offered)

    def record(self, msg_id: str, event_type: str, at: float | None = None) -> bool:
        """Counts one delivery; False when `msg_id` was handled before (a duplicate, suppressed)."""
        with self.lock:
            self.deliveries += 1
            if msg_id in self.first_seen:
                self.duplicates += 1
                return False
            self.first_seen[msg_id] = time.time() if at is None else at
            self.types[msg_id] = event_type
            return True

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "deliveries": self.deliveries,
                "unique": len(self.first_seen),
                "duplicates_suppressed": self.duplicates,
                "bad_signatures": self.bad_signatures,
            }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # the dispatcher opens up to WEBHOOK_CONCURRENCY connections at once; the default backlog of 5 drops
    # the SYNs of the rest
    request_queue_size = 256


# --- the receiver process ---------------------------------------------------------------------------------
class _Process:
    def __init__(self) -> None:
        self.inbox = Inbox()
        self.log: list[tuple[str, str, float, bool]] = []  # (webhook-id, type, when, first time?)
        self.port = 0
        self.hooks: _Server | None = None

    def up(self) -> None:
        if self.hooks is not None:
            return
        inbox, log = self.inbox, self.log

        class Hooks(QuietHandler):
            # HTTP/1.0: one request per connection, so no kept-alive connection outlives down()
            def do_POST(self) -> None:
                body = self.read_body()
                if not inbox.verify(self.headers, body):
                    with inbox.lock:
                        inbox.bad_signatures += 1
                    self.answer(401)
                    return
                msg_id, event_type = self.headers["webhook-id"], str(json.loads(body).get("type"))
                now = time.time()
                first = inbox.record(msg_id, event_type, now)
                with inbox.lock:
                    log.append((msg_id, event_type, now, first))
                self.answer(204)

        self.hooks = _Server(("127.0.0.1", self.port), Hooks)
        self.port = int(self.hooks.server_address[1])
        threading.Thread(target=self.hooks.serve_forever, daemon=True).start()

    def down(self) -> None:
        if self.hooks is not None:
            self.hooks.shutdown()
            self.hooks.server_close()
            self.hooks = None

    def serve_control(self) -> None:
        me = self

        class Control(QuietHandler):
            def do_POST(self) -> None:
                body = self.read_body()
                path = urlsplit(self.path).path
                if path == "/secret":
                    me.inbox.secret = body.decode()
                elif path == "/down":
                    me.down()
                elif path == "/up":
                    me.up()
                self._json({"port": me.port, "up": me.hooks is not None})

            def do_GET(self) -> None:
                after = int(parse_qs(urlsplit(self.path).query).get("after", ["0"])[0])
                with me.inbox.lock:
                    records = me.log[after:]
                    counts = {"bad_signatures": me.inbox.bad_signatures}
                self._json({"records": records, **counts})

            def _json(self, doc: object) -> None:
                self.answer(200, json.dumps(doc).encode(), "application/json")

        control = _Server(("127.0.0.1", 0), Control)
        self.up()
        print(json.dumps({"hooks": self.port, "control": control.server_address[1]}), flush=True)
        control.serve_forever()


# --- the chaos run's side ---------------------------------------------------------------------------------
class Receiver:
    """Starts the receiver process; `sync()` (or the `mirror()` task) copies what it handled into `inbox`."""

    def __init__(self) -> None:
        self.inbox = Inbox()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.chaos.receiver"],
            cwd=Path(__file__).resolve().parents[2],
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        ports = json.loads(self.proc.stdout.readline())
        self.port, self._control = int(ports["hooks"]), f"http://127.0.0.1:{ports['control']}"
        self._seen = 0
        self.is_up = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def set_secret(self, secret: str) -> None:
        self.inbox.secret = secret
        httpx.post(f"{self._control}/secret", content=secret, timeout=10).raise_for_status()

    def down(self) -> None:
        httpx.post(f"{self._control}/down", timeout=10).raise_for_status()
        self.is_up = False

    def up(self) -> None:
        httpx.post(f"{self._control}/up", timeout=10).raise_for_status()
        self.is_up = True

    async def sync(self, client: httpx.AsyncClient) -> None:
        r = await client.get(f"{self._control}/records", params={"after": self._seen}, timeout=10)
        doc = r.json()
        for msg_id, event_type, at, _first in doc["records"]:
            self.inbox.record(msg_id, event_type, at)
        self._seen += len(doc["records"])
        with self.inbox.lock:
            self.inbox.bad_signatures = int(doc["bad_signatures"])

    async def mirror(self, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient() as client:
            while not stop.is_set():
                with contextlib.suppress(httpx.HTTPError):
                    await self.sync(client)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.2)
            with contextlib.suppress(httpx.HTTPError):
                await self.sync(client)

    def close(self) -> None:
        stop_process(self.proc, 10)


if __name__ == "__main__":
    _Process().serve_control()

"""The README's receiver, as written, verifies and filters every delivery across a secret rotation.

The receiver is the README's Python block, run unchanged as its own process on 127.0.0.1 (a stand-in for a
customer's system, built only from the README and the official `standardwebhooks` package). The platform side
is the real webhooks service on real NATS and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from browserfleet_contracts import endpoints
from browserfleet_contracts.common import ById
from browserfleet_contracts.webhooks import WebhookSecretPublic
from browserfleet_core.messaging import RpcClient
from browserfleet_webhooks.app import WebhooksService
from nats.js import JetStreamContext

from .helpers import CAP, endpoint, event, org, publish, settled

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_receiver() -> str:
    [block] = [
        b for b in re.findall(r"```python\n(.*?)```", README.read_text(), re.S) if "serve_forever" in b
    ]
    return block


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Process:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def line(self) -> dict[str, object]:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), CAP)
        assert raw, "the receiver exited"
        parsed: dict[str, object] = json.loads(raw)
        return parsed


@asynccontextmanager
async def receiver_process(tmp: Path, port: int, secret: str) -> AsyncIterator[Process]:
    script = tmp / "receiver.py"
    script.write_text(readme_receiver())
    env = {
        "WEBHOOK_SECRET": secret,
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "WEBHOOK_EVENTS": "task.completed",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:

        async def listening() -> None:
            while True:
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    await asyncio.sleep(0.05)
                    continue
                writer.close()
                return

        await asyncio.wait_for(listening(), CAP)
        yield Process(proc)
    finally:
        proc.terminate()
        await proc.wait()


async def test_the_readme_receiver_verifies_filters_and_survives_a_rotation(
    rpc: RpcClient, js: JetStreamContext, service: WebhooksService, tmp_path: Path
) -> None:
    actor = org()
    port = free_port()
    url = f"http://127.0.0.1:{port}/webhooks"
    ep = await endpoint(rpc, actor, url, ["task.*"])
    assert ep.secret is not None
    sent = []

    async with receiver_process(tmp_path, port, ep.secret) as receiver:
        started, completed = event(actor, "task.started"), event(actor, "task.completed")
        for e in (started, completed):
            await publish(js, e)
        got = await receiver.line()
        assert (got["event"], got["data"]["task_id"]) == ("task.completed", completed.data["task_id"])  # type: ignore[index]
        sent.append(completed)

        # an unsigned or forged request is refused
        async with httpx.AsyncClient() as client:
            forged = await client.post(
                url, content=b"{}", headers={"webhook-id": "x", "webhook-timestamp": "1"}
            )
        assert forged.status_code == 401

        rotated: WebhookSecretPublic = await rpc.call(
            endpoints.Webhooks.ROTATE_SECRET, ById(actor=actor, id=ep.id)
        )
        during = event(actor, "task.completed")
        await publish(js, during)
        got = await receiver.line()  # still on the old secret: the overlap's second signature is its own
        assert got["data"]["task_id"] == during.data["task_id"]  # type: ignore[index]
        sent.append(during)
        # the receiver prints before it answers: stop it only once its answers were recorded
        await settled(rpc, actor, ep.id, count=3)

    async with receiver_process(tmp_path, port, rotated.secret) as receiver:
        after = event(actor, "task.completed")
        await publish(js, after)
        got = await receiver.line()
        assert got["data"]["task_id"] == after.data["task_id"]  # type: ignore[index]
        sent.append(after)
        # as above: the receiver prints before it answers, so it must live until its answer is recorded
        rows = await settled(rpc, actor, ep.id, count=4)

    assert {d.status for d in rows} == {"succeeded"}, [(d.event_type, d.status, d.error) for d in rows]
    assert {d.attempt for d in rows} == {1}
    assert {d.event_id for d in rows} == {started.id, *(e.id for e in sent)}

"""What the chaos run counts: the tasks it meant to submit (the client's side, with idempotency keys) and the
task events the platform published on EVENTS (the platform's side).

The client submits each task with an `Idempotency-Key` and retries until the gateway accepts it, as a careful
client does when the platform answers 503 or not at all: one key must always give the same task, so a retry
never creates a second one. The ledger reads `events.<org>.task.>` through a durable consumer of its own,
which outlives a NATS restart, and keeps each stream message once (by stream sequence), so a redelivery to
the ledger is never mistaken for a duplicate the platform published.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import httpx
from browserfleet_contracts import subjects
from nats.aio.client import Client as NatsClient
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

TERMINAL = ("task.completed", "task.failed", "task.cancelled", "task.timed_out")
LEDGER_DURABLE = "chaos-ledger"


@dataclass
class Submission:
    key: str
    first_try: float
    task_id: str | None = None
    accepted_at: float | None = None
    tries: int = 0


@dataclass
class Submitter:
    """Submits `rate` tasks a second while `running`; each until accepted (or `give_up_after` seconds)."""

    gateway_url: str
    api_key: str
    body: dict[str, Any]
    run_id: str
    give_up_after: float
    submissions: list[Submission] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    other_task_for_key: int = 0  # a retry that got another task than the first answer: must stay 0
    _pending: set[asyncio.Task[None]] = field(default_factory=set)
    _client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        self._client = httpx.AsyncClient(
            base_url=self.gateway_url,
            headers={"authorization": f"Bearer {self.api_key}"},
            timeout=httpx.Timeout(15.0),
        )

    async def pace(self, rate: float, stop: asyncio.Event) -> None:
        t0, n = time.monotonic(), 0
        while not stop.is_set():
            delay = t0 + n / rate - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                if stop.is_set():
                    break
            self.submit()
            n += 1

    def submit(self) -> Submission:
        sub = Submission(key=f"{self.run_id}-{len(self.submissions)}", first_try=time.time())
        self.submissions.append(sub)
        task = asyncio.create_task(self._until_accepted(sub))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return sub

    async def _until_accepted(self, sub: Submission) -> None:
        assert self._client is not None
        body = {**self.body, "title": sub.key}
        while time.time() - sub.first_try < self.give_up_after:
            sub.tries += 1
            try:
                r = await self._client.post("/api/v1/tasks", json=body, headers={"Idempotency-Key": sub.key})
            except httpx.HTTPError as exc:
                self.errors[type(exc).__name__] += 1
            else:
                if r.status_code in (200, 201):
                    task_id = str(r.json()["id"])
                    if sub.task_id is not None and sub.task_id != task_id:
                        self.other_task_for_key += 1
                    sub.task_id, sub.accepted_at = task_id, time.time()
                    return
                self.errors[f"http {r.status_code}"] += 1
            await asyncio.sleep(0.25)

    async def drain(self) -> None:
        if self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def close(self) -> None:
        await self.drain()
        if self._client is not None:
            await self._client.aclose()

    def accepted(self) -> dict[str, Submission]:
        return {s.task_id: s for s in self.submissions if s.task_id is not None}


@dataclass
class EventRecord:
    seq: int
    id: str
    type: str
    task_id: str
    worker_id: str | None
    received_at: float


class Ledger:
    def __init__(self, nc: NatsClient, org_id: str) -> None:
        self.nc = nc
        self.org_id = org_id
        self.by_seq: dict[int, EventRecord] = {}
        self.by_task: dict[str, list[EventRecord]] = defaultdict(list)
        self.redelivered_to_ledger = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        js = self.nc.jetstream()
        await js.add_consumer(
            subjects.EVENTS_STREAM,
            config=ConsumerConfig(
                durable_name=LEDGER_DURABLE,
                filter_subject=subjects.event(self.org_id, "task.>"),
                deliver_policy=DeliverPolicy.ALL,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=10,
                max_ack_pending=100_000,
            ),
        )
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        js = self.nc.jetstream()
        sub = None
        while not self._stop.is_set():
            try:
                if sub is None:
                    sub = await js.pull_subscribe_bind(durable=LEDGER_DURABLE, stream=subjects.EVENTS_STREAM)
                msgs = await sub.fetch(batch=512, timeout=0.5)
            except TimeoutError:
                continue
            except Exception:  # NATS restarting under us: bind again once it is back
                sub = None
                await asyncio.sleep(0.5)
                continue
            for msg in msgs:
                self._record(msg)
                with contextlib.suppress(Exception):
                    await msg.ack()

    def _record(self, msg: Any) -> None:
        seq = int(msg.metadata.sequence.stream)
        if seq in self.by_seq:
            self.redelivered_to_ledger += 1
            return
        doc = json.loads(msg.data)
        data = doc.get("data") or {}
        rec = EventRecord(
            seq, doc["id"], doc["type"], str(data.get("task_id")), data.get("worker_id"), time.time()
        )
        self.by_seq[seq] = rec
        self.by_task[rec.task_id].append(rec)

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task

    # --- questions ---
    def ends(self, task_id: str) -> list[EventRecord]:
        return [e for e in self.by_task.get(task_id, ()) if e.type in TERMINAL]

    def completions(self, task_id: str) -> int:
        return sum(1 for e in self.by_task.get(task_id, ()) if e.type == "task.completed")

    def running_on(self, worker_id: str) -> set[str]:
        """Tasks whose latest attempt started on `worker_id` and that have not ended."""
        out = set()
        for task_id, events in self.by_task.items():
            started = [e for e in events if e.type == "task.started"]
            if started and started[-1].worker_id == worker_id and not self.ends(task_id):
                out.add(task_id)
        return out

    def deliverable(self, task_ids: set[str]) -> dict[str, str]:
        """Event id -> type of every event of these tasks a `task.*` webhook endpoint receives (task.log is
        the event stream's, never a webhook's)."""
        return {e.id: e.type for t in task_ids for e in self.by_task.get(t, ()) if e.type != "task.log"}

"""`StandInWorker`: the worker running one task, as the gateway's live view meets it on NATS (the worker's
own side runs real Chromium in services/worker/tests/test_liveview.py)."""

from __future__ import annotations

import asyncio
import base64
import os
from dataclasses import dataclass, field

from browserfleet_contracts import subjects
from browserfleet_contracts.live import (
    LiveEnded,
    LiveFrame,
    LiveHandoff,
    LiveInput,
    LiveStartReply,
    LiveStartRequest,
    LiveStop,
)
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

WORKER = "worker-live-1"


@dataclass
class StandInWorker:
    """Stands in for the worker running one task (see the module docstring): records every start and stop,
    answers starts as told, publishes what a test gives it."""

    nc: NatsClient
    task_id: str
    attempt: int = 1
    accept: bool = True
    reason: str | None = None
    handoff: str | None = None  # what its start reply says the run waits for
    delay: float = 0.0  # before it answers a start
    starts: list[LiveStartRequest] = field(default_factory=list)
    stops: list[LiveStop] = field(default_factory=list)
    inputs: list[LiveInput] = field(default_factory=list)
    seq: int = 0
    subs: list[Subscription] = field(default_factory=list)

    async def start(self) -> None:
        async def on_start(msg: Msg) -> None:
            self.starts.append(LiveStartRequest.model_validate_json(msg.data))
            await asyncio.sleep(self.delay)
            reply = LiveStartReply(
                accepted=self.accept,
                reason=self.reason,
                width=1280,
                height=720,
                max_fps=5,
                handoff=self.handoff,
            )
            await msg.respond(reply.model_dump_json().encode())

        async def on_stop(msg: Msg) -> None:
            self.stops.append(LiveStop.model_validate_json(msg.data))

        async def on_input(msg: Msg) -> None:
            self.inputs.append(LiveInput.model_validate_json(msg.data))

        self.subs = [
            await self.nc.subscribe(subjects.live_start(self.task_id, WORKER), cb=on_start),
            await self.nc.subscribe(subjects.live_stop(self.task_id, WORKER), cb=on_stop),
            await self.nc.subscribe(subjects.live_input(self.task_id, WORKER), cb=on_input),
        ]
        await self.nc.flush()

    async def gone(self) -> None:
        """The attempt ended without a word (a crashed worker): nobody answers any more."""
        for sub in self.subs:
            await sub.unsubscribe()
        self.subs = []
        await self.nc.flush()

    async def frame(self, size: int = 64) -> int:
        # random bytes, like a JPEG's: per-message deflate must not shrink them away
        data = base64.b64encode(self.seq.to_bytes(4, "big") + os.urandom(size)).decode()
        frame = LiveFrame(
            task_id=self.task_id,
            attempt=self.attempt,
            seq=self.seq,
            ts=1.0,
            width=1280,
            height=720,
            data=data,
        )
        await self.nc.publish(subjects.live_frames(self.task_id, WORKER), frame.model_dump_json().encode())
        self.seq += 1
        return self.seq - 1

    async def handing_off(self, waiting: bool, message: str = "") -> None:
        notice = LiveHandoff(task_id=self.task_id, attempt=self.attempt, waiting=waiting, message=message)
        await self.nc.publish(subjects.live_frames(self.task_id, WORKER), notice.model_dump_json().encode())

    async def ended(self) -> None:
        ended = LiveEnded(task_id=self.task_id, attempt=self.attempt)
        await self.nc.publish(subjects.live_frames(self.task_id, WORKER), ended.model_dump_json().encode())

    def watchers(self) -> set[str]:
        return {s.watcher for s in self.starts}

"""The chaos suite's lean worker: the benchmark worker (tests/bench/bench_worker.py, the real worker protocol
without a browser) with a task that takes a while, so a kill -9 finds tasks mid-run, and with the errors a
restarted NATS or scheduler causes survived the way the real worker survives them (retry; a message not
acked is redelivered when its lease ends). It keeps count of what it saw in `CHAOS_COUNTS_FILE`, rewritten
after every change so a kill -9 loses nothing but the last task's.

Run as `python -m tests.chaos.protocol_worker` with NATS_URL, WORKER_KEY, WORKER_ID, CHAOS_SLOTS,
CHAOS_TASK_SECONDS and CHAOS_COUNTS_FILE.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

from browserfleet_core.messaging import RpcClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from tests.bench.bench_worker import BenchWorker, connect_as_worker, stop_on_signals


class ChaosWorker(BenchWorker):
    result: ClassVar[dict[str, Any]] = {"chaos": True}
    claim_delivery = True

    def __init__(
        self,
        js: JetStreamContext,
        rpc: RpcClient,
        key: str,
        worker_id: str,
        slots: int,
        task_seconds: float,
        counts_file: Path,
    ) -> None:
        super().__init__(js, rpc, key, worker_id, slots)
        self.task_seconds = task_seconds
        self.counts_file = counts_file
        self.counts: Counter[str] = Counter()

    def note(self, what: str) -> None:
        self.counts[what] += 1
        tmp = self.counts_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.counts))
        tmp.replace(self.counts_file)

    async def pull(self, priority: str, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await super().pull(priority, stop)
            except Exception:  # the bus went away under a pull: as the real worker, try again
                self.note("pull_errors")
                await asyncio.sleep(0.5)

    async def run(self, msg: Msg) -> None:
        try:
            await super().run(msg)
        except Exception:  # not acked: the message comes back when its lease ends
            self.note("errors")


async def main() -> None:
    stop = stop_on_signals()
    nc = await connect_as_worker("chaos-worker")
    worker = ChaosWorker(
        nc.jetstream(),
        RpcClient(nc, timeout=10),
        os.environ["WORKER_KEY"],
        os.environ["WORKER_ID"],
        int(os.environ.get("CHAOS_SLOTS", "16")),
        float(os.environ.get("CHAOS_TASK_SECONDS", "0.5")),
        Path(os.environ["CHAOS_COUNTS_FILE"]),
    )
    worker.note("starts")
    await worker.serve(stop)
    with contextlib.suppress(Exception):
        await nc.drain()


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())

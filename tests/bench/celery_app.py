"""The peer: a Celery app on a Redis broker with the Redis result backend on, and a no-op task.

`acks_late` matches the platform's guarantee (a task message is acknowledged only after its outcome is
stored); everything else is Celery's default. The task returns the time it started so the benchmark can
measure submit → start the same way it does for the platform.
"""

from __future__ import annotations

import os
import time

from celery import Celery

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6399/0")

app = Celery("bench", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    task_acks_late=True,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_default_queue="bench",
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="bench.noop")
def noop() -> float:
    return time.time()

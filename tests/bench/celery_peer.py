"""Celery + Redis under the same control-plane workload: burst throughput and steady-rate latencies.

Starts its own `redis-server` on a free 127.0.0.1 port (never 6379) and a Celery worker process
(prefork, one child per core), then stops both. A pattern subscription on the result backend's channels
timestamps each result as it becomes visible to a client, the analogue of reading `task.completed`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from typing import Any

from browserfleet_devkit.embedded import free_port
from browserfleet_devkit.processes import stop_process

from .common import ROOT, Sizes, burst_figures, percentiles


def ensure_redis() -> str | None:
    """Path of redis-server; installs Debian's package when root and missing; None if unavailable."""
    found = shutil.which("redis-server")
    if found or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    print("redis-server missing: installing it with apt-get", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "redis-server"], env=env, check=False, capture_output=True
    )
    return shutil.which("redis-server")


@contextmanager
def redis_server(binary: str) -> Any:
    port = free_port()
    assert port != 6379
    with tempfile.TemporaryDirectory(prefix="bf-bench-redis-") as data:
        proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                data,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        client = redis.Redis(host="127.0.0.1", port=port)
        try:
            for _ in range(100):
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            client.close()
            proc.terminate()
            proc.wait(10)


class ResultWatch:
    """Timestamps results as the Redis backend publishes them (`celery-task-meta-<id>` channels)."""

    def __init__(self, url: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.psubscribe("celery-task-meta-*")
        self.done: dict[str, float] = {}
        self.started: dict[str, float] = {}
        self._cond = threading.Condition()
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop:
            msg = self.pubsub.get_message(timeout=0.2)
            if not msg:
                continue
            now = time.time()
            doc = json.loads(msg["data"])
            if doc.get("status") != "SUCCESS":
                continue
            with self._cond:
                self.done.setdefault(doc["task_id"], now)
                self.started.setdefault(doc["task_id"], float(doc["result"]))
                self._cond.notify_all()

    def wait_for(self, ids: set[str], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not ids <= self.done.keys():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.5))
        return True

    def close(self) -> None:
        self._stop = True
        self.thread.join(2)
        self.pubsub.close()
        self.client.close()


def _worker(url: str, concurrency: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "BENCH_REDIS_URL": url}
    return subprocess.Popen(
        [
            sys.executable, "-m", "celery", "-A", "tests.bench.celery_app", "worker",
            "-c", str(concurrency), "-P", "prefork", "-Q", "bench", "-l", "WARNING",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip


def run(sizes: Sizes) -> tuple[dict[str, Any] | None, str | None]:
    binary = ensure_redis()
    if not binary:
        return None, "Celery peer skipped: no redis-server (install it: apt-get install redis-server)"
    concurrency = os.cpu_count() or 1
    with redis_server(binary) as url:
        os.environ["BENCH_REDIS_URL"] = url
        from . import celery_app

        celery_app.app.conf.broker_url = url
        celery_app.app.conf.result_backend = url
        worker = _worker(url, concurrency)
        watch = ResultWatch(url)
        try:
            submitted: dict[str, float] = {}

            def submit() -> str:
                t0 = time.time()
                r = celery_app.noop.apply_async()
                submitted[r.id] = t0
                return str(r.id)

            warm = {submit() for _ in range(20)}
            if not watch.wait_for(warm, 60):
                raise RuntimeError("Celery warm-up tasks did not finish")
            # burst
            first = time.time()
            ids = {submit() for _ in range(sizes.burst_tasks)}
            accepted_at = time.time()
            complete = watch.wait_for(ids, max(120.0, sizes.burst_tasks / 20))
            burst = burst_figures(sizes.burst_tasks, ids, watch.done, complete, first, accepted_at)
            time.sleep(1.0)
            # steady
            total = int(sizes.steady_rate * sizes.steady_seconds)
            steady_ids: set[str] = set()
            t0 = time.monotonic()
            for i in range(total):
                delay = t0 + i / sizes.steady_rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                steady_ids.add(submit())
            offered_for = time.monotonic() - t0
            complete = watch.wait_for(steady_ids, 120)
            steady = {
                "offered_rate_per_s": sizes.steady_rate,
                "seconds": sizes.steady_seconds,
                "tasks": total,
                "accepted": len(steady_ids),
                "achieved_submit_rate_per_s": round(len(steady_ids) / offered_for, 1),
                "all_completed": complete,
                "submit_to_start": percentiles(
                    [watch.started[i] - submitted[i] for i in steady_ids if i in watch.started]
                ),
                "submit_to_completed": percentiles(
                    [watch.done[i] - submitted[i] for i in steady_ids if i in watch.done]
                ),
            }
            return {
                "burst": burst,
                "steady": steady,
                "worker": f"celery prefork -c {concurrency}, acks_late, Redis result backend",
            }, None
        finally:
            watch.close()
            stop_process(worker, 20)

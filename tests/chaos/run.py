"""One chaos run: the platform as `make dev` runs it (devstack.Platform, supervised), tasks submitted through
the gateway at a steady rate the whole time, workers taking them, and a webhook endpoint (the receiver
stand-in) subscribed to `task.*`. The faults come one at a time; after each, the run waits until every
task submitted so far has ended and every one of their events has reached the receiver, and counts.

Workers: two lean protocol workers (protocol_worker.py: the real task protocol, no browser) in every run,
restarted by the run after a kill as a Deployment would; the full run adds the dev stack's own Playwright
worker with real Chromium (supervised by the dev stack), which takes its share of the tasks and is the one
the worker kill hits there.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
from browserfleet_contracts import endpoints
from browserfleet_contracts.common import Actor
from browserfleet_contracts.task_admin import GetTaskAttemptsRequest, TaskAttemptPublic
from browserfleet_contracts.tasks import GetTaskRequest, TaskPublic
from browserfleet_contracts.workers import ListWorkersRequest, WorkerPublic
from browserfleet_core.errors import ServiceError
from browserfleet_core.messaging import RpcClient
from browserfleet_core.streams import ensure_pool_consumers
from browserfleet_devkit.devstack import READY_PROBES, Platform
from browserfleet_devkit.processes import stop_process
from browserfleet_devkit.supervisor import CrashPolicy
from nats.aio.client import Client as NatsClient

from tests.bench.common import ROOT
from tests.bench.site import Site
from tests.bench.stack import BENCH_ENV, login, worker_key

from .ledger import Ledger, Submitter
from .receiver import Receiver


@dataclass(frozen=True)
class Sizes:
    """The defaults are the full run's; `quick` is the test's."""

    rate: float = 3.0  # tasks submitted per second, the whole run long
    task_seconds: float = 1.0  # how long a protocol worker's task takes (so a kill finds some mid-run)
    lease_seconds: float = 10.0  # the TASKS consumers' ack_wait: how soon a dead worker's task is given again
    lead_seconds: float = 20.0  # load before each fault
    receiver_down_seconds: float = 180.0
    # WEBHOOK_RETRY_SCHEDULE: compressed, so minutes of outage fit the run
    webhook_schedule: str = "0,5,15,30,60,60,60,60,60,60,60,60,60,60"
    webhook_cooldown: float = 15.0  # WEBHOOK_CIRCUIT_COOLDOWN_SECONDS
    settle_cap: float = 300.0  # per phase: the run moves on to the next fault after this long, pending or not
    final_cap: float = 1800.0  # at the end: what has not ended (been delivered) by then is lost (missing)
    chromium_worker: bool = True
    protocol_workers: int = 2

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            rate=2.0,
            task_seconds=0.3,
            lease_seconds=3.0,
            lead_seconds=1.0,
            receiver_down_seconds=5.0,
            webhook_schedule="0,1,1,2,2,2,2,2,2,2,2,2",
            webhook_cooldown=2.0,
            settle_cap=90.0,
            final_cap=600.0,
            chromium_worker=False,
        )

    @classmethod
    def full(cls) -> Sizes:
        return cls()


@dataclass
class ProtocolWorkerProc:
    """`python -m tests.chaos.protocol_worker` with a worker identity of its own."""

    label: str
    key: str
    worker_id: str
    env: dict[str, str]
    counts_file: Path
    log: IO[bytes]
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.chaos.protocol_worker"],
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, 15)

    def counts(self) -> dict[str, int]:
        import json

        with contextlib.suppress(OSError, ValueError):
            return dict(json.loads(self.counts_file.read_text()))
        return {}


@dataclass
class Fault:
    name: str  # as the report names it
    target: str  # the unit the supervisor knows it by (or a protocol worker's label, or "receiver")
    inject: Callable[[], Awaitable[None]]
    answering: Callable[[], Awaitable[bool]] | None = None  # is the target serving again?


@dataclass
class ChaosRun:
    sizes: Sizes
    out: Path
    log_lines: list[str] = field(default_factory=list)
    phases: list[dict[str, Any]] = field(default_factory=list)

    async def run(self) -> dict[str, Any]:
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="bf-chaos-", ignore_cleanup_errors=True) as tmp:
            home = Path(tmp) / "home"
            home.mkdir()
            os.chmod(tmp, 0o755)  # noqa: S103 - embedded PostgreSQL runs as its own user when we are root
            os.chmod(home, 0o755)  # noqa: S103
            self.out.mkdir(parents=True, exist_ok=True)
            logpath = self.out / "chaos.log"
            with logpath.open("w") as logfile, Site() as site:
                self._logfile = logfile
                self.platform = self._platform(home)
                try:
                    await asyncio.to_thread(self.platform.start)
                except BaseException:
                    print("\n".join(self.log_lines[-200:]), file=sys.stderr)
                    raise
                ready = time.monotonic() - started
                self._say(f"platform ready in {ready:.1f}s at {self.platform.gateway_url}")
                try:
                    figures = await self._chaos(Path(tmp), site.url, logfile)
                finally:
                    await asyncio.to_thread(self.platform.stop)
        figures["platform_ready_seconds"] = round(ready, 1)
        figures["load_average_at_end"] = round(os.getloadavg()[0], 1)
        figures["wall_seconds"] = round(time.monotonic() - started, 1)
        return figures

    def _platform(self, home: Path) -> Platform:
        s = self.sizes

        async def short_leases(nc: NatsClient) -> None:
            # before any service: ensure_pool_consumers keeps an existing consumer's config
            await ensure_pool_consumers(nc.jetstream(), ack_wait=s.lease_seconds)

        env = dict(BENCH_ENV)
        env.update(
            WEBHOOK_RETRY_SCHEDULE=s.webhook_schedule,
            WEBHOOK_CIRCUIT_COOLDOWN_SECONDS=str(s.webhook_cooldown),
            WEBHOOK_TIMEOUT_SECONDS="3",  # also the lease of a delivery in flight when webhooks is killed
            WEBHOOK_POLL_SECONDS="0.5",
            LEASE_EXTEND_SECONDS="1",
            RETRY_BACKOFF_SECONDS="0.5",
            ADMISSION_POLL_SECONDS="0.5",
            UPDATE_REDELIVERY_SECONDS="1",
            WORKER_SLOTS="2",
        )
        return Platform(
            home,
            workers=1 if s.chromium_worker else 0,
            env=env,
            output=self._output,
            prepare=short_leases,
            supervise=True,
            # a kill is one crash; the run's faults never come five to a minute for one unit
            crash_policy=CrashPolicy(backoff=(0.5, 1.0, 2.0, 4.0)),
        )

    def _output(self, line: str) -> None:
        self.log_lines.append(line)
        if len(self.log_lines) > 2000:
            del self.log_lines[:1000]
        with contextlib.suppress(Exception):
            self._logfile.write(line + "\n")

    def _say(self, text: str) -> None:
        print(f"chaos | {text}", flush=True)
        self._output(f"{'chaos':>16} | {text}")

    # --- the run ----------------------------------------------------------------------------------
    async def _chaos(self, tmp: Path, site_url: str, logfile: IO[str]) -> dict[str, Any]:
        p, s = self.platform, self.sizes
        assert p.bootstrap is not None
        self.org_id = p.bootstrap.org_id
        self.actor = Actor(org_id=self.org_id, role="admin")
        self.nc = await p.connect_admin("chaos")
        self.rpc = RpcClient(self.nc, timeout=10)
        token = await asyncio.to_thread(login, p)
        admin = httpx.AsyncClient(
            base_url=p.gateway_url, headers={"authorization": f"Bearer {token}"}, timeout=30
        )
        self.receiver = await asyncio.to_thread(Receiver)
        mirror = asyncio.create_task(self.receiver.mirror(stop_mirror := asyncio.Event()))
        self.workers: list[ProtocolWorkerProc] = []
        worker_log = (tmp / "workers.log").open("wb")
        stop_load = asyncio.Event()
        try:
            r = await admin.post(
                "/admin/webhooks",
                json={"url": self.receiver.url, "events": ["task.*"], "description": "chaos receiver"},
            )
            r.raise_for_status()
            await asyncio.to_thread(self.receiver.set_secret, r.json()["secret"])
            r = await admin.post(
                "/admin/api-keys", json={"name": "chaos", "scopes": ["tasks:write", "tasks:read"]}
            )
            r.raise_for_status()
            api_key = r.json()["key"]
            for i in range(s.protocol_workers):
                reg = await worker_key(p, f"chaos-worker-{i + 1}")
                assert p.nats_url
                w = ProtocolWorkerProc(
                    f"protocol-worker-{i + 1}",
                    reg.worker_key,
                    reg.worker_id,
                    {
                        **os.environ,
                        "NATS_URL": p.nats_url,
                        "WORKER_KEY": reg.worker_key,
                        "WORKER_ID": reg.worker_id,
                        "CHAOS_SLOTS": "16",
                        "CHAOS_TASK_SECONDS": str(s.task_seconds),
                        "CHAOS_COUNTS_FILE": str(tmp / f"worker-{i + 1}.json"),
                    },
                    tmp / f"worker-{i + 1}.json",
                    worker_log,
                )
                w.start()
                self.workers.append(w)
            self.ledger = Ledger(self.nc, self.org_id)
            await self.ledger.start()
            body = {
                "max_attempts": 10,
                "steps": [
                    {"action": "navigate", "url": site_url},
                    {"action": "extract", "name": "title", "selector": "title"},
                ],
            }
            self.submitter = Submitter(
                p.gateway_url, api_key, body, f"chaos-{int(time.time())}", give_up_after=s.settle_cap
            )
            await self.submitter.start()
            load = asyncio.create_task(self.submitter.pace(s.rate, stop_load))
            await asyncio.sleep(s.lead_seconds)
            baseline = await self._settle(len(self.submitter.submissions))
            self._say(f"load running at {s.rate:g} tasks/s; before any fault: {baseline}")
            for fault in await self._faults():
                self.phases.append(await self._phase(fault))
            stop_load.set()
            await load
            await self.submitter.drain()
            final = await self._settle(len(self.submitter.submissions), s.final_cap)
            return await self._figures(final)
        finally:
            stop_load.set()
            with contextlib.suppress(Exception):
                await self.submitter.close()
            with contextlib.suppress(Exception):
                await self.ledger.stop()
            for w in self.workers:
                w.stop()
            worker_log.close()
            stop_mirror.set()
            with contextlib.suppress(Exception):
                await mirror
            self.receiver.close()
            await admin.aclose()
            await self.nc.close()

    async def _faults(self) -> list[Fault]:
        p = self.platform
        faults: list[Fault] = []
        if self.sizes.chromium_worker:
            faults.append(Fault("kill -9 the Chromium worker mid-task", "worker", self._kill_chromium_worker))
        victim = self.workers[0]
        faults.append(
            Fault(f"kill -9 a worker ({victim.label})", victim.label, lambda: self._kill_protocol(victim))
        )
        for service in ("scheduler", "webhooks", "worker-gateway"):
            faults.append(
                Fault(
                    f"kill -9 {service}", service, self._killer(service), self._answers(READY_PROBES[service])
                )
            )
        nats = p.embedded_nats
        assert nats is not None and nats.proc is not None
        faults.append(Fault("restart NATS (kill -9)", "nats", self._kill_nats, self._nats_answers))
        faults.append(
            Fault(
                "restart PostgreSQL (kill -9 the postmaster)",
                "postgres",
                self._kill_postgres,
                self._pg_answers,
            )
        )
        faults.append(
            Fault(
                f"webhook receiver down {self.sizes.receiver_down_seconds:.0f} s",
                "receiver",
                self._receiver_down,
            )
        )
        return faults

    # --- faults ---
    def _killer(self, service: str) -> Callable[[], Awaitable[None]]:
        async def kill() -> None:
            sp = next(sp for sp in self.platform.processes if sp.name == service)
            os.kill(sp.proc.pid, signal.SIGKILL)

        return kill

    async def _kill_protocol(self, w: ProtocolWorkerProc) -> None:
        w.kill()
        self._say(f"{w.label} killed; started again in 1 s, as a Deployment would")
        await asyncio.sleep(1.0)
        w.start()
        w.restarts += 1

    async def _kill_chromium_worker(self) -> None:
        p = self.platform
        listed: list[WorkerPublic] = await self.rpc.call(
            endpoints.Workers.LIST, ListWorkersRequest(actor=self.actor)
        )
        worker_id = next(w.id for w in listed if w.name in p.worker_names)
        await self._until(lambda: bool(self.ledger.running_on(worker_id)), 60)  # a kill mid-task
        sp = next(sp for sp in p.processes if sp.name == "worker")
        os.kill(sp.proc.pid, signal.SIGKILL)

    async def _kill_nats(self) -> None:
        nats = self.platform.embedded_nats
        assert nats is not None and nats.proc is not None
        os.kill(nats.proc.pid, signal.SIGKILL)

    async def _kill_postgres(self) -> None:
        pg = self.platform.embedded_postgres
        assert pg is not None
        pid = pg.postmaster_pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)

    async def _receiver_down(self) -> None:
        await asyncio.to_thread(self.receiver.down)

    def _answers(self, subject: str) -> Callable[[], Awaitable[bool]]:
        async def probe() -> bool:
            try:
                await self.nc.request(subject, b"{}", timeout=1)
            except Exception:
                return False
            return True

        return probe

    async def _nats_answers(self) -> bool:
        try:
            await self.nc.jetstream().account_info()
        except Exception:
            return False
        return True

    async def _pg_answers(self) -> bool:
        import psycopg

        def ping() -> bool:
            try:
                with psycopg.connect(self.platform.database_url or "", connect_timeout=1) as conn:
                    conn.execute("SELECT 1")
            except psycopg.Error:
                return False
            return True

        return await asyncio.to_thread(ping)

    # --- phases ---
    async def _phase(self, fault: Fault) -> dict[str, Any]:
        s, sub, inbox = self.sizes, self.submitter, self.receiver.inbox
        await asyncio.sleep(s.lead_seconds)
        errors_before = sum(sub.errors.values())
        dup_before, deliveries_before = inbox.duplicates, inbox.deliveries
        accepted = sub.accepted()
        in_flight = {t for t in accepted if not self.ledger.ends(t)}
        mark = len(sub.submissions)
        self._say(f"{fault.name}: {len(in_flight)} task(s) in flight")
        injected = time.time()
        await fault.inject()
        if fault.target == "worker":  # its kill came last, once a task was running on it
            injected = time.time()
        record: dict[str, Any] = {
            "fault": fault.name,
            "target": fault.target,
            "tasks_in_flight": len(in_flight),
            # the machine's 1-minute load average: recovery times stretch with it (a busy CI box, other suites)
            "load_average": round(os.getloadavg()[0], 1),
        }
        if fault.target == "receiver":
            await asyncio.sleep(s.receiver_down_seconds)
            backlog = set(self.ledger.deliverable(set(sub.accepted()))) - set(inbox.first_seen)
            await asyncio.to_thread(self.receiver.up)
            back = time.time()
            record["down_seconds"] = round(back - injected, 1)
            record["backlog_when_back"] = len(backlog)
            await self._until(lambda: backlog <= set(inbox.first_seen), s.settle_cap)
            record["backlog_delivered_after_s"] = round(time.time() - back, 2)
            self._say(
                f"receiver back after {record['down_seconds']} s; its backlog of {len(backlog)} event(s) "
                f"delivered {record['backlog_delivered_after_s']} s later"
            )
        if fault.answering is not None:
            await self._until_async(fault.answering, s.settle_cap)
            record["answering_after_s"] = round(time.time() - injected, 2)
        # end to end again: the first task submitted after the fault has ended
        await self._until(lambda: len(sub.submissions) > mark, s.settle_cap)
        probe = sub.submissions[mark]
        await self._until(
            lambda: probe.task_id is not None and bool(self.ledger.ends(probe.task_id)), s.settle_cap
        )
        ended = self.ledger.ends(probe.task_id) if probe.task_id else []
        if ended:
            record["recovered_after_s"] = round(ended[0].received_at - injected, 2)
        if fault.target == "webhooks":
            after = [t for t in list(inbox.first_seen.values()) if t > injected]
            record["webhooks_delivering_after_s"] = round(min(after) - injected, 2) if after else None
        if in_flight:
            await self._until(lambda: all(self.ledger.ends(t) for t in in_flight), s.settle_cap)
            last = max(
                (self.ledger.ends(t)[0].received_at for t in in_flight if self.ledger.ends(t)),
                default=injected,
            )
            record["in_flight_ended_after_s"] = round(last - injected, 2)
        # asked this late: a worker's restart is waited for by nothing above (a service's is, by `answering`)
        restarted = self._restarted_at(fault.target, injected)
        if restarted is not None:
            record["restarted_after_s"] = round(restarted - injected, 2)
        settle = await self._settle(len(sub.submissions))
        # not yet is not never: what is still pending here is counted lost or missing only at the end
        settle["not_ended_yet"] = settle.pop("lost")
        settle["events_not_yet_received"] = settle.pop("events_missing")
        settle["events_not_yet_received_by_type"] = settle.pop("events_missing_by_type")
        record.update(settle)
        record["settled_after_s"] = round(time.time() - injected, 2)
        record["submit_retries"] = sum(sub.errors.values()) - errors_before
        record["webhook_deliveries"] = inbox.deliveries - deliveries_before
        record["webhook_duplicates_suppressed"] = inbox.duplicates - dup_before
        self._say(
            f"{fault.name}: recovered after {record.get('recovered_after_s')} s, settled after "
            f"{record['settled_after_s']} s; not ended yet {settle['not_ended_yet']}, completed twice "
            f"{settle['completed_twice']}, events not yet at the receiver {settle['events_not_yet_received']}"
        )
        return record

    def _restarted_at(self, target: str, since: float) -> float | None:
        for w in self.workers:
            if w.label == target:
                return None  # the run restarts it itself, after a fixed second
        sup = self.platform.supervisor
        if sup is None:
            return None
        for r in sup.history:
            if r.unit == target and r.crashed_at >= since - 1 and r.restarted_at is not None:
                return r.restarted_at
        return None

    async def _settle(self, upto: int, cap: float | None = None) -> dict[str, Any]:
        """Every task of the first `upto` submissions accepted and ended, and every event of theirs received
        (or `cap` ran out: what is missing then is counted)."""
        subs = self.submitter.submissions[:upto]
        inbox = self.receiver.inbox

        def done() -> bool:
            if any(x.task_id is None for x in subs):
                return False
            ids = {x.task_id for x in subs if x.task_id}
            if not all(self.ledger.ends(t) for t in ids):
                return False
            return set(self.ledger.deliverable(ids)) <= set(inbox.first_seen)

        await self._until(done, self.sizes.settle_cap if cap is None else cap)
        ids = {x.task_id for x in subs if x.task_id}
        expected = self.ledger.deliverable(ids)
        missing: dict[str, int] = {}
        for event_id in set(expected) - set(inbox.first_seen):
            missing[expected[event_id]] = missing.get(expected[event_id], 0) + 1
        return {
            "tasks_so_far": len(subs),
            "not_accepted": sum(1 for x in subs if x.task_id is None),
            "lost": sum(1 for t in ids if not self.ledger.ends(t)),
            "completed_twice": sum(1 for t in ids if self.ledger.completions(t) > 1),
            "ended_twice": sum(1 for t in ids if len(self.ledger.ends(t)) > 1),
            "events_expected": len(expected),
            "events_missing": sum(missing.values()),
            "events_missing_by_type": missing,
        }

    async def _until(self, probe: Callable[[], bool], cap: float) -> bool:
        deadline = time.monotonic() + cap
        while not probe():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.1)
        return True

    async def _until_async(self, probe: Callable[[], Awaitable[bool]], cap: float) -> bool:
        deadline = time.monotonic() + cap
        while not await probe():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.1)
        return True

    # --- the figures --------------------------------------------------------------------------------
    async def _figures(self, final: dict[str, Any]) -> dict[str, Any]:
        """The run's totals, and the scheduler's own word on every task (its row and its attempts)."""
        accepted = self.submitter.accepted()
        statuses: dict[str, int] = {}
        attempts_total = completed_attempts_twice = retried = 0
        sem = asyncio.Semaphore(16)
        read_errors: dict[str, int] = {}

        async def check(task_id: str) -> None:
            nonlocal attempts_total, completed_attempts_twice, retried
            async with sem:
                try:
                    task: TaskPublic = await self.rpc.call(
                        endpoints.Scheduler.GET_TASK, GetTaskRequest(actor=self.actor, task_id=task_id)
                    )
                    attempts: list[TaskAttemptPublic] = await self.rpc.call(
                        endpoints.Scheduler.TASK_ATTEMPTS,
                        GetTaskAttemptsRequest(actor=self.actor, task_id=task_id),
                    )
                except ServiceError as exc:  # the scheduler failed a read: a finding, kept in the report
                    read_errors[str(exc)] = read_errors.get(str(exc), 0) + 1
                    statuses["unreadable"] = statuses.get("unreadable", 0) + 1
                    return
            statuses[task.status] = statuses.get(task.status, 0) + 1
            attempts_total += len(attempts)
            retried += len(attempts) > 1
            completed_attempts_twice += sum(1 for a in attempts if a.status == "completed") > 1

        await asyncio.gather(*(check(t) for t in accepted))
        counts: dict[str, int] = {}
        for w in self.workers:
            for k, v in w.counts().items():
                counts[k] = counts.get(k, 0) + int(v)
        inbox = self.receiver.inbox.snapshot()
        sup = self.platform.supervisor
        kills = len(self.phases) - sum(1 for ph in self.phases if ph["target"] == "receiver")
        totals = {
            "tasks": len(self.submitter.submissions),
            "accepted": len(accepted),
            "lost": final["lost"],
            "not_accepted": final["not_accepted"],
            "completed_twice_on_events": final["completed_twice"],
            "ended_twice_on_events": final["ended_twice"],
            "completed_twice_in_scheduler": completed_attempts_twice,
            "statuses": statuses,
            "attempts": attempts_total,
            "tasks_retried_after_a_fault": retried,
            "retried_submits_same_task": sum(1 for x in self.submitter.submissions if x.tries > 1),
            "retried_submit_got_another_task": self.submitter.other_task_for_key,
            "submit_errors": dict(self.submitter.errors),
            "kills": kills,
            "restarts_by_the_dev_stack": [
                {"unit": r.unit, "how": r.how, "restart_seconds": round(r.restarted_at - r.crashed_at, 2)}
                for r in (sup.history if sup else [])
                if r.restarted_at is not None
            ],
            "dev_stack_gave_up": sup.gave_up if sup else None,
            "protocol_workers": counts,
            "duplicate_dispatches_refused_by_claim": counts.get("claims_refused", 0),
            "webhooks": {
                **inbox,
                "events_expected": final["events_expected"],
                "events_missing": final["events_missing"],
            },
            "ledger_redeliveries_ignored": self.ledger.redelivered_to_ledger,
            "scheduler_read_errors": read_errors,
        }
        totals["ok"] = (
            totals["lost"] == 0
            and totals["not_accepted"] == 0
            and totals["completed_twice_on_events"] == 0
            and totals["ended_twice_on_events"] == 0
            and totals["completed_twice_in_scheduler"] == 0
            and totals["retried_submit_got_another_task"] == 0
            and statuses == {"completed": len(accepted)}
            and inbox["bad_signatures"] == 0
            and final["events_missing"] == 0
            and totals["dev_stack_gave_up"] is None
        )
        return {"totals": totals, "faults": self.phases}

"""The organization's side of a task: its policy (from auth, cached briefly) and its security events.

A task runs under its own settings AND its organization's policy (README "Safe browsing"). The worker asks
auth (`svc.auth.org_policy`, authenticated by its worker key) once per organization every few seconds; if
auth cannot answer, the task fails with that cause instead of running without the organization's
restrictions.

Requests safe browsing refuses are reported on TASK_UPDATES (`kind="security"`, one each for the first
EVENTS_PER_ATTEMPT of an attempt, then one summary; Nats-Msg-Id `<task>:<attempt>:security:<n>` so a
re-publication is dropped by JetStream's duplicate window). A worker may not publish on EVENTS: the
scheduler emits each as `security.request_blocked` for the task's organization once it has checked that
this worker holds the attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping

from browserfleet_contracts import endpoints, subjects
from browserfleet_contracts.auth import OrgPolicy, WorkerOrgPolicyRequest
from browserfleet_contracts.events import RequestBlockedData
from browserfleet_contracts.tasks import TaskDispatch, TaskUpdateMessage
from browserfleet_core.errors import ServiceError
from browserfleet_core.messaging import RpcClient
from nats.js import JetStreamContext

from .secret_values import Masker

log = logging.getLogger(__name__)

EVENTS_PER_ATTEMPT = 20
SUMMARY_HOSTS = 20
PUBLISH_ATTEMPTS = 3
PUBLISH_TIMEOUT_SECONDS = 5.0


class OrgPolicyUnavailable(Exception):
    """The organization's policy could not be read: the task fails with this message."""


class OrgPolicies:
    """Per-organization policy cache of one worker. A policy change reaches new tasks within `ttl` seconds."""

    def __init__(
        self,
        rpc: RpcClient,
        worker_key: str,
        *,
        ttl_seconds: float = 5.0,  # WorkerSettings.org_policy_cache_seconds
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rpc = rpc
        self.worker_key = worker_key
        self.ttl = ttl_seconds
        self._clock = clock
        self._cache: dict[str, tuple[float, OrgPolicy]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def get(self, org_id: str) -> OrgPolicy:
        hit = self._cache.get(org_id)
        if hit is not None and hit[0] > self._clock():
            return hit[1]
        lock = self._locks.setdefault(org_id, asyncio.Lock())
        async with lock:  # tasks of one org starting together ask once
            hit = self._cache.get(org_id)
            if hit is not None and hit[0] > self._clock():
                return hit[1]
            try:
                policy: OrgPolicy = await self.rpc.call(
                    endpoints.Auth.ORG_POLICY,
                    WorkerOrgPolicyRequest(org_id=org_id, worker_key=self.worker_key),
                )
            except ServiceError as exc:
                raise OrgPolicyUnavailable(
                    f"the organization's policy could not be read, so the task did not run: {exc.message}"
                ) from None
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[org_id] = (self._clock() + self.ttl, policy)
            return policy


def secret_names(task: TaskDispatch, org: OrgPolicy) -> set[str]:
    """What the vault must release for `task`: its own references, plus the org proxy's when that proxy is
    the one used (the task names none)."""
    names = task.spec.secret_names()
    if task.spec.proxy is None and org.proxy is not None:
        names |= org.secret_names()
    return names


def block_kind(reason: str) -> str:
    if "allowed domains" in reason:
        return "domain"
    if "budget" in reason:
        return "budget"
    if "cannot resolve" in reason:
        return "dns"  # a name that does not resolve is a navigation error, not a security event
    return "address"


class SecurityEvents:
    """Reports one attempt's blocked requests on TASK_UPDATES, rate-limited; `close()` sends the summary."""

    def __init__(
        self,
        js: JetStreamContext,
        task: TaskDispatch,
        values: Mapping[str, str],
        *,
        worker_id: str,
        limit: int = EVENTS_PER_ATTEMPT,
    ) -> None:
        self.js = js
        self.task = task
        self.worker_id = worker_id
        self.mask = Masker(values.values())  # a host or path may carry a secret the task typed into a URL
        self.limit = limit
        self.sent = 0
        self.suppressed = 0
        self._hosts: dict[str, None] = {}
        self._pending: set[asyncio.Task[None]] = set()
        self._closed = False

    def blocked(self, host: str, reason: str, url: str | None, kind: str) -> None:
        """Called synchronously by the guard proxy; the publication runs in the background."""
        if self._closed or kind not in ("domain", "address", "budget"):
            return
        host, reason = self.mask.text(host), self.mask.text(reason)
        if self.sent >= self.limit:
            self.suppressed += 1
            if len(self._hosts) < SUMMARY_HOSTS:
                self._hosts.setdefault(host)
            return
        self.sent += 1
        data = RequestBlockedData(
            task_id=self.task.task_id,
            attempt=self.task.attempt,
            seq=self.sent,
            kind=kind,
            host=host,
            reason=reason,
            url=self.mask.text(url) if url else None,
        )
        self._spawn(data, f"{self.sent}")

    def _spawn(self, data: RequestBlockedData, suffix: str) -> None:
        task = asyncio.get_running_loop().create_task(self._publish(data, suffix))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _publish(self, data: RequestBlockedData, suffix: str) -> None:
        task = self.task
        msg_id = subjects.update_msg_id(task.task_id, task.attempt, "security", suffix)
        update = TaskUpdateMessage(
            task_id=task.task_id,
            attempt=task.attempt,
            worker_id=self.worker_id,
            kind="security",
            security=data.model_dump(mode="json"),
        )
        payload = update.model_dump_json().encode()
        for attempt in range(1, PUBLISH_ATTEMPTS + 1):
            try:
                await self.js.publish(
                    subjects.task_update(self.worker_id, task.task_id),
                    payload,
                    stream=subjects.TASK_UPDATES_STREAM,
                    timeout=PUBLISH_TIMEOUT_SECONDS,
                    headers={"Nats-Msg-Id": msg_id},  # a retry that did land is dropped by JetStream
                )
                return
            except Exception as exc:
                if attempt == PUBLISH_ATTEMPTS:
                    log.warning("reporting blocked request %s failed: %s", msg_id, exc)
                    return
                await asyncio.sleep(0.2 * attempt)

    async def close(self) -> None:
        """Sends the summary (if anything was held back) and waits for what is in flight."""
        if self._closed:
            return
        self._closed = True
        if self.suppressed:
            summary = RequestBlockedData(
                task_id=self.task.task_id,
                attempt=self.task.attempt,
                seq=self.sent + 1,
                kind="summary",
                host="*",
                reason=f"{self.suppressed} more blocked request(s) of this attempt were not sent one by one",
                summary=True,
                suppressed=self.suppressed,
                hosts=list(self._hosts),
            )
            self._spawn(summary, "summary")
        if self._pending:
            with contextlib.suppress(Exception):
                await asyncio.wait(
                    set(self._pending), timeout=PUBLISH_ATTEMPTS * (PUBLISH_TIMEOUT_SECONDS + 1)
                )

"""Sends due deliveries: claim (short transaction), POST (no transaction open), record (short transaction).

Holding a row lock across an HTTP call would pin a database connection per in-flight webhook for up to
the timeout; instead a claim leases the row by pushing `next_attempt_at` past the request's deadline.
Replicas claim with SKIP LOCKED, so none sends what another has claimed; a replica that dies mid-request
leaves a lease that simply expires, and the delivery is retried (at-least-once: receivers deduplicate on
`webhook-id`). Everything a delivery needs is in its row, so a restart loses nothing: what was due while no
replica ran goes out at the first pass.

The same loop advances bulk replay jobs, one step per pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import timedelta

import httpx
from browserfleet_core.db import Database, utcnow
from browserfleet_core.outbox import OutboxRelay
from prometheus_client import Counter, Histogram

from . import deliveries, outcomes, repository, schedule, signing, signing_keys, targets
from .crypto import SecretBox
from .outcomes import Answer
from .settings import WebhooksSettings

log = logging.getLogger(__name__)

DELIVERY_ATTEMPTS = Counter(
    "browserfleet_webhook_delivery_attempts_total",
    "Webhook HTTP attempts by outcome: succeeded, failed (will retry), dead (gave up), lost (claim expired)",
    ["outcome"],
)
DELIVERY_LATENCY = Histogram(
    "browserfleet_webhook_delivery_latency_seconds",
    "Time from sending a webhook to the receiver's response status",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
DELIVERIES_CREATED = Counter(
    "browserfleet_webhook_deliveries_created_total", "Deliveries created from events (one per endpoint)"
)

USER_AGENT = "browserfleet-webhooks/1"
LEASE_MARGIN_SECONDS = 30.0


class Dispatcher:
    def __init__(self, db: Database, settings: WebhooksSettings, box: SecretBox, relay: OutboxRelay) -> None:
        self.db = db
        self.settings = settings
        self.box = box
        self.relay = relay
        # redirects are not followed: a 3xx could point anywhere, including past the private-target check
        self.client = httpx.AsyncClient(
            timeout=settings.webhook_timeout_seconds,
            follow_redirects=False,
            trust_env=False,
            limits=httpx.Limits(max_connections=settings.webhook_concurrency),
            headers={"user-agent": USER_AGENT},
        )
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def wake(self) -> None:
        """After-commit callback: new deliveries (or a replay job) exist, act now."""
        self._wake.set()

    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="webhook-dispatcher")

    async def stop(self) -> None:
        # the flag too: a cancellation a library swallows mid-request must not keep the loop alive
        self._stopping = True
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.client.aclose()

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.webhook_poll_seconds)
            self._wake.clear()
            try:
                await self.advance_jobs()
                while await self.run_once() >= self.settings.webhook_concurrency:
                    pass
            except Exception:
                log.exception("webhook dispatch pass failed; retrying")
                await asyncio.sleep(self.settings.webhook_poll_seconds)

    async def advance_jobs(self) -> None:
        """Advance replay jobs a step each until none waits (each step requeues a batch in one transaction)."""
        while await self.db.run(deliveries.advance_job, batch=self.settings.webhook_replay_batch):
            pass

    async def run_once(self) -> int:
        """Claim and send one batch of due deliveries; returns how many were claimed."""
        now = utcnow()
        lease = now + timedelta(seconds=self.settings.webhook_timeout_seconds + LEASE_MARGIN_SECONDS)
        async with self.db.transaction() as session:
            claimed = await repository.claim_due(
                session,
                now=now,
                lease_until=lease,
                limit=self.settings.webhook_concurrency,
                circuit_failures=self.settings.webhook_circuit_failures,
            )
            secrets = await signing_keys.signing_secrets(session, self.box, claimed, now)
        if claimed:
            results = await asyncio.gather(
                *(self._deliver(c, secrets[c.endpoint_id]) for c in claimed), return_exceptions=True
            )
            for result in results:
                if isinstance(result, BaseException):
                    log.error("recording a webhook attempt failed; its lease will expire", exc_info=result)
        return len(claimed)

    async def _send(self, claimed: repository.Claimed, secrets: list[str]) -> Answer:
        """POST one attempt; the whole exchange (connect, answer, excerpt) has WEBHOOK_TIMEOUT_SECONDS."""
        if not secrets:
            return Answer(
                None, None, "no signing secret for this endpoint (is WEBHOOK_MASTER_KEY the right one?)"
            )
        try:
            target = await targets.check(
                claimed.url, allow_private=self.settings.webhook_allow_private_targets
            )
        except targets.TargetRefused as exc:
            return Answer(None, None, f"refused: {exc}")
        headers = signing.headers(secrets, claimed.event_id, claimed.payload)
        url = httpx.URL(claimed.url)
        extensions: dict[str, str] = {}
        if target.address is not None:
            # connect to the address we checked, not to whatever DNS answers next
            headers["host"] = url.netloc.decode("ascii")
            if url.scheme == "https":
                extensions["sni_hostname"] = target.host
            url = url.copy_with(host=target.address)
        timeout = self.settings.webhook_timeout_seconds
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout):
                request = self.client.build_request(
                    "POST", url, content=claimed.payload, headers=headers, extensions=extensions
                )
                response = await self.client.send(request, stream=True)
                try:
                    excerpt = await self._excerpt(response)
                finally:
                    await response.aclose()
        except (TimeoutError, httpx.TimeoutException):
            return Answer(None, (time.perf_counter() - started) * 1000, f"timed out after {timeout:g}s")
        except httpx.HTTPError as exc:
            return Answer(None, (time.perf_counter() - started) * 1000, f"{type(exc).__name__}: {exc}")
        elapsed = (time.perf_counter() - started) * 1000
        DELIVERY_LATENCY.observe(elapsed / 1000)
        code = response.status_code
        error = None
        if 300 <= code < 400:
            error = f"receiver answered HTTP {code} (redirects are not followed)"
        elif not schedule.is_success(code):
            error = f"receiver answered HTTP {code}"
        retry_after = schedule.retry_after_seconds(response.headers.get("retry-after"), utcnow())
        return Answer(code, elapsed, error, excerpt, None if error is None else retry_after)

    async def _excerpt(self, response: httpx.Response) -> str | None:
        """The start of the answer, for the attempt log; the rest is never read."""
        limit = self.settings.webhook_response_excerpt_bytes
        if limit == 0:
            return None
        data = b""
        async for chunk in response.aiter_raw():
            data += chunk
            if len(data) >= limit:
                break
        return data[:limit].decode("utf-8", errors="replace") if data else None

    async def _deliver(self, claimed: repository.Claimed, secrets: list[str]) -> None:
        answer = await self._send(claimed, secrets)
        async with self.db.transaction() as session:
            status = await outcomes.record(session, self.relay, self.settings, claimed, answer, utcnow())
        DELIVERY_ATTEMPTS.labels(outcome=status or "lost").inc()
        if status != "succeeded":
            log.info(
                "webhook delivery %s attempt %d: %s (%s)",
                claimed.id,
                claimed.attempt,
                status or "lost",
                answer.error or "no error",
            )

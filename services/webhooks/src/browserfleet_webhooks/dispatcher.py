"""Sends due deliveries: claim (short transaction), POST (no transaction open), record (short transaction).

Holding a row lock across an HTTP call would pin a database connection per in-flight webhook for up to
the timeout; instead a claim leases the row by pushing `next_attempt_at` past the request's deadline.
Replicas claim with SKIP LOCKED, so none sends what another has claimed; a replica that dies mid-request
leaves a lease that simply expires, and the delivery is retried (at-least-once: receivers deduplicate on
`webhook-id`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import timedelta

import httpx
from browserfleet_core.db import Database, utcnow
from prometheus_client import Counter, Histogram

from . import repository, service, signing, targets
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
    def __init__(
        self, db: Database, settings: WebhooksSettings, *, client: httpx.AsyncClient | None = None
    ) -> None:
        self.db = db
        self.settings = settings
        # redirects are not followed: a 3xx could point anywhere, including past the private-target check
        self.client = client or httpx.AsyncClient(
            timeout=settings.webhook_timeout_seconds,
            follow_redirects=False,
            trust_env=False,
            limits=httpx.Limits(max_connections=settings.webhook_concurrency),
            headers={"user-agent": USER_AGENT},
        )
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def wake(self) -> None:
        """After-commit callback: new deliveries exist, send their first attempt now."""
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="webhook-dispatcher")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.client.aclose()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.webhook_poll_seconds)
            self._wake.clear()
            try:
                while await self.run_once() >= self.settings.webhook_concurrency:
                    pass
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("webhook dispatch pass failed; retrying")
                await asyncio.sleep(self.settings.webhook_poll_seconds)

    async def run_once(self) -> int:
        """Claim and send one batch of due deliveries; returns how many were claimed."""
        now = utcnow()
        lease = now + timedelta(seconds=self.settings.webhook_timeout_seconds + LEASE_MARGIN_SECONDS)
        async with self.db.transaction() as session:
            claimed = await repository.claim_due(
                session, now=now, lease_until=lease, limit=self.settings.webhook_concurrency
            )
        if claimed:
            results = await asyncio.gather(*(self._deliver(c) for c in claimed), return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    log.error("recording a webhook attempt failed; its lease will expire", exc_info=result)
        return len(claimed)

    async def _send(self, claimed: repository.Claimed) -> tuple[int | None, float | None, str | None]:
        """POST one attempt. Returns (status_code, latency_ms, error)."""
        try:
            target = await targets.check(
                claimed.url, allow_private=self.settings.webhook_allow_private_targets
            )
        except targets.TargetRefused as exc:
            return None, None, f"refused: {exc}"
        headers = signing.headers(claimed.secret, claimed.event_id, claimed.payload)
        url = httpx.URL(claimed.url)
        extensions: dict[str, str] = {}
        if target.address is not None:
            # connect to the address we checked, not to whatever DNS answers next
            headers["host"] = url.netloc.decode("ascii")
            if url.scheme == "https":
                extensions["sni_hostname"] = target.host
            url = url.copy_with(host=target.address)
        started = time.perf_counter()
        try:
            request = self.client.build_request(
                "POST", url, content=claimed.payload, headers=headers, extensions=extensions
            )
            response = await self.client.send(request, stream=True)
            await response.aclose()  # the body is not ours to read: only the status matters
        except httpx.TimeoutException:
            elapsed = (time.perf_counter() - started) * 1000
            return None, elapsed, f"timed out after {self.settings.webhook_timeout_seconds:g}s"
        except httpx.HTTPError as exc:
            return None, (time.perf_counter() - started) * 1000, f"{type(exc).__name__}: {exc}"
        elapsed = (time.perf_counter() - started) * 1000
        DELIVERY_LATENCY.observe(elapsed / 1000)
        error = None if response.is_success else f"receiver answered HTTP {response.status_code}"
        return response.status_code, elapsed, error

    async def _deliver(self, claimed: repository.Claimed) -> None:
        status_code, latency_ms, error = await self._send(claimed)
        now = utcnow()
        status, next_attempt_at = service.outcome(
            attempt=claimed.attempt,
            status_code=status_code,
            max_attempts=self.settings.webhook_max_attempts,
            base=self.settings.webhook_backoff_base_seconds,
            cap=self.settings.webhook_backoff_cap_seconds,
            now=now,
        )
        async with self.db.transaction() as session:
            recorded = await repository.record_attempt(
                session,
                delivery_id=claimed.id,
                attempt=claimed.attempt,
                status=status,
                status_code=status_code,
                latency_ms=latency_ms,
                error=service.clip_error(error),
                next_attempt_at=next_attempt_at,
                now=now,
            )
        DELIVERY_ATTEMPTS.labels(outcome=status if recorded else "lost").inc()
        if status != "succeeded":
            log.info(
                "webhook delivery %s attempt %d: %s (%s)",
                claimed.id,
                claimed.attempt,
                status,
                error or "no error",
            )

"""From a dispatched task to a runner: its network policy, proxy, agent endpoint; and the worker's metrics."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol

from browserfleet_contracts.auth import OrgPolicy
from browserfleet_contracts.tasks import TaskDispatch
from playwright.async_api import BrowserContext
from prometheus_client import Counter, Gauge, Histogram

from .agent import AgentRunner, LLMClient
from .browser import BrowserHost
from .netguard import Policy, parse_networks, upstream_from
from .orgpolicy import SecurityEvents, block_kind
from .secret_values import SecretUnavailable, render
from .settings import WorkerSettings
from .steps import StepsOutcome, StepsRunner

log = logging.getLogger(__name__)
security_log = logging.getLogger("browserfleet.security")

TASKS = Counter(
    "browserfleet_worker_tasks_total", "Tasks run by this worker, by outcome", ["kind", "outcome"]
)
TASK_SECONDS = Histogram(
    "browserfleet_worker_task_seconds", "Task duration", buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900)
)
LAUNCH_SECONDS = Gauge("browserfleet_worker_browser_launch_seconds", "Last browser launch time")
CONTEXT_SECONDS = Gauge("browserfleet_worker_context_seconds", "Last browser context creation time")
BROWSER_LAUNCHES = Gauge("browserfleet_worker_browser_launches", "Browser launches (incl. recycles, crashes)")
SLOTS_BUSY = Gauge("browserfleet_worker_slots_busy", "Browser contexts open now")
BLOCKED = Counter("browserfleet_worker_blocked_requests_total", "Requests refused by safe browsing", ["kind"])


class TaskRefused(Exception):
    """The task cannot run as configured (no LLM endpoint, a bad proxy); fails it with this message."""


class Runner(Protocol):
    index: int

    async def run(self, context: BrowserContext) -> StepsOutcome: ...

    async def partial_result(self) -> dict[str, Any]: ...

    def masked(self, outcome: StepsOutcome) -> StepsOutcome: ...


def build_policy(
    settings: WorkerSettings,
    task: TaskDispatch,
    values: Mapping[str, str],
    org: OrgPolicy | None = None,
    events: SecurityEvents | None = None,
) -> Policy:
    """The task's network policy merged with its organization's (README "Safe browsing"): a host must be in
    both allowed-domain lists when both are set; the task's proxy wins, else the organization's."""
    spec = task.spec
    org = org or OrgPolicy()

    def on_block(host: str, reason: str, url: str | None) -> None:
        kind = block_kind(reason)
        BLOCKED.labels("address" if kind == "dns" else kind).inc()
        # a security event: structured, searchable, never carrying a secret (hosts and reasons only)
        security_log.warning(
            "security event: blocked request of task %s to %s: %s",
            task.task_id,
            host,
            reason,
            extra={"event": "security.blocked", "task_id": task.task_id, "org_id": task.org_id},
        )
        if events is not None:
            events.blocked(host, reason, url, kind)

    policy = Policy(
        allowed_domains=list(spec.allowed_domains) if spec.allowed_domains is not None else None,
        org_allowed_domains=list(org.allowed_domains) if org.allowed_domains is not None else None,
        allowed_networks=parse_networks(settings.browser_allow_networks),
        max_bytes=int(settings.task_transfer_mb * 1024 * 1024),
        on_block=on_block,
    )
    proxy, whose = (spec.proxy, "proxy") if spec.proxy is not None else (org.proxy, "organization proxy")
    if proxy is not None:
        try:
            policy.upstream = upstream_from(
                render(proxy.server, values),
                render(proxy.username, values) if proxy.username else None,
                render(proxy.password, values) if proxy.password else None,
            )
        except (ValueError, SecretUnavailable) as exc:
            raise TaskRefused(f"{whose}: {exc}") from None
    return policy


def allow_evaluate(settings: WorkerSettings, org: OrgPolicy | None) -> bool:
    """`evaluate` runs when the operator allows it for every org (ALLOW_EVALUATE) or the org's policy does."""
    return settings.allow_evaluate or (org is not None and org.allow_evaluate)


def build_runner(
    settings: WorkerSettings,
    task: TaskDispatch,
    values: Mapping[str, str],
    org: OrgPolicy | None = None,
    events: SecurityEvents | None = None,
) -> tuple[Runner, Policy]:
    policy = build_policy(settings, task, values, org, events)
    if task.spec.kind == "agent":
        base_url, model, key = settings.llm_endpoint()
        if key is None and settings.llm_base_url is None:
            raise TaskRefused(
                "agent tasks need an LLM endpoint: set LLM_BASE_URL/LLM_API_KEY, OPENAI_API_KEY or DEEPSEEK_API_KEY"
            )
        llm = LLMClient(base_url, model, key, timeout_seconds=settings.llm_timeout_seconds)
        agent = AgentRunner(
            task.spec,
            values,
            llm=llm,
            timeout_seconds=task.timeout_seconds,
            policy=policy,
            prices=(settings.llm_input_price_per_mtok, settings.llm_output_price_per_mtok),
        )
        return agent, policy
    steps = StepsRunner(
        task.spec,
        values,
        timeout_seconds=task.timeout_seconds,
        policy=policy,
        allow_evaluate=allow_evaluate(settings, org),
        max_download_bytes=int(settings.max_download_mb * 1024 * 1024),
        trace_on_failure=settings.trace_on_failure,
        trace_screenshots=settings.trace_screenshots,
    )
    return steps, policy


def record_outcome(browser: BrowserHost, outcome: StepsOutcome, kind: str = "task") -> None:
    TASKS.labels(kind, outcome.status).inc()
    TASK_SECONDS.observe(outcome.execution_time_seconds)
    LAUNCH_SECONDS.set(browser.last_launch_seconds)
    CONTEXT_SECONDS.set(browser.last_context_seconds)
    BROWSER_LAUNCHES.set(browser.launches)
    SLOTS_BUSY.set(browser.active)
